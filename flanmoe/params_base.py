"""The base every params model derives from, and the one formatter of validation errors.

Convention for cross-field checks (``model_validator(mode="after")``): raise
``ValueError("<field>: <message>")`` where ``<field>`` is the dotted name of the offending key
*relative to the model that checks it*. ``format_validation_error`` then prefixes the section path,
so the user reads e.g. ``pretrain.model.moe.decoder_router: expert_choice is encoder-only ...``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, ValidationError

_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_0-9][\w]*)*): (.*)$", re.S)


class StrictModel(BaseModel):
    """A params model: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def format_validation_error(err: ValidationError, prefix: str = "") -> list[str]:
    """Turn a pydantic ``ValidationError`` into lines ``dotted.key: message``.

    ``prefix`` is the path of the validated object inside params.yaml (e.g. ``"pretrain"``).
    """
    lines = []
    for e in err.errors():
        path = [prefix] if prefix else []
        path += [str(p) for p in e["loc"]]
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            m = _FIELD_PREFIX.match(msg)
            if m:  # a cross-field check named the key it is about
                path.append(m.group(1))
                msg = m.group(2)
        if (
            e["type"] not in ("extra_forbidden", "missing")
            and "input" in e
            and not isinstance(e["input"], dict | list)
        ):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{'.'.join(p for p in path if p) or '<root>'}: {msg}")
    return lines
