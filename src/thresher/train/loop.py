"""The per-worker training recipe that Ray Train's ``TorchTrainer`` runs on every worker: :class:`Recipe` reads
top to bottom as setup, train, evaluate, checkpoint, export.

Setup loads the model, applies the method's adapter, builds its objective (both from :mod:`thresher.train.methods`:
:class:`thresher.train.sft.LanguageModeling` for the adapter methods, :class:`thresher.train.preference.Preference`
for dpo/orpo, with DPO's reference model taken before the engine wraps the model) and the engine
(:mod:`thresher.train.engines`: DDP, DeepSpeed ZeRO or FSDP2), and resumes from Ray Train's latest checkpoint if
there is one. Each worker streams its shard of the rows with
``get_dataset_shard("train").iter_torch_batches``. An optimizer step takes ``optim.grad_accum`` micro-batches of
``optim.batch_size`` rows per worker; the loss is the mean over the step's units across all workers -- trained
tokens for SFT (every token weighs the same, however the tokens fall into rows and workers), pairs for preference
optimization.

Checkpoints (:mod:`thresher.train.checkpoints`: copied to host memory at the step, written while training goes
on) every ``checkpoint.every_steps`` and at the end hold the engine's state (trainable weights, optimizer, scheduler,
loss scaler; DeepSpeed and FSDP2: every rank's shards) and :class:`TrainerState` (step, epoch, position in the
epoch, loss history). A run restarted by the driver
(``thresher.train.run.fit``: a worker process or node died) or re-run with the same ``checkpoint.storage_path`` resumes
from the latest checkpoint: weights, optimizer, scheduler, step and each worker's torch random state (dropout) are
restored exactly; for the data, each worker skips the micro-batches its shard already gave in the current epoch. One
worker reads its rows in the same order every time, so its resumed run ends with the weights an uninterrupted one
ends with; with several, Ray Data does not promise the same rows to the same worker across executions (blocks are
handed to whichever worker asks first), so the rows a resumed epoch skips are the same in number, not necessarily in
identity.

A checkpoint counts once Ray Train's controller has collected every worker's report of it; the controller polls
the workers every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s), so a worker that dies within that time of a report
can take that checkpoint with it, and the run resumes from the one before.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from thresher.core.storage import Storage
from thresher.train.checkpoints import Checkpointer
from thresher.train.collectives import all_sum, device_sum, node_count, random_states, restore_random_state
from thresher.train.config import TrainConfig
from thresher.train.engines import make_engine
from thresher.train.selection import best_index, best_summary, stops_early
from thresher.train.tracking import Tracker

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
VALIDATION_KEPT_BYTES = 256 << 20  # a worker keeps its validation batches in memory up to this size


@dataclass
class Job:
    """What the driver hands every worker besides the config."""

    total_steps: int
    storage: Storage
    tokenizer: Any
    has_validation: bool
    progress: Any = None  # thresher.runtime.ProgressCounter: rank 0 puts the step there
    lineage: dict | None = None  # the data read (thresher.core.lineage), recorded in the model's thresher.json
    tracking: Any = None  # thresher.train.tracking.MlflowSettings: rank 0 logs the run there
    sources: list[str] = field(default_factory=list)  # the training datasets, by the rows' ``source`` index
    started: float = 0.0  # time.time() when the command started: the workers' startup is timed from it
    workdir: str = ""  # the driver's working directory, where relative local paths (a model folder) point


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    train_loss: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    tokens: int = 0
    tokens_by_source: list[int] = field(default_factory=list)
    resumes: list[int] = field(default_factory=list)  # the checkpoint step each resumed attempt started from
    random_states: list[list[str]] = field(default_factory=list)  # each rank's torch random state at the checkpoint
    nodes: list[int] = field(default_factory=list)  # the nodes each attempt's workers ran on

    def save(self, folder: str) -> None:
        Path(folder, STATE_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, folder: str) -> TrainerState:
        return cls(**json.loads(Path(folder, STATE_FILE).read_text()))


# -- metrics ------------------------------------------------------------------------------------------------------


def metric_sums(objective, batch: dict, metrics: dict, device: torch.device) -> torch.Tensor:
    """The batch's metric sums in ``objective.metrics`` order, then its units, as one float64 tensor on ``device``."""
    values = [*(metrics[k] for k in objective.metrics), objective.units(batch)]
    return torch.stack([torch.as_tensor(v, device=device).to(torch.float64) for v in values])


def evaluation_metrics(evaluation: dict) -> dict:
    """An evaluation as reported metrics: ``step`` and ``eval_<metric>``."""
    return {"step": evaluation["step"], **{f"eval_{k}": v for k, v in evaluation.items() if k != "step"}}


