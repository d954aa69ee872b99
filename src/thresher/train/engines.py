"""Engines: how a worker holds, updates and checkpoints the model. One interface (:class:`Engine`) over DDP
(:class:`DDPEngine`), DeepSpeed ZeRO (:class:`DeepSpeedEngine`) and FSDP2 (:class:`FSDP2Engine`); the training
loop calls only that interface.

Every engine uses AdamW with linear warmup then cosine decay to 0 over the run's steps. With ``optim.compile`` each
engine compiles the decoder layers in place (:func:`compile_layers`) before it wraps the model.
"""

from __future__ import annotations

import contextlib
import logging
import os
from abc import ABC, abstractmethod

import torch
import torch.distributed as dist

from thresher.train.checkpoints import HostCopy, Snapshot
from thresher.train.config import TrainConfig

log = logging.getLogger(__name__)

TORCH_STATE_FILE = "training_state.pt"
DEEPSPEED_TAG = "deepspeed"
FSDP_STATE_DIR = "fsdp"


class Engine(ABC):
    """The model of one worker and its optimizer. A step is: ``forward`` and ``backward`` for each micro-batch of
    the step (``sync`` on the last one), then ``step``."""

    module: torch.nn.Module  # the model as loaded (PEFT applied), unwrapped: what is exported
    sharded: bool = False  # every rank writes part of a checkpoint (else rank 0 writes it all)
    pending: Snapshot | None = None  # a checkpoint's host copy the next update must wait for

    @abstractmethod
    def outputs(self, sync: bool = True, **inputs):
        """The model's outputs (``.logits``; ``.loss`` given ``labels``); ``sync=False`` on micro-batches whose
        gradients need no all-reduce yet."""

    def forward(self, sync: bool = True, **inputs) -> torch.Tensor:
        """The logits."""
        return self.outputs(sync, **inputs).logits

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None:
        """Add the gradients of ``loss`` to the step's."""

    @abstractmethod
    def step(self) -> None:
        """Apply the step's gradients (clipped to ``optim.max_grad_norm``) and advance the learning-rate schedule."""

    def train(self, mode: bool) -> None:
        self.module.train(mode)

    @abstractmethod
    def snapshot(self, folder: str, rank: int) -> Snapshot:
        """This rank's part of a checkpoint (trainable weights, optimizer, schedule), copied to host memory, to be
        written into ``folder`` by :meth:`Snapshot.write` while training goes on."""

    def before_update(self) -> None:
        """Before the optimizer changes the weights: wait for a checkpoint's copy of them."""
        if self.pending is not None:
            self.pending.before_update()
            self.pending = None

    @abstractmethod
    def load(self, folder: str) -> None:
        """Restore what :meth:`save` wrote."""

    def state_dict(self) -> dict | None:
        """The full state dict to export, on rank 0, where the module's own parameters are not the whole model
        (a collective: every rank calls it); None: export the module."""
        return None


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's decoder layers: its modules of the classes in ``_no_split_modules``."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def compile_layers(model: torch.nn.Module) -> None:
    """``optim.compile``: ``torch.compile`` each decoder layer (one graph, which every layer reuses), or the whole
    model where it names no layers. In place (``nn.Module.compile``): the parameters keep their names, so checkpoints
    and exports are those of the uncompiled model."""
    for module in decoder_layers(model) or [model]:
        module.compile()


def _optimizer(params, cfg: TrainConfig, total_steps: int, adam=torch.optim.AdamW, fused: bool = False):
    """AdamW (``fused``: one kernel for all parameters) and the schedule."""
    from transformers import get_cosine_schedule_with_warmup

    optimizer = adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, **({"fused": True} if fused else {}))
    return optimizer, get_cosine_schedule_with_warmup(optimizer, cfg.optim.warmup_steps, total_steps)


def _fusable(params: list) -> bool:
    """Whether fused AdamW takes these parameters: floating point, all on one CUDA or CPU device."""
    return (
        bool(params)
        and all(p.is_floating_point() for p in params)
        and len({p.device for p in params}) == 1
        and params[0].device.type in ("cuda", "cpu")
    )


