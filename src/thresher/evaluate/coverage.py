"""Coverage gaps of ``thresher eval`` (``candidates.coverage``): the kinds of test question the training data
hardly holds.

The test prompts and a sample of the training prompts are embedded with a sentence encoder (all-MiniLM-L6-v2 by
default) on a Ray Data actor pool; the test prompts are clustered (spherical k-means, the most cohesive of 10
k-means++ starts, seeded) and
every training prompt is assigned to its nearest test cluster. A cluster whose share of the training prompts is
under ``max_ratio`` times its share of the test prompts is a gap: its test examples become candidates with reason
``coverage_gap`` (``coverage_cluster`` and ``coverage_ratio``, train share / test share, on every prediction row).

What is embedded is a prompt's content, not its template: the text column (format text), instruction and input
(alpaca), the user turns (chat), for the test records and the training records alike.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from thresher.core.config import ConfigError
from thresher.curate.fields import conversation
from thresher.curate.readers.common import field_text

COVERAGE_GAP = "coverage_gap"
CLUSTER, RATIO = "coverage_cluster", "coverage_ratio"
EXAMPLES, EXAMPLE_CHARS = 3, 120
RESTARTS = 10


def contents(rows: pa.Table, fmt: str, text_field: str) -> list[str]:
    """The content of each row's prompt: ``text_field`` (text), instruction and input (alpaca), user turns (chat)."""
    if fmt == "alpaca":
        inputs = rows.column("input").to_pylist() if "input" in rows.column_names else [None] * rows.num_rows
        return [
            "\n".join(p for p in (field_text(i) or "", field_text(x) or "") if p)
            for i, x in zip(rows.column("instruction").to_pylist(), inputs)
        ]
    if fmt == "chat":
        return [
            "\n".join(m.get("content") or "" for m in conversation(messages) or [] if m.get("role") == "user")
            for messages in rows.column("messages").to_pylist()
        ]
    return [field_text(t) or "" for t in rows.column(text_field).to_pylist()]


