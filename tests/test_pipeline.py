"""The Snakemake pipeline end to end on the real photos, plus bad input, reruns and a new model.

The run directory holds a copy of the sample photos with bad files added (a truncated JPEG, a
text file, a faceless image in an identity of its own). The Snakefile is the repository's.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, assert_same_views, copy_photos, link_weights, snakemake
from PIL import Image
from test_counting import naive_counts

from leam.core.classes import CLASS_COLUMNS, visible_classes
from leam.core.io import read_parquet
from leam.core.maps import to_frame
from leam.core.paper import LEVELS
from leam.core.selection import selection_names
from leam.core.window import input_window

pytestmark = pytest.mark.pipeline


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(pipeline_run):
    return pipeline_run


def test_outputs_and_logs(run):
    d, _ = run
    for p in [
        "results/default/leam.duckdb",
        "results/default/figures/dlib_resnet_layers.png",
        "results/default/figures/dlib_resnet_share_vs_threshold.png",
        "results/default/faces/shard-000.parquet",
        "results/default/counts/model=dlib_resnet/shard-000.parquet",
        "logs/default/detect/shard-000.log",
        "logs/default/align/shard-000.log",
        "logs/default/parse/shard-000.log",
        "logs/default/extract/dlib_resnet/shard-000.log",
        "results/default/image_maps/model=dlib_resnet/shard-000.parquet",
        "results/default/rankings/model=dlib_resnet/shard-000.parquet",
        "logs/default/aggregate/aggregate.log",
        "logs/default/figures/dlib_resnet.log",
        "results/default/report.html",
        "results/default/compare/model=dlib_resnet/compare.parquet",
        "results/default/occlusion/model=dlib_resnet/shard-000.parquet",
        "results/default/atlas/model=dlib_resnet/shard-000.parquet",
        "logs/default/compare/dlib_resnet.log",
        "logs/default/occlude/dlib_resnet/shard-000.log",
        "logs/default/report/report.log",
        "results/default/figures/occlusion.png",
    ]:
        assert (d / p).stat().st_size > 0, p
    log = (d / "logs/default/extract/dlib_resnet/shard-000.log").read_text()
    assert "[2/2] obama: 5 images, 20 pairs x 9 layers" in log  # per-identity progress lines
    # nothing is written outside the run's folders (#12): results/default, logs/default, Snakemake's own
    assert sorted(p.name for p in (d / "results").iterdir()) == ["default"]
    assert sorted(p.name for p in (d / "logs").iterdir()) == ["default"]
    assert {p.name for p in d.iterdir()} == {"config.yaml", "data", "weights", "results", "logs", ".snakemake"}


def test_figures_are_vector_and_300_dpi_and_tables_match_the_views(run):
    """#13: every figure as PDF beside a 300-dpi PNG; each CSV table is its view, row for row."""
    d, _ = run
    figs = d / "results/default/figures"
    pngs = sorted(figs.glob("*.png"))
    assert len(pngs) == 4 * 2 + 4  # layers + threshold per model; compare, occlusion, atlas, person
    for png in pngs:
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-", png
        with Image.open(png) as im:
            dpi = im.info["dpi"]
        assert round(dpi[0]) == 300, (png, dpi)
    con = duckdb.connect(str(d / "results/default/leam.duckdb"), read_only=True)
    for name in ("threshold_table", "compare_table", "verification", "rejects"):
        csv = pd.read_csv(d / f"results/default/tables/{name}.csv", keep_default_na=False, na_values=[""])
        view = con.execute(f"SELECT * FROM {name}").df()
        assert list(csv.columns) == list(view.columns) and len(csv) == len(view) > 0, name
        for col in view.columns:
            if pd.api.types.is_numeric_dtype(view[col]) and not pd.api.types.is_bool_dtype(view[col]):
                assert np.allclose(csv[col].astype(float), view[col].astype(float), rtol=1e-9, equal_nan=True), (
                    name,
                    col,
                )
            else:
                got = csv[col].fillna("").astype(str).str.replace("True", "true").str.replace("False", "false")
                want = view[col].map(
                    lambda v: "" if v is None or v != v else str(v).lower() if isinstance(v, bool) else str(v)
                )
                assert got.tolist() == want.tolist(), (name, col)
    con.close()


