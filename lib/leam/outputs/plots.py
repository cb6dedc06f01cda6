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
import matplotlib.cm  # noqa: E402
import matplotlib.colors  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import torch  # noqa: E402

from leam.core.classes import CLASS_NAMES  # noqa: E402
from leam.core.images import decode_png  # noqa: E402
from leam.core.io import atomic_path, iter_parquet  # noqa: E402
from leam.core.maps import decode_map, to_frame, top_indices  # noqa: E402
from leam.outputs import database  # noqa: E402

__all__ = [
    "layers_figure",
    "threshold_figure",
    "occlusion_figure",
    "atlas_figure",
    "person_figure",
    "overlay",
    "CMAP",
    "compare_figure",
    "demographics_figure",
    "explain_figures",
]

log = logging.getLogger(__name__)


#: one colour, line style and marker per method, the same in every figure
METHOD_STYLE = {
    "leam": dict(color="C0", ls="-", marker="o", label="LEAM pixels"),
    "random": dict(color="C1", ls="--", marker="x", label="random pixels"),
    "own": dict(color="C0", ls="-", marker="o", label="own map"),
    "identity": dict(color="C2", ls="-.", marker="s", label="identity's mean map"),
    "population": dict(color="C4", ls=":", marker="^", label="population's mean map"),
    "same": dict(color="C0", ls="-", marker="o", label="same identity"),
    "different": dict(color="C3", ls="--", marker="s", label="different identity"),
}

#: raster figures' resolution (PNG); every figure is also written as vector PDF beside it
DPI = 300

#: the colour map of LEAM overlays (config ``figures.cmap``): perceptually uniform, so equal steps of
#: relevance look equal; ``jet`` is not, and its blue wash hides dark skin
CMAP = "inferno"


def overlay(ax, frame: np.ndarray, relevance: np.ndarray, cmap: str = CMAP):
    """Draw ``frame`` (S, S, 3) uint8 and over it ``relevance`` (S, S) in [0, 1] in ``cmap``, each
    pixel's opacity its relevance (0.85 at 1): irrelevant pixels leave the face as it is, dark skin
    included. Returns a mappable for a colorbar."""
    ax.imshow(frame)
    v = np.clip(np.nan_to_num(relevance), 0, 1)
    rgba = plt.get_cmap(cmap)(v)
    rgba[..., 3] = 0.85 * v
    ax.imshow(rgba)
    return matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap=cmap)


def _save(fig, path: str | os.PathLike) -> list[str]:
    """Write ``fig`` as a 300-dpi PNG at ``path`` and as vector PDF beside it (same name, .pdf),
    both atomically and without timestamps (same figure, same bytes); returns both paths."""
    path = Path(path)
    pdf = path.with_suffix(".pdf")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    with atomic_path(pdf) as tmp:
        fig.savefig(tmp, format="pdf", metadata={"Creator": None, "Producer": None, "CreationDate": None})
    plt.close(fig)
    return [str(path), str(pdf)]


def _errorbar(ax, x, mean, std, n, method: str, label: str | None = None) -> None:
    """``mean`` with its standard error (std / sqrt(n)) as error bars, in the method's style."""
    st = METHOD_STYLE[method]
    sem = np.where(np.asarray(n) > 1, np.asarray(std, float) / np.sqrt(np.maximum(np.asarray(n, float), 1)), np.nan)
    ax.errorbar(
        x,
        mean,
        yerr=sem,
        color=st["color"],
        ls=st["ls"],
        marker=st["marker"],
        ms=3.5,
        lw=1.2,
        capsize=2,
        elinewidth=0.8,
        label=label or st["label"],
    )


