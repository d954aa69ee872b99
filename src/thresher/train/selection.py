"""Best-evaluation selection and early stopping, computed from the evaluation history alone.

The history is ``TrainerState.evals`` (``{"step", "loss", "perplexity"}`` per evaluation), which checkpoints
carry, so a resumed run decides exactly as an uninterrupted one. An evaluation improves on the best so far when it
is better by more than ``min_delta`` (lower in mode ``min``, higher in mode ``max``); the first evaluation is the
first best. Early stopping stops after ``patience`` evaluations in a row without improvement.
"""

from __future__ import annotations


def value(evaluation: dict, metric: str) -> float | None:
    """The ``metric`` (``eval_loss``, ``eval_perplexity``) of one evaluation record."""
    return evaluation.get(metric.removeprefix("eval_"))


def improves(candidate: float | None, best: float | None, mode: str, min_delta: float) -> bool:
    if candidate is None:
        return False
    if best is None:
        return True
    return candidate < best - min_delta if mode == "min" else candidate > best + min_delta


def best_index(evals: list[dict], metric: str, mode: str, min_delta: float = 0.0) -> int | None:
    """Index of the best evaluation: the last one that improved on every earlier best (None: no value yet)."""
    best = None
    for i, evaluation in enumerate(evals):
        if improves(value(evaluation, metric), None if best is None else value(evals[best], metric), mode, min_delta):
            best = i
    return best


def evaluations_without_improvement(evals: list[dict], metric: str, mode: str, min_delta: float = 0.0) -> int:
    best = best_index(evals, metric, mode, min_delta)
    return len(evals) if best is None else len(evals) - 1 - best


def stops_early(evals: list[dict], metric: str, mode: str, patience: int, min_delta: float = 0.0) -> bool:
    return evaluations_without_improvement(evals, metric, mode, min_delta) >= patience


def best_summary(evals: list[dict], metric: str, mode: str, min_delta: float = 0.0) -> dict | None:
    """``{"metric", "mode", "step", "value"}`` of the best evaluation, for metrics.json (None without one)."""
    best = best_index(evals, metric, mode, min_delta)
    if best is None:
        return None
    return {"metric": metric, "mode": mode, "step": evals[best]["step"], "value": value(evals[best], metric)}
