"""``label_noise``: finds records whose given label is likely wrong (:mod:`thresher.curate.labels.noise`).

A global stage. The map side sends each record's hashed text features (``dims`` floats, from ``text_fields``) and
its given label (``label_field``; when an earlier global stage of the same segment decides that column, e.g.
``labels``' consensus ``label``, its decision is used). ``decide`` works on the key-row blocks where they are: a
deterministic sample of at most ``max_train_rows`` labelled rows goes to one task that fits ``folds`` logistic
regressions; the blocks get their out-of-fold probabilities from the fitted weights, the per-class thresholds are
merged from per-block sums, and each record is judged.

Every judged record gets ``label_suggested`` (the confident class, null when none) and ``label_quality`` (the
probability of its given label); an issue gets ``label_issue``, the reason (``likely <class>: p(given <y>)=..
< t=.., p(<class>)=.. >= t=..``). ``action``: ``flag`` (columns only), ``review`` (issues go to the
``review_split``) or ``drop`` (issues are rejected, reason ``label_noise``, detail the same text). Records without
a given label, or with one outside the classes seen, are not judged. The issues are only as good as the model:
the metrics compare its out-of-fold accuracy with always answering the largest class (on SNLI, where character
n-grams cannot tell entailment from contradiction, both are about 1/3 and most records would be flagged).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.curate.labels import noise, ordered_classes
from thresher.curate.stage import KEY, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, SPLIT, GlobalStage, StageConfig

FEATURES, GIVEN = "_noise_features", "_noise_label"
ISSUE, SUGGESTED, QUALITY = "label_issue", "label_suggested", "label_quality"
PROBS = "_noise_probs"


class LabelNoiseConfig(StageConfig):
    label_field: str = Field("label", description="the given label")
    text_fields: list[str] | None = Field(None, description="fields the features are computed from (default: the text)")
    dims: int = Field(512, ge=8, le=4096, description="hashed feature dimensions (floats per key row)")
    folds: int = Field(
        5, ge=2, description=("cross-validation folds: each record is judged by a model that did not train on it")
    )
    regularization: float = Field(10.0, gt=0, description="inverse L2 strength of the logistic regressions")
    max_train_rows: int = Field(200_000, ge=10, description="labelled rows sampled (by key hash) for training")
    action: Literal["flag", "review", "drop"] = Field(
        "flag", description=("flag: columns only; review: issues go to review_split; drop: issues are rejected")
    )
    review_split: str = Field(
        "review", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description=("the split of the issues with action review")
    )
    seed: int = Field(0, ge=0, description="seed of the training sample and folds")


class LabelNoise(GlobalStage):
    name = "label_noise"
    Config = LabelNoiseConfig
    report_sections = ("label_noise",)

    @classmethod
    def label_fields(cls, options: dict) -> list[str]:
        return [options.get("label_field", "label")]

    def added_columns(self) -> dict[str, str]:
        return {
            ISSUE: "why the given label is likely wrong (null: no issue found)",
            SUGGESTED: "the class the out-of-fold model is confident about (null: none)",
            QUALITY: "out-of-fold probability of the given label",
        }

    def decision_columns(self) -> list[str]:
        return [SPLIT, *self.added_columns()] if self.config.action == "review" else list(self.added_columns())

    def decision_types(self) -> dict[str, pa.DataType]:
        return {QUALITY: pa.float64()}

    def keys(self, batch: pa.Table) -> dict:
        out = {FEATURES: noise.text_features(batch, self.config.text_fields or [self.text], self.config.dims)}
        if self.config.label_field in batch.column_names:
            out[GIVEN] = batch[self.config.label_field].cast(pa.string())
        return out

    def decide(self, ds):
        c = self.config
        tasks = ds.tasks()
        refs = ds.blocks()
        total = ds.count()
        label_col = c.label_field if c.label_field in ds.schema().names else GIVEN
        classes = ordered_classes(set().union(*tasks.get([tasks.run(_labels, ref, label_col) for ref in refs])))
        self.metrics = {"classes": classes, "records": total}
        if len(classes) < 2:
            self.metrics["skipped"] = "fewer than two classes"
            return tasks.rows([tasks.run(_annotate_none, ref) for ref in refs])
        fraction = min(1.0, c.max_train_rows / total)
        samples = [tasks.run(_sample, ref, label_col, classes, fraction, c.folds, c.seed) for ref in refs]
        model = tasks.run(noise.fit_samples, c.folds, len(classes), c.regularization, *samples)
        scored = [tasks.run(_score, ref, model, label_col, classes, c.folds, c.seed, returns=2) for ref in refs]
        sums = _add(tasks.get([s for _, s in scored]))
        t = noise.thresholds(sums)
        decided = [
            tasks.run(_judge, table, t, classes, c.action, c.review_split, self.name, returns=2) for table, _ in scored
        ]
        stats = _add(tasks.get([s for _, s in decided]))
        judged = int(stats["judged"])
        self.metrics.update(
            {
                "action": c.action,
                "folds": c.folds,
                "train_rows": int(tasks.get(model)[2]),
                "judged": judged,
                "issues": int(stats["issues"]),
                "issue_rate": round(stats["issues"] / judged, 6) if judged else None,
                "out_of_fold_accuracy": round(stats["correct"] / judged, 6) if judged else None,
                "majority_class_accuracy": round(sums["counts"].max() / judged, 6) if judged else None,
                "thresholds": dict(zip(classes, np.round(t, 6).tolist())),
                "confident_joint": stats["joint"].astype(int).tolist(),
            }
        )
        return tasks.rows([table for table, _ in decided])


def _add(parts: list[dict]) -> dict:
    return {k: sum(p[k] for p in parts) for k in parts[0]}


def _given(table: pa.Table, label_col: str, classes: list[str]) -> np.ndarray:
    """Given label codes (-1: none or unknown)."""
    if label_col not in table.column_names:
        return np.full(table.num_rows, -1)
    codes = pc.index_in(table[label_col].cast(pa.string()), value_set=pa.array(classes, pa.string()))
    return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _labels(table: pa.Table, label_col: str) -> set:
    if label_col not in table.column_names:
        return set()
    return set(pc.unique(table[label_col].cast(pa.string())).drop_null().to_pylist())


def _sample(table: pa.Table, label_col: str, classes: list[str], fraction: float, folds: int, seed: int):
    y = _given(table, label_col, classes)
    fold, draw = noise.folds_and_draws(table[KEY].to_numpy(), folds, seed)
    keep = (y >= 0) & (draw < fraction)
    return noise.feature_matrix(table[FEATURES])[keep], y[keep], fold[keep]


def _score(table: pa.Table, model, label_col: str, classes: list[str], folds: int, seed: int):
    W, b, _ = model
    p = noise.out_of_fold_probabilities(
        noise.feature_matrix(table[FEATURES]), noise.folds_and_draws(table[KEY].to_numpy(), folds, seed)[0], W, b
    )
    y = _given(table, label_col, classes)
    table = table.drop_columns([FEATURES]).append_column(
        PROBS, pa.FixedSizeListArray.from_arrays(pa.array(p.ravel(), pa.float64()), len(classes))
    )
    table = table.append_column("_noise_given", pa.array(y, pa.int64()))
    return table, noise.threshold_sums(p, y, len(classes))


def _judge(table: pa.Table, t: np.ndarray, classes: list[str], action: str, review_split: str, stage: str):
    col = table[PROBS].combine_chunks()
    p = col.values.to_numpy(zero_copy_only=False).reshape(len(col), len(classes))
    y = table["_noise_given"].to_numpy()
    judged = y >= 0
    best = noise.confident_class(p, t)
    issue = judged & (best >= 0) & (best != y)
    rows = np.arange(len(y))
    quality = np.where(judged, p[rows, np.maximum(y, 0)], np.nan)
    reasons = [None] * len(y)
    for i in np.flatnonzero(issue):
        g, k = y[i], best[i]
        reasons[i] = (
            f"likely {classes[k]}: p(given {classes[g]})={p[i, g]:.3f} < t={t[g]:.3f}, "
            f"p({classes[k]})={p[i, k]:.3f} >= t={t[k]:.3f}"
        )
    names = np.asarray(classes + [None], dtype=object)
    out = table.drop_columns(
        [c for c in (PROBS, "_noise_given", GIVEN, ISSUE, SUGGESTED, QUALITY) if c in table.column_names]
    )
    out = out.append_column(ISSUE, pa.array(reasons, pa.string()))
    out = out.append_column(SUGGESTED, pa.array(names[np.where(judged, best, -1)], pa.string()))
    out = out.append_column(QUALITY, pa.array(quality, pa.float64(), from_pandas=True))
    if action != "flag" and issue.any():
        mask = pa.array(issue)
        if action == "review":
            split = out[SPLIT].cast(pa.string()) if SPLIT in out.column_names else pa.nulls(len(y), pa.string())
            out = _set(out, SPLIT, pc.if_else(mask, review_split, split))
        else:
            out = _set(out, REJECT_STAGE, pc.if_else(mask, stage, out[REJECT_STAGE].cast(pa.string())))
            out = _set(out, REJECT_REASON, pc.if_else(mask, "label_noise", out[REJECT_REASON].cast(pa.string())))
            out = _set(out, REJECT_DETAIL, pc.if_else(mask, out[ISSUE], out[REJECT_DETAIL].cast(pa.string())))
    joint = np.zeros((len(classes), len(classes)))
    confident = judged & (best >= 0)
    np.add.at(joint, (y[confident], best[confident]), 1)
    return out, {
        "judged": int(judged.sum()),
        "issues": int(issue.sum()),
        "joint": joint,
        "correct": int((judged & (p.argmax(1) == y)).sum()),
    }


def _set(table: pa.Table, name: str, column) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, column)
    return table.append_column(name, column)


def _annotate_none(table: pa.Table) -> pa.Table:
    """Nothing to judge (fewer than two classes): the decision columns, null."""
    out = table.drop_columns([c for c in (FEATURES, GIVEN) if c in table.column_names])
    for name, kind in ((ISSUE, pa.string()), (SUGGESTED, pa.string()), (QUALITY, pa.float64())):
        out = _set(out, name, pa.nulls(table.num_rows, kind))
    return out
