"""#22: the library's layers only point down, no stage imports another, the import graph has no
cycle, and planning a run needs no torch.

The graph is read from the source (every ``import`` of a ``leam`` module, function-level ones
included: a cycle held open by an import inside a function is still a cycle); the torch-free check
runs in a fresh interpreter where ``import torch`` fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, link_weights, snakemake_cmd

from leam.core import codeversion

# what the workflow's plan (workflow/rules/common.smk) imports: none of it may load torch
PLAN_MODULES = [
    "leam.plan",
    "leam.config",
    "leam.options",
    "leam.stages.dataset",
    "leam.models.weights",
    "leam.core.stamps",
    "leam.core.codeversion",
    "leam.core.resultsdir",
]


def import_graph() -> dict[str, set[str]]:
    """{module: the leam modules it imports} over every module of the package."""
    mods = {codeversion._module_name(f): f for f in codeversion.PACKAGE.rglob("*.py") if "__pycache__" not in f.parts}
    return {n: {m for m in codeversion._imports(f, n) if m in mods and m != n} for n, f in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    """Before #22: cam, cam.core, cam.leam, extract, models and parsing formed one cycle, held open
    by imports inside functions (models.preflight took pick_device from extract)."""
    assert cycles(import_graph()) == []


#: the package's layers, bottom (0) to top: a module may import its own layer or a lower one
LAYERS = {
    "leam": 0,  # the package's __init__ (its version)
    "leam.config": 0,  # the schema and its validation: imports nothing of leam
    "leam.options": 0,  # each stage's frozen options, built from the validated config
    "leam.core": 0,
    "leam.models": 1,
    "leam.outputs": 1,  # beside models: imports core only
    "leam.cam": 2,
    "leam.stages": 3,
    "leam.plan": 4,
    "leam.cli": 4,
}


def layer_of(module: str) -> str:
    """The entry of :data:`LAYERS` a module belongs to (the longest matching prefix)."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return ".".join(parts[:i])
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point up a layer, from outputs to models or cam, or from one stage to another."""
    out = []
    for mod, deps in sorted(graph.items()):
        here = layer_of(mod)
        for dep in sorted(deps):
            there = layer_of(dep)
            if LAYERS[there] > LAYERS[here]:
                out.append(f"{mod} imports {dep}: a higher layer ({there})")
            elif here == "leam.outputs" and there in ("leam.models", "leam.cam"):
                out.append(f"{mod} imports {dep}: outputs import core only")
            elif here == there == "leam.stages" and dep != "leam.stages":
                out.append(f"{mod} imports {dep}: a stage imports no other stage (share through core)")
    return out


def test_the_layer_check_finds_violations():
    graph = {
        "leam.core.io": {"leam.stages.extract"},  # up
        "leam.stages.occlude": {"leam.stages.extract", "leam.core.io", "leam.cam.leam"},  # sideways + fine
        "leam.outputs.plots": {"leam.models.npm"},
        "leam.stages.extract": {"leam.cam.leam", "leam.outputs.database"},  # fine
    }
    assert layer_violations(graph) == [
        "leam.core.io imports leam.stages.extract: a higher layer (leam.stages)",
        "leam.outputs.plots imports leam.models.npm: outputs import core only",
        "leam.stages.occlude imports leam.stages.extract: a stage imports no other stage (share through core)",
    ]


def test_every_module_is_in_a_layer_and_imports_only_downwards():
    """Before #22 the package was flat and stages imported stages (occlude took extract's frame
    readers and compare's map reader, aggregate compare's and occlude's schemas, extract parse's
    class list): what two stages share now lives in leam.core (frames, selection, tables, classes)."""
    graph = import_graph()
    assert {layer_of(m) for m in graph} >= {"leam.core", "leam.models", "leam.cam", "leam.stages", "leam.outputs"}
    assert layer_violations(graph) == []


def _blocked_torch(tmp_path) -> dict:
    fake = tmp_path / "notorch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch is unimportable in this test')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])}


def test_the_plan_modules_import_no_torch(tmp_path):
    env = _blocked_torch(tmp_path)
    code = "\n".join([f"import {m}" for m in PLAN_MODULES] + ["import sys; assert 'torch' not in sys.modules"])
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the oracle that torch is really blocked there
    proc = subprocess.run([sys.executable, "-c", "import leam.stages.extract"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "torch is unimportable" in proc.stderr


@pytest.mark.pipeline
def test_snakemake_plans_the_default_without_torch(tmp_path):
    """`snakemake -n` of the embedded default, torch made unimportable: the plan is whole."""
    env = _blocked_torch(tmp_path)
    run = tmp_path / "run"
    link_weights(run)
    shutil.copy(REPO / "config" / "config.yaml", run / "config.yaml")
    proc = subprocess.run(snakemake_cmd(run, "-n"), env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "torch is unimportable" not in out
    assert "sample_photos" in out  # the plan starts from the embedded photos' checkpoint


def _paper_plan(tmp_path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """Snakemake on config/paper.yaml in an empty folder: no photos, URL list or weights there."""
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    cmd = snakemake_cmd(tmp_path, *args, cores="1")
    cmd[cmd.index("--configfile") + 1] = str(REPO / "config" / "paper.yaml")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.pipeline
def test_the_paper_study_plans_without_its_data_or_weights(tmp_path):
    """`make lint`'s dry run of config/paper.yaml: with LEAM_PLAN_ONLY=1 the whole study plans (the
    paper's 9 models x 100 shards), torch unimportable; without it, the missing weights are named;
    and a run that would execute jobs refuses to start."""
    env = {**_blocked_torch(tmp_path), "LEAM_PLAN_ONLY": "1"}
    plan = _paper_plan(tmp_path / "a", env, "-n")
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0, out[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert (jobs["preflight"], jobs["extract"], jobs["occlude"], jobs["download"]) == ("9", "900", "900", "1"), jobs
    assert "planned all the same (LEAM_PLAN_ONLY): model 'IR_CASIA'" in out
    del env["LEAM_PLAN_ONLY"]
    refused = _paper_plan(tmp_path / "b", env, "-n")
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "no model can run" in out and "weight file not found" in out, out[-3000:]
    env["LEAM_PLAN_ONLY"] = "1"
    run = _paper_plan(tmp_path / "c", env, "--until", "download")
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "use it with --dry-run (-n) only" in out, out[-3000:]
    assert not (tmp_path / "c" / "data").exists()  # nothing was downloaded