class DDPEngine(Engine):
    """DDP (or a single worker) with autocast and, for fp16, a gradient scaler; rank 0 writes the trainable
    weights, optimizer, scheduler and scaler to ``training_state.pt``."""

    def __init__(self, model, cfg: TrainConfig, total_steps: int, dtype: torch.dtype, device: torch.device):
        from torch.nn.parallel import DistributedDataParallel

        self.cfg, self.device = cfg, device
        self.module = model
        if not cfg.adapter.quantized:  # a quantized base (QLoRA's 4-bit) was placed on the GPU as it loaded
            model = model.to(device)
        if cfg.optim.compile:
            compile_layers(model)
        if dist.is_initialized() and dist.get_world_size() > 1:
            model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        self.model = model
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer, self.scheduler = _optimizer(self.params, cfg, total_steps, fused=_fusable(self.params))
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.autocast = lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def outputs(self, sync: bool = True, **inputs):
        no_sync = getattr(self.model, "no_sync", None)
        with contextlib.nullcontext() if sync or no_sync is None else no_sync(), self.autocast():
            return self.model(**inputs)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> None:
        self.before_update()
        self.scaler.unscale_(self.optimizer)
        if self.cfg.optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def snapshot(self, folder: str, rank: int) -> Snapshot:
        if rank != 0:
            return Snapshot()
        trainable = {n: p for n, p in self.module.named_parameters() if p.requires_grad}
        state = {
            "trainable": trainable,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        return Snapshot({os.path.join(folder, TORCH_STATE_FILE): HostCopy(state, self.device)})

    def load(self, folder: str) -> None:
        state = torch.load(os.path.join(folder, TORCH_STATE_FILE), map_location="cpu", weights_only=True)
        unexpected = self.module.load_state_dict(state["trainable"], strict=False).unexpected_keys
        if unexpected:
            raise RuntimeError(f"the checkpoint does not fit this model: unexpected {unexpected[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


class DeepSpeedEngine(Engine):
    """DeepSpeed ZeRO-2/3 over the process group Ray Train set up (gloo on CPU, NCCL on GPU). DeepSpeed's own
    ``step`` runs after every micro-batch's backward and updates at the accumulation boundary; every rank writes
    its ZeRO shards."""

    sharded = True

    def __init__(self, model, cfg: TrainConfig, total_steps: int, dtype: torch.dtype, device: torch.device):
        import deepspeed

        on_gpu = device.type == "cuda"
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

            optimizer, scheduler = _optimizer(params, cfg, total_steps, DeepSpeedCPUAdam)
        else:
            optimizer, scheduler = _optimizer(params, cfg, total_steps)
        model = model.to(device)
        self.device = device
        if cfg.optim.compile:
            compile_layers(model)
        self.model, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config, dist_init_required=False
        )
        self.module = self.model.module
        self.stage = ds.stage

    def outputs(self, sync: bool = True, **inputs):
        return self.model(**inputs)

    def backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss, scale_wrt_gas=False)
        if self.model.is_gradient_accumulation_boundary():
            self.before_update()
        self.model.step()  # an update only at the accumulation boundary

    def step(self) -> None:
        pass  # done by the last micro-batch's backward

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    def snapshot(self, folder: str, rank: int) -> Snapshot:
        """DeepSpeed's ``save_checkpoint`` with a checkpoint engine that keeps host copies instead of writing."""
        snapshot = Snapshot()
        writer = self.model.checkpoint_engine
        self.model.checkpoint_engine = host_copy_engine(snapshot, self.device)
        try:
            self.model.save_checkpoint(folder, tag=DEEPSPEED_TAG)
        finally:
            self.model.checkpoint_engine = writer
        return snapshot

    def load(self, folder: str) -> None:
        path, _ = self.model.load_checkpoint(folder, tag=DEEPSPEED_TAG)
        if path is None:
            raise RuntimeError(f"no DeepSpeed checkpoint in {folder}")

    def state_dict(self) -> dict | None:
        """ZeRO-3: the parameters gathered on rank 0."""
        if self.stage != 3:
            return None
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
            if dist.get_rank() == 0:
                return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        return None


