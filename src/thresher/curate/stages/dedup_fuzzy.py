"""``dedup_fuzzy``: MinHash-LSH near-duplicate removal with distributed connected components (a global stage).

1. Signatures (map): MinHash of word (or character) n-grams of every live record, a whole Arrow batch per JIT
   call (``thresher.curate.dedup.minhash``), cut into ``bands`` x ``rows`` band keys (by default the pair that
   minimises the weighted false positive and false negative probabilities at ``threshold``, as datasketch's
   ``MinHashLSH`` chooses it; missed duplicates weigh 0.9 against 0.1 for candidates below the threshold,
   since verification drops those: 14 x 9 at 0.8, where a pair at Jaccard 0.85 becomes a candidate with
   probability 0.975, at 0.9 with 0.999, at 0.65 with 0.25, at 0.5 with 0.03). These and the length are the
   record's key row; the verification value is staged with it but not loaded (``staged_columns``); the text
   stays on the map side.
2. Buckets: up to ``execution.broadcast_limit_rows`` records, one task groups each band's keys in turn; beyond,
   rows ``(band key, internal key)`` (16 bytes) are hash-partitioned by band key (``KeyRows.grouped``), one group
   of ``band_group_size`` bands at a time so each shuffle stays bounded. Each bucket links its members to its
   smallest member (``thresher.curate.dedup.lsh``: O(members) edges, never all pairs).
3. Verification of the candidate edges (``verify``): by default an edge stays when the two records' full
   signatures estimate a Jaccard similarity of at least ``threshold`` minus two standard errors (which removes
   most candidates far below the threshold and almost none above it); ``exact`` (or ``true``) compares the
   exact sets of shingle hashes (64-bit; the key row then carries them, which is heavier) with ``threshold``;
   ``none`` links every candidate. Only the endpoints' values are read from the staged key files (a semi-join)
   and reach the edges by broadcast when small, else by joins.
4. Connected components of the edges (``thresher.curate.dedup.components``: union-find in one task when small, else
   large-star/small-star rounds).
5. Removal: a keep key sorts lowest for the record ``keep`` prefers (``thresher.curate.dedup.removal``); each
   component's members take their keep keys (a semi-join) and the lowest survives; every key row learns its
   survivor (broadcast when small, else joined on the key) and the other members are rejected
   (``near_duplicate``, detail ``duplicate of kept record <id>``), or all are kept with ``action: annotate``. Live records carry ``dup_cluster``: the id of the
   record kept for their component, their own id when they have no near duplicate, so it is never null and
   groups a cluster (the split stage keeps a cluster in one split).

``against`` names earlier finished runs: their kept records' band keys and signatures (their index, never their
texts: ``thresher.curate.dedup.against_runs``) join the candidates and the verification, and always survive; a record
in a cluster with one is rejected (``duplicate_of_reference``, detail ``duplicate of record <id> of <run>``). An
index keeps the low byte of each minimum hash (b-bit minwise hashing, Li and König 2010: a quarter of the size): a
pair with a reference compares low bytes, whose chance of agreeing is ``J + (1 - J) / 256``, and the Jaccard
estimate is corrected for it, with a cut two (slightly wider) standard errors below the threshold.

Every step is deterministic (seeded permutations, minimum-key tie breaking, per-key grouping), so the kept
ids do not depend on the number of CPUs, partitions, block boundaries or arrival order.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, field_validator, model_validator

from thresher.curate.dedup.against_runs import ReferenceDedup
from thresher.curate.dedup.components import connected_components
from thresher.curate.dedup.lsh import band_column, band_edges, bucket_edges, bucket_rows, optimal_bands, verified_edges
from thresher.curate.dedup.removal import KeepRule, apply_roots, mark_removed, survivors, text_lengths, with_keep_keys
from thresher.curate.execution.worker import partitions_for
from thresher.curate.stage import KEY as INTERNAL_KEY
from thresher.curate.stage import StageConfig

log = logging.getLogger(__name__)
CLUSTER = "dup_cluster"
VALUE = "_dedup_value"
LOW_BYTE_COLLISION = 1 / 256  # chance that the low bytes of two different minimum hashes agree


class DedupFuzzyConfig(StageConfig):
    threshold: float = Field(0.8, gt=0, lt=1, description="Jaccard similarity at which records are duplicates")
    ngram: int = Field(5, ge=1, description="shingle length in tokens (words, or characters)")
    char_ngrams: bool = Field(False, description="character n-grams instead of word n-grams")
    num_perm: int = Field(128, ge=8, le=1024, description="MinHash permutations")
    bands: int | None = Field(None, ge=1, description="LSH bands (with rows; default: chosen from threshold)")
    false_negative_weight: float = Field(
        0.9,
        gt=0,
        lt=1,
        description=(
            "weight of missed pairs against candidate false positives (1 - it) when bands and rows are chosen"
        ),
    )
    rows: int | None = Field(None, ge=1, description="signature rows per band")
    seed: int = Field(0, description="seed of the MinHash permutations")
    band_group_size: int = Field(16, ge=1, description="bands shuffled together; lower it to bound shuffle memory")
    verify: Literal["none", "signatures", "exact"] = Field(
        "signatures",
        description=(
            "which candidate pairs are linked: all (none), those whose full signatures estimate a Jaccard similarity of "
            "at least threshold - 2 standard errors (signatures), those whose exact Jaccard reaches threshold (exact, "
            "or true)"
        ),
    )
    keep: KeepRule = Field(
        "lowest_id", description=("which record of a cluster survives: the lowest id, or the longest text")
    )
    action: Literal["remove", "annotate"] = Field(
        "remove", description=("remove the duplicates, or keep every record with its dup_cluster")
    )
    partitions: int | None = Field(
        None, ge=1, description=("shuffle partitions (default: one per 4 M shuffled rows, at least 2)")
    )
    against: list[str] = Field(
        [], description=("finished runs (URIs) whose kept records win: a record near one of them is removed")
    )

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


class DedupFuzzy(ReferenceDedup):
    name = "dedup_fuzzy"
    decides_locally = True
    Config = DedupFuzzyConfig
    report_sections = ("duplicates",)
    gates = ("max_duplicate_rate",)

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        c = config
        self.bands, self.rows = (
            (c.bands, c.rows)
            if c.bands
            else optimal_bands(c.threshold, c.num_perm, 1 - c.false_negative_weight, c.false_negative_weight)
        )
        self.signature_cut = c.threshold - 2 * math.sqrt(c.threshold * (1 - c.threshold) / c.num_perm)
        agree = c.threshold + (1 - c.threshold) * LOW_BYTE_COLLISION  # low bytes agree, at the threshold
        self.low_byte_cut = c.threshold - 2 * math.sqrt(agree * (1 - agree) / c.num_perm) / (1 - LOW_BYTE_COLLISION)

    def added_columns(self) -> dict[str, str]:
        return {CLUSTER: "id of the record kept for this record's near-duplicate cluster (its own id if none)"}

    def keys(self, batch: pa.Table) -> dict:
        """Map side: band keys (null for records without a shingle), verification value and (to keep the longest)
        length."""
        from thresher.curate.dedup.minhash import EMPTY, band_keys, signatures  # numba: only in the workers that hash

        c = self.config
        texts = batch[self.text].cast(pa.string()).combine_chunks()
        sig = signatures(texts, c.num_perm, c.ngram, c.char_ngrams, c.seed)
        missing = ~(sig != EMPTY).any(axis=1)
        bands = band_keys(sig, self.bands, self.rows)
        out = text_lengths(batch, self.text) if c.keep == "longest" else {}
        for i in range(self.bands):
            out[band_column(i)] = pa.array(np.ascontiguousarray(bands[:, i]), mask=missing)
        if c.verify == "signatures":
            out[VALUE] = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(4 * c.num_perm), len(sig), [None, pa.py_buffer(np.ascontiguousarray(sig).tobytes())]
            )
        elif c.verify == "exact":
            out[VALUE] = pa.array(
                [shingle_hashes(t, c.ngram, c.char_ngrams) for t in texts.to_pylist()], pa.list_(pa.uint64())
            )
        return out

    def index_key_columns(self) -> list[str]:
        return [band_column(i) for i in range(self.bands)] + ([VALUE] if self.config.verify != "none" else [])

    def index_from_keys(self, keys: pa.Table, part: int) -> pa.Table:
        """The index part, with the low byte of each minimum hash (``verify: signatures``)."""
        table = super().index_from_keys(keys, part)
        if self.config.verify != "signatures":
            return table
        low = low_bytes(table[VALUE], self.config.num_perm)
        return table.set_column(table.schema.get_field_index(VALUE), VALUE, low)

    def index_options(self) -> dict:
        c = self.config
        return {
            "ngram": c.ngram,
            "char_ngrams": c.char_ngrams,
            "num_perm": c.num_perm,
            "seed": c.seed,
            "bands": self.bands,
            "rows": self.rows,
            "verify": c.verify,
        }

    def decide(self, ds):
        """Candidates and verification on the key rows as loaded; then the key rows without their bands and
        signatures (the heavy columns, never copied) take their keep keys, their survivors and decisions."""
        c = self.config
        staged = self.staged_keys is not None and c.verify != "none"
        ds, references = self.with_references(ds, (VALUE,) if staged else ())
        bands = [band_column(i) for i in range(self.bands)]
        partitions = c.partitions or partitions_for(ds.count() * self.bands)
        log.info(
            "dedup_fuzzy: %d records, %d x %d bands, %d shuffle partitions",
            ds.count(),
            self.bands,
            self.rows,
            partitions,
        )
        edges = self.candidates(ds, bands, partitions)
        if c.verify != "none":
            value_type = (
                pa.list_(pa.uint64())
                if c.verify == "exact"
                else pa.binary()
                if references is not None
                else pa.binary(4 * c.num_perm)
            )  # a reference's signatures are shorter
            values = [self.staged_keys, references] if staged else [ds]  # the signatures stay on disk
            values = [v for v in values if v is not None]
            edges = verified_edges(
                edges, values, INTERNAL_KEY, VALUE, value_type, self.similar, partitions, self.ctx.broadcast_limit_rows
            )
        components = connected_components(edges, partitions, self.ctx.broadcast_limit_rows, pa.int64())
        drop = bands + ([VALUE] if c.verify != "none" else [])
        ds = ds.map_blocks(_with_keep_keys_only, drop, c.keep)
        roots = survivors(components, ds, partitions, self.ctx.broadcast_limit_rows)
        return self.without_references(apply_roots(ds, roots, self.mark, partitions, self.ctx.broadcast_limit_rows))

    def candidates(self, ds, bands: list[str], partitions: int):
        """Star edges of every bucket: all bands in one task, a band at a time, up to the broadcast limit (in
        records); beyond, ``(bucket, internal key)`` rows shuffled by bucket, ``band_group_size`` bands at a time."""
        c, limit = self.config, self.ctx.broadcast_limit_rows
        if ds.count() <= limit:
            return ds.in_one_task(band_edges, INTERNAL_KEY, range(self.bands), columns=[INTERNAL_KEY, *bands])
        edge_sets = []
        for first in range(0, self.bands, c.band_group_size):
            group = range(first, min(first + c.band_group_size, self.bands))
            columns = [INTERNAL_KEY, *map(band_column, group)]
            rows = ds.map_blocks(bucket_rows, INTERNAL_KEY, group, columns=columns)
            edge_sets.append(rows.grouped(["bucket"], bucket_edges, partitions=partitions))
        return functools.reduce(lambda a, b: a.concat(b), edge_sets)

    def staged_columns(self) -> list[str]:
        return [VALUE] if self.config.verify != "none" else []

    def mark(self, batch: pa.Table, root) -> pa.Table:
        c = self.config
        return mark_removed(batch, root, c.keep, self.name, "near_duplicate", CLUSTER, c.action == "remove", c.against)

    def similar(self, a: pa.Array, b: pa.Array) -> np.ndarray:
        """Per pair of values: does the pair stay a candidate (a missing value never does)."""
        c = self.config
        valid = pc.and_(pc.is_valid(a), pc.is_valid(b)).to_numpy(zero_copy_only=False)
        if c.verify == "exact":
            sims = [
                _sorted_jaccard(np.asarray(x, np.uint64), np.asarray(y, np.uint64)) if ok else 0.0
                for x, y, ok in zip(a.to_pylist(), b.to_pylist(), valid)
            ]
            return np.asarray(sims, dtype=float) >= c.threshold
        estimate, low = jaccard_estimates(a, b, c.num_perm)
        return valid & (estimate >= np.where(low, self.low_byte_cut, self.signature_cut))


def _with_keep_keys_only(batch: pa.Table, drop: list[str], keep: KeepRule) -> pa.Table:
    return with_keep_keys(batch.drop_columns([c for c in drop if c in batch.column_names]), keep)


def shingle_hashes(text: str | None, ngram: int, char_ngrams: bool) -> list[int]:
    """The sorted 64-bit hashes of a text's shingle set (exact verification's value)."""
    from thresher.curate.dedup.minhash import shingle_set

    if not text:
        return []
    return sorted(xxhash.xxh64_intdigest(s) for s in shingle_set(text, ngram, char_ngrams))


def _sorted_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if not len(a) and not len(b):
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def low_bytes(values: pa.Array | pa.ChunkedArray, num_perm: int) -> pa.Array:
    """Signatures (binary values) cut to the low byte of each minimum hash (an index's)."""
    sig, _ = _signatures(values, num_perm)
    low = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(num_perm), len(sig), [None, pa.py_buffer(sig.astype(np.uint8).tobytes())]
    )
    return pc.if_else(pc.is_valid(values), low, pa.scalar(None, low.type))


