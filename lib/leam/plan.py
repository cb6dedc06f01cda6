"""What a run will do, from its validated config, without torch: the workflow's plan
(``workflow/rules/common.smk``) imports only this layer (config, options, dataset, weights, stamps,
plan), so ``snakemake -n`` and every cluster job's start need no torch import (about 3 s) and the
host running Snakemake need not have torch at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from leam.options import (
    AggregateOptions,
    AlignOptions,
    CompareOptions,
    DetectOptions,
    DownloadOptions,
    ExtractOptions,
    OccludeOptions,
    ParseOptions,
    PopulationOptions,
    SampleOptions,
)

__all__ = ["RunOptions", "run_options"]


class RunOptions(NamedTuple):
    """Every stage's options of one run (:mod:`leam.options`), per model where a stage runs per model."""

    sample: SampleOptions
    download: DownloadOptions
    detect: DetectOptions
    align: AlignOptions
    parse: ParseOptions
    extract: dict[str, ExtractOptions]
    compare: dict[str, CompareOptions]
    population: PopulationOptions
    occlude: dict[str, OccludeOptions]
    aggregate: AggregateOptions


def run_options(
    config: dict, *, models: Sequence[str], sources: Sequence[tuple[str, str]], unplanned: Sequence[str] = ()
) -> RunOptions:
    """Built once from the validated ``config``: ``models``, the models that run (weights present);
    ``sources``, the occlusion sources among them (:func:`leam.config.occlusion_sources`);
    ``unplanned``, result files the run does not write (listed by the database)."""
    return RunOptions(
        sample=SampleOptions.from_config(config),
        download=DownloadOptions.from_config(config),
        detect=DetectOptions.from_config(config),
        align=AlignOptions.from_config(config),
        parse=ParseOptions.from_config(config),
        extract={m: ExtractOptions.from_config(config, m, sources=sources) for m in models},
        compare={m: CompareOptions.from_config(config, m) for m in models},
        population=PopulationOptions.from_config(config, sources=sources),
        occlude={m: OccludeOptions.from_config(config, m, sources=sources) for m in models},
        aggregate=AggregateOptions.from_config(config, models=models, unplanned=unplanned),
    )
