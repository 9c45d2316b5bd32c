"""Reading a config: YAML from a file, and every problem pydantic finds in it reported as one
line that names the key and the fix (the validation itself: pipeline.parse_config)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from train_pipeline.config.values import ConfigError

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _loc(err: Mapping[str, Any]) -> str:
    # Drop pydantic's union-branch tags ('str', 'DatasetSpec', 'function-after[...]').
    loc = list(err["loc"])
    key = [loc.pop()] if err["type"] == "extra_forbidden" and loc else []  # the user's key, whatever it looks like
    parts = [p for p in loc if not (isinstance(p, str) and (p[:1].isupper() or "[" in p or p in ("str", "bool", "int")))] + key
    # A key from the YAML may hold anything (a newline, a dot): quote it, so the message stays one line.
    return ".".join(str(p) if isinstance(p, int) or _PLAIN_KEY.fullmatch(p) else repr(p) for p in parts) or "config"


def _shown(value: Any, limit: int = 120) -> str:
    """``repr(value)``, cut short: a wrong value may be a whole list of files."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key; check its spelling (see configs/sample.yaml and the README for the keys)"
    if kind == "missing":
        return "required key is missing; add it"
    if kind == "tuple_type":
        return f"expected a list (got {_shown(err.get('input'))}); write it as [a, b] or one '- item' per line"
    if kind in ("string_type", "int_type", "int_parsing", "bool_type", "float_type", "float_parsing", "model_type", "dict_type"):
        return f"{msg} (got {_shown(err.get('input'))}); fix the value's type"
    if kind == "finite_number":
        return f"{msg} (got {_shown(err.get('input'))}); write a number"
    return msg


_NOT_A_MAPPING = frozenset({"model_type", "dict_type", "model_attributes_type"})


def format_validation_error(exc: ValidationError, source: str) -> str:
    errors = [(_loc(err), err) for err in exc.errors()]
    seen: dict[str, str] = {}
    for loc, err in errors:
        # A union (str | DatasetSpec) reports each branch; keep the dataset branch's details.
        # Its own model validator's error (two files with one name) sits at the same place; a value
        # that is neither a name nor a mapping keeps the name's message.
        if err["type"] == "string_type" and any(
                o is not err and (other.startswith(loc + ".") or (other == loc and o["type"] not in _NOT_A_MAPPING))
                for other, o in errors):
            continue
        seen.setdefault(loc, _message(err))
    return f"{source}: " + "; ".join(f"{k}: {v}" for k, v in seen.items())


def read_yaml(path: str | os.PathLike, what: str = "config file") -> Any:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(path)!r} not found; check the path (e.g. --config configs/sample.yaml)")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}:{where}: {problem}; fix the YAML syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be read ({exc.__class__.__name__}); check permissions and encoding") from None
