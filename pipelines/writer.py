"""The run's Ray Data sink: kept rows to ``data/`` (or ``data/<split>/``), rejected rows to ``rejects/``.

Each write task writes its own part files (named by task index, so a retried task overwrites its
earlier attempt) and returns counts, summed metrics and report statistics; the driver merges them.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from cluster.storage import Storage, join
from pipelines.report import collect_stats
from pipelines.stage import METRIC_PREFIX, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, SPLIT, TASK

from ray.data import Datasink

PROGRESS = "_progress"
REJECT_RENAMES = {REJECT_STAGE: "stage", REJECT_REASON: "reason", REJECT_DETAIL: "detail"}
DIGEST_MOD = 1 << 64


def table_digest(table: pa.Table) -> int:
    """Order-independent fingerprint of a table's rows: the sum of their hashes, mod 2**64.

    Two runs wrote the same records (whatever their order and file boundaries) iff the digests match.
    """
    total = 0
    for row in table.to_pylist():
        total += xxhash.xxh64_intdigest(orjson.dumps(row, option=orjson.OPT_SORT_KEYS, default=str))
    return total % DIGEST_MOD


def kept_table(table: pa.Table) -> pa.Table:
    """A kept slice as written: internal and metric columns dropped, null-typed columns as strings."""
    drop = [c for c in table.column_names if c in REJECT_RENAMES or c == SPLIT or c.startswith(METRIC_PREFIX)]
    return _strings_for_nulls(table.drop_columns(drop))


def rejects_table(table: pa.Table) -> pa.Table:
    """A rejected slice as written: id, stage, reason, detail, then the record's fields."""
    drop = [c for c in table.column_names if c == SPLIT or c.startswith(METRIC_PREFIX)]
    table = table.drop_columns(drop)
    names = [REJECT_RENAMES.get(c, c) for c in table.column_names]
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
    if isinstance(block, pd.DataFrame):
        return pa.Table.from_pandas(block, preserve_index=False)
    return block


def progress_uri(output: str, name: str) -> str:
    return join(output, PROGRESS, name)


class RunSink(Datasink):
    """Writes a run's Parquet parts, per read task, and a progress marker for each part written.

    Rows carry the key of the read task that produced them (``TASK``). The rows of read task K written by
    write task W go to ``<dest>/part-K-W.parquet``; then ``_progress/write-K-W.json`` records their counts,
    digests and report statistics. A re-run of the same config can therefore keep every read task whose
    markers add up to the rows it read (see ``pipelines.runner``).
    """

    def __init__(self, output: str, storage: Storage, text_field: str):
        self.output = output
        self.storage = storage
        self.text_field = text_field
        self.results: list[dict[str, Any]] = []

    @property
    def supports_distributed_writes(self) -> bool:
        return True

    def write(self, blocks: Iterable, ctx) -> list[dict[str, Any]]:
        tables = [t for t in (_as_table(b) for b in blocks) if t.num_rows]
        if not tables:
            return []
        table = pa.concat_tables(tables, promote_options="permissive")
        if TASK not in table.column_names:  # a global stage regrouped rows: no per-read-task bookkeeping
            table = table.append_column(TASK, pa.array(["all"] * table.num_rows, pa.string()))
        results = []
        for key in sorted(pc.unique(table[TASK]).to_pylist()):
            part = table.filter(pc.equal(table[TASK], key)).drop_columns([TASK])
            stats = self.write_part(part, f"{key}-{ctx.task_idx:05d}")
            self.storage.write_bytes(progress_uri(self.output, f"write-{key}-{ctx.task_idx:05d}.json"),
                                     json.dumps(stats).encode())
            results.append(stats)
        return results

    def write_part(self, table: pa.Table, name: str) -> dict[str, Any]:
        stats: dict[str, Any] = {"rows": Counter(), "rejected": {}, "metrics": Counter(), "report": {}, "files": [],
                                 "digests": Counter()}
        for col in table.column_names:
            if col.startswith(METRIC_PREFIX):
                stats["metrics"][col[len(METRIC_PREFIX):]] += pc.sum(table[col]).as_py() or 0
        rejected_mask = pc.is_valid(table[REJECT_STAGE])
        rejected = rejects_table(table.filter(rejected_mask))
        kept_all = table.filter(pc.invert(rejected_mask))
        for stage, reason in zip(rejected["stage"].to_pylist(), rejected["reason"].to_pylist()):
            stats["rejected"].setdefault(stage, Counter())[reason] += 1
        groups: list[tuple[str, pa.Table]] = [("rejects", rejected)]
        if SPLIT in kept_all.column_names:
            for split in sorted(s for s in pc.unique(kept_all[SPLIT]).to_pylist() if s is not None):
                groups.append((f"data/{split}", kept_table(kept_all.filter(pc.equal(kept_all[SPLIT], split)))))
            unassigned = kept_all.filter(pc.is_null(kept_all[SPLIT]))
            groups.append(("data", kept_table(unassigned)))
        else:
            groups.append(("data", kept_table(kept_all)))
        for dest, part in groups:
            if not part.num_rows:
                continue
            uri = join(self.output, dest, f"part-{name}.parquet")
            fs, path = self.storage.resolve(uri)
            fs.create_dir(posixpath.dirname(path), recursive=True)
            pq.write_table(part, path, filesystem=fs, compression="zstd")
            stats["rows"][dest] += part.num_rows
            stats["digests"][dest] += table_digest(part)
            stats["files"].append(uri)
        stats["report"] = collect_stats(
            {dest: part for dest, part in groups if dest != "rejects"}, rejected, self.text_field
        )
        return stats

    def on_write_complete(self, write_result) -> None:
        self.results = [stats for task in write_result.write_returns for stats in task]
