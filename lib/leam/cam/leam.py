"""LEAM: LayerCAM for embedding models (arXiv 2509.17457, section 3.1).

For an anchor image a and a positive image p of the same person, with embeddings e = f(x),

    S = cos(f(a), f(p))                                   (the positive's embedding is a constant)
    M_l = ReLU( sum_c ReLU(dS/dA_c) * A_c )               (A: the anchor's (C, h, w) activations at layer l)

This module computes M_l for every ordered pair (a, p), a != p, of one identity's n images and
every requested layer, exactly, doing once the work a naive loop repeats:

* one forward per image, shared by all of its positives (the anchor graph is kept);
* dS/de_a in closed form, (e_p/|e_p| - S e_a/|e_a|) / |e_a|, and batched vector-Jacobian
  products (``is_grads_batched``) that return the gradients of all layers together;
* the backward stops at the earliest requested layer (its output is made a leaf; parameters are
  frozen), so nothing below it is differentiated;
* pairs are processed in "rounds": round k pairs anchor i with positive (i + k) mod n, so every
  backward is a full batch of anchors. Anchors and rounds are chunked so that one vector-Jacobian
  product covers about ``pairs_per_vjp`` pairs (cache-sized on CPU, large on GPU) within
  ``memory_budget_mb``; any identity size fits, and identities of unequal size need no padding.

The minimum work is n forwards and n (n - 1) activation-gradient backwards from the embedding to
the earliest layer (each pair needs its own cotangent, and the ReLU on the gradient forbids
combining them); ``benchmarks/extract.py`` measures that bare cost beside this engine.

Same bytes on every CPU and under any load: on the CPU the graph forward and the backward run with
oneDNN (mkldnn) off. oneDNN's convolution backward picks its algorithm and its split of the work
at run time, by the CPU's instruction set and the load of the machine; on a 2-core Intel Xeon
(AVX-512) beside four busy processes its maps differed from run to run in the last bits (and so
every map-derived file), while ``MKL_DYNAMIC`` / ``OMP_DYNAMIC`` off, an AVX2 cap and oneDNN's own
deterministic flag did not help and oneDNN off did (``shared/DEPS.md``, 2026-12-05). PyTorch's
native convolution (im2col + GEMM on a fixed thread count) computes each image's input gradient on
its own, in a fixed order. The no-graph forwards (embeddings), identical under load, keep oneDNN.
``deterministic=False`` keeps oneDNN everywhere (faster where it is: depthwise convolutions).

Maps are returned raw (layer resolution, >= 0, not normalised) and/or handed, chunk by chunk and
still on the device, to a consumer (e.g. :class:`leam.core.summaries.IdentitySummaries`: normalise, resize to
the frame, count classes) so that a large identity never holds all its maps at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from leam.cam.core import ActivationRecorder

__all__ = ["LEAM", "IdentityMaps", "MapConsumer"]

log = logging.getLogger(__name__)

#: strict fp32 (default; TF32 off on CUDA), TF32 matmuls/convolutions (CUDA), bf16 autocast


@contextlib.contextmanager
def _onednn_off():
    """oneDNN off for the block, then as it was (``torch.backends.mkldnn.flags`` would also touch
    its TF32 setting, and warn)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32; fp32 and fp64 unchanged."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class MapConsumer(Protocol):
    def add(self, layer: str, anchor: torch.Tensor, positive: torch.Tensor, maps: torch.Tensor) -> None:
        """Take raw maps (P, h, w) of ``layer`` for pairs (anchor[i], positive[i]) (device tensors)."""


@dataclass
class IdentityMaps:
    """LEAM output for one identity of n images.

    embeddings: (n, D) model embeddings; cosine: (n, n) cosine similarities;
    anchor, positive: (P,) long, P = n (n - 1) ordered pairs sorted by (anchor, positive);
    maps: {layer: (P, h_l, w_l)} raw LEAM maps (float, >= 0), rows aligned with anchor/positive
    (empty dict when the caller asked not to keep them).
    """

    embeddings: torch.Tensor
    cosine: torch.Tensor
    anchor: torch.Tensor
    positive: torch.Tensor
    maps: dict[str, torch.Tensor]


