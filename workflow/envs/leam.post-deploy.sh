#!/usr/bin/env bash
# Run by Snakemake inside the new conda env of leam.yaml (--sdm conda): the packages whose
# metadata pins ancient torch/numpy/Pillow, without their dependencies (they work with the locked ones).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python -m pip install --no-deps -r "$here/../../envs/nodeps.txt"
