"""YAML config loading, ``--set`` overrides and validation errors that name the offending key."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(Exception):
    """A usage or config error: the CLI exits with code 2 and prints this message."""


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in: mappings key by key, anything else replaced."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = (
            merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (YAML-typed values); list items are addressed by index: a stage's option as
    ``stages.0.x`` or, as error messages name it, ``stages.0.NAME.x``."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        value = yaml.safe_load(raw) if raw else None
        parts = key.split(".")
        node: Any = data
        stage = None  # the name of the stage entry whose options the last step entered
        for part in parts[:-1]:
            if part == stage:
                stage = None  # stages.0.NAME.x: the index already entered NAME's options
                continue
            stage = _stage_name(node, part)
            node = _child(node, part, key, create=True)
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, key)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])} is not a mapping")
    return data


def _stage_name(node: Any, part: str) -> str | None:
    """The name of the stage entry ``{name: options}`` at index ``part`` of the list ``node``, if it is one."""
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        item = node[int(part)]
        if isinstance(item, dict) and len(item) == 1:
            name: str = next(iter(item))
            return name
    return None


def _index(node: list[Any], part: str, key: str) -> int:
    try:
        i = int(part)
        node[i]
        return i
    except (ValueError, IndexError):
        raise ConfigError(f"--set {key}: {part!r} is not a valid list index") from None


def _child(node: Any, part: str, key: str, create: bool) -> Any:
    if isinstance(node, list):
        item = node[_index(node, part, key)]
        # a stage entry {name: options} is addressed by its position, then its options directly
        if isinstance(item, dict) and len(item) == 1:
            ((name, opts),) = item.items()
            if opts is None:
                item[name] = opts = {}
            return opts
        return item
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            if not create:
                raise ConfigError(f"--set {key}: no key {part!r}")
            node[part] = {}
        return node[part]
    raise ConfigError(f"--set {key}: cannot descend into {part!r}")


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the dotted key path."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "<root>")
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{path}: {msg}")
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
