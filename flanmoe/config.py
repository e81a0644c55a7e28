"""Typed params: one pydantic model per params.yaml section, and the one loader that validates them.

Any problem (an unknown key, a wrong type, an out-of-range value, an invalid combination) becomes a
``ParamsError`` whose lines each name the dotted key, e.g. ``prepare.mmlu.path: required with kind
'hub'``. Stages call ``load_params_or_exit`` first thing, so bad params stop a run (exit status 2)
before anything is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from flanmoe.data.embedded import EmbeddedConfig
from flanmoe.data.sources import SourceSpec
from flanmoe.data.tokenize import TokenizeConfig
from flanmoe.params_base import StrictModel, format_validation_error

DEFAULT_PARAMS = Path("params.yaml")


class BaseParams(StrictModel):
    """Shared by every stage."""

    seed: int = Field(default=1234, ge=0)  # one seed for data sampling, init and training order
    experiment: str = Field(default="flan-moe", min_length=1)  # MLflow experiment name


class PrepareParams(StrictModel):
    """Stage `prepare`: where each source comes from, and the offline suite's options."""

    embedded: EmbeddedConfig = EmbeddedConfig()  # options of the offline suite (kind: embedded)
    pretrain: SourceSpec = SourceSpec()  # text corpus, C4 schema
    flan: SourceSpec = SourceSpec()  # instruction mixture, FLAN collection schema
    mmlu: SourceSpec = SourceSpec()  # held-out multiple choice, cais/mmlu schema
    bbh: SourceSpec = SourceSpec()  # held-out exact match, lukaemon/bbh schema
    finetune: SourceSpec = SourceSpec()  # single-task sets for scenarios 1 and 3


class Params(StrictModel):
    """The whole params.yaml."""

    base: BaseParams = BaseParams()
    prepare: PrepareParams = PrepareParams()
    tokenize: TokenizeConfig = TokenizeConfig()


class ParamsError(ValueError):
    """Invalid params: ``lines`` each name a dotted key (or the file) and what is wrong."""

    def __init__(self, source: str, lines: list[str]):
        self.source = source
        self.lines = lines
        super().__init__(f"{source}: invalid params:\n" + "\n".join(f"  {ln}" for ln in lines))


def parse_params(data: object, source: str = "<params>") -> Params:
    """Validate a parsed params mapping; raise ``ParamsError`` naming every bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(source, [f"<root>: must be a mapping of sections, got {type(data).__name__}"])
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        raise ParamsError(source, format_validation_error(e)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate a params.yaml file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(str(path), [f"{path}: file not found"])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(str(path), [f"{path}: not valid YAML: {e}"]) from None
    return parse_params(data, str(path))


def load_params_or_exit(path: str | Path = DEFAULT_PARAMS) -> Params:
    """``load_params``, or print the error and exit with status 2 (for stage entry points)."""
    try:
        return load_params(path)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def flatten(obj: object, prefix: str = "") -> dict[str, object]:
    """Nested params as ``{"a.b.c": value}`` (for MLflow params)."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    out: dict[str, object] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix.rstrip(".")] = obj
    return out
