"""The map phase of each segment, as Ray Data pipelines (or plain Ray tasks when a segment has no map stage):
sources (segment 0 reads the input; later segments read an apply group's staged records with their decisions),
the map stages (stateful ones on an actor pool), and the sink that writes parts (``thresher.curate.writer``)."""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.readers import LostBytes, ReaderSpec, ReadTask, read_task
from thresher.curate.run_folder import Part, RunFolder, read_staged
from thresher.curate.stage import (KEY, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, SECONDS_PREFIX, TASK_SHIFT, MapStage,
                                   run_map_stage)
from thresher.curate.writer import RunSink, read_range

PART_ROWS = 16384  # a source's batches are written in parts of at least this many rows or PART_BYTES
PART_BYTES = 32 << 20
PROGRESS_EVERY_S = 0.5  # a read task adds its records to the progress counter at most this often
REJECTION = [REJECT_STAGE, REJECT_REASON, REJECT_DETAIL]


# -- sources ---------------------------------------------------------------------------------------------


def timed(tables: Iterator[pa.Table], what: str) -> Iterator[pa.Table]:
    """``tables``, each with a ``_seconds.<what>`` column holding on its first row the seconds spent producing it
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
        yield table.append_column(SECONDS_PREFIX + what, pa.array(seconds))


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
    folder.storage.write_bytes(folder.read_marker(item["index"]),
                               json.dumps({"rows": n, "bytes": task.nbytes, "damaged": lost}).encode())
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
            raise RuntimeError(f"apply group {item['index']}: decisions do not match the staged records of "
                               f"read tasks {lo}..{hi}")
        done += table.num_rows
        for col in REJECTION + columns:  # decisions in their types (_decision_rows)
            i = table.column_names.index(col) if col in table.column_names else -1
            table = table.set_column(i, col, d[col]) if i >= 0 else table.append_column(col, d[col])
        if counter is not None:
            counter.add.remote({f"apply{seg}": table.num_rows})
        yield table
    if decisions is not None and done != decisions.num_rows:
        raise RuntimeError(f"apply group {item['index']}: {decisions.num_rows - done} decisions for no staged record")


_SET_UP: dict[str, MapStage] = {}  # stages whose setup() ran in this worker process, by configuration
_SET_UP_KEPT = 8


def _set_up(stage: MapStage) -> MapStage:
    """``stage`` after its ``setup()``, run once per worker process and stage as built on the driver (a task's
    arguments are deserialized anew for every task, so the model a stage loads is kept here, not on the object)."""
    if getattr(stage, "_set_up", False):  # the same argument object again
        return stage
    key = hashlib.sha256(pickle.dumps(stage)).hexdigest()  # everything the stage was built with
    ready = _SET_UP.get(key)
    if ready is None:
        stage.setup()
        stage._set_up = True
        while len(_SET_UP) >= _SET_UP_KEPT:
            _SET_UP.pop(next(iter(_SET_UP)))
        ready = _SET_UP[key] = stage
    return ready


def _batches(block, stage: MapStage, rows: int):
    """``stage`` on ``block`` in batches of ``rows`` rows, one output block per batch."""
    for lo in range(0, len(block), rows):
        yield run_map_stage(stage, block.iloc[lo:lo + rows].reset_index(drop=True))


def _apply_stage(block, stage: MapStage, rows: int):
    yield from _batches(block, _set_up(stage), rows)


class _StageActor:
    """Actor-pool UDF: a stateful stage and the map stages after it, each set up (model loading) once per actor."""

    def __init__(self, stages: list[MapStage], rows: list[int]):
        self.stages, self.rows = stages, rows
        for stage in stages:
            stage.setup()

    def __call__(self, block):
        blocks = [block]
        for stage, rows in zip(self.stages, self.rows):
            blocks = [out for b in blocks for out in _batches(b, stage, rows)]
        yield from blocks


def map_stages(ds, stages: list[MapStage], batch_size: int, remote: dict | None = None) -> tuple[Any, int]:
    """``ds`` through the map stages, and the size of the actor pool (0: none).

    Each stage gets whole blocks and cuts them into batches itself: a Ray Data ``batch_size`` would make the fused
    source task wait for that many *input rows*, and the source's input rows are read tasks (apply groups), so up
    to ``batch_size`` of them would run one after the other in a single task. The stages before the first stateful
    one are fused into the source's tasks; that stage and every stage after it run in one fixed pool of actors
    (one per ``num_cpus`` CPUs, at most one per ``num_gpus`` GPUs), so no second pool or task waits for CPUs that
    the actors hold. ``remote``: remote args of the tasks (the same as the source's, so that they fuse)."""
    import ray
    from ray.data import ActorPoolStrategy

    first = next((i for i, s in enumerate(stages) if s.stateful), len(stages))
    for stage in stages[:first]:
        ds = ds.map_batches(_apply_stage, fn_args=(stage, stage.batch_size or batch_size), batch_size=None,
                            batch_format="pandas", num_cpus=stage.num_cpus, **(remote or {}))
    pooled = stages[first:]
    if not pooled:
        return ds, 0
    num_cpus, num_gpus = max(s.num_cpus for s in pooled), max(s.num_gpus for s in pooled)
    resources = ray.cluster_resources()
    pool = int(resources.get("CPU", 1) // max(num_cpus, 1e-3))
    if num_gpus:
        pool = min(pool, int(resources.get("GPU", 0) // num_gpus))
    pool = max(1, pool)
    # Ray Data refuses GPU actors without a batch size: then they take the records ``batch_size`` at a time
    gpu = {"num_gpus": num_gpus, "batch_size": batch_size} if num_gpus else {"batch_size": None}
    ds = ds.map_batches(_StageActor, fn_constructor_args=(pooled, [s.batch_size or batch_size for s in pooled]),
                        compute=ActorPoolStrategy(size=pool), batch_format="pandas", num_cpus=num_cpus, **gpu)
    return ds, pool


def _source_into_sink(source, row: dict, args: tuple, sink: RunSink) -> int:
    """The source's tables (one read task or apply group) written into the sink; returns their rows."""
    rows = 0

    def counted() -> Iterator[pa.Table]:
        nonlocal rows
        for table in source({name: [value] for name, value in row.items()}, *args):
            rows += table.num_rows
            yield table

    sink.write_blocks(_coalesced(counted()))
    return rows


@dataclass
class TaskProgress:
    """The rows of a segment's plain tasks that ended (the driver sees them end: no progress actor needed), and
    ``total``, else the total estimated from the tasks done."""

    tasks: int
    total: int | None = None
    done: int = 0
    rows: int = 0

    def poll(self) -> tuple[int, float | None]:
        estimate = self.rows * self.tasks / self.done if self.done else None
        return self.rows, self.total if self.total is not None else estimate


def _coalesced(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Consecutive tables of one schema joined until they hold ``PART_ROWS`` rows or ``PART_BYTES``: fewer, larger
    parts (and markers) than one per reader batch, a bounded amount held at a time."""
    held: list[pa.Table] = []
    for table in tables:
        if held and table.schema != held[0].schema:
            yield pa.concat_tables(held)
            held = []
        held.append(table)
        if sum(t.num_rows for t in held) >= PART_ROWS or sum(t.nbytes for t in held) >= PART_BYTES:
            yield pa.concat_tables(held)
            held = []
    if held:
        yield pa.concat_tables(held)


def ray_datasink(sink: RunSink):
    """``sink`` as a Ray Data datasink, for the segments Ray Data writes (those with map stages). The class is made
    on first use, so that the processes of the other segments never import Ray Data."""
    return _datasink_class()(sink)


@functools.cache
def _datasink_class():
    from ray.data import Datasink

    class RunDatasink(Datasink):
        def __init__(self, sink: RunSink):
            self.sink = sink

        @property
        def supports_distributed_writes(self) -> bool:
            return True

        def write(self, blocks, ctx) -> None:
            self.sink.write_blocks(blocks)

    return RunDatasink


def retried_io() -> dict:
    """Remote args of the tasks that read and write the data: an I/O error (``OSError``: a reset connection, a
    failing disk; damaged input is a reject, not an error) runs the task again like a lost worker, 3 times at most
    (as Ray Data's own Parquet reads do); then the run fails. A task's outputs are named by its position, so a task
    run again replaces what the failed attempt wrote. Segments with an actor pool read in the actors (the source's
    tasks fuse into them), where an I/O error fails the run without a retry."""
    return {"max_retries": 3, "retry_exceptions": [OSError]}


def write_directly(source, rows: list[dict], args: tuple, sink: RunSink, cpus: int, progress: TaskProgress) -> None:
    """A segment without map stages: one plain Ray task per source row (read task or apply group) that writes the
    source's tables into the sink, at most two per CPU submitted at a time; ``progress`` counts the tasks that
    ended. Ray Data would run the same fused task, but its resource budget, granted by its autoscaling coordinator,
    started it at about one task at a time."""
    import ray

    task = ray.remote(num_cpus=1, **retried_io())(_source_into_sink).options(name=source.__name__)
    pending: list = []

    def wait() -> None:
        nonlocal pending
        done, pending = ray.wait(pending, num_returns=1)
        progress.rows += ray.get(done[0])
        progress.done += 1

    try:
        for row in rows:
            if len(pending) >= 2 * cpus:
                wait()
            pending.append(task.remote(source, row, args, sink))
        while pending:
            wait()
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise
