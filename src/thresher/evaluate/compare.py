"""``thresher compare``: train variants of one base training config (methods, datasets, their options) on Ray,
evaluate each the same way with ``thresher eval``'s code, and write ``<output>/compare.json`` and
``compare.html``: eval metrics with bootstrap intervals, validation loss, train wall time, tokens/s, trainable
parameters, peak memory and the size of the saved model, per variant; and each variant's paired test against the
first variant, the base, on the same test items (:func:`paired_tests`).

```yaml
train: examples/train_smollm2_lora.yaml     # the base training config: a mapping or a YAML file
eval: examples/eval_smollm2.yaml            # the eval config (its model and output are set per variant)
variants:                                   # each: the base + `set` (nested keys, merged into the base)
  - {name: lora, set: {method: lora}}
  - {name: full-zero2, set: {method: full, deepspeed: {stage: 2}, optim: {lr: 1.0e-5}}}
output: {path: out/compare}
```

With ``curate:`` (a base curation config, mapping or YAML file) the variants may change the data too: a variant's
``curate: {drop: [STAGE, ...], set: {STAGE: {option: value}}}`` changes the base chain, each variant's data is
curated (:mod:`thresher.evaluate.curation`: a prefix of stages shared by several variants is curated once) and its
training reads that run's ``train`` and ``validation`` splits. Every chain must decontaminate against the eval data
(a ``decontaminate`` stage whose ``references`` name it), so that all variants are measured on one held-out set.

Variant NAME trains into ``<output>/NAME`` (``model/``, ``metrics.json``, ``checkpoints/``) and is evaluated into
``<output>/NAME/eval``; ``<output>/NAME/variant.json``, written when both are done, records its configs and
results. A re-run skips a variant whose ``variant.json`` holds the same configs (and says so), trains one whose
output is incomplete (training resumes from its checkpoints) and refuses one whose configs changed. Before any
training, the data and model of every variant to train are checked as ``thresher train`` checks them
(:func:`check_inputs`).

Variants run one after another on one Ray session: a training run takes every CPU of the cluster but one (the
one left to Ray Data) or its ``scaling`` resources, so a second run at the same time would wait for it anyway.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from thresher.core.config import ConfigError, StrictModel, load_yaml, merge, validate
from thresher.core.console import current as console
from thresher.core.secrets import redact_data
from thresher.core.storage import Storage, join
from thresher.evaluate.curation import CurationChange, CurationRun, chain, data_paths, plan_runs
from thresher.evaluate.curation import curate as curate_runs
from thresher.evaluate.curation import summary as summarize
from thresher.evaluate.eval_config import EvalConfig
from thresher.evaluate.scoring import LOWER_IS_BETTER, counted, score_examples, statistic
from thresher.evaluate.slices import PROPORTIONS
from thresher.evaluate.stats import discordant, is_binary, mcnemar_exact, paired_bootstrap, verdict
from thresher.runtime import ray_session
from thresher.train.config import TrainConfig

VARIANT_RECORD, COMPARE_JSON, COMPARE_HTML = "variant.json", "compare.json", "compare.html"
SCHEDULE = "variants ran one after another (each training run takes the cluster's CPUs but one, or its GPUs)"


class Variant(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="also its output folder's name")
    set: dict[str, Any] = Field(default_factory=dict, description="overrides of the base training config")
    curate: CurationChange = Field(
        default_factory=CurationChange, description="changes to the base curation config (compare's curate)"
    )


class CompareOutput(StrictModel):
    path: str = Field(description="compare.json, compare.html and one folder per variant")

    @field_validator("path")
    @classmethod
    def _local(cls, path: str) -> str:
        if "://" in path:
            raise ValueError("compare evaluates the trained models from local disk: give a local path")
        return path


class CompareConfig(StrictModel):
    curate: dict[str, Any] | str | None = Field(
        None,
        description=(
            "a base curation config, or its YAML file: each variant's data is curated from it (with the variant's "
            "curate changes) and trained on from that run's splits"
        ),
    )
    train: dict[str, Any] | str = Field(description="the base training config, or its YAML file")
    eval: dict[str, Any] | str = Field(description="the eval config, or its YAML file (model, output: per variant)")
    variants: list[Variant] = Field(min_length=1, description="the variants, trained and evaluated in order")
    output: CompareOutput = Field(description="where the outputs go")

    @field_validator("variants")
    @classmethod
    def _unique(cls, variants: list[Variant]) -> list[Variant]:
        names = [v.name for v in variants]
        if len(set(names)) < len(names):
            raise ValueError(f"variant names must be unique: {', '.join(names)}")
        return variants


@dataclass
class Plan:
    """One variant, its configs validated: trains into ``folder``, is evaluated into ``folder``/eval."""

    index: int
    variant: Variant
    folder: str
    train: TrainConfig
    eval: EvalConfig
    curation: list[CurationRun] | None = None  # the runs that curate its data (compare's curate), in order

    def configs(self) -> dict:
        """The configs as recorded (redacted), the training output as the config gives it."""
        train = self.train.model_dump()
        train["output"]["path"] = self.train.output.given
        configs = {"train": train, "eval": self.eval.model_dump()}
        if self.curation:
            configs["curate"] = [spec for r in self.curation for _, spec in r.stages]
        return redact_data(json.loads(json.dumps(configs)))


def _section(value: dict | str, key: str) -> dict:
    if isinstance(value, dict):
        return value
    try:
        return load_yaml(value)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None


def _curation(cfg: CompareConfig, eval_data: str) -> tuple[dict[str, Any] | None, dict[str, list[CurationRun]]]:
    """The base curation config (validated, as plain data) and each variant's curation runs; none without curate."""
    from thresher.curate.config import parse_config

    changed = [i for i, v in enumerate(cfg.variants) if v.curate.changes()]
    if cfg.curate is None:
        if changed:
            raise ConfigError(f"variants.{changed[0]}.curate: needs a base curation config (compare's curate)")
        return None, {}
    try:
        base = parse_config(_section(cfg.curate, "curate")).dump()
    except ConfigError as e:
        raise ConfigError(f"curate.{e}") from None
    chains = {v.name: chain(base, v.curate, f"variants.{i}.curate") for i, v in enumerate(cfg.variants)}
    for i, v in enumerate(cfg.variants):
        references = [
            os.path.abspath(ref)
            for _, spec in chains[v.name]
            for ref in spec.get("decontaminate", {}).get("references", [])
        ]
        if os.path.abspath(eval_data) not in references:
            raise ConfigError(
                f"variants.{i}.curate: its curation does not decontaminate against the eval data {eval_data} (every "
                "variant is measured on one held-out set: add it to a decontaminate stage's references in curate)"
            )
    return base, plan_runs(base, chains, cfg.output.path)


