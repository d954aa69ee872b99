"""Semantic dedup on key rows (SemDeDup: Abbas et al. 2023): spherical k-means on a sample, assignment of every row
to its nearest centroid, then cosine similarities of the pairs inside each cluster only.

* Sample: the rows whose id hashes below ``sample / rows`` of the 64-bit range (the same rows whatever the
  blocks), sorted by that hash, so the fit sees the same vectors in the same order on any number of CPUs.
* Fit (:func:`fit_centroids`, one task): k-means++ seeding from a seeded generator, then Lloyd iterations on the
  unit sphere (centroids are normalised means; similarity is the dot product).
* Assignment (map tasks): each row's nearest centroid and its cosine to it, in float64.
* Pairs (:func:`cluster_roots`, one task per shuffle partition holding whole clusters): a cluster larger than
  ``max_size`` is split by k-means again (seeded from its own index), and pieces k-means cannot split (e.g. many
  identical vectors) are cut along their principal direction, so no piece exceeds ``max_size`` and the cost is
  bounded by ``rows x max_size`` comparisons; the pairs at or above the threshold are linked and each connected
  component's lowest keep key survives (``thresher.curate.dedup.components.smallest_roots``). Rows are sorted by keep
  key first, so the result does not depend on the order rows arrive in.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from thresher.curate.dedup.components import smallest_roots
from thresher.curate.dedup.removal import KEY as KEEP_KEY
from thresher.curate.dedup.removal import ROOT_SCHEMA
from thresher.curate.execution.worker import fetched
from thresher.curate.stage import ID

VECTOR = "_semantic_vector"
KMEANS = "semantic_kmeans"
SIMILARITY = "_semantic_centroid_similarity"
HASH = "_semantic_sample_hash"
CENTROID = "centroid"
PAIR_ROWS = 1024  # rows of a cluster compared with all its rows at once (bounds the similarity block)


def as_matrix(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors float32 (n, dim), valid (n,))`` from a list or fixed-size list column, or an extension type over
    one (Ray Data's tensor type, which a column of vectors becomes after a pandas batch), zeros where null."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if isinstance(values, pa.ExtensionArray):
        values = values.storage
    valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
    if not valid.any():
        return np.zeros((len(values), 0), np.float32), valid
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    dim = int(lengths[valid][0])
    if (lengths[valid] != dim).any():
        raise ValueError(f"embeddings of different sizes: {sorted(set(lengths[valid].tolist()))}")
    filled = pc.if_else(pc.is_valid(values), values, pa.scalar([0.0] * dim, values.type))
    flat = pc.list_flatten(filled).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(values), dim), valid


def fixed_vectors(matrix: np.ndarray, valid: np.ndarray | None = None) -> pa.FixedSizeListArray:
    mask = None if valid is None else pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), matrix.shape[1], mask=mask)


def id_hashes(batch: pa.Table) -> np.ndarray:
    return np.array([xxhash.xxh64_intdigest(str(i).encode()) for i in batch[ID].to_pylist()], np.uint64)


def sample_rows(batch: pa.Table, fraction: float) -> pa.Table:
    """The rows with an embedding whose id hash is below ``fraction`` of the range: ``(HASH, VECTOR)``."""
    valid = pc.is_valid(batch[VECTOR]).to_numpy(zero_copy_only=False)
    chosen = valid if fraction >= 1 else valid & (id_hashes(batch) < np.uint64(fraction * 2.0**64))
    picked = batch.filter(pa.array(chosen))
    return pa.table({HASH: pa.array(id_hashes(picked)), VECTOR: picked[VECTOR]})


def spherical_kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> np.ndarray:
    """``k`` unit centroids of the unit rows of ``x``: k-means++ seeding, then Lloyd steps with cosine."""
    x = x.astype(np.float64)
    k = min(k, len(x))
    centroids = np.empty((k, x.shape[1]))
    centroids[0] = x[rng.integers(len(x))]
    distance = 1 - x @ centroids[0]
    for i in range(1, k):
        weights = np.clip(distance, 0, None)
        total = weights.sum()
        pick = rng.choice(len(x), p=weights / total) if total > 0 else rng.integers(len(x))
        centroids[i] = x[pick]
        distance = np.minimum(distance, 1 - x @ centroids[i])
    for _ in range(iterations):
        labels = np.argmax(x @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, x)
        norms = np.linalg.norm(sums, axis=1)
        moved = norms > 0
        updated = centroids.copy()
        updated[moved] = sums[moved] / norms[moved, None]
        if np.array_equal(updated, centroids):
            break
        centroids = updated
    return centroids


def fit_centroids(sample: pa.Table, k: int, seed: int, iterations: int) -> pa.Table:
    """One task over the whole sample: ``CENTROID`` rows (fixed-size float32 lists)."""
    if sample.num_rows == 0:
        return pa.table({CENTROID: pa.array([], pa.list_(pa.float32(), 1))})
    sample = sample.take(pc.sort_indices(sample, [(HASH, "ascending")]))
    vectors, _ = as_matrix(sample[VECTOR])
    centroids = spherical_kmeans(vectors, k, np.random.default_rng(seed), iterations)
    return pa.table({CENTROID: fixed_vectors(centroids.astype(np.float32))})


def assign(batch: pa.Table, refs: list, schema: pa.Schema) -> pa.Table:
    """Key rows with their nearest centroid (``KMEANS``, null without embedding) and cosine to it (``SIMILARITY``);
    ``refs``: the broadcast centroid table (``schema``)."""
    centroids, _ = as_matrix(fetched(refs, schema)[CENTROID])
    vectors, valid = as_matrix(batch[VECTOR])
    if not valid.any() or not len(centroids):
        nearest, best = np.zeros(batch.num_rows, np.int32), np.zeros(batch.num_rows)
        valid = np.zeros(batch.num_rows, bool)
    else:
        sims = vectors.astype(np.float64) @ centroids.astype(np.float64).T
        nearest = np.argmax(sims, axis=1).astype(np.int32)
        best = sims[np.arange(len(sims)), nearest]
    return batch.append_column(KMEANS, pa.array(nearest, mask=~valid)).append_column(
        SIMILARITY, pa.array(best, mask=~valid)
    )


def cluster_counts(batch: pa.Table) -> pa.Table:
    """Per cluster of a batch: rows and the sum of their cosines to the centroid (summed again by the caller)."""
    rows = batch.select([KMEANS, SIMILARITY]).filter(pc.is_valid(batch[KMEANS]))
    summed = rows.group_by(KMEANS).aggregate([(SIMILARITY, "count"), (SIMILARITY, "sum")])
    return pa.table(
        {
            KMEANS: summed[KMEANS].cast(pa.int32()),
            "rows": summed[f"{SIMILARITY}_count"].cast(pa.int64()),
            "similarity": summed[f"{SIMILARITY}_sum"].cast(pa.float64()),
        }
    )


def split_to_size(vectors: np.ndarray, max_size: int, seed: int, iterations: int) -> list[np.ndarray]:
    """Row index sets of at most ``max_size`` rows covering ``vectors``: k-means splits, then principal-direction
    cuts where k-means leaves a piece as large as its input (module doc)."""
    pieces, done = [np.arange(len(vectors))], []
    while pieces:
        rows = pieces.pop()
        if len(rows) <= max_size:
            done.append(rows)
            continue
        k = -(-len(rows) // max_size) + 1
        centroids = spherical_kmeans(vectors[rows], k, np.random.default_rng([seed, len(rows)]), iterations)
        labels = np.argmax(vectors[rows].astype(np.float64) @ centroids.T, axis=1)
        parts = [rows[labels == label] for label in np.unique(labels)]
        if max(len(p) for p in parts) < len(rows):
            pieces.extend(parts)
            continue
        centred = vectors[rows].astype(np.float64) - vectors[rows].mean(axis=0)
        direction = np.linalg.svd(centred, full_matrices=False)[2][0] if centred.any() else np.zeros(vectors.shape[1])
        order = rows[np.lexsort((rows, centred @ direction))]
        done.extend(order[i : i + max_size] for i in range(0, len(order), max_size))
    return done


def similar_pairs(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``i < j`` whose cosine is at least ``threshold``, compared ``PAIR_ROWS`` rows at a time."""
    left, right = [], []
    for start in range(0, len(vectors), PAIR_ROWS):
        sims = vectors[start : start + PAIR_ROWS] @ vectors.T
        i, j = np.nonzero(sims >= threshold)
        i += start
        later = i < j
        left.append(i[later])
        right.append(j[later])
    return (np.concatenate(left), np.concatenate(right)) if left else (np.zeros(0, int), np.zeros(0, int))


