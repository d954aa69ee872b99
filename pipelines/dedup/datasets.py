"""Ray Data helpers shared by the dedup stages: materializing, shuffle partition counts, broadcasting a small
table to map tasks."""

from __future__ import annotations

import math

import pyarrow as pa

ARROW = dict(batch_format="pyarrow", zero_copy_batch=True)
ROWS_PER_PARTITION = 4_000_000  # shuffled rows per partition: ~100-200 MB of (key, id) rows
BROADCAST_ROWS = 2_000_000  # a table goes to every map task (instead of a join) up to this many rows
BROADCAST_BYTES = 256 << 20  # and this size
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


def broadcast(ds) -> list | None:
    """Object references to the blocks of ``ds`` (materialized) when it is small enough to go to every map task
    (``BROADCAST_ROWS``, ``BROADCAST_BYTES``), else None.

    The references travel to map tasks as arguments; :func:`fetched` reads them there (zero-copy from the
    object store, once per worker process), so the table never passes through the driver.
    """
    if ds.count() > BROADCAST_ROWS or ds.size_bytes() > BROADCAST_BYTES:
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
