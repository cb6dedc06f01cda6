"""LEAM maps against two independent oracles.

1. A naive one-pair-at-a-time autograd implementation written here (not leam's code): for each
   ordered pair, a fresh forward of the anchor with hooks, S = F.cosine_similarity(f(a), f(p)) with
   the positive's embedding from a separate no-grad forward, ``torch.autograd.grad(S, activations)``
   and ReLU(sum_c ReLU(grad) * A). float64 on CPU, tolerance 1e-5 (observed ~1e-16).
2. pytorch-grad-cam's ``LayerCAM`` with a hand-written cosine-similarity target (what researchers
   use today), one CAM object per layer, float32. grad-cam normalises each map ((m - min) /
   (max + 1e-7)), resizes it to the input size with OpenCV, and (in ``aggregate_multi_layers``)
   normalises once more; leam's :func:`leam.core.maps.to_frame` does the first two steps, so the
   comparison applies the second normalisation to leam's frame map. Tolerance 2e-5 absolute on
   [0, 1] values: both sides run in float32 (sums over 32 channels and a backward through up to 9
   convolutions, relative error ~1e-6) and OpenCV's bilinear weights are fixed-point-free float32
   like torch's; the observed maximum is printed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import stage_options

from leam.cam import LEAM, ActivationRecorder
from leam.core.frames import iter_identities
from leam.core.maps import normalise, to_frame
from leam.models.dlib_resnet import load_dlib_resnet
from leam.models.loader import load_model
from leam.stages.align import align_shard
from leam.stages.detect import detect_shard


@pytest.fixture(scope="module")
def obama_frames(sample_entries, tmp_path_factory):
    """(images, (n, 150, 150, 3) uint8 aligned frames) of the sample set's largest identity."""
    tmp = tmp_path_factory.mktemp("leam")
    faces = detect_shard(sample_entries, tmp / "faces.parquet", options=stage_options("detect"))
    align_shard(faces, tmp / "aligned.parquet", options=stage_options("align"))
    ids = {name: (images, frames) for name, images, frames in iter_identities(tmp / "aligned.parquet")}
    images, frames = ids["obama"]
    assert len(images) == 5  # 6 photos, 32bit.png is a duplicate of obama2.jpg
    return images, frames


def naive_leam(model: nn.Module, layers: dict[str, str], x: torch.Tensor, a: int, p: int) -> dict[str, torch.Tensor]:
    """One pair, the textbook way. x: (n, 3, H, W); returns {layer: (h, w)} raw maps."""
    acts: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(path).register_forward_hook(lambda mod, inp, out, name=name: acts.__setitem__(name, out))
        for name, path in layers.items()
    ]
    try:
        xa = x[a : a + 1].clone().requires_grad_(True)
        e_a = model(xa)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        e_p = model(x[p : p + 1])
    s = F.cosine_similarity(e_a, e_p)[0]
    grads = torch.autograd.grad(s, [acts[n] for n in layers])
    return {n: F.relu((F.relu(g) * acts[n]).sum(1))[0].detach() for n, g in zip(layers, grads, strict=True)}


def test_engine_equals_naive_oracle_on_real_photos(obama_frames, dlib_spec):
    images, frames = obama_frames
    model = load_model("dlib_resnet", dlib_spec, dtype=torch.float64)
    x = model.preprocess(torch.from_numpy(frames))
    with LEAM(model.module, model.layers) as leam:
        out = leam.explain(x)
    n = len(images)
    assert out.anchor.tolist() == [a for a in range(n) for p in range(n) if p != a]
    assert out.positive.tolist() == [p for a in range(n) for p in range(n) if p != a]
    worst = 0.0
    for i, (a, p) in enumerate(zip(out.anchor.tolist(), out.positive.tolist(), strict=True)):
        ref = naive_leam(model.module, model.layers, x, a, p)
        for name in model.layers:
            assert out.maps[name][i].shape == ref[name].shape
            diff = (out.maps[name][i] - ref[name]).abs().max().item()
            worst = max(worst, diff)
            assert diff <= 1e-5, (images[a], images[p], name, diff)
        assert ref["conv1"].max() > 0  # the maps are not trivially zero
    # cosines: the engine's matrix equals F.cosine_similarity of separate forwards
    with torch.no_grad():
        e = model.module(x)
    ref_cos = F.cosine_similarity(e[:, None], e[None, :], dim=-1)
    torch.testing.assert_close(out.cosine, ref_cos, rtol=0, atol=1e-12)
    print(f"max |engine - naive| over {len(out.anchor)} pairs x {len(model.layers)} layers: {worst:.3g}")