def kmeans(vectors: np.ndarray, k: int, seed: int, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means of L2-normalised ``vectors``: (unit centroids, each vector's cluster). k-means++ start
    (cosine distance), at most ``k`` clusters (fewer when the vectors have fewer distinct values)."""
    rng = np.random.default_rng(seed)
    centres = [vectors[rng.integers(len(vectors))]]
    while len(centres) < k:
        distance = np.clip(1.0 - np.max(vectors @ np.array(centres).T, axis=1), 0.0, None)
        weight = distance**2
        if weight.sum() <= 1e-12:
            break
        centres.append(vectors[rng.choice(len(vectors), p=weight / weight.sum())])
    c = np.array(centres)
    labels = np.argmax(vectors @ c.T, axis=1)
    for _ in range(iterations):
        moved = np.array([vectors[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(len(c))])
        moved /= np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)
        relabelled = np.argmax(vectors @ moved.T, axis=1)
        c = moved
        if np.array_equal(relabelled, labels):
            break
        labels = relabelled
    return c, labels


def gaps(test: np.ndarray, train: np.ndarray, clusters: int, max_ratio: float, seed: int) -> tuple[np.ndarray, list]:
    """(each test vector's cluster, one row per cluster: test and train counts and shares, ratio, gap)."""
    rng = np.random.default_rng(seed)
    best = None
    for start in rng.integers(0, 2**31, RESTARTS):
        c, _ = kmeans(test, min(clusters, len(test)), int(start))
        cohesion = float(np.max(test @ c.T, axis=1).sum())  # the summed cosine similarity to the nearest centroid
        if best is None or cohesion > best[0]:
            best = (cohesion, c)
    centres = best[1]
    labels = np.argmax(test @ centres.T, axis=1)
    assigned = np.argmax(train @ centres.T, axis=1) if len(train) else np.zeros(0, dtype=int)
    rows = []
    for j in range(len(centres)):
        n_test, n_train = int((labels == j).sum()), int((assigned == j).sum())
        test_share, train_share = n_test / len(test), n_train / max(len(train), 1)
        ratio = train_share / test_share
        rows.append(
            {
                "cluster": j,
                "test": n_test,
                "train": n_train,
                "test_share": test_share,
                "train_share": train_share,
                "ratio": ratio,
                "gap": ratio < max_ratio,
            }
        )
    return labels, rows


class Encode:
    """A Ray Data actor: the ``content`` column of a batch as a ``vector`` column (L2-normalised float32)."""

    def __init__(self, folder: str):
        import torch

        from thresher.models.encoders import SentenceEncoder

        torch.set_num_threads(1)
        self.encoder = SentenceEncoder(folder, "cpu")

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = self.encoder.encode([t or "" for t in batch.column("content").to_pylist()])
        flat = pa.array(vectors.reshape(-1), pa.float32())
        return pa.table({"vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})


def embed(ds, folder: str, num_actors: int) -> np.ndarray:
    """The vectors of a dataset with a ``content`` column, in its order, as an ``(n, dim)`` array."""
    import ray
    from ray.data import ActorPoolStrategy

    ds = ds.map_batches(
        Encode,
        batch_format="pyarrow",
        batch_size=256,
        compute=ActorPoolStrategy(size=num_actors),
        fn_constructor_kwargs={"folder": folder},
        num_cpus=1,
    )
    ds.context.execution_options.preserve_order = True
    tables = [t for t in ray.get(list(ds.to_arrow_refs())) if t.num_rows]
    if not tables:
        return np.zeros((0, 0), np.float32)
    column = pa.concat_tables(tables).column("vector").combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), -1)


def training_contents(ds, options):
    """The training records ``ds`` (the first ``max_rows``: :func:`thresher.evaluate.records.open_records`) as a
    Ray Dataset of their prompts' contents (column ``content``)."""
    columns = {"alpaca": ["instruction"], "chat": ["messages"]}.get(options.data.format, [options.data.text_field])
    missing = [c for c in columns if c not in ds.schema().names]
    if missing:
        raise ConfigError(
            f"candidates.coverage.data.format: format {options.data.format} reads column(s) {', '.join(missing)}, "
            f"which {options.data.path} lacks"
        )
    fmt, field = options.data.format, options.data.text_field
    return ds.map_batches(
        lambda t: pa.table({"content": contents(t, fmt, field)}), batch_format="pyarrow", zero_copy_batch=True
    )


def coverage(rows: pa.Table, cfg, train_records, cluster: dict[str, float]) -> tuple[dict, np.ndarray, np.ndarray]:
    """metrics.json's ``coverage``, each prediction row's cluster and ratio, for ``cfg`` (an EvalConfig), the
    training records ``train_records`` (a Ray Dataset) and the Ray session whose resources are ``cluster``."""
    import ray.data

    from thresher.models.resolve import resolve_model
    from thresher.runtime import check_fits, live_nodes

    options = cfg.candidates.coverage
    check_fits(
        "candidates.coverage.num_actors",
        options.num_actors,
        {"CPU": 1},
        cluster,
        live_nodes(),
        what="encoder actor",
        pipeline="the training data's read tasks",
    )
    folder = resolve_model(options.model, "candidates.coverage.model")
    test_text = contents(rows, cfg.data.format, "prompt" if cfg.data.format == "text" else cfg.data.text_field)
    test = embed(ray.data.from_arrow(pa.table({"content": test_text})), folder, options.num_actors)
    train = embed(training_contents(train_records, options), folder, options.num_actors)
    if not len(train):
        raise ConfigError(f"candidates.coverage.data.path: no records at {options.data.path}")
    labels, clusters = gaps(test, train, options.clusters, options.max_ratio, options.seed)
    for c in clusters:
        c["examples"] = [t[:EXAMPLE_CHARS] for t, j in zip(test_text, labels) if j == c["cluster"]][:EXAMPLES]
    ratio = np.array([clusters[j]["ratio"] for j in labels])
    summary = {
        "clusters": clusters,
        "gaps": sum(c["gap"] for c in clusters),
        "test_rows": len(test),
        "train_rows": len(train),
        "options": options.model_dump(),
    }
    return summary, labels, ratio
