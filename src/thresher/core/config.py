"""YAML config loading, ``--set`` overrides and validation errors that name the offending key."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(Exception):
    """A usage or config error: the CLI exits with code 2 and prints this message."""


class StrictModel(BaseModel):
    """Base for every config model: unknown keys and numbers that are not finite (.nan, .inf) are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start} cannot be decoded)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror}") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def parse_yaml(text: str, where: str) -> Any:
    """``text`` as YAML; an error names ``where``, the line and the column, never the text (it may hold a secret)."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = _without_text(e.problem or e.context or "syntax error")
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{where}: invalid YAML") from None


_QUOTED = re.compile(r"'([^']*)'")


def _without_text(problem: str) -> str:
    """A YAML problem with quoted document text (a tag, an alias) left out; token names such as '<stream end>' and
    single characters such as ':' stay."""
    return _QUOTED.sub(lambda m: m[0] if len(m[1]) <= 2 or m[1].startswith("<") else "'...'", problem)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in: mappings key by key, anything else replaced."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = (
            merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (YAML-typed values). List items are addressed by index; an entry
    ``{name: options}`` (a stage, an augment method) by its index, then its option: ``stages.0.x`` or, as error
    messages name it, ``stages.0.NAME.x``. A key that itself holds dots (a tune space's ``optim.lr``) is matched
    whole where it exists."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        _set(data, key, parse_yaml(raw, f"--set {key}") if raw else None)
    return data


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` of ``data`` to ``value``, creating the mappings on its way."""
    parts = key.split(".")
    node: Any = data
    entry = None  # the name of the entry whose options the last step entered
    for i, part in enumerate(parts[:-1]):
        rest = ".".join(parts[i:])
        if isinstance(node, dict) and rest in node:
            node[rest] = value
            return
        if part == entry:
            entry = None  # stages.0.NAME.x: the index already entered NAME's options
            continue
        entry = _entry_name(node, part)
        node = _child(node, part, key)
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])} is not a mapping")


def _is_entry(item: Any) -> bool:
    """Whether a list item is an entry ``{name: options}``: one key, whose value is a mapping or null."""
    return isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), (dict, type(None)))


def _entry_name(node: Any, part: str) -> str | None:
    """The name of the entry ``{name: options}`` at index ``part`` of the list ``node``, if it is one."""
    if isinstance(node, list) and part.isdigit() and int(part) < len(node) and _is_entry(node[int(part)]):
        name: str = next(iter(node[int(part)]))
        return name
    return None


def _index(node: list[Any], part: str, key: str) -> int:
    try:
        i = int(part)
        node[i]
        return i
    except (ValueError, IndexError):
        raise ConfigError(f"--set {key}: {part!r} is not a valid list index") from None


def _child(node: Any, part: str, key: str) -> Any:
    """The value at ``part`` of ``node`` (an entry's options, a mapping created where missing)."""
    if isinstance(node, list):
        item = node[_index(node, part, key)]
        if _is_entry(item):
            ((name, options),) = item.items()
            if options is None:
                item[name] = options = {}
            return options
        return item
    if isinstance(node, dict):
        if node.get(part) is None:
            node[part] = {}
        return node[part]
    raise ConfigError(f"--set {key}: cannot descend into {part!r}")


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the dotted key path (a check of the whole config names its keys itself)."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "value_error":  # a validator's own words, without pydantic's "Value error, "
            msg = str(e["ctx"]["error"])
        else:
            msg = e["msg"]
        named = not path or msg.startswith((f"{path}.", f"{path}:"))  # the message names its key already
        lines.append(msg if named else f"{path}: {msg}")
    return "invalid config: " + "; ".join(lines)


def require_extra(modules: tuple[str, ...], key: str, extra: str) -> None:
    """A config error (exit 2) naming ``key`` and the extra to install when one of ``modules`` is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"{key}: needs {' and '.join(missing)} (pip install 'thresher[{extra}]')")


def validate(model: type[M], data: Any, prefix: str = "") -> M:
    """Validate ``data`` into ``model`` or raise ConfigError naming the key."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, prefix)) from None
