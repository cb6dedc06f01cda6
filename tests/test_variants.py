"""#21: every documented value of every key runs end to end through the stages it feeds.

The variants are read from the schema (lib/leam/config.schema.yaml): every ``enum`` value and every
``null`` a key allows, plus the special values its descriptions document (``emd_grid: 0`` = exact,
``top100`` = full, a level of 100, ...). They are dealt round-robin into three small studies (two
people of the dlib-johns photos, dlib_resnet, two layers), so no study holds two values of one key;
each study runs the whole pipeline and must end with its report, every table, and the numbers its
variants ask for. Keys left out say why in :data:`NOT_HERE`; a schema key with an enum or a null
that is neither covered nor excused fails the test.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import yaml
from conftest import REPO, johns_study, snakemake

from leam.config import _resolve, _types, load_schema

# keys whose values are run by other tests, or cannot run here (with where / why)
NOT_HERE = {
    "input.dir": "test_pipeline (a folder of one's own photos), test_config (missing/empty folders)",
    "input.sample": "the embedded default (make run, test_pipeline)",
    "input.urls": "test_download (a local HTTP server)",
    "parser.name": "'farl' needs FaRL's weights, which no registry ships: test_parsing checks its message",
    "parser.weights.sha256": "farl only",
    "parser.weights.url": "farl only",
    "metadata.identities": "test_analyses (demographic CSVs)",
    "metadata.ages": "test_analyses (ages, fgnet names)",
    "models.*.weights.sha256": "test_models (a wrong digest, a missing one)",
    "models.*.weights.url": "test_models, test_npm, test_tf_graph (fetching)",
    "models.*.builder_args": "each builder's own tests (test_tfjs, test_tflite, test_tf_graph)",
    "occlude.positives_per_anchor": "null = every positive; the studies use null (see below), 1 is the default run's",
}

# documented special values beyond enums and nulls: (key, value)
SPECIAL = [
    ("compare.emd_grid", 0),  # 0 = exact EMD at full resolution
    ("compare.selections", ["top1", "top0.5"]),  # a fractional top-k (beside emd_grid: 0, exact)
    ("compare.selections", ["full", "top5"]),  # #21 case 6: the compare figure said "no map comparisons"
    ("compare.selections", ["top100"]),  # top100 = full
    ("count.levels", [1, 100]),  # #21 case 6: crashed the report (Referenced column "top0_1")
    ("count.levels", [0.5]),
    ("occlude.source_model", "dlib_resnet"),
    ("occlude.source_model", ["dlib_resnet"]),
    ("occlude.source_layer", "l1_0.conv1"),  # a layer other than the first
    ("occlude.atlas_sizes", [0.5, 2]),
    ("occlude.sizes", [100]),  # every pixel of the frame
    ("figures.example_identity", "John_Savage"),
    ("detect.min_score", 0.5),
]


def _leaves(schema, node=None, path=()):
    node = _resolve(schema if node is None else node, schema)
    props = node.get("properties")
    extra = node.get("additionalProperties")
    if props or isinstance(extra, dict):
        for k, sub in (props or {}).items():
            yield from _leaves(schema, sub, (*path, k))
        if isinstance(extra, dict):
            yield from _leaves(schema, extra, (*path, "*"))
        return
    yield ".".join(path), node


def schema_variants() -> list[tuple[str, object]]:
    """(key, value) for every enum value and every null the schema allows, and :data:`SPECIAL`."""
    schema = load_schema()
    out = []
    for key, node in _leaves(schema):
        values = list(node.get("enum", []))
        for alt in node.get("oneOf", []) + node.get("anyOf", []):
            values += _resolve(alt, schema).get("enum", [])
        if "null" in _types(node, schema):
            values.append(None)
        out += [(key, v) for v in values if (key, v) not in out]
    return [*out, *SPECIAL]


# keys with more values than studies: the values beyond the third run through the stage function
# they feed, in a test of their own
BEYOND_THREE = {"figures.cmap": "test_every_colour_map_draws_its_colours"}


def _deal(variants) -> tuple[list[list[tuple[str, object]]], list[tuple[str, object]]]:
    """Value i of a key goes to study i; values beyond the third are returned apart."""
    groups: list[list] = [[], [], []]
    beyond = []
    seen: dict[str, int] = {}
    for key, value in variants:
        i = seen.get(key, 0)
        seen[key] = i + 1
        (groups[i] if i < 3 else beyond).append((key, value))
    return groups, beyond


def _set(cfg: dict, key: str, value) -> None:
    parts = key.split(".")
    node = cfg
    if parts[0] == "models":
        for spec in cfg["models"].values():  # models.*.x: every model of the study
            sub = spec
            for p in parts[2:-1]:
                sub = sub.setdefault(p, {})
            sub[parts[-1]] = value
        return
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def test_every_enum_and_null_is_covered_or_excused():
    covered = {k for k, _ in schema_variants()}
    schema = load_schema()
    for key, node in _leaves(schema):
        if node.get("enum") or "null" in _types(node, schema):
            assert key in covered or key in NOT_HERE, key
    # a key of a group never takes two values: the later one would hide the earlier
    groups, beyond = _plan()
    for group in groups:
        keys = [k for k, _ in group]
        assert len(keys) == len(set(keys))
    assert {k for k, _ in beyond} <= set(BEYOND_THREE)


def _plan():
    return _deal([v for v in schema_variants() if v[0] not in NOT_HERE])


def test_every_colour_map_draws_its_colours():
    """figures.cmap: every value of the enum draws the relevance in that colour map (oracle:
    matplotlib's own colour map at the same values) over the face."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from leam.outputs.plots import overlay

    values = [v for k, v in schema_variants() if k == "figures.cmap"]
    assert len(values) == 7
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rel = np.zeros((16, 16))
    rel[4:8, 4:8] = np.linspace(0.2, 1, 16).reshape(4, 4)
    for cmap in values:
        fig, ax = plt.subplots()
        overlay(ax, frame, rel, cmap)
        drawn = ax.get_images()[-1].get_array()
        want = plt.get_cmap(cmap)(rel[4:8, 4:8])
        assert np.allclose(np.asarray(drawn)[4:8, 4:8, :3], want[..., :3], atol=1 / 255), cmap
        plt.close(fig)


@pytest.mark.pipeline
@pytest.mark.parametrize("group", range(3))
def test_documented_values_run_end_to_end(tmp_path, group):
    variants = _plan()[0][group]
    cfg = johns_study(tmp_path, {"John_Salley": 3, "John_Savage": 3})
    cfg = copy.deepcopy(cfg)
    layers = dict(list(cfg["models"]["dlib_resnet"]["layers"].items())[:2])
    cfg["models"]["dlib_resnet"]["layers"] = layers
    cfg["occlude"]["positives_per_anchor"] = None
    cfg["occlude"]["sizes"] = [1, 5]
    cfg["compare"]["different_per_image"] = 1
    for key, value in variants:
        _set(cfg, key, value)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"variants {variants}:\n{out[-4000:]}"
    res = tmp_path / "results" / "default"
    report = (res / "report.html").read_text()
    assert "No comparable pair" not in report and "2 people with a same-identity pair" in report, variants
    tables = {p.stem: _rows(p) for p in (res / "tables").glob("*.csv")}
    assert len(tables) == 10 and tables["findings"] and tables["verification"], variants
    given = dict(variants)
    if "count.levels" in given:  # the threshold table has exactly the study's levels
        header = list(tables["threshold_table"][0])
        want = {f"top{str(v).replace('.', '_')}" for v in given["count.levels"]}
        assert want <= set(header), (want, header)
    if "compare.selections" in given:  # every compared selection has rows
        got = {r["selection"] for r in tables["compare_table"]}
        assert set(given["compare.selections"]) <= got, got
    if "figures.cmap" in given:
        assert (res / "figures" / "dlib_resnet_layers.png").stat().st_size > 0


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_groups_hold_every_variant():
    groups, beyond = _plan()
    flat = [v for g in groups for v in g] + beyond
    assert sorted(map(repr, flat)) == sorted(map(repr, [v for v in schema_variants() if v[0] not in NOT_HERE]))
    assert Path(REPO / "lib" / "leam" / "config.schema.yaml").is_file()
