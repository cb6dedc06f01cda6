"""Aggregate stage: every Parquet output into one DuckDB file with the paper's tables as views.

``results/{run}/leam.duckdb`` is self-contained (tables are copied in), so
``duckdb -readonly results/{run}/leam.duckdb`` works from any directory. Tables:

* ``images`` (faces table: every input file, status, reason), ``downloads`` (when a URL list
  was downloaded: every URL's outcome; view ``download_summary``), ``aligned`` (frame metadata),
  ``counts`` (wide: one row per map x selection, one column per class), ``pairs`` (cosine of every
  ordered same-identity pair), ``embeddings``, ``classes``, ``layers`` (model, layer, order, module).

Views (shares in percent; absent classes of a parser are simply missing rows):

* ``rejects``: images not used, with the reason (status ``rejected`` or ``duplicate``);
  ``unpaired_identities``: people with fewer than two usable photos (no same-identity pair), why;
* ``counts_long``: ``counts`` unpivoted, one row per map x selection x class, with
  ``abs_pct`` = 100 pixels / n_pixels and ``rel_pct`` = 100 pixels / n_selected (NULL if nothing
  was selected);
* ``class_share_layer`` (paper Tables 1, 2) and ``class_share_model`` (Tables 10, 11 and the
  Appendix B threshold tables; all layers of a model pooled): per group and class, ``n_maps``,
  ``mean_rel_pct`` / ``mean_abs_pct`` (mean of per-map shares: every map weighs the same) and
  ``pooled_rel_pct`` / ``pooled_abs_pct`` (share of the pooled pixels: big selections weigh more);
* ``threshold_table`` (Appendix B layout): model x class, ``full_activation`` and one column per
  level (``top0_01`` ... ``top100``), mean_rel_pct;
* ``layer_table`` (Table 1 layout): model x selection x class, one column per layer, mean_rel_pct;
* ``model_table`` (Tables 10, 11 layout): selection x class, one column per model (all layers
  pooled), and ``model_layer_table`` (Table 2 layout): the same per layer name, models side by side;
* ``identity_share`` (Table 7): model x identity x selection x class, mean and pooled shares;
* ``identity_variation`` (Table 8): model x identity x selection x class: std (sample, n-1),
  mean, min, max and CV = 100 std / mean of the per-map relative shares (``n_maps`` here counts
  the maps that selected something, i.e. that have a relative share);
* ``compare_summary`` / ``compare_table`` (Tables 3-6): per model, layer and selection, mean BC
  and EMD of same- and different-identity image maps;
* ``occlusion_table`` (Table 9: mean drop, LEAM vs random, per size), ``occlusion_by_model``
  (Table 21 / Fig. 8: per target model), ``atlas_summary`` (own / identity / population / random);
* with metadata: ``occlusion_by_group`` (gender, ethnicity; Tables 22-23), ``demographic_tests``
  (Mann-Whitney U between groups), ``occlusion_by_age_gap`` (Fig. 10);
* ``cosine_same``: per model, the same-identity photo pairs' cosine (mean, std, n unordered pairs:
  each ordered pair's mirror has the same cosine);
  ``cosine_different``: per model, every unordered pair of images of different identities;
  ``cosine_summary``: both side by side;
* ``verification``: per model, on every unordered pair of accepted photos: mean cosine same vs
  different identity, ROC AUC (Mann-Whitney) and rank-1 identification (nearest other photo);
* ``suspect_labels``: photos that may be filed under the wrong person: per model, a photo's mean
  cosine to the other photos of its identity below the model's midpoint between the mean same- and
  different-identity cosines; one row per flagged photo, ``n_models`` of ``of_models`` flagging it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import duckdb
import pandas as pd

from leam.core import tables
from leam.core.baselines import centre_baseline
from leam.core.classes import CLASSES, PARSER_CANNOT_SEE, class_column, visible_classes
from leam.core.codeversion import code_version
from leam.core.io import checked_code_versions
from leam.options import AggregateOptions
from leam.outputs.catalog import comment_database
from leam.outputs.database import building, scalar

__all__ = ["run", "AggregateInputs", "build_database", "create_views", "level_column", "safe_names"]

log = logging.getLogger(__name__)


def level_column(level: float) -> str:
    """Column of a top-k level in ``threshold_table``: 0.01 -> ``top0_01``, 100 -> ``top100``."""
    return f"top{level:g}".replace(".", "_")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _files(paths: Sequence[str | os.PathLike]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def safe_names(values: Sequence[str]) -> dict[str, str]:
    """Column names that need no quoting for pivoted values: every character outside [A-Za-z0-9_]
    becomes '_' (``l1_0.conv1`` -> ``l1_0_conv1``), a leading digit gets an 'x', a clash a suffix."""
    out: dict[str, str] = {}
    for v in values:
        name = re.sub(r"[^A-Za-z0-9_]", "_", v)
        name = name if re.match(r"[A-Za-z_]", name) else "x" + name
        base, k = name.lower(), 2
        while name.lower() in {n.lower() for n in out.values()}:
            name, k = f"{base}_{k}", k + 1
        out[v] = name
    return out


def _pivot(column: str, values: Sequence[str], measure: str = "mean_rel_pct") -> str:
    names = safe_names(values)
    return ",\n".join(
        f"max(CASE WHEN {column} = '{v.replace(chr(39), chr(39) * 2)}' THEN {measure} END) AS {names[v]}"
        for v in values
    )


def create_views(
    con: duckdb.DuckDBPyConnection, levels: Sequence[float], layer_names: Sequence[str], model_names: Sequence[str] = ()
) -> dict[tuple[str, str], str]:
    """Create the analysis views on tables ``counts``, ``pairs``, ``embeddings``, ``images``; returns
    the meaning of their generated (pivot) columns, {(view, column): text}, for
    :func:`leam.outputs.catalog.comment_database`."""
    create_input_views(con)
    con.execute("""
        CREATE OR REPLACE VIEW counts_long AS
        SELECT u.model, u.layer, u.layer_idx, u.identity, u.anchor, u.positive, u.parser, u.selection, u.level,
               CAST(substr(u.col, 2, 2) AS INTEGER) AS class_id, c.name AS class, u.pixels,
               u.n_selected, u.n_pixels,
               100.0 * u.pixels / u.n_pixels AS abs_pct,
               CASE WHEN u.n_selected > 0 THEN 100.0 * u.pixels / u.n_selected END AS rel_pct
        FROM (UNPIVOT counts ON COLUMNS('^c[0-9][0-9]_') INTO NAME col VALUE pixels) u
        JOIN classes c ON c.class_id = CAST(substr(u.col, 2, 2) AS INTEGER)
        ORDER BY u.model, u.layer_idx, u.identity, u.anchor, u.positive, u.level NULLS FIRST, class_id""")
    share = """
        count(*) AS n_maps,
        avg(rel_pct) AS mean_rel_pct,
        100.0 * sum(pixels) / nullif(sum(n_selected), 0) AS pooled_rel_pct,
        avg(abs_pct) AS mean_abs_pct,
        100.0 * sum(pixels) / sum(n_pixels) AS pooled_abs_pct"""
    con.execute(f"""
        CREATE OR REPLACE VIEW class_share_layer AS
        SELECT model, any_value(parser) AS parser, layer, any_value(layer_idx) AS layer_idx, selection, level,
               class_id, class, {share}
        FROM counts_long GROUP BY model, layer, selection, level, class_id, class
        ORDER BY model, layer_idx, level NULLS FIRST, class_id""")
    con.execute(f"""
        CREATE OR REPLACE VIEW class_share_model AS
        SELECT model, any_value(parser) AS parser, selection, level, class_id, class, {share}
        FROM counts_long GROUP BY model, selection, level, class_id, class
        ORDER BY model, level NULLS FIRST, class_id""")
    level_cols = ",\n".join(
        f"max(CASE WHEN selection = 'top{lv:g}' THEN mean_rel_pct END) AS {_q(level_column(lv))}" for lv in levels
    )
    con.execute(f"""
        CREATE OR REPLACE VIEW threshold_table AS
        SELECT model, any_value(parser) AS parser, class_id, class,
               max(CASE WHEN selection = 'full' THEN mean_rel_pct END) AS full_activation,
               {level_cols}
        FROM class_share_model GROUP BY model, class_id, class ORDER BY model, class_id""")
    con.execute(f"""
        CREATE OR REPLACE VIEW layer_table AS
        SELECT model, selection, level, class_id, class, {_pivot("layer", layer_names)}
        FROM class_share_layer GROUP BY model, selection, level, class_id, class
        ORDER BY model, level NULLS FIRST, class_id""")
    if model_names:
        con.execute(f"""
            CREATE OR REPLACE VIEW model_table AS
            SELECT selection, level, class_id, class, {_pivot("model", model_names)}
            FROM class_share_model GROUP BY selection, level, class_id, class
            ORDER BY level NULLS FIRST, class_id""")
        con.execute(f"""
            CREATE OR REPLACE VIEW model_layer_table AS
            SELECT layer, selection, level, class_id, class, {_pivot("model", model_names)}
            FROM class_share_layer GROUP BY layer, selection, level, class_id, class
            ORDER BY layer, level NULLS FIRST, class_id""")
    con.execute(f"""
        CREATE OR REPLACE VIEW identity_share AS
        SELECT model, any_value(parser) AS parser, identity, selection, level, class_id, class, {share}
        FROM counts_long GROUP BY model, identity, selection, level, class_id, class
        ORDER BY model, identity, level NULLS FIRST, class_id""")
    con.execute("""
        CREATE OR REPLACE VIEW identity_variation AS
        SELECT model, identity, selection, level, class_id, class, count(rel_pct) AS n_maps,
               stddev_samp(rel_pct) AS std, avg(rel_pct) AS mean, min(rel_pct) AS min, max(rel_pct) AS max,
               100.0 * stddev_samp(rel_pct) / nullif(avg(rel_pct), 0) AS cv
        FROM counts_long GROUP BY model, identity, selection, level, class_id, class
        ORDER BY model, identity, level NULLS FIRST, class_id""")
    create_cosine_views(con)
    docs = {
        (
            "threshold_table",
            level_column(lv),
        ): f"mean % of the selected pixels that are the class, top {lv:g} % selection"
        for lv in levels
    }
    docs |= {
        ("layer_table", col): f"mean_rel_pct of layer '{name}', %" for name, col in safe_names(layer_names).items()
    }
    for view in ("model_table", "model_layer_table"):
        docs |= {(view, col): f"mean_rel_pct of model '{name}', %" for name, col in safe_names(model_names).items()}
    return docs


def create_input_views(con: duckdb.DuckDBPyConnection) -> None:
    """Views on ``images`` only: ``rejects`` and ``unpaired_identities``."""
    con.execute("""
        CREATE OR REPLACE VIEW rejects AS
        SELECT identity, image, status, reason, duplicate_of, path FROM images WHERE status <> 'ok'
        ORDER BY identity, image""")
    con.execute("""
        CREATE OR REPLACE VIEW unpaired_identities AS
        SELECT identity, count(*) AS files, count(*) FILTER (WHERE status = 'ok') AS usable,
               CASE WHEN count(*) FILTER (WHERE status = 'ok') = 0 THEN 'no usable photo: not in the study'
                    ELSE 'one usable photo: no same-identity pair (used in different-identity comparisons only)'
               END AS note
        FROM images WHERE identity <> '' GROUP BY identity HAVING count(*) FILTER (WHERE status = 'ok') < 2
        ORDER BY identity""")


def create_cosine_views(con: duckdb.DuckDBPyConnection) -> None:
    """Views on ``pairs`` and ``embeddings`` only: cosine_same / _different / _summary,
    ``verification`` and ``suspect_labels``."""
    con.execute("""
        CREATE OR REPLACE VIEW cosine_same AS
        SELECT model, count(*) // 2 AS n_pairs, avg(cosine) AS mean_cosine, stddev_samp(cosine) AS std_cosine
        FROM pairs GROUP BY model ORDER BY model""")
    con.execute("""
        CREATE OR REPLACE VIEW cosine_different AS
        SELECT a.model, count(*) AS n_pairs,
               avg(list_cosine_similarity(a.embedding::DOUBLE[], b.embedding::DOUBLE[])) AS mean_cosine,
               stddev_samp(list_cosine_similarity(a.embedding::DOUBLE[], b.embedding::DOUBLE[])) AS std_cosine
        FROM embeddings a JOIN embeddings b
          ON a.model = b.model AND a.identity < b.identity
        GROUP BY a.model ORDER BY a.model""")
    con.execute("""
        CREATE OR REPLACE VIEW cosine_summary AS
        SELECT s.model, s.n_pairs AS same_pairs, s.mean_cosine AS same_mean, s.std_cosine AS same_std,
               d.n_pairs AS different_pairs, d.mean_cosine AS different_mean, d.std_cosine AS different_std,
               s.mean_cosine - d.mean_cosine AS margin
        FROM cosine_same s LEFT JOIN cosine_different d USING (model) ORDER BY s.model""")
    create_verification_view(con)
    con.execute("""
        CREATE OR REPLACE VIEW suspect_labels AS
        WITH own AS (
            SELECT model, identity, anchor AS image, count(*) AS n_others, avg(cosine) AS own_cosine
            FROM pairs GROUP BY model, identity, anchor),
        thr AS (
            SELECT model, (same_mean + different_mean) / 2 AS threshold
            FROM cosine_summary WHERE different_mean IS NOT NULL),
        flagged AS (
            SELECT o.*, t.threshold FROM own o JOIN thr t USING (model) WHERE o.own_cosine < t.threshold)
        SELECT identity, image, count(*) AS n_models, (SELECT count(*) FROM thr) AS of_models,
               string_agg(model, ', ' ORDER BY model) AS models, avg(own_cosine) AS mean_own_cosine,
               avg(threshold) AS mean_threshold, max(n_others) AS n_others
        FROM flagged GROUP BY identity, image
        ORDER BY n_models DESC, mean_own_cosine, identity, image""")


def create_verification_view(con: duckdb.DuckDBPyConnection) -> None:
    """``verification`` on the ``embeddings`` table: does each model work on these photos?

    Per model, every unordered pair of accepted photos: mean cosine of same- and different-identity
    pairs; ``auc``, Mann-Whitney U / (n_same n_different), ties counted half (average ranks);
    ``rank1``, the share of photos (of identities with at least two) whose most similar other photo
    shows the same identity.
    """
    con.execute("""
        CREATE OR REPLACE VIEW verification AS
        WITH sims AS (
            SELECT a.model, a.identity = b.identity AS same,
                   list_cosine_similarity(a.embedding::DOUBLE[], b.embedding::DOUBLE[]) AS cosine
            FROM embeddings a JOIN embeddings b
              ON a.model = b.model AND (a.identity, a.image) < (b.identity, b.image)),
        ranked AS (
            SELECT model, same, cosine,
                   rank() OVER (PARTITION BY model ORDER BY cosine)
                   + (count(*) OVER (PARTITION BY model, cosine) - 1) / 2.0 AS r
            FROM sims),
        auc AS (
            SELECT model, count(*) FILTER (WHERE same) AS n_same, count(*) FILTER (WHERE NOT same) AS n_different,
                   avg(cosine) FILTER (WHERE same) AS same_mean, avg(cosine) FILTER (WHERE NOT same) AS different_mean,
                   sum(r) FILTER (WHERE same) AS rank_sum
            FROM ranked GROUP BY model),
        nearest AS (
            SELECT a.model, a.identity,
                   arg_max(b.identity, list_cosine_similarity(a.embedding::DOUBLE[], b.embedding::DOUBLE[])) AS nearest
            FROM embeddings a JOIN embeddings b
              ON a.model = b.model AND (a.identity, a.image) <> (b.identity, b.image)
            WHERE (a.model, a.identity) IN (SELECT (model, identity) FROM embeddings
                                            GROUP BY model, identity HAVING count(*) >= 2)
            GROUP BY a.model, a.identity, a.image)
        SELECT a.model, (SELECT count(*) FROM embeddings e WHERE e.model = a.model) AS n_images,
               a.n_same, a.n_different, a.same_mean, a.different_mean,
               (a.rank_sum - a.n_same * (a.n_same + 1) / 2.0) / nullif(a.n_same * a.n_different, 0) AS auc,
               (SELECT avg((n.nearest = n.identity)::DOUBLE) FROM nearest n WHERE n.model = a.model) AS rank1
        FROM auc a ORDER BY a.model""")


def create_analysis_views(con: duckdb.DuckDBPyConnection) -> None:
    """Views on ``compare``, ``occlusion`` and ``atlas`` (paper Tables 3-6, 9, 21; the atlas)."""
    con.execute("""
        CREATE OR REPLACE VIEW compare_summary AS
        SELECT model, layer, any_value(layer_idx) AS layer_idx, selection, kind, count(bc) AS n_pairs,
               count(skipped) AS n_skipped,
               avg(bc) AS mean_bc, stddev_samp(bc) AS std_bc, avg(emd) AS mean_emd, stddev_samp(emd) AS std_emd
        FROM compare GROUP BY model, layer, selection, kind
        ORDER BY model, layer_idx, selection, kind DESC""")
    con.execute("""
        CREATE OR REPLACE VIEW compare_table AS
        SELECT model, layer, any_value(layer_idx) AS layer_idx, selection,
               max(CASE WHEN kind = 'same' THEN mean_bc END) AS bc_same,
               max(CASE WHEN kind = 'different' THEN mean_bc END) AS bc_different,
               max(CASE WHEN kind = 'same' THEN mean_emd END) AS emd_same,
               max(CASE WHEN kind = 'different' THEN mean_emd END) AS emd_different,
               max(CASE WHEN kind = 'same' THEN n_pairs END) AS n_same,
               max(CASE WHEN kind = 'different' THEN n_pairs END) AS n_different,
               sum(n_skipped) AS n_skipped,
               CASE WHEN coalesce(max(CASE WHEN kind = 'different' THEN n_pairs END), 0) = 0
                    THEN 'no different-identity pair: only one identity has image maps' END AS note
        FROM compare_summary GROUP BY model, layer, selection
        ORDER BY model, layer_idx, selection""")
    con.execute("""
        CREATE OR REPLACE VIEW occlusion_by_model AS
        SELECT source_model, source_layer, model, method, size_pct, count(drop) AS n_pairs,
               count(skipped) AS n_skipped,
               avg(drop) AS mean_drop, stddev_samp(drop) AS std_drop, avg(cosine_before) AS mean_cosine_before
        FROM occlusion GROUP BY source_model, source_layer, model, method, size_pct
        ORDER BY source_model, model, method, size_pct""")
    con.execute("""
        CREATE OR REPLACE VIEW occlusion_table AS
        SELECT source_model, source_layer, model, size_pct,
               avg(CASE WHEN method = 'leam' THEN drop END) AS leam_drop,
               avg(CASE WHEN method = 'random' THEN drop END) AS random_drop,
               count(drop) FILTER (WHERE method = 'leam') AS n_leam,
               count(drop) FILTER (WHERE method = 'random') AS n_random,
               count(skipped) FILTER (WHERE method = 'leam') AS n_skipped
        FROM occlusion GROUP BY source_model, source_layer, model, size_pct
        ORDER BY source_model, model, size_pct""")
    con.execute("""
        CREATE OR REPLACE VIEW atlas_summary AS
        SELECT source_model, source_layer, model, method, size_pct, count(drop) AS n_images,
               count(skipped) AS n_skipped, avg(drop) AS mean_drop, stddev_samp(drop) AS std_drop
        FROM atlas GROUP BY source_model, source_layer, model, method, size_pct
        ORDER BY source_model, model, method, size_pct""")


def create_findings(con: duckdb.DuckDBPyConnection, *, seed: int = 0) -> dict[tuple[str, str], str]:
    """Tables ``findings_rows`` and ``identity_profile_rows`` (:func:`leam.outputs.findings.compute_findings`)
    and their sorted views ``findings`` and ``identity_profiles``; returns their column docs."""
    from leam.outputs.findings import FINDINGS_COLUMNS, PROFILE_COLUMNS, compute_findings

    found, profiles = compute_findings(con, seed=seed)  # noqa: F841 (used by duckdb)
    con.execute("CREATE OR REPLACE TABLE findings_rows AS SELECT * FROM found")
    con.execute("CREATE OR REPLACE TABLE identity_profile_rows AS SELECT * FROM profiles")
    con.execute("""
        CREATE OR REPLACE VIEW findings AS SELECT * EXCLUDE (ord) FROM findings_rows
        ORDER BY ord, model, source_model NULLS FIRST, selection NULLS FIRST, layer_idx NULLS FIRST,
                 size_pct NULLS FIRST""")
    con.execute("""
        CREATE OR REPLACE VIEW identity_profiles AS SELECT * FROM identity_profile_rows
        ORDER BY model, identity, "class"
        """)
    return {("findings", c): d for c, d in FINDINGS_COLUMNS.items()} | {
        ("identity_profiles", c): d for c, d in PROFILE_COLUMNS.items()
    }


def create_demographic_views(con: duckdb.DuckDBPyConnection) -> None:
    """Views joining occlusion drops with identity metadata and ages (paper Tables 22-23, Fig. 9-11)."""
    con.execute("""
        CREATE OR REPLACE VIEW occlusion_by_group AS
        SELECT 'gender' AS factor, m.gender AS grp, o.model, o.method, o.size_pct, count(*) AS n_pairs,
               avg(o.drop) AS mean_drop, avg(o.cosine_before) AS mean_cosine_before
        FROM occlusion o JOIN identity_meta m USING (identity) WHERE m.gender IS NOT NULL AND o.drop IS NOT NULL
        GROUP BY m.gender, o.model, o.method, o.size_pct
        UNION ALL
        SELECT 'ethnicity', m.ethnicity, o.model, o.method, o.size_pct, count(*), avg(o.drop), avg(o.cosine_before)
        FROM occlusion o JOIN identity_meta m USING (identity) WHERE m.ethnicity IS NOT NULL AND o.drop IS NOT NULL
        GROUP BY m.ethnicity, o.model, o.method, o.size_pct
        ORDER BY factor, grp, model, method, size_pct""")
    con.execute("""
        CREATE OR REPLACE VIEW occlusion_by_age_gap AS
        SELECT o.model, o.method, o.size_pct, abs(a.age - p.age) AS age_gap, count(*) AS n_pairs,
               avg(o.drop) AS mean_drop, avg(o.cosine_before) AS mean_cosine_before
        FROM occlusion o
        JOIN image_meta a ON a.identity = o.identity AND a.image = o.anchor
        JOIN image_meta p ON p.identity = o.identity AND p.image = o.positive
        WHERE o.drop IS NOT NULL
        GROUP BY o.model, o.method, o.size_pct, abs(a.age - p.age)
        ORDER BY model, method, size_pct, age_gap""")


def _load_metadata(con, metadata: dict | None) -> bool:
    """Tables identity_meta / image_meta / demographic_tests from the optional metadata; True if any."""
    from leam.outputs.demographics import group_tests, read_ages, read_identities

    metadata = metadata or {}
    have = False
    if metadata.get("identities"):
        ident = read_identities(metadata["identities"])  # noqa: F841 (used by duckdb)
        con.execute("CREATE TABLE identity_meta AS SELECT * FROM ident")
        drops = con.execute("""SELECT m.gender, m.ethnicity, o.method, o.size_pct, o.drop
                               FROM occlusion o JOIN identity_meta m USING (identity)
                               WHERE o.drop IS NOT NULL""").df()
        tests = pd.concat([group_tests(drops, "gender"), group_tests(drops, "ethnicity")], ignore_index=True)  # noqa: F841
        con.execute("CREATE TABLE demographic_tests AS SELECT * FROM tests")
        have = True
    else:
        con.execute("CREATE TABLE identity_meta (identity VARCHAR, gender VARCHAR, ethnicity VARCHAR)")
    if metadata.get("ages"):
        images = con.execute("SELECT identity, image FROM images WHERE status = 'ok'").fetchall()
        ages = read_ages(metadata["ages"], images)  # noqa: F841
        con.execute("CREATE TABLE image_meta AS SELECT * FROM ages")
        have = True
    else:
        con.execute("CREATE TABLE image_meta (identity VARCHAR, image VARCHAR, age INTEGER)")
    create_demographic_views(con)
    return have


class AggregateInputs(NamedTuple):
    """The Parquet files the database is built from (paths; each a list over shards and models)."""

    counts: Sequence[str]
    pairs: Sequence[str]
    embeddings: Sequence[str]
    faces: Sequence[str]
    aligned: Sequence[str]
    labels: Sequence[str] = ()  # the parse stage's: the centre baseline of the central-face finding
    compare: Sequence[str] = ()
    occlusion: Sequence[str] = ()
    atlas: Sequence[str] = ()
    downloads: Sequence[str] | str = ()  # the download stage's table, when the run downloads


def run(*, inputs, outputs, options: AggregateOptions, threads: int | None = None) -> None:
    """The workflow's entry point (rule ``aggregate``): ``inputs`` has the fields of
    :class:`AggregateInputs` (and others, ignored); ``outputs.manifest`` is ``<database>.json``."""
    files = AggregateInputs(**{k: v for k, v in inputs.items() if k in AggregateInputs._fields})
    build_database(outputs.manifest.removesuffix(".json"), inputs=files, options=options, threads=threads)


def build_database(
    db_path: str | os.PathLike, *, inputs: AggregateInputs, options: AggregateOptions, threads: int | None = None
) -> None:
    """Write ``db_path`` afresh from the Parquet outputs of the earlier stages, and its manifest
    ``<db_path>.json``: built beside the previous database, which stays readable until the new one
    replaces it (:func:`leam.outputs.database.building`).

    ``options.memory_mb``: DuckDB's memory limit: it writes table blocks to the database file and
    spills beyond it; ``threads``: DuckDB's threads (None: every core). With 1 thread and 128 MB, the
    job's peak RSS went 253 -> 267 MB from 5 to 20 people; with every core and DuckDB's default,
    264 -> 358 MB. ``inputs.labels``/``options.size``: the parse stage's label files and the frame
    size, for the centre baseline (:mod:`leam.core.baselines`); ``options.seed``: seeds the findings'
    bootstrap and permutations (:mod:`leam.outputs.findings`); ``options.settings``: {config key:
    value} the report states (table ``settings``: e.g. ``compare.emd_grid``); ``options.unplanned``:
    files in the results folder that the run does not write (leam.core.resultsdir), listed in table
    ``unplanned_outputs`` and named by the report. Every Parquet input is checked first
    (:func:`leam.core.io.checked_code_versions`) and its code version recorded (table ``code_versions``).
    """
    counts, pairs, embeddings, faces, aligned = (
        inputs.counts,
        inputs.pairs,
        inputs.embeddings,
        inputs.faces,
        inputs.aligned,
    )
    labels, compare, occlusion, atlas = inputs.labels, inputs.compare, inputs.occlusion, inputs.atlas
    models, levels, size, seed = options.models, options.levels, options.size, options.seed
    db_path = Path(db_path)
    parquets = [*faces, *aligned, *labels, *counts, *pairs, *embeddings, *compare, *occlusion, *atlas]
    versions = checked_code_versions(parquets)  # a truncated file stops here, named, before any work
    with building(db_path) as con:
        con.execute("CREATE TABLE code_versions (file VARCHAR, code_version VARCHAR)")
        con.executemany("INSERT INTO code_versions VALUES (?, ?)", [[db_path.name, code_version()], *versions.items()])
        con.execute(
            "COMMENT ON TABLE code_versions IS 'the leam code (version + sha256 of lib/leam and workflow/) "
            "that wrote this database (first row) and each Parquet file it read'"
        )
        con.execute("CREATE TABLE unplanned_outputs (file VARCHAR)")
        for f in options.unplanned:
            con.execute("INSERT INTO unplanned_outputs VALUES (?)", [f])
        con.execute(
            "COMMENT ON TABLE unplanned_outputs IS 'files in the results folder of a model or shard that is no "
            "longer in the run: kept, not read'"
        )
        con.execute(f"SET memory_limit = '{int(options.memory_mb)}MB'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.execute(f"CREATE TABLE images AS SELECT * FROM read_parquet({_files(faces)}) ORDER BY identity, image")
        con.execute(f"""CREATE TABLE aligned AS SELECT identity, image, reference, is_reference, size, align_rmse
                        FROM read_parquet({_files(aligned)}) ORDER BY identity, image""")
        con.execute(f"CREATE TABLE counts AS SELECT * FROM read_parquet({_files(counts)}, union_by_name = true)")
        con.execute(f"CREATE TABLE pairs AS SELECT * FROM read_parquet({_files(pairs)})")
        con.execute(f"CREATE TABLE embeddings AS SELECT * FROM read_parquet({_files(embeddings)})")
        con.execute("CREATE TABLE classes (class_id INTEGER, tag VARCHAR, name VARCHAR, col VARCHAR)")
        con.executemany(
            "INSERT INTO classes VALUES (?, ?, ?, ?)", [(i, tag, name, class_column(i)) for i, tag, name in CLASSES]
        )
        con.execute("CREATE TABLE settings (key VARCHAR, value VARCHAR)")
        for k, v in sorted(options.settings.items()):
            con.execute("INSERT INTO settings VALUES (?, ?)", [k, str(v)])
        con.execute("CREATE TABLE parsers (parser VARCHAR, classes VARCHAR, cannot_see VARCHAR)")
        for (name,) in con.execute("SELECT DISTINCT parser FROM counts ORDER BY parser").fetchall():
            con.execute(
                "INSERT INTO parsers VALUES (?, ?, ?)",
                [name, ", ".join(CLASSES[c][2] for c in visible_classes(name)), PARSER_CANNOT_SEE[name]],
            )
        con.execute("CREATE TABLE layers (model VARCHAR, layer VARCHAR, layer_idx INTEGER, module VARCHAR)")
        rows = [
            (m, layer, i, path) for m, spec in models.items() for i, (layer, path) in enumerate(spec["layers"].items())
        ]
        con.executemany("INSERT INTO layers VALUES (?, ?, ?, ?)", rows)
        layer_names = list(dict.fromkeys(r[1] for r in rows))
        docs = create_views(con, levels, layer_names, list(models))
        for name, files, schema in (
            ("compare", compare, tables.COMPARE_SCHEMA),
            ("occlusion", occlusion, tables.OCCLUSION_SCHEMA),
            ("atlas", atlas, tables.ATLAS_SCHEMA),
        ):
            if files:
                con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet({_files(files)})")
            else:
                empty = schema.empty_table()  # noqa: F841 - read by the SQL below
                con.execute(f"CREATE TABLE {name} AS SELECT * FROM empty")
        create_analysis_views(con)
        if labels and size:
            wanted: dict[tuple[str, str], set[int]] = {}
            for ident, image, n in con.execute(
                "SELECT DISTINCT identity, anchor, n_selected FROM counts WHERE selection = 'top1' AND n_selected > 0"
            ).fetchall():
                wanted.setdefault((ident, image), set()).add(int(n))
            centre = centre_baseline(labels, wanted, size)  # noqa: F841 (used by duckdb)
            con.execute("CREATE TABLE centre_baseline AS SELECT * FROM centre")
        docs |= create_findings(con, seed=seed)
        downloads = [inputs.downloads] if isinstance(inputs.downloads, (str, os.PathLike)) else list(inputs.downloads)
        if downloads:
            con.execute(f"CREATE TABLE downloads AS SELECT * FROM read_parquet({_files(downloads)})")
            con.execute("""CREATE VIEW download_summary AS
                           SELECT status, split_part(reason, ':', 1) AS reason, count(*) AS urls
                           FROM downloads GROUP BY ALL ORDER BY status, urls DESC""")
        _load_metadata(con, options.metadata)
        comment_database(con, docs)
        n = scalar(con, "SELECT count(*) FROM counts")
        log.info("%s: %d count rows, %d models", db_path, n, len(models))
