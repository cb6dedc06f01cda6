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
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from leam.core.codeversion import code_version
from leam.core.io import write_text
from leam.core.paper import BC_RANGE, IR_CASIA_OCCLUSION, IR_CASIA_SHARES, OCCLUSION_SIZES
from leam.core.paper import LEVELS as PAPER_LEVELS
from leam.core.stats import N_RESAMPLES
from leam.outputs import database
from leam.outputs.findings import POOLED

__all__ = ["findings_section", "build_report", "report_figures"]

log = logging.getLogger(__name__)

VERDICT_CLASS = {"holds": "yes", "reversed": "no"}  # anything else: "not established with N people"

#: what the report calls the finding groups, in order, with the finding keys each shows
SECTIONS = (
    ("finding-cosine", "The models recognise these people", ("cosine",)),
    ("finding-maps", "LEAM maps of one person are more alike than maps of two people", ("maps_bc", "maps_emd")),
    ("finding-central", "The most relevant pixels are central: nose, eyes, brows", ("central", "central_nose")),
    ("finding-occlusion", "Occluding LEAM pixels hurts more than random pixels", ("occlusion",)),
    ("finding-transfer", "Does a model's own map hurt it most? (transfer)", ("transfer",)),
    (
        "finding-person",
        "Do persons have their own patterns? (identity atlas, class profiles)",
        ("atlas_identity", "atlas_own", "atlas_population", "profiles"),
    ),
)


def _df(con, sql, params=()):
    return con.execute(sql, list(params)).df()


