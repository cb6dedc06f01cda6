"""LEAM: LayerCAM for embedding models (arXiv 2509.17457, section 3.1).

For an anchor image a and a positive image p of the same person, with embeddings e = f(x),

    S = cos(f(a), f(p))                                   (the positive's embedding is a constant)
    M_l = ReLU( sum_c ReLU(dS/dA_c) * A_c )               (A: the anchor's (C, h, w) activations at layer l)

This module computes M_l for every ordered pair (a, p), a != p, of one identity's n images and
every requested layer, exactly, with the work a naive loop repeats done once:

* one forward per image, shared by all of its positives (the anchor graph is kept);
* dS/de_a in closed form, (e_p/|e_p| - S e_a/|e_a|) / |e_a|, and one batched vector-Jacobian
  product per group of positives (``is_grads_batched``) that returns the gradients of all layers
  together;
* the backward stops at the earliest requested layer (its output is made a leaf; parameters are
  frozen), so nothing below it is differentiated;
* pairs are processed in "rounds": round k pairs anchor i with positive (i + k) mod n, so every
  backward is a full batch of anchors; rounds and anchors are chunked to a memory budget.

Maps are returned raw (layer resolution, >= 0, not normalised); :mod:`leam.maps` normalises and
resizes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .core import ActivationRecorder

__all__ = ["LEAM", "IdentityMaps"]

log = logging.getLogger(__name__)


@dataclass
class IdentityMaps:
    """LEAM output for one identity of n images.

    embeddings: (n, D) model embeddings; cosine: (n, n) cosine similarities;
    anchor, positive: (P,) long, P = n (n - 1) ordered pairs sorted by (anchor, positive);
    maps: {layer: (P, h_l, w_l)} raw LEAM maps (float, >= 0), rows aligned with anchor/positive.
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
        memory_budget_mb: bound on the autograd memory of one chunk (activation graph plus the
            batched gradients); chunks are sized from the graph size measured on the first batch.
        batched: use one batched VJP per chunk of rounds (``is_grads_batched``); False loops
            over rounds (same numbers, less memory, more Python overhead).

    Use as a context manager (hooks are removed and the training flag restored on exit)::

        with LEAM(model.module, model.layers) as leam:
            out = leam.explain(x)        # x: (n, 3, H, W) preprocessed images of one identity
    """

    def __init__(self, model: torch.nn.Module, layers: dict[str, str], *, memory_budget_mb: float = 2048,
                 batched: bool = True):
        if not layers:
            raise ValueError("LEAM needs at least one layer")
        self.model = model
        self.layers = dict(layers)
        self.budget = float(memory_budget_mb) * 2**20
        self.batched = batched
        self._rec = ActivationRecorder(model, self.layers, cut=True)
        self._bytes_per_image: float | None = None

    def __enter__(self) -> "LEAM":
        self._rec.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._rec.__exit__(*exc)

    # -- embeddings ---------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """(n, 3, H, W) -> (n, D) embeddings, without a graph."""
        rec_cut, self._rec.cut = self._rec.cut, False
        try:
            outs = []
            for i in range(0, len(x), batch):
                self._rec.reset()
                outs.append(self.model(x[i:i + batch]))
            return torch.cat(outs)
        finally:
            self._rec.reset()
            self._rec.cut = rec_cut

    # -- graph forward ------------------------------------------------------------------------
    def _forward_graph(self, x: torch.Tensor):
        """Forward with hooks: returns (embeddings (a, D) in the graph, {layer: activation}, inputs)."""
        self._rec.reset()
        self._rec.cut = True
        with torch.enable_grad():
            e = self.model(x)
            missing = [n for n in self.layers if n not in self._rec.activations]
            if missing:
                raise RuntimeError(f"layers {missing} did not run during the forward pass")
            if self._rec.dominated():
                return e, dict(self._rec.activations), [self._rec.activations[self._rec.order[0]]]
            # some layer is not below the first one (parallel branches): differentiate from the input
            log.debug("layers are not all downstream of %s; backward runs to the input", self._rec.order[0])
            self._rec.reset()
            self._rec.cut = False
            xi = x.detach().requires_grad_(True)
            e = self.model(xi)
            return e, dict(self._rec.activations), [xi]

    def _measure(self, x1: torch.Tensor) -> float:
        """Bytes of autograd graph (saved tensors + layer outputs) for one image."""
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            e, acts, _ = self._forward_graph(x1)
        total += sum(a.numel() * a.element_size() for a in acts.values())
        del e, acts
        self._rec.reset()
        return float(max(total, 1))

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

    def explain(self, x: torch.Tensor) -> IdentityMaps:
        """LEAM maps for all ordered pairs of the n images in ``x`` ((n, 3, H, W), preprocessed)."""
        n = len(x)
        emb = self.embed(x)
        unit = F.normalize(emb, dim=-1)
        cosine = unit @ unit.T
        if n < 2:
            empty = torch.empty(0, dtype=torch.long, device=x.device)
            return IdentityMaps(emb, cosine, empty, empty, {k: x.new_empty((0, 0, 0)) for k in self.layers})
        if self._bytes_per_image is None:
            self._bytes_per_image = self._measure(x[:1])
        b = self._bytes_per_image
        n_rounds = n - 1
        anchors_per_chunk = int(max(1, min(n, self.budget // (2 * b))))
        out_maps: dict[str, list[torch.Tensor]] = {k: [] for k in self.layers}
        out_a, out_p = [], []
        for a0 in range(0, n, anchors_per_chunk):
            idx = torch.arange(a0, min(n, a0 + anchors_per_chunk), device=x.device)
            a = len(idx)
            rounds_per_chunk = int(max(1, min(n_rounds, self.budget // (a * b) - 1)))
            e_a, acts, leaves = self._forward_graph(x[idx])
            acts_d = {k: v.detach() for k, v in acts.items()}
            names = list(self.layers)
            targets = [acts[k] for k in names]
            for k0 in range(1, n, rounds_per_chunk):
                ks = torch.arange(k0, min(n, k0 + rounds_per_chunk), device=x.device)  # (r,)
                pos = (idx[None, :] + ks[:, None]) % n  # (r, a)
                v = self._cos_grad(e_a.detach(), unit[pos])  # (r, a, D)
                if self.batched:
                    grads = torch.autograd.grad(e_a, targets, grad_outputs=v, retain_graph=True,
                                                is_grads_batched=True, allow_unused=False)
                else:
                    per = [torch.autograd.grad(e_a, targets, grad_outputs=v[j], retain_graph=True)
                           for j in range(len(ks))]
                    grads = [torch.stack([g[i] for g in per]) for i in range(len(names))]
                for name, g in zip(names, grads):  # g: (r, a, C, h, w)
                    m = (g.clamp_min(0) * acts_d[name]).sum(2).clamp_min(0)  # (r, a, h, w)
                    out_maps[name].append(m.reshape(-1, *m.shape[-2:]))
                out_a.append(idx[None, :].expand_as(pos).reshape(-1))
                out_p.append(pos.reshape(-1))
            del e_a, acts, leaves, targets, acts_d
            self._rec.reset()
        anchor = torch.cat(out_a)
        positive = torch.cat(out_p)
        order = torch.argsort(anchor * n + positive)
        maps = {k: torch.cat(v)[order] for k, v in out_maps.items()}
        return IdentityMaps(emb, cosine, anchor[order], positive[order], maps)
