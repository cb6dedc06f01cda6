"""Layer 0: what every other layer stands on — the file format (:mod:`leam.core.tables`), atomic IO,
maps and their selections, face classes, images, similarity measures, statistics, the code version.
Imports nothing from leam above it (only :mod:`leam.config` beside it); no torch-using stage logic."""