def jaccard_estimates(a: pa.Array, b: pa.Array, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """``(estimate, low)`` per pair of signatures: the Jaccard similarity they estimate, from low bytes where
    either is an index's (``low``; corrected for the chance agreement of different minimum hashes)."""
    (sa, low_a), (sb, low_b) = _signatures(a, num_perm), _signatures(b, num_perm)
    low = low_a | low_b
    agree = np.where(low[:, None], (sa & 0xFF) == (sb & 0xFF), sa == sb).mean(axis=1)
    return np.where(low, (agree - LOW_BYTE_COLLISION) / (1 - LOW_BYTE_COLLISION), agree), low


def _signatures(values: pa.Array | pa.ChunkedArray, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """``(uint32 (n, num_perm) matrix, low)`` of signatures held as binary values: full ones (4 bytes per
    permutation), or an index's low bytes (1 byte each; ``low`` marks them); zeros where null. A shuffle may have
    turned the fixed-size binary type into a variable-size one."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    n = len(values)
    if pa.types.is_fixed_size_binary(values.type) and values.type.byte_width == 4 * num_perm:
        return _matrix(values, np.uint32, num_perm), np.zeros(n, bool)
    lengths = pc.fill_null(pc.binary_length(values), 0).to_numpy()
    low = lengths == num_perm
    out = np.zeros((n, num_perm), np.uint32)
    for rows, dtype in ((lengths == 4 * num_perm, np.uint32), (low, np.uint8)):
        if rows.any():
            part = values.filter(pa.array(rows)).cast(pa.binary(num_perm * np.dtype(dtype).itemsize))
            out[rows] = _matrix(part, dtype, num_perm)
    return out, low


def _matrix(values: pa.FixedSizeBinaryArray, dtype, num_perm: int) -> np.ndarray:
    """``(n, num_perm)`` of ``dtype`` over fixed-size binary values (zeros where null)."""
    data = values.buffers()[1]
    if data is None or len(values) == 0:
        return np.zeros((len(values), num_perm), dtype)
    size = np.dtype(dtype).itemsize
    matrix = np.frombuffer(data, dtype, len(values) * num_perm, values.offset * num_perm * size)
    return matrix.reshape(-1, num_perm)
