"""Which code made a result: a version string for every output's metadata, and the library modules a
workflow script runs (its code stamp's files).

- :func:`code_version` is ``"leam <package version>+<12 hex digits>"``, the hex being the sha256 of
  every file of the imported ``leam`` package (``*.py``, ``*.yaml``) and, in a source checkout, of
  ``workflow/`` (rules, scripts, Snakefile), by path and content. The Parquet writers of
  :mod:`leam.core.io` put it in each file's key-value metadata (``leam.code_version``); the database
  records it for itself and for each file it read (table ``code_versions``), and the report says
  when its results came from more than one version.
- :func:`script_modules` is the transitive closure of the ``leam`` modules a workflow script imports
  (found by reading the source, function-level imports included, with the packages' ``__init__``
  and the package's data files): the workflow stamps their sha256 (leam.core.stamps) as an input of the
  script's rule, so an edited module reruns exactly the rules whose scripts can run it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from leam import __version__

__all__ = ["PACKAGE", "code_version", "script_modules", "module_file"]

PACKAGE = Path(__file__).resolve().parents[1]  # lib/leam (or site-packages/leam)
_DATA = ("*.yaml", "*.json")  # read by modules at run time (the config schema)


def module_file(name: str) -> Path | None:
    """The source file of module ``leam.x.y`` in :data:`PACKAGE`, or None when there is none."""
    parts = name.split(".")
    if parts[0] != "leam":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = ["leam", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str | None) -> set[str]:
    """The ``leam`` modules that ``path`` (module ``name``; None for a script) may import: every
    ``import leam.x``, ``from leam.x import y`` (y too, when it is a module), relative imports
    resolved, wherever they stand in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "leam")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if name is None:
                    continue
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "leam":
                continue
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}"))
    return out


@functools.cache
def script_modules(script: str | Path, extra: tuple[str, ...] = ()) -> tuple[Path, ...]:
    """Every file of the ``leam`` package that running ``script`` can execute or read: the modules it
    imports, theirs in turn, each package's ``__init__`` on the way, and the package's data files;
    sorted. ``extra`` names modules the script imports by name at run time (a model's
    ``builder``: ``"leam.models.tflite"``); ``script`` itself is not included."""
    todo = sorted(_imports(Path(script), None) | {m for m in extra if m.split(".")[0] == "leam"})
    seen: set[Path] = set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing leam.cam.core runs leam/__init__ and leam/cam/__init__
            f = module_file(".".join(parts[:i]))
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(_imports(f, _module_name(f)))
    data = {p for pattern in _DATA for p in PACKAGE.rglob(pattern)}
    return tuple(sorted(seen | data))


def _tree_files() -> list[tuple[str, Path]]:
    files = [(f"leam/{p.relative_to(PACKAGE).as_posix()}", p) for ext in ("*.py", *_DATA) for p in PACKAGE.rglob(ext)]
    workflow = PACKAGE.parents[1] / "workflow"
    if (workflow / "Snakefile").is_file():  # a source checkout: lib/leam beside workflow/
        for p in workflow.rglob("*"):
            if p.is_file() and (p.suffix in (".py", ".smk", ".yaml", ".rst") or p.name == "Snakefile"):
                files.append((f"workflow/{p.relative_to(workflow).as_posix()}", p))
    return sorted(f for f in files if "__pycache__" not in f[1].parts)


@functools.cache
def code_version() -> str:
    """``"leam 0.1.0+1a2b3c4d5e6f"``: the package version and the sha256 (12 hex digits) of the
    package's and the workflow's files, by relative path and content. Computed once per process."""
    h = hashlib.sha256()
    for rel, path in _tree_files():
        h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return f"leam {__version__}+{h.hexdigest()[:12]}"
