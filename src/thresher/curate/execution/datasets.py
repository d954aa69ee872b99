"""Ray Data helpers shared by the global stages: materializing, mapping blocks (of datasets or of staged key
files), whole groups, shuffle partition counts, broadcasting a small table to map tasks, and handing the memory
Arrow freed back to the system between a task's large steps.

A Ray Data execution has a fixed cost of about 0.1 s (the streaming executor's start, scheduling and statistics
calls), which dominates the decisions on small key tables. On data that is already materialized, or small enough
for one task, :func:`map_blocks` and :func:`by_group` run plain Ray tasks instead (a few milliseconds each); the
blocks stay in the object store and the driver holds references only.

Where a segment's key rows are few enough for one task, the runner runs all its global stages in one task on a
:class:`LocalTable`: the helpers then apply their functions in that process, and a broadcast is the table itself.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.run_folder import read_staged

if TYPE_CHECKING:
    import pandas as pd
    from ray import ObjectRef

    from thresher.core.storage import Storage

T = TypeVar("T")

ARROW = dict(batch_format="pyarrow", zero_copy_batch=True)
ROWS_PER_PARTITION = 4_000_000  # shuffled rows per partition: ~100-200 MB of (key, id) rows
BROADCAST_BYTES = 256 << 20  # a table goes to every map task (instead of a join) up to this size
_CACHED = 4
_worker_cache: dict[str, tuple[Any, Any]] = {}  # key: (value, pin)


class LocalTable:
    """Key rows held by the process that decides (module docstring): a stand-in for a materialized dataset."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def count(self) -> int:
        rows: int = self.table.num_rows
        return rows

    def size_bytes(self) -> int:
        size: int = self.table.nbytes
        return size

    def num_blocks(self) -> int:
        return 1

    def schema(self) -> pa.Schema:
        return self.table.schema

    def select_columns(self, columns: list[str]) -> LocalTable:
        return LocalTable(self.table.select(columns))

    def to_pandas(self) -> pd.DataFrame:
        return self.table.to_pandas()


def materialize(ds: Any) -> Any:
    """``ds`` computed and held in the object store, without empty blocks.

    A read task that finds no record leaves a block without columns; Ray Data's hash shuffle cannot concatenate
    that block's empty shards with the others, so it is dropped here (only block references move).
    """
    if isinstance(ds, LocalTable):
        return ds
    import ray.data

    ds = _materialized(ds)
    refs = block_refs(ds)
    return ray.data.from_arrow_refs(refs) if refs else ds


def block_refs(ds: Any) -> list[Any]:
    """References to the blocks of the materialized ``ds`` that hold rows: read from its source operator when it
    is one (``from_arrow_refs``, ``materialize()``), since iterating would start a Ray Data execution (its stats
    and autoscaling actors, each a worker process, the first time)."""
    source: Any = getattr(getattr(ds, "_logical_plan", None), "dag", None)
    bundles = source.output_data() if hasattr(source, "output_data") else None
    return [
        ref
        for bundle in (ds.iter_internal_ref_bundles() if bundles is None else bundles)
        for ref, meta in zip(bundle.block_refs, bundle.metadata)
        if meta.num_rows
    ]


@dataclass(frozen=True)
class StagedKeys:
    """A segment's staged key files, in groups of consecutive files: the columns a stage leaves out of the loaded
    key rows (``GlobalStage.staged_columns``) are read from them by :func:`map_blocks`, a group per task."""

    groups: list[list[str]]
    storage: Storage
    local: bool = False  # read by the deciding process itself (``LocalTable``)


def read_files(
    uris: list[str], storage: Storage, columns: list[str] | None = None, exclude: tuple[str, ...] = ()
) -> pa.Table:
    """Staged files (``thresher.curate.run_folder``) as one table: all their columns, or ``columns``, less ``exclude``."""
    tables = [read_staged(storage, uri, columns, exclude) for uri in uris]
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def _apply_staged(
    fn: Callable[..., pa.Table], args: tuple[Any, ...], columns: list[str] | None, uris: list[str], storage: Storage
) -> pa.Table:
    """``fn`` applied to each file of a group, the results concatenated: files may be grouped in any way, so ``fn``
    acts row by row, and a task holds one file's ``columns`` at a time (not the group's)."""
    out = [_apply(fn, args, None, read_files([uri], storage, columns)) for uri in uris]
    return pa.concat_tables(out, promote_options="permissive") if len(out) > 1 else out[0]


