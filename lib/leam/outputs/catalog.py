"""What every table, view and column of the run's database means, with units: applied as DuckDB
``COMMENT ON`` by the aggregate stage, so ``SELECT view_name, comment FROM duckdb_views()`` and
``SELECT column_name, comment FROM duckdb_columns() WHERE table_name = 'compare_table'`` answer a
reader's questions without this file.

Shares are percentages (0-100); cosines, BC (Bhattacharyya coefficient) and drops are unitless;
EMD (earth mover's distance) is in pixels of the aligned frame; every ``std_*`` is the sample
standard deviation (n - 1). A NULL is a value that cannot be measured on this run (e.g. no
different-identity pair); the ``note`` or ``n_skipped`` column beside it says why.
"""

from __future__ import annotations

import duckdb

__all__ = ["COLUMNS", "TABLES", "VIEWS", "comment_database", "undocumented"]

#: meaning (and unit) of a column, whatever view it is in (a view's own entry overrides it)
COLUMNS = {
    "model": "face-recognition model (its name in the config's models)",
    "layer": "layer name (config models.<model>.layers key)",
    "layer_idx": "position of the layer in the model's configured list, 0 = first (shallowest)",
    "identity": "person (the photo's folder name)",
    "image": "photo file name",
    "anchor": "anchor photo of the pair (its map is the one computed)",
    "positive": "positive photo of the pair (same identity)",
    "parser": "face parser that labelled the pixels (table parsers: what it can and cannot see)",
    "selection": (
        "map pixels counted: 'full' (normalised relevance >= count.full_threshold) or 'top<k>' (the k % most "
        "relevant activated pixels)"
    ),
    "level": "k of a top-k % selection, percent (NULL for 'full')",
    "class_id": "face-parser class id (FaRL's numbering, 0 = background)",
    "class": "face-parser class name",
    "pixels": "selected pixels of the class, count",
    "n_selected": "selected pixels of the map, count",
    "n_pixels": "pixels of the aligned frame, count",
    "abs_pct": "class pixels as % of all frame pixels",
    "rel_pct": "class pixels as % of the selected pixels (NULL when nothing was selected)",
    "n_maps": "maps (anchor-positive pairs x layers) aggregated, count",
    "mean_rel_pct": "mean over maps of the class's % of selected pixels (every map weighs the same)",
    "pooled_rel_pct": "class pixels of all maps as % of their selected pixels (large selections weigh more)",
    "mean_abs_pct": "mean over maps of the class's % of all frame pixels",
    "pooled_abs_pct": "class pixels of all maps as % of their frame pixels",
    "std": "sample standard deviation of the per-map rel_pct, percentage points",
    "mean": "mean of the per-map rel_pct, %",
    "min": "smallest per-map rel_pct, %",
    "max": "largest per-map rel_pct, %",
    "cv": "coefficient of variation, 100 std / mean, % (NULL when the mean is 0)",
    "kind": "'same' (two photos of one identity) or 'different' (two identities)",
    "n_pairs": "pairs with a value, count",
    "n_skipped": "pairs skipped (an all-zero map, or fewer relevant pixels than occluded), count",
    "mean_bc": "mean Bhattacharyya coefficient of the two image maps (1 = identical, 0 = disjoint)",
    "std_bc": "sample standard deviation of the BC",
    "mean_emd": "mean earth mover's distance between the two image maps, frame pixels (0 = identical)",
    "std_emd": "sample standard deviation of the EMD, frame pixels",
    "bc_same": "mean BC of same-identity image-map pairs",
    "bc_different": "mean BC of different-identity image-map pairs (NULL: none, see note)",
    "emd_same": "mean EMD of same-identity image-map pairs, frame pixels",
    "emd_different": "mean EMD of different-identity image-map pairs, frame pixels (NULL: none, see note)",
    "n_same": "same-identity pairs, count",
    "n_different": "different-identity pairs, count",
    "note": "why a value is NULL or what a row means (NULL when nothing needs saying)",
    "source_model": "model whose LEAM map chose the occluded pixels",
    "source_layer": "layer of the source model whose map chose the pixels",
    "method": (
        "how occluded pixels were chosen: 'leam' (top LEAM pixels), 'random', or for the atlas 'own', "
        "'identity', 'population'"
    ),
    "size_pct": "occluded pixels, % of the frame",
    "mean_drop": "mean cosine drop, cos(before) - cos(after occlusion)",
    "std_drop": "sample standard deviation of the cosine drop",
    "mean_cosine_before": "mean cosine of the pairs before occlusion",
    "leam_drop": "mean cosine drop occluding the top LEAM pixels",
    "random_drop": "mean cosine drop occluding as many random pixels",
    "n_leam": "pairs occluded with LEAM pixels, count",
    "n_random": "pairs occluded with random pixels, count",
    "n_images": "held-out photos (atlas) or accepted photos (verification), count",
    "mean_cosine": "mean cosine similarity of the embeddings",
    "std_cosine": "sample standard deviation of the cosine",
    "same_pairs": "unordered same-identity photo pairs, count",
    "same_mean": "mean cosine of same-identity pairs",
    "same_std": "sample standard deviation of the same-identity cosine",
    "different_pairs": "unordered different-identity photo pairs, count",
    "different_mean": "mean cosine of different-identity pairs",
    "different_std": "sample standard deviation of the different-identity cosine",
    "margin": "same_mean - different_mean",
    "auc": "ROC AUC of the cosine separating same from different identity (Mann-Whitney U / (n_same n_different))",
    "rank1": (
        "share of photos (of identities with two or more) whose most similar other photo shows the same identity, 0-1"
    ),
    "status": "'ok', 'rejected' or 'duplicate'",
    "reason": "why the input was not used",
    "duplicate_of": "the photo this one duplicates (NULL unless a duplicate)",
    "path": "the input's path",
    "files": "input files of the identity, count",
    "usable": "usable photos of the identity, count",
    "n_models": "models that flag the photo, count",
    "of_models": "models that could judge it (with different-identity pairs), count",
    "models": "the models that flag the photo",
    "mean_own_cosine": "mean over flagging models of the photo's mean cosine to its identity's other photos",
    "mean_threshold": "mean over flagging models of the midpoint between mean same- and different-identity cosine",
    "n_others": "other photos of the identity it was compared with, count",
    "factor": "'gender' or 'ethnicity'",
    "grp": "the group (a value of the factor)",
    "age_gap": "absolute age difference of anchor and positive, years",
    "full_activation": "mean % of the selected pixels at the 'full' selection",
}

