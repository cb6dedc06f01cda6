"""LEAM extraction: leam vs pytorch-grad-cam vs torchcam vs the bare autograd limit, in one process.

Same model, same images, same ordered pairs, same layers for every contender. Prints maps/s,
ratios, leam's efficiency against the bare limit, peak memory and the max |difference| between
the contenders' maps; ``--record`` appends the figures to benchmarks/RESULTS.md with the machine
and the date.

Contenders (one identity of ``--images`` images, every ordered pair, every layer = one map):

* leam: :class:`leam.cam.LEAM` + what the pipeline's extract job derives from the maps while they
  are in memory (:class:`leam.core.summaries.IdentitySummaries`: normalise, resize to the frame,
  per-class counts at the 16 selections, top-1 % image maps, the occlusion ranking), on the device;
* bare: the same n forwards and n (n - 1) activation-gradient backwards, no maps, for several chunk
  schedules; the fastest is "the limit";
* pytorch-grad-cam: ``LayerCAM`` with a hand-written cosine target, one layer and one anchor at a
  time (the anchor replicated once per positive), maps normalised and resized to the input;
* torchcam: ``LayerCAM`` on all layers from one backward, per-sample cosine targets, the anchor
  replicated once per positive, maps left at layer resolution.

pytorch-grad-cam is timed on ``--peer-anchors`` anchors (each anchor's work is the same), the others
on all of them. Usage::

    python benchmarks/extract.py                     # the issue's CPU setting: IResNet-18, 14 images
    python benchmarks/extract.py --check --options   # + naive-oracle exactness and the oneDNN on/off table
    python benchmarks/extract.py --scaling           # maps/s and memory vs images / layers, projection
    python benchmarks/extract.py --memory --arch r100 --images 40 --budget-mb 2048
    python benchmarks/extract.py --rule              # the extract rule itself (Parquet and all) vs the limit
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import os
import platform
import shutil
import statistics
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.nn.functional as F

from leam.cam import LEAM
from leam.core.classes import N_CLASSES
from leam.core.maps import normalise, to_frame
from leam.core.paper import LEVELS
from leam.core.summaries import IdentitySummaries
from leam.models.iresnet import PAPER_LAYERS, iresnet
from leam.stages.occlude import n_occluded

RESULTS = Path(__file__).with_name("RESULTS.md")


# -- measurement helpers -----------------------------------------------------------------------
class PeakMemory:
    """Peak memory above the start, MiB: CUDA allocator peak, or sampled process RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.proc = psutil.Process()
            self.base = self.peak = self.proc.memory_info().rss
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.stop.set()
            self.thread.join()
            self.mib = (self.peak - self.base) / 2**20


def peak_in_subprocess(
    args, name: str, *, arch: str | None = None, images: int | None = None, layers: str = "paper"
) -> float:
    """Peak memory (MiB above the set-up) of one contender run alone in a fresh process (CPU).

    RSS in this process only grows, so an in-process CPU figure would hide later contenders'
    peaks behind earlier ones; a fresh process gives each its own.
    """
    import subprocess
    import sys

    cmd = [
        sys.executable,
        __file__,
        "--peak-of",
        name,
        "--arch",
        arch or args.arch,
        "--images",
        str(images or args.images),
        "--device",
        args.device,
        "--budget-mb",
        str(args.budget_mb),
        "--peer-anchors",
        str(args.peer_anchors),
        "--layers",
        layers,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def reset_high_water_mark() -> int:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); returns the current RSS in bytes."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return psutil.Process().memory_info().rss