def report_evaluation(evaluation: dict) -> None:
    """Report an evaluation after which the run goes on to Ray Train (every worker, no checkpoint): what a ``thresher
    tune`` trial passes on to Ray Tune's scheduler, which may stop the run there."""
    import ray.train

    # in order after a checkpoint still being written, without waiting for it
    ray.train.report(
        evaluation_metrics(evaluation), checkpoint=None, checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC
    )


def peak_memory_bytes(on_gpu: bool) -> int:
    """This worker's peak memory: CUDA memory allocated by torch on GPUs, else the process's peak RSS."""
    import resource

    return torch.cuda.max_memory_allocated() if on_gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class InThread:
    """A call run in a daemon thread from the moment this is made; :meth:`result` waits for it and raises its error
    in the calling thread."""

    def __init__(self, call, name: str):
        self.value, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(call,), name=name, daemon=True)
        self.thread.start()

    def _run(self, call) -> None:
        try:
            self.value = call()
        except BaseException as e:
            self.error = e

    def result(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value


class Prefetched:
    """An iterator whose first item is pulled in a background thread from the moment it is made (a worker's data
    pipeline starts while its model loads); an error in that pull is raised by the first ``next``."""

    def __init__(self, items):
        self.items = items
        self.first: InThread | None = InThread(lambda: next(items), "thresher-prefetch")

    def __iter__(self):
        return self

    def __next__(self):
        if self.first is None:
            return next(self.items)
        first, self.first = self.first, None
        return first.result()


# -- the recipe ---------------------------------------------------------------------------------------------------


class Recipe:
    """One worker's run: :meth:`setup`, :meth:`train` (evaluations and checkpoints on schedule), then the final
    :meth:`evaluate`, :meth:`checkpoint` and :meth:`export`; :meth:`result` is what rank 0 returns."""

    def __init__(self, cfg: TrainConfig, job: Job):
        self.cfg, self.job = cfg, job
        stopping = cfg.eval.early_stopping
        self.selection = {
            "metric": cfg.eval.metric,
            "mode": cfg.eval.mode,
            "min_delta": stopping.min_delta if stopping else 0.0,
        }
        self.started = self.eval_seconds = 0.0
        self.validation_shard: InThread | None = None  # asked for after the first step (ask_for_validation)
        self.validation_kept: list[dict] | None = None  # the validation batches, once read (validation_batches)
        self.run_tokens, self.run_steps, self.first_step = 0.0, 0, (0.0, 0.0)
        self.pending: Counter = Counter()  # metric sums since the last logged step, and their units
        self.unsettled: torch.Tensor | None = None  # the steps' sums on the device, not yet in ``pending``
        self.evaluated_rows: int | None = None  # the validation rows the workers' last evaluation read
        self.startup: dict[str, float] = {}  # seconds from the command's start to each point of this attempt

    def mark(self, point: str) -> None:
        """Record when this attempt reached ``point`` (the first time only)."""
        if self.job.started and point not in self.startup:
            self.startup[point] = round(time.time() - self.job.started, 3)

    # -- setup ----------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Join Ray Train: the state of the latest checkpoint (if any), the training shard -- whose pipeline starts
        pulling the first step's batches while the model loads -- then the model and engine, restored. The validation
        shard is asked for after the first step (:meth:`ask_for_validation`)."""
        import ray.train
        import ray.train.torch

        self.mark("worker_started")
        ctx = ray.train.get_context()
        checkpoint = ray.train.get_checkpoint()
        self.state, self.resumed_from = self.resumed_state(checkpoint, ctx.get_world_rank())
        self.train_shard = ray.train.get_dataset_shard("train")
        self.batches = Prefetched(self.windows())
        self.build(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device())
        if checkpoint:
            with checkpoint.as_directory() as folder:
                self.engine.load(folder)
            if len(self.state.random_states) == self.world:  # another worker count draws other numbers anyway
                restore_random_state(self.state.random_states[self.rank], self.device)
        self.state.nodes.append(node_count())
        self.last_saved = self.state.step if self.resumed_from is not None else None
        self.tracker = Tracker(self.job.tracking if self.rank == 0 else None)
        self.tracker.start(self.state.train_loss, self.state.evals, self.resumed_from)

    def build(self, rank: int, world: int, device: torch.device) -> None:
        """This worker's model (the method applied), objective and engine, on ``device`` (where Ray Train puts the
        batches: the worker's GPU, or the CPU)."""
        from thresher.train.models import compute_dtype, load_model

        cfg = self.cfg
        self.rank, self.world, self.device = rank, world, torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        if self.on_gpu:
            torch.cuda.set_device(self.device)
        self.dtype = compute_dtype(cfg, self.on_gpu)
        if self.rank == 0 and not self.on_gpu and cfg.model.dtype != "float32":
            log.warning("no GPU: training in float32 (model.dtype %s applies on GPUs)", cfg.model.dtype)
        torch.manual_seed(cfg.optim.seed)
        model = load_model(cfg, self.device)
        self.mark("model_loaded")
        self.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.quantized_layers = sum(type(m).__name__ == "Linear4bit" for m in model.modules())
        self.objective = cfg.objective.build(cfg, model, self.device, self.dtype)
        self.engine = make_engine(model, cfg, self.job.total_steps, self.dtype, self.device)
        self.checkpointer = Checkpointer(self.engine, self.rank)
        self.mark("engine_ready")

    def resumed_state(self, checkpoint, rank: int) -> tuple[TrainerState, int | None]:
        """The trainer state of Ray Train's latest checkpoint and its step, or a fresh state and None."""
        if not checkpoint:
            return TrainerState(tokens_by_source=[0] * len(self.job.sources)), None
        with checkpoint.as_directory() as folder:
            state = TrainerState.load(folder)
        state.resumes.append(state.step)
        if rank == 0:
            log.info("resumed from the checkpoint of step %d", state.step)
        return state, state.step

    # -- train ----------------------------------------------------------------------------------------------------

    def finished(self) -> bool:
        return self.state.step >= self.job.total_steps or self.stopped()

    def stopped(self) -> bool:
        stopping = self.cfg.eval.early_stopping
        return stopping is not None and stops_early(self.state.evals, patience=stopping.patience, **self.selection)

    def windows(self):
        """The micro-batches of each step, epoch after epoch, from the position the state is at."""
        per_step = self.cfg.optim.grad_accum
        while True:
            skip, window, batches = self.state.batches_in_epoch, [], 0
            for batch in self.train_shard.iter_torch_batches(
                batch_size=self.cfg.optim.batch_size, drop_last=True, dtypes=torch.long
            ):
                batches += 1
                if batches <= skip:  # given before the checkpoint this run resumed from
                    continue
                self.mark("first_batch")
                window.append(batch)
                if len(window) == per_step:
                    yield window
                    window = []
            if batches < per_step:
                raise RuntimeError(
                    "an epoch of the training data gave no optimizer step: fewer rows per worker than "
                    "optim.batch_size * optim.grad_accum"
                )
            self.state.epoch += 1
            self.state.batches_in_epoch = 0

    def train(self) -> None:
        cfg, state = self.cfg, self.state
        self.engine.train(True)
        self.started = time.perf_counter()
        while not self.finished():
            self.train_step(next(self.batches))
            self.ask_for_validation()
            if state.step % cfg.optim.log_every_steps == 0 or self.finished():
                self.log_train_metrics()
            if (
                self.job.has_validation
                and cfg.eval.every_steps
                and state.step % cfg.eval.every_steps == 0
                and state.step < self.job.total_steps
            ):
                self.evaluate()
                if not self.stopped():  # the run's last evaluation is its result (metrics.json), not reported here
                    report_evaluation(state.evals[-1])
            if state.step % cfg.checkpoint.every_steps == 0 or self.finished():
                self.checkpoint({"train_loss": state.train_loss[-1]["loss"]} if state.train_loss else {})
        self.settle()
        self.train_seconds = self.training_seconds()

    def training_seconds(self) -> float:
        """Seconds since :meth:`train` started, less those spent evaluating and waiting for checkpoints."""
        return time.perf_counter() - self.started - self.eval_seconds - self.checkpointer.blocked_seconds

    def train_step(self, window: list[dict]) -> None:
        """One optimizer step over the ``window`` of micro-batches. Its sums stay on the batches' device, added up
        until :meth:`settle`: the host never waits for the device within a step, so it queues the next one."""
        device, names = self.device, self.objective.metrics
        units = device_sum(
            [
                torch.stack(
                    [torch.as_tensor(self.objective.units(b), dtype=torch.float64, device=device) for b in window]
                ).sum()
            ]
        )
        scale = self.world / units.clamp(min=1.0)  # gradients are averaged over workers: this makes it the global mean
        sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=device)
        tokens = torch.zeros(max(len(self.job.sources), 1), dtype=torch.float64, device=device)
        for i, batch in enumerate(window):
            loss, metrics = self.objective.loss(self.engine, batch, sync=i == len(window) - 1)
            self.engine.backward(loss * scale.to(loss.dtype))
            sums += metric_sums(self.objective, batch, metrics, device)
            row_tokens = batch["attention_mask"].reshape(len(batch["source"]), -1).sum(1).to(torch.float64)
            tokens.index_add_(0, batch["source"], row_tokens)
        self.engine.step()
        totals = torch.cat([device_sum([sums[:-1], tokens]), units])
        self.unsettled = totals if self.unsettled is None else self.unsettled + totals
        self.state.step += 1
        self.state.batches_in_epoch += self.cfg.optim.grad_accum
        self.run_steps += 1
        if self.run_steps == 1:  # the first step also waits for the data pipeline to start and warms up
            self.settle()
            self.first_step = (self.training_seconds(), self.run_tokens)
            self.mark("first_step")
        if self.rank == 0 and self.job.progress is not None:
            self.job.progress.put.remote({"train_step": self.state.step})

    def settle(self) -> None:
        """Wait for the device and take the steps' sums since the last call into the metrics and token counts."""
        if self.unsettled is None:
            if self.on_gpu:
                torch.cuda.synchronize(self.device)
            return
        values, self.unsettled = self.unsettled.tolist(), None
        names, state = self.objective.metrics, self.state
        by_source = values[len(names) : -1]
        self.pending.update({**dict(zip(names, values)), "units": values[-1]})
        state.tokens += int(sum(by_source))
        state.tokens_by_source = [int(a + b) for a, b in zip(state.tokens_by_source or [0] * len(by_source), by_source)]
        self.run_tokens += sum(by_source)

    def log_train_metrics(self) -> None:
        self.settle()
        units = max(self.pending.pop("units", 0.0), 1.0)
        means = {k: v / units for k, v in self.pending.items()}
        self.pending = Counter()
        self.state.train_loss.append({"step": self.state.step, **means})
        self.tracker.log_train_loss(self.state.step, means["loss"])
        if self.rank == 0:
            log.info("step %d/%d train_loss %.4f", self.state.step, self.job.total_steps, means["loss"])

    # -- evaluate -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> None:
        """Evaluate on the validation shards of all workers; record it (and export it if it is the best one)."""
        self.settle()  # the steps' work queued on the device is not the evaluation's
        at = time.perf_counter()
        self.engine.train(False)
        names = self.objective.metrics
        sums = torch.zeros(len(names) + 2, dtype=torch.float64, device=self.device)  # the metrics, units, rows
        for batch in self.validation_batches():
            sums[:-1] += metric_sums(self.objective, batch, self.objective.loss(self.engine, batch)[1], self.device)
            sums[-1] += len(batch["input_ids"])
        self.engine.train(True)
        *totals, units, rows = all_sum([sums], self.device)
        self.evaluated_rows = int(rows)
        if not units:
            log.warning("the validation data gave nothing to evaluate")
        self.state.evals.append({"step": self.state.step, **self.objective.means(dict(zip(names, totals)), units)})
        self.tracker.log_eval(self.state.evals[-1])
        if self.cfg.eval.save_best and best_index(self.state.evals, **self.selection) == len(self.state.evals) - 1:
            self.export()
        self.eval_seconds += time.perf_counter() - at

    def ask_for_validation(self) -> None:
        """Ask for this worker's validation shard in a thread, once (every worker does, after its first step or at
        its first evaluation: the barrier Ray Train's ``get_dataset_shard`` is). Its Ray Data coordinator, a process
        of its own, then starts beside the training: it neither competes with the first step for the CPUs nor
        delays the first evaluation."""
        if self.job.has_validation and self.validation_shard is None:
            import ray.train

            self.validation_shard = InThread(lambda: ray.train.get_dataset_shard("validation"), "thresher-validation")

    def validation_batches(self) -> Iterator[dict]:
        """This worker's validation batches: read from its shard the first time and kept in memory when they take at
        most ``VALIDATION_KEPT_BYTES`` (each later evaluation then starts no data pipeline), else read every time."""
        if self.validation_kept is not None:
            yield from self.validation_kept
            return
        self.ask_for_validation()
        assert self.validation_shard is not None
        kept: list[dict] | None = []
        size = 0
        for batch in self.validation_shard.result().iter_torch_batches(
            batch_size=self.cfg.optim.batch_size, dtypes=torch.long
        ):
            size += sum(t.numel() * t.element_size() for t in batch.values())
            if kept is not None and size <= VALIDATION_KEPT_BYTES:
                kept.append(batch)
            else:
                kept = None
            yield batch
        self.validation_kept = kept

    # -- checkpoint and export ----------------------------------------------------------------------------------

    def checkpoint(self, metrics: dict | None = None) -> None:
        self.settle()  # the state's token counts are the steps'; their work on the device is not the checkpoint's
        self.state.random_states = random_states(self.device)
        self.checkpointer.save(self.state, {"step": self.state.step, **(metrics or {})})
        self.last_saved = self.state.step

    def export(self) -> None:
        from thresher.train.export import export_model

        exported = self.engine.state_dict()  # a collective with ZeRO-3 and FSDP2: every rank calls it
        if self.rank == 0:
            export_model(
                self.engine.module, self.job.tokenizer, self.cfg, self.job.storage, exported, lineage=self.job.lineage
            )

    def finish(self) -> None:
        """The final evaluation (unless the last step had one), checkpoint (unless saved) and export (unless the
        best evaluation's model was exported when it was made)."""
        if self.job.has_validation and (not self.state.evals or self.state.evals[-1]["step"] != self.state.step):
            self.evaluate()
        if self.last_saved != self.state.step:  # the last step fell between checkpoints (a finished run saves none)
            self.checkpoint()
        self.checkpointer.wait()  # written: its seconds and bytes count, and a failed write fails the run here
        (self.checkpoint_bytes,) = all_sum([self.checkpointer.bytes], self.device)  # every rank's part
        self.best = best_summary(self.state.evals, **self.selection)
        if not (self.cfg.eval.save_best and self.best):
            self.export()

    def result(self) -> dict:
        cfg, state, seconds, world = self.cfg, self.state, self.train_seconds, self.world
        run_tokens, run_steps, first_step = self.run_tokens, self.run_steps, self.first_step
        final_eval = state.evals[-1] if state.evals else {}
        result = {
            "steps": state.step,
            "train_loss": state.train_loss,
            "eval_loss": final_eval.get("loss"),
            "eval_perplexity": final_eval.get("perplexity"),
            **{f"eval_{k}": final_eval.get(k) for k in self.objective.metrics if k != "loss"},
            "evals": state.evals,
            "tokens_per_s": run_tokens / seconds if run_steps else None,
            "tokens_per_s_per_worker": run_tokens / seconds / world if run_steps else None,
            "tokens_per_s_after_first_step": (run_tokens - first_step[1]) / (seconds - first_step[0])
            if run_steps > 1
            else None,
            "first_step_seconds": first_step[0] if run_steps else None,
            "train_seconds": seconds,
            "eval_seconds": self.eval_seconds,
            "checkpoint_seconds": self.checkpointer.blocked_seconds,
            "checkpoints": {
                "count": self.checkpointer.count,
                "blocked_seconds": self.checkpointer.blocked_seconds,
                "write_seconds": self.checkpointer.write_seconds,
                "bytes": int(self.checkpoint_bytes),
            },
            "steps_this_run": run_steps,
            "tokens": state.tokens,
            "tokens_by_source": dict(zip(self.job.sources, state.tokens_by_source)),
            "resumed_from_step": self.resumed_from,
            "resumes": state.resumes,
            "num_workers": world,
            "nodes": state.nodes,
            "method": cfg.method,
            "device": "cuda" if self.on_gpu else "cpu",
            "dtype": str(self.dtype).removeprefix("torch."),
            "trainable_params": self.trainable_params,
            "quantized_layers": self.quantized_layers,
            "startup_seconds": self.startup,
            "evaluated_rows": self.evaluated_rows,
            "peak_memory_bytes": peak_memory_bytes(self.on_gpu),
            "best": self.best,
            "stopped_early": self.stopped() and state.step < self.job.total_steps,
            "model_step": self.best["step"] if cfg.eval.save_best and self.best else state.step,
        }
        self.tracker.finish(result)
        return result


class FirstStepError(RuntimeError):
    """A worker failed before its attempt's first optimizer step was done. When the workers that fail all fail so,
    with the same error, the failure is deterministic (a bug, a wrong setting): the driver does not retry it."""


def train_loop_per_worker(loop_config: dict) -> dict:
    """Ray Train's per-worker function; rank 0's return value is the run's metrics. A worker on the driver's machine
    works in the driver's folder (Ray Train starts it in one of its own), so relative local paths mean the same."""
    if os.path.isdir(loop_config["job"].workdir):
        os.chdir(loop_config["job"].workdir)
    recipe = Recipe(TrainConfig.model_validate(loop_config["config"]), loop_config["job"])
    try:
        recipe.setup()
        recipe.train()
    except Exception as e:
        if recipe.run_steps:
            raise
        raise FirstStepError(f"{type(e).__name__}: {e}") from e
    recipe.finish()
    return recipe.result()