def test_snakemake_report_holds_every_figure_and_table(run, tmp_path):
    """#13: `snakemake --report report.zip`, no other flag (no --cores), has every figure and table."""
    import zipfile

    d, _ = run
    proc = snakemake(d, "--report", str(tmp_path / "report.zip"), cores=None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "report.zip") as z:
        names = [n.rsplit("/", 1)[-1] for n in z.namelist()]
    wanted = (
        [p.name for p in (d / "results/default/figures").iterdir()]
        + [p.name for p in (d / "results/default/tables").iterdir()]
        + ["report.html"]
    )
    assert len(wanted) == 24 + 10 + 1  # 12 figures as PNG and PDF, 10 tables, the page
    assert not [w for w in wanted if w not in names], names
    html = (d / "results/default/report.html").read_text()
    assert "<b>BC</b>, Bhattacharyya coefficient" in html and "<b>EMD</b>, earth mover" in html


def test_bad_input_is_recorded_and_costs_nothing_else(run):
    d, _ = run
    con = duckdb.connect(str(d / "results/default/leam.duckdb"), read_only=True)
    rejects = {
        (r[0], r[1]): (r[2], r[3])
        for r in con.execute("SELECT identity, image, status, reason FROM rejects").fetchall()
    }
    unusable = {
        ("new{x}", "face.jpg"): "unusable-name: folder '{' or '}' in the name",
        ("obama", "gone.jpg"): "not-a-file: a symbolic link to nothing",
        ("biden", "pipe.jpg"): "not-a-file: a FIFO",
        ("biden", "more"): "not-a-file: a folder",
        ("", "loose.jpg"): "not-in-a-person-folder: photos go in ",
    }
    assert set(rejects) == {
        ("obama", "broken.jpg"),
        ("biden", "notes.txt"),
        ("nobody", "grey.png"),
        ("obama", "32bit.png"),
        *unusable,
    }
    for key, reason in unusable.items():  # each with its reason, none read (#12 cases 1 and 12)
        assert rejects[key][0] == "rejected" and rejects[key][1].startswith(reason), (key, rejects[key])
    assert rejects[("obama", "broken.jpg")][1].startswith(("truncated", "decode-error"))
    assert rejects[("biden", "notes.txt")][1].startswith("not-an-image")
    assert rejects[("nobody", "grey.png")] == ("rejected", "no-face")
    assert rejects[("obama", "32bit.png")][0] == "duplicate"
    # every good photo was used: 5 of Obama (20 ordered pairs), 1 of Biden, by each of the 4 models
    assert con.execute("SELECT count(*) FROM images WHERE status = 'ok'").fetchone()[0] == 6
    assert con.execute("SELECT model, count(*) FROM pairs GROUP BY model ORDER BY model").fetchall() == [
        ("IR_CASIA", 20),
        ("dlib_resnet", 20),
        ("mobileface", 20),
        ("mobilefacenet", 20),
    ]
    n_sel = len(selection_names(LEVELS))
    assert con.execute("SELECT count(*) FROM counts").fetchone()[0] == 4 * 20 * 9 * n_sel


def test_a_wrong_input_dir_stops_before_any_job(run, tmp_path):
    """#12 case 4: a missing input.dir or a flat folder of photos used to be a successful, empty
    study that replaced the last database and report."""
    d, _ = run
    before = {p: (d / p).stat().st_mtime_ns for p in ("results/default/leam.duckdb", "results/default/report.html")}
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.jpg").write_bytes((d / "data/raw/obama/obama.jpg").read_bytes())
    for where, says in (
        ("data/doesnotexist", "input.dir 'data/doesnotexist' does not exist"),
        (str(flat), f"input.dir '{flat}' holds no file in a person's folder; 1 file(s) lie directly in it"),
    ):
        override = tmp_path / "input.yaml"
        override.write_text(yaml.safe_dump({"input": {"dir": where, "sample": None}}))
        proc = snakemake(d, "--configfile", str(d / "config.yaml"), str(override))
        assert proc.returncode != 0 and says in proc.stderr, proc.stderr[-2000:]
    assert before == {p: (d / p).stat().st_mtime_ns for p in before}


