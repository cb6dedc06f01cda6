"""How time, memory and bytes grow with the number of people: a synthetic study through the real pipeline.

A study of N people x ``--photos`` photos (real faces: the embedded default's photos, jittered
(affine, brightness, noise, flips), each synthetic person drawn from one real person's photos) runs
through the real Snakemake workflow (``snakemake --cores 2``) with one random-init IResNet-18 at
112 px and its nine earliest convolutions, ``ceil(N / 10)`` shards, for growing N. Per stage:
summed wall time and the largest peak RSS of its jobs (Snakemake's benchmark files), and the bytes
it wrote; then a projection to the paper's study (1000 people x 15 photos, 9 models) from the
measured growth, on this CPU.

    .venv/bin/python benchmarks/scale.py --people 5 10 20 40 [--record]

Memory of the streaming stages (#22 bar 3: align, parse and occlude hold one identity, or one
batch, at a time, so their peak RSS stays flat as a shard grows): one shard whatever N, a lighter
occlusion so that N=20 runs in minutes, and the code to measure (``--lib``: another checkout's
``lib``, e.g. the code before the change, run side by side with this one's):

    .venv/bin/python benchmarks/scale.py --people 5 20 --shards 1 --photos 8 \
        --positives-per-anchor 2 --occlude-sizes 1 10 [--lib /tmp/before/lib]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import yaml
from alignment import record
from PIL import Image, ImageEnhance

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
STAGES = [
    "detect",
    "align",
    "parse",
    "extract",
    "compare",
    "population_atlas",
    "occlude",
    "aggregate",
    "figures",
    "report",
]
OUTPUT_DIRS = {
    "detect": ["faces"],
    "align": ["aligned"],
    "parse": ["labels"],
    "extract": ["pairs", "embeddings", "counts", "image_maps", "rankings", "maps"],
    "compare": ["compare"],
    "population_atlas": ["occlusion/population.parquet"],
    "occlude": ["occlusion/model=r18", "atlas"],
    "aggregate": ["leam.duckdb"],
    "figures": ["figures"],
    "report": ["report.html"],
}


def source_photos() -> dict[str, list[Path]]:
    """The real people of the embedded default with their photos (dlib johns; project files)."""
    root = REPO / "data/samples/dlib-johns"
    return {d.name: sorted(d.glob("*.jpg")) for d in sorted(root.iterdir()) if d.is_dir()}


def jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A plausible other photo of the same face: rotation, scale, shift, brightness, contrast, noise, flip."""
    img = img.convert("RGB").resize((220, 220), Image.BICUBIC)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img = img.rotate(
        float(rng.uniform(-8, 8)),
        resample=Image.BICUBIC,
        translate=tuple(rng.uniform(-8, 8, 2)),
        fillcolor=tuple(int(v) for v in rng.integers(0, 255, 3)),
    )
    s = float(rng.uniform(0.9, 1.1))
    w = int(220 * s)
    img = img.resize((w, w), Image.BICUBIC)
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.7, 1.3)))
    img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.8, 1.2)))
    a = np.asarray(img, dtype=np.float32) + rng.normal(0, 4, (w, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def make_study(raw: Path, people: int, photos: int, seed: int = 0) -> None:
    src = source_photos()
    names = sorted(src)
    rng = np.random.default_rng(seed)
    for i in range(people):
        base = src[names[i % len(names)]]
        d = raw / f"person_{i:04d}"
        d.mkdir(parents=True)
        for j in range(photos):
            jitter(Image.open(base[j % len(base)]), rng).save(d / f"{j:02d}.jpg", quality=92)


RUN = "scale"  # each study's outputs: <work>/results/scale/, logs: <work>/logs/scale/


def make_config(
    work: Path, people: int, shards: int | None = None, positives: int | None = None, sizes: list[float] | None = None
) -> Path:
    from leam.models.iresnet import iresnet

    (work / "weights").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(iresnet("r18").state_dict(), work / "weights/r18.pth")
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    r18 = paper["models"]["AF_R18"]
    r18["weights"] = {"path": "weights/r18.pth", "sha256": None}
    cfg["models"] = {"r18": r18}
    cfg["input"] = {**cfg["input"], "dir": "data/raw", "sample": None}
    cfg["shards"] = shards or max(1, math.ceil(people / 10))
    cfg["occlude"]["source_model"] = "r18"
    if positives:
        cfg["occlude"]["positives_per_anchor"] = positives
    if sizes:
        cfg["occlude"]["sizes"] = sizes
    cfg["run"] = RUN
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def bytes_of(root: Path, rel: str) -> int:
    p = root / "results" / RUN / rel
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.exists() else 0


LOGS = {
    "detect": "detect/*.log",
    "align": "align/*.log",
    "parse": "parse/*.log",
    "extract": "extract/*/*.log",
    "compare": "compare/*.log",
    "population_atlas": "occlude/population.log",
    "occlude": "occlude/*/*.log",
    "aggregate": "aggregate/*.log",
    "figures": "figures/*.log",
    "report": "report/*.log",
}


def peak_rss(work: Path, stage: str) -> float | None:
    """The largest peak RSS (MB) a stage's jobs logged (leam.core.runlog: the kernel's high-water mark
    of each job's process), or None when no log has the line."""
    from leam.core.runlog import PEAK_RSS_PREFIX

    peaks = [
        float(line.split(PEAK_RSS_PREFIX, 1)[1].split()[0])
        for log in (work / "logs" / RUN).glob(LOGS[stage])
        for line in log.read_text().splitlines()
        if PEAK_RSS_PREFIX in line
    ]
    return max(peaks) if peaks else None


def stage_stats(work: Path) -> dict[str, dict[str, float]]:
    """Per stage: jobs, summed seconds (results/scale/benchmarks/**.tsv) and the largest peak RSS (MB) of
    its jobs: from the jobs' logs (true high-water marks), else Snakemake's max_rss (sampled every
    30 s after a job's first 30 s, so it can miss a peak)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"jobs": 0, "s": 0.0, "rss": 0.0})
    for tsv in (work / "results" / RUN / "benchmarks").rglob("*.tsv"):
        stage = tsv.relative_to(work / "results" / RUN / "benchmarks").parts[0]
        with open(tsv) as f:
            for row in csv.DictReader(f, delimiter="\t"):
                st = out[stage]
                st["jobs"] += 1
                st["s"] += float(row["s"])
                rss = row.get("max_rss", "NA")
                st["rss"] = max(st["rss"], float(rss) if rss not in ("NA", "-", "") else 0.0)
    for stage, rels in OUTPUT_DIRS.items():
        out[stage]["bytes"] = sum(bytes_of(work, r) for r in rels)
        if (peak := peak_rss(work, stage)) is not None:
            out[stage]["rss"] = peak
    return out


def rows_of(work: Path, pattern: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted((work / "results" / RUN).glob(pattern)))


def units(work: Path, n_photos: int, n_pairs: int) -> dict[str, tuple[str, int]]:
    """Per stage: (unit of work, how many) of one run: photos, ordered pairs, the rows compare and
    occlude write. figures and report draw a fixed set of outputs from tables whose size grows with
    the pairs (their queries are the work): ordered pairs too."""
    per = {s: ("photo", n_photos) for s in ("detect", "align", "parse", "population_atlas")}
    per |= {s: ("ordered pair", n_pairs) for s in ("extract", "aggregate", "figures", "report")}
    per["compare"] = ("compared map pair", rows_of(work, "compare/**/*.parquet"))
    per["occlude"] = ("occlusion row", rows_of(work, "occlusion/model=*/*.parquet"))
    return per


def growth_table(results: dict) -> list[str]:
    """Time per unit of work and peak RSS per stage, smallest vs largest N, and their ratios."""
    lo, hi = min(results), max(results)
    lines = [
        f"| stage | unit | s per 1000 units, N={lo} | N={hi} | growth | peak RSS MB, N={lo} | N={hi} | growth |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in STAGES:
        (st_lo, _, _, u_lo), (st_hi, _, _, u_hi) = results[lo], results[hi]
        unit, n_lo = u_lo[s]
        n_hi = u_hi[s][1]
        t_lo, t_hi = 1000 * st_lo[s]["s"] / max(n_lo, 1), 1000 * st_hi[s]["s"] / max(n_hi, 1)
        r_lo, r_hi = st_lo[s]["rss"], st_hi[s]["rss"]
        lines.append(
            f"| {s} | {unit} | {t_lo:.1f} | {t_hi:.1f} | {t_hi / max(t_lo, 1e-9):.2f}x | {r_lo:.0f} | {r_hi:.0f} | "
            f"{r_hi / max(r_lo, 1e-9):.2f}x |"
        )
    return lines


def run(people: int, photos: int, root: Path, reuse: bool = False, args=None) -> tuple[dict, float, int, dict]:
    """One study of ``people`` people through snakemake; ``reuse``: read a finished run's files instead;
    ``args``: the command line's --shards, --positives-per-anchor, --occlude-sizes and --lib."""
    work = root / f"n{people}"
    if reuse:
        wall = float((work / "wall_s").read_text())
    else:
        shutil.rmtree(work, ignore_errors=True)
        make_study(work / "data/raw", people, photos)
        cfg = make_config(
            work,
            people,
            args.shards if args else None,
            args.positives_per_anchor if args else None,
            args.occlude_sizes if args else None,
        )
        env = dict(os.environ)
        if args is not None and args.lib:  # another checkout's library (and its workflow) instead of this one's
            env["PYTHONPATH"] = os.pathsep.join([str(args.lib), env.get("PYTHONPATH", "")])
        snakefile = (args.lib.parent if args is not None and args.lib else REPO) / "workflow" / "Snakefile"
        t = time.perf_counter()
        proc = subprocess.run(
            [
                SNAKEMAKE,
                "--snakefile",
                str(snakefile),
                "--directory",
                str(work),
                "--cores",
                "2",
                "--configfile",
                str(cfg),
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        wall = time.perf_counter() - t
        if proc.returncode:
            sys.exit(f"snakemake failed for N={people}:\n{proc.stderr[-3000:]}")
        (work / "wall_s").write_text(f"{wall:.1f}")
    import duckdb

    con = duckdb.connect(str(work / "results" / RUN / "leam.duckdb"), read_only=True)
    n_pairs = con.execute("SELECT count(*) FROM pairs").fetchone()[0]
    n_photos = con.execute("SELECT count(*) FROM images").fetchone()[0]
    return stage_stats(work), wall, n_pairs, units(work, n_photos, n_pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--photos", type=int, default=15)
    ap.add_argument("--root", type=Path, default=Path("/tmp/leam-scale"))
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="tabulate finished runs under --root without rerunning")
    ap.add_argument("--shards", type=int, default=None, help="shards of every study (default: ceil(N / 10))")
    ap.add_argument("--positives-per-anchor", type=int, default=None, help="occlude.positives_per_anchor")
    ap.add_argument("--occlude-sizes", type=float, nargs="+", default=None, help="occlude.sizes, %% of the frame")
    ap.add_argument("--lib", type=Path, default=None, help="run another checkout's lib/ (and its workflow/)")
    args = ap.parse_args()
    results = {}
    for n in args.people:
        results[n] = stats, wall, n_pairs, _ = run(n, args.photos, args.root, args.reuse, args)
        print(f"N={n}: {wall:.0f} s, {n_pairs} pairs", flush=True)
    lines = [
        "| people | pairs | run (s) | " + " | ".join(f"{s} s / MB / MiB out" for s in STAGES) + " |",
        "|---" * (3 + len(STAGES)) + "|",
    ]
    for n, (st, wall, n_pairs, _) in results.items():
        cells = [f"{st[s]['s']:.1f} / {st[s]['rss']:.0f} / {st[s]['bytes'] / 2**20:.1f}" for s in STAGES]
        lines.append(f"| {n} | {n_pairs} | {wall:.0f} | " + " | ".join(cells) + " |")
    # projection: per-stage seconds per ordered pair (extract, occlude, compare, counts) or per person,
    # from the largest N
    lines += [""] + growth_table(results)
    n_max = max(results)
    st, wall, n_pairs, _ = results[n_max]
    paper_pairs = 1000 * 15 * 14
    lines += [
        "",
        f"Projection from N={n_max} ({n_pairs} pairs) to the paper's study (1000 people x 15 photos = "
        f"{paper_pairs} ordered pairs, 9 models), linear in pairs per stage, this CPU, one IResNet-18 "
        "per model (IResNet-50/100 cost more per pair):",
        "",
    ]
    total = 0.0
    for s in STAGES:
        per_model = s in ("extract", "compare", "occlude", "figures")
        scale = paper_pairs / max(n_pairs, 1) * (9 if per_model else 1)
        sec = st[s]["s"] * scale
        total += sec
        lines.append(f"- {s}: {sec / 3600:.1f} h; {st[s]['bytes'] * scale / 2**30:.1f} GiB")
    lines.append(f"- whole study: {total / 3600:.1f} h on 2 CPU cores")
    print("\n".join(lines))
    if args.record:
        record("Scale: time, memory and bytes vs people", "benchmarks/scale.py " + " ".join(sys.argv[1:]), lines)


if __name__ == "__main__":
    main()