#: what each view is (paper table it reproduces, pooling, order)
VIEWS = {
    "rejects": "inputs not used (rejected or duplicate), with the precise reason; by identity, image",
    "unpaired_identities": "people with fewer than two usable photos: no same-identity pair; by identity",
    "counts_long": "counts unpivoted: one row per map x selection x class, pixels and shares",
    "class_share_layer": "paper Tables 1-2: class shares per model, layer, selection (all pairs pooled)",
    "class_share_model": "paper Tables 10-11 and Appendix B: class shares per model and selection, ALL LAYERS POOLED",
    "threshold_table": (
        "Appendix B layout: per model and class, mean_rel_pct at full activation and every top-k % level "
        "(columns top<k>, '.' written '_'), ALL LAYERS POOLED"
    ),
    "layer_table": (
        "Table 1 layout: per model, selection and class, mean_rel_pct per layer (one column per layer name, "
        "'.' written '_'; NULL where the model has no such layer)"
    ),
    "model_table": (
        "Tables 10-11 layout: per selection and class, mean_rel_pct per model (one column each), all layers pooled"
    ),
    "model_layer_table": (
        "Table 2 layout: per layer name, selection and class, mean_rel_pct per model (one column each)"
    ),
    "identity_share": "Table 7: class shares per model, identity and selection",
    "identity_variation": "Table 8: per model, identity, selection and class, the spread of per-map rel_pct",
    "cosine_same": "per model: cosine of the unordered same-identity photo pairs",
    "cosine_different": "per model: cosine of every unordered pair of photos of different identities",
    "cosine_summary": "cosine_same and cosine_different side by side, per model",
    "verification": "per model, on every unordered pair of accepted photos: does the model work on these photos?",
    "suspect_labels": (
        "photos that may be filed under the wrong person (own-identity cosine below the model's "
        "same/different midpoint)"
    ),
    "compare_summary": "Tables 3-6: per model, layer, selection and kind, BC and EMD of image maps",
    "compare_table": "Tables 3-6 layout: per model, layer and selection, BC and EMD same vs different side by side",
    "occlusion_by_model": "Table 21 / Fig. 8: cosine drop per source model, target model, method and size",
    "occlusion_table": "Table 9: per source model, target model and size, mean drop LEAM vs random",
    "atlas_summary": (
        "identity atlas: drop of held-out photos occluded with their own / identity / population / random pixels"
    ),
    "occlusion_by_group": "Tables 22-23: drop by gender and ethnicity (with metadata)",
    "occlusion_by_age_gap": "Fig. 10: drop at every size by anchor-positive age gap (with metadata)",
    "download_summary": "URLs of the list by outcome and reason, count",
    "findings": (
        "every finding per model (and layer, source, size where it has them): effect over identities, 95 % "
        "cluster-bootstrap interval, sign-flip p-value, verdict, and the model-free control beside it"
    ),
    "identity_profiles": (
        "per model, identity and class: the identity's top-1 % class share minus the other identities', "
        "Welch's test, Benjamini-Hochberg q"
    ),
}

