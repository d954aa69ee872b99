"""``dedup_fuzzy``: MinHash-LSH near-duplicate removal with distributed connected components (a global stage).

1. Signatures (map): MinHash of word (or character) n-grams of every live record, a whole Arrow batch per JIT
   call (``pipelines.dedup.minhash``), cut into ``bands`` x ``rows`` band keys (by default the pair that
   minimises the weighted false positive and false negative probabilities at ``threshold``, as datasketch's
   ``MinHashLSH`` chooses it; missed duplicates weigh 0.9 against 0.1 for candidates below the threshold,
   since verification drops those: 14 x 9 at 0.8, where a pair at Jaccard 0.85 becomes a candidate with
   probability 0.975, at 0.9 with 0.999, at 0.65 with 0.25, at 0.5 with 0.03). The records, with their keys, are
   materialized once.
2. Buckets: rows ``(band key, record key)`` are hash-partitioned by band key (a Ray Data shuffle), one group of
   ``band_group_size`` bands at a time so each shuffle stays bounded; each bucket links its members to its
   smallest member (``pipelines.dedup.lsh``: O(members) edges, never all pairs).
3. Verification of the candidate edges (``verify``): by default an edge stays when the two records' full
   signatures estimate a Jaccard similarity of at least ``threshold`` minus two standard errors (which removes
   most candidates far below the threshold and almost none above it); ``exact`` (or ``true``) compares the
   exact shingle sets with ``threshold``; ``none`` links every candidate. The endpoints' signatures or texts
   reach the edges by broadcast when small, else by joins.
4. Connected components of the edges (``pipelines.dedup.components``: large-star/small-star rounds).
5. Removal: a record key sorts lowest for the record ``keep`` prefers (``pipelines.dedup.removal``), so a
   component's root is the record it keeps; every record learns its root in place (the roots are broadcast
   when small, else joined on the key) and the other members are rejected (``near_duplicate``, detail: the
   kept id), or all are kept with ``action: annotate``. Live records carry ``dup_cluster``: the id of the
   record kept for their component, their own id when they have no near duplicate, so it is never null and
   groups a cluster (the split stage keeps a cluster in one split). Records rejected by earlier stages pass
   through.

Every step is deterministic (seeded permutations, minimum-key tie breaking, per-key grouping), so the kept
ids do not depend on the number of CPUs, partitions, block boundaries or arrival order.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from pipelines.dedup.components import connected_components
from pipelines.dedup.datasets import ARROW, materialize, partitions_for
from pipelines.dedup.lsh import band_column, bucket_edges, bucket_rows, optimal_bands, verified_edges
from pipelines.dedup.removal import ID, KEY, KeepRule, apply_roots, keep_keys, live_mask, mark_removed
from pipelines.stage import GlobalStage, StageConfig

log = logging.getLogger(__name__)
CLUSTER = "dup_cluster"


class DedupFuzzyConfig(StageConfig):
    threshold: float = Field(0.8, gt=0, lt=1, description="Jaccard similarity at which records are duplicates")
    ngram: int = Field(5, ge=1, description="shingle length in tokens (words, or characters)")
    char_ngrams: bool = Field(False, description="character n-grams instead of word n-grams")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations")
    bands: int | None = Field(None, ge=1, description="LSH bands (with rows; default: chosen from threshold)")
    false_negative_weight: float = Field(0.9, gt=0, lt=1, description=(
        "weight of missed pairs against candidate false positives (1 - it) when bands and rows are chosen"))
    rows: int | None = Field(None, ge=1, description="signature rows per band")
    seed: int = 0
    band_group_size: int = Field(16, ge=1, description="bands shuffled together; lower it to bound shuffle memory")
    verify: Literal["none", "signatures", "exact"] = Field("signatures", description=(
        "which candidate pairs are linked: all (none), those whose full signatures estimate a Jaccard similarity of "
        "at least threshold - 2 standard errors (signatures), those whose exact Jaccard reaches threshold (exact, "
        "or true)"))
    keep: KeepRule = "lowest_id"
    action: Literal["remove", "annotate"] = "remove"
    partitions: int | None = Field(None, ge=1, description="shuffle partitions (default: one per 4 M shuffled rows, at least 2)")

    @field_validator("verify", mode="before")
    @classmethod
    def _verify_bool(cls, value):
        return {True: "exact", False: "none"}[value] if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _bands_fit(self):
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither")
        if self.bands and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


class DedupFuzzy(GlobalStage):
    name = "dedup_fuzzy"
    Config = DedupFuzzyConfig

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        c = config
        self.bands, self.rows = (c.bands, c.rows) if c.bands else optimal_bands(
            c.threshold, c.num_perm, 1 - c.false_negative_weight, c.false_negative_weight)
        self.signature_cut = c.threshold - 2 * math.sqrt(c.threshold * (1 - c.threshold) / c.num_perm)

    def added_columns(self) -> dict[str, str]:
        return {CLUSTER: "id of the record kept for this record's near-duplicate cluster (its own id if none)"}

    def signatures(self, batch: pa.Table) -> pa.Table:
        """Map step: the keep key and the band keys of live records with at least one shingle."""
        from pipelines.dedup.minhash import EMPTY, band_keys, signatures  # numba: only in the workers that hash

        c = self.config
        live = live_mask(batch)
        texts = pc.if_else(live, batch[self.text].cast(pa.string()), pa.scalar(None, pa.string()))
        sig = signatures(texts, c.num_perm, c.ngram, c.char_ngrams, c.seed)
        missing = ~((sig != EMPTY).any(axis=1) & live.to_numpy(zero_copy_only=False))
        keys = band_keys(sig, self.bands, self.rows)
        key = keep_keys(batch[ID], batch[self.text], c.keep)
        batch = batch.append_column(KEY, pc.if_else(live, key, pa.scalar(None, pa.string())))
        for i in range(self.bands):
            batch = batch.append_column(band_column(i), pa.array(np.ascontiguousarray(keys[:, i]), mask=missing))
        return batch

    def apply(self, ds):
        c = self.config
        ds = materialize(ds.map_batches(self.signatures, **ARROW))
        bands = [band_column(i) for i in range(self.bands)]
        partitions = c.partitions or partitions_for(ds.count() * self.bands)
        log.info("dedup_fuzzy: %d records, %d x %d bands, %d shuffle partitions", ds.count(), self.bands, self.rows,
                 partitions)
        edge_sets = []
        for first in range(0, self.bands, c.band_group_size):
            group = range(first, min(first + c.band_group_size, self.bands))
            rows = ds.select_columns([KEY, *map(band_column, group)]).map_batches(bucket_rows, fn_args=(KEY, group),
                                                                                   **ARROW)
            edges = rows.repartition(partitions, keys=["bucket"]).map_batches(bucket_edges, batch_size=None, **ARROW)
            edge_sets.append(edges if first + c.band_group_size >= self.bands else edges.materialize())
        edges = edge_sets[0].union(*edge_sets[1:]) if len(edge_sets) > 1 else edge_sets[0]
        if c.verify != "none":
            value_type = pa.string() if c.verify == "exact" else pa.binary(4 * c.num_perm)
            edges = verified_edges(edges, ds, KEY, self.text, self.edge_values, value_type, self.similar, partitions)
        roots = connected_components(edges, partitions)
        return apply_roots(ds.drop_columns(bands), roots, self.mark, [], partitions, CLUSTER)

    def mark(self, batch: pa.Table, root) -> pa.Table:
        c = self.config
        return mark_removed(batch, root, c.keep, self.name, "near_duplicate", CLUSTER, c.action == "remove")

    def edge_values(self, texts: pa.ChunkedArray) -> pa.Array:
        """What verification compares: the text (exact), or the signature as ``4 * num_perm`` bytes."""
        from pipelines.dedup.minhash import signatures

        c = self.config
        texts = texts.cast(pa.string()).combine_chunks()
        if c.verify == "exact":
            return texts
        sig = signatures(texts, c.num_perm, c.ngram, c.char_ngrams, c.seed)
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * c.num_perm), len(sig), [None, pa.py_buffer(sig.tobytes())])

    def similar(self, a: pa.Array, b: pa.Array) -> np.ndarray:
        """Per pair of values: does the pair stay a candidate (a missing value never does)."""
        from pipelines.dedup.minhash import jaccard, shingle_set

        c = self.config
        valid = pc.and_(pc.is_valid(a), pc.is_valid(b)).to_numpy(zero_copy_only=False)
        if c.verify == "exact":
            sims = [jaccard(shingle_set(x, c.ngram, c.char_ngrams), shingle_set(y, c.ngram, c.char_ngrams)) if ok else 0.0
                    for x, y, ok in zip(a.to_pylist(), b.to_pylist(), valid)]
            return np.asarray(sims, dtype=float) >= c.threshold
        sa, sb = _signature_matrix(a, c.num_perm), _signature_matrix(b, c.num_perm)
        return valid & ((sa == sb).mean(axis=1) >= self.signature_cut)


def _signature_matrix(values: pa.Array | pa.ChunkedArray, num_perm: int) -> np.ndarray:
    """uint32 (n, num_perm) view of signatures held as binary values (zeros where null; a shuffle may have
    turned the fixed-size binary type into a variable-size one)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    values = values.cast(pa.binary(4 * num_perm))
    data = values.buffers()[1]
    if data is None or len(values) == 0:
        return np.zeros((len(values), num_perm), np.uint32)
    return np.frombuffer(data, np.uint32, len(values) * num_perm, values.offset * num_perm * 4).reshape(-1, num_perm)
