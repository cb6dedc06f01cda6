"""Layer 3: one module per pipeline stage (the rule of the same name runs it). A stage imports
:mod:`leam.core`, :mod:`leam.models`, :mod:`leam.cam` and :mod:`leam.outputs`, never another stage:
what two stages share lives in core (tests/test_imports.py holds this)."""