def cluster_roots(block: pa.Table, threshold: float, max_size: int, seed: int, iterations: int) -> pa.Table:
    """``(node, root)`` keep keys for one partition of whole clusters: every row linked to another at
    ``threshold`` or above whose component's lowest keep key is not its own, with that key."""
    block = block.filter(pc.is_valid(block[KMEANS]))
    if block.num_rows == 0:
        return ROOT_SCHEMA.empty_table()
    block = block.take(pc.sort_indices(block, [(KMEANS, "ascending"), (KEEP_KEY, "ascending")]))
    labels = block[KMEANS].to_numpy()
    vectors, _ = as_matrix(block[VECTOR])
    keys = block[KEEP_KEY].to_pylist()
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    u, v = [], []
    for start, end in zip(starts, [*starts[1:], len(labels)]):
        cluster = np.arange(start, end)
        for piece in split_to_size(vectors[cluster], max_size, seed + int(labels[start]), iterations):
            rows = cluster[np.sort(piece)]
            i, j = similar_pairs(vectors[rows], threshold)
            u += [keys[r] for r in rows[i]]
            v += [keys[r] for r in rows[j]]
    pairs = [(n, r) for n, r in smallest_roots(u, v).items() if n != r]
    return pa.table([[n for n, _ in pairs], [r for _, r in pairs]], schema=ROOT_SCHEMA)