def plan(cfg: CompareConfig) -> list[Plan]:
    """Every variant's training and eval config, validated (a wrong key names the variant and the key)."""
    base_train, base_eval = _section(cfg.train, "train"), _section(cfg.eval, "eval")
    validate(TrainConfig, merge(base_train, {"output": {"path": cfg.output.path}}), prefix="train")
    eval_data = validate(
        EvalConfig, {**base_eval, "model": {"name_or_path": "-"}, "output": {"path": "-"}}, prefix="eval"
    ).data.path
    base_curate, runs = _curation(cfg, eval_data)
    plans = []
    for i, variant in enumerate(cfg.variants):
        folder = join(cfg.output.path, variant.name)
        train = merge(merge(base_train, variant.set), {"output": {"path": folder}})
        if base_curate is not None:
            train = merge(train, {"data": data_paths(runs[variant.name][-1], base_curate)})
        checkpoints = (train.get("checkpoint") or {}).get("storage_path")
        if checkpoints:  # one checkpoint folder per variant
            train = merge(train, {"checkpoint": {"storage_path": join(checkpoints, variant.name)}})
        evaluation = {
            **base_eval,
            "model": {"name_or_path": join(folder, "model")},
            "output": {"path": join(folder, "eval")},
        }
        plans.append(
            Plan(
                i,
                variant,
                folder,
                validate(TrainConfig, train, prefix=f"variants.{i}.set"),
                validate(EvalConfig, evaluation, prefix="eval"),
                runs.get(variant.name),
            )
        )
    return plans


def check_inputs(train: TrainConfig, given_in: Callable[[str], str]) -> None:
    """``thresher train``'s own checks of the data and model of ``train``, before any training starts: Parquet files
    at each data path, holding the columns read, and a tokenizer that loads from the model (an installed ``pkg:``
    package, a local folder, the local Hugging Face cache). A ConfigError names the key under ``given_in(key)``, the
    part of the compare or tune config that gives it."""
    from thresher.train.data import Encoding, parquet_files
    from thresher.train.models import load_tokenizer

    data, storage = train.data, Storage.from_options(train.storage)
    mixture = isinstance(data.train, list)
    datasets = [
        (f"data.train.{i}.path" if mixture else "data.train", s.path, s.format, s.text_field)
        for i, s in enumerate(data.sources)
    ]
    if data.validation:
        datasets.append(("data.validation", data.validation, data.format, data.text_field))
    try:
        for key, uri, fmt, text_field in datasets:
            parquet_files(uri, key, Encoding(fmt, text_field, data.max_seq_len, packing=False), storage)
        load_tokenizer(train.model)
    except ConfigError as e:
        raise ConfigError(f"{given_in(str(e).partition(':')[0])}.{e}") from None


