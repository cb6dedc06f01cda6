"""#21: reruns follow content and code, outputs are checked before use, and nothing stale or half
written stays among a run's results unmarked.

- case 3: an edited library module reruns exactly the rules whose scripts can run it, and every
  Parquet file records the code that wrote it;
- case 7: a truncated output is found and its job redone; a killed ``--forcerun`` leaves no
  temporary behind and the next run redoes the lost outputs;
- files of shards (or models) no longer in the run are named, not passed off as results;
- ``--config`` for nested keys; every entry under input.dir, hidden ones included, gets a row.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, johns_study, kill_snakemake_when, snakemake, snakemake_cmd

from leam.core import codeversion
from leam.core.io import check_parquet, code_version_of, sha256_file, write_parquet
from leam.core.resultsdir import damaged_outputs, killed_temporaries, unplanned_outputs

SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_scripts_code_stamp_holds_every_module_it_imports(script):
    """Oracle: the ``leam`` modules Python really loads when the script's imports run (in a fresh
    interpreter) are all among :func:`leam.core.codeversion.script_modules` (which reads the source)."""
    tree = ast.parse(script.read_text())
    imports = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    code = "\n".join(
        [
            *imports,
            "import sys",
            "print('\\n'.join(sorted(m.__file__ for n, m in list(sys.modules.items())"
            " if n.split('.')[0] == 'leam' and getattr(m, '__file__', None))))",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    loaded = {Path(f).resolve() for f in out}
    stamped = set(codeversion.script_modules(script))
    assert loaded, "the script imports no leam module"
    assert loaded <= stamped, sorted(map(str, loaded - stamped))


def test_script_modules_follow_imports_and_name_builders():
    align = {
        p.relative_to(codeversion.PACKAGE).as_posix()
        for p in codeversion.script_modules(REPO / "workflow/scripts/align.py")
    }
    # align.py's own imports, io's function-level import of codeversion, the packages' __init__s, the schema
    assert {
        "__init__.py",
        "stages/__init__.py",
        "stages/align.py",
        "core/__init__.py",
        "core/io.py",
        "core/codeversion.py",
        "config.schema.yaml",
    } <= align
    assert "stages/occlude.py" not in align and "models/tflite.py" not in align
    extract = REPO / "workflow/scripts/extract.py"
    assert codeversion.PACKAGE / "models/tflite.py" not in codeversion.script_modules(extract)
    assert codeversion.PACKAGE / "models/tflite.py" in codeversion.script_modules(extract, ("leam.models.tflite",))


def test_code_version_follows_every_file(tmp_path, monkeypatch):
    lib = tmp_path / "lib" / "leam"
    shutil.copytree(codeversion.PACKAGE, lib, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "workflow", tmp_path / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codeversion, "PACKAGE", lib)
    codeversion.code_version.cache_clear()
    first = codeversion.code_version()
    assert re.fullmatch(r"leam \d+\.\d+\.\d+\+[0-9a-f]{12}", first)
    for edited in (lib / "core" / "maps.py", tmp_path / "workflow" / "rules" / "align.smk", lib / "config.schema.yaml"):
        before = edited.read_bytes()
        edited.write_bytes(before + b"\n# edited\n")
        codeversion.code_version.cache_clear()
        assert codeversion.code_version() != first, edited
        edited.write_bytes(before)
    codeversion.code_version.cache_clear()
    assert codeversion.code_version() == first
    codeversion.code_version.cache_clear()


def test_parquet_files_carry_the_code_version_and_damage_is_found(tmp_path):
    import pyarrow as pa

    t = pa.table({"a": list(range(50000)), "b": [f"x{i}" for i in range(50000)]})
    p = tmp_path / "t.parquet"
    write_parquet(t, p, row_group_size=5000)
    assert code_version_of(p) == codeversion.code_version() and check_parquet(p) is None
    assert pq.read_table(p).equals(t)  # the metadata is all that was added
    data = p.read_bytes()
    for n, why in [
        (0, "0 bytes long"),
        (len(data) // 2, "lacks a Parquet start or end marker"),
        (len(data) - 1, "lacks a Parquet start or end marker"),
    ]:
        q = tmp_path / f"cut{n}.parquet"
        q.write_bytes(data[:n])
        assert why in check_parquet(q), n
        with pytest.raises(Exception):  # noqa: B017 (the oracle: pyarrow cannot read it either)
            pq.read_table(q)
    hole = tmp_path / "hole.parquet"  # the end kept, a middle cut out: the footer parses, the chunks do not fit
    hole.write_bytes(data[:4000] + data[8000:])
    assert "runs past the end of the data" in check_parquet(hole)
    found = {q.name for q, _ in damaged_outputs(tmp_path)}
    assert found == {"cut0.parquet", f"cut{len(data) // 2}.parquet", f"cut{len(data) - 1}.parquet", "hole.parquet"}


def test_results_folder_scans(tmp_path):
    r = tmp_path / "results"
    for rel in [
        "counts/model=a/shard-000.parquet",
        "counts/model=a/shard-001.parquet",
        "counts/model=gone/shard-000.parquet",
        "faces/shard-000.parquet",
        "faces/shard-002.parquet",
        "preflight/a.txt",
        "preflight/gone.txt",
        "figures/a_layers.png",
        "figures/gone_share_vs_threshold.pdf",
        "figures/compare.png",
        "inputs/shard-002.json",
        "faces/.shard-001.parquet.ab_cd123.tmp",
    ]:
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        (r / rel).write_text("x")
    got = sorted(p.relative_to(r).as_posix() for p in unplanned_outputs(r, ["a"], 2))
    assert got == [
        "counts/model=gone/shard-000.parquet",
        "faces/shard-002.parquet",
        "figures/gone_share_vs_threshold.pdf",
        "inputs/shard-002.json",
        "preflight/gone.txt",
    ]
    assert [p.name for p in killed_temporaries(r)] == [".shard-001.parquet.ab_cd123.tmp"]


def test_every_entry_of_the_input_folder_gets_a_row_hidden_ones_too(tmp_path):
    from leam.stages.dataset import list_inputs

    raw = tmp_path / "raw"
    (raw / "ann").mkdir(parents=True)
    (raw / "ann" / "a.jpg").write_bytes(b"x")
    (raw / "ann" / ".DS_Store").write_bytes(b"x")
    (raw / "ann" / "._a.jpg").write_bytes(b"x")
    (raw / ".git").mkdir()
    (raw / ".hidden.jpg").write_bytes(b"x")
    entries, unusable = list_inputs(raw)
    assert [(e.identity, e.image) for e in entries] == [("ann", "a.jpg")]
    rows = {(u.identity, u.image): u.reason for u in unusable}
    assert set(rows) == {("", ".git"), ("", ".hidden.jpg"), ("ann", ".DS_Store"), ("ann", "._a.jpg")}
    assert all(r.startswith("skipped-hidden") for r in rows.values())
    n_entries = sum(1 for _ in raw.iterdir()) + sum(1 for _ in (raw / "ann").iterdir()) - 1  # ann itself is a folder
    assert len(entries) + len(unusable) == n_entries


def test_cli_overrides_of_nested_keys_are_typed_by_the_schema():
    from leam.config import apply_overrides, load_config

    cfg = load_config(REPO / "config" / "config.yaml")
    # what Snakemake hands over for --config 'count={levels: [1, 10]}' 'detect={min_score: "0.5"}' shards=3
    apply_overrides(cfg, {"count": {"levels": ["1", "10"]}, "detect": {"min_score": "0.5"}, "shards": 3, "run": "007"})
    assert cfg["count"]["levels"] == [1, 10] and cfg["detect"]["min_score"] == 0.5 and cfg["shards"] == 3
    assert cfg["run"] == "007"  # a string key stays a string
    assert cfg["count"]["full_threshold"] == load_config(REPO / "config" / "config.yaml")["count"]["full_threshold"]


@pytest.mark.pipeline
def test_nested_config_from_the_command_line_through_snakemake(tmp_path):
    johns_study(tmp_path, {"John_Salley": 2, "John_Savage": 2})
    ok = snakemake(tmp_path, "-n", "--config", "count={levels: [1, 10]}")
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-3000:]
    bad = snakemake(tmp_path, "-n", "--config", "detect={min_score: .nan}")
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "detect.min_score: nan is not a finite number" in out, out[-3000:]
    dotted = snakemake(tmp_path, "-n", "--config", "count.levels=[1]")  # Snakemake's own refusal
    assert dotted.returncode != 0 and "valid identifier" in dotted.stdout + dotted.stderr


def _copy_code(d: Path) -> dict:
    """A copy of the library and workflow in ``d/code`` that a test may edit; the env that runs it."""
    code = d / "code"
    shutil.copytree(REPO / "lib", code / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "workflow", code / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "config", code / "config")
    return {**os.environ, "PYTHONPATH": str(code / "lib")}


def _run(d: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    cmd = snakemake_cmd(d, *args)
    cmd[cmd.index("--snakefile") + 1] = str(d / "code" / "workflow" / "Snakefile")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def _planned(proc: subprocess.CompletedProcess) -> dict[str, int]:
    out = proc.stdout + proc.stderr
    table = re.search(r"^job\s+count\n-+\s+-+\n(.*?)^total", out, re.M | re.S)
    return {} if table is None else {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", table.group(1), re.M)}


@pytest.mark.pipeline
def test_an_edited_module_reruns_exactly_the_rules_that_run_it(tmp_path):
    """#21 case 3: editing lib/leam/*.py triggered no rerun and no output said which code made it."""
    johns_study(tmp_path, {"John_Salley": 2, "John_Savage": 2})
    env = _copy_code(tmp_path)
    done = _run(tmp_path, env, "--until", "align")
    assert done.returncode == 0, done.stderr[-3000:]
    aligned = tmp_path / "results/default/aligned/shard-000.parquet"
    # the code version recorded is that of the copy that ran (the copy's package, not the repository's)
    probe = "from leam.core.codeversion import code_version; print(code_version())"
    copy_version = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout.strip()
    assert code_version_of(aligned) == copy_version
    assert _planned(_run(tmp_path, env, "-n", "--until", "align")) == {}
    lib = tmp_path / "code" / "lib" / "leam"
    with open(lib / "stages" / "align.py", "a") as f:
        f.write("\n# an edit\n")
    plan = _planned(_run(tmp_path, env, "-n", "--until", "align"))
    assert plan.get("align") == 1 and "detect" not in plan, plan
    with open(lib / "stages" / "detect.py", "a") as f:
        f.write("\n# an edit\n")
    plan = _planned(_run(tmp_path, env, "-n", "--until", "align"))
    assert plan.get("detect") == 1 and plan.get("align") == 1, plan
    with open(lib / "stages" / "occlude.py", "a") as f:  # no script of detect or align runs it
        f.write("\n# an edit\n")
    redo = _run(tmp_path, env, "--until", "align")
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert _planned(_run(tmp_path, env, "-n", "--until", "align")) == {}


