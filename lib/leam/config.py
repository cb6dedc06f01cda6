"""Configuration: validation against ``config.schema.yaml`` with messages a person can act on.

``validate_config(cfg)`` fills defaults in place and raises :class:`ConfigError` listing every
problem as ``<key path>: <what is wrong> (<what the key is for>)``.
"""

from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

__all__ = ["ConfigError", "load_schema", "validate_config", "load_config"]


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
            return ""
    return _resolve(node, schema).get("description", "")


def validate_config(cfg: dict, *, source: str = "config.yaml") -> dict:
    """Validate ``cfg`` (filled with defaults in place) and return it."""
    schema = load_schema()
    _fill_defaults(cfg, schema)
    problems = []
    for err in sorted(Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path))):
        path = list(err.absolute_path)
        where = ".".join(str(p) for p in path) or "(top level)"
        what = err.message
        if err.validator == "additionalProperties":
            what = f"{err.message}; allowed keys: {', '.join(sorted(err.schema.get('properties', {})))}"
        desc = _describe(schema, path)
        problems.append(f"{where}: {what}" + (f" ({desc})" if desc else ""))
    if not problems:
        problems += _cross_checks(cfg)
    if problems:
        raise ConfigError(f"{source} has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return cfg


def _cross_checks(cfg: dict) -> list[str]:
    out = []
    if cfg["input"]["sample"] and cfg["input"]["urls"]:
        out.append("input: set either sample (the embedded photos) or urls (a URL list to download), not both")
    levels = cfg["count"]["levels"]
    if list(levels) != sorted(set(levels)):
        out.append(f"count.levels: must be increasing without repeats (got {levels})")
    for lv in levels:
        if not math.isclose(round(lv * 100), lv * 100, abs_tol=1e-6):
            out.append(f"count.levels: {lv} is not a multiple of 0.01 %")
    for name, m in cfg["models"].items():
        if len(set(m["layers"].values())) != len(m["layers"]):
            out.append(f"models.{name}.layers: two names point at the same module path")
    return out


def load_config(path: str | Path) -> dict:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return validate_config(cfg, source=str(path))
