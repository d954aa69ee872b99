"""The driver side of ``thresher eval``: read the evaluation records (:mod:`thresher.evaluate.records`), generate on
an actor pool (:mod:`thresher.evaluate.generate`), score (:mod:`thresher.evaluate.scoring`) and write
``<output>/predictions.parquet``, ``rejects.parquet`` (the records that could not be evaluated, with the reason),
``metrics.json`` and ``report.html``.

``metrics.json`` holds each metric's value, count and bootstrap 95% interval, per slice with ``slices``
(:mod:`thresher.evaluate.slices`), and the lineage: the model's (its thresher.json, which names the curated data it
was trained on) and the evaluation data's (thresher.core.lineage). ``candidates.parquet`` ranks the examples to
improve the data on (:mod:`thresher.evaluate.candidates`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.core.config import ConfigError
from thresher.core.console import current as console
from thresher.core.lineage import data_lineage
from thresher.core.storage import Storage, join
from thresher.evaluate.candidates import CANDIDATES, candidates, summary
from thresher.evaluate.coverage import CLUSTER, RATIO, coverage
from thresher.evaluate.eval_config import EvalConfig, parse_eval_config
from thresher.evaluate.generate import DETAIL, REASON, Generator, source_columns
from thresher.evaluate.records import open_records, read_dataset
from thresher.evaluate.scoring import METRICS as METRIC_NAMES
from thresher.evaluate.scoring import aggregate, score_examples
from thresher.evaluate.slices import all_slices
from thresher.runtime import check_fits, live_nodes, progress_counter, ray_session
from thresher.train.config import ModelOptions

log = logging.getLogger(__name__)

PREDICTIONS, REJECTS, METRICS, REPORT = "predictions.parquet", "rejects.parquet", "metrics.json", "report.html"
# the columns thresher writes into predictions.parquet: a record's column of the same name is not carried
WRITTEN = {
    "id",
    REASON,
    DETAIL,
    "prompt",
    "reference",
    "prediction",
    "prediction_tokens",
    "stopped_at_limit",
    "reference_nll",
    "reference_tokens",
    "prompt_tokens",
    "confidence",
    "margin",
    "answer_prediction",
    "answer_reference",
    CLUSTER,
    RATIO,
    *METRIC_NAMES,
}


def main(data: dict[str, Any], address: str | None = None) -> dict:
    """Validate the eval config mapping, evaluate, write the outputs; returns metrics.json's content."""
    return run(parse_eval_config(data), address=address)


def carried(cfg: EvalConfig) -> tuple[str, ...]:
    """The record columns predictions.parquet keeps as they are: those read (the format's, the slices' fields) but
    the id and any of the names thresher writes."""
    read = dict.fromkeys(source_columns(cfg.data) + cfg.slice_fields())
    return tuple(c for c in read if c not in WRITTEN and c != cfg.data.id_field)


def model_for_actors(model: ModelOptions) -> ModelOptions:
    """``model`` as the actors load it: a local folder by its absolute path (Ray runs them in a folder of its own,
    not the driver's); what the outputs say of it is ``model`` as given."""
    folder = os.path.expanduser(model.name_or_path)
    return model.model_copy(update={"name_or_path": os.path.abspath(folder)}) if os.path.isdir(folder) else model


def check_actors_fit(cfg: EvalConfig, cluster: dict[str, float]) -> None:
    """Refuse (exit 2, naming the key) generation actors the cluster cannot run beside the read tasks of the data."""
    gpu = cfg.generation.use_gpu
    check_fits(
        "generation.use_gpu" if gpu else "generation.num_actors",
        cfg.generation.num_actors,
        {"GPU": 1} if gpu else {"CPU": 1},
        cluster,
        live_nodes(),
        what="generation actor",
        pipeline="the evaluation data's read tasks",
    )


