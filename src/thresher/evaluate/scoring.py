"""Scoring predictions against references: answer extraction, per-example scores, aggregates with bootstrap 95%
intervals.

* ``exact_match``: the answers (extracted, see ``answer.extract``), stripped of surrounding whitespace, are equal.
* ``accuracy``: the answers are equal as numbers when both are numbers, else after SQuAD normalization
  (lower case, no punctuation, articles or extra spaces).
* ``token_f1``: SQuAD's token F1 of the normalized answers.
* ``rouge_l``: ROUGE-L F-measure of the whole prediction and reference (``rouge-score``, Porter stemming).
* ``bleu``: corpus BLEU of the whole predictions and references (``sacrebleu``); the per-example column holds
  sentence BLEU, the aggregate is corpus BLEU from the summed n-gram statistics.
* ``perplexity``: of the reference continuation given the prompt (``exp`` of the mean token NLL over all
  reference tokens); the per-example column holds each example's own.

An example whose reference has no extractable answer is not counted in the answer metrics (their ``count``);
a prediction without one scores 0.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

ANSWER_METRICS = ("exact_match", "accuracy", "token_f1")
METRICS = ("exact_match", "token_f1", "rouge_l", "bleu", "accuracy", "perplexity")
LOWER_IS_BETTER = ("perplexity",)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(text: str, extract: Any) -> str | None:
    """The answer in ``text``: ``none`` the stripped text; ``last_number`` the last number (commas dropped); a
    regex compiled by RE2 (``AnswerOptions.extractor``) its last match (group 1 when it has a group). None when
    there is none."""
    if extract == "none":
        return text.strip()
    if extract == "last_number":
        found = NUMBER.findall(text)
        return found[-1].replace(",", "") if found else None
    found = list(extract.finditer(text))
    if not found:
        return None
    return (found[-1].group(1) if extract.groups else found[-1].group(0)).strip()


def normalize(text: str) -> str:
    """SQuAD's answer normalization."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


def accuracy(prediction: str, reference: str) -> float:
    p, r = _number(prediction), _number(reference)
    if p is not None and r is not None:
        return float(math.isclose(p, r, rel_tol=1e-9, abs_tol=1e-9))
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    p, r = normalize(prediction).split(), normalize(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def score_examples(predictions: list[str], references: list[str], metrics: list[str], extract: Any) -> dict[str, list]:
    """Per-example columns: the extracted answers (``answer_*``), each metric's score (None where not counted),
    and for bleu the n-gram statistics its corpus aggregate needs (``bleu_stats``)."""
    cols: dict[str, list] = {}
    answers = [extract_answer(p, extract) or "" for p in predictions]
    ref_answers = [extract_answer(r, extract) for r in references]
    if any(m in ANSWER_METRICS for m in metrics):
        cols["answer_prediction"], cols["answer_reference"] = answers, ref_answers
    for name, fn in (("exact_match", exact_match), ("accuracy", accuracy), ("token_f1", token_f1)):
        if name in metrics:
            cols[name] = [fn(a, r) if r is not None else None for a, r in zip(answers, ref_answers)]
    if "rouge_l" in metrics:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        cols["rouge_l"] = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]
    if "bleu" in metrics:
        from sacrebleu.metrics import BLEU

        bleu = BLEU(effective_order=True)
        scores = [bleu.sentence_score(p, [r]) for p, r in zip(predictions, references)]
        cols["bleu"] = [s.score for s in scores]
        cols["bleu_stats"] = [[*s.counts, *s.totals, s.sys_len, s.ref_len] for s in scores]
    return cols


def corpus_bleu(stats: np.ndarray) -> float:
    """Corpus BLEU from summed per-example statistics (4 counts, 4 totals, hypothesis and reference length)."""
    from sacrebleu.metrics import BLEU

    c = stats.astype(np.int64).tolist()
    return BLEU.compute_bleu(c[:4], c[4:8], c[8], c[9], smooth_method="exp").score


def bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray | float], n: int, samples: int, seed: int
) -> tuple[float, float]:
    """Percentile 95% interval of ``statistic(indices)`` over ``samples`` resamples of ``n`` examples (seeded)."""
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    values = np.asarray(statistic(idx), dtype=float)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def counted(name: str, cols: dict[str, list]) -> np.ndarray:
    """The rows ``name`` counts: those with a score (answer metrics: an extractable reference; perplexity: reference
    tokens)."""
    if name == "perplexity":
        return np.array([bool(n) for n in cols["reference_tokens"]], dtype=bool)
    if name == "bleu":
        return np.ones(len(cols["bleu_stats"]), dtype=bool)
    return np.array([x is not None for x in cols[name]], dtype=bool)


def statistic(name: str, cols: dict[str, list], rows: np.ndarray) -> Callable[[np.ndarray], np.ndarray | float]:
    """The metric's aggregate over positions of ``rows`` (indices of counted rows): ``f(idx)`` for an index vector
    (a float) or a matrix of resamples (one value per row)."""
    if name == "perplexity":
        nll = np.array([cols["reference_nll"][r] for r in rows], dtype=float)
        tokens = np.array([cols["reference_tokens"][r] for r in rows], dtype=float)
        return lambda idx: np.exp(nll[idx].sum(-1) / tokens[idx].sum(-1))
    if name == "bleu":
        stats = np.array([cols["bleu_stats"][r] for r in rows], dtype=float).reshape(-1, 10)
        return lambda idx: (
            corpus_bleu(stats[idx].sum(0)) if idx.ndim == 1 else np.array([corpus_bleu(s) for s in stats[idx].sum(1)])
        )
    scores = np.array([cols[name][r] for r in rows], dtype=float)
    return lambda idx: scores[idx].mean(-1)


def aggregate(
    cols: dict[str, list], metrics: list[str], samples: int, seed: int, rows: np.ndarray | None = None
) -> dict[str, dict]:
    """Each metric's ``value``, ``count`` (examples counted) and bootstrap ``ci95``; None values when none counts.
    ``rows``: a boolean mask of the rows to aggregate (default: all)."""
    out = {}
    for name in metrics:
        mask = counted(name, cols)
        if rows is not None:
            mask &= rows
        index = np.flatnonzero(mask)
        count = len(index)
        if count == 0:
            out[name] = {"value": None, "count": 0, "ci95": None}
            continue
        value = statistic(name, cols, index)
        point = float(value(np.arange(count)))
        out[name] = {"value": point, "count": count, "ci95": list(bootstrap(value, count, samples, seed))}
    return out
