"""The driver side of ``thresher train``: validate, build the datasets, run Ray Train's ``TorchTrainer``, write
``<output.path>/metrics.json``.

Steps: with ``optim.max_steps`` the rows stream from Parquet through tokenization into the workers (each extra
epoch reads again); without it the tokenized rows are materialized once (their count gives the number of steps
of ``optim.epochs`` epochs, which the cosine schedule needs) and every epoch reads them from the object store.

Checkpoints live in ``<checkpoint.storage_path>/thresher`` (default ``<output.path>/checkpoints/thresher``); a
run started with a folder that holds checkpoints resumes from the latest one. ``thresher-train.json`` there
records the settings a checkpoint depends on (model, method, adapters, DeepSpeed, FSDP, and the batch shape:
``optim.batch_size``, ``optim.grad_accum``, ``scaling.num_workers``, by which a resumed epoch skips the rows already
trained), and a run whose settings differ is refused rather than resumed into.

``metrics.json``'s ``data`` says what became of the records (:mod:`thresher.train.accounting`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import time
from typing import Any

from thresher.core.config import ConfigError
from thresher.core.console import current as console
from thresher.core.console import root_cause
from thresher.core.lineage import data_lineage
from thresher.core.storage import Storage, join
from thresher.runtime import (
    check_fits,
    in_worker_thread,
    live_nodes,
    progress_counter,
    progress_counts,
    ray_session,
    resolve_address,
)
from thresher.train.accounting import problems, read_tally, start_tally, summary, untrained_per_epoch
from thresher.train.checkpoints import remove_staging
from thresher.train.config import TrainConfig
from thresher.train.data import (
    Encoding,
    build_dataset,
    check_no_leak,
    ensure_chat_template,
    first_rows,
    mix,
    parquet_files,
    record_count,
    renders_chat,
)
from thresher.train.loop import Job, train_loop_per_worker
from thresher.train.methods import adapter_settings
from thresher.train.order import RecordOrder, data_config
from thresher.train.tracking import settings as tracking_settings

log = logging.getLogger(__name__)

RUN_NAME = "thresher"
STORAGE_WAITS_S = (1, 2, 4, 8, 16)  # an attempt whose start finds the run's storage gone: tried again after these
RUN_RECORD = "thresher-train.json"


def checkpoint_settings(cfg: TrainConfig) -> dict:
    """The settings a checkpoint's contents depend on."""
    return {
        "model": cfg.model.model_dump(exclude={"attn_implementation", "kernels"}),
        "method": cfg.method,
        **adapter_settings(cfg),
        "deepspeed": cfg.deepspeed.model_dump() if cfg.deepspeed else None,
        "fsdp": cfg.fsdp.model_dump() if cfg.fsdp else None,
        "optim.batch_size": cfg.optim.batch_size,
        "optim.grad_accum": cfg.optim.grad_accum,
        "scaling.num_workers": cfg.scaling.num_workers,
    }


def check_resumable(cfg: TrainConfig, storage: Storage) -> None:
    """Record the checkpoint settings, or refuse when the checkpoints there were written with other ones."""
    record = join(cfg.checkpoint_path, RUN_NAME, RUN_RECORD)
    settings = checkpoint_settings(cfg)
    if storage.exists(record):
        previous = json.loads(storage.read_bytes(record))
        # a key the record lacks was not recorded by the thresher that wrote it: not compared
        changed = sorted(k for k in settings if k in previous and previous[k] != settings[k])
        if changed:
            said = [f"{k} ({previous[k]} there)" if isinstance(previous[k], int | str) else k for k in changed]
            raise ConfigError(
                f"checkpoint.storage_path: {cfg.checkpoint_path} holds checkpoints of a run with other "
                f"{', '.join(said)} settings; use another checkpoint.storage_path (or delete it)"
            )
    else:
        storage.write_bytes(record, json.dumps(settings, indent=2).encode())


def _steps(cfg: TrainConfig, train_ds) -> tuple[int, Any, int | None]:
    """Optimizer steps of the run, the train dataset (materialized when its size decides them) and its rows (None
    when it streams)."""
    if cfg.optim.max_steps:
        return cfg.optim.max_steps, train_ds, None
    train_ds = train_ds.materialize()
    rows = train_ds.count()
    per_step = cfg.optim.batch_size * cfg.optim.grad_accum
    steps_per_epoch = rows // cfg.scaling.num_workers // per_step
    if steps_per_epoch == 0:
        raise ConfigError(
            f"data.train: {rows} rows of {cfg.data.max_seq_len} tokens make no optimizer step with "
            f"{cfg.scaling.num_workers} workers x optim.batch_size x optim.grad_accum = "
            f"{cfg.scaling.num_workers * per_step} rows"
        )
    log.info("%d training rows: %d steps per epoch", rows, steps_per_epoch)
    return steps_per_epoch * cfg.optim.epochs, train_ds, rows


