"""Configuration: validation against ``config.schema.yaml`` with messages a person can act on.

``validate_config(cfg)`` fills defaults in place and raises :class:`ConfigError` listing every
problem as ``<key path>: <what is wrong> (<what the key is for>)``.
"""

from __future__ import annotations

import copy
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

__all__ = [
    "ConfigError",
    "load_schema",
    "validate_config",
    "load_config",
    "occlusion_sources",
    "photo_dir",
    "resolve_models",
    "run_name",
    "run_config",
    "apply_overrides",
]


class ConfigError(ValueError):
    pass


def load_schema() -> dict:
    return yaml.safe_load(resources.files("leam").joinpath("config.schema.yaml").read_text())


def _resolve(sub: dict, root: dict) -> dict:
    """Follow a local ``$ref`` (``#/$defs/name``), keeping the referring node's own keys."""
    if "$ref" in sub:
        target = root
        for part in sub["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in sub.items() if k != "$ref"}}
    return sub


def _fill_defaults(node: Any, schema: dict, root: dict | None = None) -> None:
    root = root or schema
    schema = _resolve(schema, root)
    if not isinstance(node, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if key in node:
            _fill_defaults(node[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in node.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def _describe(schema: dict, path: list) -> str:
    return _schema_at(schema, path).get("description", "")


def config_source() -> str:
    """The config file(s) of this run, for messages: what the workflow set in ``LEAM_CONFIG`` (the
    --configfile files), else config/config.yaml."""
    return os.environ.get("LEAM_CONFIG") or "config/config.yaml"


#: keys that moved: (old key, new key, why)
MOVED = [("extract.device", "device", "one device for every torch stage")]


def validate_config(cfg: dict, *, source: str = "config/config.yaml") -> dict:
    """Validate ``cfg`` (filled with defaults in place) and return it."""
    schema = load_schema()
    problems = [
        f"{old}: moved to the top-level key {new} ({why}); write `{new}: {value}`"
        for old, new, why in MOVED
        if isinstance(section := cfg.get(old.split(".")[0]), dict) and (value := section.pop(old.split(".")[1], None))
    ]
    _fill_defaults(cfg, schema)
    for err in sorted(Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path))):
        path = list(err.absolute_path)
        where = ".".join(str(p) for p in path) or "(top level)"
        what = err.message
        if err.validator == "additionalProperties":
            what = f"{err.message}; allowed keys: {', '.join(sorted(err.schema.get('properties', {})))}"
        desc = _describe(schema, path)
        problems.append(f"{where}: {what}" + (f" ({desc})" if desc else ""))
    problems += _non_finite(cfg, schema)
    if not problems:
        problems += _cross_checks(cfg)
    if problems:
        raise ConfigError(f"{source} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return cfg


def _non_finite(node: Any, schema: dict, path: tuple = ()) -> list[str]:
    """Every number that is NaN or infinite (``.nan``, ``.inf`` in YAML): JSON Schema's bounds let
    them through (a comparison with NaN is false), and they would silently reject every face or
    mark every photo a duplicate."""
    if isinstance(node, float) and not math.isfinite(node):
        where = ".".join(str(p) for p in path)
        desc = _describe(schema, list(path))
        return [f"{where}: {node} is not a finite number" + (f" ({desc})" if desc else "")]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _non_finite(v, schema, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _non_finite(v, schema, (*path, i))]
    return []


def _schema_at(schema: dict, path: list) -> dict:
    node = schema
    for key in path:
        node = _resolve(node, schema)
        if isinstance(key, int):
            node = node.get("items", {})
        elif key in node.get("properties", {}):
            node = node["properties"][key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return {}
    return _resolve(node, schema)


def _types(node: dict, schema: dict) -> set[str]:
    t = node.get("type")
    out = set(t if isinstance(t, list) else [t] if t else [])
    for alt in node.get("anyOf", []) + node.get("oneOf", []):
        out |= _types(_resolve(alt, schema), schema)
    return out


def _coerce(value: Any, schema: dict, path: list) -> Any:
    if isinstance(value, dict):
        return {k: _coerce(v, schema, [*path, k]) for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce(v, schema, [*path, i]) for i, v in enumerate(value)]
    if isinstance(value, str):
        types = _types(_schema_at(schema, path), schema)
        if types and "string" not in types:
            try:
                read = yaml.safe_load(value)
            except yaml.YAMLError:
                return value
            return value if isinstance(read, str) else read
    return value


def apply_overrides(cfg: dict, overrides: dict) -> dict:
    """Snakemake's ``--config KEY=VALUE`` entries laid over the resolved config (after
    :func:`resolve_models`, so an override of a model's key is kept). A nested key is given as a
    YAML mapping, ``--config 'count={levels: [1, 10]}'`` (Snakemake refuses ``count.levels=``: a key
    must be a name); Snakemake reads such a value with YAML's base loader, which keeps every scalar
    a string, so a string where the schema wants a number, boolean or null is read as YAML here.
    Returns ``cfg``, changed in place."""
    schema = load_schema()

    def merge(node: Any, value: Any, path: list) -> Any:
        if isinstance(node, dict) and isinstance(value, dict):
            for k, v in value.items():
                node[k] = merge(node.get(k), v, [*path, k])
            return node
        return _coerce(copy.deepcopy(value), schema, path)

    merge(cfg, overrides, [])
    return cfg


def resolve_models(cfg: dict, config_files: list[str]) -> dict:
    """The run's config after Snakemake merged the ``--configfile`` files into config/config.yaml.

    Snakemake merges nested keys one by one, so a study file's model entry would gain the default
    entry's keys (its 9 layers under the study's 3). When the files list ``models``, the run has
    exactly those entries, each as the last file listing it wrote it, whole; and keys that name
    models default to the run's own: ``occlude.source_model``, unless a file sets it, keeps the
    default's sources that are among the run's models (else null: the first model). Returns ``cfg``,
    changed in place."""
    files = [yaml.safe_load(Path(f).read_text()) or {} for f in config_files]
    named: dict[str, Any] = {}
    for data in files:
        if isinstance(data, dict):
            for m, entry in (data.get("models") or {}).items():
                named[m] = copy.deepcopy(entry)
    if not named:
        return cfg
    cfg["models"] = named
    if not any(isinstance(d, dict) and "source_model" in (d.get("occlude") or {}) for d in files):
        wanted = (cfg.get("occlude") or {}).get("source_model")
        names = [wanted] if isinstance(wanted, str) else list(wanted or [])
        kept = [m for m in names if m in named]
        cfg.setdefault("occlude", {})["source_model"] = kept or None
    return cfg


def run_name(cfg: dict, config_files: list[str], overrides: dict | None = None) -> str:
    """The run's name, which names its results folder: ``run`` from ``--config run=...``
    (``overrides``), else from the last of the ``--configfile`` files that sets it, else that last
    file's name without its extension (``config/paper.yaml`` -> ``paper``: a study config gets
    its own folder even when it says nothing), else ``cfg["run"]`` (config.yaml's, or
    ``default``). Raises :class:`ConfigError` when a file's name is not a valid run name."""
    if overrides and "run" in overrides:
        return str(overrides["run"])
    for f in reversed(config_files):
        data = yaml.safe_load(Path(f).read_text()) or {}
        if isinstance(data, dict) and "run" in data:
            return str(data["run"])
    if config_files:
        stem = Path(config_files[-1]).name.split(".")[0]
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem):
            raise ConfigError(
                f"{config_files[-1]}: its name {stem!r} cannot name the run's results folder; "
                "set run: NAME in it (letters, digits, '.', '_', '-')"
            )
        return stem
    return cfg.get("run") or "default"


#: where input.sample's photos are copied: a folder of leam's, never the user's input.dir
SAMPLE_DIR = "data/sample"


def photo_dir(cfg: dict) -> str:
    """The folder of the run's photos ({dir}/{identity}/{image}): data/sample for input.sample,
    else input.dir (data/raw when null)."""
    return SAMPLE_DIR if cfg["input"]["sample"] else (cfg["input"]["dir"] or "data/raw")


def _cross_checks(cfg: dict) -> list[str]:
    out = []
    if cfg["input"]["sample"] and cfg["input"]["urls"]:
        out.append("input: set either sample (the embedded photos) or urls (a URL list to download), not both")
    if cfg["input"]["sample"] and cfg["input"]["dir"]:
        out.append(
            f"input: dir ({cfg['input']['dir']}) and sample ({cfg['input']['sample']}) are both set: to study "
            f"your photos in {cfg['input']['dir']}, set input.sample: null; to run the sample, leave input.dir "
            f"out (its photos are kept in {SAMPLE_DIR}, never among yours)"
        )
    levels = cfg["count"]["levels"]
    if list(levels) != sorted(set(levels)):
        out.append(f"count.levels: must be increasing without repeats (got {levels})")
    for lv in levels:
        if not math.isclose(round(lv * 100), lv * 100, abs_tol=1e-6):
            out.append(f"count.levels: {lv} is not a multiple of 0.01 %")
    trusted = ["leam.models", *cfg["builder_modules"]]
    for name, m in cfg["models"].items():
        if len(set(m["layers"].values())) != len(m["layers"]):
            out.append(f"models.{name}.layers: two names point at the same module path")
        module = m["builder"].partition(":")[0]
        if not any(module == t or module.startswith(t + ".") for t in trusted):
            out.append(
                f"models.{name}.builder: {m['builder']!r} is not a model builder leam trusts: a builder runs as "
                f"code with your permissions, so only leam.models.* builders run unless you list its module "
                f"{module!r} under builder_modules"
            )
    return out


def occlusion_sources(cfg: dict, runnable: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """The occlude stage's (source model, source layer) list, and warnings about sources left out.

    ``runnable``: the configured models that can run (weights present), in config order. Sources
    that cannot run are left out; with none left, the first runnable model's first layer is used.
    Unknown names and layers raise :class:`ConfigError`.
    """
    wanted = cfg["occlude"]["source_model"]
    names = [wanted] if isinstance(wanted, str) else list(wanted or [])
    unknown = [m for m in names if m not in cfg["models"]]
    if unknown:
        raise ConfigError(
            f"occlude.source_model: {', '.join(map(repr, unknown))} is not a configured model; "
            f"configured: {', '.join(cfg['models'])}"
        )
    warnings = [f"occlude.source_model {m} is skipped (no weights)" for m in names if m not in runnable]
    kept = [m for m in names if m in runnable]
    layer = cfg["occlude"]["source_layer"]
    if not kept and runnable:
        kept, layer = [runnable[0]], None
        if names:
            warnings.append(f"the occlusion uses {runnable[0]}'s first layer instead")
    out = []
    for m in kept:
        layers = cfg["models"][m]["layers"]
        chosen = layer or next(iter(layers))
        if chosen not in layers:
            raise ConfigError(
                f"occlude.source_layer: {chosen!r} is not a layer of model {m} "
                f"(its layers: {', '.join(layers)}); null takes each source's first layer"
            )
        out.append((m, chosen))
    return out, warnings


def _merge(base: dict, new: dict) -> dict:
    """Snakemake's merge of a --configfile over the config so far: mappings key by key, the rest replaced."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a leam config is a mapping of keys (config/config.yaml), not {type(data).__name__}")
    return data


def run_config(config_files: list[str | Path], overrides: dict | None = None, *, base: str | Path) -> dict:
    """The config a run with ``snakemake --configfile F1 F2 --config K=V`` sees, as the workflow
    builds it (``workflow/rules/common.smk``) and ``leam models|layers|explain --config`` reads it:
    ``base`` (the Snakefile's config/config.yaml), each file merged over it key by key, model entries
    whole (:func:`resolve_models`), the overrides typed (:func:`apply_overrides`), the run named
    (:func:`run_name`), validated with messages naming the files. A file that is ``base`` itself
    adds nothing."""
    cfg = _read_yaml(base)
    files = [str(f) for f in config_files if Path(f).resolve() != Path(base).resolve()]
    for f in files:
        _merge(cfg, _read_yaml(f))
    resolve_models(cfg, files)
    apply_overrides(cfg, overrides or {})
    cfg["run"] = run_name(cfg, files, overrides or {})
    source = " + ".join(files) or str(base)
    return validate_config(cfg, source=f"config ({source} and any --config overrides)" if overrides else source)


def load_config(path: str | Path) -> dict:
    """Read and validate one YAML config file (nothing merged underneath: :func:`run_config` reads
    a run's)."""
    return validate_config(_read_yaml(path), source=str(path))