class LEAM:
    """Batched LEAM extractor for one model and a set of layers.

    Args:
        model: (B, 3, H, W) -> (B, D) embedding module (eval mode, frozen parameters).
        layers: {layer name: module path}.
        memory_budget_mb: bound on the autograd memory of one chunk (anchor graph plus batched
            gradients), from the graph size measured on the first image.
        pairs_per_vjp: pairs per batched vector-Jacobian product (default 16 on CPU, 512 on GPU).
        batched: batched VJPs over rounds (``is_grads_batched``, vmap) or a loop of plain VJPs,
            one round at a time (same numbers). Default (None): batched on GPU, loop on CPU, where
            vmap measured slower (benchmarks/RESULTS.md).
        deterministic: on the CPU, run the graph forward and the backward with oneDNN off, so the
            maps are the same bytes on any CPU and under any load (default); False keeps oneDNN.

    Use as a context manager (hooks are removed and the training flag restored on exit)::

        with LEAM(model.module, model.layers) as leam:
            out = leam.explain(x)        # x: (n, 3, H, W) preprocessed images of one identity
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layers: dict[str, str],
        *,
        memory_budget_mb: float = 2048,
        pairs_per_vjp: int | None = None,
        batched: bool | None = None,
        deterministic: bool = True,
    ):
        if not layers:
            raise ValueError("LEAM needs at least one layer")
        self.model = model
        self.layers = dict(layers)
        self.budget = float(memory_budget_mb) * 2**20
        self.pairs_per_vjp = pairs_per_vjp
        self.batched = batched
        self.deterministic = deterministic
        self._rec = ActivationRecorder(model, self.layers, cut=True)
        self._bytes_per_image: float | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def _batched(self) -> bool:
        return self.device.type == "cuda" if self.batched is None else self.batched

    def __enter__(self) -> LEAM:
        self._rec.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._rec.__exit__(*exc)

    def _graph_kernels(self):
        """The kernels of the graph forward and its backward: on the CPU with ``deterministic``,
        oneDNN off (its backward's algorithm and split vary with the CPU and the load), else as set."""
        if self.deterministic and self.device.type == "cpu":
            return _onednn_off()
        return contextlib.nullcontext()

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device)

    # -- embeddings ---------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """(n, 3, H, W) -> (n, D) embeddings (at least float32), without a graph.

        Default batch: as many images as one graph's worth of the memory budget holds (<= 64).
        """
        if batch is None:
            b = self._bytes_per_image
            batch = 64 if b is None else int(max(1, min(64, self.budget // b)))
        rec_cut, self._rec.cut = self._rec.cut, False
        try:
            outs = []
            for i in range(0, len(x), batch):
                self._rec.reset()
                outs.append(_at_least_fp32(self.model(self._prepare(x[i : i + batch]))))
            return torch.cat(outs)
        finally:
            self._rec.reset()
            self._rec.cut = rec_cut

    # -- graph forward ------------------------------------------------------------------------
    def _forward_graph(self, x: torch.Tensor):
        """Forward with hooks: (embeddings (a, D) in the graph, {layer: activation})."""
        self._rec.reset()
        self._rec.cut = True
        with torch.enable_grad(), self._graph_kernels():
            e = self.model(x)
            missing = [n for n in self.layers if n not in self._rec.activations]
            if missing:
                raise RuntimeError(f"layers {missing} did not run during the forward pass")
            if self._rec.dominated():
                return _at_least_fp32(e), dict(self._rec.activations)
            # some layer is not below the first one (parallel branches): differentiate from the input
            log.debug("layers are not all downstream of %s; backward runs to the input", self._rec.order[0])
            self._rec.reset()
            self._rec.cut = False
            with self._graph_kernels():
                e = self.model(x.detach().requires_grad_(True))
            return _at_least_fp32(e), dict(self._rec.activations)

    def _measure(self, x1: torch.Tensor) -> float:
        """Bytes of autograd graph (saved tensors + layer outputs) for one image."""
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            e, acts = self._forward_graph(x1)
        total += sum(a.numel() * a.element_size() for a in acts.values())
        del e, acts
        self._rec.reset()
        return float(max(total, 1))

    @property
    def bytes_per_image(self) -> float | None:
        """Autograd memory of one image's graph in bytes (None until :meth:`calibrate` or the first
        :meth:`explain` of two or more images measured it)."""
        return self._bytes_per_image

    def calibrate(self, x1: torch.Tensor) -> float:
        """Measure the autograd memory of one image's graph on ``x1`` ((1, 3, H, W) preprocessed)
        and size the chunks from it (:meth:`plan`); returns bytes. :meth:`explain` calibrates itself
        on its first call; call this to plan (or benchmark) before any explaining."""
        self._bytes_per_image = self._measure(self._prepare(x1[:1]))
        return self._bytes_per_image

    def plan(self, n: int) -> tuple[int, int]:
        """(anchors per graph, rounds per VJP) for an identity of n images.

        Looping VJPs (``batched=False``, the CPU default) holds one round's gradients at a time,
        so only the anchor graph counts against the budget: at most 4 anchors per graph on CPU
        (measured fastest: the graph stays in cache), all of them on GPU. Batched VJPs put about
        ``pairs_per_vjp`` pairs in one product, with ``anchors * bytes_per_image * (1 + rounds)``
        within the memory budget.
        """
        b = self._bytes_per_image or 1.0
        gpu = self.device.type == "cuda"
        a_budget = max(1, int(self.budget // (2 * b)))
        a = max(1, min(n, a_budget, n if gpu else 4))
        if not self._batched:
            return a, 1
        target = self.pairs_per_vjp or (512 if gpu else 16)
        r_budget = max(1, int(self.budget // (a * b)) - 1)
        return a, max(1, min(n - 1, r_budget, math.ceil(target / a)))

    # -- maps ---------------------------------------------------------------------------------
    @staticmethod
    def _cos_grad(e_a: torch.Tensor, u_p: torch.Tensor) -> torch.Tensor:
        """dS/de_a for S = cos(e_a, u_p), u_p unit-norm constants.

        e_a: (a, D); u_p: (r, a, D) -> (r, a, D).
        """
        norm = e_a.norm(dim=-1, keepdim=True)  # (a, 1)
        u_a = e_a / norm
        s = (u_p * u_a).sum(-1, keepdim=True)  # (r, a, 1)
        return (u_p - s * u_a) / norm

    def _round_maps(self, e_a, targets, acts_f, v) -> list[torch.Tensor]:
        """Maps of every layer for cotangents v (r, a, D) -> list of (r a, h, w), one per layer."""
        with self._graph_kernels():
            return self._round_maps_unflagged(e_a, targets, acts_f, v)

    def _round_maps_unflagged(self, e_a, targets, acts_f, v) -> list[torch.Tensor]:
        if self._batched and len(v) > 1:
            grads = torch.autograd.grad(e_a, targets, grad_outputs=v, retain_graph=True, is_grads_batched=True)
            per_round = [[g[j] for g in grads] for j in range(len(v))]
        else:
            per_round = [torch.autograd.grad(e_a, targets, grad_outputs=v[j], retain_graph=True) for j in range(len(v))]
        out = []
        for i, act in enumerate(acts_f):  # act: (a, C, h, w)
            # the gradients are fresh tensors, used once: ReLU and weighting in place
            maps = [_at_least_fp32(g[i]).clamp_min_(0).mul_(act).sum(1).clamp_min_(0) for g in per_round]  # (a, h, w)
            out.append(maps[0] if len(maps) == 1 else torch.cat(maps))
        return out

    def _calibrate_once(self, x1: torch.Tensor) -> None:
        """Measure one image's graph (:meth:`calibrate`) before the first plan; warn when the
        budget cannot hold two of them (one anchor at a time then runs above it)."""
        graph = self.calibrate(x1)
        if 2 * graph > self.budget:
            log.warning(
                "memory budget %.0f MiB is below two graphs of one image (%.0f MiB each): "
                "running one anchor at a time, above the budget",
                self.budget / 2**20,
                graph / 2**20,
            )

    def explain(
        self,
        x: torch.Tensor,
        *,
        keep_maps: bool = True,
        consumer: MapConsumer | None = None,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> IdentityMaps:
        """LEAM maps for all ordered pairs of the n images in ``x`` ((n, 3, H, W), preprocessed).

        ``consumer.add`` receives every chunk's maps on the device; ``keep_maps=False`` then avoids
        holding them all. ``on_chunk(done_pairs, total_pairs)`` reports progress.
        """
        x = self._prepare(x)
        n = len(x)
        if self._bytes_per_image is None and n >= 2:
            self._calibrate_once(x[:1])
        emb = self.embed(x)
        unit = F.normalize(emb, dim=-1)
        cosine = unit @ unit.T
        empty = torch.empty(0, dtype=torch.long, device=x.device)
        if n < 2:
            return IdentityMaps(emb, cosine, empty, empty, {})
        a_chunk, r_chunk = self.plan(n)
        names = list(self.layers)
        out_maps: dict[str, list[torch.Tensor]] = {k: [] for k in names}
        out_a, out_p = [], []
        done = 0
        for a0 in range(0, n, a_chunk):
            idx = torch.arange(a0, min(n, a0 + a_chunk), device=x.device)
            e_a, acts = self._forward_graph(x[idx])
            acts_f = [_at_least_fp32(acts[k].detach()) for k in names]
            targets = [acts[k] for k in names]
            e_const = e_a.detach()
            chunk_maps: list[list[torch.Tensor]] = [[] for _ in names]
            chunk_a, chunk_p = [], []
            for k0 in range(1, n, r_chunk):
                ks = torch.arange(k0, min(n, k0 + r_chunk), device=x.device)  # (r,)
                pos = (idx[None, :] + ks[:, None]) % n  # (r, a)
                v = self._cos_grad(e_const, unit[pos]).to(e_a.dtype)  # (r, a, D)
                for i, m in enumerate(self._round_maps(e_a, targets, acts_f, v)):
                    chunk_maps[i].append(m)  # (r a, h, w)
                chunk_a.append(idx[None, :].expand_as(pos).reshape(-1))
                chunk_p.append(pos.reshape(-1))
            del e_a, acts, targets, acts_f
            self._rec.reset()
            anc, pp = torch.cat(chunk_a), torch.cat(chunk_p)
            for name, parts in zip(names, chunk_maps, strict=True):
                m = torch.cat(parts)  # (a (n - 1), h, w)
                if consumer is not None:
                    consumer.add(name, anc, pp, m)
                if keep_maps:
                    out_maps[name].append(m)
            out_a.append(anc)
            out_p.append(pp)
            done += len(pp)
            if on_chunk is not None:
                on_chunk(done, n * (n - 1))
        anchor = torch.cat(out_a)
        positive = torch.cat(out_p)
        order = torch.argsort(anchor * n + positive)
        maps = {k: torch.cat(v)[order] for k, v in out_maps.items()} if keep_maps else {}
        return IdentityMaps(emb, cosine, anchor[order], positive[order], maps)