def layers_figure(
    maps, aligned, out_path: str | os.PathLike, *, identity: str | None = None, pairs=None, cmap: str = CMAP
) -> tuple[str, str, str]:
    """Fig. 4 analogue: the anchor, the positive, and the LEAM map of every layer over the anchor.

    ``maps``, ``aligned``, ``pairs``: Parquet paths (every shard); only the example identity's rows
    are read. The example is ``identity`` (default: the identity with most pairs
    in ``pairs``, else in ``maps``), its first anchor and positive by name. Returns (identity,
    anchor, positive).
    """

    def rows_of(paths, ident=None, columns=None):
        batches = list(
            iter_parquet(paths, columns=columns, filters=None if ident is None else [("identity", "=", ident)])
        )
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
    cols = min(4, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(2.0 * cols + 0.9, 2.3 * nrows + 0.5), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel():
        ax.axis("off")
    shown = None
    for ax, (title, name, r) in zip(axes.ravel(), panels, strict=False):
        if r is None:
            ax.imshow(frames[name])
            ax.set_title(f"{title}\n{name}", fontsize=10)
            continue
        raw = torch.from_numpy(decode_map(r).copy())
        shown = overlay(ax, frames[name], to_frame(raw[None], size, tuple(r["window"]))[0].numpy(), cmap)
        ax.set_title(f"{title}\n{r['height']}x{r['width']} px map", fontsize=10)
    if shown is not None:
        fig.colorbar(shown, ax=axes, shrink=0.7, label="LEAM relevance (min-max normalised per map)")
    fig.suptitle(f"LEAM, {model}: {identity}, anchor {anchor} vs positive {positive}", fontsize=11)
    _save(fig, out_path)
    log.info("wrote %s (%s: %s vs %s)", out_path, identity, anchor, positive)
    return identity, anchor, positive


def threshold_figure(db_path: str | os.PathLike, model: str, out_path: str | os.PathLike) -> None:
    """Share of each class among the selected pixels (mean of per-map shares) vs top-k level."""
    con = database.connect(db_path)
    try:
        df = con.execute(
            """
            SELECT class, level, avg(rel_pct) AS mean_rel_pct, stddev_samp(rel_pct) AS std_rel_pct,
                   count(rel_pct) AS n_maps
            FROM counts_long WHERE model = ? AND level IS NOT NULL
            GROUP BY class_id, class, level ORDER BY class_id, level""",
            [model],
        ).df()
        parser = database.scalar(con, "SELECT string_agg(DISTINCT parser, ', ') FROM counts WHERE model = ?", [model])
        full = con.execute(
            """SELECT class, mean_rel_pct FROM class_share_model
                              WHERE model = ? AND selection = 'full'""",
            [model],
        ).df()
    finally:
        con.close()
    fig, ax = plt.subplots(figsize=(8, 4.6), layout="constrained")
    if df.empty or not (df["mean_rel_pct"].fillna(0) > 0).any():
        ax.axis("off")
        _empty(ax, f"{model}: no LEAM maps in this run (no identity has two usable photos)")
        _save(fig, out_path)
        return
    for cls, g in df.groupby("class", sort=False):
        if not (g["mean_rel_pct"].fillna(0) > 0).any():
            continue  # a class this parser never labels in these maps
        n = g["n_maps"].clip(lower=1).to_numpy()
        sem = g["std_rel_pct"].fillna(0).to_numpy() / np.sqrt(n)
        (line,) = ax.plot(g["level"], g["mean_rel_pct"], marker="o", ms=3, label=cls)
        ax.fill_between(
            g["level"], g["mean_rel_pct"] - sem, g["mean_rel_pct"] + sem, color=line.get_color(), alpha=0.15
        )
        f = full.loc[full["class"] == cls, "mean_rel_pct"]
        if len(f):
            ax.axhline(float(f.iloc[0]), color=line.get_color(), lw=0.7, ls=":")
    ax.plot([], [], color="0.4", lw=0.7, ls=":", label="(dotted) full activation")
    ax.fill_between([], [], [], color="0.4", alpha=0.15, label="(band) mean ± s.e. over maps")
    ax.set_xscale("log")
    ax.set_xticks([0.01, 0.1, 1, 10, 100], ["0.01", "0.1", "1", "10", "100"])
    ax.set_xlabel("top-k % of the activated pixels")
    ax.set_ylabel("share of selected pixels, % (mean over maps)")
    fig.suptitle(f"{model}: class share vs relevance threshold (all layers; parser: {parser})", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
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


def _drop_panels(axes, df, models, methods, n_col: str) -> None:
    """One panel per target model: mean cosine drop ± s.e. vs occluded share (log scale), one curve
    per method present (``df``: occlusion_by_model or atlas_summary rows; ``n_col``: its count).
    ``axes`` may outnumber ``models`` (an empty study has one empty panel)."""
    for ax, model in zip(axes, models, strict=False):
        g = df[df["model"] == model]
        for method in methods:
            h = g[g["method"] == method]
            if len(h):
                _errorbar(ax, h["size_pct"], h["mean_drop"], h["std_drop"], h[n_col], method)
        ax.set_xscale("log")
        ax.set_title(f"target {model}", fontsize=9)
        ax.set_xlabel("occluded pixels, % of the frame")
        ax.grid(alpha=0.3)


def _binned_drop_panel(ax2, pts, targets: list[str]) -> None:
    """Paper Fig. 11: each pair's drop at 1 % against its unoccluded cosine, as means (± s.e.) in
    sextile bins of the cosine, per target model and method (a scatter of every pair overplots)."""
    for i, model in enumerate(targets):  # binned means: a scatter of every pair overplots
        for method in ("leam", "random"):
            p = pts[(pts["model"] == model) & (pts["method"] == method)]
            if len(p) < 2:
                continue
            edges = np.unique(np.quantile(p["cosine_before"], np.linspace(0, 1, min(6, len(p)) + 1)))
            which = np.clip(np.searchsorted(edges, p["cosine_before"], side="right") - 1, 0, len(edges) - 2)
            g = p.assign(bin=which).groupby("bin")
            mean, std, n = g["drop"].mean(), g["drop"].std().fillna(0), g["drop"].count()
            x = g["cosine_before"].mean()
            ax2.errorbar(
                x,
                mean,
                yerr=std / np.sqrt(n),
                color=f"C{i}",
                ls=METHOD_STYLE[method]["ls"],
                marker=METHOD_STYLE[method]["marker"],
                ms=4,
                capsize=2,
                lw=1.2,
            )
    for i, model in enumerate(targets):
        ax2.plot([], [], color=f"C{i}", lw=6, label=model)
    for method in ("leam", "random"):
        st = METHOD_STYLE[method]
        ax2.plot([], [], color="0.3", ls=st["ls"], marker=st["marker"], label=st["label"])
    ax2.set_title("drop at 1 % vs unoccluded cosine, binned by sextiles of the cosine (Fig. 11)", fontsize=9)
    ax2.set_xlabel("cosine before occlusion (bin mean)")
    ax2.set_ylabel("cosine drop (mean ± s.e. per bin)")
    ax2.grid(alpha=0.3)
    if len(pts):
        ax2.legend(fontsize=7, ncol=2)


def occlusion_figure(db_path, out_path, source_model: str | None = None) -> None:
    """Paper Fig. 8: cosine drop vs occluded share, LEAM vs random pixels of ``source_model`` (default
    the first source by name), one panel per target model, mean with its standard error; Fig. 11:
    drop at 1 % vs the pair's unoccluded cosine; with several sources, the transfer table (LEAM
    minus random drop at 1 % for every source x target)."""
    every = _query(db_path, "SELECT * FROM occlusion_by_model ORDER BY source_model, model, method, size_pct")
    source_model = source_model or (every["source_model"].min() if len(every) else None)
    df = every[every["source_model"] == source_model]
    pts = _query(
        db_path,
        "SELECT model, method, cosine_before, drop FROM occlusion WHERE size_pct = 1 "
        "AND source_model = ? AND drop IS NOT NULL ORDER BY model, method",
        [source_model],
    )
    sources = sorted(every["source_model"].unique()) if len(every) else []
    targets = sorted(df["model"].unique()) if len(df) else []
    ncols = max(1, len(targets))
    fig = plt.figure(figsize=(max(10.0, 3.4 * ncols), 7.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.05])  # type: ignore[misc]  # an array of 2
    axes = top.subplots(1, ncols, squeeze=False, sharey=True)[0]
    if df.empty:
        _empty(axes[0], "no occlusion results (no identity has two usable photos)")
    _drop_panels(axes, df, targets, ("leam", "random"), "n_pairs")
    axes[0].set_ylabel("cosine drop (mean ± s.e.)")
    if not df.empty:
        axes[0].legend(fontsize=7)
        src = df.iloc[0]
        top.suptitle(
            f"Occluding the anchor with the top LEAM pixels of {src['source_model']} / "
            f"{src['source_layer']} vs random pixels (Fig. 8)",
            fontsize=9,
        )
    low = bottom.subplots(1, 2 if len(sources) > 1 else 1, squeeze=False)[0]
    _binned_drop_panel(low[0], pts, targets)
    if len(sources) > 1:
        at1 = every[every["size_pct"] == 1].pivot_table(
            index=["source_model", "model"], columns="method", values="mean_drop"
        )
        all_targets = sorted(every["model"].unique())
        grid = np.array(
            [
                [
                    at1.loc[(s, t), "leam"] - at1.loc[(s, t), "random"] if (s, t) in at1.index else np.nan
                    for t in all_targets
                ]
                for s in sources
            ]
        )
        im = low[1].imshow(grid, cmap="viridis")
        mid = np.nanmean(grid) if np.isfinite(grid).any() else 0
        for (i, j), v in np.ndenumerate(grid):
            low[1].text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8, color="k" if v > mid else "w")
        low[1].set_xticks(range(len(all_targets)), all_targets, rotation=30, fontsize=7)
        low[1].set_yticks(range(len(sources)), sources, fontsize=7)
        low[1].set_xlabel("target model (re-embeds the occluded anchor)")
        low[1].set_ylabel("source model (its LEAM pixels)")
        low[1].set_title("transfer at 1 %: LEAM drop - random drop (Table 21)", fontsize=9)
        fig.colorbar(im, ax=low[1], label="cosine drop difference")
    _save(fig, out_path)


def atlas_figure(db_path, out_path) -> None:
    """Identity atlas: drop of a held-out photo occluded with its own / its identity's / the
    population's mean LEAM pixels or random pixels; one panel per model, mean with its standard error."""
    df = _query(db_path, "SELECT * FROM atlas_summary ORDER BY model, method, size_pct")
    models = sorted(df["model"].unique()) if len(df) else []
    fig, axes = plt.subplots(
        1,
        max(1, len(models)),
        figsize=(max(7.0, 3.6 * len(models)), 3.8),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    axes = axes[0]
    if df.empty:
        _empty(axes[0], "no atlas results (no identity has two usable photos)")
    _drop_panels(axes, df, models, ("own", "identity", "population", "random"), "n_images")
    axes[0].set_ylabel("cosine drop (mean ± s.e. over photos)")
    if models:
        axes[0].legend(fontsize=7)
        src = df.iloc[0]
        fig.suptitle(
            f"Leave-one-photo-out occlusion with the LEAM pixels of {src['source_model']} / "
            f"{src['source_layer']}: whose pixels carry over?",
            fontsize=9,
        )
    _save(fig, out_path)


def person_figure(db_path, out_path, size_pct: float = 1.0) -> None:
    """Do persons have their own patterns? One row per model: left, each identity's top-1 % class
    share minus the other identities' (percentage points; * where Benjamini-Hochberg q < 0.05,
    view ``identity_profiles``); right, each identity's held-out photos occluded at ``size_pct`` %
    with their own map, their identity's atlas, the population atlas and random pixels: mean cosine
    drop with a 95 % interval over the identity's photos (mean ± 1.96 s.e.)."""
    prof = _query(db_path, "SELECT * FROM identity_profiles")
    atl = _query(
        db_path,
        """SELECT model, identity, method, avg(drop) AS mean, stddev_samp(drop) AS std, count(drop) AS n
           FROM atlas WHERE size_pct = ? AND drop IS NOT NULL GROUP BY ALL ORDER BY ALL""",
        [size_pct],
    )
    models = sorted(set(prof["model"]) | set(atl["model"]))
    n = max(1, len(models))
    fig, axes = plt.subplots(n, 2, figsize=(12, 3.4 * n + 0.6), squeeze=False, layout="constrained")
    if not models:
        _empty(axes[0, 0], "no identity has two usable photos: nothing to compare")
        axes[0, 1].axis("off")
    for row, model in zip(axes, models, strict=False):
        ax = row[0]
        p = prof[prof.model == model]
        if p.empty:
            _empty(ax, "no class profiles")
        else:
            classes = [c for c in CLASS_NAMES if c in set(p["class"])]  # FaRL's order
            idents = sorted(p["identity"].unique())
            grid = p.pivot_table(index="identity", columns="class", values="deviation").reindex(
                index=idents, columns=classes
            )
            sig = p.pivot_table(index="identity", columns="class", values="significant", aggfunc="max").reindex(
                index=idents, columns=classes
            )
            lim = max(1.0, float(np.nanmax(np.abs(grid.to_numpy()))))
            im = ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
            for i in range(len(idents)):
                for j in range(len(classes)):
                    if sig.iat[i, j] is True or sig.iat[i, j] == 1:
                        ax.text(j, i, "*", ha="center", va="center", fontsize=11)
            ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(len(idents)), idents, fontsize=7)
            fig.colorbar(im, ax=ax, shrink=0.9, label="identity - others, pp")
        ax.set_title(f"{model}: top-1 % class share, identity vs the others (* q < 0.05)", fontsize=9)
        ax = row[1]
        a = atl[atl.model == model]
        if a.empty:
            _empty(ax, "no atlas results")
        else:
            idents = sorted(a["identity"].unique())
            methods = [m for m in ("own", "identity", "population", "random") if m in set(a["method"])]
            for k, method in enumerate(methods):
                g = a[a.method == method].set_index("identity").reindex(idents)
                half = 1.96 * g["std"].fillna(0) / np.sqrt(g["n"].clip(lower=1))
                st = METHOD_STYLE[method]
                x = np.arange(len(idents)) + (k - (len(methods) - 1) / 2) * 0.16
                ax.errorbar(
                    x,
                    g["mean"],
                    yerr=half,
                    color=st["color"],
                    marker=st["marker"],
                    ls="none",
                    ms=4,
                    capsize=2,
                    label=st["label"],
                )
            ax.set_xticks(range(len(idents)), idents, rotation=30, ha="right", fontsize=7)
            ax.set_ylabel(f"cosine drop at {size_pct:g} % (95 % CI)")
            ax.axhline(0, color="0.6", lw=0.6)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3, axis="y")
        ax.set_title(f"{model}: held-out photos occluded with whose pixels?", fontsize=9)
    _save(fig, out_path)
    log.info("wrote %s", out_path)


