"""The paper's model zoo: published checkpoint layouts load strictly, layers resolve, errors are clear.

The expected key layouts are written out here from the published checkpoints' structure
(insightface arcface_torch ``backbone.pth``; Albanie's ``vgg_face_dag.pth``), independently of
leam's model code; facenet-pytorch's own class is the reference for InceptionResnetV1.
"""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from conftest import REPO, stage_options

from leam.core.frames import iter_identities
from leam.models.checkpoint import load_state_dict_file
from leam.models.iresnet import iresnet
from leam.models.loader import WeightsError, load_model
from leam.stages.align import align_shard
from leam.stages.detect import detect_shard

PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


def _bn(prefix: str, c: int) -> dict[str, tuple]:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def arcface_torch_keys(blocks: tuple[int, ...]) -> dict[str, tuple]:
    """Key -> shape of an arcface_torch IResNet ``backbone.pth`` (512-d, 112 px)."""
    keys = {"conv1.weight": (64, 3, 3, 3), **_bn("bn1", 64), "prelu.weight": (64,)}
    cin = 64
    for i, (w, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True), 1):
        for j in range(n):
            p = f"layer{i}.{j}"
            keys.update(
                {
                    **_bn(f"{p}.bn1", cin),
                    f"{p}.conv1.weight": (w, cin, 3, 3),
                    **_bn(f"{p}.bn2", w),
                    f"{p}.prelu.weight": (w,),
                    f"{p}.conv2.weight": (w, w, 3, 3),
                    **_bn(f"{p}.bn3", w),
                }
            )
            if j == 0:
                keys.update({f"{p}.downsample.0.weight": (w, cin, 1, 1), **_bn(f"{p}.downsample.1", w)})
            cin = w
    keys.update({**_bn("bn2", 512), "fc.weight": (512, 512 * 7 * 7), "fc.bias": (512,), **_bn("features", 512)})
    return keys


def vgg_face_dag_keys() -> dict[str, tuple]:
    keys, cin = {}, 3
    for b, (w, n) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 1):
        for i in range(1, n + 1):
            keys[f"conv{b}_{i}.weight"], keys[f"conv{b}_{i}.bias"] = (w, cin, 3, 3), (w,)
            cin = w
    for name, (o, i) in {"fc6": (4096, 25088), "fc7": (4096, 4096), "fc8": (2622, 4096)}.items():
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (o, i), (o,)
    return keys


def _random_state(keys: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g) * 0.05
    return out


def _spec(name: str, path) -> dict:
    spec = copy.deepcopy(PAPER["models"][name])
    spec["weights"]["path"] = str(path)
    return spec


@pytest.fixture(scope="module")
def frames(sample_entries, tmp_path_factory):
    """{size: (n, size, size, 3) uint8 aligned frames of Obama} at 112, 160 and 224 px."""
    tmp = tmp_path_factory.mktemp("zoo")
    faces = detect_shard(sample_entries, tmp / "faces.parquet", options=stage_options("detect"))
    out = {}
    for size in (112, 160, 224):
        align_shard(faces, tmp / f"aligned{size}.parquet", options=stage_options("align", size=size))
        out[size] = {n: f for n, _, f in iter_identities(tmp / f"aligned{size}.parquet")}["obama"]
    return out


def _layer_shapes(fm, x) -> dict[str, tuple]:
    shapes = {}
    hooks = [
        fm.module.get_submodule(path).register_forward_hook(
            lambda m, i, o, n=name: shapes.__setitem__(n, tuple(o.shape[1:]))
        )
        for name, path in fm.layers.items()
    ]
    with torch.no_grad():
        emb = fm.module(x)
    for h in hooks:
        h.remove()
    return shapes, emb


IRESNET_SHAPES = {
    "conv1": (64, 112, 112),
    "l1_0.conv1": (64, 112, 112),
    "l1_0.conv2": (64, 56, 56),
    "l1_1.conv1": (64, 56, 56),
    "l1_1.conv2": (64, 56, 56),
    "l2_0.conv1": (128, 56, 56),
    "l2_0.conv2": (128, 28, 28),
    "l2_1.conv1": (128, 28, 28),
    "l2_1.conv2": (128, 28, 28),
}


@pytest.mark.parametrize(
    "name, blocks", [("AF_R18", (2, 2, 2, 2)), ("CF_R50", (3, 4, 14, 3)), ("AF_R100", (3, 13, 30, 3))]
)
def test_iresnet_published_layout_loads_strictly(name, blocks, tmp_path, frames):
    keys = arcface_torch_keys(blocks)
    arch = PAPER["models"][name]["builder_args"]["arch"]
    assert {k: tuple(v.shape) for k, v in iresnet(arch).state_dict().items()} == keys
    path = tmp_path / "backbone.pth"
    torch.save(_random_state(keys), path)
    fm = load_model(name, _spec(name, path))
    assert fm.input_size == (112, 112)
    shapes, emb = _layer_shapes(fm, fm.preprocess(torch.from_numpy(frames[112])))
    assert shapes == IRESNET_SHAPES and emb.shape == (5, 512)
    # DataParallel checkpoints ("module." prefix) load too
    torch.save({f"module.{k}": v for k, v in _random_state(keys).items()}, path)
    load_model(name, _spec(name, path))


