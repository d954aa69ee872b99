"""Key rows, the one interface the global stages move their rows through (:class:`KeyRows`), and its two
implementations: on Ray (:class:`RayRows`: blocks in the object store, plain Ray tasks, Ray Data beyond the sizes
plain tasks suit) and in one process (:class:`LocalRows`: one Arrow table, every step a call here).

A stage's ``decide`` receives key rows and returns key rows, calling only these methods: which implementation it
holds never changes what it decides. Operations return new key rows, materialized (computed and held) on Ray.

A Ray Data execution has a fixed cost of about 0.1 s (the streaming executor's start, scheduling and statistics
calls), and its keyed shuffle starts aggregator actors (seconds); on the key tables of most runs both dominate. So
:class:`RayRows` runs plain tasks over the blocks where they are, and groups rows by key with plain tasks too
(``thresher.curate.execution.shuffle``) up to ``MAX_TASK_REFS`` blocks x partitions; the driver holds references
only. Where a segment's key rows are few enough for one task, the runner runs all its global stages in one task on
:class:`LocalRows`: a broadcast is then the table itself.

Beside the rows, :meth:`KeyRows.tasks` gives plain-task handles (:class:`Tasks`) for the stages whose decision is a
few passes over the blocks where they are (counts, sums, a model fitted on samples), with small results gathered.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.execution.shuffle import MAX_TASK_REFS, arrow_join, grouped_refs, joined_refs
from thresher.curate.execution.tasks import cluster_resources
from thresher.curate.execution.worker import BROADCAST_BYTES, apply, apply_staged, bitwise_or, plain_task

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")
ARROW: dict[str, Any] = dict(batch_format="pyarrow", zero_copy_batch=True)


class Tasks(Protocol):
    """Plain tasks where the key rows are: a handle is an object reference on Ray, the value itself in one process;
    a handle passed to :meth:`run` arrives as its value."""

    def run(self, fn: Callable[..., Any], *args: Any, returns: int = 1) -> Any:
        """``fn(*args)`` as a task: a handle to its result (``returns`` > 1: to each of the values it returns)."""
        ...

    def get(self, handles: Any) -> Any:
        """The value behind a handle (or a list of the values behind a list of handles), here."""
        ...

    def put(self, value: Any) -> Any:
        """A handle to ``value`` (a large argument passed to many tasks is sent once)."""
        ...

    def rows(self, handles: list[Any]) -> KeyRows:
        """The key rows made of the tables behind ``handles``."""
        ...


class KeyRows(Protocol):
    """Rows of key columns, held on Ray or in one process (module docstring)."""

    def count(self) -> int: ...

    def schema(self) -> pa.Schema:
        """The Arrow schema of the rows (no field where there is no block)."""
        ...

    def size_bytes(self) -> int: ...

    def num_blocks(self) -> int: ...

    def blocks(self) -> list[Any]:
        """Handles (:class:`Tasks`) to the blocks that hold rows."""
        ...

    def tasks(self) -> Tasks:
        """Plain tasks that run where these rows are."""
        ...

    def held_limit(self, rows: int) -> int:
        """The rows a step may gather in the deciding process before it takes a distributed path: ``rows``, or any
        number when all of them are there already."""
        ...

    def same_rows_as(self, other: KeyRows) -> bool:
        """Whether ``other`` is these very rows (the same blocks), as a stage that rejected nothing returns them."""
        ...

    def select_columns(self, columns: list[str]) -> KeyRows: ...

    def drop_columns(self, columns: list[str]) -> KeyRows: ...

    def rename_columns(self, names: dict[str, str]) -> KeyRows: ...

    def map_blocks(self, fn: Callable[..., pa.Table], *args: Any, columns: list[str] | None = None) -> KeyRows:
        """``fn(block, *args)`` (table -> table, row by row) on each block (its ``columns``)."""
        ...

    def map_pandas(self, fn: Callable[..., pd.DataFrame], *args: Any) -> KeyRows:
        """``fn(frame, *args)`` (data frame -> data frame, row by row) on each block."""
        ...

    def pandas_parts(self, fn: Callable[..., pd.DataFrame], *args: Any) -> list[pd.DataFrame]:
        """``fn`` (data frame -> small data frame, e.g. partial counts) on each block, the results gathered here."""
        ...

    def in_one_task(self, fn: Callable[..., pa.Table], *args: Any, columns: list[str] | None = None) -> KeyRows:
        """``fn`` on all the rows (their ``columns``) at once, in one task."""
        ...

    def grouped(
        self,
        keys: list[str],
        fn: Callable[..., pa.Table],
        *args: Any,
        partitions: int,
        columns: list[str] | None = None,
    ) -> KeyRows:
        """``fn`` on whole groups of ``keys``: the rows cut into about ``partitions`` parts by a hash of their
        ``keys`` values, every row of a value in the same call (in one process, one call on all rows)."""
        ...

    def by_group(
        self,
        keys: list[str],
        fn: Callable[..., pa.Table],
        *args: Any,
        partitions: int,
        rows: int,
        limit_rows: int,
        columns: list[str] | None = None,
    ) -> KeyRows:
        """``fn`` on whole groups of ``keys``: all rows in one task up to ``limit_rows`` (``rows``: the size of these
        rows, or a bound), beyond :meth:`grouped` into ``partitions``."""
        ...

    def map_groups(self, key: str, fn: Callable[[pa.Table], pa.Table]) -> KeyRows:
        """``fn`` on the rows of each value of ``key`` (a column without nulls), one call per value."""
        ...

    def join(
        self, other: KeyRows, how: str, partitions: int, on: list[str], right_on: list[str] | None = None
    ) -> KeyRows:
        """These rows joined with ``other`` (``how``: ``inner`` or ``left_outer``) on ``on`` = ``right_on``; the
        right key columns are not kept."""
        ...

    def concat(self, other: KeyRows) -> KeyRows:
        """These rows, then ``other``'s."""
        ...

    def broadcast(self, limit_rows: int) -> list[Any] | None:
        """Handles to the rows for every map task (read there by ``worker.fetched``), when they are at most
        ``limit_rows`` and ``BROADCAST_BYTES`` (in one process always: the table itself); else None."""
        ...

    def to_table(self) -> pa.Table:
        """All the rows here, as one table (for small results)."""
        ...

    def map_items(self, fn: Callable[..., pa.Table], items: list[Any], *args: Any) -> KeyRows:
        """Key rows held like these, made of ``fn(item, *args)`` (-> table) for each of ``items``, a task each."""
        ...

    def from_table(self, table: pa.Table) -> KeyRows:
        """Key rows held like these, of the rows of ``table`` (its schema even without rows)."""
        ...

    def reduce_or(self, column: str) -> Any:
        """A handle to the bitwise OR of the one-row blocks' ``column`` (packed bytes), reduced by a tree of tasks;
        read in tasks by ``worker.fetched_value``."""
        ...


