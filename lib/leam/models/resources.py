"""Files shipped inside installed packages (dlib's models in ``face_recognition_models``)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["package_file", "resolve_path", "MissingResource"]


class MissingResource(FileNotFoundError):
    pass


def package_file(package: str, relpath: str) -> Path:
    """Path of ``relpath`` inside installed ``package`` without importing it.

    ``face_recognition_models`` cannot be imported on current setuptools (it imports
    ``pkg_resources``), so the package is located with ``importlib.util.find_spec``.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingResource(
            f"Python package '{package}' is not installed; it provides {relpath}. "
            f"Install it with `pip install {package}` (it is in envs/requirements.lock)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise MissingResource(f"{path} is missing from the installed package '{package}'; reinstall it.")
    return path


def resolve_path(spec: str, base: str | os.PathLike = ".") -> Path:
    """Resolve ``pkg://package/rel/path``, ``npm://package@version/rel/path`` (the local copy
    :mod:`leam.models.npm` fetches), ``pypi://package@version/rel/path`` (the local copy :mod:`leam.models.pypi`
    fetches) or a plain (absolute or ``base``-relative) path."""
    if spec.startswith("npm://"):
        from leam.models.npm import npm_local_path

        return npm_local_path(spec, base)
    if spec.startswith("pypi://"):
        from leam.models.pypi import pypi_local_path

        return pypi_local_path(spec, base)
    if spec.startswith("pkg://"):
        package, _, rel = spec[len("pkg://") :].partition("/")
        return package_file(package, rel)
    p = Path(spec).expanduser()
    return p if p.is_absolute() else Path(base) / p
