"""Writing a run: the Ray Data sink of each segment, and the compaction of staged outputs into final files.

A segment's sink (:class:`RunSink`) writes, per block and per source (a read task in segment 0, an apply group
later), rejected rows to ``_staging/out/rejects``; kept rows to ``_staging/out/data[/<split>]`` in the last
segment, else the live records to ``_staging/live`` and their key rows for the next global stages to
``_staging/keys``. Each part gets a marker with its counts, sizes per read task and report statistics; the
write task returns nothing, so the driver never holds per-part results. :func:`compact` then writes each
destination's final files: consecutive read-task ranges of about ``output.target_file_mb``, rows in key order,
so the files are the same whatever the number of CPUs or the order the parts were written in.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from thresher.curate.execution.worker import release_memory
from thresher.curate.readers.common import RENAMED
from thresher.curate.report import collect_stats, merge_stats
from thresher.curate.report.arrays import hashes, shared
from thresher.curate.run_folder import (
    DATA,
    REJECTS,
    Part,
    RunFolder,
    read_staged,
    staged_key_range,
    staged_schema,
    write_staged,
)
from thresher.curate.stage import (
    ID,
    KEY,
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    REPORT_PREFIX,
    SPLIT,
    GlobalStage,
    side_of,
    task_of,
)

REJECT_RENAMES = {REJECT_STAGE: "stage", REJECT_REASON: "reason", REJECT_DETAIL: "detail"}
DIGEST_MOD = 1 << 64
ROW_OVERHEAD = 64  # bytes counted per row on top of its strings when sizing files
# side columns summed into the part's statistics (under these names); none is staged or written
COUNTED = {"metric": "metrics", "seen": "seen", "generated": "generated", "seconds": "seconds"}


def table_digest(table: pa.Table) -> int:
    """Order-independent fingerprint of a table's rows: the sum over rows of a mix of their cells' hashes (each
    salted with its column's name, so the columns' order does not matter), mod 2**64.

    Two runs wrote the same records (whatever their order and file boundaries) iff the digests match.
    """
    rows = np.zeros(table.num_rows, np.uint64)
    for name, column in zip(table.column_names, table.columns):
        salt = np.uint64(xxhash.xxh64_intdigest(name.encode()))
        rows += _mix(np.concatenate([_cell_hashes(c) for c in column.chunks] or [np.zeros(0, np.uint64)]) ^ salt)
    return int(_mix(rows).sum(dtype=np.uint64))


_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, element-wise (wrapping uint64 arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _cell_hashes(values: pa.Array) -> np.ndarray:
    """A 64-bit hash per value: xxh64 of the bytes of strings and binaries (the report's compiled hash), mixed bits
    of numbers and booleans (by type), xxh64 of the JSON of anything else; one constant for null."""
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        out = hashes(values)
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):  # the same bytes, seen as strings (no copy)
        out = hashes(values.view(pa.large_string() if pa.types.is_large_binary(kind) else pa.string()))
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        numbers = values.fill_null(pa.scalar(0).cast(kind)).to_numpy(zero_copy_only=False)
        bits = (numbers.astype(np.float64) if numbers.dtype.kind == "f" else numbers.astype(np.int64)).view(np.uint64)
        out = _mix(bits ^ np.uint64(xxhash.xxh64_intdigest(str(kind).encode())))
    else:
        out = np.fromiter(
            (
                xxhash.xxh64_intdigest(orjson.dumps(v, option=orjson.OPT_SORT_KEYS, default=str))
                for v in values.to_pylist()
            ),
            np.uint64,
            len(values),
        )
    if values.null_count:
        out[values.is_null().to_numpy(zero_copy_only=False)] = _NULL_HASH
    return out


def _internal(name: str) -> bool:
    return name in REJECT_RENAMES or name == SPLIT or name.startswith(REPORT_PREFIX) or side_of(name) is not None


def kept_table(table: pa.Table, report: bool = False) -> pa.Table:
    """A kept slice as written (``KEY`` still there, for ordering): internal columns dropped, nulls as strings;
    with ``report``, the ``_report.`` columns stay (what the report sections receive)."""
    return _strings_for_nulls(
        table.drop_columns(
            [c for c in table.column_names if _internal(c) and not (report and c.startswith(REPORT_PREFIX))]
        )
    )


def rejects_table(table: pa.Table) -> pa.Table:
    """A rejected slice as written: id, stage, reason, detail, then the record's fields (one named like those three
    as ``RENAMED`` + its name)."""
    table = table.drop_columns([c for c in table.column_names if _internal(c) and c not in REJECT_RENAMES])
    taken = set(table.column_names)
    names = []
    for c in table.column_names:
        name = REJECT_RENAMES.get(c, c)
        if c not in REJECT_RENAMES and name in REJECT_RENAMES.values():
            while name in taken or name in REJECT_RENAMES.values():
                name = RENAMED + name
            taken.add(name)
        names.append(name)
    table = table.rename_columns(names)
    head = ["id", "stage", "reason", "detail"]
    order = [c for c in head if c in names] + [c for c in names if c not in head]
    return _strings_for_nulls(table.select(order))


def _strings_for_nulls(table: pa.Table) -> pa.Table:
    for i, f in enumerate(table.schema):
        if pa.types.is_null(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.string()))
    return table


def _as_table(block) -> pa.Table:
    """A block as Arrow, vectors as ``fixed_size_list``: Ray Data turns a vector column that went through a pandas
    batch into its tensor extension type, which other readers of the Parquet would not know."""
    table = block if isinstance(block, pa.Table) else pa.Table.from_pandas(block, preserve_index=False)
    for i, field in enumerate(table.schema):
        shape = getattr(field.type, "shape", None)
        if isinstance(field.type, pa.ExtensionType) and shape is not None and len(shape) == 1:
            storage = pa.chunked_array([c.storage for c in table.column(i).chunks], field.type.storage_type)
            vectors = storage.cast(pa.list_(field.type.storage_type.value_type, shape[0]))
            table = table.set_column(i, pa.field(field.name, vectors.type, field.nullable), vectors)
    return table


def row_sizes(table: pa.Table) -> np.ndarray:
    """Bytes per row for sizing files: its string and binary values plus ``ROW_OVERHEAD`` (deterministic)."""
    sizes = np.full(table.num_rows, ROW_OVERHEAD, np.int64)
    for col in table.columns:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_binary(col.type):
            sizes += pc.fill_null(pc.binary_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return sizes


def _sizes_by_task(table: pa.Table) -> dict[str, int]:
    """``{read task: bytes}`` of a slice (``row_sizes``)."""
    tasks = task_of(table[KEY].to_numpy(zero_copy_only=False))
    ids, index = np.unique(tasks, return_inverse=True)
    sums = np.bincount(index, weights=row_sizes(table), minlength=len(ids))
    return {str(int(t)): int(n) for t, n in zip(ids, sums)}


class RunSink:
    """The sink of one segment (Ray Data writes through it, ``thresher.curate.execution.segments``).

    ``groups``: the read-task ranges of this segment's sources (apply groups); None in segment 0, where every
    read task is its own source. ``final``: the last segment writes kept rows as output; otherwise the live
    records are staged with the key rows of ``next_stages`` (the next segment's global stages).
    """

    def __init__(
        self,
        folder: RunFolder,
        seg: int,
        groups: list[tuple[int, int]] | None,
        final: bool,
        next_stages: list[GlobalStage],
        text_field: str,
    ):
        self.folder = folder
        self.seg = seg
        self.group_lo = None if groups is None else np.array([lo for lo, _ in groups], np.int64)
        self.groups = groups
        self.final = final
        self.next_stages = next_stages
        self.text_field = text_field

    def write_blocks(self, blocks: Iterable) -> None:
        """One part per (block, source): a task holds one block at a time. A part is numbered by its first row's
        internal key, so a retried task, or a rerun of a read task, writes the same names (it replaces, never
        duplicates, what an earlier attempt left)."""
        for block in blocks:
            started = time.perf_counter()
            table = _as_table(block)
            if not table.num_rows:
                continue
            tasks = task_of(table[KEY].to_numpy(zero_copy_only=False))
            sources = tasks if self.groups is None else np.searchsorted(self.group_lo, tasks, side="right") - 1
            for source in np.unique(sources):
                lo, hi = (int(source), int(source)) if self.groups is None else self.groups[source]
                part = table if len(np.unique(sources)) == 1 else table.filter(pa.array(sources == source))
                self.write_part(part, lo, hi, int(part[KEY][0].as_py()), started)
                started = time.perf_counter()

    def write_part(self, table: pa.Table, lo: int, hi: int, w: int, started: float | None = None) -> None:
        """Write one part and its marker; the marker's ``seconds`` holds the seconds of the stages and the reader
        (from the ``seconds`` side columns), of the writing since ``started`` and of the report's statistics."""
        started = time.perf_counter() if started is None else started
        stats: dict[str, Any] = {
            "rows": Counter(),
            "staged": 0,
            "rejected": {},
            "metrics": Counter(),
            "seen": Counter(),
            "generated": Counter(),
            "digests": Counter(),
            "sizes": {},
            "report": {},
            "seconds": Counter(),
        }
        summaries = []  # the stages' summaries of their batches, for the report sections they name
        for col in table.column_names:
            side = side_of(col)
            if side is None:
                continue
            kind, name = side
            if kind == "summary":
                summaries += [{name: json.loads(v)} for v in pc.drop_null(table[col]).to_pylist()]
            else:
                stats[COUNTED[kind]][name] += pc.sum(table[col]).as_py() or 0
        rejected_rows = table.num_rows - table[REJECT_STAGE].null_count
        if rejected_rows in (0, table.num_rows):  # no copy of the rows
            rejected, live = (table, table.slice(0, 0)) if rejected_rows else (table.slice(0, 0), table)
        else:
            rejected_mask = pc.is_valid(table[REJECT_STAGE])
            rejected, live = table.filter(rejected_mask), table.filter(pc.invert(rejected_mask))
        rejected = rejects_table(rejected)
        for stage, reason in zip(rejected["stage"].to_pylist(), rejected["reason"].to_pylist()):
            stats["rejected"].setdefault(stage, Counter())[reason] += 1
        outputs: list[tuple[str, pa.Table]] = [(REJECTS, rejected)]
        if not self.final:
            self._stage_live(live, lo, hi, w, stats)
        elif SPLIT in live.column_names:
            for split in sorted(s for s in pc.unique(live[SPLIT]).to_pylist() if s is not None):
                outputs.append((f"{DATA}/{split}", live.filter(pc.equal(live[SPLIT], split))))
            outputs.append((DATA, live.filter(pc.is_null(live[SPLIT]))))
        else:
            outputs.append((DATA, live))
        outputs = [(dest, part) for dest, part in outputs if part.num_rows]
        written = [(dest, part if dest == REJECTS else kept_table(part)) for dest, part in outputs]
        with shared(table for _, table in written):  # strings hashed once, for the digests and the report
            for dest, table in written:
                write_staged(self.folder.storage, self.folder.out_part(dest, self.seg, lo, hi, w), table)
                stats["rows"][dest] += table.num_rows
                stats["digests"][dest] += table_digest(table.drop_columns([KEY]))
                stats["sizes"][dest] = _sizes_by_task(table)
            collecting = time.perf_counter()
            stats["report"] = merge_stats(
                [
                    collect_stats(
                        {d: kept_table(p, report=True).drop_columns([KEY]) for d, p in outputs if d != REJECTS},
                        rejected.drop_columns([KEY]),
                        self.text_field,
                    ),
                    *summaries,
                ]
            )
            stats["seconds"]["report"] += time.perf_counter() - collecting
        keys = sum(stats["seconds"][stage.name] for stage in self.next_stages)
        stats["seconds"]["write"] += time.perf_counter() - started - stats["seconds"]["report"] - keys
        self.folder.storage.write_bytes(self.folder.write_marker(self.seg, lo, hi, w), json.dumps(stats).encode())
        release_memory()

    def _stage_live(self, live: pa.Table, lo: int, hi: int, w: int, stats: dict) -> None:
        if not live.num_rows:
            return
        live = _strings_for_nulls(live.drop_columns([c for c in live.column_names if side_of(c) is not None]))
        keys = {KEY: live[KEY], ID: live[ID]}
        for col in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL):
            keys[col] = pa.nulls(live.num_rows, pa.string())
        for stage in self.next_stages:
            started = time.perf_counter()
            keys.update(stage.keys(live))
            stats["seconds"][stage.name] += time.perf_counter() - started
        write_staged(self.folder.storage, self.folder.live_part(self.seg, lo, hi, w), live)
        write_staged(
            self.folder.storage, self.folder.keys_part(self.seg, lo, hi, w), _strings_for_nulls(pa.table(keys))
        )
        stats["staged"] = live.num_rows


