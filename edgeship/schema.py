"""The pydantic base every typed config shares (recipe, pass configs, device profiles, the run record)
and the one formatter that turns a validation error into the line a user reads."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Unknown keys are errors: a misspelt option must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Walk ``loc`` through the schema; return the field names allowed at its parent."""
    cls: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        ann = cls.model_fields[part].annotation
        for _ in range(3):  # unwrap Optional[...] / list[...] / dict[str, ...]
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                break
            ann = args[-1] if args else ann
        cls = ann
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    return None


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    """The first problem of ``err`` as one line (``source: key: what is wrong``), with the allowed keys
    for an unknown one and a count of the others."""
    e = err.errors()[0]
    loc = tuple(e["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if e["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        msg = f"{source}: unknown key '{key}'{hint}"
    elif e["type"] == "missing":
        msg = f"{source}: missing required key '{key}'"
    else:
        text = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        msg = f"{source}: {key}: {text}{shown}"
    more = len(err.errors()) - 1
    return msg + (f" [+{more} more problem{'s' if more > 1 else ''}]" if more else "")
