"""The ``thresher tune`` config: a base training config, the validation metric to optimise, a search space over
training-config keys, the search algorithm, the ASHA scheduler and the output folder.

```yaml
train: examples/train_smollm2_lora.yaml   # the base training config: a mapping or a YAML file
metric: eval_loss                         # a validation metric training reports at each evaluation
mode: min
space:                                    # dotted training-config keys: one distribution each
  optim.lr: {loguniform: [1.0e-5, 1.0e-3]}
  lora.r: {choice: [4, 8, 16]}
search: random                            # or tpe (Optuna's Tree-structured Parzen Estimator)
scheduler: {asha: {grace_period: 10, reduction_factor: 2}}
num_samples: 8
output: {path: out/tune}
```

With ``curate:`` (a base curation config, mapping or YAML file) the space may also hold curation choices:
``curate.drop.STAGE: {choice: [false, true]}`` leaves a stage out, ``curate.set.STAGE.KEY...: {choice: [...]}`` sets
one of its options. Every combination of them is curated before the trials (:mod:`thresher.evaluate.curation`: the
stages the combinations share are curated once), and a trial trains on its combination's ``train`` split; all
trials are measured on the base's ``data.validation``, which every chain must decontaminate against.

:func:`check` checks every key of the space against the training config's schema, the type of its distribution
against the key's (no ``uniform`` or ``loguniform`` on an integer key) and every value it can take (a ``choice``'s
values, a range's ends) against the whole training config, before any Ray work: a wrong key or value is a
ConfigError naming ``space.KEY``. A section of the space may be nested (``space: {optim: {lr: {...}}}`` is
``optim.lr``), as ``--set space.optim.lr=...`` writes it.
"""

from __future__ import annotations

import itertools
import json
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from thresher.core.config import ConfigError, StrictModel, load_yaml, validate
from thresher.evaluate.curation import CurationChange, chain
from thresher.train.config import TrainConfig

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
CONTINUOUS = ("loguniform", "uniform")  # sample fractional numbers
CURATE = "curate."  # space keys that change the curation (compare's CurationChange: drop.STAGE, set.STAGE.KEY...)


class Dimension(StrictModel):
    """One key's distribution: exactly one of ``loguniform``, ``uniform``, ``randint`` (``[low, high]``; randint's
    high is excluded) or ``choice`` (the values)."""

    loguniform: tuple[float, float] | None = Field(None, description="[low, high], sampled uniformly in log space")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]")
    randint: tuple[int, int] | None = Field(None, description="[low, high): an integer")
    choice: list[Any] | None = Field(None, min_length=1, description="the values, one picked")

    @model_validator(mode="after")
    def _one(self):
        given = [name for name in DISTRIBUTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DISTRIBUTIONS)}")
        if self.choice is None:
            low, high = getattr(self, given[0])
            if not low < high or (self.loguniform and low <= 0):
                raise ValueError(f"{given[0]}: [low, high] with low < high{' and low > 0' if self.loguniform else ''}")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in DISTRIBUTIONS if getattr(self, name) is not None)

    def values(self) -> list[Any]:
        """The values checked against the training config: each choice, or a range's ends."""
        if self.choice is not None:
            return self.choice
        low, high = getattr(self, self.kind)
        return [low, high - 1] if self.randint else [low, high]


class AshaOptions(StrictModel):
    grace_period: int = Field(1, gt=0, description="steps before a trial can be stopped: the first rung")
    reduction_factor: float = Field(
        2,
        gt=1,
        description="rungs at grace_period x reduction_factor^k steps; at each "
        "a trial goes on only if in the best 1/reduction_factor of the trials there",
    )


class SchedulerOptions(StrictModel):
    asha: AshaOptions = Field(description="asynchronous successive halving over the evaluations training reports")


class TuneOutput(StrictModel):
    path: str = Field(description="tune.json, tune.html, best_config.yaml, best/, trials/ and search/ (Ray Tune)")

    @field_validator("path")
    @classmethod
    def _local(cls, path: str) -> str:
        if "://" in path:
            raise ValueError("the search state and trial folders are written on the driver's disk: give a local path")
        return path