def rss_high_water_mark() -> int:
    """Bytes: this process's peak RSS (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main_peak_of(args, device):
    """``--peak-of NAME``: run one contender once after set-up, print its peak MiB above the set-up."""
    model, x, labels, layers = setup(args.arch, args.images, device, layers=args.layers)
    unit = cosine_unit(model, x)
    grad_model = iresnet(args.arch).to(device).eval()
    grad_model.load_state_dict(model.state_dict())
    n = len(x)
    plan = LEAM(model, layers, memory_budget_mb=args.budget_mb)
    with plan:
        plan.calibrate(x[:1])
        a, r = plan.plan(n)
    fns = {
        "leam": lambda: run_leam(model, layers, x, labels, 112, memory_budget_mb=args.budget_mb),
        "bare": lambda: run_bare(model, layers, x, a, r),
        "gradcam": lambda: run_gradcam(grad_model, layers, x, unit, list(range(min(args.peer_anchors, n)))),
        "torchcam": lambda: run_torchcam(grad_model, layers, x, unit, list(range(n))),
    }
    base = reset_high_water_mark()
    fns[args.peak_of]()
    print((rss_high_water_mark() - base) / 2**20)


def _once(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def timed(fn, device, repeat: int) -> tuple[float, float, object]:
    """(median seconds, peak MiB of the first run, last result) of ``fn()`` after one warm-up.

    ``repeat=0``: a single run, no warm-up.
    """
    if repeat:
        fn()
    times, peak, out = [], None, None
    for _ in range(max(1, repeat)):
        with PeakMemory(device) as pm:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        peak = pm.mib if peak is None else peak
    return statistics.median(times), peak, out


def cosine_unit(model, x):
    with torch.no_grad():
        return F.normalize(model(x), dim=-1)


# -- contenders ---------------------------------------------------------------------------------
def run_leam(model, layers, x, labels, frame, **kw):
    """The pipeline's extract path: LEAM + the summaries extract writes (counts at 16 selections,
    top1 image maps of every layer, the occlusion ranking of the first layer, no raw maps kept).
    Returns (IdentityMaps, {layer: (anchor, positive, counts, sizes)})."""
    summ = IdentitySummaries(
        labels,
        (0, 0, frame, frame),
        levels=LEVELS,
        full_threshold=0.01,
        topk_of="active",
        selections=("top1",),
        rank_layer=next(iter(layers)),
        k_max=n_occluded(10, frame * frame),
        store_maps="first_pair",
    )
    with LEAM(model, layers, **kw) as leam:
        out = leam.explain(x, keep_maps=False, consumer=summ)
    return out, {k: tuple(torch.from_numpy(v) for v in summ.counts_of(k)) for k in layers}


def run_leam_maps(model, layers, x, **kw):
    with LEAM(model, layers, **kw) as leam:
        return leam.explain(x)


def run_bare(model, layers, x, a_chunk: int, r_chunk: int, batched: bool = True):
    """n forwards + n (n - 1) activation-gradient backwards to the earliest layer; no maps.

    Exactly the minimum work: the forwards are the anchors' graph forwards (no separate embedding
    pass; cotangents are fixed unit vectors, whose values do not change the cost).
    """
    n = len(x)
    acts: dict[str, torch.Tensor] = {}
    state = {"first": True}

    def hook(_mod, _inp, out, name):
        if state["first"]:
            state["first"] = False
            out = out.detach().requires_grad_(True)
        acts[name] = out
        return out

    handles = [
        model.get_submodule(p).register_forward_hook(lambda m, i, o, n_=name: hook(m, i, o, n_))
        for name, p in layers.items()
    ]
    try:
        g = torch.Generator(device=x.device).manual_seed(0)
        unit = F.normalize(torch.randn(n, model.fc.out_features, generator=g, device=x.device), dim=-1)
        for a0 in range(0, n, a_chunk):
            idx = torch.arange(a0, min(n, a0 + a_chunk), device=x.device)
            acts.clear()
            state["first"] = True
            e = model(x[idx])
            targets = [acts[k] for k in layers]
            for k0 in range(1, n, r_chunk):
                ks = torch.arange(k0, min(n, k0 + r_chunk), device=x.device)
                v = unit[(idx[None, :] + ks[:, None]) % n]  # any cotangent of the right shape costs the same
                if batched and len(ks) > 1:
                    torch.autograd.grad(e, targets, v, retain_graph=True, is_grads_batched=True)
                else:
                    for j in range(len(ks)):
                        torch.autograd.grad(e, targets, v[j], retain_graph=True)
    finally:
        for h in handles:
            h.remove()


class CosineTarget:
    """Target for pytorch-grad-cam and torchcam: cosine similarity of the output to an embedding."""

    def __init__(self, embedding):
        self.embedding = embedding

    def __call__(self, output):
        return F.cosine_similarity(output, self.embedding, dim=-1)


def run_gradcam(model, layers, x, unit, anchors):
    """{(layer, anchor): (n - 1, H, W) normalised maps at input size}, one layer and anchor at a time."""
    from pytorch_grad_cam import LayerCAM

    n = len(x)
    out = {}
    for name, path in layers.items():
        cam = LayerCAM(model=model, target_layers=[model.get_submodule(path)])
        for a in anchors:
            pos = [p for p in range(n) if p != a]
            targets = [CosineTarget(unit[p]) for p in pos]
            out[(name, a)] = cam(input_tensor=x[a : a + 1].expand(len(pos), -1, -1, -1), targets=targets)
        cam.activations_and_grads.release()
    return out


def run_torchcam(model, layers, x, unit, anchors):
    """{(layer, anchor): (n - 1, h, w) normalised maps at layer resolution}, all layers per backward."""
    from torchcam.methods import LayerCAM

    n = len(x)
    out = {}
    names = list(layers)
    with LayerCAM(model, target_layer=[layers[k] for k in names], input_shape=tuple(x.shape[1:])) as cam:
        for a in anchors:
            pos = [p for p in range(n) if p != a]
            scores = model(x[a : a + 1].expand(len(pos), -1, -1, -1))
            cams = cam(scores=scores, targets=[CosineTarget(unit[p]) for p in pos])
            for name, c in zip(names, cams, strict=True):
                out[(name, a)] = c.detach()
    return out


def naive_maps(model, layers, x, a, p, batch: int = 1):
    """One pair the textbook way (the oracle). ``batch`` > 1 forwards the anchor that many times in
    one batch and uses the first copy: the same maths, other convolution kernels' float rounding."""
    acts = {}
    hs = [
        model.get_submodule(path).register_forward_hook(lambda m, i, o, n_=name: acts.__setitem__(n_, o))
        for name, path in layers.items()
    ]
    try:
        e_a = model(x[a : a + 1].repeat(batch, 1, 1, 1).requires_grad_(True))[:1]
    finally:
        for h in hs:
            h.remove()
    with torch.no_grad():
        e_p = model(x[p : p + 1])
    g = torch.autograd.grad(F.cosine_similarity(e_a, e_p)[0], [acts[k] for k in layers])
    return {k: F.relu((F.relu(gi[:1]) * acts[k][:1]).sum(1))[0].detach() for k, gi in zip(layers, g, strict=True)}


