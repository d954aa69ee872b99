"""Label-noise detection, confident-learning style (Northcutt et al. 2021), on fixed-size hashed text features.

* features: character n-grams (1-4, inside word boundaries) hashed into ``dims`` buckets, L2-normalized
  (scikit-learn's ``HashingVectorizer``): a fixed-size vector per record, computed where the record is;
* out-of-fold probabilities: every record has a fold (hash of its key); fold k's model is a multinomial logistic
  regression trained on the training sample's records of the other folds, and scores the records of fold k;
* per class j the threshold t_j is the mean predicted probability of j over the records labelled j; a record
  labelled y is an issue when the most probable class among those reaching their threshold is not y (the
  off-diagonal of the confident joint).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import xxhash

NGRAMS = (1, 4)


def text_features(batch: pa.Table, fields: list[str], dims: int) -> pa.FixedSizeListArray:
    """Per row the hashed features of its ``fields`` (texts joined by newlines; a missing field is empty)."""
    columns = [
        batch[f].cast(pa.string()).to_pylist() if f in batch.column_names else [None] * batch.num_rows for f in fields
    ]
    X = hashed_features(["\n".join(v for v in row if v) for row in zip(*columns)], dims)
    return pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), pa.float32()), dims)


def feature_matrix(column) -> np.ndarray:
    """A :func:`text_features` column as a rows x dims matrix."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)


def folds_and_draws(keys, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per internal key its fold and a uniform draw in [0, 1) for sampling, both from a seeded hash of the key."""
    h = np.array(
        [xxhash.xxh64_intdigest(int(k).to_bytes(8, "little", signed=True), seed) for k in np.asarray(keys)], np.uint64
    )
    return (h % np.uint64(folds)).astype(np.int64), (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def fit_samples(folds: int, n_classes: int, regularization: float, *samples) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`fit_folds` on the concatenated ``(X, y, fold)`` samples; returns the weights, biases and row count."""
    X = np.concatenate([s[0] for s in samples])
    y = np.concatenate([s[1] for s in samples])
    fold = np.concatenate([s[2] for s in samples])
    W, b = fit_folds(X, y, fold, folds, n_classes, regularization)
    return W, b, len(y)


def hashed_features(texts: list[str], dims: int) -> np.ndarray:
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(
        n_features=dims, analyzer="char_wb", ngram_range=NGRAMS, alternate_sign=False, norm="l2"
    )
    return vectorizer.transform([t or "" for t in texts]).toarray().astype(np.float32)


def fit_folds(
    X: np.ndarray, y: np.ndarray, fold: np.ndarray, folds: int, n_classes: int, regularization: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per fold k, the weights (classes x dims) and biases of a logistic regression trained without fold k; a
    class absent from a fold's training rows gets probability 0."""
    from sklearn.linear_model import LogisticRegression

    W = np.zeros((folds, n_classes, X.shape[1]), np.float64)
    b = np.full((folds, n_classes), -np.inf)
    for k in range(folds):
        train = fold != k
        present = np.unique(y[train])
        if len(present) == 1:
            b[k, present[0]] = 0.0
            continue
        model = LogisticRegression(C=regularization, max_iter=1000).fit(X[train], y[train])
        coef, intercept = model.coef_, model.intercept_
        if len(present) == 2:  # binary: one row of weights for the second class
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        W[k, present], b[k, present] = coef, intercept
    return W, b


def out_of_fold_probabilities(X: np.ndarray, fold: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    logits = np.einsum("nd,ncd->nc", X.astype(np.float64), W[fold]) + b[fold]
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def threshold_sums(p: np.ndarray, y: np.ndarray, n_classes: int) -> dict:
    """Mergeable sums for the per-class thresholds (records with a known given label, ``y >= 0``)."""
    known = y >= 0
    sums = np.zeros(n_classes)
    np.add.at(sums, y[known], p[known, y[known]])
    return {"sums": sums, "counts": np.bincount(y[known], minlength=n_classes)}


def thresholds(stats: dict) -> np.ndarray:
    """t_j: mean probability of class j over the records labelled j (1 for a class nobody has: never confident)."""
    counts = stats["counts"]
    return np.where(counts > 0, stats["sums"] / np.maximum(counts, 1), 1.0)


def confident_class(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per record, the most probable class among those at or above their threshold (-1: none)."""
    above = np.where(p >= t[None, :], p, -1.0)
    best = above.argmax(1)
    return np.where(above.max(1) >= 0, best, -1)
