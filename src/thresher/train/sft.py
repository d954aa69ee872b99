"""The SFT objective (``thresher.train.methods``' ``sft``, the objective of the adapter methods): next-token
cross-entropy, averaged over the trained tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from thresher.train.data import IGNORE


def model_inputs(batch: dict, virtual_tokens: bool) -> dict:
    """The model's inputs: with virtual tokens (prefix, prompt: never packed) the attention mask, else the positions."""
    if virtual_tokens:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}


def loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over trained labels (virtual-token logits, if any, are cut off)."""
    logits = logits[:, -labels.shape[1] :, :]
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )


def trained_tokens(labels: torch.Tensor) -> torch.Tensor:
    return (labels[:, 1:] != IGNORE).sum()


class LanguageModeling:
    """The loop's objective for the adapter methods. ``virtual_tokens``: the adapter trains virtual tokens (the model
    takes the attention mask, not positions). ``fused``: the model computes the summed loss itself from ``labels``
    (Liger's fused linear cross-entropy: no logits in training, see :func:`thresher.train.methods.fused_loss`);
    ``num_items_in_batch=1`` makes its reduction the sum, as :func:`loss_sum`'s."""

    metrics = ("loss",)

    def __init__(self, virtual_tokens: bool = False, fused: bool = False):
        self.virtual_tokens, self.fused = virtual_tokens, fused

    def units(self, batch: dict) -> torch.Tensor:
        return trained_tokens(batch["labels"])

    def loss(self, engine, batch: dict, sync: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The summed loss of the batch, and the sums of the metrics (0-dim tensors on the batch's device)."""
        inputs = model_inputs(batch, self.virtual_tokens)
        if self.fused:
            loss = engine.outputs(sync=sync, labels=batch["labels"], num_items_in_batch=1, **inputs).loss
        else:
            loss = loss_sum(engine.forward(sync=sync, **inputs), batch["labels"])
        return loss, {"loss": loss.detach()}

    def means(self, sums: dict[str, float], units: float) -> dict[str, float | None]:
        """The evaluation's metrics (None without trained tokens)."""
        loss = sums["loss"] / units if units else None
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)) if units else None}
