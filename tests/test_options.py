"""#22: each stage's options are frozen, built once from the validated config, default nothing
themselves, and are seen by Snakemake's rerun trigger; every stage's entry point is
``run(*, inputs, outputs, options)`` and every stage script calls only that."""

from __future__ import annotations

import ast
import copy
import importlib
import inspect

import pytest
from conftest import REPO, johns_study
from test_rerun import _copy_code, _planned, _run

from leam import options
from leam.config import load_config, occlusion_sources
from leam.plan import RunOptions, run_options

CLASSES = [getattr(options, n) for n in options.__all__ if n.endswith("Options")]
#: stage module -> its entry points (the rule's script calls exactly these)
STAGES = {
    "dataset": ["run_sample"],
    "download": ["run"],
    "detect": ["run"],
    "align": ["run"],
    "parse": ["run"],
    "extract": ["run"],
    "compare": ["run"],
    "occlude": ["run", "run_population"],
    "aggregate": ["run"],
}


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(REPO / "config" / "config.yaml")


def _all(config: dict) -> RunOptions:
    models = list(config["models"])
    return run_options(config, models=models, sources=occlusion_sources(config, models)[0])


def test_options_have_no_defaults_and_are_frozen(config):
    """The schema is the only place a default lives: no option field has one here."""
    assert len(CLASSES) == 10
    for cls in CLASSES:
        assert cls._field_defaults == {}, cls
    o = _all(config).align
    with pytest.raises(AttributeError):
        o.size = 3  # type: ignore[misc]


def test_every_field_follows_its_config_key(config):
    """Built from a config whose every key the options read is changed: every field changes with it
    (an option that kept a value of its own, or read the wrong key, would not)."""
    before = _all(config)
    changed = copy.deepcopy(config)
    changed["seed"] = 7
    changed["input"] = {**changed["input"], "sample": "dlib_johns"}
    changed["device"] = "cpu"
    changed["detect"].update(upsample=2, min_score=0.5, near_duplicate_mad=4.0, max_side=900)
    changed["align"].update(size=112, padding=0.3)
    changed["parser"] = {**changed["parser"], "name": "farl"}
    changed["extract"].update(memory_budget_mb=512, store_maps="first_pair")
    changed["count"].update(levels=[1, 100], full_threshold=0.02, topk_of="all")
    changed["compare"].update(selections=["top1", "full"], emd_grid=20, different_per_image=5)
    changed["occlude"].update(sizes=[1, 2], atlas_sizes=None, positives_per_anchor=None)
    changed["download"].update(
        identities=3, min_images=2, max_images=4, concurrency=2, connect_timeout=1, read_timeout=2, deadline=3,
        retries=0, max_mb=1,
    )  # fmt: skip
    changed["metadata"] = {"identities": "ids.csv", "ages": None}
    after = _all(changed)
    fixed = {"batch", "memory_mb", "model", "spec", "sources", "layer", "models", "rank_layer", "unplanned"}
    for stage, old, new in zip(RunOptions._fields, before, after, strict=True):
        pairs = [(old[m], new[m]) for m in old] if isinstance(old, dict) else [(old, new)]
        for o, n in pairs:
            for field in o._fields:
                if field not in fixed:
                    assert getattr(o, field) != getattr(n, field), f"{stage}.{field} does not follow the config"
    a = after.extract[next(iter(after.extract))]
    assert (a.levels, a.selections, a.frame_padding) == ((1, 100), ("top1", "full"), 0.3)
    assert after.download.max_mb == 1 and after.align.max_side == 900 and after.parse.parser["name"] == "farl"


def test_snakemake_sees_every_option(config):
    """Snakemake reruns a job whose params changed only for values it can repr; any other object
    is silently ignored (a dataclass would be: a changed option, no rerun). Its own serializer."""
    from snakemake.persistence import UNREPRESENTABLE, PersistenceBase

    serialize = PersistenceBase._serialize_param_builtin
    for stage in _all(config):
        for o in stage.values() if isinstance(stage, dict) else [stage]:
            text = serialize(None, o)
            assert text is not UNREPRESENTABLE and text == repr(o)
            field = o._fields[-1]
            assert serialize(None, o._replace(**{field: "other"})) != text
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Opaque:
        size: int

    assert serialize(None, Opaque(1)) is UNREPRESENTABLE  # the oracle: why these are tuples


def test_every_stage_is_entered_through_a_keyword_only_run():
    for name, entries in STAGES.items():
        mod = importlib.import_module(f"leam.stages.{name}")
        for entry in entries:
            params = inspect.signature(getattr(mod, entry)).parameters
            assert {"outputs", "options"} <= set(params), (name, entry)
            assert all(p.kind is p.KEYWORD_ONLY for p in params.values()), (name, entry)
            assert set(params) <= {"inputs", "outputs", "options", "threads", "unusable"}, (name, entry)


def _stage_calls(script) -> list[tuple[str, str, set[str]]]:
    """(stage module, function, keywords) of the leam.stages functions a workflow script calls."""
    tree = ast.parse(script.read_text())
    imported = {
        alias.asname or alias.name: node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("leam.stages.")
        for alias in node.names
    }
    return [
        (imported[n.func.id], n.func.id, {k.arg for k in n.keywords})
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in imported
    ]


def test_stage_scripts_only_plumb_the_rule_into_run():
    scripts = {}
    for script in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        for module, fn, keywords in _stage_calls(script):
            scripts[script.name] = (module.rsplit(".", 1)[1], fn)
            assert {"outputs", "options"} <= keywords, script
            text = script.read_text()
            assert "outputs=snakemake.output" in text and "options=snakemake.params.options" in text, script
    wanted = {(m, e) for m, entries in STAGES.items() for e in entries}
    assert set(scripts.values()) == wanted, scripts
    # a script that does more than plumb would have more than one statement after the logging
    for name in scripts:
        body = ast.parse((REPO / "workflow" / "scripts" / name).read_text()).body
        assert len([s for s in body if not isinstance(s, ast.ImportFrom)]) == 2, name


@pytest.mark.pipeline
def test_a_changed_option_reruns_exactly_the_stages_that_read_it(tmp_path):
    """align.padding is read by align (and extract, occlude): detect stays; detect.max_side by
    detect and align (the photo copy align warps)."""
    johns_study(tmp_path, {"John_Salley": 2, "John_Savage": 2})
    env = _copy_code(tmp_path)
    done = _run(tmp_path, env, "--until", "align")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _planned(_run(tmp_path, env, "-n", "--until", "align")) == {}
    plan = _planned(_run(tmp_path, env, "-n", "--until", "align", "--config", "align={padding: 0.3}"))
    assert plan.get("align") == 1 and "detect" not in plan, plan
    plan = _planned(_run(tmp_path, env, "-n", "--until", "align", "--config", "detect={max_side: 900}"))
    assert plan.get("detect") == 1 and plan.get("align") == 1, plan
    plan = _planned(_run(tmp_path, env, "-n", "--until", "align", "--config", "compare={emd_grid: 20}"))
    assert plan == {}, plan
