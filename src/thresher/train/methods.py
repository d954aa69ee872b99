"""Training methods, registered in one place: objectives (what a step computes: ``sft``, ``dpo``, ``orpo``) and
adapters (what is trained: ``full``, the whole model; ``lora``, ``qlora``, ``prefix``, ``prompt``, PEFT adapters).

The config's ``method`` names an adapter, trained with the ``sft`` objective, or another objective, which takes its
adapter from its config section (``dpo.adapter``, ``orpo.adapter``: none, full fine-tuning, or lora). Whatever the
training code does differently per method it asks of these entries: the config's checks, how the model loads and is
wrapped, the objective and its reference model, the engines allowed, what a checkpoint depends on, the export. A
subclass with a ``name`` registers itself (its instance in :data:`OBJECTIVES` or :data:`ADAPTERS`), as curation
stages do; ``docs/adding-a-method.md`` walks through adding one.

The config imports this module, so it imports nothing heavy at its top (torch, peft: in the hooks) and no module that
imports the config (the one hook that needs the model loader, :meth:`Adapter.merged`, is handed it).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from thresher.core.config import ConfigError

OBJECTIVES: dict[str, Objective] = {}
ADAPTERS: dict[str, Adapter] = {}
SFT = "sft"  # the objective of the adapter methods (``method: lora``, ...); the others are methods of their own
FULL = "full"  # the adapter of full fine-tuning (``adapter: none`` of an objective's section)

_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_TARGETS = {
    **{
        t: _LLAMA_LIKE
        for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "granite", "starcoder2")
    },
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}
"""LoRA's default ``target_modules`` per ``model_type``: every linear layer of attention and MLP; other
architectures get PEFT's ``all-linear``."""


def method_names() -> tuple[str, ...]:
    """What ``method`` may be: every adapter (trained with sft), then every other objective."""
    return (*ADAPTERS, *(name for name in OBJECTIVES if name != SFT))


def objective_of(method: str) -> Objective:
    """The objective of ``method``: the one it names, else sft (an adapter method)."""
    return OBJECTIVES.get(method) or OBJECTIVES[SFT]


def adapter_settings(cfg) -> dict[str, Any]:
    """What checkpoints depend on of the adapter sections: the trained adapter's options (less its
    ``resume_ignores``), None for the other sections."""
    adapter = cfg.adapter
    sections = dict.fromkeys(a.section for a in ADAPTERS.values() if a.section)
    return {
        s: getattr(cfg, s).model_dump(exclude=adapter.resume_ignores) if s == adapter.section else None
        for s in sections
    }


def fused_loss(cfg) -> bool:
    """Whether the loss is Liger's fused linear cross-entropy, computed in the model's forward from the last hidden
    states and the output head's weight without materializing the logits: ``model.kernels: liger`` with an objective
    that can (sft) and an adapter without virtual tokens (full, lora, qlora), except under DeepSpeed ZeRO-3 (the
    kernel reads the head's weight directly, and ZeRO-3 gathers a weight only for its own module's forward)."""
    return (
        cfg.model.kernels == "liger"
        and cfg.objective.fuses_loss
        and not cfg.adapter.virtual_tokens
        and not (cfg.deepspeed is not None and cfg.deepspeed.stage == 3)
    )


# -- objectives ---------------------------------------------------------------------------------------------------


class Objective:
    """What a training step computes, from the batches of the loop (``cfg`` is the ``TrainConfig``)."""

    name: ClassVar[str]
    section: ClassVar[str | None] = None  # the config section of its options
    preference: ClassVar[bool] = False  # trains on preference pairs (data.format preference), never packed
    fuses_loss: ClassVar[bool] = False  # can take the loss from Liger's fused linear cross-entropy (fused_loss)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            OBJECTIVES[cls.name] = cls()

    def adapter(self, cfg) -> Adapter:
        """The adapter trained: the ``adapter`` of the objective's section (none: full fine-tuning)."""
        chosen = getattr(cfg, self.section).adapter if self.section else "none"
        return ADAPTERS[FULL if chosen == "none" else chosen]

    def build(self, cfg, model, device, dtype):
        """The loop's objective for ``model`` (the adapter applied, not yet in its engine): ``metrics`` (names, the
        first ``loss``), ``units(batch)`` (what the loss is averaged over), ``loss(engine, batch, sync)`` (the summed
        loss and the metrics' sums) and ``means(sums, units)`` (an evaluation's metrics)."""
        raise NotImplementedError


