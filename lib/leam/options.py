"""Each stage's options: frozen, built once from the validated config, with no defaults of their own.

A stage's entry point is ``run(*, inputs, outputs, options)``: ``inputs`` and ``outputs`` are its
rule's named files (Snakemake's ``snakemake.input`` / ``snakemake.output``, or any object with those
attributes), ``options`` one of the classes below. Every field comes from a config key (named in the
field's comment) or from the run's plan (which models run, the occlusion sources): the schema
(``config.schema.yaml``) is the only place a default lives, so no field has one here.

They are :class:`typing.NamedTuple`\\ s, not dataclasses: a rule passes its stage's options as a
Snakemake ``params`` entry, and Snakemake reruns a job whose params changed only for values it can
``repr`` (builtins, tuples among them; any other object is silently ignored). A changed option
therefore reruns exactly the jobs of the stages that read it. Tests and notebooks change one field
with ``options._replace(field=value)``.

Torch-free: the workflow's plan builds them (``workflow/rules/common.smk``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from leam.core.selection import n_occluded

__all__ = [
    "SampleOptions",
    "DownloadOptions",
    "DetectOptions",
    "AlignOptions",
    "ParseOptions",
    "ExtractOptions",
    "CompareOptions",
    "PopulationOptions",
    "OccludeOptions",
    "AggregateOptions",
    "rank_pixels",
]


def rank_pixels(config: dict) -> int:
    """Pixels of each source pair's ranking that extract keeps: those of the largest occlusion size
    (``occlude.sizes``, % of the ``align.size``-square frame)."""
    return n_occluded(max(config["occlude"]["sizes"]), config["align"]["size"] ** 2)


class SampleOptions(NamedTuple):
    sample: tuple[str, ...]  # input.sample: the embedded sample sets copied in

    @classmethod
    def from_config(cls, config: dict) -> SampleOptions:
        s = config["input"]["sample"]
        return cls(sample=(s,) if isinstance(s, str) else tuple(s or ()))


class DownloadOptions(NamedTuple):
    identities: int  # download.identities: people sampled (0: all)
    min_images: int  # download.min_images
    max_images: int  # download.max_images (0: all)
    concurrency: int  # download.concurrency
    connect_timeout: float  # download.connect_timeout (s)
    read_timeout: float  # download.read_timeout (s)
    deadline: float  # download.deadline (s)
    retries: int  # download.retries
    max_mb: float  # download.max_mb (MiB)
    seed: int  # seed: the sample and the retries' jitter

    @classmethod
    def from_config(cls, config: dict) -> DownloadOptions:
        return cls(**config["download"], seed=config["seed"])


class DetectOptions(NamedTuple):
    upsample: int  # detect.upsample
    min_score: float  # detect.min_score
    near_duplicate_mad: float  # detect.near_duplicate_mad
    max_side: int | None  # detect.max_side: photos are reduced to this longest side (pixels) first

    @classmethod
    def from_config(cls, config: dict) -> DetectOptions:
        d = config["detect"]
        return cls(
            upsample=d["upsample"],
            min_score=d["min_score"],
            near_duplicate_mad=d["near_duplicate_mad"],
            max_side=d["max_side"],
        )


class AlignOptions(NamedTuple):
    size: int  # align.size: side of the aligned frame (pixels)
    padding: float  # align.padding: margin around the face, a fraction of its size
    seed: int  # seed: picks each identity's reference photo
    max_side: int | None  # detect.max_side: the photo copy detect saw (landmarks are in its pixels)

    @classmethod
    def from_config(cls, config: dict) -> AlignOptions:
        a = config["align"]
        return cls(size=a["size"], padding=a["padding"], seed=config["seed"], max_side=config["detect"]["max_side"])


class ParseOptions(NamedTuple):
    parser: dict  # parser: {name, weights}
    device: str  # device (FaRL only; the landmark parser runs no torch)
    batch: int  # frames in memory at a time (fixed: the parser's memory, not a result)

    @classmethod
    def from_config(cls, config: dict) -> ParseOptions:
        return cls(parser=config["parser"], device=config["device"], batch=16)


class ExtractOptions(NamedTuple):
    model: str  # the models entry's name
    spec: dict  # models.<model>: builder, weights, layers, ...
    device: str  # device
    memory_budget_mb: float  # extract.memory_budget_mb
    store_maps: str  # extract.store_maps
    frame_padding: float  # align.padding of the frames (places the model's window)
    levels: tuple[float, ...]  # count.levels
    full_threshold: float  # count.full_threshold
    topk_of: str  # count.topk_of
    selections: tuple[str, ...]  # compare.selections
    rank_layer: str | None  # this model's occlusion source layer (None: not a source)
    rank_pixels: int  # top pixels of a source pair kept: the largest occlude.sizes (:func:`rank_pixels`)

    @classmethod
    def from_config(cls, config: dict, model: str, *, sources: Sequence[tuple[str, str]]) -> ExtractOptions:
        """``sources``: the run's (occlusion source model, layer) list (:func:`leam.config.occlusion_sources`)."""
        rank_layer = dict(sources).get(model)
        return cls(
            model=model,
            spec=config["models"][model],
            device=config["device"],
            memory_budget_mb=config["extract"]["memory_budget_mb"],
            store_maps=config["extract"]["store_maps"],
            frame_padding=config["align"]["padding"],
            levels=tuple(config["count"]["levels"]),
            full_threshold=config["count"]["full_threshold"],
            topk_of=config["count"]["topk_of"],
            selections=tuple(config["compare"]["selections"]),
            rank_layer=rank_layer,
            rank_pixels=rank_pixels(config) if rank_layer is not None else 0,
        )


