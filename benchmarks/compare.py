"""EMD: fast paths against exact POT on the compare stage's grid, error and speed, in one process.

Maps: LEAM-like random distributions (a few Gaussian blobs plus noise, as top-1 % maps look) on the
32 x 32 grid the compare stage uses, frame 150 px. Fast paths: exact EMD on a coarser 16 x 16 grid
(POT), and batched log-domain Sinkhorn in torch at several temperatures (made for the GPU: on a CPU
it is timed on ``--sinkhorn-pairs`` pairs only). Prints mean / max relative error against
``ot.emd2`` on the 32 x 32 grid and pairs/s.

    python benchmarks/compare.py [--pairs 200] [--record]
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np
import torch

from leam.core.similarity import coarsen, emd_exact, emd_sinkhorn, to_distribution

RESULTS = Path(__file__).with_name("RESULTS.md")


def blobs(rng, n: int, g: int) -> torch.Tensor:
    yy, xx = np.mgrid[0:g, 0:g]
    out = np.zeros((n, g, g))
    for i in range(n):
        for _ in range(rng.integers(2, 6)):
            cy, cx, s = rng.uniform(4, g - 4), rng.uniform(4, g - 4), rng.uniform(0.8, 3)
            out[i] += rng.uniform(0.3, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        out[i] += 0.01 * rng.random((g, g))
    return to_distribution(torch.from_numpy(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--frame", type=int, default=150)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--sinkhorn-pairs", type=int, default=None, help="pairs for Sinkhorn (default: 8 on CPU, all on GPU)"
    )
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    p, q = blobs(rng, args.pairs, args.grid), blobs(rng, args.pairs, args.grid)
    t = time.perf_counter()
    exact = np.array([emd_exact(a.numpy(), b.numpy(), args.frame) for a, b in zip(p, q, strict=True)])
    t_exact = time.perf_counter() - t
    lines = [
        f"## compare: EMD on a {args.grid}x{args.grid} grid (frame {args.frame} px), {args.pairs} map pairs; "
        f"{args.device}; torch {torch.__version__}; {datetime.date.today()}",
        "",
        "| method | pairs/s | mean relative error vs exact | max relative error |",
        "|---|---:|---:|---:|",
        f"| exact (POT ot.emd2, network simplex) | {args.pairs / t_exact:.1f} | 0 | 0 |",
    ]
    g2 = args.grid // 2
    t = time.perf_counter()
    coarse = np.array(
        [
            emd_exact(coarsen(a[None], g2)[0].numpy(), coarsen(b[None], g2)[0].numpy(), args.frame)
            for a, b in zip(p, q, strict=True)
        ]
    )
    dt = time.perf_counter() - t
    rel = np.abs(coarse - exact) / exact
    lines.append(f"| exact on {g2}x{g2} (POT) | {args.pairs / dt:.1f} | {rel.mean():.4f} | {rel.max():.4f} |")
    dev = torch.device(args.device)
    n_s = args.sinkhorn_pairs or (args.pairs if dev.type == "cuda" else 8)
    for reg, iters in ((0.02, 200), (0.01, 400)):
        emd_sinkhorn(p[:2].to(dev), q[:2].to(dev), args.frame, reg=reg, iters=5)  # warm-up
        t = time.perf_counter()
        fast = np.concatenate(
            [
                emd_sinkhorn(
                    p[i : min(n_s, i + 16)].to(dev), q[i : min(n_s, i + 16)].to(dev), args.frame, reg=reg, iters=iters
                )
                .cpu()
                .numpy()
                for i in range(0, n_s, 16)
            ]
        )
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        rel = np.abs(fast - exact[:n_s]) / exact[:n_s]
        lines.append(
            f"| Sinkhorn (torch, {dev.type}) reg {reg} x frame, {iters} iterations, {n_s} pairs | "
            f"{n_s / dt:.1f} | {rel.mean():.4f} | {rel.max():.4f} |"
        )
    lines.append("")
    lines.append(f"exact EMD of these pairs: mean {exact.mean():.2f} px (min {exact.min():.2f}, max {exact.max():.2f})")
    print("\n".join(lines))
    if args.record:
        with open(RESULTS, "a") as f:
            f.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