def _apply(
    fn: Callable[..., pa.Table], args: tuple[Any, ...], columns: list[str] | None, *blocks: pa.Table
) -> pa.Table:
    tables = [b.select(columns) if columns else b for b in blocks]
    out = fn(pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0], *args)
    release_memory()
    return out


def release_memory() -> None:
    """Return the memory Arrow's allocator keeps after frees to the system (a worker that read a 30 MB part kept
    ~250 MB more than its live data). Called between a task's large steps, so a worker holds what it uses."""
    pa.default_memory_pool().release_unused()


@functools.cache
def plain_task(fn: Callable[..., Any]) -> Any:
    """``fn`` as a plain Ray task of one CPU (made once per process)."""
    import ray

    return ray.remote(num_cpus=1)(fn)


def _apply_task(fn: Callable[..., pa.Table]) -> Any:
    """The plain task that applies ``fn``, named after it (process titles, timelines)."""
    return plain_task(_apply).options(name=getattr(fn, "__qualname__", "apply"))


def _from_refs(refs: list[Any], fallback: Any) -> Any:
    """A materialized dataset of the tables behind ``refs`` (the tasks' outputs: they always have columns)."""
    import ray.data

    return ray.data.from_arrow_refs(refs) if refs else fallback


def _materialized(ds: Any) -> Any:
    from ray.data.dataset import MaterializedDataset

    return ds if isinstance(ds, MaterializedDataset) else ds.materialize()


def map_blocks(ds: Any, fn: Callable[..., pa.Table], *args: Any, columns: list[str] | None = None) -> Any:
    """``ds.select_columns(columns).map_batches(fn, fn_args=args, batch_size=None)``, materialized, for a
    materialized ``ds``: ``fn`` (pyarrow table -> table) applied to each block by one plain Ray task. ``ds`` may
    be :class:`StagedKeys` (with ``columns``): then each task reads a group of files' ``columns``, a file at a time."""
    if isinstance(ds, LocalTable):
        return LocalTable(_apply(fn, args, columns, ds.table))
    if isinstance(ds, StagedKeys) and ds.local:
        return LocalTable(_apply_staged(fn, args, columns, [uri for group in ds.groups for uri in group], ds.storage))
    if isinstance(ds, StagedKeys):
        import ray.data

        task = plain_task(_apply_staged).options(name=getattr(fn, "__qualname__", "apply"))
        return ray.data.from_arrow_refs([task.remote(fn, args, columns, group, ds.storage) for group in ds.groups])
    ds = _materialized(ds)
    refs = block_refs(ds)
    if not refs:
        return ds
    return _from_refs([_apply_task(fn).remote(fn, args, columns, ref) for ref in refs], ds)


def by_group(
    ds: Any,
    keys: list[str],
    fn: Callable[..., pa.Table],
    *args: Any,
    partitions: int,
    rows: int,
    limit_rows: int,
    columns: list[str] | None = None,
) -> Any:
    """``fn`` applied to whole groups of ``keys`` (every row of a key value in one call), materialized. Up to
    ``limit_rows`` (``rows``: the size of ``ds``, or a bound) all of ``ds`` goes to one plain Ray task; beyond, a
    hash shuffle into ``partitions`` blocks and ``fn`` per block (Ray Data)."""
    if rows > limit_rows and not isinstance(ds, LocalTable):
        projected = ds.select_columns(columns) if columns else ds
        return materialize(
            projected.repartition(partitions, keys=keys).map_batches(fn, fn_args=args, batch_size=None, **ARROW)
        )
    return in_one_task(ds, fn, *args, columns=columns)


def in_one_task(ds: Any, fn: Callable[..., pa.Table], *args: Any, columns: list[str] | None = None) -> Any:
    """``fn`` applied to all of ``ds`` (its blocks concatenated) by one plain Ray task, materialized."""
    if isinstance(ds, LocalTable):
        return LocalTable(_apply(fn, args, columns, ds.table))
    ds = _materialized(ds)
    refs = block_refs(ds)
    schema = ds.schema()
    if not refs and schema is None:
        return ds
    return _from_refs([_apply_task(fn).remote(fn, args, columns, *(refs or [schema.base_schema.empty_table()]))], ds)