def _selected(table: pa.Table, columns: list[str]) -> pa.Table:
    return table.select(columns)


def _dropped(table: pa.Table, columns: list[str]) -> pa.Table:
    return table.drop_columns(columns)


def _renamed(table: pa.Table, names: dict[str, str]) -> pa.Table:
    return table.rename_columns([names.get(c, c) for c in table.column_names])


def _as_pandas(table: pa.Table, fn: Callable[..., pd.DataFrame], args: tuple[Any, ...]) -> pa.Table:
    return pa.Table.from_pandas(fn(table.to_pandas(), *args), preserve_index=False)


def _pandas_part(table: pa.Table, fn: Callable[..., pd.DataFrame], args: tuple[Any, ...]) -> pd.DataFrame:
    return fn(table.to_pandas(), *args)


def _each_group(table: pa.Table, key: str, fn: Callable[[pa.Table], pa.Table]) -> pa.Table:
    """``fn`` on the rows of each value of ``key``: the rows sorted by ``key`` and cut where the value changes."""
    table = table.take(pc.sort_indices(table[key]))
    values = table[key].to_pylist()
    starts = [i for i in range(len(values)) if not i or values[i] != values[i - 1]]
    parts = [fn(table.slice(lo, hi - lo)) for lo, hi in zip(starts, [*starts[1:], len(values)])]
    return pa.concat_tables(parts) if parts else table


def _concatenated(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="permissive")


