"""Configuration validation: defaults filled, problems named by key with a readable reason."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from conftest import REPO

from leam.config import ConfigError, load_config, validate_config


@pytest.fixture
def cfg():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_embedded_default_is_valid_and_defaults_fill_in(cfg):
    full = load_config(REPO / "config" / "config.yaml")
    assert full["count"]["levels"] == [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 3, 5, 10, 100]
    minimal = {"models": copy.deepcopy(cfg["models"])}
    validate_config(minimal)
    assert minimal["align"] == {"size": 150, "padding": 0.25}
    assert minimal["input"]["sample"] == ["face_recognition_1.3.0", "dlib_johns"] and minimal["shards"] == 1


def test_every_problem_is_reported_with_its_key(cfg):
    cfg["shards"] = 0
    cfg["extract"]["devce"] = "cpu"
    cfg["models"]["dlib_resnet"]["input_size"] = [150]
    del cfg["models"]["dlib_resnet"]["builder"]
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    msg = str(e.value)
    assert "4 problem(s)" in msg
    assert "shards: 0 is less than the minimum of 1 (number of shards" in msg
    assert (
        "extract: Additional properties are not allowed ('devce' was unexpected); "
        "allowed keys: memory_budget_mb, store_maps" in msg
    )
    assert "models.dlib_resnet.input_size: [150] is too short (model input as [height, width] pixels)" in msg
    assert "models.dlib_resnet: 'builder' is a required property" in msg


def test_cross_field_checks(cfg):
    cfg["count"]["levels"] = [1, 0.5, 100]
    with pytest.raises(ConfigError, match=r"count.levels: must be increasing"):
        validate_config(cfg)
    cfg["count"]["levels"] = [0.005, 1]
    with pytest.raises(ConfigError, match=r"0.005 is not a multiple of 0.01"):
        validate_config(cfg)


def test_bad_builder_and_device_patterns(cfg):
    cfg["models"]["dlib_resnet"]["builder"] = "no colon here"
    cfg["device"] = "gpu0"
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert "models.dlib_resnet.builder: 'no colon here' does not match" in str(e.value)
    assert "device: 'gpu0' does not match" in str(e.value)


def test_the_device_is_one_top_level_key_and_the_old_key_says_where_it_went(cfg):
    """#22: extract.device was read by four rules and named in every stage's errors."""
    cfg["extract"]["device"] = "cuda:1"
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert (
        "extract.device: moved to the top-level key device (one device for every torch stage); write `device: cuda:1`"
        in str(e.value)
    )


def test_only_trusted_modules_build_models(cfg):
    """#12 case 9: ``builder: os:system`` used to pass validation and run the weights path as a command."""
    cfg["models"]["dlib_resnet"]["builder"] = "os:system"
    with pytest.raises(
        ConfigError,
        match=r"models.dlib_resnet.builder: 'os:system' is not a model builder leam trusts.*"
        r"list its module 'os' under builder_modules",
    ):
        validate_config(copy.deepcopy(cfg))
    for builder, listed in (
        ("mylab.nets:build", ["mylab"]),
        ("mylab.nets:build", ["mylab.nets"]),
        ("leam.models.iresnet:build", []),
    ):
        ok = copy.deepcopy(cfg)
        ok["models"]["dlib_resnet"]["builder"] = builder
        ok["builder_modules"] = listed
        validate_config(ok)
    for builder, listed in (("mylab_evil:build", ["mylab"]), ("leam.modelsx:build", []), ("leam:build", [])):
        bad = copy.deepcopy(cfg)
        bad["models"]["dlib_resnet"]["builder"] = builder
        bad["builder_modules"] = listed
        with pytest.raises(ConfigError, match="not a model builder leam trusts"):
            validate_config(bad)


def test_the_sample_never_lands_among_your_photos(cfg):
    """#12 case 5: changing only input.dir used to copy the sample photos into the user's folder."""
    from leam.config import photo_dir

    assert photo_dir(validate_config(copy.deepcopy(cfg))) == "data/sample"
    mine = copy.deepcopy(cfg)
    mine["input"]["dir"] = "photos/mine"
    with pytest.raises(
        ConfigError,
        match=r"input: dir \(photos/mine\) and sample .* are both set: to study your photos "
        r"in photos/mine, set input.sample: null",
    ):
        validate_config(mine)
    mine["input"]["sample"] = None
    assert photo_dir(validate_config(mine)) == "photos/mine"
    assert photo_dir(validate_config({"models": cfg["models"], "input": {"sample": None}})) == "data/raw"


def test_yaml_errors_name_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{p}: not valid YAML"):
        load_config(p)


def test_occlusion_sources_plan():
    from leam.config import occlusion_sources

    cfg = load_config(REPO / "config" / "config.yaml")
    all4 = ["dlib_resnet", "IR_CASIA", "mobilefacenet", "mobileface"]
    firsts = [("IR_CASIA", "conv2d_1a"), ("dlib_resnet", "conv1"), ("mobilefacenet", "conv0"), ("mobileface", "conv1")]
    assert occlusion_sources(cfg, all4) == (firsts, [])
    # a source without weights is left out, loudly; none left: the first runnable model's first layer
    assert occlusion_sources(cfg, ["dlib_resnet", "IR_CASIA", "mobilefacenet"]) == (
        firsts[:3],
        ["occlude.source_model mobileface is skipped (no weights)"],
    )
    cfg["occlude"]["source_model"] = "mobileface"
    cfg["occlude"]["source_layer"] = "s1_conv1"
    assert occlusion_sources(cfg, all4) == ([("mobileface", "s1_conv1")], [])
    assert occlusion_sources(cfg, ["IR_CASIA"]) == (
        [("IR_CASIA", "conv2d_1a")],
        [
            "occlude.source_model mobileface is skipped (no weights)",
            "the occlusion uses IR_CASIA's first layer instead",
        ],
    )
    cfg["occlude"]["source_model"] = ["dlib_resnet", "mobileface"]
    with pytest.raises(ConfigError, match="'s1_conv1' is not a layer of model dlib_resnet"):
        occlusion_sources(cfg, all4)
    cfg["occlude"]["source_model"] = ["IR_VGG"]
    with pytest.raises(ConfigError, match="'IR_VGG' is not a configured model"):
        occlusion_sources(cfg, all4)
    cfg["occlude"]["source_model"] = None
    cfg["occlude"]["source_layer"] = None
    assert occlusion_sources(cfg, all4) == ([("dlib_resnet", "conv1")], [])


def test_each_config_names_its_own_results_folder(tmp_path, cfg):
    """#12 case 6: results/{run}/ comes from --config run=, else the last --configfile that sets
    run, else that file's name, else config.yaml's run."""
    from leam.config import run_name

    named, unnamed = tmp_path / "named.yaml", tmp_path / "my_study.v2.yaml"
    named.write_text("run: pilot\n")
    unnamed.write_text("shards: 4\n")
    assert run_name(cfg, []) == "default"
    assert run_name({**cfg, "run": "mine"}, []) == "mine"
    assert run_name(cfg, [str(unnamed)]) == "my_study"
    assert run_name(cfg, [str(named)]) == "pilot"
    assert run_name(cfg, [str(named), str(unnamed)]) == "pilot"  # the later file does not name one
    assert run_name(cfg, [str(unnamed)], {"run": "x1"}) == "x1"
    assert run_name(cfg, [str(REPO / "config" / "paper.yaml")]) == "paper"
    odd = tmp_path / "my study.yaml"
    odd.write_text("shards: 1\n")
    with pytest.raises(ConfigError, match="its name 'my study' cannot name the run's results folder; set run: NAME"):
        run_name(cfg, [str(odd)])
    bad = copy.deepcopy(cfg)
    bad["run"] = "../elsewhere"
    with pytest.raises(ConfigError, match=r"run: '../elsewhere' does not match"):
        validate_config(bad)


def test_shards_are_capped_at_the_number_of_people(tmp_path):
    """#21 case 8: shards: 200 with 5 people planned 195 empty shards' jobs; 100000 hung the dry run."""
    import shutil

    from conftest import snakemake

    from leam.stages.dataset import count_identities

    cfg = load_config(REPO / "config" / "config.yaml")
    assert count_identities(cfg, "data/sample") == 7  # obama, biden and the five johns
    raw = tmp_path / "data" / "raw"
    for person in ("John_Salley", "John_Savage", "John_Simm"):
        shutil.copytree(REPO / "data" / "samples" / "dlib-johns" / person, raw / person)
    (raw / ".hidden").mkdir()
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["input"] = {"dir": "data/raw", "sample": None}
    cfg["shards"] = 100000
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = snakemake(tmp_path, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "leam: shards: 100000 is more than the 3 people of this run: using 3" in out
    assert "faces/shard-002.parquet" in out and "faces/shard-003.parquet" not in out


@pytest.mark.parametrize(
    ("key", "value"),
    [("detect.min_score", ".nan"), ("detect.near_duplicate_mad", ".inf"), ("count.levels", "[1, .nan]")],
)
def test_nan_and_infinity_are_config_errors_naming_the_key(tmp_path, key, value):
    """#21 case 5: `min_score: .nan` passed validation and rejected every face as no-face;
    `near_duplicate_mad: .inf` marked 12 of 17 photos duplicates."""
    section, name = key.split(".")
    text = (REPO / "config" / "config.yaml").read_text()
    cfg = yaml.safe_load(text)
    p = tmp_path / "study.yaml"
    cfg[section][name] = "PLACEHOLDER"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False).replace("PLACEHOLDER", value))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert f"{p} has 1 problem(s)" in msg and key in msg and "not a finite number" in msg