def _compare_column(axes, g, model: str, *, first: bool) -> None:
    """One model's column of the comparison figure: BC (top) and EMD (bottom) per layer, same vs
    different identity; ``g``: its rows of ``compare_summary``."""
    layers = g.drop_duplicates("layer_idx").sort_values("layer_idx")
    pos = {li: k for k, li in enumerate(layers["layer_idx"])}
    for i, (col, name) in enumerate((("bc", "BC"), ("emd", "EMD, frame px"))):
        ax = axes[i]
        for kind in ("same", "different"):
            h = g[g["kind"] == kind]
            if len(h) and h[f"mean_{col}"].notna().any():
                _errorbar(ax, [pos[li] for li in h["layer_idx"]], h[f"mean_{col}"], h[f"std_{col}"], h["n_pairs"], kind)
        ax.set_xticks(range(len(layers)), layers["layer"], rotation=45, ha="right", fontsize=7)
        ax.grid(alpha=0.3)
        if first:
            ax.set_ylabel(f"{name} (mean ± s.e.)")
        if i == 0:
            ax.set_title(model, fontsize=9)


def compare_figure(db_path, out_path, selection: str | None = None) -> None:
    """Bhattacharyya coefficient (BC) and earth mover's distance (EMD) of image maps per layer, same vs
    different identity (Tables 3-6): one column per model (its own layers), mean ± s.e.
    ``selection``: default top1, else the first selection the run compared (``compare.selections``)."""
    if selection is None:
        got = _query(db_path, "SELECT DISTINCT selection FROM compare WHERE selection NOT LIKE 'geometry:%'")
        found = sorted(got["selection"]) if len(got) else []
        selection = "top1" if "top1" in found or not found else found[0]
    df = _query(
        db_path, "SELECT * FROM compare_summary WHERE selection = ? ORDER BY model, layer_idx, kind", [selection]
    )
    models = sorted(df["model"].unique()) if len(df) else []
    ncols = max(1, len(models))
    fig, axes = plt.subplots(2, ncols, figsize=(max(8.0, 3.4 * ncols), 6.2), squeeze=False, layout="constrained")
    if df.empty:
        for ax in axes.ravel():
            _empty(ax, "no map comparisons")
    for j, model in enumerate(models):
        _compare_column(axes[:, j], df[df["model"] == model], model, first=j == 0)
    if models:
        axes[0, 0].legend(fontsize=7)
        note = (
            ""
            if df["kind"].eq("different").any()
            else "\nno different-identity pairs: only one identity has maps (two or more usable photos)"
        )
        fig.suptitle(
            f"Image maps ({selection}) compared. BC: Bhattacharyya coefficient (higher: more alike);\n"
            f"EMD: earth mover's distance (lower: more alike){note}",
            fontsize=8,
        )
    _save(fig, out_path)