@pytest.mark.pipeline
def test_a_truncated_output_is_redone_and_a_killed_forcerun_leaves_nothing_behind(tmp_path):
    """#21 case 7: a truncated Parquet output was never recomputed (aggregate failed with a
    traceback); a killed --forcerun extract left its outputs gone and the next run idle."""
    johns_study(tmp_path, {"John_Salley": 2, "John_Savage": 2})
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    cfg["models"]["dlib_resnet"]["layers"] = dict(list(cfg["models"]["dlib_resnet"]["layers"].items())[:2])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    done = snakemake(tmp_path, "--until", "extract")
    assert done.returncode == 0, done.stderr[-3000:]
    res = tmp_path / "results" / "default"
    outs = sorted(res.glob("*/model=dlib_resnet/shard-000.parquet"))
    assert len(outs) == 6
    digests = {p: sha256_file(p) for p in outs}
    # a truncated output, its mtime kept: named, removed, and its job redone
    counts = res / "counts/model=dlib_resnet/shard-000.parquet"
    st = counts.stat()
    counts.write_bytes(counts.read_bytes()[: st.st_size // 2])
    os.utime(counts, ns=(st.st_atime_ns, st.st_mtime_ns))
    plan = snakemake(tmp_path, "-n", "--until", "extract")
    out = plan.stdout + plan.stderr
    rel = counts.relative_to(tmp_path)
    assert f"leam: {rel} lacks a Parquet start or end marker" in out and "removed" in out, out[-3000:]
    assert _planned(plan).get("extract") == 1, out[-3000:]
    # killed while extract is forced to run again: the next run redoes it and no temporary survives
    kill_snakemake_when(
        tmp_path, ["--forcerun", "extract", "--until", "extract"], lambda: killed_temporaries(res), "extract", 0.02
    )
    left = killed_temporaries(res)
    assert left, "the kill came after extract's temporaries were gone"
    assert snakemake(tmp_path, "--unlock", cores=None).returncode == 0
    plan = snakemake(tmp_path, "-n", "--until", "extract")
    assert _planned(plan).get("extract") == 1, (plan.stdout + plan.stderr)[-3000:]
    redo = snakemake(tmp_path, "--until", "extract")
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert killed_temporaries(res) == [], killed_temporaries(res)
    assert {p: sha256_file(p) for p in outs} == digests  # the same bytes as the first run


@pytest.mark.pipeline
def test_outputs_of_shards_no_longer_in_the_run_are_named(tmp_path):
    johns_study(tmp_path, {"John_Salley": 2, "John_Savage": 2})
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    cfg["shards"] = 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert snakemake(tmp_path, "--until", "detect").returncode == 0
    cfg["shards"] = 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    plan = snakemake(tmp_path, "-n", "--until", "detect")
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0, out[-3000:]
    assert "are not part of this run" in out and "results/default/faces/shard-001.parquet" in out, out[-3000:]
