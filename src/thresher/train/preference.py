"""Preference optimization on (prompt, chosen, rejected) pairs: DPO (``method: dpo``) and ORPO (``method: orpo``).

A row of preference data holds a pair (:mod:`thresher.train.data`); the loop flattens a batch of B pairs into 2B
sequences, chosen first. The log-probability of a response is the sum over its trained (response) tokens.

* DPO (Rafailov et al. 2023) compares the policy with a frozen reference: log-ratios ``c = logp(chosen) -
  ref_logp(chosen)`` and ``r`` likewise. ``loss: sigmoid``: ``-log sigmoid(beta (c - r))``; ``loss: ipo`` (Azar et
  al. 2023): ``(c / n_c - r / n_r - 1 / (2 beta))^2`` with ``n`` the response's tokens (TRL's length-normalized
  form). ``sft_weight`` adds that times the chosen response's token-mean NLL. The reference is a frozen copy of
  the model for full fine-tuning, and the model with its adapter disabled (PEFT's ``disable_adapter()``; no
  second copy) for ``adapter: lora``. Rewards: ``beta c`` and ``beta r``.
* ORPO (Hong et al. 2024) needs no reference: with ``m`` a response's token-mean log-probability, the loss is
  ``-m_chosen - beta log sigmoid(log odds(m_chosen) - log odds(m_rejected))``, ``log odds(m) = m - log(1 -
  exp(m))``. Rewards: ``beta m``.

Per pair the loss is averaged over all pairs of the step (every worker's); the metrics are means over pairs:
``rewards_chosen``, ``rewards_rejected``, ``reward_margin`` (chosen minus rejected) and ``reward_accuracy`` (the
fraction of pairs whose chosen reward is the higher).

TRL computes the same losses inside its trainers (``DPOTrainer``, ``ORPOTrainer``) on Hugging Face Trainer
batches rather than as functions over log-probabilities, so they are written out here; the tests check these
values against TRL's on the same batch.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from thresher.train.data import IGNORE

REWARD_METRICS = ("rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy")


def flatten_pairs(batch: dict) -> dict:
    """A batch of B pairs (columns of shape (B, 2, L)) as 2B sequences: the B chosen, then the B rejected."""
    return {k: v.transpose(0, 1).reshape(-1, v.shape[-1]) if v.dim() == 3 else v for k, v in batch.items()}


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: the summed log-probability of its trained tokens, and their number."""
    labels = labels[:, 1:]
    mask = labels != IGNORE
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logps = torch.gather(logps, 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def dpo_losses(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    n_chosen: torch.Tensor,
    n_rejected: torch.Tensor,
    beta: float,
    loss: str,
    sft_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair: the DPO loss, the chosen and the rejected reward."""
    c, r = chosen - ref_chosen, rejected - ref_rejected
    if loss == "sigmoid":
        losses = -F.logsigmoid(beta * (c - r))
    else:  # ipo
        losses = (c / n_chosen.clamp(min=1) - r / n_rejected.clamp(min=1) - 1 / (2 * beta)) ** 2
    if sft_weight:
        losses = losses - sft_weight * chosen / n_chosen.clamp(min=1)
    return losses, beta * c.detach(), beta * r.detach()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_losses(
    chosen: torch.Tensor, rejected: torch.Tensor, n_chosen: torch.Tensor, n_rejected: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair: the ORPO loss (chosen NLL minus beta times the log-sigmoid of the log odds ratio), the chosen and
    the rejected reward."""
    mc, mr = chosen / n_chosen.clamp(min=1), rejected / n_rejected.clamp(min=1)
    log_odds = (mc - mr) - (log1mexp(mc) - log1mexp(mr))
    return -mc - beta * F.logsigmoid(log_odds), beta * mc.detach(), beta * mr.detach()


class FrozenCopy:
    """The reference of full fine-tuning: a frozen copy of the model as loaded (on the engine's device)."""

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        self.model = copy.deepcopy(model).to(device=device, dtype=dtype).eval().requires_grad_(False)

    @torch.no_grad()
    def logits(self, engine, inputs: dict) -> torch.Tensor:
        return self.model(**inputs).logits


class DisabledAdapter:
    """The reference of adapter training: the model with its adapter switched off."""

    @torch.no_grad()
    def logits(self, engine, inputs: dict) -> torch.Tensor:
        with engine.module.disable_adapter():
            return engine.forward(**inputs)


class Preference:
    """The loop's objective for the preference methods (``thresher.train.methods``): ``pair_losses(logps, counts,
    ref)`` gives per pair the loss, the chosen and the rejected reward from the summed log-probabilities of the
    (chosen, rejected) responses, their trained tokens and the ``reference``'s log-probabilities (None without one);
    the loss is averaged over pairs."""

    metrics = ("loss", *REWARD_METRICS)

    def __init__(self, pair_losses, reference=None):
        self.pair_losses, self.reference = pair_losses, reference

    def units(self, batch: dict) -> float:
        return float(batch["input_ids"].shape[0])

    def loss(self, engine, batch: dict, sync: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The summed loss of the batch's pairs, and the sums of the metrics (0-dim tensors on its device)."""
        flat = flatten_pairs(batch)
        inputs = {"input_ids": flat["input_ids"], "position_ids": flat["position_ids"], "use_cache": False}
        ref = None
        if self.reference is not None:
            ref = sequence_logps(self.reference.logits(engine, inputs), flat["labels"])[0].chunk(2)
        logps, n = sequence_logps(engine.forward(sync=sync, **inputs), flat["labels"])
        losses, reward_c, reward_r = self.pair_losses(logps.chunk(2), n.chunk(2), ref)
        loss = losses.sum()
        return loss, {
            "loss": loss.detach(),
            "rewards_chosen": reward_c.sum(),
            "rewards_rejected": reward_r.sum(),
            "reward_margin": (reward_c - reward_r).sum(),
            "reward_accuracy": (reward_c > reward_r).sum(),
        }

    def means(self, sums: dict[str, float], units: float) -> dict[str, float | None]:
        """The evaluation's metrics, means over pairs (None without pairs)."""
        return {k: sums[k] / units if units else None for k in self.metrics}