class CompareOptions(NamedTuple):
    model: str  # the models entry's name
    size: int  # align.size
    selections: tuple[str, ...]  # compare.selections
    grid: int  # compare.emd_grid
    different_per_image: int  # compare.different_per_image
    seed: int  # seed: draws the different-identity pairs
    batch: int  # pairs compared at a time (fixed: memory, not a result)

    @classmethod
    def from_config(cls, config: dict, model: str) -> CompareOptions:
        c = config["compare"]
        return cls(
            model=model,
            size=config["align"]["size"],
            selections=tuple(c["selections"]),
            grid=c["emd_grid"],
            different_per_image=c["different_per_image"],
            seed=config["seed"],
            batch=256,
        )


class PopulationOptions(NamedTuple):
    layer: str  # the first occlusion source's layer
    size: int  # align.size

    @classmethod
    def from_config(cls, config: dict, *, sources: Sequence[tuple[str, str]]) -> PopulationOptions:
        return cls(layer=sources[0][1], size=config["align"]["size"])


class OccludeOptions(NamedTuple):
    model: str  # the target model (its frames re-embedded)
    spec: dict  # models.<model>
    sources: tuple[tuple[str, str], ...]  # (source model, layer) pairs, the first one's own maps drive the atlas
    sizes: tuple[float, ...]  # occlude.sizes (% of the frame's pixels)
    atlas_sizes: tuple[float, ...] | None  # occlude.atlas_sizes (None: sizes)
    positives_per_anchor: int | None  # occlude.positives_per_anchor (None: every positive)
    seed: int  # seed: the random-pixel control
    device: str  # device
    frame_padding: float  # align.padding

    @classmethod
    def from_config(cls, config: dict, model: str, *, sources: Sequence[tuple[str, str]]) -> OccludeOptions:
        o = config["occlude"]
        return cls(
            model=model,
            spec=config["models"][model],
            sources=tuple((m, layer) for m, layer in sources),
            sizes=tuple(o["sizes"]),
            atlas_sizes=None if o["atlas_sizes"] is None else tuple(o["atlas_sizes"]),
            positives_per_anchor=o["positives_per_anchor"],
            seed=config["seed"],
            device=config["device"],
            frame_padding=config["align"]["padding"],
        )


class AggregateOptions(NamedTuple):
    models: dict  # {model: models.<model>} of the models that ran
    levels: tuple[float, ...]  # count.levels
    size: int  # align.size
    seed: int  # seed: the findings' bootstrap and permutations
    metadata: dict  # metadata
    settings: dict  # what the report states beside the numbers: {config key: value}
    unplanned: tuple[str, ...]  # files of models or shards no longer in the run: listed, not read
    memory_mb: int  # DuckDB's buffer pool (fixed: memory, not a result)

    @classmethod
    def from_config(cls, config: dict, *, models: Sequence[str], unplanned: Sequence[str] = ()) -> AggregateOptions:
        """``models``: the configured models that run (weights present); ``unplanned``: result files
        of models or shards no longer in the run (:func:`leam.core.resultsdir.unplanned_outputs`)."""
        settings: dict[str, Any] = {
            "compare.emd_grid": config["compare"]["emd_grid"],
            "compare.selections": ", ".join(config["compare"]["selections"]),
            "count.topk_of": config["count"]["topk_of"],
            "count.full_threshold": config["count"]["full_threshold"],
            "occlude.positives_per_anchor": config["occlude"]["positives_per_anchor"],
        }
        return cls(
            models={m: config["models"][m] for m in models},
            levels=tuple(config["count"]["levels"]),
            size=config["align"]["size"],
            seed=config["seed"],
            metadata=config["metadata"],
            settings=settings,
            unplanned=tuple(unplanned),
            # table blocks go to the database file, so memory stays flat with the study's size
            # (benchmarks/scale.py); more only speeds up very large joins
            memory_mb=128,
        )
