"""Ray Data helpers shared by the dedup stages: materializing, shuffle partition counts, broadcasting a small
table to map tasks."""

from __future__ import annotations

import math

import numpy as np

import pyarrow as pa

ARROW = dict(batch_format="pyarrow", zero_copy_batch=True)
ROWS_PER_PARTITION = 4_000_000  # shuffled rows per partition: ~100-200 MB of (key, id) rows
BROADCAST_BYTES = 256 << 20  # a table goes to every map task (instead of a join) up to this size
_CACHED = 4
_broadcast_cache: dict[str, pa.Table] = {}


def materialize(ds):
    """``ds`` computed and held in the object store, without empty blocks.

    A read task that finds no record leaves a block without columns; Ray Data's hash shuffle cannot concatenate
    that block's empty shards with the others, so it is dropped here (only block references move).
    """
    import ray.data

    ds = ds.materialize()
    refs = [ref for bundle in ds.iter_internal_ref_bundles()
            for ref, meta in zip(bundle.block_refs, bundle.metadata) if meta.num_rows]
    return ray.data.from_arrow_refs(refs) if refs else ds


def partitions_for(rows: int) -> int:
    """Shuffle partitions for ``rows`` small rows: at least 2, one per ``ROWS_PER_PARTITION``."""
    return max(2, math.ceil(rows / ROWS_PER_PARTITION))


def gather(ds, keys: list[str], partitions: int, rows: int, limit_rows: int):
    """``ds`` hash-partitioned by ``keys`` into ``partitions`` blocks (a Ray Data shuffle), so that each block
    holds every row of its keys; when ``rows`` (its size, or a bound) is at most ``limit_rows``
    (``execution.broadcast_limit_rows``), one block instead, without a shuffle."""
    if rows <= limit_rows:
        return ds.repartition(1)
    return ds.repartition(partitions, keys=keys)


def broadcast(ds, limit_rows: int) -> list | None:
    """Object references to the blocks of ``ds`` (materialized) when it is small enough to go to every map task
    (``limit_rows``: ``execution.broadcast_limit_rows``; ``BROADCAST_BYTES``), else None.

    The references travel to map tasks as arguments; :func:`fetched` reads them there (zero-copy from the
    object store, once per worker process), so the table never passes through the driver.
    """
    if ds.count() > limit_rows or ds.size_bytes() > BROADCAST_BYTES:
        return None
    return [ref for bundle in ds.iter_internal_ref_bundles() for ref in bundle.block_refs]


def fetched(refs: list, schema: pa.Schema) -> pa.Table:
    """The table behind :func:`broadcast`'s references, one chunk per column (cached in this worker process)."""
    import ray

    key = ",".join(ref.hex() for ref in refs)
    if key not in _broadcast_cache:
        while len(_broadcast_cache) >= _CACHED:
            _broadcast_cache.pop(next(iter(_broadcast_cache)))
        tables = [t.select(schema.names).cast(schema) for t in ray.get(refs) if t.num_rows]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        _broadcast_cache[key] = pa.table([c.combine_chunks() for c in table.columns], schema=schema)
    return _broadcast_cache[key]


def reduce_or(ds, column: str):
    """An object reference to the bitwise OR of the one-row blocks of ``ds`` (``column``: packed bytes), reduced
    by a tree of Ray tasks; the driver holds references only."""
    import ray

    @ray.remote
    def leaf(block) -> bytes:
        return _or([block[column].to_pylist()][0])

    @ray.remote
    def inner(*parts: bytes) -> bytes:
        return _or(list(parts))

    refs = [leaf.remote(ref) for bundle in ds.materialize().iter_internal_ref_bundles() for ref in bundle.block_refs]
    while len(refs) > 1:
        refs = [inner.remote(*refs[i:i + 32]) for i in range(0, len(refs), 32)]
    return refs[0]


def _or(parts: list[bytes]) -> bytes:
    out = np.frombuffer(parts[0], np.uint8).copy()
    for p in parts[1:]:
        out |= np.frombuffer(p, np.uint8)
    return out.tobytes()
