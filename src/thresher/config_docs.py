"""What users can configure, from the config models themselves: the stages with their options (``thresher stages``),
a JSON Schema per config file (``thresher schema``), which editors use to check and complete YAML, and the
Markdown of the reference pages in ``docs/`` (``docs/generate.py`` writes them, ``tests/test_docs.py`` checks that
the committed pages are current)."""

from __future__ import annotations

import inspect
import json
import re
import sys
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticUndefined

KINDS = ("curate", "train", "eval", "compare", "tune")


def _stages() -> dict[str, type]:
    from thresher.curate.config import load_stages
    from thresher.curate.stage import REGISTRY

    load_stages()  # stages registered from elsewhere (tests' fault-injecting ones) are not thresher's
    return dict(sorted((n, c) for n, c in REGISTRY.items() if c.__module__.startswith("thresher.")))


def _summary(stage: type) -> str:
    """The first sentence of a stage's module docstring, less its ````name``: `` prefix."""
    doc = (sys.modules[stage.__module__].__doc__ or "").strip()
    first = doc.split("\n\n", 1)[0].replace("\n", " ")
    first = first.split(": ", 1)[1] if first.startswith("``") and ": " in first else first
    return first.split(". ", 1)[0].rstrip(".") + "."


def _kind(stage: type) -> str:
    from thresher.curate.stage import GeneratorStage, GlobalStage

    return "global" if issubclass(stage, GlobalStage) else "generator" if issubclass(stage, GeneratorStage) else "map"


def plain(text: str) -> str:
    """A docstring's reStructuredText-flavoured prose as terminal text: ````code```` and ``:mod:`x``` become ``x``."""
    return _CODE_SPAN.sub(lambda m: m.group(2).strip(), _ROLE.sub(r"\1", text))


def stage_list() -> str:
    """One line per stage: name, kind (map, generator, global) and what it does."""
    stages = _stages()
    width = max(map(len, stages))
    return "\n".join(f"{name:<{width}}  {_kind(cls):<9}  {plain(_summary(cls))}" for name, cls in stages.items())


def _type_name(annotation) -> str:
    """A field's type as users write it: ``list[str] | all | null``, ``redact | mask | hash``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:  # a validated type (StorageUri) reads as the type it validates
        return _type_name(args[0])
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
        rows.append(
            f"  {option}: {_type_name(field.annotation)} = {json.dumps(_default(field), default=str)}"
            + (f"\n      {plain(field.description)}" if field.description else "")
        )
    example = {"stages": [{name: {}}]}
    return "\n".join(
        [
            f"{name} ({_kind(cls)} stage): {plain(_summary(cls))}",
            "",
            "options:",
            *(rows or ["  (none)"]),
            "",
            "example:",
            yaml.safe_dump(example, sort_keys=False).rstrip(),
        ]
    )


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
        return (
            {**kept, "anyOf": [*alternatives, *extra]}
            if "anyOf" in inner
            else {**kept, "anyOf": [{k: v for k, v in inner.items() if k not in kept}, *extra]}
        )


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


def config_model(kind: str) -> type[BaseModel]:
    """The config model of a ``kind`` config file (``KINDS``)."""
    from thresher.core.config import ConfigError

    if kind == "train":
        from thresher.train.config import TrainConfig as model
    elif kind == "eval":
        from thresher.evaluate.eval_config import EvalConfig as model
    elif kind == "compare":
        from thresher.evaluate.compare import CompareConfig as model
    elif kind == "tune":
        from thresher.evaluate.tune_config import TuneConfig as model
    elif kind == "curate":
        from thresher.curate.config import CurateConfig as model
    else:
        raise ConfigError(f"schema: unknown config kind {kind!r} (one of {', '.join(KINDS)})")
    return model


def config_schema(kind: str) -> dict:
    """The JSON Schema of a ``kind`` config file (``KINDS``)."""
    model = config_model(kind)
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
        choices.append(
            {
                "type": "object",
                "properties": {name: {"anyOf": [{"$ref": f"#/$defs/{name}"}, {"type": "null"}]}},
                "required": [name],
                "additionalProperties": False,
            }
        )
    schema["properties"]["stages"] = {
        "type": "array",
        "items": {"oneOf": choices},
        "default": [],
        "description": "the stages, in order: a name, or {name: options}",
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# -- Markdown reference pages (docs/stages/*.md, the key tables of docs/config/*.md and docs/outputs.md) ---------------
# Everything here is a function of the code alone (models, docstrings, registries), so the pages are the same on every
# machine and every run: tests/test_docs.py regenerates them and names any committed page that differs.

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_ROLE = re.compile(r":(?:mod|meth|func|class|data|attr|obj):`~?([^`]+)`")


def markdown(text: str) -> str:
    """A docstring's reStructuredText-flavoured prose as Markdown: ````code```` and ``:mod:`x``` become `` `x` ``; a
    ``<`` outside code that would open an HTML tag is escaped."""
    text = _ROLE.sub(r"``\1``", inspect.cleandoc(text))
    out, last = [], 0
    for m in _CODE_SPAN.finditer(text):
        out.append(re.sub(r"<(?=[A-Za-z/!])", "&lt;", text[last : m.start()]))
        code = m.group(2)
        out.append(f"`` {code} ``" if "`" in code else f"`{code}`")
        last = m.end()
    out.append(re.sub(r"<(?=[A-Za-z/!])", "&lt;", text[last:]))
    return "".join(out)


def _models_in(annotation) -> list[type[BaseModel]]:
    """The config models an annotation holds (``Options``, ``list[Options]``, ``Options | None``, ...)."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _models_in(a)]