def data_accounting(
    cfg: TrainConfig, counts: dict[str, dict], epoch_rows: int | None, records: int | None, evaluated: int | None
) -> dict:
    """``metrics.json``'s ``data`` from each dataset's ``counts`` (:func:`summary`): for train the rows of an epoch
    (``epoch_rows``; when the rows streamed, those of the first pass over the ``records``, None if the run ended
    before it) and those it leaves untrained, for validation the rows the workers' last evaluation read (``evaluated``,
    None when the run's last attempt made none)."""
    if epoch_rows is None and counts["train"].get("read") == records:
        epoch_rows = counts["train"].get("rows")
    shape = (cfg.scaling.num_workers, cfg.optim.batch_size, cfg.optim.grad_accum)
    data: dict[str, Any] = {
        "train": {
            **summary(counts["train"]),
            "epoch_rows": epoch_rows,
            "untrained_per_epoch": untrained_per_epoch(epoch_rows, *shape) if epoch_rows is not None else None,
        },
        "validation": None,
    }
    if "validation" in counts:
        data["validation"] = {**summary(counts["validation"]), "evaluated": evaluated}
    return data


def worker_resources(cfg: TrainConfig, cluster_cpus: float, node_cpus: float) -> dict | None:
    """Resources of one training worker: ``scaling.resources_per_worker`` when set; with GPUs Ray's default (one
    GPU, no CPU). On CPUs the workers share the cluster's CPUs but one, which stays free for Ray Data's read and
    tokenize tasks (with every CPU held by a worker those tasks never run and the workers wait for rows forever):
    a whole number of CPUs each (at most a node's CPUs; Ray sets the worker's torch threads to it), or on a
    machine with fewer CPUs than workers + 1 a fraction each (one torch thread each)."""
    if cfg.scaling.resources_per_worker is not None or cfg.scaling.use_gpu:
        return cfg.scaling.resources_per_worker
    share = (cluster_cpus - 1) / cfg.scaling.num_workers
    if share <= 0:
        raise ConfigError(
            f"scaling.num_workers: the Ray cluster has {cluster_cpus:g} CPU, too few for training "
            "workers and data tasks; set scaling.resources_per_worker (e.g. {CPU: 0.25})"
        )
    return {"CPU": min(math.floor(share), node_cpus) if share >= 1 else share}


def check_workers_fit(cfg: TrainConfig, resources: dict | None, cluster: dict[str, float], nodes: list[dict]) -> None:
    """Refuse (exit 2, naming the key) training workers the cluster cannot run, with a CPU left for Ray Data's read
    and tokenize tasks (:func:`thresher.runtime.check_fits`). ``resources``: one worker's
    (:func:`worker_resources`)."""
    key = (
        "scaling.resources_per_worker"
        if cfg.scaling.resources_per_worker is not None
        else ("scaling.use_gpu" if cfg.scaling.use_gpu else "scaling.num_workers")
    )
    check_fits(
        key,
        cfg.scaling.num_workers,
        resources if resources is not None else {"GPU": 1},
        cluster,
        nodes,
        pipeline="the data pipeline's read and tokenize tasks",
    )


def fitting_workers(cfg: TrainConfig, cluster: dict[str, float]) -> dict | None:
    """One training worker's resources on the session's cluster (:func:`worker_resources`), refused with exit 2 when
    the workers and the data pipeline cannot run there (:func:`check_workers_fit`). ``cluster``: the cluster's resources."""
    nodes = live_nodes()
    resources = worker_resources(cfg, cluster.get("CPU", 0.0), max((n.get("CPU", 0.0) for n in nodes), default=0.0))
    check_workers_fit(cfg, resources, cluster, nodes)
    return resources


def deterministic_failure(error: Exception) -> str | None:
    """The error the failed workers raised before their first optimizer step, if each raised the same one (Ray
    Train may stop the others before they report theirs). A worker that died (no exception) is no such failure."""
    from thresher.train.loop import FirstStepError

    failures = list(getattr(error, "worker_failures", {}).values())
    messages = {root_cause(e) for e in failures}
    if failures and all(isinstance(e, FirstStepError) for e in failures) and len(messages) == 1:
        return messages.pop()
    return None


