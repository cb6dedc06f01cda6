"""What a run will do, from its validated config, without torch: the workflow's plan
(``workflow/rules/common.smk``) imports only this layer (config, dataset, weights, stamps, plan), so
``snakemake -n`` and every cluster job's start need no torch import (about 3 s) and the host
running Snakemake need not have torch at all.
"""

from __future__ import annotations

from leam.core.selection import n_occluded

__all__ = ["rank_pixels"]


def rank_pixels(config: dict) -> int:
    """Pixels of each source pair's ranking that extract keeps: those of the largest occlusion size
    (``occlude.sizes``, % of the ``align.size``-square frame)."""
    return n_occluded(max(config["occlude"]["sizes"]), config["align"]["size"] ** 2)
