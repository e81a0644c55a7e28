"""Parameter overrides and presets: dotted params keys validated like params.yaml, and rendered as the
Hydra overrides `dvc exp run -S` applies (``'1234'`` stays a string, a new key gets ``+``)."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from flanmoe.config import Params, ParamsError, parse_params

PARAMS_FILE = "params.yaml"
PRESETS_DIR = "presets"  # presets/<name>.yaml: dotted params keys over params.yaml (default, study, gpu)


def _merge(base: object, value: object) -> object:
    """OmegaConf's merge, as Hydra applies an override: mappings merge key by key, the rest replaces."""
    if isinstance(base, dict) and isinstance(value, dict):
        out = dict(base)
        for k, v in value.items():
            out[k] = _merge(out[k], v) if k in out else v
        return out
    return value


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (parsed params.yaml) with dotted-key ``overrides`` applied, as ``dvc exp run -S`` would
    (a new copy; missing sections are created). ``ParamsError`` names a key that cannot be set."""
    out = json.loads(json.dumps(dict(data)))  # deep copy of plain YAML data
    for key, value in overrides.items():
        parts = key.split(".")
        if not key or any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", p) for p in parts):
            raise ParamsError("overrides", [f"{key}: not a dotted key of params.yaml"])
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ParamsError("overrides", [f"{key}: {where} is not a mapping (it is {child!r})"])
            node = child
        last = parts[-1]
        node[last] = _merge(node[last], value) if last in node else value
    return out


def validate_overrides(
    data: Mapping[str, Any], overrides: Mapping[str, Any], source: str = PARAMS_FILE
) -> Params:
    """The validated ``Params`` of ``data`` with ``overrides``; ``ParamsError`` names every bad key."""
    return parse_params(apply_overrides(data, overrides), f"{source} with overrides")


def _has_key(data: Mapping[str, Any], key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./@]*")  # unquoted, Hydra reads these as strings...
_RESERVED = {"true", "false", "null", "nan", "inf"}  # ...except these (any case)


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (other strings quoted: ``'1234'`` stays a string)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if "${" in value:
            raise ValueError(f"{value!r}: interpolations are not supported in overrides")
        if _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
            return value  # parses back as this string: dense, data/raw/x.json
        # Hydra unescapes only the backslashes before a quote or the closing quote
        return "'" + re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value) + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(k)):
                raise ValueError(f"{k!r}: not a plain mapping key")
            items.append(f"{k}:{hydra_value(v)}")
        return "{" + ",".join(items) + "}"
    raise ValueError(f"{value!r}: a {type(value).__name__} is not a params value")


def hydra_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """``-S`` arguments for ``dvc exp run``: ``key=value``, or ``+key=value`` for a key params.yaml
    lacks or a mapping value (Hydra refuses to add a key without ``+``, and merges a mapping into the
    existing one, which adds keys)."""
    return [
        f"{'' if _has_key(data, key) and not isinstance(value, dict) else '+'}{key}={hydra_value(value)}"
        for key, value in overrides.items()
    ]


def requested(
    root: Path, settings, overrides: Mapping[str, Any] | None, name: str | None, preset: str | None
) -> tuple[dict[str, Any], str | None]:
    """The overrides and experiment name a run asks for: ``preset``'s overrides, under the filled
    fields of the UI form ``settings`` (a ``pipelines.settings.RunSettings``), under ``overrides``; the
    name given, else the form's, else ``<preset>-<time>`` for a preset other than ``default``."""
    if settings is not None:
        overrides = {**settings.overrides(), **(overrides or {})}
        name = name or settings.experiment_name
    if preset and preset != "default":
        overrides = {**load_preset(root, preset), **(overrides or {})}
        name = name or time.strftime(f"{preset}-%Y%m%d-%H%M%S")
    return dict(overrides or {}), name


def presets(repo: str | Path = ".") -> list[str]:
    """The preset names of ``repo`` (``presets/<name>.yaml``)."""
    return sorted(p.stem for p in (Path(repo) / PRESETS_DIR).glob("*.yaml"))


def load_preset(repo: str | Path, name: str) -> dict[str, Any]:
    """The overrides of preset ``name`` (``presets/<name>.yaml``: dotted params keys -> values).
    ``ValueError`` naming the file for an unknown preset or one that is not such a mapping."""
    path = Path(repo) / PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(
            f"preset: no {PRESETS_DIR}/{name}.yaml (presets: {', '.join(presets(repo)) or 'none'})"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{PRESETS_DIR}/{name}.yaml: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"{PRESETS_DIR}/{name}.yaml: must map dotted params keys to values")
    return data