def storage_gone(error: Exception) -> bool:
    """Whether an attempt could not start because the run's storage did not answer: Ray Train's controller checks
    the storage as it is created, and an OSError there kills it (an ``ActorDiedError`` of its creation task)."""
    from ray.exceptions import RayActorError

    return isinstance(error, OSError) or (
        isinstance(error, RayActorError) and error.actor_init_failed and "OSError: " in str(error)
    )


def fit(trainer, max_failures: int):
    """``trainer().fit()``; a failed attempt is retried from the latest checkpoint up to ``max_failures`` times
    (-1: always), except a deterministic one (:func:`deterministic_failure`), which fails the run at once. An attempt
    that cannot start because the storage is gone (:func:`storage_gone`) is started again after each of
    ``STORAGE_WAITS_S``, then fails the run."""
    from ray.train import TrainingFailedError

    attempt, waits = 0, iter(STORAGE_WAITS_S)
    while True:
        try:
            return trainer().fit()
        except TrainingFailedError as e:
            waits = iter(STORAGE_WAITS_S)  # the attempt started: a later outage gets waits of its own
            attempt += 1
            same = deterministic_failure(e)
            if same is not None:
                raise RuntimeError(
                    f"the training workers failed before the first step with {same} (not "
                    "retried: a retry would fail the same way)"
                ) from None
            if 0 <= max_failures < attempt:
                raise
            log.warning(
                "training attempt %d failed; resuming from the latest checkpoint (%s)",
                attempt,
                root_cause(e),
            )
        except Exception as e:
            wait = next(waits, None) if storage_gone(e) else None
            if wait is None:
                raise
            log.warning(
                "training could not start: its storage did not answer (%s); trying again in %d s",
                root_cause(e),
                wait,
            )
            time.sleep(wait)


