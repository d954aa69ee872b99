"""What runs inside the execution layer's tasks: a function applied to blocks, a broadcast table read once per
worker process (:func:`fetched`), the worker cache behind it, and handing the memory Arrow freed back to the system
between a task's large steps."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

T = TypeVar("T")

ROWS_PER_PARTITION = 4_000_000  # shuffled rows per partition: ~100-200 MB of (key, id) rows
BROADCAST_BYTES = 256 << 20  # a table goes to every map task (instead of a join) up to this size
_CACHED = 4
_worker_cache: dict[str, tuple[Any, Any]] = {}  # key: (value, pin)


def release_memory() -> None:
    """Return the memory Arrow's allocator keeps after frees to the system (a worker that read a 30 MB part kept
    ~250 MB more than its live data). Called between a task's large steps, so a worker holds what it uses."""
    pa.default_memory_pool().release_unused()


@functools.cache
def plain_task(fn: Callable[..., Any]) -> Any:
    """``fn`` as a plain Ray task of one CPU (made once per process)."""
    import ray

    return ray.remote(num_cpus=1)(fn)


def apply(fn: Callable[..., pa.Table], args: tuple[Any, ...], columns: list[str] | None, *blocks: pa.Table) -> pa.Table:
    """``fn(blocks concatenated (their ``columns``), *args)``."""
    tables = [b.select(columns) if columns else b for b in blocks]
    out = fn(pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0], *args)
    release_memory()
    return out


def apply_staged(
    fn: Callable[..., pa.Table],
    args: tuple[Any, ...],
    columns: list[str] | None,
    uris: list[str],
    read: Callable[..., pa.Table],
) -> pa.Table:
    """``fn`` applied to each staged file of a group (``read([uri], columns=columns)``), the results concatenated:
    files may be grouped in any way, so ``fn`` acts row by row, and a task holds one file's ``columns`` at a time."""
    out = [apply(fn, args, None, read([uri], columns=columns)) for uri in uris]
    return pa.concat_tables(out, promote_options="permissive") if len(out) > 1 else out[0]


def partitions_for(rows: int) -> int:
    """Shuffle partitions for ``rows`` small rows: at least 2, one per ``ROWS_PER_PARTITION``."""
    return max(2, math.ceil(rows / ROWS_PER_PARTITION))


def tables_of(blocks: list[Any]) -> list[pa.Table]:
    """The tables behind ``blocks`` (``KeyRows.blocks()``): object references (fetched here) or tables."""
    if not blocks or _local(blocks):
        return blocks
    import ray

    tables: list[pa.Table] = ray.get(blocks)
    return tables


def fetched(refs: list[Any], schema: pa.Schema) -> pa.Table:
    """The table behind a broadcast (``KeyRows.broadcast``), one chunk per column (cached in this worker process)."""

    def make() -> pa.Table:
        tables = [t.select(schema.names).cast(schema) for t in tables_of(refs) if t.num_rows]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        return pa.table([c.combine_chunks() for c in table.columns], schema=schema)

    return cached_for("table", refs, make)


def _local(refs: list[Any]) -> bool:
    """Whether a broadcast holds tables (``LocalRows``) rather than object references."""
    return bool(refs) and isinstance(refs[0], pa.Table)


def cached_for(kind: str, refs: list[Any], make: Callable[[], T]) -> T:
    """:func:`worker_cached` ``make()``, keyed by ``kind`` and the object ids of ``refs``, or by the identity of a
    local table's (the entry then pins the table, so its identity cannot pass to another while the entry lives).
    Nothing is cached for no references (they name no object)."""
    if not refs:
        return make()
    if _local(refs):
        return worker_cached(kind + ":" + ",".join(str(id(t)) for t in refs), make, refs)
    return worker_cached(kind + ":" + ",".join(ref.hex() for ref in refs), make)


def worker_cached(key: str, make: Callable[[], T], pin: Any = None) -> T:
    """``make()``, kept in this worker process under ``key`` (for the last ``_CACHED`` keys) with ``pin``."""
    if key not in _worker_cache:
        while len(_worker_cache) >= _CACHED:
            _worker_cache.pop(next(iter(_worker_cache)))
        _worker_cache[key] = (make(), pin)
    value: T = _worker_cache[key][0]
    return value


def clear_worker_cache() -> None:
    _worker_cache.clear()


def fetched_value(kind: str, handle: Any, make: Callable[[Any], T]) -> T:
    """``make(value)`` of the value behind ``handle`` (``KeyRows.reduce_or``'s: an object reference, or the value
    itself in one process), once per worker process."""
    if isinstance(handle, bytes):
        return make(handle)
    import ray

    return worker_cached(kind + ":" + handle.hex(), lambda: make(ray.get(handle)))


def bitwise_or(parts: list[bytes]) -> bytes:
    out = np.frombuffer(parts[0], np.uint8).copy()
    for p in parts[1:]:
        out |= np.frombuffer(p, np.uint8)
    return out.tobytes()