class CosineTarget:
    """grad-cam target: cosine similarity of the model output to a fixed embedding."""

    def __init__(self, embedding: torch.Tensor):
        self.embedding = embedding

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(model_output, self.embedding, dim=0)


def test_engine_equals_pytorch_grad_cam_layercam(obama_frames, dlib_spec, dlib_net_path):
    from pytorch_grad_cam import LayerCAM

    images, frames = obama_frames
    model = load_model("dlib_resnet", dlib_spec)  # float32, frozen
    x = model.preprocess(torch.from_numpy(frames[:3]))
    with LEAM(model.module, model.layers) as leam:
        out = leam.explain(x)
    peer = load_dlib_resnet(dlib_net_path)  # grad-cam needs parameters that require grad
    with torch.no_grad():
        emb = peer(x)
    worst = 0.0
    for name, path in model.layers.items():
        cam = LayerCAM(model=peer, target_layers=[peer.get_submodule(path)])
        frame = normalise(to_frame(out.maps[name], 150))  # grad-cam re-normalises after resizing
        for i, (a, p) in enumerate(zip(out.anchor.tolist(), out.positive.tolist(), strict=True)):
            ref = cam(input_tensor=x[a : a + 1], targets=[CosineTarget(emb[p])])[0]
            diff = float(np.abs(frame[i].numpy() - ref).max())
            worst = max(worst, diff)
            assert diff <= 2e-5, (name, images[a], images[p], diff)
        cam.activations_and_grads.release()
    print(f"max |leam - pytorch-grad-cam LayerCAM| (float32, normalised, 150x150): {worst:.3g}")


def test_batched_loop_and_chunked_agree(obama_frames, dlib_spec):
    _, frames = obama_frames
    model = load_model("dlib_resnet", dlib_spec)
    x = model.preprocess(torch.from_numpy(frames))
    with LEAM(model.module, model.layers) as leam:
        ref = leam.explain(x)
    with LEAM(model.module, model.layers, batched=False) as leam:
        loop = leam.explain(x)
        assert leam.plan(len(x)) == (4, 1)
    with LEAM(model.module, model.layers, batched=True, pairs_per_vjp=8) as leam:  # vmap over rounds
        vmap = leam.explain(x)
        assert leam.plan(len(x)) == (4, 2)
    with LEAM(model.module, model.layers, memory_budget_mb=16) as leam:  # forces 1 anchor per graph
        chunked = leam.explain(x)
        assert leam._bytes_per_image * 2 > 16 * 2**20  # the budget really is below one anchor's graph
        assert leam.plan(len(x)) == (1, 1)
    for other in (loop, vmap, chunked):
        assert torch.equal(other.anchor, ref.anchor) and torch.equal(other.positive, ref.positive)
        for name in ref.maps:
            torch.testing.assert_close(other.maps[name], ref.maps[name], rtol=1e-5, atol=1e-6)


