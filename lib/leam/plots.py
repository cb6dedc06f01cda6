"""Figures: layer-by-layer LEAM maps over one face (paper Fig. 4) and class share vs threshold.

Both read what the pipeline wrote (maps and aligned frames in Parquet, shares from DuckDB) and
write PNGs atomically.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import torch  # noqa: E402

from .align import decode_png  # noqa: E402
from . import database  # noqa: E402
from .io import atomic_path, iter_parquet  # noqa: E402
from .maps import decode_map, map_window, to_frame, top_indices  # noqa: E402

__all__ = ["layers_figure", "threshold_figure", "occlusion_figure", "atlas_figure", "compare_figure",
           "demographics_figure", "explain_figures"]

log = logging.getLogger(__name__)


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def layers_figure(maps, aligned, out_path: str | os.PathLike, *, identity: str | None = None,
                  pairs=None) -> tuple[str, str, str]:
    """Fig. 4 analogue: the anchor, the positive, and the LEAM map of every layer over the anchor.

    ``maps``, ``aligned``, ``pairs``: Parquet paths (every shard); only the example identity's rows
    are read. The example is ``identity`` (default: the identity with most pairs
    in ``pairs``, else in ``maps``), its first anchor and positive by name. Returns (identity,
    anchor, positive).
    """
    def rows_of(paths, ident=None, columns=None):
        batches = list(iter_parquet(paths, columns=columns, filters=None if ident is None else [("identity", "=", ident)]))
        return pa.Table.from_batches(batches) if batches else None

    ids_table = rows_of(pairs if pairs is not None else maps, columns=["identity"])
    if ids_table is None or ids_table.num_rows == 0:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no same-identity pairs: no LEAM maps to show", ha="center", va="center")
        _save(fig, out_path)
        return ("", "", "")
    if identity is None:
        ids = pc.value_counts(ids_table.column("identity")).to_pylist()
        identity = sorted(ids, key=lambda d: (-d["counts"], d["values"]))[0]["values"]
    sub_t = rows_of(maps, identity)
    sub = sub_t.to_pylist() if sub_t is not None else []
    if not sub:
        raise ValueError(f"identity {identity!r} has no LEAM maps in this run")
    model = sub[0]["model"]
    anchor, positive = min((r["anchor"], r["positive"]) for r in sub)
    rows = sorted((r for r in sub if r["anchor"] == anchor and r["positive"] == positive), key=lambda r: r["layer_idx"])
    frames = {r["image"]: decode_png(r["frame_png"]) for r in rows_of(aligned, identity).to_pylist()}
    size = frames[anchor].shape[0]
    panels = [("anchor", anchor, None), ("positive", positive, None)] + [(r["layer"], anchor, r) for r in rows]
    cols = min(6, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.1 * cols, 2.5 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, name, r) in zip(axes.ravel(), panels):
        ax.imshow(frames[name])
        if r is None:
            ax.set_title(f"{title}\n{name}", fontsize=8)
            continue
        raw = torch.from_numpy(decode_map(r).copy())
        ax.imshow(to_frame(raw[None], size, map_window(r, size))[0].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"{title}\n{r['height']}x{r['width']}", fontsize=8)
    fig.suptitle(f"LEAM, {model}: {identity}, anchor {anchor} vs positive {positive}", fontsize=9)
    fig.tight_layout(h_pad=1.2)
    _save(fig, out_path)
    log.info("wrote %s (%s: %s vs %s)", out_path, identity, anchor, positive)
    return identity, anchor, positive


def threshold_figure(db_path: str | os.PathLike, model: str, out_path: str | os.PathLike) -> None:
    """Share of each class among the selected pixels (mean of per-map shares) vs top-k level."""
    con = database.connect(db_path)
    try:
        df = con.execute("""
            SELECT class, level, mean_rel_pct FROM class_share_model
            WHERE model = ? AND level IS NOT NULL ORDER BY class_id, level""", [model]).df()
        full = con.execute("""SELECT class, mean_rel_pct FROM class_share_model
                              WHERE model = ? AND selection = 'full'""", [model]).df()
    finally:
        con.close()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for cls, g in df.groupby("class", sort=False):
        line, = ax.plot(g["level"], g["mean_rel_pct"], marker="o", ms=3, label=cls)
        f = full.loc[full["class"] == cls, "mean_rel_pct"]
        if len(f):
            ax.axhline(float(f.iloc[0]), color=line.get_color(), lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("top-k % of activated pixels (dotted: full activation, value >= threshold)")
    ax.set_ylabel("share of selected pixels, % (mean over maps)")
    ax.set_title(f"{model}: class share vs relevance threshold (all layers)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out_path)
    log.info("wrote %s", out_path)


def _query(db_path, sql: str, params=()):
    con = database.connect(db_path)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, wrap=True)


def occlusion_figure(db_path, out_path, source_model: str | None = None) -> None:
    """Paper Fig. 8 (drop vs occluded share, LEAM solid vs random dashed, per target model, pixels of
    ``source_model``, default the first source by name), Fig. 11 (drop at 1 % vs the pair's
    unoccluded cosine) and, with several sources, the transfer table: LEAM minus random drop at 1 %
    for every source x target."""
    every = _query(db_path, "SELECT * FROM occlusion_by_model ORDER BY source_model, model, method, size_pct")
    source_model = source_model or (every["source_model"].min() if len(every) else None)
    df = every[every["source_model"] == source_model]
    pts = _query(db_path, "SELECT model, method, cosine_before, drop FROM occlusion WHERE size_pct = 1 "
                          "AND source_model = ? AND drop IS NOT NULL", [source_model])
    sources = sorted(every["source_model"].unique()) if len(every) else []
    ncols = 3 if len(sources) > 1 else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.2), gridspec_kw={"width_ratios": [3, 2, 2][:ncols]})
    ax, ax2 = axes[0], axes[1]
    if df.empty:
        _empty(ax, "no occlusion results (no identity has two usable photos)")
        _empty(ax2, "")
    if len(sources) > 1:
        at1 = every[every["size_pct"] == 1].pivot_table(index=["source_model", "model"], columns="method",
                                                         values="mean_drop")
        targets = sorted(every["model"].unique())
        grid = np.array([[at1.loc[(s, t), "leam"] - at1.loc[(s, t), "random"] if (s, t) in at1.index else np.nan
                          for t in targets] for s in sources])
        im = axes[2].imshow(grid, cmap="viridis")
        mid = np.nanmean(grid) if np.isfinite(grid).any() else 0
        for (i, j), v in np.ndenumerate(grid):
            axes[2].text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8, color="k" if v > mid else "w")
        axes[2].set_xticks(range(len(targets)), targets, rotation=30, fontsize=7)
        axes[2].set_yticks(range(len(sources)), sources, fontsize=7)
        axes[2].set_xlabel("target model (re-embeds the occluded anchor)")
        axes[2].set_ylabel("source model (its LEAM pixels)")
        axes[2].set_title("transfer at 1 %: LEAM drop - random drop (Table 21)", fontsize=9)
        fig.colorbar(im, ax=axes[2], fraction=0.046)
    for i, (model, g) in enumerate(df.groupby("model", sort=True)):
        color = f"C{i}"
        for method, ls, mk in (("leam", "-", "o"), ("random", "--", "x")):
            h = g[g["method"] == method]
            ax.plot(h["size_pct"], h["mean_drop"], ls, color=color, marker="o", ms=3, label=f"{model} {method}")
            p = pts[(pts["model"] == model) & (pts["method"] == method)]
            ax2.scatter(p["cosine_before"], p["drop"], s=12, marker=mk, color=color, label=f"{model} {method}")
    if not df.empty:
        src = df.iloc[0]
        ax.set_title(f"Occluding the anchor: LEAM pixels of {src['source_model']} / {src['source_layer']} vs random",
                     fontsize=9)
        ax.set_xscale("log")
        ax.legend(fontsize=7)
        ax2.legend(fontsize=7)
    ax.set_xlabel("occluded pixels, % of the frame")
    ax.set_ylabel("cosine drop (mean over pairs)")
    ax2.set_title("drop at 1 % vs unoccluded cosine (Fig. 11)", fontsize=9)
    ax2.set_xlabel("cosine before occlusion")
    ax2.set_ylabel("cosine drop")
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out_path)


def atlas_figure(db_path, out_path) -> None:
    """Identity atlas: drop of a held-out photo occluded with own / identity / population / random pixels."""
    df = _query(db_path, "SELECT * FROM atlas_summary ORDER BY model, method, size_pct")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if df.empty:
        _empty(ax, "no atlas results (no identity has two usable photos)")
    styles = {"own": "-", "identity": "-.", "population": ":", "random": "--"}
    for i, (model, g) in enumerate(df.groupby("model", sort=True)):
        for method, h in g.groupby("method", sort=True):
            ax.plot(h["size_pct"], h["mean_drop"], styles.get(method, "-"), color=f"C{i}", marker="o", ms=3,
                    label=f"{model}: {method}")
    if not df.empty:
        ax.set_xscale("log")
        ax.legend(fontsize=7)
        ax.set_title("Leave-one-photo-out occlusion: whose LEAM pixels carry over?")
    ax.set_xlabel("occluded pixels, % of the frame")
    ax.set_ylabel("cosine drop (mean over the photo's positives)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out_path)


def compare_figure(db_path, out_path, selection: str = "top1") -> None:
    """Bhattacharyya coefficient and EMD per layer, same vs different identity (Tables 3-6)."""
    df = _query(db_path, "SELECT * FROM compare_table WHERE selection = ? ORDER BY model, layer_idx", [selection])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    if df.empty:
        for ax in axes:
            _empty(ax, "no map comparisons")
    for i, (model, g) in enumerate(df.groupby("model", sort=True)):
        x = np.arange(len(g))
        for ax, col in ((axes[0], "bc"), (axes[1], "emd")):
            ax.plot(x, g[f"{col}_same"], "-o", color=f"C{i}", ms=3, label=f"{model} same")
            if g[f"{col}_different"].notna().any():
                ax.plot(x, g[f"{col}_different"], "--o", color=f"C{i}", ms=3, label=f"{model} different")
            ax.set_xticks(x, g["layer"], rotation=45, ha="right", fontsize=7)
    for ax, title in ((axes[0], "Bhattacharyya coefficient (higher: more alike)"), (axes[1], "EMD, frame px (lower: more alike)")):
        ax.set_title(f"{title}, {selection}", fontsize=9)
        ax.grid(alpha=0.3)
        if not df.empty:
            ax.legend(fontsize=7)
    if not df.empty and df["bc_different"].isna().all():
        fig.suptitle("no different-identity pairs: only one identity has LEAM maps (two or more usable photos)", fontsize=8)
    fig.tight_layout()
    _save(fig, out_path)


def demographics_figure(db_path, out_path) -> None:
    """Paper Fig. 9-10: drop by gender / ethnicity (LEAM vs random) and vs age gap, when metadata exist."""
    groups = _query(db_path, "SELECT factor, grp, method, size_pct, avg(mean_drop) AS drop FROM occlusion_by_group "
                             "GROUP BY ALL ORDER BY factor, grp, method, size_pct")
    ages = _query(db_path, "SELECT method, age_gap, avg(mean_drop) AS drop FROM occlusion_by_age_gap "
                           "WHERE size_pct = 1 GROUP BY ALL ORDER BY method, age_gap")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, factor in zip(axes[:2], ("gender", "ethnicity")):
        g = groups[groups["factor"] == factor]
        if g.empty:
            _empty(ax, f"no {factor} metadata")
        for i, ((grp, method), h) in enumerate(g.groupby(["grp", "method"], sort=True)):
            ax.plot(h["size_pct"], h["drop"], "-" if method == "leam" else "--", marker="o", ms=3, label=f"{grp} {method}")
        if not g.empty:
            ax.set_xscale("log")
            ax.legend(fontsize=7)
        ax.set_title(f"cosine drop by {factor}", fontsize=9)
        ax.set_xlabel("occluded pixels, %")
        ax.grid(alpha=0.3)
    if ages.empty:
        _empty(axes[2], "no ages")
    for method, h in ages.groupby("method", sort=True):
        axes[2].plot(h["age_gap"], h["drop"], "o-" if method == "leam" else "o--", ms=3, label=method)
    axes[2].set_title("cosine drop at 1 % vs age gap (years)", fontsize=9)
    axes[2].grid(alpha=0.3)
    if not ages.empty:
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out_path)


def explain_figures(frame_a: np.ndarray, frame_b: np.ndarray, maps: dict, labels: np.ndarray, out_dir, *,
                    top: float = 1.0, title: str = "", window: tuple[int, int, int, int] | None = None,
                 full_threshold: float = 0.01) -> list[str]:
    """PNGs of one pair for ``leam explain``: overlay, per-layer grid, top-k % pixels by class.

    frames: (S, S, 3) uint8; maps: {layer: (h, w) raw map}; labels: (S, S) FaRL class ids of A;
    window: the frame box the model saw (None: the whole frame); full_threshold: ``count.full_threshold``
    (the "activated" pixels whose top ``top`` % are drawn).
    """
    from .classes import CLASS_NAMES
    from .counting import selection_sizes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = frame_a.shape[0]
    frames = {k: to_frame(torch.as_tensor(v, dtype=torch.float32)[None], size, window)[0].numpy() for k, v in maps.items()}
    names = list(frames)
    files = []
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    axes[0].imshow(frame_a)
    axes[0].set_title("anchor (A)", fontsize=8)
    axes[1].imshow(frame_b)
    axes[1].set_title("positive (B), aligned to A", fontsize=8)
    axes[2].imshow(frame_a)
    axes[2].imshow(frames[names[0]], cmap="jet", alpha=0.5, vmin=0, vmax=1)
    axes[2].set_title(f"LEAM {names[0]}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    files.append(str(out_dir / "overlay.png"))
    _save(fig, files[-1])
    cols = min(5, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), names):
        ax.imshow(frame_a)
        ax.imshow(frames[k], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"{k} ({maps[k].shape[-2]}x{maps[k].shape[-1]})", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    files.append(str(out_dir / "layers.png"))
    _save(fig, files[-1])
    palette = plt.get_cmap("tab20")(np.arange(20))[:, :3]
    width = max(6.0, 2.2 * cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width, 2.4 * rows + 0.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    present = set()
    for ax, k in zip(axes.ravel(), names):
        v = frames[k].reshape(-1)
        n_active = torch.tensor([int((v >= full_threshold).sum())])
        kk = int(selection_sizes(n_active, v.size, [top], "active")[0, 1])
        order = top_indices(torch.from_numpy(v)[None], kk)[0].numpy()
        img = frame_a.astype(float) / 255 * 0.35
        flat = img.reshape(-1, 3)
        flat[order] = palette[labels.reshape(-1)[order] % 20]
        present |= set(np.unique(labels.reshape(-1)[order]).tolist())
        ax.imshow(flat.reshape(img.shape))
        ax.set_title(f"{k}: top {top:g} % ({kk} px)", fontsize=7)
    handles = [matplotlib.patches.Patch(color=palette[c % 20], label=CLASS_NAMES[c]) for c in sorted(present)]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, min(len(handles), int(width // 1.5))), fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    files.append(str(out_dir / "topk.png"))
    _save(fig, files[-1])
    return files