def _doc_type(annotation) -> str:
    """A field's type for the docs: as ``_type_name``, with a nested model called ``mapping`` (its keys follow)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "mapping"
    if origin is Annotated:
        return _doc_type(args[0])
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (Union, UnionType):
        return " | ".join(dict.fromkeys(_doc_type(a) for a in args))
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_doc_type(a) for a in args)}]"
    return _type_name(annotation)


def _constraints(field) -> list[str]:
    out = []
    for m in field.metadata:
        for attr, shown in (
            ("gt", "> {}"),
            ("ge", ">= {}"),
            ("lt", "< {}"),
            ("le", "<= {}"),
            ("min_length", "at least {}"),
            ("max_length", "at most {}"),
            ("pattern", "matches `{}`"),
        ):
            value = getattr(m, attr, None)
            if value is not None:
                power = isinstance(value, int) and value >= 1 << 16 and value & (value - 1) == 0
                out.append(shown.format(f"2**{value.bit_length() - 1}" if power else value))
    return out


def _plain(value):
    """A default as YAML shows it: sets sorted, models as mappings."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _yaml(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


def _doc_default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = _plain(field.get_default(call_default_factory=True))
    for model in _models_in(field.annotation):
        try:
            if value == model().model_dump(mode="json"):
                return "`{}`"
        except Exception:  # a model with required keys has no defaults to compare with
            pass
    return f"`{_yaml(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def options_markdown(
    model: type[BaseModel],
    prefix: str = "",
    level: int = 3,
    extra: dict[str, type[BaseModel]] | None = None,
    seen: dict | None = None,
) -> str:
    """A table of ``model``'s keys (dotted from ``prefix``): type, default, description; then a section per nested
    model (its docstring and its own table, or a pointer to where the same model was shown), and per ``extra``
    entry (a key whose options a plain mapping holds)."""
    seen = {} if seen is None else seen
    rows, nested = [], []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{name}"
        kind = _doc_type(field.annotation)
        limits = _constraints(field)
        if limits:
            kind += f" ({', '.join(limits)})"
        rows.append(
            f"| `{key}` | {_cell(kind)} | {_cell(_doc_default(field))} | {_cell(markdown(field.description or ''))} |"
        )
        models = _models_in(field.annotation)
        for sub in models:
            is_list = any(
                get_origin(a) is list and sub in get_args(a) for a in [field.annotation, *get_args(field.annotation)]
            )
            label = f"{key}[]" if is_list else key
            if len(models) > 1:
                label += f" ({sub.__name__})"
            nested.append((label, f"{key}[]." if is_list else f"{key}.", sub))
    for label, sub in (extra or {}).items():
        nested.append((label, f"{label}.", sub))
    if not rows:
        return "(no options)"
    parts = ["| key | type | default | description |", "|---|---|---|---|", *rows]
    for label, sub_prefix, sub in nested:
        parts += ["", f"{'#' * level} `{label}`", ""]
        if sub in seen:
            parts.append(f"The same keys as `{seen[sub]}` above.")
            continue
        seen[sub] = label
        doc = sub.__dict__.get("__doc__")
        if doc:
            parts += [markdown(doc), ""]
        parts.append(options_markdown(sub, sub_prefix, min(level + 1, 6), seen=seen))
    return "\n".join(parts)


def _extra_sections(name: str) -> dict[str, type[BaseModel]]:
    """Options a stage validates from a plain mapping (not reachable through its config model's fields)."""
    if name == "augment":
        from thresher.curate.augment.config import OPTIONS

        return {f"methods[].{method}": options for method, options in OPTIONS.items()}
    return {}


