"""The run's report: one self-contained HTML page (figures inlined) built from results/{run}/leam.duckdb.

Sections: the paper's four findings measured on this run (each with its numbers and whether it
holds, or why it cannot be measured here), the identity atlas, the figures, the key tables, and the
run's inputs (models, images kept and rejected with reasons). The table of contents lists every
figure and table; each has an ``id`` so a test (and a reader) can find it.
"""

from __future__ import annotations

import base64
import datetime
import html
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from . import database
from .io import write_text

__all__ = ["Finding", "findings", "build_report", "report_figures"]

log = logging.getLogger(__name__)

CENTRAL = ("nose", "right eye", "left eye", "right eyebrow", "left eyebrow")


@dataclass
class Finding:
    """One acceptance finding: ``holds`` is True / False, or None when this run cannot measure it."""

    key: str
    title: str
    paper: str
    holds: bool | None
    detail: str
    rows: list[dict] = field(default_factory=list)


def _df(con, sql, params=()):
    return con.execute(sql, list(params)).df()


def findings(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    """The four acceptance findings of the mission, measured on the database."""
    out = []
    cs = _df(
        con, "SELECT model, same_mean, different_mean, same_pairs, different_pairs FROM cosine_summary ORDER BY model"
    )
    ok = cs.dropna(subset=["same_mean", "different_mean"])
    out.append(
        Finding(
            "cosine",
            "Same-identity cosine > different-identity cosine (the model works)",
            "implicit in the paper: every model recognises (same-identity scores above different-identity ones)",
            bool((ok["same_mean"] > ok["different_mean"]).all()) if len(ok) else None,
            "; ".join(
                f"{r.model}: {r.same_mean:.4f} ({r.same_pairs} same pairs) vs {r.different_mean:.4f} "
                f"({r.different_pairs} different pairs)"
                for r in ok.itertuples()
            )
            or "no pairs of both kinds",
            cs.to_dict("records"),
        )
    )
    cmp = _df(
        con,
        """SELECT model, avg(bc_same) AS bc_same, avg(bc_different) AS bc_different,
                             avg(emd_same) AS emd_same, avg(emd_different) AS emd_different
                      FROM compare_table WHERE selection = 'top1' GROUP BY model ORDER BY model""",
    )
    both = cmp.dropna(subset=["bc_same", "bc_different"])
    if len(both):
        holds = bool(((both["bc_same"] > both["bc_different"]) & (both["emd_same"] < both["emd_different"])).all())
        detail = "; ".join(
            f"{r.model}: BC {r.bc_same:.3f} vs {r.bc_different:.3f}, EMD {r.emd_same:.2f} vs "
            f"{r.emd_different:.2f} frame px (same vs different, top 1 %, mean over layers)"
            for r in both.itertuples()
        )
    else:
        holds = None
        detail = (
            "not measurable on this run: different-identity map pairs need at least two identities with two "
            "or more usable photos (LEAM needs a positive of the same person)"
        )
        if len(cmp):
            detail += "; same-identity only: " + "; ".join(
                f"{r.model}: BC {r.bc_same:.3f}, EMD {r.emd_same:.2f} px" for r in cmp.itertuples()
            )
    out.append(
        Finding(
            "maps",
            "LEAM maps of one person are more alike than of two people (BC higher, EMD lower)",
            "BC 0.32-0.57 same vs 0.04-0.13 different (Tables 3-4); EMD higher for different (Tables 5-6)",
            holds,
            detail,
            cmp.to_dict("records"),
        )
    )
    # pooled over every source and target model (occlusion_table has one row per source x target)
    occ = _df(
        con,
        """SELECT avg(drop) FILTER (WHERE method = 'leam') AS leam_drop,
                             avg(drop) FILTER (WHERE method = 'random') AS random_drop,
                             count(drop) FILTER (WHERE method = 'leam') AS n_leam
                      FROM occlusion WHERE size_pct = 1 HAVING count(drop) > 0""",
    )
    if len(occ) and occ["leam_drop"].notna().all():
        r = occ.iloc[0]
        out.append(
            Finding(
                "occlusion",
                "Occluding the top 1 % LEAM pixels drops the cosine more than 1 % random pixels",
                "0.1148 vs 0.0286 (Table 9, IR_CASIA conv1 pixels, mean over 9 models)",
                bool(r["leam_drop"] > r["random_drop"]),
                f"LEAM {r['leam_drop']:.4f} vs random {r['random_drop']:.4f} ({int(r['n_leam'])} pair x source x "
                "target occlusions each, mean over every source and target model)",
                occ.to_dict("records"),
            )
        )
    else:
        out.append(
            Finding(
                "occlusion",
                "Occluding the top 1 % LEAM pixels drops the cosine more than 1 % random pixels",
                "0.1148 vs 0.0286 (Table 9)",
                None,
                "no occlusion results at 1 % in this run",
            )
        )
    share = _df(
        con,
        f"""SELECT model, selection, sum(mean_rel_pct) AS central FROM class_share_model
                         WHERE class IN ({", ".join("'" + c + "'" for c in CENTRAL)})
                           AND selection IN ('top1', 'top100')
                         GROUP BY model, selection ORDER BY model, selection""",
    )
    piv = share.pivot(index="model", columns="selection", values="central") if len(share) else pd.DataFrame()
    if {"top1", "top100"} <= set(piv.columns):
        out.append(
            Finding(
                "central",
                "The top 1 % pixels hold more nose, eyes and brows than all activated pixels",
                "nose 10.8 % at 100 % -> 20-30 % at <= 1 % (Appendix B)",
                bool((piv["top1"] > piv["top100"]).all()),
                "; ".join(
                    f"{m}: nose + eyes + brows {r.top1:.2f} % of the top 1 % vs {r.top100:.2f} % of all "
                    "activated pixels"
                    for m, r in piv.iterrows()
                ),
                share.to_dict("records"),
            )
        )
    else:
        out.append(
            Finding(
                "central",
                "The top 1 % pixels hold more nose, eyes and brows than all activated pixels",
                "nose 10.8 % -> 20-30 % (Appendix B)",
                None,
                "no counts",
            )
        )
    return out


def _table(df: pd.DataFrame, tid: str, caption: str, digits: int = 4) -> str:
    if df.empty:
        body = "<p class='empty'>(no rows in this run)</p>"
    else:
        # missing values as "-": pandas' na_rep covers NaN but not the <NA> of nullable integer columns
        nullable_int = [c for c in df.columns if pd.api.types.is_integer_dtype(df[c]) and df[c].isna().any()]
        df = df.assign(**{c: df[c].astype(object).where(df[c].notna(), "-") for c in nullable_int})
        body = df.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", na_rep="-", border=0, classes="t")
    return f"<figure class='table' id='{tid}'><figcaption>{html.escape(caption)}</figcaption>{body}</figure>"


def _img(path: str | os.PathLike, fid: str, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (
        f"<figure id='{fid}'><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'/>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1.5em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:1.8em;border-bottom:1px solid #ddd}
.meta{color:#666} nav ol{columns:2;column-gap:3em} nav li{margin-left:.5em;break-inside:avoid}
figure{margin:1.2em 0} img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em;margin:.3em 0} table.t{border-collapse:collapse;font-size:.85em}
table.t th,table.t td{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f6f6f6} .finding{padding:.6em .9em;margin:.6em 0;border-left:5px solid #999;background:#fafafa}
.yes{border-color:#2a9d3a} .no{border-color:#c0392b} .na{border-color:#999}
.verdict{font-weight:600} .empty{color:#888}
"""


#: every abbreviation the page uses, spelled out once at its top
ABBREVIATIONS = (
    "Abbreviations: <b>LEAM</b>, Layer Embedding Activation Mapping; <b>BC</b>, Bhattacharyya "
    "coefficient (overlap of two maps as distributions, 1 = identical); <b>EMD</b>, earth mover's "
    "distance (frame pixels a map's mass must move to become the other, 0 = identical); "
    "<b>top-k %</b>, the k % most relevant activated pixels of a map; <b>AUC</b>, area under the "
    "ROC curve; <b>s.e.</b>, standard error of the mean."
)


def build_report(
    db_path: str | os.PathLike,
    out_path: str | os.PathLike,
    figures: dict[str, str],
    *,
    title: str = "leam run report",
    caveats: list[str] | None = None,
) -> list[tuple[str, str]]:
    """Write the HTML report; returns the (id, caption) of every figure and table it contains.

    ``figures``: {caption: png path}, in display order; ``caveats``: sentences shown with the
    findings (e.g. :func:`leam.dataset.sample_caveats`).
    """
    con = database.connect(db_path)
    try:
        found = findings(con)
        items: list[tuple[str, str]] = []
        parts = []
        verdict = {True: ("yes", "holds"), False: ("no", "does not hold"), None: ("na", "not measurable here")}
        parts.append("<h2 id='findings'>The paper's findings, measured on this run</h2>")
        for c in caveats or []:
            parts.append(f"<p class='meta caveat'>Caveat: {html.escape(c)}</p>")
        for f in found:
            cls, word = verdict[f.holds]
            parts.append(
                f"<div class='finding {cls}' id='finding-{f.key}'><div class='verdict'>{html.escape(f.title)}: "
                f"{word}</div><div>{html.escape(f.detail)}</div><div class='meta'>paper: "
                f"{html.escape(f.paper)}</div></div>"
            )
        atlas = _df(
            con,
            """SELECT model, method, size_pct, n_images, n_skipped, mean_drop FROM atlas_summary
                            WHERE size_pct IN (1, 5) ORDER BY model, size_pct, method""",
        )
        parts.append(
            "<h2 id='atlas'>Identity atlas: do one person's LEAM pixels carry over to their other photos?</h2>"
        )
        parts.append(
            "<p>Each photo is held out of its identity and occluded with the pixels chosen by its own map, by "
            "its identity's atlas (the other photos' maps, in the identity's aligned frame), by the population "
            "atlas (every other identity) and at random; cosine drop averaged over its positives.</p>"
        )
        parts.append(_table(atlas, "table-atlas", "Atlas occlusion: mean cosine drop at 1 % and 5 %"))
        if len(atlas) and "population" not in set(atlas["method"]):
            parts.append(
                "<p class='meta'>No population atlas in this run: it needs a second identity with two or "
                "more usable photos.</p>"
            )
        items.append(("table-atlas", "Atlas occlusion"))
        parts.append("<h2 id='figures'>Figures</h2>")
        for i, (caption, path) in enumerate(figures.items(), 1):
            fid = f"figure-{i}"
            parts.append(_img(path, fid, caption))
            items.append((fid, caption))
        parts.append("<h2 id='tables'>Tables</h2>")
        tables = [
            (
                "table-cosine",
                "Cosine similarity, same vs different identity",
                "SELECT * FROM cosine_summary ORDER BY model",
            ),
            (
                "table-verification",
                "Does each model recognise these people? Every pair of accepted photos: mean cosine "
                "same vs different identity, ROC AUC (area under the curve) and rank-1 identification",
                "SELECT * FROM verification ORDER BY model",
            ),
            (
                "table-suspect",
                "Photos that may be filed under the wrong person: mean cosine to the other photos of "
                "their identity below the midpoint of the mean same- and different-identity cosines, per model",
                "SELECT * FROM suspect_labels",
            ),
            (
                "table-threshold",
                "Class share of the selected pixels (mean over maps, %), by threshold (Appendix B)",
                "SELECT model, class, full_activation, top0_1, top1, top5, top10, top100 FROM threshold_table "
                "WHERE full_activation IS NOT NULL ORDER BY model, top1 DESC",
            ),
            (
                "table-compare",
                "BC and EMD per layer, same vs different identity (Tables 3-6)",
                "SELECT model, layer, selection, bc_same, bc_different, emd_same, emd_different, "
                "n_same, n_different, n_skipped FROM compare_table ORDER BY model, selection, layer_idx",
            ),
            (
                "table-occlusion",
                "Cosine drop, LEAM-guided vs random occlusion (Table 9)",
                "SELECT * FROM occlusion_table ORDER BY source_model, model, size_pct",
            ),
            (
                "table-occlusion-models",
                "Transfer at 1 %: cosine drop per source and target model (Table 21)",
                "SELECT source_model, source_layer, model AS target_model, method, n_pairs, n_skipped, mean_drop "
                "FROM occlusion_by_model WHERE size_pct = 1 ORDER BY source_model, model, method",
            ),
        ]
        if database.scalar(con, "SELECT count(*) FROM identity_meta"):
            tables.append(
                (
                    "table-demographics",
                    "Mann-Whitney U between demographic groups (Tables 22-23)",
                    "SELECT * FROM demographic_tests ORDER BY factor, method, size_pct",
                )
            )
        for tid, caption, sql in tables:
            parts.append(_table(_df(con, sql), tid, caption))
            items.append((tid, caption))
        parts.append("<h2 id='inputs'>Inputs</h2>")
        models = _df(
            con,
            "SELECT model, count(*) AS layers, string_agg(layer, ', ' ORDER BY layer_idx) AS layer_names "
            "FROM layers GROUP BY model ORDER BY model",
        )
        images = _df(
            con,
            "SELECT status, count(*) AS images, count(DISTINCT identity) AS identities FROM images "
            "GROUP BY status ORDER BY status",
        )
        rejects = _df(con, "SELECT identity, image, status, reason, duplicate_of FROM rejects")
        for tid, caption, df in (
            ("table-models", "Models and layers", models),
            ("table-images", "Images by status", images),
            ("table-rejects", "Images not used, with the reason", rejects),
            (
                "table-unpaired",
                "People with fewer than two usable photos (no same-identity pair)",
                _df(con, "SELECT * FROM unpaired_identities"),
            ),
        ):
            parts.append(_table(df, tid, caption))
            items.append((tid, caption))
        n_pairs = database.scalar(con, "SELECT count(*) FROM pairs")
        n_maps = database.scalar(
            con, "SELECT count(*) FROM (SELECT DISTINCT model, layer, anchor, positive, identity FROM counts)"
        )
    finally:
        con.close()
    toc = "".join(f"<li><a href='#{i}'>{html.escape(c)}</a></li>" for i, c in items)
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='meta'>LEAM (arXiv 2509.17457) reproduced by leam; {n_pairs} ordered same-identity pairs, "
        f"{n_maps} maps; generated {datetime.date.today()} from {html.escape(str(db_path))}.</p>"
        f"<p class='meta' id='abbreviations'>{ABBREVIATIONS}</p>"
        f"<nav id='contents'><h2>Contents</h2><ol>{toc}</ol></nav>" + "".join(parts) + "</body></html>"
    )
    write_text(page, out_path)
    for f in found:
        log.info(
            "finding %s: %s (%s)",
            f.key,
            {True: "holds", False: "does not hold", None: "not measurable"}[f.holds],
            f.detail,
        )
    log.info(
        "wrote %s: %d figures, %d tables",
        out_path,
        sum(i.startswith("figure-") for i, _ in items),
        sum(i.startswith("table-") for i, _ in items),
    )
    return items


def report_figures(models, files, *, demographics: bool) -> dict[str, str]:
    """{caption: path} of the pipeline's figures in report order (``files``: the report rule's input)."""
    out = {}
    for m, layers, threshold in zip(models, files.layers, files.threshold, strict=True):
        out[f"{m}: LEAM of every layer over one face (paper Fig. 4)"] = layers
        out[f"{m}: class share vs relevance threshold (Appendix B)"] = threshold
    out["BC and EMD of image maps per layer, same vs different identity (Tables 3-6)"] = files.compare
    out["Cosine drop vs occluded pixels, LEAM-guided vs random, per model (Fig. 8); drop vs cosine (Fig. 11)"] = (
        files.occlusion
    )
    out["Identity atlas: own / identity / population / random pixels"] = files.atlas
    if demographics:
        out["Cosine drop by gender, ethnicity and age gap (Fig. 9-10)"] = files.demographics
    return out