# -- the experiment ----------------------------------------------------------------------------
def setup(arch: str, n: int, device: torch.device, seed: int = 0, layers: str = "paper"):
    torch.manual_seed(seed)
    model = iresnet(arch).eval().to(device)
    for m in model.modules():  # non-trivial BN statistics, like a trained net
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(n, 3, 112, 112, device=device)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, N_CLASSES, (n, 112, 112), generator=g).to(device)
    if layers == "paper":
        lay = dict(PAPER_LAYERS)
    elif layers == "all":
        lay = {name: name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    else:
        lay = dict(list(PAPER_LAYERS.items())[: int(layers)])
    return model, x, labels, lay


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main_compare(args, device, log):
    model, x, labels, layers = setup(args.arch, args.images, device)
    n, L = len(x), len(layers)
    n_maps = n * (n - 1) * L
    log(
        f"## extract: IResNet-{args.arch[1:]} 112 px, {n} images (one identity), {L} layers, "
        f"{n * (n - 1)} ordered pairs = {n_maps} maps; {machine(device)}; {datetime.date.today()}"
    )
    log("")
    probe = LEAM(model, layers, memory_budget_mb=args.budget_mb)
    with probe:
        probe.calibrate(x[:1])
        plan = probe.plan(n)
    leam_fn = lambda: run_leam(model, layers, x, labels, 112, memory_budget_mb=args.budget_mb)  # noqa: E731
    # the bare limit's schedule: the fastest of a few (one run each), then timed like leam
    bare = {}
    for a_c, r_c in sorted({plan, (n, 1), (max(1, plan[0] // 2), 1), (min(n, plan[0] * 2), 1), (plan[0], 4)}):
        bare[(a_c, r_c)] = timed(partial(run_bare, model, layers, x, a_c, r_c), device, 1)[0]
    best = min(bare, key=bare.get)
    bare_fn = lambda: run_bare(model, layers, x, *best)  # noqa: E731
    unit = cosine_unit(model, x)
    gc_anchors = list(range(min(args.peer_anchors, n)))
    grad_model = iresnet(args.arch).to(device).eval()
    grad_model.load_state_dict(model.state_dict())  # the peers need parameters that require grad
    tc_fn = lambda: run_torchcam(grad_model, layers, x, unit, list(range(n)))  # noqa: E731
    # interleaved repeats (leam, bare, torchcam, leam, ...): drifts of a shared machine hit all alike
    samples = {"leam": [], "bare": [], "torchcam": []}
    for fn in (leam_fn, bare_fn, tc_fn):
        fn()  # warm-up
    for _ in range(args.repeat):
        for key, fn in (("leam", leam_fn), ("bare", bare_fn), ("torchcam", tc_fn)):
            samples[key].append(_once(fn, device))
    t_leam, t_bare, t_tc = (statistics.median(samples[k]) for k in ("leam", "bare", "torchcam"))
    out, counts = leam_fn()
    t_gc, _, gc_maps = timed(lambda: run_gradcam(grad_model, layers, x, unit, gc_anchors), device, 1)
    tc_maps = tc_fn()
    rate = {
        "leam (maps + resize + counts)": n_maps / t_leam,
        "bare autograd limit": n_maps / t_bare,
        "pytorch-grad-cam LayerCAM": len(gc_anchors) * (n - 1) * L / t_gc,
        "torchcam LayerCAM": n_maps / t_tc,
    }
    if device.type == "cpu":  # each alone in a fresh process
        peaks = [peak_in_subprocess(args, k) for k in ("leam", "bare", "gradcam", "torchcam")]
    else:  # CUDA: the allocator's peak, one run each
        peaks = [
            timed(fn, device, 1)[1]
            for fn in (leam_fn, bare_fn, lambda: run_gradcam(grad_model, layers, x, unit, gc_anchors), tc_fn)
        ]
    mem = dict(zip(rate, peaks, strict=True))
    # agreement with the peers on the same pairs
    ref = run_leam_maps(model, layers, x, memory_budget_mb=args.budget_mb)
    d_gc = d_tc = 0.0
    for (name, a), maps in gc_maps.items():
        rows = (ref.anchor == a).nonzero().flatten()
        ours = normalise(to_frame(ref.maps[name][rows], 112)).cpu().numpy()  # grad-cam renormalises
        d_gc = max(d_gc, float(np.abs(ours - maps).max()))
    for (name, a), maps in tc_maps.items():
        rows = (ref.anchor == a).nonzero().flatten()
        d_tc = max(d_tc, float((normalise(ref.maps[name][rows], eps=1e-8) - maps).abs().max()))  # torchcam's eps
    log("| contender | maps/s | leam / contender | peak memory MiB |")
    log("|---|---:|---:|---:|")
    for k, v in rate.items():
        log(f"| {k} | {v:.1f} | {rate['leam (maps + resize + counts)'] / v:.2f}x | {mem[k]:.0f} |")
    log("")
    efficiency = rate["leam (maps + resize + counts)"] / rate["bare autograd limit"]
    log(
        f"leam efficiency vs the bare limit: **{100 * efficiency:.0f} %** "
        f"(leam schedule {plan[0]} anchors x {plan[1]} rounds per VJP group; bare schedules tried, s: "
        + ", ".join(f"{a}x{r}: {bare[(a, r)]:.2f}" for a, r in sorted(bare))
        + f"; limit = {best[0]}x{best[1]})"
    )
    log(
        f"max |leam - pytorch-grad-cam| = {d_gc:.2e} (normalised, 112 px); "
        f"max |leam - torchcam| = {d_tc:.2e} (normalised, layer resolution); "
        f"pytorch-grad-cam timed on {len(gc_anchors)} of {n} anchors (each anchor's work is the same), "
        "the others on all; "
        f"medians of {args.repeat} interleaved runs of leam, bare and torchcam"
    )
    if args.check:
        # the oracle in float64 is the exact answer; leam fp32 is compared with it and so is the
        # naive fp32 loop, which shows how far float32 rounding alone moves a map
        m64 = iresnet(args.arch).to(device).eval().double()
        m64.load_state_dict(model.state_dict())
        x64 = x.double()
        for prm in m64.parameters():
            prm.requires_grad_(False)
        ref64 = run_leam_maps(m64, layers, x64)
        worst = {"leam fp64": 0.0, "leam fp32 (strict)": 0.0, "naive fp32": 0.0}
        fp32_vs_fp32 = naive_self = 0.0
        for i, (a, p) in enumerate(zip(ref.anchor.tolist(), ref.positive.tolist(), strict=True)):
            exact = naive_maps(m64, layers, x64, a, p)
            naive32 = naive_maps(grad_model, layers, x, a, p)
            naive32_b4 = naive_maps(grad_model, layers, x, a, p, batch=4) if i % 7 == 0 else None
            for k in layers:
                e = normalise(exact[k][None])
                for label, m in (
                    ("leam fp64", ref64.maps[k][i]),
                    ("leam fp32 (strict)", ref.maps[k][i]),
                    ("naive fp32", naive32[k]),
                ):
                    worst[label] = max(worst[label], float((normalise(m.double()[None]) - e).abs().max()))
                n32 = normalise(naive32[k][None])
                fp32_vs_fp32 = max(fp32_vs_fp32, float((normalise(ref.maps[k][i][None]) - n32).abs().max()))
                if naive32_b4 is not None:
                    naive_self = max(naive_self, float((normalise(naive32_b4[k][None]) - n32).abs().max()))
        log(
            "exactness, every map of the benchmark vs the naive per-pair oracle in float64 (max |Δ| of normalised "
            "maps): " + "; ".join(f"{k} {v:.2e}" for k, v in worst.items())
        )
        log(
            f"float32: leam strict vs the naive loop in fp32, every map: {fp32_vs_fp32:.2e}; the naive fp32 loop "
            f"against itself with the anchor forwarded in a batch of 4 instead of 1 (every 7th pair): {naive_self:.2e} "
            "-- the float32 noise floor of differently batched convolution kernels"
        )
    if args.options:
        log("")
        log(
            "| option | maps/s | vs strict | max abs diff of normalised maps "
            "| count cells differing | max count diff (px) |"
        )
        log("|---|---:|---:|---:|---:|---:|")
        strict_counts = counts
        # the precision / channels_last options were measured here (benchmarks/RESULTS.md) and removed
        # in #22 (no config reached them); what is left to compare: oneDNN on vs off (deterministic)
        opts = [("strict fp32 (oneDNN off: deterministic)", {}), ("oneDNN on", {"deterministic": False})]
        for label, kw in opts:
            t, _, (o2, c2) = timed(
                partial(run_leam, model, layers, x, labels, 112, memory_budget_mb=args.budget_mb, **kw),
                device,
                1 if kw else args.repeat,
            )
            m2 = run_leam_maps(model, layers, x, memory_budget_mb=args.budget_mb, **kw)
            dmap = max(float((normalise(m2.maps[k]) - normalise(ref.maps[k])).abs().max()) for k in layers)
            diff_cells = sum(int((c2[k][2] != strict_counts[k][2]).sum()) for k in layers)
            total_cells = sum(strict_counts[k][2].numel() for k in layers)
            maxdiff = max(int((c2[k][2] - strict_counts[k][2]).abs().max()) for k in layers)
            log(
                f"| {label} | {n_maps / t:.1f} | {t_leam / t:.2f}x | {dmap:.2e} | "
                f"{100 * diff_cells / total_cells:.2f} % | {maxdiff} |"
            )
    return rate


def main_scaling(args, device, log):
    log(f"## scaling: {machine(device)}; {datetime.date.today()}")
    log("")
    log("| model | images/identity | layers | maps | maps/s | peak MiB (fresh process) | plan (anchors x rounds) |")
    log("|---|---:|---:|---:|---:|---:|---|")
    rows = []
    grid = [("r18", n, "paper") for n in (5, 10, 14, 20, 40)] + [("r18", 14, "1"), ("r18", 14, "all")]
    grid += [("r50", 14, "paper"), ("r100", 14, "paper")]
    for arch, n, lay in grid:
        model, x, labels, layers = setup(arch, n, device, layers=lay)
        run_leam(model, layers, x[:2], labels[:2], 112)  # warm-up
        t, m, _ = timed(partial(run_leam, model, layers, x, labels, 112, memory_budget_mb=args.budget_mb), device, 0)
        if device.type == "cpu":
            m = peak_in_subprocess(args, "leam", arch=arch, images=n, layers=lay)
        with LEAM(model, layers, memory_budget_mb=args.budget_mb) as probe:
            probe.calibrate(x[:1])
            plan = probe.plan(n)
        maps = n * (n - 1) * len(layers)
        rows.append((arch, n, len(layers), maps / t))
        log(f"| IResNet-{arch[1:]} | {n} | {len(layers)} | {maps} | {maps / t:.1f} | {m:.0f} | {plan[0]} x {plan[1]} |")
        del model, x
        gc.collect()
    # the paper's workload: 13,445 images of 1000 identities (13.4 per identity) -> ~167 k pairs
    pairs = 1000 * 13.445 * 12.445
    rate = {arch: r for arch, n, L, r in rows if n == 14 and L == 9}
    # the other families (InceptionResnetV1 160 px, VGG-16 224 px) by forward cost relative to r50
    gflops = {"r18": 2.6, "r50": 6.3, "r100": 12.1, "ir": 2.9, "vgg16": 15.5}
    est = dict(rate)
    est["ir"] = rate["r50"] * gflops["r50"] / gflops["ir"]
    est["vgg16"] = rate["r50"] * gflops["r50"] / gflops["vgg16"]
    models = {
        "AF_R18": "r18",
        "CF_R18": "r18",
        "AF_R50": "r50",
        "CF_R50": "r50",
        "AF_R100": "r100",
        "CF_R100": "r100",
        "IR_VGG": "ir",
        "IR_CASIA": "ir",
        "VGG_16": "vgg16",
    }
    hours = sum(pairs * 9 / est[a] for a in models.values()) / 3600
    log("")
    log(
        f"projection of the paper's workload (~{pairs / 1e3:.0f} k ordered pairs x 9 layers x 9 models = "
        f"{pairs * 81 / 1e6:.1f} M maps) on this machine: **{hours:.0f} h** (IResNets measured above; "
        "InceptionResnetV1 and VGG-16 scaled from IResNet-50 by forward GFLOPs 2.9 and 15.5 vs 6.3)"
    )
    return rows


def main_memory(args, device, log):
    model, x, labels, layers = setup(args.arch, args.images, device)
    n = len(x)
    chunks = {"done": 0}

    class Stop(Exception):
        pass

    def stop_after(_done, _total):
        chunks["done"] += 1
        if chunks["done"] >= args.memory_chunks:
            raise Stop

    with LEAM(model, layers, memory_budget_mb=args.budget_mb) as leam:
        gc.collect()
        with PeakMemory(device) as pm:
            base = reset_high_water_mark()
            with contextlib.suppress(Stop):
                leam.explain(
                    x,
                    keep_maps=False,
                    on_chunk=stop_after,
                    consumer=IdentitySummaries(
                        labels,
                        (0, 0, 112, 112),
                        levels=LEVELS,
                        full_threshold=0.01,
                        topk_of="active",
                        selections=("top1",),
                        store_maps="first_pair",
                    ),
                )
        plan = leam.plan(n)
    if device.type == "cpu":  # this is a fresh process: its RSS high-water mark is this run's
        pm.mib = (rss_high_water_mark() - base) / 2**20
    log(
        f"## memory: IResNet-{args.arch[1:]}, {n} images, {len(layers)} layers, budget {args.budget_mb} MiB: "
        f"peak {pm.mib:.0f} MiB above the start over the first {chunks['done']} chunks (all chunks are the same size; "
        f"plan {plan[0]} anchors x {plan[1]} rounds, graph {leam.bytes_per_image / 2**20:.0f} MiB per image); "
        f"{'UNDER' if pm.mib <= args.budget_mb else 'OVER'} budget; {machine(device)}; {datetime.date.today()}"
    )


def main_rule(args, device, log):
    """``--rule``: the extract rule's function itself (``leam.stages.extract.extract_shard``: model load,
    PNG decoding, LEAM, every summary, Parquet writes) on one identity of ``--images`` frames, beside
    the bare autograd limit on the same preprocessed inputs; ``store_maps`` raw and first_pair."""
    import tempfile

    import pyarrow as pa
    import yaml

    from leam.core.images import encode_png
    from leam.core.io import write_parquet
    from leam.core.tables import ALIGNED_SCHEMA, LABELS_SCHEMA
    from leam.models.loader import load_model
    from leam.options import ExtractOptions
    from leam.stages.extract import OUTPUTS, extract_shard

    model, _, _, layers = setup(args.arch, args.images, device)
    n, L = args.images, len(layers)
    n_maps = n * (n - 1) * L
    tmp = Path(tempfile.mkdtemp(prefix="leam-rule-"))
    torch.save(model.state_dict(), tmp / "w.pth")
    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/paper.yaml").read_text())["models"]["AF_R18"]
    spec = {
        **spec,
        "builder_args": {"arch": args.arch},
        "weights": {"path": str(tmp / "w.pth"), "sha256": None},
        "layers": {k: v for k, v in spec["layers"].items()},
    }
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
    write_parquet(
        pa.Table.from_pylist(
            [
                {
                    "identity": "p",
                    "image": f"{i:02d}.png",
                    "reference": "00.png",
                    "is_reference": i == 0,
                    "size": 112,
                    "frame_png": encode_png(f),
                    "landmarks": [0.0] * 136,
                    "image_to_frame": [1.0, 0, 0, 0, 1.0, 0],
                    "align_rmse": 0.0,
                }
                for i, f in enumerate(frames)
            ],
            schema=ALIGNED_SCHEMA,
        ),
        tmp / "aligned.parquet",
    )
    write_parquet(
        pa.Table.from_pylist(
            [
                {
                    "identity": "p",
                    "image": f"{i:02d}.png",
                    "parser": "landmarks",
                    "size": 112,
                    "labels": rng.integers(0, 11, 112 * 112, dtype=np.uint8).tobytes(),
                }
                for i in range(n)
            ],
            schema=LABELS_SCHEMA,
        ),
        tmp / "labels.parquet",
    )
    fm = load_model("r", spec, device=device, frame_padding=0.25)
    x = fm.preprocess(torch.from_numpy(frames)).to(device)
    probe = LEAM(fm.module, fm.layers, memory_budget_mb=args.budget_mb)
    with probe:
        probe.calibrate(x[:1])
        plan = probe.plan(n)

    def rule(mode):
        out = {k: str(tmp / mode / f"{k}.parquet") for k in OUTPUTS}
        options = ExtractOptions(
            model="r",
            spec=spec,
            device=str(device),
            memory_budget_mb=args.budget_mb,
            store_maps=mode,
            frame_padding=0.25,
            levels=LEVELS,
            full_threshold=0.01,
            topk_of="active",
            selections=("top1", "full"),
            rank_layer=next(iter(layers)),
            rank_pixels=n_occluded(10, 112 * 112),
        )
        return lambda: extract_shard(
            str(tmp / "aligned.parquet"), str(tmp / "labels.parquet"), out=out, options=options
        )

    fns = {
        "extract rule, store_maps raw": rule("raw"),
        "extract rule, store_maps first_pair": rule("first_pair"),
        "bare autograd limit": lambda: run_bare(fm.module, fm.layers, x, *plan),
    }
    samples = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(args.repeat):  # interleaved
        for k, fn in fns.items():
            samples[k].append(_once(fn, device))
    t_bare = statistics.median(samples["bare autograd limit"])
    log(
        f"## extract rule: IResNet-{args.arch[1:]} 112 px, {n} frames (one identity), {L} layers, {n_maps} maps; "
        f"{machine(device)}; {datetime.date.today()}"
    )
    log("")
    log("| run | s (median) | maps/s | vs bare limit |")
    log("|---|---:|---:|---:|")
    for k, v in samples.items():
        t = statistics.median(v)
        log(f"| {k} | {t:.2f} | {n_maps / t:.1f} | {100 * t_bare / t:.0f} % |")
    log("")
    log(
        f"the rule's time includes loading the model, decoding the PNG frames and writing six Parquet files; "
        f"bare limit schedule {plan[0]} anchors x {plan[1]} rounds; medians of {args.repeat} interleaved runs"
    )
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="r18")
    ap.add_argument("--images", type=int, default=14)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peer-anchors", type=int, default=3)
    ap.add_argument("--budget-mb", type=float, default=2048)
    ap.add_argument("--check", action="store_true", help="every map vs the naive per-pair oracle")
    ap.add_argument("--options", action="store_true", help="oneDNN on vs off (deterministic) table")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--rule", action="store_true", help="the extract rule's function beside the bare limit")
    ap.add_argument("--memory-chunks", type=int, default=3)
    ap.add_argument("--record", action="store_true", help=f"append the output to {RESULTS.name}")
    ap.add_argument("--peak-of", choices=["leam", "bare", "gradcam", "torchcam"], help=argparse.SUPPRESS)
    ap.add_argument("--layers", default="paper", help="paper (the nine), all (every conv) or a number of paper layers")
    args = ap.parse_args()
    device = torch.device(args.device)
    lines = []

    def log(s=""):
        print(s, flush=True)
        lines.append(s)

    if args.peak_of:
        return main_peak_of(args, device)
    if args.rule:
        main_rule(args, device, log)
    elif args.scaling:
        main_scaling(args, device, log)
    elif args.memory:
        main_memory(args, device, log)
    else:
        main_compare(args, device, log)
    if args.record:
        with open(RESULTS, "a") as f:
            f.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    main()