def test_wrong_architecture_checkpoint_is_named(tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save(_random_state(arcface_torch_keys((3, 4, 14, 3))), path)  # an r50 file
    with pytest.raises(WeightsError, match=r"backbone.pth does not fit IResNet: .*unexpected keys \(e.g. layer1.2"):
        load_model("AF_R18", _spec("AF_R18", path))


def test_vgg_face_published_layout_loads_strictly(tmp_path, frames):
    from leam.models.vgg_face import VggFace

    keys = vgg_face_dag_keys()
    assert {k: tuple(v.shape) for k, v in VggFace().state_dict().items()} == keys
    path = tmp_path / "vgg_face_dag.pth"
    torch.save(_random_state(keys), path)
    fm = load_model("VGG_16", _spec("VGG_16", path))
    shapes, emb = _layer_shapes(fm, fm.preprocess(torch.from_numpy(frames[224][:2])))
    assert shapes == {
        "conv1_1": (64, 224, 224),
        "conv1_2": (64, 224, 224),
        "conv2_1": (128, 112, 112),
        "conv2_2": (128, 112, 112),
        "conv3_1": (256, 56, 56),
        "conv3_2": (256, 56, 56),
        "conv3_3": (256, 56, 56),
        "conv4_1": (512, 28, 28),
        "conv4_2": (512, 28, 28),
    }
    assert emb.shape == (2, 4096)


@pytest.mark.parametrize("name, n_classes", [("IR_VGG", 8631), ("IR_CASIA", 10575)])
def test_inception_resnet_v1_equals_facenet_pytorch(name, n_classes, tmp_path, frames):
    from facenet_pytorch import InceptionResnetV1, fixed_image_standardization

    torch.manual_seed(1)
    ref = InceptionResnetV1(pretrained=None, classify=True, num_classes=n_classes).eval()
    for m in ref.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "facenet.pt"
    torch.save(ref.state_dict(), path)  # what facenet-pytorch publishes: a plain state dict with logits
    assert set(load_state_dict_file(path)) >= {"logits.weight", "logits.bias", "last_bn.running_mean"}
    ref.classify = False
    fm = load_model(name, _spec(name, path))
    x_uint8 = torch.from_numpy(frames[160])
    shapes, emb = _layer_shapes(fm, fm.preprocess(x_uint8))
    with torch.no_grad():
        theirs = ref(fixed_image_standardization(x_uint8.permute(0, 3, 1, 2).float()))
    torch.testing.assert_close(emb, theirs, rtol=0, atol=1e-6)
    assert emb.shape == (5, 512) and torch.allclose(emb.norm(dim=1), torch.ones(5))
    assert shapes == {
        "conv2d_1a": (32, 79, 79),
        "conv2d_2a": (32, 77, 77),
        "conv2d_2b": (64, 77, 77),
        "conv2d_3b": (80, 38, 38),
        "conv2d_4a": (192, 36, 36),
        "conv2d_4b": (256, 17, 17),
        "r1_0.branch0": (32, 17, 17),
        "r1_0.branch1_0": (32, 17, 17),
        "r1_0.branch1_1": (32, 17, 17),
    }


@pytest.mark.parametrize("name", list(PAPER["models"]))
def test_missing_weights_message_for_every_paper_model(name, tmp_path):
    spec = _spec(name, tmp_path / "missing" / "weights.pth")
    spec["weights"]["sha256"] = "ab" * 32
    with pytest.raises(WeightsError) as e:
        load_model(name, spec)
    msg = str(e.value)
    assert msg.startswith(f"model '{name}': weight file not found: {tmp_path / 'missing' / 'weights.pth'}.")
    assert f"Download it from {spec['weights']['url']} (sha256 {'ab' * 32})" in msg
    assert msg.endswith(f"then set models.{name}.weights.path in config/config.yaml to its location.")


def test_untrusted_pickles_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "x": Evil()}, path)
    with pytest.raises(WeightsError, match="not a readable PyTorch state dict"):
        load_state_dict_file(path)


def test_leam_runs_on_every_family(tmp_path, frames):
    """LEAM maps of the paper's nine layers, two photos, every family (random weights)."""
    from facenet_pytorch import InceptionResnetV1

    from leam.cam import LEAM

    made = {
        "AF_R18": _random_state(arcface_torch_keys((2, 2, 2, 2))),
        "VGG_16": _random_state(vgg_face_dag_keys()),
        "IR_VGG": InceptionResnetV1(pretrained=None, classify=True, num_classes=8631).state_dict(),
    }
    for name, state in made.items():
        path = tmp_path / f"{name}.pth"
        torch.save(state, path)
        fm = load_model(name, _spec(name, path))
        x = fm.preprocess(torch.from_numpy(frames[fm.input_size[0]][:2]))
        with LEAM(fm.module, fm.layers) as leam:
            out = leam.explain(x)
        assert out.anchor.tolist() == [0, 1] and out.positive.tolist() == [1, 0]
        assert set(out.maps) == set(PAPER["models"][name]["layers"])
        for layer, m in out.maps.items():
            assert m.shape[0] == 2 and bool(torch.isfinite(m).all()) and bool((m >= 0).all()), (name, layer)