# -- reading staged parts back -----------------------------------------------------------------------


def read_range(folder: RunFolder, parts: list[Part], lo: int, hi: int) -> pa.Table | None:
    """The rows of ``parts`` from read tasks ``lo..hi``, in key order (None when there are none)."""
    tables = []
    for part in parts:
        table = read_staged(folder.storage, part.uri)
        if part.lo < lo or part.hi > hi:
            tasks = task_of(table[KEY].to_numpy(zero_copy_only=False))
            table = table.filter(pa.array((tasks >= lo) & (tasks <= hi)))
        if table.num_rows:
            tables.append(table)
    if not tables:
        return None
    table = _concat(tables)
    keys = table[KEY].to_numpy()
    return table if (np.diff(keys) > 0).all() else table.take(pc.sort_indices(table[KEY]))


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table from parts whose schemas may differ (missing columns become null; conflicting types strings)."""
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.concat_tables([_conform(t, _unified([t.schema for t in tables])) for t in tables])


def plan_ranges(sizes: dict[int, int], target_bytes: int) -> list[tuple[int, int]]:
    """Consecutive read-task ranges of about ``target_bytes`` each (a range closes once it reaches the target)."""
    ranges, start, total = [], None, 0
    for task in sorted(sizes):
        start = task if start is None else start
        total += sizes[task]
        if total >= target_bytes:
            ranges.append((start, task))
            start, total = None, 0
    if start is not None:
        ranges.append((start, max(sizes)))
    return ranges


ROW_GROUP_ROWS = 1 << 16
ROW_GROUP_BYTES = 32 << 20  # a final file's row group holds at most this many bytes of rows (``row_sizes``)


def compact(item: dict[str, Any], folder: RunFolder) -> dict[str, Any]:
    """Write one final file (``item["uri"]``): the rows of read tasks ``lo..hi`` of one destination, in key order, in row groups of
    at most ``ROW_GROUP_ROWS`` rows and ``ROW_GROUP_BYTES`` (cut where the rows reach either, so the file does not
    depend on how the rows were cut into parts; a worker buffers one row group). Parts whose key ranges
    do not overlap (the usual case: a part holds consecutive rows of its source) are streamed one at a time;
    otherwise the range is sorted in memory. With ``order_by`` (a column; ``Stage.sort_destinations``) the file's
    rows are sorted in memory by that column, ascending with nulls last, ties by key."""
    parts, lo, hi = [Part(**p) for p in item["parts"]], item["lo"], item["hi"]
    uri = item["uri"]
    infos = []
    for part in parts:
        schema = staged_schema(folder.storage, part.uri)
        keys = staged_key_range(schema)
        if keys is not None:
            infos.append((keys, schema.remove_metadata(), part))
    if not infos:
        return {"dest": item["dest"], "uri": None, "rows": 0}
    infos.sort(key=lambda i: i[0])
    order_by = item.get("order_by")
    streamed = not order_by and all(a[0][1] < b[0][0] for a, b in zip(infos, infos[1:]))
    tables = (read_range(folder, [p], lo, hi) for _, _, p in infos) if streamed else [read_range(folder, parts, lo, hi)]
    if order_by and tables[0] is not None and order_by in tables[0].column_names:
        tables = [tables[0].sort_by([(order_by, "ascending"), (KEY, "ascending")], null_placement="at_end")]
    schema = _unified([s.remove(s.get_field_index(KEY)) for _, s, _ in infos])
    fs, path = folder.storage.resolve(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    rows, group, group_rows, group_bytes = 0, [], 0, 0
    with pq.ParquetWriter(
        path, _strings_for_nulls(schema.empty_table()).schema, filesystem=fs, compression="zstd"
    ) as writer:
        for table in tables:
            if table is None:
                continue
            table = _conform(table.drop_columns([KEY]), writer.schema)
            ends, start = np.cumsum(row_sizes(table)), 0  # ends[i]: bytes of rows 0..i
            while start < table.num_rows:
                # the rows of this table that fit in the open row group (a row larger than a row group: alone)
                before = int(ends[start - 1]) if start else 0
                fits = int(np.searchsorted(ends, before + ROW_GROUP_BYTES - group_bytes, side="right")) - start
                take = min(fits, ROW_GROUP_ROWS - group_rows, table.num_rows - start) or int(not group)
                if take:
                    group.append(table.slice(start, take))
                    group_rows += take
                    group_bytes += int(ends[start + take - 1]) - before
                    start += take
                if group_rows >= ROW_GROUP_ROWS or group_bytes >= ROW_GROUP_BYTES or start < table.num_rows:
                    writer.write_table(pa.concat_tables(group), row_group_size=group_rows)
                    rows += group_rows
                    group, group_rows, group_bytes = [], 0, 0
                    release_memory()
        if group:
            writer.write_table(pa.concat_tables(group), row_group_size=group_rows)
            rows += group_rows
    release_memory()
    return {"dest": item["dest"], "uri": uri, "rows": rows}


def _unified(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for parts that may differ: missing columns added, types promoted, else conflicting ones strings."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        names = list(dict.fromkeys(name for s in schemas for name in s.names))
        return pa.schema([(name, pa.int64() if name == KEY else pa.string()) for name in names])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: missing columns null, the columns in its order and types."""
    return pa.table(
        [
            table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema
        ],
        schema=schema,
    )