class LanguageModelingObjective(Objective):
    """Next-token cross-entropy over the trained tokens (:class:`thresher.train.sft.LanguageModeling`)."""

    name = SFT
    fuses_loss = True

    def adapter(self, cfg) -> Adapter:
        return ADAPTERS[cfg.method]

    def build(self, cfg, model, device, dtype):
        from thresher.train.sft import LanguageModeling

        return LanguageModeling(cfg.adapter.virtual_tokens, fused_loss(cfg))


class PreferenceObjective(Objective):
    """A loss over (chosen, rejected) pairs (:class:`thresher.train.preference.Preference`), with the options of its
    section; ``needs_reference``: it compares the model with a frozen reference (:meth:`Adapter.reference`)."""

    preference = True
    needs_reference: ClassVar[bool] = False

    def build(self, cfg, model, device, dtype):
        from thresher.train.preference import Preference

        options = getattr(cfg, self.section)
        reference = cfg.adapter.reference(model, device, dtype) if self.needs_reference else None
        return Preference(functools.partial(self.pair_losses, options), reference)

    def pair_losses(self, options, logps, counts, ref):
        """Per pair: the loss, the chosen and the rejected reward, from the summed log-probabilities of the (chosen,
        rejected) responses ``logps``, their trained tokens ``counts`` and the reference's log-probabilities ``ref``
        (None without a reference)."""
        raise NotImplementedError


class DPO(PreferenceObjective):
    name = section = "dpo"
    needs_reference = True

    def pair_losses(self, options, logps, counts, ref):
        from thresher.train.preference import dpo_losses

        return dpo_losses(*logps, *ref, *counts, options.beta, options.loss, options.sft_weight)


class ORPO(PreferenceObjective):
    name = section = "orpo"

    def pair_losses(self, options, logps, counts, ref):
        from thresher.train.preference import orpo_losses

        return orpo_losses(*logps, *counts, options.beta)


# -- adapters -----------------------------------------------------------------------------------------------------


class Adapter:
    """What is trained: a PEFT adapter on the frozen base (this base class), or the whole model (``full``)."""

    name: ClassVar[str]
    section: ClassVar[str | None] = None  # the config section of its options
    resume_ignores: ClassVar[set[str]] = set()  # options of the section that checkpoints do not depend on
    engines: ClassVar[tuple[str, ...]] = ("ddp",)  # the engines that may train it (the config's deepspeed, fsdp)
    gpu_only: ClassVar[str | None] = None  # why it trains on CUDA GPUs only; None: anywhere
    mergeable: ClassVar[bool] = False  # output.merge_lora merges it into the base
    virtual_tokens: ClassVar[bool] = False  # trains virtual tokens: the model takes no position_ids, rows no packing
    quantized: ClassVar[bool] = False  # its base is loaded quantized onto the GPU, never moved
    saves_adapter: ClassVar[bool] = True  # exported as a PEFT adapter (PeftModel.from_pretrained); else whole

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            ADAPTERS[cls.name] = cls()

    def load_kwargs(self, dtype) -> dict:
        """``from_pretrained`` options of the base on a worker computing in ``dtype``: the frozen base in ``dtype``."""
        return {"dtype": dtype}

    def wrap(self, model, cfg):
        """``model`` (as loaded) ready to train: PEFT's model of :meth:`peft_config`."""
        import peft

        config = self.peft_config(model, cfg)
        if cfg.optim.gradient_checkpointing:
            model.enable_input_require_grads()
        return peft.get_peft_model(model, config)

    def peft_config(self, model, cfg):
        raise NotImplementedError

    def reference(self, model, device, dtype):
        """The reference of an objective that compares with the model as loaded: the model with its adapter off."""
        from thresher.train.preference import DisabledAdapter

        return DisabledAdapter()

    def merged(self, model, cfg, load_base):
        """The trained PEFT ``model`` merged into its base (``mergeable`` adapters); ``load_base`` is
        :func:`thresher.train.models.load_base_model`."""
        return model.merge_and_unload()