class Branchy(nn.Module):
    """Two parallel convolutions: the second is not downstream of the first."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_c = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 8 * 8, 5)

    def forward(self, x):
        y = torch.cat([F.relu(self.conv_a(x)), F.relu(self.conv_b(x))], 1)
        return self.fc(F.relu(self.conv_c(y)).flatten(1))


def test_parallel_branches_fall_back_to_input_gradients():
    torch.manual_seed(0)
    model = Branchy().double().eval()
    for q in model.parameters():
        q.requires_grad_(False)
    layers = {"a": "conv_a", "b": "conv_b", "c": "conv_c"}
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    with LEAM(model, layers) as leam:
        out = leam.explain(x)
    assert len(out.anchor) == 12
    for i, (a, p) in enumerate(zip(out.anchor.tolist(), out.positive.tolist(), strict=True)):
        ref = naive_leam(model, layers, x, a, p)
        for name in layers:
            torch.testing.assert_close(out.maps[name][i], ref[name], rtol=0, atol=1e-12)


def test_hooks_are_released_and_mode_restored():
    model = Branchy().train()
    with ActivationRecorder(model, {"a": "conv_a"}) as rec:
        assert not model.training
        model(torch.randn(1, 3, 16, 16))
        assert rec.order == ["a"]
    assert model.training
    assert not model.conv_a._forward_hooks
    with pytest.raises(ValueError, match="not a module"), ActivationRecorder(model, {"x": "conv_z"}):
        pass


def test_single_image_identity_has_no_pairs():
    model = Branchy().eval()
    with LEAM(model, {"c": "conv_c"}) as leam:
        out = leam.explain(torch.randn(1, 3, 16, 16))
    assert len(out.anchor) == 0 and out.embeddings.shape == (1, 5)


def test_the_maps_graph_runs_without_onednn_on_the_cpu_and_embeddings_keep_it():
    """#21 case 9: oneDNN's convolution backward varies with the CPU and its load (an Intel Xeon
    beside four busy processes gave other maps on every run); the graph forward and its backward now
    run on PyTorch's native kernels, the no-graph embedding keeps oneDNN."""
    import torch.nn as nn

    from leam.cam import LEAM

    seen: list[tuple[bool, bool]] = []  # (grad enabled, oneDNN enabled) at every forward

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 5)

        def forward(self, x):
            seen.append((torch.is_grad_enabled(), torch.backends.mkldnn.enabled))
            return self.fc(self.conv(x).flatten(1))

    model = Spy().eval().requires_grad_(False)
    x = torch.rand(3, 3, 8, 8)
    before = torch.backends.mkldnn.enabled
    with LEAM(model, {"c": "conv"}) as leam:
        out = leam.explain(x)
    assert torch.backends.mkldnn.enabled == before  # restored
    assert {s for s in seen if s[0]} == {(True, False)} and {s for s in seen if not s[0]} == {(False, before)}
    with LEAM(model, {"c": "conv"}, deterministic=False) as leam:
        fast = leam.explain(x)
    torch.testing.assert_close(fast.maps["c"], out.maps["c"], rtol=1e-5, atol=1e-6)


def test_calibrate_measures_the_graph_explain_plans_with():
    """#22: the public calibrate() (the benchmark set private state before) measures what explain
    measures on its first call, and the chunk plan follows it."""
    torch.manual_seed(0)
    model = Branchy().eval()
    for q in model.parameters():
        q.requires_grad_(False)
    x = torch.randn(6, 3, 16, 16)
    with LEAM(model, {"a": "conv_a", "c": "conv_c"}) as leam:
        assert leam.bytes_per_image is None
        b = leam.calibrate(x[:1])
        # at least the hooked layers' outputs of one image, float32: conv_a 4x16x16, conv_c 6x8x8
        assert b >= (4 * 16 * 16 + 6 * 8 * 8) * 4
        leam.budget = 3 * b  # an anchor counts twice (graph + gradients): one anchor per graph
        assert leam.plan(6) == (1, 1)
        leam.budget = 100 * b
        assert leam.plan(6) == (4, 1)  # CPU: at most 4 anchors per graph, looping VJPs
    with LEAM(model, {"a": "conv_a", "c": "conv_c"}) as other:
        other.explain(x)
        assert other.bytes_per_image == b