def demographics_figure(db_path, out_path) -> None:
    """Paper Fig. 9-10: drop by gender / ethnicity (LEAM vs random) and vs age gap, when metadata exist."""
    groups = _query(
        db_path,
        "SELECT factor, grp, method, size_pct, avg(mean_drop) AS drop FROM occlusion_by_group "
        "GROUP BY ALL ORDER BY factor, grp, method, size_pct",
    )
    ages = _query(
        db_path,
        "SELECT method, age_gap, avg(mean_drop) AS drop FROM occlusion_by_age_gap "
        "WHERE size_pct = 1 GROUP BY ALL ORDER BY method, age_gap",
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    for ax, factor in zip(axes[:2], ("gender", "ethnicity"), strict=True):
        g = groups[groups["factor"] == factor]
        if g.empty:
            _empty(ax, f"no {factor} metadata")
        groups_of = {grp: f"C{k}" for k, grp in enumerate(sorted(g["grp"].unique()))}
        for (grp, method), h in g.groupby(["grp", "method"], sort=True):
            st = METHOD_STYLE[method]
            ax.plot(
                h["size_pct"],
                h["drop"],
                color=groups_of[grp],
                ls=st["ls"],
                marker=st["marker"],
                ms=3,
                label=f"{grp}, {st['label']}",
            )
        if not g.empty:
            ax.set_xscale("log")
            ax.legend(fontsize=7)
        ax.set_title(f"cosine drop by {factor}", fontsize=9)
        ax.set_xlabel("occluded pixels, %")
        ax.grid(alpha=0.3)
    if ages.empty:
        _empty(axes[2], "no ages")
    for method, h in ages.groupby("method", sort=True):
        st = METHOD_STYLE[method]
        axes[2].plot(
            h["age_gap"], h["drop"], color=st["color"], ls=st["ls"], marker=st["marker"], ms=3, label=st["label"]
        )
    axes[2].set_title("cosine drop at 1 % vs age gap (years)", fontsize=9)
    axes[2].grid(alpha=0.3)
    if not ages.empty:
        axes[2].legend(fontsize=7)
    _save(fig, out_path)


def explain_figures(
    frame_a: np.ndarray,
    frame_b: np.ndarray,
    maps: dict,
    labels: np.ndarray,
    out_dir,
    *,
    top: float = 1.0,
    title: str = "",
    window: tuple[int, int, int, int] | None = None,
    full_threshold: float = 0.01,
    prefix: str = "",
    cmap: str = CMAP,
    positive_label: str = "positive (B)",
) -> list[str]:
    """Figures of one pair for ``leam explain`` (PNG + PDF each, named ``{prefix}overlay``,
    ``{prefix}layers``, ``{prefix}topk``): A, B and every layer's map over A; the per-layer grid;
    A's top-k % pixels of each layer coloured by parser class.

    frames: (S, S, 3) uint8; maps: {layer: (h, w) raw map}; labels: (S, S) FaRL class ids of A;
    window: the frame box the model saw (None: the whole frame); full_threshold: ``count.full_threshold``
    (the "activated" pixels whose top ``top`` % are drawn).
    """
    from leam.core.counting import selection_sizes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = frame_a.shape[0]
    frames = {
        k: to_frame(torch.as_tensor(v, dtype=torch.float32)[None], size, window)[0].numpy() for k, v in maps.items()
    }
    names = list(frames)
    files = []
    # overlay: A, B, then every layer's map over A (one row)
    n = 2 + len(names)
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n + 0.9, 2.6), squeeze=False, layout="constrained")
    axes = axes[0]
    axes[0].imshow(frame_a)
    axes[0].set_title("anchor (A)", fontsize=7)
    axes[1].imshow(frame_b)
    axes[1].set_title(f"{positive_label},\naligned to A", fontsize=7)
    shown = None
    for ax, k in zip(axes[2:], names, strict=False):
        shown = overlay(ax, frame_a, frames[k], cmap)
        ax.set_title(f"LEAM {k}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    if shown is not None:
        fig.colorbar(shown, ax=axes, shrink=0.8, label="LEAM relevance")
    fig.suptitle(title, fontsize=8)
    files += _save(fig, out_dir / f"{prefix}overlay.png")
    cols = min(5, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.2 * cols + 0.9, 2.5 * rows + 0.3), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel():
        ax.axis("off")
    shown = None
    for ax, k in zip(axes.ravel(), names, strict=False):
        shown = overlay(ax, frame_a, frames[k], cmap)
        ax.set_title(f"{k} ({maps[k].shape[-2]}x{maps[k].shape[-1]})", fontsize=9)
    if shown is not None:
        fig.colorbar(shown, ax=axes, shrink=0.8, label="LEAM relevance (min-max normalised)")
    fig.suptitle(title, fontsize=8)
    files += _save(fig, out_dir / f"{prefix}layers.png")
    palette = plt.get_cmap("tab20")(np.arange(20))[:, :3]
    width = max(6.0, 2.2 * cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width, 2.4 * rows + 0.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    present = set()
    for ax, k in zip(axes.ravel(), names, strict=False):
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
    files += _save(fig, out_dir / f"{prefix}topk.png")
    return files
