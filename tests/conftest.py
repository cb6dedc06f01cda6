"""Shared fixtures: the real sample photos (fetched once per session with pip) and dlib files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from leam.dataset import fetch_sample_photos, list_images
from leam.resources import package_file

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


@pytest.fixture(scope="session")
def dlib_net_path() -> Path:
    return package_file("face_recognition_models", DLIB_NET)


@pytest.fixture(scope="session")
def dlib_spec() -> dict:
    """The embedded default's model entry, validated, from config.yaml."""
    from leam.config import load_config

    return load_config(REPO / "config.yaml")["models"]["dlib_resnet"]


SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` with its config.yaml, 2 cores."""
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2",
           "--configfile", str(workdir / "config.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def pipeline_run(sample_raw, tmp_path_factory):
    """The embedded default pipeline run once per session on a copy of the photos plus bad files."""
    d = tmp_path_factory.mktemp("pipeline")
    raw = d / "data" / "raw"
    shutil.copytree(sample_raw, raw)
    jpeg = (raw / "obama" / "obama3.jpg").read_bytes()
    (raw / "obama" / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (raw / "biden" / "notes.txt").write_text("not a photo\n")
    (raw / "nobody").mkdir()
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(raw / "nobody" / "grey.png")
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["input"] = {"dir": "data/raw", "sample": None}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(d)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return d, cfg