def _given_in(p: Plan, key: str) -> str:
    """Where the compare config gives the training key ``key`` of variant ``p``: its ``set``, else the base."""
    node = p.variant.set
    for part in key.split("."):
        if not isinstance(node, dict):
            break  # the variant's value replaces the base's (merge replaces all but mappings)
        if part not in node:
            return "train"
        node = node[part]
    return f"variants.{p.index}.set"


def _check_variants(plans: list[Plan]) -> None:
    """:func:`check_inputs` of each variant, once per distinct data and model."""
    from thresher.train.models import load_tokenizer

    checked = set()
    for p in plans:
        if p.curation:  # its data is curated later: the model alone is checked now
            try:
                load_tokenizer(p.train.model)
            except ConfigError as e:
                raise ConfigError(f"{_given_in(p, str(e).partition(':')[0])}.{e}") from None
            continue
        inputs = json.dumps(p.train.model_dump(include={"data", "model", "storage"}), sort_keys=True)
        if inputs not in checked:
            checked.add(inputs)
            check_inputs(p.train, partial(_given_in, p))


def _saved_bytes(uri: str, storage: Storage) -> int:
    return sum(size for _, size in storage.expand(uri))


def run_variant(p: Plan, storage: Storage, address: str | None, curation: dict | None = None) -> dict:
    """Train and evaluate one variant (its data curated before, ``curation``: what that kept and cost); returns its
    row of compare.json (also saved in its variant.json)."""
    from thresher.evaluate.evaluation import run as evaluate
    from thresher.train.run import run as train

    started = time.perf_counter()
    metrics = train(p.train, address=address)
    train_wall = time.perf_counter() - started
    started = time.perf_counter()
    result = evaluate(p.eval, address=address)
    row = {
        "name": p.variant.name,
        "method": p.train.method,
        "set": p.variant.set,
        "output": p.folder,
        "train": {
            key: metrics.get(key)
            for key in (
                "steps",
                "eval_loss",
                "eval_perplexity",
                "best",
                "stopped_early",
                "model_step",
                "tokens",
                "tokens_per_s",
                "train_seconds",
                "trainable_params",
                "peak_memory_bytes",
                "num_workers",
                "device",
            )
        }
        | {
            "wall_seconds": train_wall,
            "saved_bytes": _saved_bytes(join(p.folder, "model"), storage),
            "data": p.configs()["train"]["data"]["train"],
        },
        "eval": {"metrics": result["metrics"], "rows": result["rows"], "wall_seconds": time.perf_counter() - started},
    }
    if curation is not None:
        row["curation"] = curation
    storage.write_bytes(
        join(p.folder, VARIANT_RECORD), json.dumps({"configs": p.configs(), "row": row}, indent=2).encode()
    )
    return row


def recorded(p: Plan, storage: Storage) -> dict | None:
    """The row of a variant that is complete with the same configs; None when it has to run."""
    uri = join(p.folder, VARIANT_RECORD)
    if not storage.exists(uri):
        return None
    record = json.loads(storage.read_bytes(uri))
    if record["configs"] != p.configs():
        changed = sorted(k for k in ("train", "eval") if record["configs"][k] != p.configs()[k])
        raise ConfigError(
            f"variants.{p.index}: {p.folder} holds variant {p.variant.name} run with another "
            f"{' and '.join(changed)} config; use another output.path or delete that folder"
        )
    return record["row"]


def _columns(table: pa.Table, metrics: list[str]) -> dict[str, list]:
    """The per-example columns :func:`thresher.evaluate.scoring.statistic` reads, from a predictions table."""
    cols = {
        c: table.column(c).to_pylist()
        for c in (*metrics, "reference_nll", "reference_tokens")
        if c in table.column_names
    }
    if "bleu" in metrics:
        cols["bleu_stats"] = score_examples(
            table.column("prediction").to_pylist(), table.column("reference").to_pylist(), ["bleu"], "none"
        )["bleu_stats"]
    return cols