class TuneConfig(StrictModel):
    curate: dict[str, Any] | str | None = Field(
        None,
        description=(
            "a base curation config, or its YAML file: the space's curate.drop.STAGE and curate.set.STAGE.KEY "
            "choices change it, and each trial trains on its combination's curated train split"
        ),
    )
    train: dict[str, Any] | str = Field(description="the base training config, or its YAML file (output: per trial)")
    metric: Literal["eval_loss", "eval_perplexity", "eval_reward_accuracy", "eval_reward_margin"] = Field(
        "eval_loss", description="the validation metric optimised (reported at each evaluation of data.validation)"
    )
    mode: Literal["min", "max"] = Field("min", description="whether the best trial has the lowest or highest metric")
    space: dict[str, Dimension] = Field(
        min_length=1,
        description="dotted training-config keys, one distribution "
        "each: {loguniform|uniform|randint: [low, high]} or {choice: [values]}; with curate, also "
        "curate.drop.STAGE and curate.set.STAGE.KEY choices",
    )
    search: Literal["random", "tpe"] = Field("random", description="random sampling, or Optuna's TPE (model-based)")
    scheduler: SchedulerOptions | None = Field(
        None,
        description="stop unpromising trials early (needs the base's "
        "eval.every_steps); null: every trial runs to its end",
    )
    num_samples: int = Field(8, gt=0, description="trials")
    max_concurrent_trials: int | None = Field(
        None,
        gt=0,
        description="default: as many trials as the cluster's "
        "resources fit (each trial's scaling; on CPUs without "
        "scaling.resources_per_worker a trial takes all CPUs but one: 1)",
    )
    seed: int = Field(0, description="seed of the search algorithm's sampling")
    output: TuneOutput = Field(description="where the outputs go")

    @field_validator("space", mode="before")
    @classmethod
    def _dotted(cls, space):
        return _flatten(space) if isinstance(space, dict) else space


