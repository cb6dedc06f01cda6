"""Shared fixtures: the real sample photos (fetched once per session with pip) and dlib files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

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
