"""The quality rules' statistics of a batch of documents, for the report (the ``quality`` stage's summary).

Per enabled rule (:attr:`thresher.curate.filters.presets.Evaluator.rules`, every rule checked on every document):
the documents that fail it at all (``failed``) and that fail it and no other rule (``alone``: what relaxing it alone
would bring back); histograms of its signal over the documents that pass every rule (``kept``), that fail any
(``rejected``) and that fail this rule alone (``rejected_alone``); the combinations of rules failed together
(``combinations``, the rules' reasons joined by `` & ``); and a sample of the documents that fail it: the
``SAMPLES`` with the smallest XXH64 of their text (ties by excerpt), so the sample is the same whatever the batches.
A document without text fails ``quality.empty`` and no rule.

Histograms have the bins of the signal's kind (:data:`EDGES`) with the rule's threshold added as an edge
(:func:`rule_edges`); bins are closed on the side of the threshold that passes (``[lo, hi)`` for ``min`` rules,
``(lo, hi]`` for ``max`` rules), so the documents a threshold moved to a neighbouring edge would let through or
reject are the counts of one bin. Counts are ``{bin index: count}`` of the non-empty bins; summaries of batches
merge by adding them (:func:`thresher.curate.report.add`) and keeping the smallest samples (:func:`cut_samples`).
"""

from __future__ import annotations

import numpy as np
import xxhash

from thresher.curate.filters.presets import EMPTY, SIGNALS, EnabledRule, Verdict

EDGES = {
    "fraction": [i / 20 for i in range(21)] + [float("inf")],
    "count": [0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 100_000, float("inf")],
    "length": list(range(21)) + [float("inf")],
    "flag": [0, 0.5, float("inf")],
}
SAMPLES = 5  # rejected documents sampled per rule
EXCERPT = 300  # characters of a sampled document
COMBINED = " & "  # joins the reasons of a combination of failed rules


def rule_edges(rule: EnabledRule) -> list[float]:
    """The bin edges of a rule's histograms: its signal kind's, with its threshold among them (flags: as they are)."""
    edges = EDGES[SIGNALS[rule.rule.signal].kind]
    if rule.rule.bound == "flag" or rule.threshold in edges:
        return list(edges)
    return sorted([*edges, float(rule.threshold)])


def bin_indices(values: np.ndarray, edges: list[float], bound: str) -> np.ndarray:
    """The bin of each value (-1 for NaN, unmeasured): ``[lo, hi)`` bins, or ``(lo, hi]`` for ``max`` rules (the
    first bin closed on both sides)."""
    side = "left" if bound == "max" else "right"
    out = np.searchsorted(np.asarray(edges[:-1]), values, side=side) - 1
    out = np.clip(out, 0, len(edges) - 2)
    out[np.isnan(values)] = -1
    return out


def _counts(indices: np.ndarray) -> dict[str, int]:
    ids, counts = np.unique(indices[indices >= 0], return_counts=True)
    return {str(int(i)): int(c) for i, c in zip(ids, counts)}


def text_hash(text: str) -> int:
    return xxhash.xxh64_intdigest(text.encode("utf-8", "surrogatepass"))


def batch_summary(rules: list[EnabledRule], verdicts: list[Verdict], texts: list[str]) -> dict:
    """The statistics (module docstring) of documents ``texts`` judged as ``verdicts`` by ``rules``."""
    n, names = len(verdicts), [r.reason for r in rules]
    values = np.array([v.values for v in verdicts], np.float64).reshape(n, len(rules))
    failed = np.zeros((n, len(rules)), bool)
    empty = np.zeros(n, bool)
    combinations: dict[str, int] = {}
    for i, v in enumerate(verdicts):
        if v.reason is None:
            continue
        failed[i, v.failed] = True
        empty[i] = v.reason == EMPTY
        key = COMBINED.join(names[r] for r in v.failed) or v.reason
        combinations[key] = combinations.get(key, 0) + 1
    rejected = failed.any(axis=1) | empty
    alone = failed & (failed.sum(axis=1) == 1)[:, None]
    hashes: dict[int, int] = {}
    out: dict = {
        "documents": n,
        "rejected": int(rejected.sum()),
        "rules": {},
        "combinations": combinations,
        "samples": {},
    }
    for r, rule in enumerate(rules):
        bins = bin_indices(values[:, r], rule_edges(rule), rule.rule.bound)
        out["rules"][rule.reason] = {
            "failed": int(failed[:, r].sum()),
            "alone": int(alone[:, r].sum()),
            "kept": _counts(bins[~rejected]),
            "rejected": _counts(bins[rejected]),
            "rejected_alone": _counts(bins[alone[:, r]]),
        }
        rows = np.flatnonzero(failed[:, r])
        if len(rows):
            for i in rows:
                if i not in hashes:
                    hashes[i] = text_hash(texts[i])
            chosen = sorted(rows, key=lambda i: (hashes[i], texts[i][:EXCERPT]))[:SAMPLES]
            out["samples"][rule.reason] = [
                {
                    "hash": hashes[i],
                    "text": texts[i][:EXCERPT],
                    "value": float(values[i, r]),
                    "failed": [names[f] for f in verdicts[i].failed],
                }
                for i in chosen
            ]
    if empty.any():
        out["rules"][EMPTY] = {"failed": int(empty.sum()), "alone": int(empty.sum())}
    return out


def cut_samples(samples: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Each rule's sample cut to the ``SAMPLES`` with the smallest hash (after merging: lists concatenated)."""
    return {
        reason: sorted(entries, key=lambda e: (e["hash"], e["text"]))[:SAMPLES] for reason, entries in samples.items()
    }
