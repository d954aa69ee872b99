"""``candidates.parquet`` of ``thresher eval``: the examples the model is least sure of or gets wrong, ranked, each
with why: what to improve the data on next (a curation config reads it as Parquet input).

* ``low_confidence``: the example is among the ``candidates.low_confidence_fraction`` of the examples whose
  generation has the lowest ``confidence`` (the mean token log-probability of the generated answer, its
  end-of-sequence token included when it ended; ties at the cut included).
* ``wrong_answer``: the answer metric (``candidates.answer_metric``: by default exact_match, else accuracy) scored 0.
* ``coverage_gap``: with ``candidates.coverage``, the example's cluster of test prompts is one the training data
  hardly holds (:mod:`thresher.evaluate.coverage`).

Each candidate row is the example's row of ``predictions.parquet`` (its record's columns too) after ``rank``,
``reason`` (the reasons, comma-separated) and ``score``: the generation's mean negative log-probability per token
(``-confidence``: higher, less sure). Rows are ranked by ``score``, highest first (ties in data order): the model's
uncertainty, as uncertainty sampling ranks; a wrong answer is a candidate whatever its confidence, ranked where its
score puts it. ``reference_logprob`` is the mean token log-probability of the reference (when perplexity is
scored): how far the model is from the expected answer.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from thresher.evaluate.coverage import COVERAGE_GAP, RATIO

LOW_CONFIDENCE, WRONG_ANSWER = "low_confidence", "wrong_answer"
CANDIDATES = "candidates.parquet"


def low_confidence(confidence: list[float | None], fraction: float) -> np.ndarray:
    """Which examples are among the least confident ``fraction`` (ties at the cut included; None never)."""
    known = np.array([c is not None for c in confidence])
    values = np.array([c if c is not None else np.inf for c in confidence], dtype=float)
    k = math.ceil(fraction * int(known.sum()))
    if k == 0:
        return np.zeros(len(confidence), dtype=bool)
    cut = np.sort(values[known])[k - 1]
    return known & (values <= cut)


def candidates(
    rows: pa.Table, fraction: float, answer_metric: str | None, max_coverage_ratio: float | None = None
) -> pa.Table:
    """The candidate rows of ``rows`` (predictions with ``confidence``), ranked, with rank, reason and score first;
    ``max_coverage_ratio``: the ``coverage_ratio`` under which an example is a coverage gap."""
    confidence = rows.column("confidence").to_pylist()
    flags = {LOW_CONFIDENCE: low_confidence(confidence, fraction)}
    if answer_metric and answer_metric in rows.column_names:
        flags[WRONG_ANSWER] = np.array([s is not None and s == 0 for s in rows.column(answer_metric).to_pylist()])
    if max_coverage_ratio is not None and RATIO in rows.column_names:
        flags[COVERAGE_GAP] = np.array(rows.column(RATIO).to_pylist()) < max_coverage_ratio
    reasons = [", ".join(r for r, f in flags.items() if f[i]) for i in range(rows.num_rows)]
    chosen = [i for i, r in enumerate(reasons) if r]
    score = [None if c is None else -c for c in confidence]
    order = sorted(chosen, key=lambda i: (score[i] is None, -(score[i] or 0.0), i))
    nll, tokens = rows.column("reference_nll").to_pylist(), rows.column("reference_tokens").to_pylist()
    ref = [None if x is None or not n else -x / n for x, n in zip(nll, tokens)]
    picked = rows.take(pa.array(order, pa.int64()))
    head = pa.table(
        {
            "rank": pa.array(range(1, len(order) + 1), pa.int64()),
            "reason": pa.array([reasons[i] for i in order], pa.string()),
            "score": pa.array([score[i] for i in order], pa.float64()),
            "reference_logprob": pa.array([ref[i] for i in order], pa.float64()),
        }
    )
    for name in picked.column_names:
        if name not in head.column_names:
            head = head.append_column(name, picked.column(name))
    return head


def summary(table: pa.Table) -> dict:
    """metrics.json's ``candidates``: rows, and examples per reason."""
    reasons = [r for value in table.column("reason").to_pylist() for r in value.split(", ")]
    return {
        "rows": table.num_rows,
        "by_reason": {r: reasons.count(r) for r in (LOW_CONFIDENCE, WRONG_ANSWER, COVERAGE_GAP) if r in reasons},
        "file": CANDIDATES,
    }
