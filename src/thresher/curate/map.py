"""The sources of each segment's map phase: segment 0 reads the input, each later segment reads an apply group's
staged records with their decisions. ``thresher.curate.execution.segments`` runs them through the map stages into
the sink that writes parts (``thresher.curate.writer``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.readers import LostBytes, ReaderSpec, ReadTask, read_task
from thresher.curate.run_folder import Part, RunFolder, read_staged
from thresher.curate.stage import KEY, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, TASK_SHIFT, side_column
from thresher.curate.writer import read_range

PROGRESS_EVERY_S = 0.5  # a read task adds its records to the progress counter at most this often
REJECTION = [REJECT_STAGE, REJECT_REASON, REJECT_DETAIL]


# -- sources ---------------------------------------------------------------------------------------------


def timed(tables: Iterator[pa.Table], what: str) -> Iterator[pa.Table]:
    """``tables``, each with a ``seconds`` side column of ``what`` holding on its first row the seconds spent producing it
    (not the time the consumer held it)."""
    tables = iter(tables)
    while True:
        started = time.perf_counter()
        table = next(tables, None)
        if table is None:
            return
        seconds = np.zeros(table.num_rows)
        if table.num_rows:
            seconds[0] = time.perf_counter() - started
        yield table.append_column(side_column("seconds", what), pa.array(seconds))


def read_batches(batch, spec: ReaderSpec, folder: RunFolder, counter):
    """Segment 0's source: one read task in, its records out with their internal keys.

    When the task has read everything, its read marker records how many records it read (the independent count
    the accounting check and resume rely on; a retried task overwrites it), the input bytes it covered and the bytes
    it lost to damage per file."""
    (item,) = batch["task"]
    task = ReadTask(item["format"], tuple(item["uris"]), tuple(item["sizes"]), item["start"], item["end"])
    base, n, reported, at = item["index"] << TASK_SHIFT, 0, 0, time.monotonic()
    lost = LostBytes()
    for table in timed(read_task(task, spec, lost), "read"):
        yield table.append_column(KEY, pa.array(base + np.arange(n, n + table.num_rows), pa.int64()))
        n += table.num_rows
        if counter is not None and time.monotonic() - at >= PROGRESS_EVERY_S:
            counter.add.remote({"read": n - reported})
            reported, at = n, time.monotonic()
    folder.storage.write_bytes(
        folder.read_marker(item["index"]), json.dumps({"rows": n, "bytes": task.nbytes, "damaged": lost}).encode()
    )
    if counter is not None:
        counter.add.remote({"read": n - reported, "read_tasks": 1, "read_task_rows": n})


def apply_batches(batch, folder: RunFolder, seg: int, columns: list[str], counter):
    """A later segment's source: one apply group's staged records, in key order, with their decisions."""
    yield from timed(_apply_tables(json.loads(batch["group"][0]), folder, seg, columns, counter), f"apply{seg}")


def _apply_tables(item: dict, folder: RunFolder, seg: int, columns: list[str], counter):
    uri = folder.decisions(seg, item["index"])
    decisions = read_staged(folder.storage, uri) if folder.storage.exists(uri) else None
    if decisions is not None:
        decisions = decisions.take(pc.sort_indices(decisions[KEY]))
    done = 0
    for lo, hi in item["ranges"]:
        parts = [Part(**p) for p in item["parts"] if lo <= p["lo"] and p["hi"] <= hi]
        table = read_range(folder, parts, lo, hi)
        if table is None:
            continue
        d = decisions.slice(done, table.num_rows) if decisions is not None else None
        if d is None or d.num_rows != table.num_rows or not d[KEY].equals(table[KEY]):
            raise RuntimeError(
                f"apply group {item['index']}: decisions do not match the staged records of read tasks {lo}..{hi}"
            )
        done += table.num_rows
        for col in REJECTION + columns:  # decisions in their types (_decision_rows)
            i = table.column_names.index(col) if col in table.column_names else -1
            table = table.set_column(i, col, d[col]) if i >= 0 else table.append_column(col, d[col])
        if counter is not None:
            counter.add.remote({f"apply{seg}": table.num_rows})
        yield table
    if decisions is not None and done != decisions.num_rows:
        raise RuntimeError(f"apply group {item['index']}: {decisions.num_rows - done} decisions for no staged record")