class FSDP2Engine(Engine):
    """FSDP2 (``torch.distributed.fsdp.fully_shard``): every decoder layer (the model's ``_no_split_modules``), then
    the whole model, sharded over the workers (gloo on CPU, NCCL on GPU); on GPUs the parameters are gathered in
    the compute dtype and gradients reduced in float32. Checkpoints: each rank's shards of the model and optimizer
    with ``torch.distributed.checkpoint`` in ``fsdp/``, and the schedule in ``training_state.pt``."""

    sharded = True

    def __init__(self, model, cfg: TrainConfig, total_steps: int, dtype: torch.dtype, device: torch.device):
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        self.cfg = cfg
        # checkpoints are written in a background thread, whose collectives need a group of their own (and CPU)
        self.checkpoint_group = dist.new_group(backend="gloo")
        model = model.to(device)
        policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        if cfg.optim.compile:
            compile_layers(model)
        for module in decoder_layers(model):
            fully_shard(module, mp_policy=policy, reshard_after_forward=cfg.fsdp.reshard_after_forward)
        self.module = fully_shard(model, mp_policy=policy, reshard_after_forward=cfg.fsdp.reshard_after_forward)
        self.optimizer, self.scheduler = _optimizer(self.module.parameters(), cfg, total_steps)

    def outputs(self, sync: bool = True, **inputs):
        self.module.set_requires_gradient_sync(sync)
        return self.module(**inputs)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        self.before_update()
        if self.cfg.optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def snapshot(self, folder: str, rank: int) -> Snapshot:
        """The shards staged in host memory by ``async_save``, which writes them in its own thread."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(self.module, self.optimizer)
        future = dcp.async_save(
            {"model": model_state, "optimizer": optimizer_state},
            checkpoint_id=os.path.join(folder, FSDP_STATE_DIR),
            process_group=self.checkpoint_group,
        )
        snapshot = Snapshot(futures=[future])
        if rank == 0:
            snapshot.files[os.path.join(folder, TORCH_STATE_FILE)] = HostCopy(
                {"scheduler": self.scheduler.state_dict()}, torch.device("cpu")
            )
        return snapshot

    def load(self, folder: str) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optimizer_state = get_state_dict(self.module, self.optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=os.path.join(folder, FSDP_STATE_DIR))
        set_state_dict(
            self.module, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
        )
        schedule = torch.load(os.path.join(folder, TORCH_STATE_FILE), map_location="cpu", weights_only=True)
        self.scheduler.load_state_dict(schedule["scheduler"])

    def state_dict(self) -> dict | None:
        """The full parameters, gathered to rank 0's CPU."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return full if dist.get_rank() == 0 else None


def host_copy_engine(snapshot: Snapshot, device: torch.device):
    """A DeepSpeed checkpoint engine whose ``save`` adds a host copy of the state to ``snapshot``."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class HostCopyEngine(TorchCheckpointEngine):
        def save(self, state_dict, path: str) -> None:
            snapshot.files[path] = HostCopy(state_dict, device)

        def preserves_storage_sharing(self) -> bool:
            return False  # the host copy is the clone DeepSpeed would make on the device

    return HostCopyEngine()


def make_engine(model, cfg: TrainConfig, total_steps: int, dtype: torch.dtype, device: torch.device) -> Engine:
    """The engine of ``cfg`` on ``device``: DeepSpeed with ``deepspeed``, FSDP2 with ``fsdp``, else DDP."""
    if cfg.deepspeed:
        return DeepSpeedEngine(model, cfg, total_steps, dtype, device)
    if cfg.fsdp:
        return FSDP2Engine(model, cfg, total_steps, dtype, device)
    return DDPEngine(model, cfg, total_steps, dtype, device)