def map_items(like: Any, fn: Callable[..., pa.Table], items: list[Any], *args: Any) -> Any:
    """``fn(item, *args)`` (-> table) for each of ``items``, one plain Ray task each, as a materialized dataset; or
    called in this process, as a ``LocalTable``, where ``like`` is one."""
    if isinstance(like, LocalTable):
        return LocalTable(pa.concat_tables([fn(item, *args) for item in items], promote_options="permissive"))
    import ray.data

    task = plain_task(fn).options(name=getattr(fn, "__qualname__", "items"))
    return ray.data.from_arrow_refs([task.remote(item, *args) for item in items])


def each_in_a_task(fn: Callable[..., Any], items: list[Any], *args: Any) -> list[Any]:
    """``[fn(item, *args) for item in items]``, one plain Ray task each, the (small) results gathered here."""
    import ray

    task = plain_task(fn).options(name=getattr(fn, "__qualname__", "items"))
    return ray.get([task.remote(item, *args) for item in items])


def concatenated(first: Any, second: Any) -> Any:
    """The rows of ``first`` then ``second`` (both datasets, or both ``LocalTable``), materialized."""
    if isinstance(first, LocalTable):
        return LocalTable(pa.concat_tables([first.table, second.table], promote_options="permissive"))
    return materialize(first.union(second))


def arrow_schema(ds: Any) -> pa.Schema:
    """The Arrow schema of a dataset's (or ``LocalTable``'s) rows."""
    if isinstance(ds, LocalTable):
        return ds.table.schema
    schema = ds.schema()
    return schema.base_schema if hasattr(schema, "base_schema") else schema


def map_pandas(ds: Any, fn: Callable[..., pd.DataFrame], *args: Any) -> Any:
    """``ds.map_batches(fn, fn_args=args, batch_format="pandas")`` (``fn``: data frame -> data frame, row by row), or
    ``fn`` applied to a ``LocalTable`` at once."""
    if isinstance(ds, LocalTable):
        return LocalTable(pa.Table.from_pandas(fn(ds.table.to_pandas(), *args), preserve_index=False))
    return ds.map_batches(fn, fn_args=args, batch_format="pandas")


def map_groups(ds: Any, key: str, fn: Callable[[pa.Table], pa.Table]) -> Any:
    """``fn`` (table -> table) applied to the rows of each value of ``key`` (a column without nulls): a Ray Data
    groupby, or on a ``LocalTable`` its rows sorted by ``key`` and cut where the value changes."""
    if isinstance(ds, LocalTable):
        table = ds.table.take(pc.sort_indices(ds.table[key]))
        values = table[key].to_pylist()
        starts = [i for i in range(len(values)) if not i or values[i] != values[i - 1]]
        parts = [fn(table.slice(lo, hi - lo)) for lo, hi in zip(starts, [*starts[1:], len(values)])]
        return LocalTable(pa.concat_tables(parts) if parts else table)
    return ds.groupby(key).map_groups(fn, batch_format="pyarrow")


def pandas_parts(ds: Any, fn: Callable[..., pd.DataFrame], *args: Any) -> list[pd.DataFrame]:
    """``fn`` (data frame -> small data frame, e.g. partial counts) applied to each block of ``ds``, the results
    gathered where this runs (the driver, or the process holding a ``LocalTable``)."""
    if isinstance(ds, LocalTable):
        return [fn(ds.table.to_pandas(), *args)]
    return list(
        ds.map_batches(fn, fn_args=args, batch_format="pandas", batch_size=None).iter_batches(
            batch_format="pandas", batch_size=None
        )
    )


def held_limit(ds: Any, rows: int) -> int:
    """The rows a step may gather in the deciding process before it takes a distributed path: ``rows``, or any
    number on a ``LocalTable`` (all of it is there already)."""
    return sys.maxsize if isinstance(ds, LocalTable) else rows


