"""``labels``' assist: proposals for the records without annotations, from logistic regressions on hashed text
features (:mod:`thresher.curate.labels.noise`) trained on the consensus records, calibrated by a temperature."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.labels import noise
from thresher.curate.labels.consensus import CONFIDENCE, LABEL, PRIOR_SPLIT, STATUS, STATUSES
from thresher.curate.stage import KEY, SPLIT

FEATURES = "_labels_features"  # key rows: the record's hashed text features
TEMPERATURES = np.exp(np.linspace(np.log(0.1), np.log(10.0), 81))  # calibration grid


def _consensus_codes(table: pa.Table, classes: list[str]) -> np.ndarray:
    """The class code of each consensus record (-1 for the others)."""
    codes = pc.fill_null(pc.index_in(table[LABEL], value_set=pa.array(classes, pa.string())), -1)
    consensus = pc.fill_null(pc.equal(table[STATUS], STATUSES[0]), False)
    return np.where(consensus.to_numpy(zero_copy_only=False), codes.to_numpy(zero_copy_only=False), -1)


def _scores(table: pa.Table, model, folds: int, seed: int) -> np.ndarray:
    """Class probabilities of each row from the fold model that did not train on it."""
    W, b, _ = model
    fold = noise.folds_and_draws(table[KEY].to_numpy(), folds, seed)[0]
    return noise.out_of_fold_probabilities(noise.feature_matrix(table[FEATURES]), fold, W, b)


def _tempered(p: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of probabilities: softmax(log p / T)."""
    z = np.log(np.clip(p, 1e-12, 1.0)) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def training_sample(table: pa.Table, classes: list[str], fraction: float, folds: int, seed: int):
    y = _consensus_codes(table, classes)
    fold, draw = noise.folds_and_draws(table[KEY].to_numpy(), folds, seed)
    keep = (y >= 0) & (draw < fraction)
    return noise.feature_matrix(table[FEATURES])[keep], y[keep], fold[keep]


def calibration(table: pa.Table, model, classes: list[str], folds: int, seed: int) -> np.ndarray:
    """Over the block's consensus records: [records, out-of-fold correct, log loss at each of ``TEMPERATURES``]."""
    y = _consensus_codes(table, classes)
    known = y >= 0
    out = np.zeros(2 + len(TEMPERATURES))
    if not known.any():
        return out
    p, y = _scores(table.filter(pa.array(known)), model, folds, seed), y[known]
    out[0], out[1] = len(y), (p.argmax(1) == y).sum()
    for i, t in enumerate(TEMPERATURES):
        out[2 + i] = -np.log(np.clip(_tempered(p, t)[np.arange(len(y)), y], 1e-300, 1.0)).sum()
    return out


def propose(
    table: pa.Table,
    model,
    temperature: float | None,
    classes: list[str],
    folds: int,
    seed: int,
    min_confidence: float,
    review_split: str,
) -> tuple[pa.Table, np.ndarray]:
    """Records without annotations get the proposed label and its calibrated confidence: ``proposed`` (their split
    kept) or ``proposal_low_confidence`` (review split); returns the block and [proposed, low confidence]."""
    todo = pc.fill_null(pc.equal(table[STATUS], STATUSES[3]), False).to_numpy(zero_copy_only=False)
    out = table.drop_columns([FEATURES, PRIOR_SPLIT])
    if model is None or not todo.any():
        return out, np.zeros(2, np.int64)
    p = _tempered(_scores(table.filter(pa.array(todo)), model, folds, seed), temperature)
    rows = np.flatnonzero(todo)
    label = np.asarray(table[LABEL].to_pylist(), dtype=object)
    confidence = table[CONFIDENCE].to_numpy(zero_copy_only=False).astype(float)
    status = np.asarray(table[STATUS].to_pylist(), dtype=object)
    split = np.asarray(table[SPLIT].to_pylist(), dtype=object)
    sure = p.max(1) >= min_confidence
    label[rows] = np.asarray(classes, dtype=object)[p.argmax(1)]
    confidence[rows] = p.max(1)
    status[rows] = np.where(sure, STATUSES[4], STATUSES[5])
    split[rows] = np.where(sure, np.asarray(table[PRIOR_SPLIT].to_pylist(), dtype=object)[rows], review_split)
    for name, values, kind in (
        (LABEL, label, pa.string()),
        (CONFIDENCE, confidence, pa.float64()),
        (STATUS, status, pa.string()),
        (SPLIT, split, pa.string()),
    ):
        out = out.set_column(out.column_names.index(name), name, pa.array(values, kind, from_pandas=True))
    return out, np.array([sure.sum(), (~sure).sum()], np.int64)
