"""Rows grouped by key with plain Ray tasks: each block is hash-split by the key columns into ``P`` parts (one task
per block, ``num_returns=P``), then one task per partition concatenates its parts and applies a function. Ray Data's
keyed ``repartition`` starts hash-shuffle aggregator actors (seconds, even for a few rows); these tasks take
milliseconds. The hash is deterministic (the same key lands in the same partition in every process), and a
partition's rows keep the order of the blocks, so the result does not depend on scheduling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.execution.worker import plain_task, release_memory

MAX_TASK_REFS = 4096  # blocks x partitions up to which the grouping runs as plain tasks (beyond: Ray Data's shuffle)


def partition_of(table: pa.Table, keys: list[str], partitions: int) -> np.ndarray:
    """The partition (0 .. ``partitions`` - 1) of each row of ``table``, from a hash of its ``keys`` values: equal
    values in any block, of any integer width or of string or binary type, land in the same partition."""
    combined = np.zeros(table.num_rows, np.uint64)
    for key in keys:
        column = table[key]
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind):
            values: np.ndarray = pc.fill_null(column.cast(pa.int64()), 0).to_numpy()
        elif pa.types.is_floating(kind):
            values = pc.fill_null(column.cast(pa.float64()), 0.0).to_numpy()
        else:  # strings and bytes hash alike; a null as the empty value
            values = np.asarray(column.to_pylist(), dtype=object)
            values[pd.isna(values)] = b""
        combined = combined * np.uint64(0x9E3779B97F4A7C15) + pd.util.hash_array(values)
    return (combined % np.uint64(partitions)).astype(np.int64)


def split_by_key(
    block: pa.Table, keys: list[str], partitions: int, columns: list[str] | None
) -> tuple[pa.Table, ...] | pa.Table:
    """``block`` (its ``columns``) cut into ``partitions`` tables by :func:`partition_of` (a single table for one)."""
    table = block.select(columns) if columns else block
    if partitions == 1:
        return table
    if not table.num_columns:
        return tuple(table for _ in range(partitions))
    which = partition_of(table, keys, partitions)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(partitions + 1))
    table = table.take(pa.array(order))
    parts = tuple(table.slice(lo, hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:]))
    release_memory()
    return parts


def concat_apply(fn: Callable[..., pa.Table], args: tuple[Any, ...], schema: pa.Schema, *parts: pa.Table) -> pa.Table:
    """``fn`` on the rows of one partition (its parts from every block concatenated; ``schema``'s empty table when
    no part has a column)."""
    out = fn(_whole(parts, schema), *args)
    release_memory()
    return out


def _whole(parts: tuple[pa.Table, ...], schema: pa.Schema) -> pa.Table:
    """The parts that have columns concatenated, else ``schema``'s empty table."""
    tables = [p for p in parts if p.num_columns]
    return pa.concat_tables(tables, promote_options="permissive") if tables else schema.empty_table()


def _join_parts(
    how: str,
    on: list[str],
    right_on: list[str],
    schemas: tuple[pa.Schema, pa.Schema],
    left_count: int,
    *parts: pa.Table,
) -> pa.Table:
    """One partition of a join: its ``left_count`` left parts and the right parts, joined."""
    left, right = _whole(parts[:left_count], schemas[0]), _whole(parts[left_count:], schemas[1])
    out = arrow_join(left, right, how, on, right_on)
    release_memory()
    return out


def arrow_join(left: pa.Table, right: pa.Table, how: str, on: list[str], right_on: list[str]) -> pa.Table:
    """``left`` joined with ``right`` (``how``: ``inner`` or ``left_outer``) on ``on`` = ``right_on``: the left
    columns, then the right ones but its keys. Only the keys (the right ones in the left ones' types) and row
    numbers go through Arrow's hash join (it refuses list and struct columns); the other columns are taken by row
    number."""
    join_type = {"inner": "inner", "left_outer": "left outer"}[how]
    left_rows = left.select(on).append_column(_LEFT_ROW, pa.array(np.arange(left.num_rows), pa.int64()))
    right_keys = [right[r].cast(left.schema.field(k).type) for k, r in zip(on, right_on)]
    right_rows = pa.table([*right_keys, pa.array(np.arange(right.num_rows), pa.int64())], names=[*right_on, _RIGHT_ROW])
    pairs = left_rows.join(right_rows, keys=on, right_keys=right_on, join_type=join_type, use_threads=False)
    pairs = pairs.sort_by([(_LEFT_ROW, "ascending"), (_RIGHT_ROW, "ascending")])
    out = left.take(pairs[_LEFT_ROW])
    taken = right.drop_columns(right_on).take(pairs[_RIGHT_ROW])
    for name, column in zip(taken.column_names, taken.columns):
        out = out.append_column(name, column)
    return out


_LEFT_ROW, _RIGHT_ROW = "__left_row", "__right_row"


def grouped_refs(
    refs: list[Any],
    keys: list[str],
    fn: Callable[..., pa.Table],
    args: tuple[Any, ...],
    partitions: int,
    schema: pa.Schema,
    columns: list[str] | None,
) -> list[Any]:
    """References to ``fn`` applied to each partition of the blocks ``refs`` by ``keys`` (every row of a key value
    in one call), one per partition (a partition that received no row is ``schema``'s empty table to ``fn``; no
    block at all: one call on it)."""
    projected = pa.schema([schema.field(c) for c in columns]) if columns else schema
    apply = plain_task(concat_apply).options(name=_name(fn))
    if not refs:
        return [apply.remote(fn, args, projected)]
    split = plain_task(split_by_key).options(num_returns=partitions, name=f"split_{_name(fn)}")
    parts = [_listed(split.remote(ref, keys, partitions, columns), partitions) for ref in refs]
    return [apply.remote(fn, args, projected, *[p[i] for p in parts]) for i in range(partitions)]


def joined_refs(
    left: list[Any],
    right: list[Any],
    how: str,
    on: list[str],
    right_on: list[str],
    partitions: int,
    schemas: tuple[pa.Schema, pa.Schema],
) -> list[Any]:
    """References to the partitions of the join of the blocks ``left`` and ``right`` (hash-split by ``on`` and by
    ``right_on``), one task per partition."""
    split = plain_task(split_by_key).options(num_returns=partitions, name="split_join")
    left_parts = [_listed(split.remote(ref, on, partitions, None), partitions) for ref in left]
    right_parts = [_listed(split.remote(ref, right_on, partitions, None), partitions) for ref in right]
    join = plain_task(_join_parts).options(name=f"join_{how}")
    return [
        join.remote(how, on, right_on, schemas, len(left), *[p[i] for p in left_parts], *[p[i] for p in right_parts])
        for i in range(partitions)
    ]


def _listed(refs: Any, partitions: int) -> list[Any]:
    return [refs] if partitions == 1 else list(refs)


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", "grouped")