def run(cfg: TrainConfig, address: str | None = None, callbacks: list | None = None) -> dict:
    """Train as configured; returns the metrics also written to ``<output.path>/metrics.json``. ``callbacks``: Ray
    Train callbacks of the run (``thresher tune`` passes the workers' evaluations on to Ray Tune)."""
    import pyarrow.fs
    import ray.train
    from ray.train.torch import TorchTrainer

    from thresher.train.models import check_liger, load_tokenizer

    started = time.time()

    storage = Storage.from_options(cfg.storage)
    if cfg.scaling.use_gpu and resolve_address(address) is None:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"scaling.use_gpu: this machine has no CUDA GPU"
                f"{f' (method {cfg.method} needs one)' if cfg.adapter.gpu_only else ''}"
            )
    try:
        storage.check_writable(cfg.output.path)
    except OSError as e:
        raise ConfigError(f"output.path: cannot write to {cfg.output.path}: {e}") from None

    tokenizer = load_tokenizer(cfg.model)
    if cfg.model.kernels == "liger" and resolve_address(address) is None:  # the workers run here
        check_liger(cfg.model)
    # virtual-token methods take no position_ids; preference rows hold one pair each
    packing = cfg.data.packing and not cfg.adapter.virtual_tokens and not cfg.objective.preference
    if cfg.data.packing and not packing:
        log.info("method %s: rows are not packed", cfg.method)
    mixture = isinstance(cfg.data.train, list)
    val_enc = Encoding(cfg.data.format, cfg.data.text_field, cfg.data.max_seq_len, packing)
    val_files = parquet_files(cfg.data.validation, "data.validation", val_enc, storage) if cfg.data.validation else None
    train = []  # (encoding, files) of each training dataset
    for i, source in enumerate(cfg.data.sources):
        key = f"data.train.{i}.path" if mixture else "data.train"
        enc = Encoding(source.format, source.text_field, cfg.data.max_seq_len, packing)
        files = parquet_files(source.path, key, enc, storage)
        check_no_leak(key, source.path, files, val_files, storage)
        train.append((enc, files))
    if any(renders_chat(enc, files[0], storage) for enc, files in train):
        ensure_chat_template(tokenizer)
    check_resumable(cfg, storage)
    lineage = {
        "train": [data_lineage(s.path, storage) for s in cfg.data.sources]
        if mixture
        else data_lineage(cfg.data.train, storage),
        "validation": data_lineage(cfg.data.validation, storage) if cfg.data.validation else None,
    }

    with ray_session(address, ray_train=True) as cluster:
        resources = fitting_workers(cfg, cluster)
        log.info("%d training workers, each with %s", cfg.scaling.num_workers, resources or {"GPU": 1})
        order = RecordOrder(cfg.data.order, cfg.data.difficulty_field, cfg.data.curriculum_buckets, cfg.optim.seed)
        # streamed rows are tokenized again every epoch (validation: every evaluation that cannot keep them): the
        # tally counts the first pass over the records
        records = record_count(train[0][1], storage) if cfg.optim.max_steps and not mixture else None
        first_pass = {"validation": record_count(val_files, storage)} if val_files else {}
        if records is not None:
            first_pass["train"] = records
        tally = start_tally(first_pass)
        datasets = {
            "train": [
                build_dataset(files, tokenizer, enc, storage, cfg.data.batch_rows, order, source=i, tally=tally)
                for i, (enc, files) in enumerate(train)
            ]
        }
        if val_files:  # streamed to the workers, which tokenize it at their first evaluation and keep it
            datasets["validation"] = (
                first_rows(val_files, cfg.eval.max_rows, storage, tokenizer, val_enc, cfg.data.batch_rows, tally)
                if cfg.eval.max_rows
                else build_dataset(
                    val_files, tokenizer, val_enc, storage, cfg.data.batch_rows, tally=tally, dataset="validation"
                )
            )
        with console().phase("tokenize"):
            if mixture:
                datasets["train"], taken = mix(datasets["train"], [s.weight for s in cfg.data.sources], cfg.optim.seed)
                log.info("training mixture: %s rows", dict(zip((s.path for s in cfg.data.sources), taken)))
            else:
                datasets["train"] = datasets["train"][0]
            total_steps, datasets["train"], epoch_rows = _steps(cfg, datasets["train"])
            if mixture:
                epoch_rows = sum(taken)
        counter = progress_counter()
        job = Job(
            total_steps=total_steps,
            storage=storage,
            tokenizer=tokenizer,
            has_validation="validation" in datasets,
            progress=counter,
            lineage=lineage,
            tracking=tracking_settings(cfg, lineage),
            sources=[s.path for s in cfg.data.sources],
            started=started,
            workdir=os.getcwd(),
        )
        fs, ckpt_path = storage.resolve(cfg.checkpoint_path)
        if isinstance(fs, pyarrow.fs.LocalFileSystem):
            remove_staging(posixpath.join(ckpt_path, RUN_NAME))  # what a stopped run was still writing

        def trainer() -> TorchTrainer:
            return TorchTrainer(
                train_loop_per_worker,
                train_loop_config={"config": cfg.model_dump(), "job": job},
                scaling_config=ray.train.ScalingConfig(
                    num_workers=cfg.scaling.num_workers,
                    use_gpu=cfg.scaling.use_gpu,
                    resources_per_worker=resources,
                    placement_strategy=cfg.scaling.placement_strategy,
                ),
                run_config=ray.train.RunConfig(
                    name=RUN_NAME,
                    storage_path=ckpt_path,
                    storage_filesystem=fs,
                    failure_config=ray.train.FailureConfig(max_failures=0),
                    checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
                    callbacks=callbacks,
                ),
                datasets=datasets,
                dataset_config=data_config(cfg.data.order),
            )

        steps = (lambda: (progress_counts(counter).get("train_step", 0), total_steps)) if counter else None
        fit_started = round(time.time() - started, 3)
        with console().phase("train", steps, unit="steps", starting="starting the workers and loading the model"):
            result = in_worker_thread(fit, trainer, cfg.checkpoint.max_failures)
        counted, whole = read_tally(tally)
    counts = {"train": {}, **({"validation": {}} if val_files else {}), **counted}
    data = data_accounting(cfg, counts, epoch_rows, records, result.return_value.pop("evaluated_rows"))
    dropped = problems(data)
    if dropped:
        log.warning("%s", dropped)
    metrics = result.return_value
    metrics["startup_seconds"] = {"fit_started": fit_started, **metrics["startup_seconds"]}
    metrics = {
        **metrics,
        "data": {**data, "complete": whole},
        "lineage": lineage,
        "output": join(cfg.output.given, "model"),
        "checkpoint": join(cfg.checkpoint_path_given, RUN_NAME, posixpath.basename(result.checkpoint.path))
        if result.checkpoint
        else None,
    }
    storage.write_bytes(join(cfg.output.path, "metrics.json"), json.dumps(metrics, indent=2).encode())
    log.info(
        "steps %d, eval_loss %s, %.0f tokens/s; model in %s",
        metrics["steps"],
        metrics["eval_loss"],
        metrics["tokens_per_s"] or 0,
        metrics["output"],
    )
    return metrics