class Full(Adapter):
    """No adapter: every weight is trained, in float32 master weights, by DDP, DeepSpeed ZeRO or FSDP2."""

    name = FULL
    engines = ("ddp", "deepspeed", "fsdp")
    saves_adapter = False

    def load_kwargs(self, dtype) -> dict:
        import torch

        return {"dtype": torch.float32}

    def wrap(self, model, cfg):
        return model

    def reference(self, model, device, dtype):
        from thresher.train.preference import FrozenCopy

        return FrozenCopy(model, device, dtype)


class LoRA(Adapter):
    """LoRA (DoRA, rsLoRA) on the ``lora`` section's target modules."""

    name = section = "lora"
    mergeable = True

    def peft_config(self, model, cfg):
        import peft

        o = cfg.lora
        return peft.LoraConfig(
            task_type="CAUSAL_LM",
            r=o.r,
            lora_alpha=o.alpha,
            lora_dropout=o.dropout,
            use_dora=o.use_dora,
            use_rslora=o.use_rslora,
            target_modules=o.target_modules or LORA_TARGETS.get(model.config.model_type, "all-linear"),
        )


class QLoRA(LoRA):
    """LoRA on a 4-bit NF4 base (bitsandbytes); merged into a fresh, unquantized copy of the base in ``model.dtype``."""

    name = "qlora"
    gpu_only = "4-bit bitsandbytes"
    quantized = True

    def load_kwargs(self, dtype) -> dict:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"method {self.name} needs CUDA: this worker has no GPU")
        try:
            import bitsandbytes  # noqa: F401  (only where CUDA is present)
        except ImportError:
            raise ConfigError(f"method {self.name} needs the bitsandbytes package on the GPU workers") from None
        from transformers import BitsAndBytesConfig

        return {
            "dtype": dtype,
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype,
            ),
        }

    def wrap(self, model, cfg):
        import peft

        model = peft.prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.optim.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        return super().wrap(model, cfg)

    def merged(self, model, cfg, load_base):
        import tempfile

        import peft
        import torch

        with tempfile.TemporaryDirectory() as adapter:
            model.save_pretrained(adapter)
            base = load_base(cfg.model, device_map={"": "cpu"})
            merged = peft.PeftModel.from_pretrained(base, adapter, torch_device="cpu").merge_and_unload()
        return merged.to(torch.device("cpu"))


class PrefixTuning(Adapter):
    """Trained key/value prefixes of every layer (``prompt_tuning.num_virtual_tokens``)."""

    name = "prefix"
    section = "prompt_tuning"
    resume_ignores = {"init_text"}
    virtual_tokens = True

    def peft_config(self, model, cfg):
        import peft

        return peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.prompt_tuning.num_virtual_tokens)


class PromptTuning(PrefixTuning):
    """A trained soft prompt of input embeddings, random or from ``prompt_tuning.init_text``."""

    name = "prompt"

    def peft_config(self, model, cfg):
        import peft

        from thresher.models.generation import local_kwargs
        from thresher.models.resolve import resolve_model

        init = cfg.prompt_tuning.init_text
        return peft.PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=cfg.prompt_tuning.num_virtual_tokens,
            prompt_tuning_init="TEXT" if init else "RANDOM",
            prompt_tuning_init_text=init,
            tokenizer_name_or_path=resolve_model(cfg.model.name_or_path) if init else None,
            tokenizer_kwargs=local_kwargs(cfg.model.gguf_file) if init else None,
        )