def _num(v, digits: int = 3, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _p(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}" if v >= 0.001 else "< 0.001"


def _ci(effect, low, high, digits: int = 3) -> str:
    return f"{_num(effect, digits, True)} [{_num(low, digits, True)}, {_num(high, digits, True)}]"


def _verdict_cell(v) -> str:
    if not v:
        return "<td>-</td>"
    return f"<td class='v {VERDICT_CLASS.get(v, 'na')}'>{html.escape(v)}</td>"


def _html_table(header: list[str], rows: list[list[str]], tid: str, caption: str) -> str:
    """A table of already formatted cells (a cell starting with '<td' is taken as it is)."""
    if not rows:
        return (
            f"<figure class='table' id='{tid}'><figcaption>{html.escape(caption)}</figcaption>"
            "<p class='empty'>(not measured in this run)</p></figure>"
        )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(c if c.startswith("<td") else f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return (
        f"<figure class='table' id='{tid}'><figcaption>{html.escape(caption)}</figcaption>"
        f"<table class='t'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></figure>"
    )


def _effect_row(r: dict, digits: int = 3, control: bool = True) -> list[str]:
    cells = [
        _num(r["a_mean"], digits),
        _num(r["b_mean"], digits),
        _ci(r["effect"], r["ci_low"], r["ci_high"], digits),
        _p(r["p_value"]),
        str(r["n_identities"]),
        f"{r['n_a']} / {r['n_b']}",
        _verdict_cell(r["verdict"]),
    ]
    if control:
        cells += [
            _num(r["control_effect"], digits, True),
            _ci(r["excess"], r["excess_ci_low"], r["excess_ci_high"], digits) if r["excess"] is not None else "-",
            _verdict_cell(r["excess_verdict"]),
        ]
    return cells


EFFECT_HEADER = ["A", "B", "effect A - B [95 % CI]", "p", "people", "n A / n B", "verdict"]
CONTROL_HEADER = ["control effect", "above the control [95 % CI]", "verdict above the control"]


def _layer_pivot(rows: list[dict], value: str, tid: str, caption: str, digits: int = 3) -> str:
    """Per model (rows) and layer position (columns, shallowest first; each cell names its layer):
    the effect (or excess) with its interval, coloured by verdict."""
    prefix = "" if value == "effect" else "excess_"
    per_model = {
        m: sorted((r for r in rows if r["model"] == m and r["layer_idx"] >= 0), key=lambda r: r["layer_idx"])
        for m in sorted({r["model"] for r in rows})
    }
    width = max((len(v) for v in per_model.values()), default=0)
    out = []
    for model, cells_of in per_model.items():
        cells = [model]
        for cell in cells_of:
            if cell[value] is None:
                cells.append(f"<td><small>{html.escape(cell['layer'])}</small><br>-</td>")
                continue
            v = cell[f"{prefix}verdict"]
            cells.append(
                f"<td class='v {VERDICT_CLASS.get(v, 'na')}' title='{html.escape(v)}'>"
                f"<small>{html.escape(cell['layer'])}</small><br>"
                f"{_ci(cell[value], cell[prefix + 'ci_low'], cell[prefix + 'ci_high'], digits)}</td>"
            )
        out.append(cells + ["-"] * (width + 1 - len(cells)))
    return _html_table(["model"] + [f"layer {i + 1}" for i in range(width)], out, tid, caption)


def _size_label(v: float) -> str:
    return f"{v:g} %"


def findings_section(con, items: list[tuple[str, str]]) -> list[str]:
    """The findings, first on the page: per finding and model the effect over people with its 95 %
    interval, p-value, people, verdict and control (from the ``findings`` view)."""
    rows = _df(con, "SELECT * FROM findings").replace({np.nan: None}).to_dict("records")
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["finding"], []).append(r)
    n_people = database.scalar(
        con, "SELECT count(DISTINCT identity) FROM (SELECT identity FROM pairs GROUP BY identity)"
    )
    parts = [
        "<h2 id='findings'>Findings: effects over people, with 95 % intervals and controls</h2>",
        "<p class='how'>How to read: each finding is an effect, side A minus side B, computed per person first "
        "(the mean over that person's pairs or photos), then averaged over the people (every person weighs the "
        "same). The 95 % interval comes from a cluster bootstrap over people (people resampled with all their "
        f"pairs, {N_RESAMPLES} resamples, seeded) and p from a sign-flip permutation test of the per-person "
        "effects: pairs share photos and people, so people, not pairs, are the unit. <b>holds</b>: the interval "
        "excludes 0 in the claimed direction and the test agrees (p &lt; 0.05); <b>reversed</b>: both say the "
        "other way; <b>not established with N people</b>: the interval contains 0 or the test cannot rule out "
        "chance (with 6 people the smallest p is 2/64: every person must agree in sign). "
        f"This run has {n_people} people with a same-identity pair. Where a "
        "model-free control exists it stands beside the finding, and 'above the control' is the part of the "
        "effect the control does not explain.</p>",
        "<p class='how'>Counts: <b>unordered</b> pairs for cosine, BC and EMD (both are symmetric; a pair of "
        "photos counts once); <b>ordered</b> (anchor, positive) pairs for LEAM maps, class counts and occlusion "
        "(the map is the anchor's). <b>Top k %</b> is relative to a map's <i>activated</i> pixels (relevance "
        "&ge; the full-activation threshold) in class counts and BC/EMD, as in the paper's Appendix B, and to "
        "<i>all</i> pixels of the frame in occlusion, as in the paper's Table 9.</p>",
    ]
    if n_people < 2:
        parts.append(
            f"<div class='finding na' id='why-no-findings'><div class='verdict'>No finding can be measured in this "
            f"run: {n_people} {'person has' if n_people == 1 else 'people have'} two or more usable photos.</div>"
            "<div>LEAM explains the similarity of two photos of one person, and every finding compares people "
            "(at least two are needed for an interval, more for a verdict). The table 'People with fewer than two "
            "usable photos' below, and 'Images not used', say why each person is out.</div></div>"
        )
    # verdict summary at the top: the main row of each finding per model (pooled layers, 1 %, top 1 %)
    summary = []
    for key, title, keys in SECTIONS:
        main = [
            r
            for r in rows
            if r["finding"] == keys[0]
            and (
                r["layer"] in (None, POOLED) or r["finding"] in ("occlusion", "transfer") or keys[0].startswith("atlas")
            )
            and (r["size_pct"] is None or r["size_pct"] == 1)
            and (r["selection"] in (None, "top1"))
        ]
        verdicts = ", ".join(
            f"{r['model']}{' <- ' + r['source_model'] if r['finding'] == 'occlusion' else ''}: {r['verdict']}"
            + (f" (above the control: {r['excess_verdict']})" if r["excess_verdict"] else "")
            for r in main
        )
        summary.append(f"<li><a href='#{key}'>{html.escape(title)}</a>: {html.escape(verdicts) or 'not measured'}</li>")
    parts.append("<ul class='summary'>" + "".join(summary) + "</ul>")
    for key, title, _ in SECTIONS:
        parts.append(f"<h3 id='{key}'>{html.escape(title)}</h3>")
        items.append((key, title))
        parts += _SECTION_RENDERERS[key](by, items, con)
    return parts


def _paper(rows: list[dict]) -> str:
    return f"<p class='meta'>paper: {html.escape(rows[0]['paper'])}</p>" if rows else ""


def _render_cosine(by, items, _con) -> list[str]:
    rows = by.get("cosine", [])
    body = [[r["model"]] + _effect_row(r, 4, control=False) for r in rows]
    items.append(("table-finding-cosine", "Cosine, same vs different identity"))
    return [
        _html_table(
            ["model"] + EFFECT_HEADER,
            body,
            "table-finding-cosine",
            "Cosine of photo pairs: A same identity, B different identity (n: unordered photo pairs)",
        ),
        _paper(rows),
    ]


def _main_selection(con) -> str:
    """The compare selection the report shows: top1 (the paper's), else the first compared."""
    found = sorted(
        r[0]
        for r in con.execute("SELECT DISTINCT selection FROM compare WHERE selection NOT LIKE 'geometry:%'").fetchall()
    )
    return "top1" if "top1" in found or not found else found[0]


def _setting(con, key: str) -> str | None:
    """A value of the run's ``settings`` table (None when absent)."""
    row = con.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def _render_maps(by, items, con) -> list[str]:
    out = []
    grid = _setting(con, "compare.emd_grid")
    emd_how = (
        "exact at full resolution on the maps' supports"
        if grid == "0"
        else f"exact on a {grid} x {grid} coarsening of the frame (error against the exact full-resolution "
        "EMD: 0.7 % on average, 5.6 % at most for 30; benchmarks/emd_grid.py)"
        if grid
        else "on the compare stage's grid"
    )
    selection = _main_selection(con)
    for finding, measure in (("maps_bc", "BC"), ("maps_emd", "EMD")):
        rows = [r for r in by.get(finding, []) if r["selection"] == selection]
        pooled = [r for r in rows if r["layer"] == POOLED]
        body = [[r["model"]] + _effect_row(r, 3) for r in pooled]
        tid = f"table-finding-{finding}"
        unit = f"frame px; {emd_how}" if measure == "EMD" else "1 = identical maps"
        out.append(
            _html_table(
                ["model"] + EFFECT_HEADER + CONTROL_HEADER,
                body,
                tid,
                f"{measure} ({unit}) of image maps, selection {selection}, all layers (a person's mean over layers "
                "first): "
                f"A same identity, B different identity; claim: {'A > B' if measure == 'BC' else 'A < B'}; "
                "control: the geometry baseline (the same pairs compared on model-free maps of each photo's "
                "aligned landmarks, as sparse as the LEAM maps: frames of one person share their alignment)",
            )
        )
        items.append((tid, f"{measure}, same vs different identity"))
        for value, what in (("effect", "effect"), ("excess", "effect above the geometry baseline")):
            tid = f"table-finding-{finding}-{value}-layers"
            out.append(
                _layer_pivot(
                    [r for r in rows if r["layer"] != POOLED],
                    value,
                    tid,
                    f"{measure} per layer, {what}: same - different identity [95 % CI], coloured by verdict",
                )
            )
            items.append((tid, f"{measure} per layer: {what}"))
        out.append(_paper(rows))
    return out


def _render_central(by, items, _con) -> list[str]:
    body = []
    for finding, name in (("central", "nose + eyes + brows"), ("central_nose", "nose")):
        for r in by.get(finding, []):
            if r["layer"] != POOLED:
                continue
            centre = None if r["control_effect"] is None else r["control_effect"] + r["b_mean"]
            body.append(
                [r["model"], name]
                + _effect_row(r, 2, control=False)
                + [
                    _num(centre, 2),
                    _ci(r["excess"], r["excess_ci_low"], r["excess_ci_high"], 2),
                    _verdict_cell(r["excess_verdict"]),
                ]
            )
    tid = "table-finding-central"
    items.append((tid, "Central classes, top 1 % vs all activated pixels"))
    rows = by.get("central_nose", [])
    return [
        _html_table(
            ["model", "classes"]
            + EFFECT_HEADER
            + ["centre baseline, %", "LEAM top 1 % - centre baseline [95 % CI]", "verdict vs the centre"],
            body,
            tid,
            "Share (%) of the selected pixels: A the top 1 % of a map's activated pixels, B all its activated "
            "pixels (all layers; n: maps of ordered pairs). Centre baseline: the same number of pixels nearest "
            "the frame centre of the same photo, a control any centred blob passes: LEAM's top 1 % is 'central' "
            "only where it beats it.",
        ),
        _paper(rows) + _paper(by.get("central", [])),
    ]


def _render_occlusion(by, items, _con) -> list[str]:
    rows = by.get("occlusion", [])
    out = []
    one = [r for r in rows if r["size_pct"] == 1]
    body = [
        [r["model"], r["source_model"], r["cell"]] + _effect_row(r, 4, control=False)
        for r in sorted(one, key=lambda r: (r["model"], r["cell"] != "self", r["source_model"]))
    ]
    tid = "table-finding-occlusion"
    out.append(
        _html_table(
            ["target model", "source of the pixels", "cell"] + EFFECT_HEADER,
            body,
            tid,
            "Cosine drop at 1 % of the frame's pixels: A the source model's top LEAM pixels, B as many random "
            "pixels inside the target model's window (n: ordered pairs); each (source, target) cell on its own, "
            "self and transfer apart",
        )
    )
    items.append((tid, "Occlusion at 1 %: LEAM vs random, per source and target"))
    sizes = sorted({r["size_pct"] for r in rows})
    piv = []
    for r0 in sorted({(r["model"], r["source_model"]) for r in rows}):
        cells = [r0[0], r0[1]]
        got = {r["size_pct"]: r for r in rows if (r["model"], r["source_model"]) == r0}
        for sz in sizes:
            r = got.get(sz)
            cells.append(
                "-"
                if r is None
                else f"<td class='v {VERDICT_CLASS.get(r['verdict'], 'na')}' title='{html.escape(r['verdict'])}'>"
                f"{_num(r['effect'], 4, True)}</td>"
            )
        piv.append(cells)
    tid = "table-finding-occlusion-sizes"
    out.append(
        _html_table(
            ["target", "source"] + [_size_label(s) for s in sizes],
            piv,
            tid,
            "LEAM drop - random drop at every size (% of the frame), coloured by verdict (hover for it)",
        )
    )
    items.append((tid, "Occlusion at every size"))
    out.append(_paper(rows))
    return out


def _render_transfer(by, items, _con) -> list[str]:
    rows = [r for r in by.get("transfer", []) if r["size_pct"] in (1.0, 5.0)]
    body = [[r["model"], _size_label(r["size_pct"])] + _effect_row(r, 4, control=False) for r in rows]
    tid = "table-finding-transfer"
    items.append((tid, "Transfer: own pixels vs the other models' pixels"))
    return [
        _html_table(
            ["target model", "size"] + EFFECT_HEADER,
            body,
            tid,
            "Cosine drop of a target model: A with its own top LEAM pixels, B with the other source models' "
            "(mean over them), on the pairs every source has; claim: A > B",
        ),
        _paper(by.get("transfer", [])),
    ]


def _person_verdict(r: dict | None) -> tuple[str, str]:
    if r is None:
        return "na", "not measured (needs two people with two or more photos)"
    if r["verdict"] == "holds":
        return "yes", "person-specific pixels: holds (the identity's atlas beats the population's)"
    if r["verdict"] == "reversed":
        return "no", "the population pattern does better than the person's own atlas"
    return "na", f"person-specific pixels: {r['verdict']}"


def _render_person(by, items, _con) -> list[str]:
    out = []
    for r in sorted((r for r in by.get("atlas_identity", []) if r["size_pct"] == 1), key=lambda r: r["model"]):
        cls, text = _person_verdict(r)
        out.append(
            f"<div class='finding {cls}'><div class='verdict'>{html.escape(r['model'])} (pixels from "
            f"{html.escape(str(r['source_model']))} {html.escape(str(r['layer']))}, 1 % of the frame): "
            f"{html.escape(text)}</div><div>identity atlas - population atlas: "
            f"{_ci(r['effect'], r['ci_low'], r['ci_high'], 4)} cosine drop, p {_p(r['p_value'])}, "
            f"{r['n_identities']} people, {r['n_a']} held-out photos</div></div>"
        )
    body = []
    for finding in ("atlas_identity", "atlas_own", "atlas_population"):
        for r in by.get(finding, []):
            if r["size_pct"] in (1.0, 5.0):
                body.append(
                    [r["model"], _size_label(r["size_pct"]), f"{r['a_label']} vs {r['b_label']}"]
                    + _effect_row(r, 4, control=False)
                )
    tid = "table-finding-atlas"
    out.append(
        _html_table(
            ["target model", "size", "A vs B"] + EFFECT_HEADER,
            body,
            tid,
            "Leave-one-photo-out occlusion of held-out photos (n: held-out photos): cosine drop with A's pixels "
            "minus B's, paired per photo",
        )
    )
    items.append((tid, "Identity atlas: own / identity / population / random"))
    prof = by.get("profiles", [])
    body = [
        [
            r["model"],
            _num(r["effect"], 2),
            _p(r["p_value"]),
            str(r["n_identities"]),
            str(r["n_a"]),
            _verdict_cell(r["verdict"]),
        ]
        for r in prof
    ]
    tid = "table-finding-profiles"
    out.append(
        _html_table(
            ["model", "pseudo-F (between / within)", "p", "people", "photos", "verdict"],
            body,
            tid,
            "Are class profiles at top 1 % more alike within a person than between people? Per photo the mean "
            "class shares of its maps; pseudo-F of identity groups; p from permuting identity labels (holds: p < 0.05)",
        )
    )
    items.append((tid, "Class profiles: between- vs within-identity"))
    out.append(_paper(by.get("atlas_identity", [])))
    return out


def paper_section(con, items: list[tuple[str, str]], model: str = "IR_CASIA") -> list[str]:
    """The run's IR_CASIA beside the paper's IR_CASIA rows (:mod:`leam.core.paper`): class shares at top
    1 % and all activated pixels (Appendix B / Tables 10-11), the nose finding, and occlusion of
    IR_CASIA with its own first-convolution pixels (Table 21); empty when the run has no such model."""
    if not database.scalar(con, "SELECT count(*) FROM layers WHERE model = ?", [model]):
        return []
    parts = [
        f"<h2 id='paper-{model}'>{html.escape(model)} beside the paper's {html.escape(model)}</h2>",
        "<p class='how'>The paper's own model (facenet 20180408-102900, Inception-ResNet-v1 trained on "
        "CASIA-WebFace) on this run's photos, next to the paper's numbers for it on 1000 IMDb-Face people. "
        "The same quantities on both sides; the photos, the number of people and the face parser differ "
        "(the paper: FaRL, 19 classes).</p>",
    ]
    shares = _df(
        con,
        """SELECT class, max(CASE WHEN selection = 'top1' THEN mean_rel_pct END) AS top1,
                  max(CASE WHEN selection = 'full' THEN mean_rel_pct END) AS full_
           FROM class_share_model WHERE model = ? GROUP BY class""",
        [model],
    ).set_index("class")
    i1, i100 = PAPER_LEVELS.index(1), PAPER_LEVELS.index(100)
    rows = []
    unseen = [c for c in IR_CASIA_SHARES if c not in shares.index]
    for c, v in IR_CASIA_SHARES.items():
        if c in shares.index:
            rows.append(
                [c, _num(v[i1], 2), _num(shares.at[c, "top1"], 2), _num(v[i100], 2), _num(shares.at[c, "full_"], 2)]
            )
    if "unparsed" in shares.index:
        rows.append(
            [
                f"unparsed here; in the paper {', '.join(unseen)}",
                _num(sum(IR_CASIA_SHARES[c][i1] for c in unseen), 2),
                _num(shares.at["unparsed", "top1"], 2),
                _num(sum(IR_CASIA_SHARES[c][i100] for c in unseen), 2),
                _num(shares.at["unparsed", "full_"], 2),
            ]
        )
    tid = f"table-paper-{model}-shares"
    parts.append(
        _html_table(
            ["class", "paper, top 1 %", "this run, top 1 %", "paper, all activated", "this run, all activated"],
            rows,
            tid,
            f"{model}: % of the selected pixels per class, mean over maps, all nine layers pooled (paper: Appendix "
            "B's IR_CASIA table = Tables 10 and 11)",
        )
    )
    items.append((tid, f"{model} class shares beside the paper's"))
    found = _df(con, "SELECT * FROM findings WHERE model = ?", [model]).replace({np.nan: None}).to_dict("records")
    nose = [r for r in found if r["finding"] == "central_nose" and r["layer"] == POOLED]
    if nose:
        r = nose[0]
        parts.append(
            f"<p>Nose, top 1 % minus all activated pixels: paper {IR_CASIA_SHARES['nose'][i1]:.2f} - "
            f"{IR_CASIA_SHARES['nose'][i100]:.2f} = "
            f"{IR_CASIA_SHARES['nose'][i1] - IR_CASIA_SHARES['nose'][i100]:+.2f} points; this run "
            f"{_num(r['a_mean'], 2)} - {_num(r['b_mean'], 2)} = {_ci(r['effect'], r['ci_low'], r['ci_high'], 2)} "
            f"points over {r['n_identities']} people ({html.escape(r['verdict'])}).</p>"
        )
    occ = {r["size_pct"]: r for r in found if r["finding"] == "occlusion" and r["source_model"] == model}
    rows = []
    for size, pl, pr in zip(OCCLUSION_SIZES, IR_CASIA_OCCLUSION["leam"], IR_CASIA_OCCLUSION["random"], strict=True):
        r = occ.get(float(size))
        rows.append(
            [_size_label(size), f"{pl:.4f}", f"{pr:.4f}", f"{pl - pr:+.4f}"]
            + (
                [
                    _num(r["a_mean"], 4),
                    _num(r["b_mean"], 4),
                    _ci(r["effect"], r["ci_low"], r["ci_high"], 4),
                    _verdict_cell(r["verdict"]),
                ]
                if r
                else ["-", "-", "-", "-"]
            )
        )
    tid = f"table-paper-{model}-occlusion"
    parts.append(
        _html_table(
            [
                "size",
                "paper LEAM",
                "paper random",
                "paper LEAM - random",
                "this run LEAM",
                "this run random",
                "this run LEAM - random [95 % CI]",
                "verdict",
            ],
            rows,
            tid,
            f"{model} occluded with its own first convolution's top LEAM pixels vs random pixels: mean cosine drop "
            "(paper: Table 21's IR_CASIA column, random pixels over the whole image; this run: random pixels inside "
            f"the model's window, which for {model} is the whole frame)",
        )
    )
    items.append((tid, f"{model} occlusion beside the paper's"))
    parts.append(
        "<p class='meta'>BC and EMD: the paper shows none for IR_CASIA (Tables 3-6 are the six IResNets only, "
        f"BC same {BC_RANGE['same'][0]:.2f}-{BC_RANGE['same'][1]:.2f} vs different "
        f"{BC_RANGE['different'][0]:.2f}-{BC_RANGE['different'][1]:.2f}); this run's IR_CASIA rows are in the "
        "findings above.</p>"
    )
    return parts


_SECTION_RENDERERS = {
    "finding-cosine": _render_cosine,
    "finding-maps": _render_maps,
    "finding-central": _render_central,
    "finding-occlusion": _render_occlusion,
    "finding-transfer": _render_transfer,
    "finding-person": _render_person,
}


def _table(df: pd.DataFrame, tid: str, caption: str, digits: int = 4) -> str:
    """A DataFrame as a table: floats with ``digits`` decimals, integers as integers, missing as '-'."""
    if df.empty:
        body = "<p class='empty'>(no rows in this run)</p>"
    else:
        # missing values as "-": pandas' na_rep covers NaN but not the <NA> of nullable integer columns
        nullable_int = [c for c in df.columns if pd.api.types.is_integer_dtype(df[c]) and df[c].isna().any()]
        df = df.assign(**{c: df[c].astype(object).where(df[c].notna(), "-") for c in nullable_int})
        # float columns holding whole numbers only (counts after a pivot) are shown as integers
        whole = [
            c
            for c in df.columns
            if pd.api.types.is_float_dtype(df[c])
            and df[c].notna().any()
            and (df[c].dropna() % 1 == 0).all()
            and str(c).startswith("n_")
        ]
        df = df.assign(**{c: df[c].astype("Int64") for c in whole})
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
td.v.yes{background:#e3f4e5} td.v.no{background:#f9e0dd} td.v.na{background:#f1f1f1}
.how{font-size:.92em;color:#333} ul.summary li{margin:.2em 0} h3{margin-top:1.4em}
"""


#: every abbreviation the page uses, spelled out once at its top
ABBREVIATIONS = (
    "Abbreviations: <b>LEAM</b>, Layer Embedding Activation Mapping; <b>BC</b>, Bhattacharyya "
    "coefficient (overlap of two maps as distributions, 1 = identical); <b>EMD</b>, earth mover's "
    "distance (frame pixels a map's mass must move to become the other, 0 = identical); "
    "<b>top-k %</b>, the k % most relevant activated pixels of a map; <b>AUC</b>, area under the "
    "ROC curve; <b>s.e.</b>, standard error of the mean."
)


def _code_sentence(con) -> str:
    """Which code made the results: the database's version, and the versions of the files it read
    when they differ (table ``code_versions``; leam.core.codeversion)."""
    if not database.scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'code_versions'"):
        return "The code that made these results is not recorded (a database from before leam recorded it)."
    rows = con.execute("SELECT code_version FROM code_versions").fetchall()
    own, inputs = rows[0][0], [r[0] or "unrecorded" for r in rows[1:]]
    counts = {v: inputs.count(v) for v in sorted(set(inputs))}
    here = code_version()
    said = f"Code: {own}" + ("" if own == here else f" (this report: {here})") + "."
    if set(counts) <= {own}:
        said += " Every file it read was written by the same code."
        return said + _unplanned_sentence(con)
    listed = "; ".join(f"{v}: {n} file(s)" for v, n in counts.items())
    return (
        f"{said} The files it read came from {len(counts)} code versions ({listed}): a stage reruns when "
        "the leam modules it runs change (code stamps, results/<run>/inputs/code-*.json), so a file from "
        "earlier code comes from a stage whose own code did not change since; table code_versions names each."
    ) + _unplanned_sentence(con)


def _unplanned_sentence(con) -> str:
    if not database.scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'unplanned_outputs'"):
        return ""
    files = [f for (f,) in con.execute("SELECT file FROM unplanned_outputs ORDER BY file").fetchall()]
    if not files:
        return ""
    shown = ", ".join(files[:5]) + (" ..." if len(files) > 5 else "")
    return (
        f" {len(files)} file(s) in the results folder belong to a model or shard no longer in this run and are "
        f"not part of these results (table unplanned_outputs): {shown}."
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
    findings (e.g. :func:`leam.stages.dataset.sample_caveats`).
    """
    con = database.connect(db_path)
    try:
        items: list[tuple[str, str]] = []
        parts: list[str] = []
        for c in caveats or []:
            parts.append(f"<p class='meta caveat'>Caveat: {html.escape(c)}</p>")
        parts += findings_section(con, items)
        parts += paper_section(con, items)
        parts.append("<h2 id='figures'>Figures</h2>")
        for i, (caption, path) in enumerate(figures.items(), 1):
            fid = f"figure-{i}"
            parts.append(_img(path, fid, caption))
            items.append((fid, caption))
        parts.append("<h2 id='tables'>Tables</h2>")
        parts += _tables(con, items)
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
        n_people = database.scalar(con, "SELECT count(DISTINCT identity) FROM pairs")
        n_models = database.scalar(con, "SELECT count(DISTINCT model) FROM pairs")
        parsers = con.execute("SELECT parser, cannot_see FROM parsers ORDER BY parser").fetchall()
        parser = "; ".join(f"'{p}' (it cannot see {cannot})" for p, cannot in parsers) or "-"
        verdicts = _df(con, "SELECT finding, model, verdict FROM findings WHERE layer IS NULL OR layer = 'all layers'")
        code = _code_sentence(con)
    finally:
        con.close()
    toc = "".join(f"<li><a href='#{i}'>{html.escape(c)}</a></li>" for i, c in items)
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='meta'>LEAM (arXiv 2509.17457) reproduced by leam: {n_people} people with a same-identity "
        f"pair, {n_models} models, {n_pairs} LEAM maps' ordered (anchor, positive) pairs over all models "
        f"({n_pairs // max(n_models, 1)} per model); face classes from the {html.escape(parser)} parser; generated "
        f"{datetime.date.today()} from {html.escape(str(db_path))}. {html.escape(code)}</p>"
        f"<p class='meta' id='abbreviations'>{ABBREVIATIONS}</p>"
        f"<nav id='contents'><h2>Contents</h2><ol>{toc}</ol></nav>" + "".join(parts) + "</body></html>"
    )
    write_text(page, out_path)
    for r in verdicts.itertuples():
        log.info("finding %s, %s: %s", r.finding, r.model, r.verdict)
    log.info(
        "wrote %s: %d figures, %d tables",
        out_path,
        sum(i.startswith("figure-") for i, _ in items),
        sum(i.startswith("table-") for i, _ in items),
    )
    return items


def _pivot(df: pd.DataFrame, index: list[str], column: str, value: str) -> pd.DataFrame:
    """``df`` long -> wide: one row per ``index``, one column per value of ``column`` (in order)."""
    if df.empty:
        return df
    order = list(dict.fromkeys(df[column]))
    wide = df.pivot_table(index=index, columns=column, values=value, aggfunc="first", sort=False)
    wide = wide[[c for c in order if c in wide.columns]].reset_index()
    wide.columns = [str(c) for c in wide.columns]
    return wide


def _tables(con, items: list[tuple[str, str]]) -> list[str]:
    """The key views, pivoted (layers or sizes as columns), one table per model."""
    parts = []

    def add(df, tid, caption, digits=4):
        parts.append(_table(df, tid, caption, digits))
        items.append((tid, caption))

    add(
        _df(con, "SELECT * FROM cosine_summary ORDER BY model"),
        "table-cosine",
        "Cosine similarity, same vs different identity",
    )
    add(
        _df(con, "SELECT * FROM verification ORDER BY model"),
        "table-verification",
        "Does each model recognise these people? Every unordered pair of accepted photos: mean cosine same vs "
        "different identity, ROC AUC (area under the curve) and rank-1 identification",
    )
    add(
        _df(con, "SELECT * FROM suspect_labels"),
        "table-suspect",
        "Photos that may be filed under the wrong person: mean cosine to the other photos of their identity "
        "below the midpoint of the mean same- and different-identity cosines, per model",
    )
    models = [r[0] for r in con.execute("SELECT DISTINCT model FROM layers ORDER BY model").fetchall()]
    parser = "; ".join(
        f"'{p}' (it cannot see {cannot})"
        for p, cannot in con.execute("SELECT parser, cannot_see FROM parsers ORDER BY parser").fetchall()
    )
    cols = [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'threshold_table' "
            "AND column_name LIKE 'top%' ORDER BY column_index"
        ).fetchall()
    ]
    keep = [c for c in ("top0_1", "top1", "top5", "top10", "top100") if c in cols] or cols[:5]
    for m in models:
        df = _df(
            con,
            f"SELECT class, full_activation, {', '.join(keep) or 'NULL AS none'} FROM threshold_table "
            "WHERE model = ? AND full_activation IS NOT NULL ORDER BY full_activation DESC",
            [m],
        )
        add(
            df,
            f"table-threshold-{m}",
            f"{m}: class share of the selected pixels (mean over maps, %, all layers pooled), full activation and "
            f"top-k % of the activated pixels (Appendix B); classes from the {parser} parser",
            2,
        )
    cmp = _df(
        con,
        """SELECT model, layer, layer_idx, bc_same, bc_different, emd_same, emd_different, n_same, n_different,
                  n_skipped, selection FROM compare_table WHERE selection IN (?, ?)
           ORDER BY model, selection DESC, layer_idx""",
        [_main_selection(con), "geometry:" + _main_selection(con)],
    )
    for m in models:
        sub = cmp[cmp.model == m]
        if sub.empty:
            continue
        long = sub.melt(
            id_vars=["selection", "layer"],
            value_vars=["bc_same", "bc_different", "emd_same", "emd_different", "n_same", "n_different", "n_skipped"],
            var_name="measure",
        )
        wide = _pivot(long, ["selection", "measure"], "layer", "value")
        for c in wide.columns[2:]:  # counts as integers, measures with 3 decimals
            wide[c] = [
                "-" if pd.isna(v) else (f"{int(v)}" if what.startswith("n_") else f"{v:.3f}")
                for what, v in zip(wide["measure"], wide[c], strict=True)
            ]
        add(
            wide,
            f"table-compare-{m}",
            f"{m}: BC and EMD (frame px) of image maps ({_main_selection(con)}), same vs different identity, "
            "per layer (Tables "
            "3-6); rows 'geometry:top1': the geometry baseline (model-free landmark maps as sparse as the LEAM "
            "maps, the same pairs)",
            3,
        )
    occ = _df(
        con,
        """SELECT model, source_model, method, size_pct, mean_drop FROM occlusion_by_model
           ORDER BY model, source_model, method, size_pct""",
    )
    for m in models:
        sub = occ[occ.model == m].assign(size=lambda d: d.size_pct.map(_size_label))
        add(
            _pivot(sub, ["source_model", "method"], "size", "mean_drop"),
            f"table-occlusion-{m}",
            f"{m} as the target: mean cosine drop per source of the pixels and method, by occluded share of the "
            "frame (Table 9, Table 21)",
        )
    atl = _df(con, "SELECT model, method, size_pct, mean_drop FROM atlas_summary ORDER BY model, method, size_pct")
    for m in models:
        sub = atl[atl.model == m].assign(size=lambda d: d.size_pct.map(_size_label))
        add(
            _pivot(sub, ["method"], "size", "mean_drop"),
            f"table-atlas-{m}",
            f"{m} as the target: identity atlas, mean cosine drop of held-out photos per method and size",
        )
    if database.scalar(con, "SELECT count(*) FROM identity_meta"):
        add(
            _df(con, "SELECT * FROM demographic_tests ORDER BY factor, method, size_pct"),
            "table-demographics",
            "Mann-Whitney U between demographic groups (Tables 22-23)",
        )
    return parts


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
    out["Do persons have their own patterns? Per identity: class-share deviation and atlas drops (95 % CI)"] = (
        files.person
    )
    if demographics:
        out["Cosine drop by gender, ethnicity and age gap (Fig. 9-10)"] = files.demographics
    return out