GENERATED_NOTE = "<!-- generated by docs/generate.py from the code: edit the code, then run python docs/generate.py -->"


def stage_markdown(name: str, example: str | None = None) -> str:
    """A stage's page: its module docstring (the stage's documentation), every option with type, default and
    description, and a YAML example (``example``: the YAML text to show; default: the stage with its defaults)."""
    stages = _stages()
    cls = stages[name]
    doc = markdown(sys.modules[cls.__module__].__doc__ or "")
    doc = re.sub(rf"^`{re.escape(name)}`: ", "", doc)
    doc = doc[:1].upper() + doc[1:]
    kind = _kind(cls)
    what = {
        "map": "a map stage: it runs on each batch of records, fused into the tasks that read them",
        "generator": "a generator stage: a map stage that may add records",
        "global": "a global stage: it decides on compact key rows of every record; it runs once per pipeline",
    }[kind]
    source = "src/" + cls.__module__.replace(".", "/") + ".py"
    example = example or yaml.safe_dump({"stages": [{name: {}}]}, sort_keys=False, default_flow_style=None)
    return "\n".join(
        [
            GENERATED_NOTE,
            "",
            f"# `{name}`",
            "",
            f"Kind: {what}. Source: [`{source}`](../../{source}).",
            "",
            doc,
            "",
            "## Options",
            "",
            options_markdown(cls.Config, level=3, extra=_extra_sections(name)),
            "",
            "## Example",
            "",
            "```yaml",
            example.rstrip(),
            "```",
            "",
            f"`thresher stages {name}` prints the options on the terminal; `thresher schema curate` gives editors the same "
            "keys.",
            "",
        ]
    )


def stages_index_markdown() -> str:
    """``docs/stages/README.md``: every stage with its kind and one line."""
    rows = [
        f"| [`{name}`]({name}.md) | {_kind(cls)} | {_cell(markdown(_summary(cls)))} |"
        for name, cls in _stages().items()
    ]
    return "\n".join(
        [
            GENERATED_NOTE,
            "",
            "# Stages",
            "",
            "A curation config lists its stages in order under `stages:`, each as `name: {options}` (or the bare name "
            "for the defaults). A map stage may appear more than once: the second `filter` is counted, rejected and gated "
            "as `filter-2`. A global stage runs once per pipeline. `unique_ids` is added by the runner before the first "
            "global stage (`input.unique_ids`).",
            "",
            "Kinds: **map** stages run on batches of records inside the tasks that read them; **generator** stages are "
            "map stages that may add records; **global** stages decide on compact key rows of every record (see "
            "[concepts](../concepts.md#the-data-path)).",
            "",
            "| stage | kind | what it does |",
            "|---|---|---|",
            *rows,
            "",
            "`thresher stages` prints this list, `thresher stages NAME` one stage's options. The pages are generated "
            "from each stage's module docstring and config model; to add a stage, see "
            "[adding a stage](../adding-a-stage.md).",
            "",
        ]
    )


def config_section_markdown(kind: str, section: str) -> str:
    """The key table of one section of a ``kind`` config file (``.``: the top-level keys, without their sections'
    keys)."""
    model = config_model(kind)
    if section == ".":
        rows = []
        for name, field in model.model_fields.items():
            kind_name = _doc_type(field.annotation)
            if name == "stages" and kind == "curate":
                kind_name = "list[stage]"
            rows.append(
                f"| `{name}` | {_cell(kind_name)} | {_cell(_doc_default(field))} | "
                f"{_cell(markdown(field.description or ''))} |"
            )
        return "\n".join(["| key | type | default | description |", "|---|---|---|---|", *rows])
    field = model.model_fields[section]
    models = _models_in(field.annotation)
    if len(models) != 1:
        raise ValueError(f"{kind} config: {section} is not one section")
    listed = get_origin(field.annotation) is list
    return options_markdown(models[0], f"{section}[]." if listed else f"{section}.", level=4)


def config_sections(kind: str) -> list[str]:
    """The sections of a ``kind`` config file that have keys of their own (each gets a table)."""
    model = config_model(kind)
    return [
        name
        for name, field in model.model_fields.items()
        if len(_models_in(field.annotation)) == 1 and not (kind == "curate" and name == "stages")
    ]


def report_sections_markdown() -> str:
    """The sections of ``report.json`` (its keys) and ``report.html``, in their order (a section with nothing to say
    is left out of both)."""
    from thresher.curate.report import sections

    rows = [f"| `{s.name}` | {s.title} | `src/{type(s).__module__.replace('.', '/')}.py` |" for s in sections()]
    return "\n".join(["| key in report.json | title in report.html | code |", "|---|---|---|", *rows])