def _flatten(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The space with its nested sections as dotted keys: ``{optim: {lr: {...}}}`` is ``{optim.lr: {...}}`` (what
    ``--set space.optim.lr=...`` makes)."""
    flat: dict[str, Any] = {}
    for key, value in space.items():
        nested = _flatten(value, f"{prefix}{key}.") if _is_section(value) else {f"{prefix}{key}": value}
        for dotted, dimension in nested.items():
            if dotted in flat:
                raise ValueError(f"{dotted}: given twice (as a dotted key and in a section)")
            flat[dotted] = dimension
    return flat


def _is_section(value: Any) -> bool:
    """Whether a space value is a section of keys rather than a distribution: a mapping of mappings, none of its
    keys a distribution's name."""
    return (
        isinstance(value, dict)
        and bool(value)
        and not set(value) & set(DISTRIBUTIONS)
        and all(isinstance(v, dict) for v in value.values())
    )


def _field_model(annotation) -> type[BaseModel] | None:
    """The config model a field holds (``Options`` or ``Options | None``, not a list of them), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        return next((m for a in get_args(annotation) if (m := _field_model(a))), None)
    return None


def check_key(key: str) -> FieldInfo:
    """The field of the training config's schema that ``key`` names; a ConfigError unless it is a leaf."""
    model: type[BaseModel] | None = TrainConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if model is None or part not in model.model_fields:
            raise ConfigError(f"space.{key}: no key {'.'.join(parts[: i + 1])} in the training config")
        field = model.model_fields[part]
        model = _field_model(field.annotation)
    if model is not None:
        raise ConfigError(f"space.{key}: a section of the training config; search one of its keys")
    return field


def check_kind(key: str, dimension: Dimension, field: FieldInfo) -> None:
    """A ConfigError when ``dimension`` samples values of a type ``field`` does not take: a continuous distribution
    on an integer key (its ends alone may be valid values)."""
    if dimension.kind not in CONTINUOUS:
        return
    try:
        TypeAdapter(field.annotation).validate_python(0.5)
    except ValidationError:
        raise ConfigError(
            f"space.{key}: {dimension.kind} samples fractional numbers, which {key} does not take: "
            "use randint or choice"
        ) from None


def with_params(base: dict, params: dict[str, Any]) -> dict:
    """``base`` with each dotted key of ``params`` set (sections created where missing)."""
    merged = _copy(base)
    for key, value in params.items():
        node = merged
        *path, last = key.split(".")
        for part in path:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return merged


def _copy(data):
    return {k: _copy(v) for k, v in data.items()} if isinstance(data, dict) else data


def base_train(cfg: TuneConfig) -> dict:
    """The base training config mapping (read from its file when given as a path)."""
    if isinstance(cfg.train, dict):
        return cfg.train
    try:
        return load_yaml(cfg.train)
    except ConfigError as e:
        raise ConfigError(f"train: {e}") from None


def curation_change(params: dict[str, Any]) -> CurationChange:
    """The curation change of a trial's ``curate.*`` values: stages dropped, options set (nested by the key's dots)."""
    drop, options = [], {}
    for key, value in params.items():
        kind, stage, *path = key.removeprefix(CURATE).split(".")
        if kind == "drop" and value:
            drop.append(stage)
        elif kind == "set":
            node = options.setdefault(stage, {})
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
    return CurationChange(drop=drop, set=options)


def combination(params: dict[str, Any]) -> str:
    """The key of a trial's curation choices (its ``curate.*`` values)."""
    return json.dumps({k: v for k, v in sorted(params.items()) if k.startswith(CURATE)})


def combinations(cfg: TuneConfig) -> list[dict[str, Any]]:
    """Every combination of the space's curation choices (one empty one without them)."""
    keys = [k for k in cfg.space if k.startswith(CURATE)]
    return [dict(zip(keys, values)) for values in itertools.product(*(cfg.space[k].choice or [] for k in keys))]


def base_curation(cfg: TuneConfig) -> dict[str, Any] | None:
    """The base curation config, validated, as plain data; None without ``curate``."""
    from thresher.curate.config import parse_config

    if cfg.curate is None:
        return None
    try:
        return parse_config(cfg.curate if isinstance(cfg.curate, dict) else load_yaml(cfg.curate)).dump()
    except ConfigError as e:
        raise ConfigError(f"curate.{e}") from None


def _check_curation(cfg: TuneConfig, validation: str) -> None:
    """Every curation key of the space: a choice of a known form, each value a valid chain, and every combination's
    chain decontaminated against the fixed validation data."""
    import os

    base = base_curation(cfg)
    for key, dimension in cfg.space.items():
        if not key.startswith(CURATE):
            continue
        if base is None:
            raise ConfigError(f"space.{key}: needs a base curation config (curate)")
        parts = key.removeprefix(CURATE).split(".")
        if not (parts[0] == "drop" and len(parts) == 2 or parts[0] == "set" and len(parts) >= 3):
            raise ConfigError(f"space.{key}: curation keys are curate.drop.STAGE or curate.set.STAGE.KEY")
        if dimension.choice is None:
            raise ConfigError(f"space.{key}: a curation key takes a choice (every value is curated before the trials)")
        for value in dimension.choice:
            chain(base, curation_change({key: value}), f"space.{key}: value {value!r}: curate")
    if base is None:
        return
    for params in combinations(cfg):
        stages = chain(base, curation_change(params), "curate")
        references = [os.path.abspath(r) for _, s in stages for r in s.get("decontaminate", {}).get("references", [])]
        if os.path.abspath(validation) not in references:
            raise ConfigError(
                f"curate: the chain {combination(params)} does not decontaminate against train.data.validation "
                f"{validation} (every trial is measured on it: add it to a decontaminate stage's references)"
            )


def check(cfg: TuneConfig, base: dict) -> TrainConfig:
    """Validate the base training config and every key and value of the space; returns the validated base."""
    placeholder = {"output": {"path": cfg.output.path}}
    train = validate(TrainConfig, {**base, **placeholder}, prefix="train")
    if not train.data.validation:
        raise ConfigError(f"train.data.validation: the search optimises {cfg.metric}, measured on data.validation")
    if cfg.scheduler and not train.eval.every_steps:
        raise ConfigError(
            "train.eval.every_steps: the asha scheduler compares trials at their evaluations; set eval.every_steps"
        )
    _check_curation(cfg, train.data.validation)
    for key, dimension in cfg.space.items():
        if key.startswith(CURATE):
            continue
        check_kind(key, dimension, check_key(key))
        for value in dimension.values():
            try:
                validate(TrainConfig, with_params({**base, **placeholder}, {key: value}))
            except ConfigError as e:
                raise ConfigError(f"space.{key}: value {value!r}: {str(e).removeprefix('invalid config: ')}") from None
    return train
