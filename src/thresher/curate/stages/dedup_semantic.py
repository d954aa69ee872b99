"""``dedup_semantic``: near-duplicates by meaning (SemDeDup), on the embeddings an earlier ``embed`` stage added
(a global stage; the algorithm is in ``thresher.curate.dedup.semantic``).

Key rows carry the internal key, id, text length and the record's embedding (``column``, read on the map side from
the staged record, so the model runs once, in ``embed``); the records stay staged. On the key rows:

1. spherical k-means with ``clusters`` centroids (default: one per ``cluster_size`` records, at most ``sample / 100``
   so the fit, ``clusters x sample x dimensions`` per iteration, stays bounded) is fitted in one task on a sample
   of about ``sample`` rows chosen by id hash, from a seeded k-means++ start;
2. every row is assigned to its nearest centroid (map tasks; the centroids are broadcast);
3. the rows are hash-partitioned by cluster, and inside each cluster (split into pieces of at most ``max_cluster_size``
   rows when larger) every pair with cosine similarity at or above ``threshold`` is linked; no pair across
   clusters is ever compared;
4. each connected component keeps one record by the ``keep`` rule (``lowest_id``, ``longest``, or ``centroid``: the
   closest to its k-means centroid; ties by id, then internal key) and the others are rejected as
   ``semantic_duplicate`` with detail ``duplicate of kept record <id>`` (or all kept with ``action: annotate``).

``against`` names earlier finished runs: their kept records' embeddings (their index, ``index/dedup_semantic/``:
per record its id and vector, read from the ``column`` of their data files, never their texts;
``thresher.curate.dedup.against_runs``) join the key rows, take part in the fit and the clusters, and always survive;
a record in a component with one is rejected (``duplicate_of_reference``, detail ``duplicate of record <id> of
<run>``). The fit and the cluster metrics then cover them too.

Kept records get ``semantic_cluster`` (the kept id of their component, their own id when alone) and
``semantic_kmeans`` (their k-means cluster). ``metrics.dedup_semantic`` in the manifest holds the fit (clusters,
sample rows) and per cluster its size and mean cosine to the centroid (its density), which the diversity report
reads. Decisions on the same embeddings are the same for any number of CPUs, blocks or partitions; embeddings
themselves can differ in their last bits with the batch they were computed in (about 1e-7), which can only
change a pair whose similarity is that close to ``threshold``.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.curate.dedup.against_runs import ReferenceDedup
from thresher.curate.dedup.removal import KEY, LENGTH, apply_roots, keep_keys, mark_removed, text_lengths
from thresher.curate.dedup.semantic import (
    KMEANS,
    SIMILARITY,
    VECTOR,
    as_matrix,
    assign,
    cluster_counts,
    cluster_roots,
    fit_centroids,
    fixed_vectors,
    sample_rows,
)
from thresher.curate.execution.worker import partitions_for
from thresher.curate.stage import ID, StageConfig

log = logging.getLogger(__name__)
CLUSTER = "semantic_cluster"
SINGLE_TASK_ROWS = 20_000  # up to this many key rows, all clusters are compared in one task (no shuffle)
CLOSENESS_SCALE = 10**6  # cosine to the centroid in keep keys, to 1e-6
SAMPLE_PER_CLUSTER = 100  # default clusters: at most sample / this (the fit costs clusters x sample per iteration)


class DedupSemanticConfig(StageConfig):
    threshold: float = Field(0.9, gt=0, le=1, description="cosine similarity at or above which records are duplicates")
    column: str = Field("embedding", min_length=1, description="the embedding column (added by embed)")
    clusters: int | None = Field(
        None, ge=1, description=("k-means clusters (default: one per cluster_size records, at most sample / 100)")
    )
    cluster_size: int = Field(1000, ge=1, description="records per cluster when clusters is not given")
    max_cluster_size: int = Field(5000, ge=2, description="larger clusters are split before pairs are compared")
    sample: int = Field(100_000, ge=1, description="rows the k-means fit sees (chosen by id hash)")
    iterations: int = Field(25, ge=1, description="k-means (Lloyd) iterations at most")
    seed: int = Field(0, description="seed of the k-means sample and start")
    keep: Literal["lowest_id", "longest", "centroid"] = Field(
        "lowest_id",
        description=(
            "which record of a component survives: the lowest id, the longest text, or the closest to its centroid"
        ),
    )
    action: Literal["remove", "annotate"] = Field(
        "remove", description=("remove the duplicates, or keep every record with its semantic_cluster")
    )
    partitions: int | None = Field(None, ge=1, description="shuffle partitions (default: one per 4 M rows, at least 2)")
    against: list[str] = Field(
        [], description=("finished runs (URIs) whose kept records win: a record near one of them is removed")
    )


class DedupSemantic(ReferenceDedup):
    name = "dedup_semantic"
    Config = DedupSemanticConfig
    report_sections = ("diversity",)
    gates = ("max_duplicate_rate",)

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.metrics: dict = {}

    def added_columns(self) -> dict[str, str]:
        return {
            CLUSTER: "id of the record kept for this record's semantic near-duplicate cluster (its own id if none)",
            KMEANS: "index of the record's k-means cluster of embeddings (dedup_semantic)",
        }

    def decision_types(self) -> dict[str, pa.DataType]:
        return {KMEANS: pa.int32()}

    def keys(self, batch: pa.Table) -> dict:
        """Map side: text length and the record's embedding (float32 fixed-size list)."""
        column = self.config.column
        if column not in batch.column_names:
            raise ValueError(f"dedup_semantic: the records have no column {column!r}; add an embed stage before it")
        vectors, valid = as_matrix(batch[column])
        return {**text_lengths(batch, self.text), VECTOR: fixed_vectors(vectors, valid)}

    def index_options(self) -> dict:
        return {"column": self.config.column}

    def index_columns(self) -> list[str]:
        return [self.config.column]

    def index_key_columns(self) -> list[str]:
        return [VECTOR]

    def index_table(self, records: pa.Table, part: int) -> pa.Table:
        """An index part: ``id``, ``_key`` and the embedding of each kept record (no text, so no length)."""
        vectors, valid = as_matrix(records[self.config.column])
        return self.index_from_keys(pa.table({ID: records[ID], VECTOR: fixed_vectors(vectors, valid)}), part)

    def decide(self, ds):
        c = self.config
        ds, _ = self.with_references(ds)
        n = ds.count()
        limit = self.ctx.broadcast_limit_rows
        partitions = c.partitions or partitions_for(n)
        k = c.clusters or max(1, min(math.ceil(n / c.cluster_size), c.sample // SAMPLE_PER_CLUSTER))
        sample = ds.map_blocks(sample_rows, c.sample / max(n, 1), columns=[ID, VECTOR])
        centroids = sample.in_one_task(fit_centroids, k, c.seed, c.iterations)
        refs = centroids.broadcast(limit + k)  # the centroids always go to the map tasks (k rows)
        assigned = ds.map_blocks(assign, refs, centroids.schema()).map_blocks(with_keep_key, c.keep)
        self.metrics = self.cluster_metrics(assigned, centroids.count(), n)
        log.info("dedup_semantic: %d records, %d clusters, %d shuffle partitions", n, centroids.count(), partitions)
        roots = assigned.by_group(
            [KMEANS],
            cluster_roots,
            c.threshold,
            c.max_cluster_size,
            c.seed,
            c.iterations,
            columns=[KEY, KMEANS, VECTOR],
            partitions=partitions,
            rows=n,
            limit_rows=min(limit, SINGLE_TASK_ROWS),
        )
        return self.without_references(
            apply_roots(assigned, roots, self.mark, partitions, limit, drop=[VECTOR, SIMILARITY])
        )

    def cluster_metrics(self, assigned, k: int, n: int) -> dict:
        """Fit and per-cluster summaries for the manifest: sizes and mean cosine to the centroid (k rows)."""
        counts = assigned.map_blocks(cluster_counts, columns=[KMEANS, SIMILARITY]).in_one_task(_summed_counts)
        by_cluster = {int(r[KMEANS]): (int(r["rows"]), float(r["similarity"])) for r in counts.to_table().to_pylist()}
        sizes = [by_cluster.get(i, (0, 0.0))[0] for i in range(k)]
        density = [round(by_cluster[i][1] / by_cluster[i][0], 4) if i in by_cluster else None for i in range(k)]
        return {
            "records": n,
            "clusters": k,
            "sample": min(n, self.config.sample),
            "cluster_sizes": sizes,
            "cluster_density": density,
            "threshold": self.config.threshold,
        }

    def mark(self, batch: pa.Table, root) -> pa.Table:
        c = self.config
        return mark_removed(
            batch, root, _id_rule(c.keep), self.name, "semantic_duplicate", CLUSTER, c.action == "remove", c.against
        )


def with_keep_key(batch: pa.Table, keep: str) -> pa.Table:
    """Key rows with their keep key; ``centroid`` sorts the closest to its centroid first (as ``longest`` sorts
    the longest first, with the cosine in millionths in place of the length)."""
    if keep != "centroid":
        return batch.append_column(KEY, keep_keys(batch, keep))
    similarity = pc.fill_null(batch[SIMILARITY], -1.0).to_numpy(zero_copy_only=False)
    closeness = np.round((similarity + 1) * CLOSENESS_SCALE).astype(np.int64)
    scored = batch.set_column(batch.column_names.index(LENGTH), LENGTH, pa.array(closeness))
    return batch.append_column(KEY, keep_keys(scored, "longest"))


def _id_rule(keep: str) -> str:
    """The keep rule whose key layout ``keep``'s keys have (to read the kept id back)."""
    return "longest" if keep == "centroid" else keep


def _summed_counts(batch: pa.Table) -> pa.Table:
    summed = batch.group_by(KMEANS).aggregate([("rows", "sum"), ("similarity", "sum")])
    return pa.table({KMEANS: summed[KMEANS], "rows": summed["rows_sum"], "similarity": summed["similarity_sum"]})