def partitions_for(rows: int) -> int:
    """Shuffle partitions for ``rows`` small rows: at least 2, one per ``ROWS_PER_PARTITION``."""
    return max(2, math.ceil(rows / ROWS_PER_PARTITION))


def gather(ds: Any, keys: list[str], partitions: int, rows: int, limit_rows: int) -> Any:
    """``ds`` hash-partitioned by ``keys`` into ``partitions`` blocks (a Ray Data shuffle), so that each block
    holds every row of its keys; when ``rows`` (its size, or a bound) is at most ``limit_rows``
    (``execution.broadcast_limit_rows``), one block instead, without a shuffle."""
    if rows <= limit_rows:
        return ds.repartition(1)
    return ds.repartition(partitions, keys=keys)


def broadcast(ds: Any, limit_rows: int) -> list[Any] | None:
    """Object references to the blocks of ``ds`` (materialized) when it is small enough to go to every map task
    (``limit_rows``: ``execution.broadcast_limit_rows``; ``BROADCAST_BYTES``), else None.

    The references travel to map tasks as arguments; :func:`fetched` reads them there (zero-copy from the
    object store, once per worker process), so the table never passes through the driver. A ``LocalTable`` is
    its own broadcast (``[table]``), whatever its size.
    """
    if isinstance(ds, LocalTable):
        return [ds.table]
    if ds.count() > limit_rows or ds.size_bytes() > BROADCAST_BYTES:
        return None
    return block_refs(ds)


def tables_of(blocks: list[Any]) -> list[pa.Table]:
    """The tables behind ``blocks``: object references (fetched here) or a ``LocalTable``'s tables."""
    if not blocks or is_local(blocks):
        return blocks
    import ray

    return ray.get(blocks)


def fetched(refs: list[Any], schema: pa.Schema) -> pa.Table:
    """The table behind :func:`broadcast`'s references, one chunk per column (cached in this worker process)."""

    def make() -> pa.Table:
        tables = [t.select(schema.names).cast(schema) for t in tables_of(refs) if t.num_rows]
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        return pa.table([c.combine_chunks() for c in table.columns], schema=schema)

    return cached_for("table", refs, make)


def is_local(refs: list[Any]) -> bool:
    """Whether :func:`broadcast`'s result holds a ``LocalTable``'s table rather than object references."""
    return bool(refs) and isinstance(refs[0], pa.Table)


def cached_for(kind: str, refs: list[Any], make: Callable[[], T]) -> T:
    """:func:`worker_cached` ``make()``, keyed by ``kind`` and the object ids of ``refs``, or by the identity of a
    local table's (the entry then pins the table, so its identity cannot pass to another while the entry lives).
    Nothing is cached for no references (they name no object)."""
    if not refs:
        return make()
    if is_local(refs):
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


def fetched_value(kind: str, ref: ObjectRef[Any], make: Callable[[Any], T]) -> T:
    """``make(value)`` of the object behind ``ref`` (e.g. :func:`reduce_or`'s), once per worker process."""
    import ray

    return worker_cached(kind + ":" + ref.hex(), lambda: make(ray.get(ref)))


def from_table(table: pa.Table) -> Any:
    """A dataset of the rows of ``table`` (one block, with its schema, even without rows)."""
    import ray.data

    return ray.data.from_arrow(table)


def reduce_or(ds: Any, column: str) -> ObjectRef[bytes]:
    """An object reference to the bitwise OR of the one-row blocks of ``ds`` (``column``: packed bytes), reduced
    by a tree of Ray tasks; the driver holds references only."""
    import ray

    @ray.remote
    def leaf(block: pa.Table) -> bytes:
        return _or([block[column].to_pylist()][0])

    @ray.remote
    def inner(*parts: bytes) -> bytes:
        return _or(list(parts))

    refs = [leaf.remote(ref) for ref in block_refs(_materialized(ds))]
    while len(refs) > 1:
        refs = [inner.remote(*refs[i : i + 32]) for i in range(0, len(refs), 32)]
    return refs[0]


def _or(parts: list[bytes]) -> bytes:
    out = np.frombuffer(parts[0], np.uint8).copy()
    for p in parts[1:]:
        out |= np.frombuffer(p, np.uint8)
    return out.tobytes()
