"""The per-worker training loop that Ray Train's ``TorchTrainer`` runs on every worker.

Each worker loads the model, wraps it (DDP through ``ray.train.torch.prepare_model``, or a DeepSpeed ZeRO
engine), and streams its shard of the packed rows with ``get_dataset_shard("train").iter_torch_batches``.
An optimizer step takes ``optim.grad_accum`` micro-batches of ``optim.batch_size`` rows per worker; the loss
is the mean over the trained tokens of the whole step across all workers (every token weighs the same,
however the tokens fall into rows and workers). AdamW, linear warmup then cosine decay to 0.

Checkpoints (``ray.train.report(metrics, checkpoint=...)``) every ``checkpoint.every_steps`` and at the end
hold the trainable weights, optimizer, scheduler, loss-scaler and :class:`TrainerState` (step, epoch, position
in the epoch, loss history); with DeepSpeed every rank writes its ZeRO shards into the same checkpoint. A run
restarted by ``FailureConfig`` or re-run with the same ``checkpoint.storage_path`` resumes from the latest
checkpoint: weights, optimizer, scheduler and step are restored exactly; for the data, each worker skips the
micro-batches its shard already gave in the current epoch. Ray Data does not promise the same rows in the same
order to the same worker across executions (blocks are handed to whichever worker asks first), so the rows a
resumed epoch skips are the same in number, not necessarily in identity.

A checkpoint counts once Ray Train's controller has collected every worker's report of it; the controller polls
the workers every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (2 s), so a worker that dies within that time of a report
can take that checkpoint with it, and the run resumes from the one before.

Test hook: ``THRESHER_FAULT_KILL_AT_STEP=N`` and ``THRESHER_FAULT_MARKER=PATH`` in the driver's environment make
the last-ranked worker SIGKILL itself after step N, once (the marker file records that it did), two controller
polls after the step, when the controller has collected the reports before it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from cluster.storage import Storage
from training.config import VIRTUAL_TOKEN_METHODS, TrainConfig
from training.data import IGNORE

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
TORCH_STATE_FILE = "training_state.pt"
DEEPSPEED_TAG = "deepspeed"


@dataclass
class Job:
    """What the driver hands every worker besides the config."""

    total_steps: int
    storage: Storage
    tokenizer: Any
    has_validation: bool
    kill_at_step: int | None = None
    kill_marker: str | None = None
    progress: Any = None  # cluster.runtime.ProgressCounter: rank 0 puts the step there
    lineage: dict | None = None  # the data read (cluster.lineage), recorded in the model's thresher.json


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    train_loss: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    tokens: int = 0
    resumes: list[int] = field(default_factory=list)  # the checkpoint step each resumed attempt started from

    def save(self, folder: str) -> None:
        Path(folder, STATE_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, folder: str) -> "TrainerState":
        return cls(**json.loads(Path(folder, STATE_FILE).read_text()))


# -- engines: one interface over DDP and DeepSpeed ----------------------------------------------------------


class TorchEngine:
    """DDP (or a single worker) with AdamW, warmup+cosine, autocast and, for fp16, a gradient scaler."""

    sharded = False

    def __init__(self, model, cfg: TrainConfig, total_steps: int, dtype: torch.dtype):
        import ray.train.torch
        from transformers import get_cosine_schedule_with_warmup

        self.cfg = cfg
        self.module = model
        self.model = ray.train.torch.prepare_model(model, move_to_device=cfg.method != "qlora")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, cfg.optim.warmup_steps, total_steps)
        device_type = next(model.parameters()).device.type
        self.scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)
        self.autocast = lambda: torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32)

    def forward(self, sync: bool = True, **inputs):
        no_sync = getattr(self.model, "no_sync", None)
        with (contextlib.nullcontext() if sync or no_sync is None else no_sync()), self.autocast():
            return self.model(**inputs).logits

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.cfg.optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    def save(self, folder: str, rank: int) -> None:
        if rank == 0:
            trainable = {n: p.detach().cpu() for n, p in self.module.named_parameters() if p.requires_grad}
            torch.save({"trainable": trainable, "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()},
                       os.path.join(folder, TORCH_STATE_FILE))

    def load(self, folder: str) -> None:
        state = torch.load(os.path.join(folder, TORCH_STATE_FILE), map_location="cpu", weights_only=True)
        unexpected = self.module.load_state_dict(state["trainable"], strict=False).unexpected_keys
        if unexpected:
            raise RuntimeError(f"the checkpoint does not fit this model: unexpected {unexpected[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def export_state_dict(self) -> dict | None:
        return None  # the module itself is saved


class DeepSpeedEngine:
    """DeepSpeed ZeRO-2/3 over the process group Ray Train set up (gloo on CPU, NCCL on GPU)."""

    sharded = True

    def __init__(self, model, cfg: TrainConfig, total_steps: int, dtype: torch.dtype):
        import deepspeed
        from transformers import get_cosine_schedule_with_warmup

        on_gpu = torch.cuda.is_available() and cfg.scaling.use_gpu
        if not on_gpu:
            # The shared-memory all-reduce op is C++ compiled at first use (minutes on a small machine) and only
            # speeds up single-node CPU all-reduce; without it DeepSpeed uses the gloo process group.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        ds = cfg.deepspeed
        zero: dict = {"stage": ds.stage}
        offload_optimizer = ds.offload_optimizer and on_gpu
        if offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu"}
        if ds.offload_params and on_gpu:
            zero["offload_param"] = {"device": "cpu"}
        if (ds.offload_optimizer or ds.offload_params) and not on_gpu:
            log.info("deepspeed offload has no effect without GPUs: parameters and optimizer are in CPU memory")
        config = {
            "train_micro_batch_size_per_gpu": cfg.optim.batch_size,
            "gradient_accumulation_steps": cfg.optim.grad_accum,
            "gradient_clipping": cfg.optim.max_grad_norm or 0.0,
            "zero_optimization": zero,
            "bf16": {"enabled": dtype == torch.bfloat16},
            "fp16": {"enabled": dtype == torch.float16},
            "zero_allow_untested_optimizer": True,
            "zero_force_ds_cpu_optimizer": False,
            "steps_per_print": 1 << 30,
        }
        params = [p for p in model.parameters() if p.requires_grad]
        if offload_optimizer:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.optim.warmup_steps, total_steps)
        if on_gpu:
            import ray.train.torch

            model = model.to(ray.train.torch.get_device())
        self.model, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                   config=config, dist_init_required=False)
        self.module = self.model.module
        self.stage = ds.stage

    def forward(self, sync: bool = True, **inputs):
        return self.model(**inputs).logits

    def backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss, scale_wrt_gas=False)

    def step(self) -> None:
        pass  # DeepSpeed steps at each micro-batch and updates at the accumulation boundary (see micro_step)

    def micro_step(self) -> None:
        self.model.step()

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    def save(self, folder: str, rank: int) -> None:
        self.model.save_checkpoint(folder, tag=DEEPSPEED_TAG)

    def load(self, folder: str) -> None:
        path, _ = self.model.load_checkpoint(folder, tag=DEEPSPEED_TAG)
        if path is None:
            raise RuntimeError(f"no DeepSpeed checkpoint in {folder}")

    def export_state_dict(self) -> dict | None:
        """The full (ZeRO-3: gathered, a collective) state dict on rank 0."""
        if self.stage != 3:
            return None
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
            if dist.get_rank() == 0:
                return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        return None


# -- the loop --------------------------------------------------------------------------------------------------


def model_inputs(batch: dict, method: str) -> dict:
    if method in VIRTUAL_TOKEN_METHODS:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}


def loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over trained labels (virtual-token logits, if any, are cut off)."""
    logits = logits[:, -labels.shape[1]:, :]
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def trained_tokens(labels: torch.Tensor) -> torch.Tensor:
    return (labels[:, 1:] != IGNORE).sum()


