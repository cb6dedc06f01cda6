"""Peak memory of the align and parse stages as a shard grows: this checkout's code beside another's.

A shard of N identities is made from the embedded default's detected photos (each real identity's
rows copied under new names, the same photo files), then ``align_shard`` and ``parse_shard`` run on
it, each in a fresh Python process, and the process's peak RSS (``ru_maxrss``) is read; the same with
``--lib``, another checkout's ``lib`` (e.g. the code before streaming), side by side. #22 bar 3 asks
for a flat peak (<= 1.2x) as people are added to one shard; the whole-pipeline view (occlude too) is
``benchmarks/scale.py --shards 1``.

    .venv/bin/python benchmarks/stage_memory.py --faces results/default/faces/shard-000.parquet \\
        --identities 6 60 240 [--lib /tmp/before/lib]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent

# runs in a fresh process: one stage, then its peak RSS in MB (Linux ru_maxrss is in KiB)
CHILD = r"""
import json, resource, sys
stage, faces, aligned, labels = sys.argv[1:5]
import pyarrow.parquet as pq
try:
    from leam.stages.align import align_shard
    from leam.stages.parse import parse_shard
except ImportError:  # the flat package before #22
    from leam.align import align_shard
    from leam.parsing import parse_shard
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if stage == "align":
    try:
        from leam.options import AlignOptions
        new = dict(options=AlignOptions(size=150, padding=0.25, seed=0, max_side=None))
    except ImportError:  # before the option objects
        new = dict(size=150, padding=0.25, seed=0)
    align_shard(pq.read_table(faces), aligned, **new)
else:
    src = aligned
    import inspect
    if "aligned: pa.Table" in inspect.getsource(parse_shard).split(")")[0]:  # the old signature: a table
        src = pq.read_table(aligned)
    try:
        from leam.options import ParseOptions
        opts = dict(options=ParseOptions(parser={"name": "landmarks"}, device="cpu", batch=16))
    except ImportError:  # before the option objects
        opts = {}
    parse_shard(src, labels, **opts)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"after_imports": base, "peak": peak}))
"""


def make_shard(faces: Path, n: int, out: Path) -> int:
    """A faces table of ``n`` identities from ``faces``' usable rows (real identities copied under new names)."""
    t = pq.read_table(faces)
    t = t.filter(pc.equal(t.column("status"), "ok"))
    ids = sorted(set(t.column("identity").to_pylist()))
    parts = []
    for k in range(n):
        src = ids[k % len(ids)]
        part = t.filter(pc.equal(t.column("identity"), src))
        parts.append(
            part.set_column(
                t.schema.get_field_index("identity"), "identity", pa.array([f"{src}_{k:04d}"] * part.num_rows)
            )
        )
    table = pa.concat_tables(parts)
    pq.write_table(table, out)
    return table.num_rows


def measure(stage: str, faces: Path, work: Path, lib: Path | None) -> dict:
    env = dict(os.environ)
    if lib is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(lib), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, stage, str(faces), str(work / "aligned.parquet"), str(work / "labels.parquet")],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, required=True, help="a detect output (faces/shard-NNN.parquet)")
    ap.add_argument("--identities", type=int, nargs="+", default=[6, 60, 240])
    ap.add_argument("--lib", type=Path, default=None, help="another checkout's lib/, measured beside this one's")
    args = ap.parse_args()
    codes = [("this checkout", None)] + ([(f"--lib {args.lib}", args.lib)] if args.lib else [])
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.identities:
            work = Path(tmp) / f"n{n}"
            work.mkdir()
            photos = make_shard(args.faces, n, work / "faces.parquet")
            for label, lib in codes:
                for stage in ("align", "parse"):
                    r = measure(stage, work / "faces.parquet", work, lib)
                    rows[(label, stage, n)] = (photos, r["peak"], r["peak"] - r["after_imports"])
                    print(f"{label}: {stage}, {n} identities ({photos} photos): peak {r['peak']:.0f} MB", flush=True)
    lo, hi = min(args.identities), max(args.identities)
    print()
    print(
        "| code | stage | "
        + " | ".join(f"{n} identities: peak MB (above imports)" for n in args.identities)
        + f" | growth {lo} -> {hi} |"
    )
    print("|---|---|" + "---:|" * (len(args.identities) + 1))
    for label, _ in codes:
        for stage in ("align", "parse"):
            cells = [f"{rows[(label, stage, n)][1]:.0f} ({rows[(label, stage, n)][2]:.0f})" for n in args.identities]
            growth = rows[(label, stage, hi)][1] / rows[(label, stage, lo)][1]
            print(f"| {label} | {stage} | " + " | ".join(cells) + f" | {growth:.2f}x |")


if __name__ == "__main__":
    main()
