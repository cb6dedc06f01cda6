"""EMD: the compare stage's coarse-grid EMD against the exact full-resolution EMD, on real image maps.

Pairs: a seeded sample of the compare stage's own rows (``results/<run>/compare/model=*/compare.parquet``:
same- and different-identity pairs, every layer), half same and half different identity, ``--pairs``
per model for the ``top1`` selection and ``--full-pairs`` in all for ``full``. Maps: the image maps
the compare stage reads (``results/<run>/image_maps``, 150 x 150 float32, frame 150 px), in float64.

Exact: ``leam.core.similarity.emd_sparse`` (network simplex on the maps' supports at full resolution,
identical to EMD on the full 150 x 150 grid); timed with its default cancellation of the mass common
to both maps (``cancel``) and without it (``plain``). Grid: ``coarsen`` + ``emd_exact`` (what the
compare stage runs) for each ``--grids`` size, timed per pair (coarsening included, ground-cost
matrices built before timing). Prints per grid: mean / median / max relative error against the
exact value, the mean signed relative error of same- and of different-identity pairs, seconds per
pair; the exact method's seconds per pair and the support sizes; and the compare stage's EMD time
for the run's row counts under a few defaults. For ``full`` the supports are ~20 k pixels: exact is
skipped above ``--max-support`` pixels (its cost matrix alone is n_p x n_q float64) and the grids
are compared with the finest grid instead.

    .venv/bin/python benchmarks/emd_grid.py [--run results/default] [--pairs 200] [--full-pairs 20] [--record]
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from leam.core.frames import read_image_maps
from leam.core.similarity import coarsen, emd_exact, emd_sparse, ground_cost

RESULTS = Path(__file__).with_name("RESULTS.md")


def sample_rows(run: Path, selection: str, per_model: int | None, total: int | None, seed: int):
    """A seeded sample of compared (not skipped) rows, half same and half different identity."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in sorted(run.glob("compare/model=*/compare.parquet")):
        t = pq.read_table(f, filters=[("selection", "=", selection)]).to_pandas()
        rows.append(t[t["skipped"].isna()])
    import pandas as pd

    allrows = pd.concat(rows, ignore_index=True)
    groups = [allrows[allrows["model"] == m] for m in sorted(allrows["model"].unique())] if per_model else [allrows]
    n = per_model or total or 0
    out = []
    for g in groups:
        for kind in ("same", "different"):
            k = g[g["kind"] == kind]
            out.append(k.iloc[np.sort(rng.choice(len(k), size=min(n // 2, len(k)), replace=False))])
    return pd.concat(out, ignore_index=True), allrows


def load_pairs(run: Path, rows, selection: str):
    """(model, layer, kind, p, q, stage_emd) per row, maps read one (model, layer) at a time."""
    pairs = []
    for (model, layer), g in rows.groupby(["model", "layer"], sort=True):
        keys, maps = read_image_maps(sorted(run.glob(f"image_maps/model={model}/*.parquet")), layer, selection)
        index = {k: i for i, k in enumerate(keys)}
        for r in g.itertuples():
            p = maps[index[(r.identity_a, r.image_a)]].astype(np.float64)
            q = maps[index[(r.identity_b, r.image_b)]].astype(np.float64)
            pairs.append((model, layer, r.kind, p, q, r.emd))
    return pairs


def timed(fn, *a, **kw):
    t = time.perf_counter()
    v = fn(*a, **kw)
    return v, time.perf_counter() - t


def grid_emd(p: np.ndarray, q: np.ndarray, g: int, frame: int) -> float:
    """The compare stage's EMD: area-average to g x g (torch float64, as the stage), exact on the grid."""
    pc = coarsen(torch.from_numpy(p)[None], g)[0].numpy()
    qc = coarsen(torch.from_numpy(q)[None], g)[0].numpy()
    return emd_exact(pc, qc, frame)


def measure(pairs, grids, frame: int, max_support: int):
    n = len(pairs)
    res: dict[str, np.ndarray] = {f"g{g}": np.full(n, np.nan) for g in grids}
    sec: dict[str, np.ndarray] = {k: np.full(n, np.nan) for k in list(res) + ["cancel", "plain"]}
    res["exact"], res["plain"] = np.full(n, np.nan), np.full(n, np.nan)
    sup = np.zeros((n, 4), int)  # nonzero pixels of p, q; of the positive and negative parts of p - q
    for g in grids:
        ground_cost(g, frame)  # build (cached) before timing
    emd_sparse(np.ones((2, 2)), np.eye(2))  # import POT before timing
    for i, (_, _, _, p, q, _) in enumerate(pairs):
        d = p.ravel() / p.sum() - q.ravel() / q.sum()
        sup[i] = [(p > 0).sum(), (q > 0).sum(), (d > 0).sum(), (d < 0).sum()]
        if max(sup[i, 2:]) <= max_support:
            res["exact"][i], sec["cancel"][i] = timed(emd_sparse, p, q)
        if max(sup[i, :2]) <= max_support:
            res["plain"][i], sec["plain"][i] = timed(emd_sparse, p, q, cancel=False)
        for g in grids:
            res[f"g{g}"][i], sec[f"g{g}"][i] = timed(grid_emd, p, q, g, frame)
    return res, sec, sup


def count_rows(run: Path) -> dict[str, int]:
    """Compared (not skipped) rows per selection over every model (``geometry:<selection>`` included)."""
    counts: dict[str, int] = {}
    for f in sorted(run.glob("compare/model=*/compare.parquet")):
        t = pq.read_table(f, columns=["selection", "skipped"]).to_pandas()
        for sel, n in t[t["skipped"].isna()].groupby("selection").size().items():
            counts[str(sel)] = counts.get(str(sel), 0) + int(n)
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("results/default"), help="a finished run's results folder")
    ap.add_argument("--pairs", type=int, default=200, help="top1 pairs per model (half same, half different)")
    ap.add_argument("--full-pairs", type=int, default=20, help="full-selection pairs in all (0: skip)")
    ap.add_argument("--grids", default="8,16,25,30,50,75")
    ap.add_argument("--full-grids", default="8,16,25,30,50,75")
    ap.add_argument("--frame", type=int, default=150)
    ap.add_argument("--max-support", type=int, default=6000, help="skip exact EMD above this many pixels per side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = ap.parse_args()
    grids = [int(g) for g in args.grids.split(",")]
    torch.set_num_threads(1)

    n_rows = count_rows(args.run)  # before the (long) measurements
    n_models = len(list(args.run.glob("compare/model=*/compare.parquet")))
    rows, _ = sample_rows(args.run, "top1", args.pairs, None, args.seed)
    pairs = load_pairs(args.run, rows, "top1")
    res, sec, sup = measure(pairs, grids, args.frame, args.max_support)
    kinds = np.array([k for _, _, k, *_ in pairs])
    models = sorted({m for m, *_ in pairs})
    exact = res["exact"]
    stage = np.array([e for *_, e in pairs], dtype=float)
    stage_diff = np.nanmax(np.abs(res["g16"] - stage)) if 16 in grids else float("nan")
    lines = [
        f"## EMD grid vs exact full resolution: {args.run}, top1 image maps ({args.frame} px), {len(pairs)} compare "
        f"rows ({args.pairs} per model of {', '.join(models)}; half same identity, seed {args.seed}); "
        f"CPU, 1 thread; {datetime.date.today()}",
        "",
        f"exact EMD (emd_sparse): mean {np.mean(exact[kinds == 'same']):.2f} px same identity, "
        f"{np.mean(exact[kinds == 'different']):.2f} px different (min {exact.min():.2f}, max {exact.max():.2f}); "
        f"cancel vs plain max |diff| {np.nanmax(np.abs(res['plain'] - exact)):.1e} px; "
        f"grid 16 here vs the stage's stored emd: max |diff| {stage_diff:.1e} px",
        "",
        "| method | mean rel. error | median | max | mean signed, same | mean signed, different | ms / pair |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("cancel", "exact: emd_sparse (cancel, default)"), ("plain", "exact: emd_sparse(cancel=False)")):
        lines.append(f"| {label} | 0 | 0 | 0 | 0 | 0 | {1e3 * np.nanmean(sec[key]):.1f} |")
    for g in grids:
        v = res[f"g{g}"]
        signed = (v - exact) / exact
        rel = np.abs(signed)
        lines.append(
            f"| grid {g} (coarsen + emd_exact) | {100 * rel.mean():.2f} % | {100 * np.median(rel):.2f} % | "
            f"{100 * rel.max():.2f} % | {100 * signed[kinds == 'same'].mean():+.2f} % | "
            f"{100 * signed[kinds == 'different'].mean():+.2f} % | {1e3 * np.nanmean(sec[f'g{g}']):.1f} |"
        )
    lines += [
        "",
        f"top1 supports (nonzero pixels per map): median {np.median(sup[:, :2]):.0f}, max {sup[:, :2].max()}; "
        f"after cancelling common mass (per side of p - q): median {np.median(sup[:, 2:]):.0f}, "
        f"max {sup[:, 2:].max()}; emd_sparse ms / pair: median {1e3 * np.median(sec['cancel']):.1f}, "
        f"p95 {1e3 * np.quantile(sec['cancel'], 0.95):.1f}, "
        f"max {1e3 * np.max(sec['cancel']):.1f} (plain: median {1e3 * np.median(sec['plain']):.1f}, "
        f"max {1e3 * np.max(sec['plain']):.1f})",
    ]

    t_full: dict[str, float] = {}
    if args.full_pairs:
        fgrids = [int(g) for g in args.full_grids.split(",")]
        frows, _ = sample_rows(args.run, "full", None, args.full_pairs, args.seed)
        fpairs = load_pairs(args.run, frows, "full")
        fres, fsec, fsup = measure(fpairs, fgrids, args.frame, args.max_support)
        fk = np.array([k for _, _, k, *_ in fpairs])
        fmodels = sorted({m for m, *_ in fpairs})
        have_exact = np.isfinite(fres["exact"]).all()
        ref_key = "exact" if have_exact else f"g{max(fgrids)}"
        ref = fres[ref_key]
        n_plain, n_cancel = fsup[:, 0] * fsup[:, 1], fsup[:, 2] * fsup[:, 3]
        lines += [
            "",
            f"### full selection: {len(fpairs)} compare rows (half same identity) of {', '.join(fmodels)}",
            "",
            f"supports: median {np.median(fsup[:, :2]):.0f}, max {fsup[:, :2].max()} pixels per map; after "
            f"cancelling: median {np.median(fsup[:, 2:]):.0f}, max {fsup[:, 2:].max()} per side. Exact cost matrix "
            f"(float64): median {np.median(n_plain) * 8 / 2**30:.2f} GiB, max {n_plain.max() * 8 / 2**30:.2f} GiB "
            f"(cancelled: median {np.median(n_cancel) * 8 / 2**30:.2f} GiB, max {n_cancel.max() * 8 / 2**30:.2f} GiB), "
            f"with a network simplex on as many arcs: "
            + (
                f"exact computed, ms / pair {1e3 * np.nanmean(fsec['cancel']):.0f}."
                if have_exact
                else f"exact skipped (support > {args.max_support} px): not feasible per pair; the reference below "
                f"is grid {max(fgrids)} (the finest grid), not the truth."
            ),
            "",
            f"| method | mean rel. diff vs {ref_key} | median | max | mean signed, same | mean signed, different "
            "| ms / pair |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for g in fgrids:
            signed = (fres[f"g{g}"] - ref) / ref
            rel = np.abs(signed)
            t_full[f"g{g}"] = float(np.mean(fsec[f"g{g}"]))
            lines.append(
                f"| grid {g} | {100 * rel.mean():.2f} % | {100 * np.median(rel):.2f} % | {100 * rel.max():.2f} % | "
                f"{100 * signed[fk == 'same'].mean():+.2f} % | {100 * signed[fk == 'different'].mean():+.2f} % | "
                f"{1e3 * t_full[f'g{g}']:.1f} |"
            )

    t_top1 = {k: float(np.nanmean(v)) for k, v in sec.items()}
    sparse_rows = sum(n for sel, n in n_rows.items() if sel.split(":")[-1] != "full")  # top-k selections
    full_rows = sum(n for sel, n in n_rows.items() if sel.split(":")[-1] == "full")
    lines += [
        "",
        f"### compare stage EMD time for this run ({n_models} models): rows per selection {n_rows}; "
        f"top-k {sparse_rows} rows at the top1 timings, full {full_rows} rows at the full timings; "
        "CPU seconds, 1 thread, EMD only",
        "",
        "| top-k selections | full selections | seconds (all models) | seconds per model |",
        "|---|---|---:|---:|",
    ]
    options = [("g16", "g16"), ("g30", "g16"), ("g50", "g16"), ("cancel", "g16"), ("cancel", "g25"), ("cancel", "g30")]
    for a, b in options:
        if a not in t_top1 or (full_rows and b not in t_full):
            continue
        s = sparse_rows * t_top1[a] + full_rows * t_full.get(b, 0.0)
        la = "exact (emd_sparse)" if a == "cancel" else f"grid {a[1:]}"
        lines.append(f"| {la} | grid {b[1:]} | {s:.0f} | {s / max(1, n_models):.0f} |")
    print("\n".join(lines))
    if args.record:
        with open(RESULTS, "a") as f:
            f.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