class LocalRows:
    """Key rows held by the process that decides: one Arrow table, every operation a call here."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def count(self) -> int:
        rows: int = self.table.num_rows
        return rows

    def schema(self) -> pa.Schema:
        return self.table.schema

    def size_bytes(self) -> int:
        size: int = self.table.nbytes
        return size

    def num_blocks(self) -> int:
        return 1

    def blocks(self) -> list[Any]:
        return [self.table]

    def tasks(self) -> LocalTasks:
        return LocalTasks()

    def held_limit(self, rows: int) -> int:
        return sys.maxsize

    def same_rows_as(self, other: KeyRows) -> bool:
        return other is self

    def select_columns(self, columns: list[str]) -> LocalRows:
        return LocalRows(self.table.select(columns))

    def drop_columns(self, columns: list[str]) -> LocalRows:
        return LocalRows(self.table.drop_columns(columns))

    def rename_columns(self, names: dict[str, str]) -> LocalRows:
        return LocalRows(_renamed(self.table, names))

    def map_blocks(self, fn: Callable[..., pa.Table], *args: Any, columns: list[str] | None = None) -> LocalRows:
        return LocalRows(apply(fn, args, columns, self.table))

    def map_pandas(self, fn: Callable[..., pd.DataFrame], *args: Any) -> LocalRows:
        return LocalRows(_as_pandas(self.table, fn, args))

    def pandas_parts(self, fn: Callable[..., pd.DataFrame], *args: Any) -> list[pd.DataFrame]:
        return [_pandas_part(self.table, fn, args)]

    def in_one_task(self, fn: Callable[..., pa.Table], *args: Any, columns: list[str] | None = None) -> LocalRows:
        return self.map_blocks(fn, *args, columns=columns)

    def grouped(
        self,
        keys: list[str],
        fn: Callable[..., pa.Table],
        *args: Any,
        partitions: int,
        columns: list[str] | None = None,
    ) -> LocalRows:
        return self.map_blocks(fn, *args, columns=columns)

    def by_group(
        self,
        keys: list[str],
        fn: Callable[..., pa.Table],
        *args: Any,
        partitions: int,
        rows: int,
        limit_rows: int,
        columns: list[str] | None = None,
    ) -> LocalRows:
        return self.map_blocks(fn, *args, columns=columns)

    def map_groups(self, key: str, fn: Callable[[pa.Table], pa.Table]) -> LocalRows:
        return LocalRows(_each_group(self.table, key, fn))

    def join(
        self, other: KeyRows, how: str, partitions: int, on: list[str], right_on: list[str] | None = None
    ) -> LocalRows:
        return LocalRows(arrow_join(self.table, other.to_table(), how, on, right_on or on))

    def concat(self, other: KeyRows) -> LocalRows:
        return LocalRows(_concatenated([self.table, other.to_table()]))

    def broadcast(self, limit_rows: int) -> list[Any] | None:
        return [self.table]

    def to_table(self) -> pa.Table:
        return self.table

    def map_items(self, fn: Callable[..., pa.Table], items: list[Any], *args: Any) -> LocalRows:
        return LocalRows(_concatenated([fn(item, *args) for item in items]))

    def from_table(self, table: pa.Table) -> LocalRows:
        return LocalRows(table)

    def reduce_or(self, column: str) -> bytes:
        return bitwise_or(self.table[column].to_pylist())


class LocalTasks:
    """Handles are the values; tasks run here, at once."""

    def run(self, fn: Callable[..., T], *args: Any, returns: int = 1) -> T:
        return fn(*args)

    def get(self, handles: T) -> T:
        return handles

    def put(self, value: T) -> T:
        return value

    def rows(self, handles: list[pa.Table]) -> LocalRows:
        return LocalRows(_concatenated(handles))


class RayRows:
    """Key rows on Ray: a Ray dataset, its blocks in the object store; operations run plain tasks over the blocks
    (Ray Data where plain tasks do not suit), their results materialized."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self._blocks: list[Any] | None = None

    @staticmethod
    def of(refs: list[Any]) -> RayRows:
        """The key rows of the tables behind ``refs`` (tasks' outputs: they always have columns)."""
        import ray.data

        return RayRows(ray.data.from_arrow_refs(refs))

    def materialize(self) -> RayRows:
        """These rows computed and held in the object store, without empty blocks.

        A read task that finds no record leaves a block without columns; Ray Data's hash shuffle cannot concatenate
        that block's empty shards with the others, so it is dropped here (only block references move)."""
        refs = self.blocks()
        return RayRows.of(refs) if refs else self

    def _materialized(self) -> Any:
        from ray.data.dataset import MaterializedDataset

        if not isinstance(self.ds, MaterializedDataset):
            self.ds = self.ds.materialize()
        return self.ds

    def blocks(self) -> list[Any]:
        """References to the blocks that hold rows: read from the source operator of the materialized dataset
        (``from_arrow_refs``, ``materialize()``), since iterating would start a Ray Data execution (its stats and
        autoscaling actors, each a worker process, the first time)."""
        if self._blocks is None:
            ds = self._materialized()
            source: Any = getattr(getattr(ds, "_logical_plan", None), "dag", None)
            bundles = source.output_data() if hasattr(source, "output_data") else None
            self._blocks = [
                ref
                for bundle in (ds.iter_internal_ref_bundles() if bundles is None else bundles)
                for ref, meta in zip(bundle.block_refs, bundle.metadata)
                if meta.num_rows
            ]
        return self._blocks

    def count(self) -> int:
        rows: int = self._materialized().count()
        return rows

    def schema(self) -> pa.Schema:
        schema = self._materialized().schema()
        if schema is None:
            return pa.schema([])
        arrow: pa.Schema = schema.base_schema if hasattr(schema, "base_schema") else schema
        return arrow

    def size_bytes(self) -> int:
        size: int = self._materialized().size_bytes()
        return size

    def num_blocks(self) -> int:
        blocks: int = self._materialized().num_blocks()
        return blocks

    def tasks(self) -> RayTasks:
        return RayTasks()

    def held_limit(self, rows: int) -> int:
        return rows

    def same_rows_as(self, other: KeyRows) -> bool:
        return other is self or (isinstance(other, RayRows) and other.blocks() == self.blocks())

    def select_columns(self, columns: list[str]) -> RayRows:
        return self.map_blocks(_selected, columns)

    def drop_columns(self, columns: list[str]) -> RayRows:
        return self.map_blocks(_dropped, columns)

    def rename_columns(self, names: dict[str, str]) -> RayRows:
        return self.map_blocks(_renamed, names)

    def map_blocks(self, fn: Callable[..., pa.Table], *args: Any, columns: list[str] | None = None) -> RayRows:
        refs = self.blocks()
        if not refs:
            return self
        return RayRows.of([_apply_task(fn).remote(fn, args, columns, ref) for ref in refs])

    def map_pandas(self, fn: Callable[..., pd.DataFrame], *args: Any) -> RayRows:
        return self.map_blocks(_as_pandas, fn, args)

    def pandas_parts(self, fn: Callable[..., pd.DataFrame], *args: Any) -> list[pd.DataFrame]:
        import ray

        task = plain_task(_pandas_part).options(name=getattr(fn, "__qualname__", "parts"))
        parts: list[pd.DataFrame] = ray.get([task.remote(ref, fn, args) for ref in self.blocks()])
        return parts

    def in_one_task(self, fn: Callable[..., pa.Table], *args: Any, columns: list[str] | None = None) -> RayRows:
        refs = self.blocks()
        if not refs and not self.schema().names:
            return self
        return RayRows.of([_apply_task(fn).remote(fn, args, columns, *(refs or [self.schema().empty_table()]))])

    def grouped(
        self,
        keys: list[str],
        fn: Callable[..., pa.Table],
        *args: Any,
        partitions: int,
        columns: list[str] | None = None,
    ) -> RayRows:
        refs = self.blocks()
        if not refs and not self.schema().names:  # nothing was ever read: no columns to give ``fn``
            return self
        if len(refs) * partitions <= MAX_TASK_REFS:
            return RayRows.of(grouped_refs(refs, keys, fn, args, partitions, self.schema(), columns))
        projected = self.ds.select_columns(columns) if columns else self.ds
        shuffled = projected.repartition(partitions, keys=keys)
        return RayRows(shuffled.map_batches(fn, fn_args=args, batch_size=None, **ARROW)).materialize()

    def by_group(
        self,
        keys: list[str],
        fn: Callable[..., pa.Table],
        *args: Any,
        partitions: int,
        rows: int,
        limit_rows: int,
        columns: list[str] | None = None,
    ) -> RayRows:
        if rows > limit_rows:
            return self.grouped(keys, fn, *args, partitions=partitions, columns=columns)
        return self.in_one_task(fn, *args, columns=columns)

    def map_groups(self, key: str, fn: Callable[[pa.Table], pa.Table]) -> RayRows:
        return self.grouped([key], _each_group, key, fn, partitions=max(2, len(self.blocks())))

    def join(
        self, other: KeyRows, how: str, partitions: int, on: list[str], right_on: list[str] | None = None
    ) -> RayRows:
        right = other if isinstance(other, RayRows) else RayRows.of([_put(other.to_table())])
        left_refs, right_refs = self.blocks(), right.blocks()
        if (len(left_refs) + len(right_refs)) * partitions <= MAX_TASK_REFS:
            schemas = (self.schema(), right.schema())
            return RayRows.of(joined_refs(left_refs, right_refs, how, on, right_on or on, partitions, schemas))
        out = self.ds.join(right.ds, how, partitions, on=tuple(on), right_on=tuple(right_on) if right_on else None)
        return RayRows(out).materialize()

    def concat(self, other: KeyRows) -> RayRows:
        right = other if isinstance(other, RayRows) else RayRows.of([_put(other.to_table())])
        refs = self.blocks() + right.blocks()
        return RayRows.of(refs) if refs else self

    def broadcast(self, limit_rows: int) -> list[Any] | None:
        if self.count() > limit_rows or self.size_bytes() > BROADCAST_BYTES:
            return None
        return self.blocks()

    def to_table(self) -> pa.Table:
        import ray

        tables = ray.get(self.blocks())
        return _concatenated(tables) if tables else self.schema().empty_table()

    def map_items(self, fn: Callable[..., pa.Table], items: list[Any], *args: Any) -> RayRows:
        task = plain_task(fn).options(name=getattr(fn, "__qualname__", "items"))
        return RayRows.of([task.remote(item, *args) for item in items])

    def from_table(self, table: pa.Table) -> RayRows:
        import ray.data

        return RayRows(ray.data.from_arrow(table))

    def reduce_or(self, column: str) -> Any:
        refs = [plain_task(_column_bytes).remote(ref, column) for ref in self.blocks()]
        while len(refs) > 1:
            refs = [plain_task(_or_of).remote(*refs[i : i + 32]) for i in range(0, len(refs), 32)]
        return refs[0]


