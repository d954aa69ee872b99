"""Batch generation with a causal LM, shared by ``thresher eval`` (``thresher.evaluate.generate``) and augmentation
(``thresher.curate.augment.prompted``): load a tokenizer and model from a local folder, a cached hub id, ``pkg:NAME``
(``thresher.models.resolve``) or a GGUF file in one (dequantized at load), turn prompts into token ids (plain, or as one
user turn of the tokenizer's chat template), and generate continuations of a batch, greedy (temperature 0) or
sampled, with transformers or vLLM.

vLLM is used when ``backend`` is ``vllm``, or ``auto`` and vLLM is installed and a GPU is visible, for full models
only (GGUF files and PEFT adapters go through transformers). Nothing is ever downloaded (``local_files_only``).
Sampling with transformers is seeded once per call (``Sampling.seed``), so sampled outputs depend on how records are
batched; vLLM seeds each prompt (``seeds``), so its samples do not. Greedy decoding is deterministic either way.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from thresher.core.config import ConfigError, StrictModel
from thresher.models.resolve import resolve_model

Backend = Literal["auto", "transformers", "vllm"]
DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0


class GenerationSpec(StrictModel):
    """Generation options shared by ``thresher eval`` (``generation``) and augmentation (each method's
    ``generation``)."""

    max_new_tokens: int = Field(256, gt=0, description="tokens generated per prompt at most")
    temperature: float = Field(0.0, ge=0, description="0: greedy decoding (deterministic)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling (with temperature above 0)")
    seed: int = Field(0, description="sampling seed")
    batch_size: int = Field(16, gt=0, description="prompts per generate call")
    backend: Backend = Field(
        "auto", description="auto: vLLM when it is installed and a GPU is visible, else transformers"
    )


def local_kwargs(gguf_file: str | None) -> dict:
    return {"local_files_only": True, **({"gguf_file": gguf_file} if gguf_file else {})}


def load_tokenizer(name_or_path: str, gguf_file: str | None = None, key: str = "model.name_or_path"):
    """The tokenizer of a model (a pad token set: the EOS when it has none); ConfigError naming ``key``."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(resolve_model(name_or_path, key), **local_kwargs(gguf_file))
    except OSError as e:
        raise ConfigError(
            f"{key}: cannot load a tokenizer from {name_or_path!r} (local folders and the local "
            f"Hugging Face cache only): {e}"
        ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    name_or_path: str,
    gguf_file: str | None = None,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    key: str = "model.name_or_path",
):
    """A causal LM for inference, in ``dtype``, in eval mode on CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        resolve_model(name_or_path, key),
        dtype=getattr(torch, dtype),
        attn_implementation=attn_implementation or "sdpa",
        **local_kwargs(gguf_file),
    ).eval()


def want_vllm(backend: Backend, possible: bool) -> bool:
    """Whether to generate with vLLM: ``possible`` says the model allows it (a full model, no GGUF, no adapter)."""
    if backend == "transformers":
        return False
    installed = importlib.util.find_spec("vllm") is not None
    if backend == "vllm":
        if not possible or not installed:
            raise RuntimeError("generation backend vllm: needs vLLM installed and a full model (no adapter, no GGUF)")
        return True
    import torch

    return possible and installed and torch.cuda.is_available()


def start_vllm(folder: str, dtype: str, seed: int):
    from vllm import LLM

    return LLM(model=folder, dtype=dtype, seed=seed)


class BatchGenerator:
    """Continuations of batches of prompts: ``model`` (transformers, on ``device``) or ``llm`` (vLLM)."""

    def __init__(self, tokenizer, model=None, llm=None, device: str = "cpu"):
        if model is None and llm is None:
            raise ValueError("a transformers model or a vLLM engine is needed")
        self.tokenizer, self.model, self.llm, self.device = tokenizer, model, llm, device
        self.tokenizer.padding_side = "left"

    @classmethod
    def load(
        cls,
        name_or_path: str,
        gguf_file: str | None = None,
        dtype: str = "bfloat16",
        backend: Backend = "auto",
        use_gpu: bool = False,
        seed: int = 0,
        key: str = "model.name_or_path",
    ):
        """A generator for a full model (float32 on CPU, ``dtype`` on a GPU)."""
        import torch

        tokenizer = load_tokenizer(name_or_path, gguf_file, key)
        if want_vllm(backend, gguf_file is None):
            return cls(tokenizer, llm=start_vllm(resolve_model(name_or_path, key), dtype, seed))
        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError(f"{key}: a GPU was asked for, and this process sees none")
        device = "cuda" if use_gpu else "cpu"
        model = load_causal_lm(name_or_path, gguf_file, dtype if device == "cuda" else "float32", key=key)
        return cls(tokenizer, model=model.to(device), device=device)

    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(self, prompts: list[str], chat: bool) -> list[list[int]]:
        """Token ids of ``prompts``: each as one user turn of the chat template (with the assistant's generation
        prompt), or as plain text with the tokenizer's special tokens."""
        if chat:
            texts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in prompts
            ]
            return self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return self.tokenizer(prompts, add_special_tokens=True)["input_ids"]

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, seeds: list[int] | None = None) -> list[str]:
        """The decoded continuation of each prompt (special tokens dropped)."""
        return self.continuations(prompt_ids, sampling, seeds)[0]

    def continuations(
        self, prompt_ids: list[list[int]], sampling: Sampling, seeds: list[int] | None = None
    ) -> tuple[list[str], list[bool]]:
        """The decoded continuation of each prompt (special tokens dropped), and whether it stopped at
        ``max_new_tokens`` rather than at an end-of-sequence token (vLLM's finish reason ``length``)."""
        if not prompt_ids:
            return [], []
        if self.llm is not None:
            from vllm import SamplingParams

            params = [
                SamplingParams(
                    temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens, seed=s
                )
                for s in (seeds or [sampling.seed] * len(prompt_ids))
            ]
            outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
            return [o.outputs[0].text for o in outputs], [o.outputs[0].finish_reason == "length" for o in outputs]
        import torch

        inputs = self.tokenizer.pad({"input_ids": prompt_ids}, return_tensors="pt").to(self.device)
        mode = (
            {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
            if sampling.temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        torch.manual_seed(sampling.seed)
        with torch.no_grad():
            out = self.model.generate(
                **inputs, max_new_tokens=sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, **mode
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        eos = self.model.generation_config.eos_token_id
        eos = torch.tensor([self.tokenizer.eos_token_id] if eos is None else eos if isinstance(eos, list) else [eos])
        ended = torch.isin(new, eos.to(new.device)).any(dim=1)  # a row that ended early is padded with EOS
        cut = [new.shape[1] == sampling.max_new_tokens and not e for e in ended.tolist()]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True), cut
