"""Inter-annotator agreement from counts that add up across blocks.

A block of items is summarized by fixed-size counts (:func:`block_counts`): Krippendorff's coincidence matrix
(classes x classes), the sum of per-item pairwise agreement, class totals, a histogram of per-item agreement and,
when annotators are identified, one confusion matrix per annotator pair (sparse). :func:`summarize` turns the
merged counts into Fleiss' kappa, Krippendorff's alpha (nominal; ordinal and interval for numeric classes), raw
percent agreement, per-class agreement and Cohen's kappa per pair.

Fleiss' kappa with a varying number of annotations per item: observed agreement is the mean over items with at
least two annotations of the share of agreeing annotation pairs, chance agreement the sum of squared class
shares over those items' annotations (Fleiss 1971 when every item has the same number).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

AGREEMENT_BINS = 10  # per-item agreement histogram: [0, 0.1), ..., [0.9, 1.0]
MAX_PAIRS = 200  # annotator pairs reported (most shared items first)


@dataclass
class Annotations:
    """One block's annotations in long form: the item's row in the block, class code and annotator code."""

    n_items: int
    item: np.ndarray
    label: np.ndarray
    rater: np.ndarray  # all 0 when annotators are not identified


def item_counts(a: Annotations, n_classes: int) -> np.ndarray:
    """Annotations per item and class (items x classes)."""
    flat = np.bincount(a.item * n_classes + a.label, minlength=a.n_items * n_classes)
    return flat.reshape(a.n_items, n_classes)


def item_agreement(counts: np.ndarray) -> np.ndarray:
    """Share of agreeing annotation pairs per item (NaN with fewer than two annotations)."""
    m = counts.sum(1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ((counts.astype(float) ** 2).sum(1) - m) / (m * (m - 1))
    return np.where(m >= 2, out, np.nan)


def block_counts(a: Annotations, n_classes: int, n_raters: int, identified: bool) -> dict:
    """The mergeable agreement counts of one block (numpy arrays and numbers; :func:`merge` adds them)."""
    counts = item_counts(a, n_classes)
    m = counts.sum(1)
    pairable = counts[m >= 2].astype(float)
    weights = pairable / (pairable.sum(1, keepdims=True) - 1)
    coincidence = pairable.T @ weights - np.diag(weights.sum(0))
    agreement = item_agreement(counts)
    agreement = agreement[~np.isnan(agreement)]
    out = {
        "items": a.n_items,
        "annotations": int(m.sum()),
        "unannotated_items": int((m == 0).sum()),
        "pairable_items": len(pairable),
        "agreement_sum": float(agreement.sum()),
        "unanimous_items": int((agreement == 1).sum()),
        "class_totals": pairable.sum(0),
        "coincidence": coincidence,
        "agreement_hist": np.bincount(
            np.minimum((agreement * AGREEMENT_BINS + 1e-9).astype(int), AGREEMENT_BINS - 1), minlength=AGREEMENT_BINS
        ),
    }
    if identified:
        out["pairs"] = pair_counts(a, n_classes, n_raters)
        out["rater_annotations"] = np.bincount(a.rater, minlength=n_raters)
    return out


def pair_counts(a: Annotations, n_classes: int, n_raters: int) -> dict[int, int]:
    """Sparse confusion counts of annotator pairs on shared items: index ((r1 * R + r2) * C + l1) * C + l2, r1 < r2."""
    df = pd.DataFrame({"item": a.item, "rater": a.rater, "label": a.label})
    both = df.merge(df, on="item")
    both = both[both["rater_x"] < both["rater_y"]]
    index = (
        (both["rater_x"].to_numpy(np.int64) * n_raters + both["rater_y"].to_numpy()) * n_classes
        + both["label_x"].to_numpy()
    ) * n_classes + both["label_y"].to_numpy()
    keys, n = np.unique(index, return_counts=True)
    return dict(zip(keys.tolist(), n.tolist()))


def merge(a: dict | None, b: dict) -> dict:
    """Add two blocks' counts."""
    if a is None:
        return b
    out = {}
    for k, v in a.items():
        if isinstance(v, dict):
            merged = dict(v)
            for key, n in b[k].items():
                merged[key] = merged.get(key, 0) + n
            out[k] = merged
        else:
            out[k] = v + b[k]
    return out


def fleiss_kappa(agreement_sum: float, pairable_items: int, class_totals: np.ndarray) -> float | None:
    if not pairable_items or not class_totals.sum():
        return None
    observed = agreement_sum / pairable_items
    shares = class_totals / class_totals.sum()
    chance = float((shares**2).sum())
    return None if chance == 1 else (observed - chance) / (1 - chance)