def paired_tests(base: pa.Table, variant: pa.Table, metrics: list[str], samples: int, seed: int) -> dict[str, dict]:
    """Per metric, the variant against the base on the test items both scored (matched by id): ``difference``
    (variant - base) with its paired-bootstrap 95% interval; the exact McNemar test for 0/1 metrics (exact_match,
    accuracy: ``discordant`` pairs b, base right and variant wrong, and c, the reverse), else the paired bootstrap's
    p-value; ``verdict``: better, worse or within noise (p >= 0.05)."""
    position = {i: n for n, i in enumerate(variant.column("id").to_pylist())}
    pairs = [(n, position[i]) for n, i in enumerate(base.column("id").to_pylist()) if i in position]
    base = base.take(pa.array([b for b, _ in pairs], pa.int64()))
    variant = variant.take(pa.array([v for _, v in pairs], pa.int64()))
    a, b = _columns(base, metrics), _columns(variant, metrics)
    out: dict[str, dict] = {}
    for name in metrics:
        rows = np.flatnonzero(counted(name, a) & counted(name, b))
        if not len(rows):
            out[name] = {"items": 0, "test": None, "difference": None, "ci95": None, "p_value": None, "verdict": None}
            continue
        boot = paired_bootstrap(statistic(name, a, rows), statistic(name, b, rows), len(rows), samples, seed)
        entry = {"items": len(rows), "test": "paired_bootstrap", **boot}
        pair = [np.array([c[name][r] for r in rows], dtype=float) for c in (a, b)] if name in PROPORTIONS else []
        if pair and is_binary(pair[0]) and is_binary(pair[1]):
            worse, better = discordant(*pair)
            entry.update(test="mcnemar_exact", discordant=[worse, better], p_value=mcnemar_exact(worse, better))
        entry["verdict"] = verdict(entry["difference"], entry["p_value"], name in LOWER_IS_BETTER)
        out[name] = entry
    return out


def _paired(plans: list[Plan], rows: list[dict]) -> None:
    """Each variant's row gains ``paired``: its tests against the first variant's predictions (None for it)."""
    base = pq.read_table(join(plans[0].folder, "eval", "predictions.parquet"))
    rows[0]["paired"] = None
    for p, row in zip(plans[1:], rows[1:]):
        variant = pq.read_table(join(p.folder, "eval", "predictions.parquet"))
        row["paired"] = paired_tests(base, variant, p.eval.metrics, p.eval.bootstrap.samples, p.eval.bootstrap.seed)


def check_variants_fit(plans: list[Plan], cluster: dict[str, float]) -> None:
    """Refuse (exit 2) before any training a variant whose training workers or generation actors, with their data
    pipelines, the cluster cannot run; the message names the variant and the key."""
    from thresher.evaluate.evaluation import check_actors_fit
    from thresher.train.run import fitting_workers

    for p in plans:
        try:
            fitting_workers(p.train, cluster)
            check_actors_fit(p.eval, cluster)
        except ConfigError as e:
            raise ConfigError(f"variants.{p.index} ({p.variant.name}): {e}") from None


def run(cfg: CompareConfig, address: str | None = None) -> dict:
    """Run every variant not yet complete; returns the content of ``<output>/compare.json``."""
    from thresher.evaluate.compare_report import render_html, render_markdown

    plans = plan(cfg)
    storage = Storage.from_options(None)
    done = {p.variant.name: recorded(p, storage) for p in plans}  # a changed config fails before any training
    _check_variants([p for p in plans if done[p.variant.name] is None])
    started, rows = time.perf_counter(), []
    with ray_session(address, ray_train=True) as cluster:
        todo = [p for p in plans if done[p.variant.name] is None]
        check_variants_fit(todo, cluster)
        runs = [r for p in todo for r in p.curation or []]
        manifests = curate_runs(runs, _curation(cfg, plans[0].eval.data.path)[0] or {}, storage, address)
        for p in plans:
            if done[p.variant.name] is not None:
                console().print(f"{p.variant.name}: complete in {p.folder} (variant.json), not retrained")
                rows.append({**done[p.variant.name], "skipped": True})
                continue
            console().print(f"{p.variant.name}: training ({p.train.method}), then evaluating")
            curated = summarize(p.curation, manifests) if p.curation else None
            rows.append({**run_variant(p, storage, address, curated), "skipped": False})
    first = plans[0]
    _paired(plans, rows)
    result = {
        "output": cfg.output.path,
        "base": first.variant.name,
        "variants": rows,
        "model": first.train.model.model_dump(),
        "eval_data": first.eval.data.path,
        "eval_rows": rows[0]["eval"]["rows"],
        "schedule": SCHEDULE,
        "seconds": time.perf_counter() - started,
        "load_average": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "versions": {d: metadata.version(d) for d in ("thresher", "ray", "torch", "transformers", "peft")},
    }
    storage.write_bytes(join(cfg.output.path, COMPARE_JSON), json.dumps(result, indent=2).encode())
    storage.write_bytes(join(cfg.output.path, COMPARE_HTML), render_html(result).encode())
    console().print(render_markdown(result))
    return result


def main(data: dict[str, Any], address: str | None = None) -> dict:
    """Validate the compare config mapping, run it; a wrong key is a ConfigError naming it (exit 2)."""
    return run(validate(CompareConfig, data), address=address)
