"""leam: Layer Embedding Activation Mapping (arXiv 2509.17457) for face-recognition models.

The pipeline stages live in one module each (``detect``, ``align``, ``parsing``, ``extract`` with
``cam``, ``counting`` and ``summaries``, ``compare``, ``occlude``, ``aggregate``, ``plots``);
``workflow/`` only plumbs Snakemake into them.

Pixel frame: every per-image raster leam stores (aligned face, parser labels, normalised maps,
counts) lives in the identity's *aligned frame*, a square of ``frame.size`` pixels (config; 150 by
default) produced by the align stage. Raw LEAM maps are computed at their layer's resolution and
resized (bilinear, half-pixel centres) into that frame before anything is counted or compared.
"""

__version__ = "0.1.0"
