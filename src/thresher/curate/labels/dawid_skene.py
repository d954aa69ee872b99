"""Dawid-Skene (1979): class priors and one confusion matrix per annotator, fitted by EM.

The E step (posterior of each item's true class) and the sufficient statistics of the M step are computed per
block (:func:`block_statistics`); the statistics add up across blocks, so a driver loop sends only the parameters
(classes + annotators x classes x classes numbers) to the blocks and receives their sums. The first M step uses
the vote shares as posteriors (majority initialization). Without annotator identities every annotation shares
one confusion matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thresher.curate.labels.agreement import Annotations, item_counts

SMOOTHING = 0.01  # added to every count of the M step: no probability is exactly zero


@dataclass
class Params:
    log_prior: np.ndarray  # classes
    log_confusion: np.ndarray  # annotators x true class x given label

    @property
    def prior(self) -> np.ndarray:
        return np.exp(self.log_prior)

    @property
    def confusion(self) -> np.ndarray:
        return np.exp(self.log_confusion)


def log_posteriors(a: Annotations, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """Per item the posterior of each true class and the log-likelihood of its annotations."""
    joint = np.tile(params.log_prior, (a.n_items, 1))
    np.add.at(joint, a.item, params.log_confusion[a.rater, :, a.label])
    top = joint.max(1, keepdims=True)
    unnormalized = np.exp(joint - top)
    total = unnormalized.sum(1, keepdims=True)
    return unnormalized / total, (top + np.log(total))[:, 0]


def posteriors(a: Annotations, n_classes: int, params: Params | None) -> np.ndarray:
    """Posteriors under ``params``, or vote shares when None (items without annotations: uniform)."""
    if params is not None:
        return log_posteriors(a, params)[0]
    counts = item_counts(a, n_classes).astype(float)
    m = counts.sum(1, keepdims=True)
    return np.where(m > 0, counts / np.maximum(m, 1), 1 / n_classes)


def block_statistics(a: Annotations, n_classes: int, n_raters: int, params: Params | None) -> dict:
    """The M step's sufficient statistics of one block (and its log-likelihood under ``params``)."""
    post = posteriors(a, n_classes, params)
    C = n_classes
    cells = (a.rater[:, None] * C + np.arange(C)[None, :]) * C + a.label[:, None]
    confusion = np.bincount(cells.ravel(), weights=post[a.item].ravel(), minlength=n_raters * C * C)
    loglik = float(log_posteriors(a, params)[1].sum()) if params is not None else 0.0
    return {"prior": post.sum(0), "confusion": confusion.reshape(n_raters, C, C), "loglik": loglik}


def m_step(stats: dict) -> Params:
    prior = stats["prior"] + SMOOTHING
    confusion = stats["confusion"] + SMOOTHING
    return Params(np.log(prior / prior.sum()), np.log(confusion / confusion.sum(2, keepdims=True)))


def fit(statistics, max_iter: int, tol: float) -> tuple[Params, dict]:
    """EM: ``statistics(params)`` returns the summed :func:`block_statistics` of every block. Stops when the
    log-likelihood improves by less than ``tol`` (relative) or after ``max_iter`` iterations."""
    params = m_step(statistics(None))
    loglik, iterations, converged = None, 0, False
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count the loop ends at is returned)
        stats = statistics(params)
        params = m_step(stats)
        converged = loglik is not None and abs(stats["loglik"] - loglik) <= tol * abs(loglik)
        loglik = stats["loglik"]
        if converged:
            break
    return params, {"iterations": iterations, "converged": converged, "loglik": round(loglik, 3)}


def reliability(params: Params, raters: list[str], classes: list[str]) -> list[dict]:
    """Per annotator: estimated accuracy (sum over classes of prior x correct rate) and the confusion matrix."""
    prior, confusion = params.prior, params.confusion
    return [
        {
            "annotator": name,
            "accuracy": round(float(prior @ np.diag(confusion[r])), 6),
            "confusion": np.round(confusion[r], 4).tolist(),
        }
        for r, name in enumerate(raters)
    ]
