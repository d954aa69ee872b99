"""The order training records reach the workers in (``data.order``).

* ``files`` (default): as Ray Data reads the Parquet files (a file's rows in order; files as their reads finish).
* ``shuffle``: a full random shuffle, seeded by ``optim.seed``.
* ``curriculum``: staged buckets from easy to hard. The ``data.curriculum_buckets`` boundaries q_k are (``lower``)
  quantiles of ``data.difficulty_field`` (the ``curriculum`` curation stage's ``difficulty``), from that column
  alone sorted by Ray Data (the driver fetches only the boundary values); bucket k holds the records with difficulty in (q_k-1, q_k] (equal difficulties share a
  bucket; a null difficulty goes to the last bucket). The records are sorted (one Ray Data sort) by their bucket,
  then by a hash of the record seeded by ``optim.seed``: the buckets follow one another, each in a shuffled order
  that does not depend on the files' block layout (identical records hash alike). The dataset keeps this order
  (Ray Data ``preserve_order``, also for Ray Train's ingest, :func:`data_config`), so every worker receives its
  rows bucket by bucket; each epoch runs the curriculum again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from thresher.core.config import ConfigError

ORDER_KEY = "_order_key"
HASH_BITS = 52  # below the bucket number in the order key: at most 2**11 buckets (data.curriculum_buckets)


def bucket_bounds(ds, field: str, buckets: int) -> np.ndarray:
    """The ``buckets - 1`` inner quantile boundaries (numpy's ``lower``) of the non-null ``field`` values of ``ds``:
    the column alone is sorted by Ray Data, and only the blocks that hold a boundary's rank are fetched."""
    import ray

    values = ds.select_columns([field]).map_batches(_non_null, fn_args=(field,), batch_format="pyarrow")
    values = values.sort(field).materialize()
    n = values.count()
    if not n:
        return np.array([])
    ranks = np.floor(np.arange(1, buckets) / buckets * (n - 1)).astype(np.int64)
    bounds, start = [], 0
    for bundle in values.iter_internal_ref_bundles():
        for ref, meta in zip(bundle.block_refs, bundle.metadata):
            inside = ranks[(ranks >= start) & (ranks < start + meta.num_rows)]
            if len(inside):
                column = ray.get(ref)[field].to_numpy()
                bounds.extend(column[inside - start])
            start += meta.num_rows
    return np.asarray(bounds, np.float64)


def _non_null(batch: pa.Table, field: str) -> pa.Table:
    column = batch[field].cast(pa.float64())
    return pa.table({field: column.filter(pc.is_valid(column))})


def bucket_of(difficulty: pa.ChunkedArray | pa.Array, bounds: np.ndarray) -> np.ndarray:
    """The bucket of each difficulty (null: the last bucket)."""
    d = pc.fill_null(difficulty.cast(pa.float64()), np.inf).to_numpy(zero_copy_only=False)
    return np.minimum(np.searchsorted(bounds, d, side="left"), len(bounds))


def _with_order_key(batch: pa.Table, field: str, bounds: np.ndarray, seed: int) -> pa.Table:
    """``ORDER_KEY``: the bucket in the high bits, a seeded hash of the record below (a shuffle within the bucket
    that does not depend on how the rows are cut into blocks)."""
    hashes = np.array(
        [xxhash.xxh64_intdigest(orjson.dumps(row, default=str), seed) for row in batch.to_pylist()], np.uint64
    )
    low = (hashes >> np.uint64(64 - HASH_BITS)).astype(np.int64)
    key = (bucket_of(batch[field], bounds).astype(np.int64) << HASH_BITS) | low
    return batch.append_column(ORDER_KEY, pa.array(key, pa.int64()))


@dataclass(frozen=True)
class RecordOrder:
    """``data.order`` and its settings (``field``, ``buckets``: curriculum; ``seed``: ``optim.seed``)."""

    order: str = "files"
    field: str = "difficulty"
    buckets: int = 4
    seed: int = 0

    @property
    def columns(self) -> list[str]:
        """Columns read besides the format's."""
        return [self.field] if self.order == "curriculum" else []

    def apply(self, ds):
        """``ds`` (the train records) in this order."""
        if self.order == "shuffle":
            return ds.random_shuffle(seed=self.seed)
        if self.order != "curriculum":
            return ds
        if self.field not in ds.schema().names:
            raise ConfigError(
                f"data.difficulty_field: the train files have no column {self.field!r} "
                f"(run the curriculum stage, or name the column)"
            )
        bounds = bucket_bounds(ds, self.field, self.buckets)
        out = ds.map_batches(_with_order_key, fn_args=(self.field, bounds, self.seed), batch_format="pyarrow").sort(
            ORDER_KEY
        )
        out.context.execution_options.preserve_order = True
        return out


def data_config(order: str):
    """Ray Train's ``DataConfig``: for a curriculum the train split is ingested in order."""
    import ray.train

    if order != "curriculum":
        return ray.train.DataConfig()
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return ray.train.DataConfig(execution_options={"train": options})
