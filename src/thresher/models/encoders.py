"""Sentence encoders with plain ``transformers``: a sentence-transformers folder (or any HF encoder folder) loaded
with ``AutoModel`` + ``AutoTokenizer``, pooled as its ``1_Pooling/config.json`` says (mean of the token states
when the folder has no pooling config), and L2-normalised, so a dot product is a cosine similarity.

Texts are tokenized in one call, then encoded in batches of similar token counts (put back in order after) to waste
little on padding; truncation is at the folder's ``max_seq_length`` (``sentence_bert_config.json``), else the
tokenizer's limit (at most 512 tokens).

``dtype="bfloat16"`` runs the forward pass under bfloat16 autocast (vectors still come back as float32): faster
where the hardware has bfloat16 arithmetic (CPUs with AVX512-BF16 or AMX, recent GPUs), slower than float32 on
CPUs without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from thresher.core.config import require_extra


def require_torch(key: str) -> None:
    """A config error (exit 2) naming ``key`` when torch or transformers is not installed."""
    require_extra(("torch", "transformers"), key, "train")


POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
MAX_TOKENS = 512
DTYPES = ("float32", "bfloat16")


def pooling_mode(folder: str | Path) -> str:
    """The pooling of a sentence-transformers folder (``mean_tokens`` without a pooling config)."""
    config = Path(folder) / "1_Pooling" / "config.json"
    if not config.exists():
        return "mean_tokens"
    options = json.loads(config.read_text())
    modes = [m for m in POOLING_MODES if options.get(f"pooling_mode_{m}")]
    if len(modes) != 1:
        raise ValueError(f"{config}: one pooling mode expected among {POOLING_MODES}, found {modes}")
    return modes[0]


def max_length(folder: str | Path, tokenizer) -> int:
    config = Path(folder) / "sentence_bert_config.json"
    if config.exists():
        return int(json.loads(config.read_text())["max_seq_length"])
    return min(int(getattr(tokenizer, "model_max_length", MAX_TOKENS) or MAX_TOKENS), MAX_TOKENS)


def pool(states, mask, mode: str):
    """Sentence vectors from token states ``(batch, tokens, dim)`` and the attention mask ``(batch, tokens)``."""
    import torch

    if mode == "cls_token":
        return states[:, 0]
    weights = mask.unsqueeze(-1).to(states.dtype)
    if mode == "max_tokens":
        return states.masked_fill(weights == 0, torch.finfo(states.dtype).min).max(dim=1).values
    summed = (states * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return summed / (counts if mode == "mean_tokens" else counts.sqrt())


class SentenceEncoder:
    """A local encoder folder; :meth:`encode` returns normalised float32 vectors, one row per text."""

    def __init__(self, folder: str | Path, device: str | None = None, batch_size: int = 64, dtype: str = "float32"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if dtype not in DTYPES:
            raise ValueError(f"dtype: one of {DTYPES}, not {dtype!r}")

        self.folder = str(folder)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model = AutoModel.from_pretrained(self.folder).to(self.device).eval()
        self.mode = pooling_mode(self.folder)
        self.max_length = max_length(self.folder, self.tokenizer)
        self.dim = int(self.model.config.hidden_size)
        self.dtype = dtype

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        # one tokenizer call for all texts (the fast tokenizer spreads it over the CPU's cores), then batches of
        # similar token counts, padded each to its longest
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([-len(i) for i in ids], kind="stable")
        device_type = "cuda" if str(self.device).startswith("cuda") else "cpu"
        autocast = torch.autocast(device_type, torch.bfloat16, enabled=self.dtype == "bfloat16")
        with torch.inference_mode(), autocast:
            for start in range(0, len(texts), self.batch_size):
                rows = order[start : start + self.batch_size]
                tokens = self.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt").to(self.device)
                states = self.model(**tokens).last_hidden_state
                vectors = torch.nn.functional.normalize(
                    pool(states, tokens["attention_mask"], self.mode).float(), dim=1
                )
                out[rows] = vectors.cpu().numpy()
        return out