def generate(cfg: EvalConfig, storage: Storage, cluster: dict[str, float]) -> tuple[pa.Table, pa.Table]:
    """Rows of id, prompt, reference, prediction, prediction_tokens, stopped_at_limit, reference_nll,
    reference_tokens, in data order; and the records not evaluated: id, reason, detail and the columns read
    (:func:`thresher.evaluate.generate.unusable`)."""
    import ray
    from ray.data import ActorPoolStrategy

    check_actors_fit(cfg, cluster)
    ds = read_dataset(cfg, storage)
    counter = progress_counter()
    resources = {"num_gpus": 1} if cfg.generation.use_gpu else {"num_cpus": 1}
    ds = ds.map_batches(
        Generator,
        batch_format="pyarrow",
        batch_size=cfg.generation.batch_size,
        compute=ActorPoolStrategy(size=cfg.generation.num_actors),
        fn_constructor_kwargs={
            "model": model_for_actors(cfg.model),
            "data": cfg.data,
            "generation": cfg.generation,
            "perplexity": "perplexity" in cfg.metrics,
            "progress": counter,
            "confidence": cfg.candidates.write,
            "carry": carried(cfg),
        },
        **resources,
    )
    ds.context.execution_options.preserve_order = True
    ds.context.enable_progress_bars = False
    poll = (lambda: (ray.get(counter.snapshot.remote()).get("rows", 0), cfg.data.max_rows)) if counter else None
    with console().phase("generate", poll, starting="loading the model on the workers"):
        tables = [t for t in ray.get(list(ds.to_arrow_refs())) if t.num_rows]
    if not tables:
        raise ConfigError(f"data.path: no records at {cfg.data.path}")
    rows = pa.concat_tables(tables)
    ids = [i if i is not None else str(n) for n, i in enumerate(rows.column("id").to_pylist())]
    rows = rows.set_column(rows.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
    unused = pc.is_valid(rows.column(REASON))
    rejected = rows.filter(unused).select(["id", REASON, DETAIL, *carried(cfg)])
    rows = rows.filter(pc.invert(unused)).drop_columns([REASON, DETAIL])
    if rejected.num_rows:
        log.warning(
            "%d of the %d records read could not be evaluated (%s): %s lists them",
            rejected.num_rows,
            rows.num_rows + rejected.num_rows,
            ", ".join(f"{n} {reason}" for reason, n in rejected_counts(rejected).items()),
            join(cfg.output.path, REJECTS),
        )
    if not rows.num_rows:
        raise ConfigError(f"data.path: none of the {rejected.num_rows} records at {cfg.data.path} can be evaluated")
    return rows, rejected


def rejected_counts(rejected: pa.Table) -> dict[str, int]:
    """The records not evaluated, by reason (most first)."""
    return dict(Counter(rejected.column(REASON).to_pylist()).most_common())


def versions(*distributions: str) -> dict[str, str | None]:
    """The installed version of each distribution (None where it is not installed)."""
    out = {}
    for name in distributions:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def model_record(cfg: EvalConfig) -> dict:
    """The model's path and its thresher.json (written by ``thresher train``, naming its data), None if absent."""
    from thresher.train.export import BASE_RECORD
    from thresher.train.models import model_dir

    record = Path(model_dir(cfg.model), BASE_RECORD)
    return {
        "name_or_path": cfg.model.name_or_path,
        "gguf_file": cfg.model.gguf_file,
        "thresher": json.loads(record.read_text()) if record.is_file() else None,
    }


def run(cfg: EvalConfig, address: str | None = None) -> dict:
    """Evaluate as configured; returns the content of ``<output>/metrics.json``."""
    from thresher.evaluate.eval_report import render_report

    storage = Storage.from_options(cfg.storage)
    try:
        storage.check_writable(cfg.output.path)
    except OSError as e:
        raise ConfigError(f"output.path: cannot write to {cfg.output.path}: {e}") from None
    from thresher.train.models import load_tokenizer

    load_tokenizer(cfg.model)  # a missing model is a config error, before any Ray work
    model = model_record(cfg)
    started = time.perf_counter()
    with ray_session(address) as cluster:
        options = cfg.candidates.coverage  # its training data checked before the generation
        train = options and open_records(options.data.path, storage, "candidates.coverage.data.path", options.max_rows)
        rows, rejected = generate(cfg, storage, cluster)
        generation_seconds = time.perf_counter() - started
        covered = coverage(rows, cfg, train, cluster) if train else None
    new_tokens = sum(rows.column("prediction_tokens").to_pylist())
    cols = score_examples(
        rows.column("prediction").to_pylist(), rows.column("reference").to_pylist(), cfg.metrics, cfg.answer.extractor
    )
    nll, tokens = rows.column("reference_nll").to_pylist(), rows.column("reference_tokens").to_pylist()
    cols.update(reference_nll=nll, reference_tokens=tokens)
    if "perplexity" in cfg.metrics:
        cols["perplexity"] = [math.exp(x / n) if n else None for x, n in zip(nll, tokens)]
    metrics = aggregate(cols, cfg.metrics, cfg.bootstrap.samples, cfg.bootstrap.seed)
    slices, slice_columns = all_slices(
        rows, cols, cfg.slices, cfg.metrics, metrics, cfg.slice_options, cfg.bootstrap.samples, cfg.bootstrap.seed
    )
    for name, values in {**cols, **slice_columns}.items():
        if name not in rows.column_names and name != "bleu_stats":
            rows = rows.append_column(name, pa.array(values))
    if covered:
        rows = rows.append_column(CLUSTER, pa.array(covered[1], pa.int64())).append_column(
            RATIO, pa.array(covered[2], pa.float64())
        )
    chosen = (
        candidates(
            rows,
            cfg.candidates.low_confidence_fraction,
            cfg.answer_metric(),
            cfg.candidates.coverage.max_ratio if cfg.candidates.coverage else None,
        )
        if cfg.candidates.write
        else None
    )
    result = {
        "metrics": metrics,
        "slices": slices,
        "slice_options": cfg.slice_options.model_dump(),
        "candidates": summary(chosen) if chosen is not None else None,
        "coverage": covered[0] if covered else None,
        "rows": rows.num_rows,
        "rejected": {"records": rejected.num_rows, "by_reason": rejected_counts(rejected), "file": REJECTS},
        "seconds": time.perf_counter() - started,
        "device": "cuda" if cfg.generation.use_gpu else "cpu",
        "generation_seconds": generation_seconds,
        "new_tokens": new_tokens,
        "new_tokens_per_s": new_tokens / generation_seconds,
        "stopped_at_limit": sum(rows.column("stopped_at_limit").to_pylist()),
        "model": model,
        "data": cfg.data.model_dump(),
        "generation": cfg.generation.model_dump(),
        "answer": cfg.answer.model_dump(),
        "bootstrap": cfg.bootstrap.model_dump(),
        "lineage": {"model": (model["thresher"] or {}).get("lineage"), "data": data_lineage(cfg.data.path, storage)},
        "versions": versions("thresher", "torch", "transformers", "sacrebleu", "rouge-score"),
    }
    buffer = io.BytesIO()
    pq.write_table(rows, buffer)
    storage.write_bytes(join(cfg.output.path, PREDICTIONS), buffer.getvalue())
    for name, table in ((CANDIDATES, chosen), (REJECTS, rejected)):
        if table is None:  # an earlier evaluation's file would pass for this one's
            storage.delete(join(cfg.output.path, name))
            continue
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        storage.write_bytes(join(cfg.output.path, name), buffer.getvalue())
    storage.write_bytes(join(cfg.output.path, METRICS), json.dumps(result, indent=2).encode())
    storage.write_bytes(join(cfg.output.path, REPORT), render_report(result, rows, chosen).encode())
    log.info("evaluated %d rows in %.1f s; outputs in %s", rows.num_rows, result["seconds"], cfg.output.path)
    return result