def test_a_study_model_entry_replaces_the_defaults_whole_through_snakemake(tmp_path):
    """#21 case 1: a --configfile listing dlib_resnet with 3 layers ran 9 (Snakemake merged the
    default's layers underneath); a study with fewer models stopped on occlude.source_model, a key
    the user never wrote. Now the study's entry is the run's, and the sources default to its models."""
    import shutil

    from conftest import link_weights, snakemake

    raw = tmp_path / "data" / "raw"
    for person in ("John_Salley", "John_Savage"):
        shutil.copytree(REPO / "data" / "samples" / "dlib-johns" / person, raw / person)
    link_weights(tmp_path)
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(default, sort_keys=False))  # merged underneath
    entry = copy.deepcopy(default["models"]["dlib_resnet"])
    entry["layers"] = {"conv1": "conv1", "l2_0.conv2": "layer2.0.conv2", "l1_0.conv1": "layer1.0.conv1"}
    study = {"input": {"dir": "data/raw", "sample": None}, "models": {"dlib_resnet": entry}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    proc = snakemake(tmp_path, "--configfile", str(tmp_path / "study.yaml"), "--until", "preflight")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "model=IR_CASIA" not in out and "occlude.source_model" not in out
    done = (tmp_path / "results/study/preflight/dlib_resnet.txt").read_text()
    assert "3 layers" in done, done
    cfg = copy.deepcopy(default)
    from leam.config import resolve_models

    got = resolve_models(cfg, [str(tmp_path / "study.yaml")])
    assert list(got["models"]["dlib_resnet"]["layers"]) == ["conv1", "l2_0.conv2", "l1_0.conv1"]  # its order
    assert got["occlude"]["source_model"] == ["dlib_resnet"]
    study["models"]["dlib_resnet"]["layers"] = {}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    proc = snakemake(tmp_path, "--configfile", str(tmp_path / "study.yaml"), "-n")
    assert proc.returncode != 0 and "models.dlib_resnet.layers" in proc.stdout + proc.stderr


def test_a_photo_replaced_by_an_older_copy_reruns_and_a_touch_does_not(tmp_path):
    """#21 case 2: after `cp -p` (a backup restore) the rerun said "Nothing to be done" and the
    database kept the old photo's sha256: reruns now follow each photo's sha256, not its mtime."""
    import os
    import shutil

    from conftest import johns_study, snakemake

    from leam.core.stamps import update_stamp

    raw = tmp_path / "data" / "raw"
    src = REPO / "data" / "samples" / "dlib-johns"
    johns_study(tmp_path, {"John_Salley": 2, "John_Savage": 2})
    proc = snakemake(tmp_path, "--until", "detect")
    assert proc.returncode == 0, proc.stderr[-3000:]
    faces = tmp_path / "results/default/faces/shard-000.parquet"
    # a touch (or chmod) of a photo changes nothing
    victim = sorted((raw / "John_Salley").glob("*.jpg"))[0]
    os.utime(victim)
    victim.chmod(0o600)
    proc = snakemake(tmp_path, "-n", "--until", "detect")
    out = proc.stdout + proc.stderr
    assert "Nothing to be done" in out or re.search(r"^total\s+0$", out, re.M), out[-2000:]
    # another photo copied over it, keeping its older timestamp (cp -p): detect reruns
    other = sorted((src / "John_Salley").glob("*.jpg"))[5]
    shutil.copy2(other, victim)  # copy2 keeps the source's (older) mtime
    os.utime(victim, ns=(faces.stat().st_atime_ns, faces.stat().st_mtime_ns - 10**12))
    assert victim.stat().st_mtime_ns < faces.stat().st_mtime_ns
    proc = snakemake(tmp_path, "-n", "--until", "detect")
    out = proc.stdout + proc.stderr
    assert re.search(r"^detect\s+1$", out, re.M), out[-2000:]
    # the stamp itself: content decides
    stamp = tmp_path / "s.json"
    assert update_stamp(stamp, {"a": victim}) is True and update_stamp(stamp, {"a": victim}) is False
