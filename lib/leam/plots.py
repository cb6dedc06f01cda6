"""Figures: layer-by-layer LEAM maps over one face (paper Fig. 4) and class share vs threshold.

Both read what the pipeline wrote (maps and aligned frames in Parquet, shares from DuckDB) and
write PNGs atomically.
"""

from __future__ import annotations

import logging
import os

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import torch  # noqa: E402

from .align import decode_png  # noqa: E402
from .io import atomic_path  # noqa: E402
from .maps import to_frame  # noqa: E402

__all__ = ["layers_figure", "threshold_figure"]

log = logging.getLogger(__name__)


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def layers_figure(maps: pa.Table, aligned: pa.Table, out_path: str | os.PathLike, *,
                  identity: str | None = None) -> tuple[str, str, str]:
    """Fig. 4 analogue: the anchor, the positive, and the LEAM map of every layer over the anchor.

    The example is ``identity`` (default: the identity with most pairs), its first anchor and
    positive by name. Returns (identity, anchor, positive).
    """
    if maps.num_rows == 0:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no same-identity pairs: no LEAM maps to show", ha="center", va="center")
        _save(fig, out_path)
        return ("", "", "")
    model = maps.column("model")[0].as_py()
    if identity is None:
        ids = pc.value_counts(maps.column("identity")).to_pylist()
        identity = sorted(ids, key=lambda d: (-d["counts"], d["values"]))[0]["values"]
    sub = maps.filter(pc.equal(maps.column("identity"), identity)).to_pylist()
    if not sub:
        raise ValueError(f"identity {identity!r} has no LEAM maps in this run")
    anchor, positive = min((r["anchor"], r["positive"]) for r in sub)
    rows = sorted((r for r in sub if r["anchor"] == anchor and r["positive"] == positive), key=lambda r: r["layer_idx"])
    frames = {r["image"]: decode_png(r["frame_png"]) for r in aligned.to_pylist() if r["identity"] == identity}
    size = frames[anchor].shape[0]
    n = len(rows)
    fig, axes = plt.subplots(1, n + 2, figsize=(1.6 * (n + 2), 2.0))
    for ax, name, title in ((axes[0], anchor, "anchor"), (axes[1], positive, "positive")):
        ax.imshow(frames[name])
        ax.set_title(f"{title}\n{name}", fontsize=7)
    for ax, r in zip(axes[2:], rows):
        raw = torch.from_numpy(np.frombuffer(r["map"], "<f4").reshape(r["height"], r["width"]).copy())
        m = to_frame(raw[None], size)[0].numpy()
        ax.imshow(frames[anchor])
        ax.imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"{r['layer']}\n{r['height']}x{r['width']}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"LEAM, {model}: {identity}, anchor {anchor} vs positive {positive}", fontsize=9)
    fig.tight_layout()
    _save(fig, out_path)
    log.info("wrote %s (%s: %s vs %s)", out_path, identity, anchor, positive)
    return identity, anchor, positive


def threshold_figure(db_path: str | os.PathLike, model: str, out_path: str | os.PathLike) -> None:
    """Share of each class among the selected pixels (mean of per-map shares) vs top-k level."""
    con = duckdb.connect(str(db_path), read_only=True)
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
