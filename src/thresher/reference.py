"""What users can configure, from the config models themselves: the stages with their options (``thresher stages``)
and a JSON Schema per config file (``thresher schema``), which editors use to check and complete YAML."""

from __future__ import annotations

import json
import sys
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticUndefined

KINDS = ("curate", "train", "eval", "compare")


def _stages() -> dict[str, type]:
    from thresher.curate.config import load_stages
    from thresher.curate.stage import REGISTRY

    load_stages()
    return dict(sorted(REGISTRY.items()))


def _summary(stage: type) -> str:
    """The first sentence of a stage's module docstring, less its ````name``: `` prefix."""
    doc = (sys.modules[stage.__module__].__doc__ or "").strip()
    first = doc.split("\n\n", 1)[0].replace("\n", " ")
    first = first.split(": ", 1)[1] if first.startswith("``") and ": " in first else first
    return first.split(". ", 1)[0].rstrip(".") + "."


def _kind(stage: type) -> str:
    from thresher.curate.stage import GeneratorStage, GlobalStage

    return "global" if issubclass(stage, GlobalStage) else "generator" if issubclass(stage, GeneratorStage) else "map"


def stage_list() -> str:
    """One line per stage: name, kind (map, generator, global) and what it does."""
    stages = _stages()
    width = max(map(len, stages))
    return "\n".join(f"{name:<{width}}  {_kind(cls):<9}  {_summary(cls)}" for name, cls in stages.items())


def _type_name(annotation) -> str:
    """A field's type as users write it: ``list[str] | all | null``, ``redact | mask | hash``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (Union, UnionType):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "null"
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> Any:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "(required)"
    value = field.get_default(call_default_factory=True)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def stage_page(name: str) -> str:
    """A stage's options (type, default, description) and an example of it in a curation config."""
    from thresher.core.config import ConfigError

    stages = _stages()
    if name not in stages:
        raise ConfigError(f"stages: unknown stage {name!r} (known: {', '.join(stages)})")
    cls = stages[name]
    rows = []
    for option, field in cls.Config.model_fields.items():
        if field.exclude:
            continue
        rows.append(f"  {option}: {_type_name(field.annotation)} = {json.dumps(_default(field), default=str)}"
                    + (f"\n      {field.description}" if field.description else ""))
    example = {"stages": [{name: {}}]}
    return "\n".join([f"{name} ({_kind(cls)} stage): {_summary(cls)}", "", "options:", *(rows or ["  (none)"]), "",
                      "example:", yaml.safe_dump(example, sort_keys=False).rstrip()])


class _ConfigSchema(GenerateJsonSchema):
    """Field schemas as lenient as the validators that run before a field's type check: a list field with one also
    takes its item alone (``fields: text``), another field also a plain scalar (``verify: true``)."""

    def function_before_schema(self, schema):
        inner = super().function_before_schema(schema)
        if "$ref" in inner or inner.get("type") == "object":
            return inner
        alternatives = inner.get("anyOf", [inner])
        arrays = [a for a in alternatives if a.get("type") == "array" and "items" in a]
        extra = [a["items"] for a in arrays] if arrays else [{"type": ["string", "number", "boolean"]}]
        kept = {k: v for k, v in inner.items() if k in ("default", "description", "title")}
        return {**kept, "anyOf": [*alternatives, *extra]} if "anyOf" in inner else {
            **kept, "anyOf": [{k: v for k, v in inner.items() if k not in kept}, *extra]}


def _model_schema(model: type[BaseModel]) -> dict:
    return model.model_json_schema(schema_generator=_ConfigSchema)


def _prefixed(schema: dict, prefix: str) -> tuple[dict, dict]:
    """``schema`` with its ``$defs`` renamed ``<prefix>.<name>`` (so stages' models of one name do not clash)."""
    defs = schema.pop("$defs", {})
    text = json.dumps(schema)
    defs_text = json.dumps(defs)
    for name in defs:
        text = text.replace(f'"#/$defs/{name}"', f'"#/$defs/{prefix}.{name}"')
        defs_text = defs_text.replace(f'"#/$defs/{name}"', f'"#/$defs/{prefix}.{name}"')
    return json.loads(text), {f"{prefix}.{k}": v for k, v in json.loads(defs_text).items()}


def config_schema(kind: str) -> dict:
    """The JSON Schema of a ``kind`` config file (``KINDS``)."""
    from thresher.core.config import ConfigError

    if kind == "train":
        from thresher.train.config import TrainConfig as model
    elif kind == "eval":
        from thresher.evaluate.eval_config import EvalConfig as model
    elif kind == "compare":
        from thresher.evaluate.compare import CompareConfig as model
    elif kind == "curate":
        from thresher.curate.config import CurateConfig as model
    else:
        raise ConfigError(f"schema: unknown config kind {kind!r} (one of {', '.join(KINDS)})")
    if kind != "curate":
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_model_schema(model)}
    schema = _model_schema(model)
    defs = schema.setdefault("$defs", {})
    for name in [n for n in defs if n in ("StageSpec", "StageConfig")]:
        del defs[name]
    choices = [{"enum": list(_stages())}]
    for name, cls in _stages().items():
        options, extra = _prefixed(_model_schema(cls.Config), name)
        defs.update(extra)
        defs[name] = options
        choices.append({"type": "object", "properties": {name: {"anyOf": [{"$ref": f"#/$defs/{name}"},
                                                                          {"type": "null"}]}},
                        "required": [name], "additionalProperties": False})
    schema["properties"]["stages"] = {"type": "array", "items": {"oneOf": choices}, "default": [],
                                      "description": "the stages, in order: a name, or {name: options}"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