def _column_bytes(block: pa.Table, column: str) -> bytes:
    return bitwise_or(block[column].to_pylist())


def _or_of(*parts: bytes) -> bytes:
    return bitwise_or(list(parts))


def _put(table: pa.Table) -> Any:
    import ray

    return ray.put(table)


def _apply_task(fn: Callable[..., pa.Table]) -> Any:
    """The plain task that applies ``fn``, named after it (process titles, timelines)."""
    return plain_task(apply).options(name=getattr(fn, "__qualname__", "apply"))


class RayTasks:
    """Handles are object references; tasks are plain Ray tasks of one CPU."""

    def run(self, fn: Callable[..., Any], *args: Any, returns: int = 1) -> Any:
        return plain_task(fn).options(num_returns=returns).remote(*args)

    def get(self, handles: Any) -> Any:
        import ray

        return ray.get(handles)

    def put(self, value: Any) -> Any:
        import ray

        return ray.put(value)

    def rows(self, handles: list[Any]) -> RayRows:
        return RayRows.of(handles)

    def cpus(self) -> int:
        """The CPUs of the cluster (at least 1)."""
        return max(1, int(cluster_resources().get("CPU", 1)))


@dataclass(frozen=True)
class StagedKeys:
    """A segment's staged key files, in groups of consecutive files: the columns a stage leaves out of the loaded
    key rows (``GlobalStage.staged_columns``) are read from them by :meth:`map_blocks`, a group per task.
    ``read(uris, columns=...)`` reads files into one table; ``local``: read by the deciding process itself."""

    groups: list[list[str]]
    read: Callable[..., pa.Table]
    local: bool = False

    def map_blocks(self, fn: Callable[..., pa.Table], *args: Any, columns: list[str] | None = None) -> KeyRows:
        """``fn`` (row by row) on the ``columns`` of the staged files, a file at a time."""
        if self.local:
            return LocalRows(
                apply_staged(fn, args, columns, [uri for group in self.groups for uri in group], self.read)
            )
        task = plain_task(apply_staged).options(name=getattr(fn, "__qualname__", "apply"))
        return RayRows.of([task.remote(fn, args, columns, group, self.read) for group in self.groups])