def all_sum(*values: float) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def train_step(engine, window: list[dict], method: str) -> tuple[float, float, float]:
    """One optimizer step over ``window`` micro-batches: (summed loss, trained tokens, input tokens), all workers."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    (n_global,) = all_sum(float(sum(trained_tokens(b["labels"]) for b in window)))
    scale = world / max(n_global, 1.0)  # gradients are averaged over workers: this makes it the global token mean
    total = 0.0
    for i, batch in enumerate(window):
        logits = engine.forward(sync=i == len(window) - 1, **model_inputs(batch, method))
        loss = loss_sum(logits, batch["labels"])
        engine.backward(loss * scale)
        if isinstance(engine, DeepSpeedEngine):
            engine.micro_step()
        total += loss.item()
    engine.step()
    tokens = float(sum(b["attention_mask"].sum() for b in window))
    loss_total, tokens_total = all_sum(total, tokens)
    return loss_total, n_global, tokens_total


@torch.no_grad()
def evaluate(engine, shard, cfg: TrainConfig) -> tuple[float | None, float | None]:
    """Mean token loss and perplexity over the validation shards of all workers."""
    engine.train(False)
    total, count = 0.0, 0.0
    for batch in shard.iter_torch_batches(batch_size=cfg.optim.batch_size, dtypes=torch.long):
        logits = engine.forward(**model_inputs(batch, cfg.method))
        total += loss_sum(logits, batch["labels"]).item()
        count += trained_tokens(batch["labels"]).item()
    engine.train(True)
    total, count = all_sum(total, count)
    if not count:
        log.warning("the validation data gave no trained tokens")
        return None, None
    return total / count, math.exp(min(total / count, 50.0))


def save_checkpoint(engine, state: TrainerState, rank: int, metrics: dict) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as folder:
        engine.save(folder, rank)
        if rank == 0:
            state.save(folder)
        keep = rank == 0 or engine.sharded
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if keep else None,
                         checkpoint_dir_name=f"step-{state.step:08d}")


def train_loop_per_worker(loop_config: dict) -> dict:
    """Ray Train's per-worker function; rank 0 returns the run's metrics."""
    import ray.train
    import ray.train.torch

    from training.export import export_model
    from training.models import compute_dtype, load_model

    cfg = TrainConfig.model_validate(loop_config["config"])
    job: Job = loop_config["job"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    on_gpu = cfg.scaling.use_gpu and torch.cuda.is_available()
    dtype = compute_dtype(cfg, on_gpu)
    if rank == 0 and not on_gpu and cfg.model.dtype != "float32":
        log.warning("no GPU: training in float32 (model.dtype %s applies on GPUs)", cfg.model.dtype)
    torch.manual_seed(cfg.optim.seed)

    model = load_model(cfg, on_gpu)
    engine = (DeepSpeedEngine if cfg.deepspeed else TorchEngine)(model, cfg, job.total_steps, dtype)
    state, resumed_from = TrainerState(), None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            engine.load(folder)
            state = TrainerState.load(folder)
        resumed_from = state.step
        state.resumes.append(state.step)
        if rank == 0:
            log.info("resumed from the checkpoint of step %d", state.step)
    last_saved = state.step if checkpoint else None

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation") if job.has_validation else None
    engine.train(True)
    started, run_tokens, run_steps, first_step = time.perf_counter(), 0.0, 0, (0.0, 0.0)
    pending_loss, pending_n = 0.0, 0.0

    eval_seconds = 0.0

    def run_eval() -> None:
        nonlocal eval_seconds
        at = time.perf_counter()
        loss, ppl = evaluate(engine, val_shard, cfg)
        state.evals.append({"step": state.step, "loss": loss, "perplexity": ppl})
        eval_seconds += time.perf_counter() - at

    while state.step < job.total_steps:
        skip, window, batches = state.batches_in_epoch, [], 0
        for batch in train_shard.iter_torch_batches(batch_size=cfg.optim.batch_size, drop_last=True,
                                                    dtypes=torch.long):
            batches += 1
            if batches <= skip:  # given before the checkpoint this run resumed from
                continue
            window.append(batch)
            if len(window) < cfg.optim.grad_accum:
                continue
            loss_total, n_trained, n_tokens = train_step(engine, window, cfg.method)
            window = []
            state.step += 1
            state.batches_in_epoch += cfg.optim.grad_accum
            state.tokens += int(n_tokens)
            run_tokens, run_steps = run_tokens + n_tokens, run_steps + 1
            if run_steps == 1:  # the first step also waits for the data pipeline to start and warms up
                first_step = (time.perf_counter() - started - eval_seconds, run_tokens)
            pending_loss, pending_n = pending_loss + loss_total, pending_n + n_trained
            done = state.step >= job.total_steps
            if rank == 0 and job.progress is not None:
                job.progress.put.remote({"train_step": state.step})
            if state.step % cfg.optim.log_every_steps == 0 or done:
                state.train_loss.append({"step": state.step, "loss": pending_loss / max(pending_n, 1.0)})
                pending_loss, pending_n = 0.0, 0.0
                if rank == 0:
                    log.info("step %d/%d train_loss %.4f", state.step, job.total_steps, state.train_loss[-1]["loss"])
            if val_shard is not None and cfg.eval.every_steps and state.step % cfg.eval.every_steps == 0 and not done:
                run_eval()
            if state.step % cfg.checkpoint.every_steps == 0 or done:
                save_checkpoint(engine, state, rank, {"step": state.step, "train_loss": state.train_loss[-1]["loss"]})
                last_saved = state.step
            if job.kill_at_step == state.step and rank == world - 1 and not os.path.exists(job.kill_marker):
                time.sleep(2 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)) + 1)
                Path(job.kill_marker).write_text(f"killed worker rank {rank} pid {os.getpid()} at step {state.step}")
                os.kill(os.getpid(), signal.SIGKILL)
            if done:
                break
        else:
            if batches < cfg.optim.grad_accum:
                raise RuntimeError("an epoch of the training data gave no optimizer step: fewer rows per worker than "
                                   "optim.batch_size * optim.grad_accum")
            state.epoch += 1
            state.batches_in_epoch = 0
    seconds = time.perf_counter() - started - eval_seconds  # training time: tokens/s leaves evaluations out

    if val_shard is not None:
        run_eval()
    if last_saved != state.step:  # e.g. the final step fell between checkpoints (a resumed finished run saves none)
        save_checkpoint(engine, state, rank, {"step": state.step})
    exported = engine.export_state_dict()
    if rank == 0:
        export_model(engine.module, job.tokenizer, cfg, job.storage, exported, lineage=job.lineage)
    final_eval = state.evals[-1] if state.evals else {}
    return {
        "steps": state.step,
        "train_loss": state.train_loss,
        "eval_loss": final_eval.get("loss"),
        "eval_perplexity": final_eval.get("perplexity"),
        "evals": state.evals,
        "tokens_per_s": run_tokens / seconds if run_steps else None,
        "tokens_per_s_per_worker": run_tokens / seconds / world if run_steps else None,
        "tokens_per_s_after_first_step": (run_tokens - first_step[1]) / (seconds - first_step[0])
        if run_steps > 1 else None,
        "first_step_seconds": first_step[0] if run_steps else None,
        "train_seconds": seconds,
        "steps_this_run": run_steps,
        "tokens": state.tokens,
        "resumed_from_step": resumed_from,
        "resumes": state.resumes,
        "num_workers": world,
        "method": cfg.method,
        "device": "cuda" if on_gpu else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
    }
