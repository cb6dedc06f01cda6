"""Layer 1 (beside models): what a run hands to people — the DuckDB database and its catalog,
figures, findings and the report. Imports :mod:`leam.core` (and each other) only."""
