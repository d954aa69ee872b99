"""Loading tokenizers and models (local folder, cached hub id, ``pkg:`` folder, GGUF) and applying the method's
adapter (:mod:`thresher.train.methods`).

Nothing is ever downloaded: loads use ``local_files_only``. Precision: on GPUs the frozen base of the PEFT
methods is loaded in ``model.dtype`` and the trainable parameters stay float32 (PEFT upcasts adapters), the
forward pass runs under ``torch.autocast(model.dtype)``; full fine-tuning keeps float32 master weights (DDP
with autocast, or DeepSpeed's bf16/fp16 mode). Without a GPU everything runs in float32 (bf16 matmuls on CPUs
without AMX are slower than fp32, and fp16 autocast is not supported there).
"""

from __future__ import annotations

import logging

import torch

import thresher.models.generation
from thresher.core.config import ConfigError
from thresher.models.generation import local_kwargs
from thresher.models.resolve import resolve_model
from thresher.train.config import ModelOptions, TrainConfig, TrainModelOptions
from thresher.train.methods import fused_loss

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def model_dir(options: ModelOptions) -> str:
    """The folder or hub id to load from (``thresher.models.resolve``)."""
    return resolve_model(options.name_or_path)


def _load_kwargs(options: ModelOptions) -> dict:
    return local_kwargs(options.gguf_file)


def load_tokenizer(options: ModelOptions):
    return thresher.models.generation.load_tokenizer(options.name_or_path, options.gguf_file)


def compute_dtype(cfg: TrainConfig, on_gpu: bool) -> torch.dtype:
    """The autocast / DeepSpeed precision: ``model.dtype`` on GPUs (fp16 without bf16 support), float32 on CPU."""
    if not on_gpu:
        return torch.float32
    dtype = DTYPES[cfg.model.dtype]
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bfloat16: using float16")
        return torch.float16
    return dtype


def load_base_model(options: ModelOptions, dtype: torch.dtype | None = None, **kwargs):
    """The pretrained causal LM of ``options`` (in ``dtype``, default ``model.dtype``), GGUF dequantized."""
    from transformers import AutoModelForCausalLM

    kwargs = {
        **_load_kwargs(options),
        "attn_implementation": options.attn_implementation or "sdpa",
        "dtype": dtype or DTYPES[options.dtype],
        **kwargs,
    }
    model = AutoModelForCausalLM.from_pretrained(model_dir(options), **kwargs)
    drop_gguf_record(model)
    return model


def load_model(cfg: TrainConfig, device: torch.device):
    """The pretrained causal LM, ready for ``cfg.method`` (PEFT applied), on ``device``: on a GPU the weights are read
    straight onto it (no copy in host memory, converted to their dtype there)."""
    on_gpu = device.type == "cuda"
    dtype = compute_dtype(cfg, on_gpu)
    placement = {"device_map": {"": device}} if on_gpu else {}
    # the frozen base of the PEFT methods is stored in the compute dtype; full fine-tuning keeps fp32 masters
    model = load_base_model(cfg.model, **cfg.adapter.load_kwargs(dtype), **placement)
    model.config.use_cache = False
    if cfg.model.kernels == "liger":
        apply_liger(model, cfg)
    if cfg.optim.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return apply_method(model, cfg)


def require_liger(model_type: str) -> None:
    """ConfigError naming ``model.kernels`` where Liger cannot patch ``model_type`` here: liger-kernel (or Triton) is
    not installed, or it has no kernels for the architecture."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError as e:
        raise ConfigError(
            f"model.kernels: liger needs the liger-kernel package (and Triton, which CUDA builds of "
            f"PyTorch bring) where the model trains: pip install liger-kernel ({e})"
        ) from None
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        raise ConfigError(
            f"model.kernels: Liger has no kernels for model type {model_type!r} (it has "
            f"{', '.join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN))}); leave model.kernels out"
        )


def check_liger(options: TrainModelOptions) -> None:
    """:func:`require_liger` for the model of ``options`` (its config alone is read)."""
    from transformers import AutoConfig

    require_liger(AutoConfig.from_pretrained(model_dir(options), **_load_kwargs(options)).model_type)


def apply_liger(model, cfg: TrainConfig) -> None:
    """Patch Liger's RMSNorm, RoPE and SwiGLU into ``model`` (as loaded, before PEFT) and, with :func:`fused_loss`,
    its forward: given ``labels`` in training mode, it returns the loss and no logits."""
    require_liger(model.config.model_type)
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(
        model=model,
        rope=True,
        rms_norm=True,
        swiglu=True,
        cross_entropy=False,
        fused_linear_cross_entropy=fused_loss(cfg),
    )


def drop_gguf_record(model) -> None:
    """Forget that the weights came from a GGUF file: they were dequantized at load, and transformers refuses to
    save a model that still says it is GGUF-quantized."""
    qc = getattr(model.config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if method is not None and str(getattr(method, "value", method)) == "gguf":
        del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False


def apply_method(model, cfg: TrainConfig):
    """``model`` (as loaded) with the adapter of ``cfg.method`` applied (``Adapter.wrap``; full fine-tuning: itself)."""
    return cfg.adapter.wrap(model, cfg)