def test_a_study_config_has_exactly_its_models_its_own_results_and_is_named_in_messages(sample_raw, tmp_path):
    """#12 case 6: --configfile config/paper.yaml used to gain config.yaml's models, wrote to (and was
    satisfied by) the default run's results/, and messages said "config.yaml" when the mistake was
    in the --configfile."""
    import shutil

    d = tmp_path / "run"
    shutil.copytree(sample_raw, d / "data/raw")
    link_weights(d)
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    (d / "config.yaml").write_text(yaml.safe_dump(default, sort_keys=False))  # what Snakemake merges underneath
    study = {
        "input": {"dir": "data/raw", "sample": None},
        "occlude": {"source_model": "only_dlib"},
        "models": {"only_dlib": default["models"]["dlib_resnet"]},
    }
    (d / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    proc = snakemake(d, "-n", "--configfile", str(d / "study.yaml"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "model=only_dlib" in proc.stdout and "model=dlib_resnet" not in proc.stdout
    assert "model=mobileface" not in proc.stdout and "model=IR_CASIA" not in proc.stdout
    # named after its file, the study has its own results and logs; nothing of the default run's
    assert "results/study/leam.duckdb.json" in proc.stdout and "logs/study/extract/only_dlib" in proc.stdout
    assert "results/default" not in proc.stdout and "logs/default" not in proc.stdout
    proc = snakemake(d, "-n", "--configfile", str(d / "study.yaml"), "--config", "run=pilot-2")
    assert "results/pilot-2/leam.duckdb.json" in proc.stdout and "results/study" not in proc.stdout
    study["shards"] = 0
    (d / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    proc = snakemake(d, "-n", "--configfile", str(d / "study.yaml"))
    assert proc.returncode != 0
    assert f"config ({d / 'study.yaml'} and any --config overrides) has 1 problem(s)" in proc.stdout + proc.stderr


def test_model_mistakes_are_found_first(sample_raw, tmp_path):
    """#12 case 7: an unimportable builder stops the dry run; a wrong layer path is found by the
    model's preflight job, run first, naming the config key, and no extract job runs."""
    import shutil

    d = tmp_path / "run"
    shutil.copytree(sample_raw, d / "data/raw")
    link_weights(d)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["input"] = {"dir": "data/raw", "sample": None}
    cfg["models"] = {"dlib_resnet": copy.deepcopy(cfg["models"]["dlib_resnet"])}
    cfg["occlude"]["source_model"] = "dlib_resnet"
    cfg["models"]["dlib_resnet"]["builder"] = "leam.models.nothing_here:build"
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(d, "-n")
    assert proc.returncode != 0
    assert (
        "models.dlib_resnet.builder: builder 'leam.models.nothing_here:build': cannot import module"
        in proc.stdout + proc.stderr
    )
    cfg["models"]["dlib_resnet"]["builder"] = "leam.models.dlib_resnet:build"
    cfg["models"]["dlib_resnet"]["layers"]["deep"] = "layer2.0.conv9"
    (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(d)
    assert proc.returncode != 0
    log = (d / "logs/default/preflight/dlib_resnet.log").read_text()
    assert (
        "models.dlib_resnet.layers.deep: layer 'layer2.0.conv9' is not a module of DlibResNet; modules under "
        "'layer2.0': layer2.0.conv1" in log
    )
    assert not (d / "results/default/counts").exists() and not (d / "logs/default/extract").exists()


@pytest.mark.parametrize("model", ["dlib_resnet", "mobileface"])  # the whole chip, and the arcface window
def test_counts_in_duckdb_equal_a_recount_from_the_stored_maps(run, model):
    d, cfg = run
    maps = read_parquet(d / f"results/default/maps/model={model}/shard-000.parquet").to_pylist()
    labels = {
        (r["identity"], r["image"]): np.frombuffer(r["labels"], np.uint8).reshape(150, 150)
        for r in read_parquet(d / "results/default/labels/shard-000.parquet").to_pylist()
    }
    con = duckdb.connect(str(d / "results/default/leam.duckdb"), read_only=True)
    visible = set(visible_classes("landmarks"))
    rng = np.random.default_rng(0)
    for i in rng.choice(len(maps), 12, replace=False):
        r = maps[i]
        raw = np.frombuffer(r["map"], "<f4").reshape(r["height"], r["width"])
        spec = cfg["models"][model]
        window = input_window(spec.get("alignment", "chip"), spec["input_size"], 150, 0.25)
        assert tuple(r["window"]) == window
        frame = to_frame(torch.from_numpy(raw.copy())[None], 150, window)[0].numpy().reshape(-1)
        ref = naive_counts(frame, labels[(r["identity"], r["anchor"])].reshape(-1), LEVELS, 0.01, "active")
        got = con.execute(
            f"""SELECT selection, {", ".join(CLASS_COLUMNS)} FROM counts
                              WHERE model = ? AND layer = ? AND anchor = ? AND positive = ?""",
            [model, r["layer"], r["anchor"], r["positive"]],
        ).fetchall()
        got = {row[0]: row[1:] for row in got}
        for s, name in enumerate(selection_names(LEVELS)):
            for c, v in enumerate(got[name]):
                assert v == (int(ref[s, c]) if c in visible else None), (r["layer"], name, c)


def test_the_papers_findings_are_measured(run):
    """Not asserted by construction: numbers from the run, printed for the closing note."""
    d, _ = run
    con = duckdb.connect(str(d / "results/default/leam.duckdb"), read_only=True)
    same, diff = con.execute(
        "SELECT same_mean, different_mean FROM cosine_summary WHERE model='dlib_resnet'"
    ).fetchone()
    central = dict(
        con.execute("""
        SELECT selection, sum(mean_rel_pct) FROM class_share_model
        WHERE model = 'dlib_resnet' AND class IN ('nose', 'right eye', 'left eye', 'right eyebrow', 'left eyebrow')
          AND selection IN ('top1', 'top100') GROUP BY selection""").fetchall()
    )
    print(
        f"\ncosine same-identity {same:.4f} vs different-identity {diff:.4f}; "
        f"nose+eyes+brows share top1 {central['top1']:.2f} % vs top100 {central['top100']:.2f} %"
    )
    assert same > diff
    assert central["top1"] > central["top100"]
    # the transfer table: every source x every target, 1 positive of each of Obama's 5 anchors
    got = con.execute("""SELECT source_model, model, method, min(n_pairs), max(n_pairs) FROM occlusion_by_model
                         GROUP BY ALL ORDER BY ALL""").fetchall()
    models = ("IR_CASIA", "dlib_resnet", "mobileface", "mobilefacenet")
    assert got == [(s, t, m, 5, 5) for s in models for t in models for m in ("leam", "random")]


def test_rerun_is_a_no_op_and_outputs_are_deterministic(run):
    d, _ = run
    proc = snakemake(d, "-n")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    files = (
        sorted((d / "results" / "default").glob("*/model=dlib_resnet/*.parquet"))
        + sorted((d / "results" / "default").glob("*/shard-*.parquet"))
        + [d / "results/default/occlusion/population.parquet"]
    )
    assert len(files) == 13
    before = {p: sha(p) for p in files}
    proc = snakemake(d, "--forcerun", "detect", "align", "parse", "extract", "compare", "population_atlas", "occlude")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: sha(p) for p in files} == before


def test_adding_a_model_runs_only_its_jobs(run):
    """A second, different architecture (IResNet-18, random weights written here) added to the
    config: only its jobs run, the first model's files keep their bytes, DuckDB has both side by side;
    removing it again leaves the first model's files alone."""
    from leam.models.iresnet import iresnet

    d, cfg = run
    torch.manual_seed(0)
    (d / "weights").mkdir(exist_ok=True)
    torch.save(iresnet("r18").state_dict(), d / "weights" / "r18.pth")
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    cfg2 = copy.deepcopy(cfg)
    cfg2["models"]["AF_R18"] = copy.deepcopy(paper["models"]["AF_R18"])
    cfg2["models"]["AF_R18"]["weights"]["path"] = "weights/r18.pth"
    (d / "config.yaml").write_text(yaml.safe_dump(cfg2, sort_keys=False))
    try:
        old = {p: sha(p) for p in (d / "results" / "default").glob("*/model=dlib_resnet/*.parquet")}
        proc = snakemake(d, "-n", "--quiet", "rules")
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        jobs = {
            line.split()[0]: int(line.split()[1])
            for line in out.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()
        }
        # its own extract/compare/occlude (it is a transfer target of the occlusion), and the
        # aggregation, figures and report after them; nothing of dlib_resnet's
        assert jobs == {
            "preflight": 1,
            "extract": 1,
            "compare": 1,
            "occlude": 1,
            "aggregate": 1,
            "figures": 5,
            "study_figures": 1,
            "tables": 10,
            "report": 1,
            "all": 1,
            "total": 23,
        }, out
        proc = snakemake(d)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert {p: sha(p) for p in (d / "results" / "default").glob("*/model=dlib_resnet/*.parquet")} == old
        con = duckdb.connect(str(d / "results/default/leam.duckdb"), read_only=True)
        assert con.execute("SELECT model, count(*) FROM pairs GROUP BY model ORDER BY model").fetchall() == [
            ("AF_R18", 20),
            ("IR_CASIA", 20),
            ("dlib_resnet", 20),
            ("mobileface", 20),
            ("mobilefacenet", 20),
        ]
        side = con.execute("""SELECT class, AF_R18, dlib_resnet FROM model_table WHERE selection = 'top1'
                              ORDER BY class_id""").fetchall()
        assert len(side) == len(visible_classes("landmarks"))
        assert all(a is not None and b is not None for _, a, b in side)
        assert sum(a for _, a, _ in side) == pytest.approx(100) and sum(b for _, _, b in side) == pytest.approx(100)
        layers = con.execute(
            "SELECT DISTINCT layer FROM model_layer_table WHERE AF_R18 IS NOT NULL "
            "AND dlib_resnet IS NOT NULL ORDER BY layer"
        ).fetchall()
        assert layers == [
            ("conv1",),
            ("l1_0.conv1",),
            ("l1_0.conv2",),
            ("l1_1.conv1",),
            ("l1_1.conv2",),
            ("l2_0.conv1",),
            ("l2_0.conv2",),
        ]  # the layer names both families share
        con.close()
        assert (d / "results/default/figures/AF_R18_layers.png").stat().st_size > 0
    finally:
        (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # removed again: nothing of dlib_resnet reruns; AF_R18's files stay on disk, out of the database
    af = {p: sha(p) for p in (d / "results" / "default").glob("*/model=AF_R18/*.parquet")}
    proc = snakemake(d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: sha(p) for p in (d / "results" / "default").glob("*/model=dlib_resnet/*.parquet")} == old
    assert {p: sha(p) for p in (d / "results" / "default").glob("*/model=AF_R18/*.parquet")} == af
    con = duckdb.connect(str(d / "results/default/leam.duckdb"), read_only=True)
    assert con.execute("SELECT DISTINCT model FROM pairs ORDER BY model").fetchall() == [
        ("IR_CASIA",),
        ("dlib_resnet",),
        ("mobileface",),
        ("mobilefacenet",),
    ]


def test_a_model_without_weights_is_skipped_and_the_rest_runs(run):
    d, cfg = run
    cfg2 = copy.deepcopy(cfg)
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    cfg2["models"]["CF_R50"] = paper["models"]["CF_R50"]
    (d / "config.yaml").write_text(yaml.safe_dump(cfg2, sort_keys=False))
    try:
        proc = snakemake(d)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        msg = (
            "model 'CF_R50': weight file not found: weights/insightface/glint360k_cosface_r50_fp16_0.1/backbone.pth. "
            "Download it from "
            "https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch#model-zoo, "
            f"then set models.CF_R50.weights.path in {d / 'config.yaml'} to its location."
        )  # the --configfile
        assert f"leam: skipping {msg}" in out
        # the other model's results are complete and current
        assert "Nothing to be done" in out
    finally:
        (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_shards_give_the_same_results(run, tmp_path):
    """Four shards (identities hashed; some shards empty) give the same tables as one."""

    d, cfg = run
    link_weights(tmp_path)
    copy_photos(d / "data", tmp_path / "data")
    cfg4 = copy.deepcopy(cfg)
    cfg4["shards"] = 4
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg4, sort_keys=False))
    proc = snakemake(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "results/default/faces").glob("shard-*.parquet"))) == 4
    assert_same_views(tmp_path, d)
