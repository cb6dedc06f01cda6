"""OpenMP waiting under CPU contention: torch's default spin-wait vs GOMP_SPINCOUNT=20000.

A busy machine is the normal case. torch's CPU kernels run on OpenMP threads that spin while
waiting for each other; when other processes hold the cores, a descheduled thread keeps the rest
spinning. This times HSE FaceRes embedding (the default's heaviest model, 2 threads) in fresh
processes with the default spin, ``GOMP_SPINCOUNT=20000`` (the workflow's default, set in
workflow/rules/common.smk) and ``OMP_WAIT_POLICY=PASSIVE``, on an idle machine and beside
``--burners`` CPU-burning processes, and prints images/s and ratios.

    .venv/bin/python benchmarks/contention.py [--burners 4] [--repeats 2] [--record]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from alignment import record

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "default": {},
    "GOMP_SPINCOUNT=20000": {"GOMP_SPINCOUNT": "20000"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
}
CHILD = """
import time, torch
from leam.config import load_config
from leam.models.loader import load_model
torch.set_num_threads(2)
cfg = load_config("config/config.yaml")
m = load_model("faceres", cfg["models"]["faceres"])
x = torch.randint(0, 255, (48, 150, 150, 3), dtype=torch.uint8)
m.embed(x[:8])
t = time.perf_counter(); m.embed(x); print(48 / (time.perf_counter() - t))
"""


def rate(env: dict) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--burners", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    lines = ["| machine | setting | images/s (median) | vs default |", "|---|---|---|---|"]
    for label, n in (("idle", 0), (f"{args.burners} burners", args.burners)):
        burners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(n)]
        try:
            got = {name: statistics.median(rate(env) for _ in range(args.repeats)) for name, env in SETTINGS.items()}
        finally:
            for b in burners:
                b.kill()
                b.wait()
        for name, v in got.items():
            lines.append(f"| {label} | {name} | {v:.1f} | {v / got['default']:.2f}x |")
            print(lines[-1], flush=True)
    if args.record:
        record(
            "OpenMP waiting under contention: HSE FaceRes, 48 images, 2 threads",
            f".venv/bin/python benchmarks/contention.py --burners {args.burners} --repeats {args.repeats} --record",
            lines,
        )


if __name__ == "__main__":
    main()