def distance(n_c: np.ndarray, level: str, values: np.ndarray | None = None) -> np.ndarray:
    """Krippendorff's squared difference between classes: nominal, ordinal (classes in order), interval."""
    k = len(n_c)
    if level == "nominal":
        return 1.0 - np.eye(k)
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        lo, hi = np.minimum.outer(np.arange(k), np.arange(k)), np.maximum.outer(np.arange(k), np.arange(k))
        return (cum[hi + 1] - cum[lo] - (n_c[lo] + n_c[hi]) / 2) ** 2
    raise ValueError(level)


def krippendorff_alpha(
    coincidence: np.ndarray, level: str = "nominal", values: np.ndarray | None = None
) -> float | None:
    """Alpha from the coincidence matrix: 1 - (n - 1) * sum(o * d) / sum(n_c n_k d)."""
    n_c = coincidence.sum(1)
    n = n_c.sum()
    d = distance(n_c, level, values)
    expected = (np.outer(n_c, n_c) * d).sum()
    if n <= 1 or expected == 0:
        return None
    return float(1 - (n - 1) * (coincidence * d).sum() / expected)


def cohen_kappa(confusion: np.ndarray) -> float | None:
    """Cohen's kappa of two annotators from their confusion matrix on shared items."""
    n = confusion.sum()
    if not n:
        return None
    observed = np.trace(confusion) / n
    chance = float((confusion.sum(1) / n) @ (confusion.sum(0) / n))
    return None if chance == 1 else float((observed - chance) / (1 - chance))


def per_class(coincidence: np.ndarray, classes: list[str]) -> dict[str, dict]:
    """Per class: pairable values, specific agreement (share of its pairings that agree) and binary alpha (the
    class against all others)."""
    n_c = coincidence.sum(1)
    n = n_c.sum()
    out = {}
    for i, name in enumerate(classes):
        agree = coincidence[i, i] / n_c[i] if n_c[i] else None
        alpha = (1 - (n - 1) * (n_c[i] - coincidence[i, i]) / (n_c[i] * (n - n_c[i]))) if 0 < n_c[i] < n else None
        out[name] = {"values": round(float(n_c[i]), 3), "specific_agreement": rounded(agree), "alpha": rounded(alpha)}
    return out


def pair_kappas(pairs: dict[int, int], raters: list[str], n_classes: int) -> list[dict]:
    """Cohen's kappa, shared items and percent agreement per annotator pair (up to ``MAX_PAIRS``, most items first)."""
    R, C = len(raters), n_classes
    matrices: dict[tuple[int, int], np.ndarray] = {}
    for index, n in pairs.items():
        pair, cell = divmod(index, C * C)
        r1, r2 = divmod(pair, R)
        matrices.setdefault((r1, r2), np.zeros((C, C), np.int64))[divmod(cell, C)] += n
    rows = [
        {
            "annotators": [raters[r1], raters[r2]],
            "items": int(m.sum()),
            "cohen_kappa": rounded(cohen_kappa(m)),
            "percent_agreement": rounded(np.trace(m) / m.sum()),
            "confusion": m.tolist(),
        }
        for (r1, r2), m in matrices.items()
    ]
    rows.sort(key=lambda r: (-r["items"], r["annotators"]))
    return rows[:MAX_PAIRS]


def summarize(counts: dict, classes: list[str], raters: list[str] | None, numeric: bool) -> dict:
    """Agreement over all items (the ``labels`` entry of report.json, less consensus)."""
    O = counts["coincidence"]
    alpha = {"nominal": rounded(krippendorff_alpha(O))}
    if numeric:
        values = np.array([float(c) for c in classes])
        alpha["ordinal"] = rounded(krippendorff_alpha(O, "ordinal"))
        alpha["interval"] = rounded(krippendorff_alpha(O, "interval", values))
    pairable = counts["pairable_items"]
    out = {
        "items": counts["items"],
        "annotations": counts["annotations"],
        "unannotated_items": counts["unannotated_items"],
        "pairable_items": pairable,
        "classes": classes,
        "fleiss_kappa": rounded(fleiss_kappa(counts["agreement_sum"], pairable, counts["class_totals"])),
        "krippendorff_alpha": alpha["nominal"],
        "krippendorff_alpha_by_level": alpha,
        "percent_agreement": rounded(counts["agreement_sum"] / pairable) if pairable else None,
        "unanimous_fraction": rounded(counts["unanimous_items"] / pairable) if pairable else None,
        "per_class": per_class(O, classes),
        "coincidence": np.round(O, 3).tolist(),
        "item_agreement_histogram": counts["agreement_hist"].tolist(),
    }
    if raters is not None:
        kappas = pair_kappas(counts["pairs"], raters, len(classes))
        values = [p["cohen_kappa"] for p in kappas if p["cohen_kappa"] is not None]
        out["annotators"] = raters
        out["annotations_per_annotator"] = dict(zip(raters, counts["rater_annotations"].tolist()))
        out["cohen_kappa_pairs"] = kappas
        out["cohen_kappa_mean"] = rounded(float(np.mean(values))) if values else None  # Light's kappa
    return out


def rounded(x) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else round(float(x), 6)