#: what each table is
TABLES = {
    "images": "every input file: detection result, status and reason",
    "aligned": "per accepted photo: its identity's reference, frame size, alignment RMSE",
    "counts": "wide per-class pixel counts: one row per map x selection, one column per class (c<id>_<tag>)",
    "pairs": "cosine of every ordered same-identity pair, per model",
    "embeddings": "unit embedding of every accepted photo, per model",
    "classes": "face-parser classes: id, tag, name, column in counts",
    "layers": "configured layers: model, name, position, module path",
    "compare": "BC and EMD of every compared image-map pair (skipped: why not measured)",
    "occlusion": "every occluded pair: cosine before, after, drop (skipped: why not measured)",
    "atlas": "every held-out photo occluded in the identity atlas",
    "downloads": "every URL of the list: outcome, reason, file",
    "identity_meta": "identity metadata (gender, ethnicity)",
    "image_meta": "per-photo metadata (age)",
    "settings": "the config values the results depend on and the report states (key, value)",
    "parsers": "the face parser(s) of the run: the classes each names and what it cannot see",
    "leam_build": "id and time of this build (the manifest leam.duckdb.json names the same id)",
    "centre_baseline": (
        "per photo and pixel count n: class shares of the n pixels nearest the frame centre and of a centred "
        "Gaussian (the control of the central-face finding)"
    ),
    "findings_rows": "the findings (view findings sorts them)",
    "identity_profile_rows": "per-identity class-share deviations (view identity_profiles sorts them)",
}


def _sql(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def comment_database(con: duckdb.DuckDBPyConnection, extra: dict[tuple[str, str], str] | None = None) -> None:
    """``COMMENT ON`` every known table and view and every view column. ``extra``:
    {(view, column): meaning} for generated columns (pivots: one per layer, level or model)."""
    extra = extra or {}
    for (name,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT internal").fetchall():
        if name in TABLES:
            con.execute(f'COMMENT ON TABLE "{name}" IS {_sql(TABLES[name])}')
    for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall():
        if name in VIEWS:
            con.execute(f'COMMENT ON VIEW "{name}" IS {_sql(VIEWS[name])}')
        for (col,) in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [name]).fetchall():
            doc = extra.get((name, col)) or COLUMNS.get(col)
            if doc:
                con.execute(f'COMMENT ON COLUMN "{name}"."{col}" IS {_sql(doc)}')


def undocumented(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Views and view columns without a comment (``view`` or ``view.column``); empty when complete."""
    views = con.execute("SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall()
    out = [v for v, c in views if not c]
    names = [v for v, _ in views]
    if names:
        out += [
            f"{t}.{c}"
            for t, c in con.execute(
                f"SELECT table_name, column_name FROM duckdb_columns() WHERE comment IS NULL AND table_name IN "
                f"({', '.join(_sql(n) for n in names)}) ORDER BY table_name, column_index"
            ).fetchall()
        ]
    return out
