"""Which crop of the aligned frame should a model see?  Recognition quality per alignment.

For every configured model and every alignment of :mod:`leam.core.window` (``chip``: the whole dlib
face chip; ``arcface``: insightface's 5-point 112-px template placed on the frame), embeds every
accepted, aligned photo of a finished run (``results/default/aligned/shard-*.parquet``) and prints, on all
ordered same-identity and unordered different-identity pairs: mean cosine same vs different, ROC
AUC of same vs different (Mann-Whitney U / (n_same n_diff), scipy), and rank-1 identification
(leave-one-out nearest neighbour among all photos, for photos whose identity has another photo).

    .venv/bin/python benchmarks/alignment.py [--config config/config.yaml] [--results results/default] [--record]

``--record`` appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import platform
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import mannwhitneyu

from leam.config import load_config
from leam.core.frames import iter_identities
from leam.core.io import read_parquet
from leam.core.window import ALIGNMENTS
from leam.models.loader import load_model

HERE = Path(__file__).resolve().parent


def scores(emb: np.ndarray, ids: np.ndarray) -> dict[str, float]:
    """(N, D) embeddings, (N,) identity labels -> same/different mean cosine, AUC, rank-1."""
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = u @ u.T
    same = ids[:, None] == ids[None, :]
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    s, d = cos[same & upper], cos[~same & upper]
    auc = mannwhitneyu(s, d).statistic / (len(s) * len(d))
    c = cos.copy()
    np.fill_diagonal(c, -np.inf)
    has_mate = same.sum(1) > 1
    rank1 = float((ids[c.argmax(1)] == ids)[has_mate].mean())
    return {
        "same": float(s.mean()),
        "different": float(d.mean()),
        "auc": float(auc),
        "rank1": rank1,
        "n_images": len(ids),
        "n_same": len(s),
        "n_different": len(d),
    }


def record(title: str, command: str, lines: list[str]) -> None:
    """Append a section to benchmarks/RESULTS.md: title with date and machine, the command, the table."""
    with open(HERE / "RESULTS.md", "a") as f:
        f.write(
            f"\n## {title} ({datetime.date.today()}, {platform.node()}, {os.cpu_count()} cores)\n\n"
            f"`{command}`\n\n" + "\n".join(lines) + "\n"
        )


def aligned_frames(results: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, S, 3) uint8 frames of every accepted photo of a finished run, (N,) identities."""
    ids, frames = [], []
    for p in sorted(glob.glob(f"{results}/aligned/shard-*.parquet")):
        for identity, images, f in iter_identities(read_parquet(p)):
            ids += [identity] * len(images)
            frames.append(f)
    return np.concatenate(frames), np.array(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--results", default="results/default")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config)
    frames, ids_a = aligned_frames(args.results)
    x = torch.from_numpy(frames)
    lines = ["| model | alignment | window | same | different | AUC | rank-1 |", "|---|---|---|---|---|---|---|"]
    for name, spec in cfg["models"].items():
        for alignment in ALIGNMENTS:
            model = load_model(name, {**spec, "alignment": alignment}, frame_padding=cfg["align"]["padding"])
            with torch.no_grad():
                emb = torch.cat([model.module(model.preprocess(x[i : i + 16])) for i in range(0, len(x), 16)])
            r = scores(F.normalize(emb.double(), dim=1).numpy(), ids_a)
            lines.append(
                f"| {name} | {alignment} | {model.window(x.shape[1])} | {r['same']:.4f} | {r['different']:.4f} "
                f"| {r['auc']:.4f} | {r['rank1']:.3f} |"
            )
            print(lines[-1], flush=True)
    if args.record:
        record(
            f"Alignment per model: {len(ids_a)} photos of {len(set(ids_a))} identities from {args.results}/aligned",
            ".venv/bin/python benchmarks/alignment.py --record",
            lines,
        )


if __name__ == "__main__":
    main()
