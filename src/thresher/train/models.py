"""Loading tokenizers and models (local folder, cached hub id, ``pkg:`` folder, GGUF) and applying the method.

Nothing is ever downloaded: loads use ``local_files_only``. Precision: on GPUs the frozen base of the PEFT
methods is loaded in ``model.dtype`` and the trainable parameters stay float32 (PEFT upcasts adapters), the
forward pass runs under ``torch.autocast(model.dtype)``; full fine-tuning keeps float32 master weights (DDP
with autocast, or DeepSpeed's bf16/fp16 mode). Without a GPU everything runs in float32 (bf16 matmuls on CPUs
without AMX are slower than fp32, and fp16 autocast is not supported there).
"""

from __future__ import annotations

import logging

import torch

from thresher.core.config import ConfigError
import thresher.models.generation
from thresher.models.generation import local_kwargs
from thresher.models.resolve import resolve_model
from thresher.train.config import ModelOptions, TrainConfig, TrainModelOptions

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_TARGETS = {
    **{t: _LLAMA_LIKE for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2",
                                "granite", "starcoder2")},
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}
"""LoRA's default ``target_modules`` per ``model_type``: every linear layer of attention and MLP; other
architectures get PEFT's ``all-linear``."""


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

    kwargs = {**_load_kwargs(options), "attn_implementation": options.attn_implementation or "sdpa",
              "dtype": dtype or DTYPES[options.dtype], **kwargs}
    model = AutoModelForCausalLM.from_pretrained(model_dir(options), **kwargs)
    drop_gguf_record(model)
    return model


def load_model(cfg: TrainConfig, device: torch.device):
    """The pretrained causal LM, ready for ``cfg.method`` (PEFT applied), on ``device``: on a GPU the weights are read
    straight onto it (no copy in host memory, converted to their dtype there)."""
    on_gpu = device.type == "cuda"
    dtype = compute_dtype(cfg, on_gpu)
    kwargs = {"device_map": {"": device}} if on_gpu else {}
    if cfg.tuning == "qlora":
        kwargs["quantization_config"] = _bnb_config(dtype)
    # the frozen base of the PEFT methods is stored in the compute dtype; full fine-tuning keeps fp32 masters
    model = load_base_model(cfg.model, dtype if cfg.tuning != "full" else torch.float32, **kwargs)
    model.config.use_cache = False
    if cfg.model.kernels == "liger":
        apply_liger(model, cfg)
    if cfg.optim.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return apply_method(model, cfg)


def fused_loss(cfg: TrainConfig) -> bool:
    """Whether the SFT loss is Liger's fused linear cross-entropy, computed in the model's forward from the last hidden
    states and the output head's weight without materializing the logits: ``model.kernels: liger`` with method full,
    lora or qlora, except under DeepSpeed ZeRO-3 (the kernel reads the head's weight directly, and ZeRO-3 gathers a
    weight only for its own module's forward)."""
    return (cfg.model.kernels == "liger" and cfg.method in ("full", "lora", "qlora")
            and not (cfg.deepspeed is not None and cfg.deepspeed.stage == 3))


def require_liger(model_type: str) -> None:
    """ConfigError naming ``model.kernels`` where Liger cannot patch ``model_type`` here: liger-kernel (or Triton) is
    not installed, or it has no kernels for the architecture."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError as e:
        raise ConfigError(f"model.kernels: liger needs the liger-kernel package (and Triton, which CUDA builds of "
                          f"PyTorch bring) where the model trains: pip install liger-kernel ({e})") from None
    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        raise ConfigError(f"model.kernels: Liger has no kernels for model type {model_type!r} (it has "
                          f"{', '.join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN))}); leave model.kernels out")


def check_liger(options: TrainModelOptions) -> None:
    """:func:`require_liger` for the model of ``options`` (its config alone is read)."""
    from transformers import AutoConfig

    require_liger(AutoConfig.from_pretrained(model_dir(options), **_load_kwargs(options)).model_type)


def apply_liger(model, cfg: TrainConfig) -> None:
    """Patch Liger's RMSNorm, RoPE and SwiGLU into ``model`` (as loaded, before PEFT) and, with :func:`fused_loss`,
    its forward: given ``labels`` in training mode, it returns the loss and no logits."""
    require_liger(model.config.model_type)
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=fused_loss(cfg))


def drop_gguf_record(model) -> None:
    """Forget that the weights came from a GGUF file: they were dequantized at load, and transformers refuses to
    save a model that still says it is GGUF-quantized."""
    qc = getattr(model.config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if method is not None and str(getattr(method, "value", method)) == "gguf":
        del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False


def _bnb_config(dtype: torch.dtype):
    if not torch.cuda.is_available():
        raise ConfigError("method qlora needs CUDA: this worker has no GPU")
    try:
        import bitsandbytes  # noqa: F401  (only where CUDA is present)
    except ImportError:
        raise ConfigError("method qlora needs the bitsandbytes package on the GPU workers") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def lora_targets(cfg: TrainConfig, model_type: str) -> list[str] | str:
    return cfg.lora.target_modules or LORA_TARGETS.get(model_type, "all-linear")


def apply_method(model, cfg: TrainConfig):
    """Wrap ``model`` for the PEFT methods (``cfg.tuning``); full fine-tuning returns it unchanged."""
    if cfg.tuning == "full":
        return model
    import peft

    if cfg.tuning in ("lora", "qlora"):
        if cfg.tuning == "qlora":
            model = peft.prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=cfg.optim.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        pcfg = peft.LoraConfig(task_type="CAUSAL_LM", r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                               lora_dropout=cfg.lora.dropout, use_dora=cfg.lora.use_dora,
                               use_rslora=cfg.lora.use_rslora,
                               target_modules=lora_targets(cfg, model.config.model_type))
    elif cfg.tuning == "prefix":
        pcfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.prompt_tuning.num_virtual_tokens)
    else:
        init = cfg.prompt_tuning.init_text
        pcfg = peft.PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=cfg.prompt_tuning.num_virtual_tokens,
            prompt_tuning_init="TEXT" if init else "RANDOM", prompt_tuning_init_text=init,
            tokenizer_name_or_path=model_dir(cfg.model) if init else None,
            tokenizer_kwargs=_load_kwargs(cfg.model) if init else None)
    if cfg.optim.gradient_checkpointing:
        model.enable_input_require_grads()
    return peft.get_peft_model(model, pcfg)
