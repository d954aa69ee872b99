"""The decide phase: the global stages decide on the key rows alone, one after the other (in one task on
``LocalRows`` when the rows are few and every stage can, else on ``RayRows``: ``thresher.curate.execution.rows``);
the decisions are written one file per apply group (consecutive read tasks of staged records), which the next
segment's source reads with its records."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.core.storage import Storage
from thresher.curate.execution.rows import KeyRows, LocalRows, RayTasks, StagedKeys
from thresher.curate.execution.worker import clear_worker_cache, tables_of
from thresher.curate.plan import Segment
from thresher.curate.run_folder import RunFolder, read_files, staged_rows, write_staged
from thresher.curate.stage import KEY, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, GlobalStage, task_of

log = logging.getLogger(__name__)
GROUP = "_group"
KEY_BLOCK_BYTES = 256 << 20
REJECTION = [REJECT_STAGE, REJECT_REASON, REJECT_DETAIL]


# -- global decisions --------------------------------------------------------------------------------------


def _file_groups(files: list[tuple[str, int]], groups: int) -> list[list[str]]:
    """``files`` (uri, size) cut into at most ``groups`` runs of consecutive files of about equal bytes."""
    total = sum(size for _, size in files) or 1
    out: list[list[str]] = [[] for _ in range(groups)]
    done = 0
    for uri, size in files:
        out[min(groups - 1, done * groups // total)].append(uri)
        done += size
    return [g for g in out if g]


def _rejected(batch: pa.Table, yes: bool) -> pa.Table:
    mask = pc.is_valid(batch[REJECT_STAGE])
    return batch.filter(mask if yes else pc.invert(mask))


def _rejected_rows(batch: pa.Table) -> int:
    return batch.num_rows - batch[REJECT_STAGE].null_count


def _rejected_count(ds: KeyRows) -> int:
    """The rows of ``ds`` that a stage rejected, counted by a task per block."""
    tasks = ds.tasks()
    return sum(tasks.get([tasks.run(_rejected_rows, block) for block in ds.blocks()]))


def _decision_rows(batch: pa.Table, columns: dict[str, pa.DataType]) -> pa.Table:
    """``KEY``, the rejection columns (strings) and ``columns`` in their types (null where a stage did not set them)."""
    out = {KEY: batch[KEY]}
    for col, kind in {**dict.fromkeys(REJECTION, pa.string()), **columns}.items():
        out[col] = batch[col].cast(kind) if col in batch.column_names else pa.nulls(batch.num_rows, kind)
    return pa.table(out)


def _with_group(batch: pa.Table, group_lo: np.ndarray) -> pa.Table:
    tasks = task_of(batch[KEY].to_numpy(zero_copy_only=False))
    return batch.append_column(GROUP, pa.array(np.searchsorted(group_lo, tasks, side="right") - 1, pa.int64()))


def _write_decisions(batch: pa.Table, folder: RunFolder, seg: int) -> pa.Table:
    """One file per apply group of ``batch`` (which holds every decision of its groups), sorted by key."""
    batch = batch.take(pc.sort_indices(batch, [(GROUP, "ascending"), (KEY, "ascending")]))
    groups = batch[GROUP].to_numpy()
    indices, starts = np.unique(groups, return_index=True)
    ends = [*starts[1:], len(groups)]
    for index, start, end in zip(indices, starts, ends):
        write_staged(
            folder.storage, folder.decisions(seg, int(index)), batch.slice(start, end - start).drop_columns([GROUP])
        )
    return pa.table({GROUP: indices, "rows": np.subtract(ends, starts)})


def _write_all_decisions(
    parts: list[tuple[list, bool | None]],
    columns: dict[str, pa.DataType],
    group_lo: np.ndarray,
    folder: RunFolder,
    seg: int,
) -> dict:
    """Every decision of a small segment in one task: the rows each stage rejected (``True``: the tables, or
    blocks, of its output) and every row of the last stage's output (``None``), written per apply group."""
    tables = [
        _decision_rows(_rejected(t, True) if which else t, columns)
        for blocks, which in parts
        for t in tables_of(blocks)
    ]
    if not tables:
        return {"rows": 0}
    written = _write_decisions(_with_group(pa.concat_tables(tables), group_lo), folder, seg)
    return {"rows": int(pc.sum(written["rows"]).as_py() or 0)}


def _decide_stages(keys: KeyRows, stages: list[GlobalStage], staged: StagedKeys) -> tuple[dict[str, dict], list]:
    """Each stage's ``decide`` on the rows the previous ones kept: per stage the rows in, out and rejected (counted
    on the key rows), and the outputs whose decisions are written (``True``: its rejected rows; ``None``: all its
    rows, the last stage's output)."""
    counts: dict[str, dict] = {}
    decided = []
    for stage in stages:
        stage.staged_keys = staged
        n_in = keys.count()
        out = stage.decide(keys)
        rejected = 0 if keys.same_rows_as(out) else _rejected_count(out)  # the same blocks: none
        # the rows a stage rejected are counted again, independently, where they are written (manifest.check)
        counts[stage.name] = {
            "in": n_in,
            "out": n_in - rejected,
            "rejected": rejected,
            "metrics": getattr(stage, "metrics", {}),
        }
        if stage is stages[-1]:
            decided.append((out, None))
        elif rejected:
            decided.append((out, True))
            keys = out.map_blocks(_rejected, False)
        else:
            keys = out
    return counts, decided


class _LogRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))


def _decide_in_one_task(
    files: list[str],
    storage: Storage,
    stages: list[GlobalStage],
    columns: dict,
    group_lo: np.ndarray,
    folder: RunFolder,
    seg: int,
    limit_rows: int,
) -> tuple[tuple[dict, int] | None, list[tuple[str, int, str]]]:
    """:func:`decide` in this task, on the key rows as ``LocalRows``: the counts and the decisions written (None,
    having read nothing but the files' row counts, when they hold more than ``limit_rows``), and what the stages
    logged (``thresher.curate`` loggers, INFO and up) for the driver's log, where the other path's messages are."""
    logger, handler = logging.getLogger("thresher.curate"), _LogRecords()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        return _decide_here(files, storage, stages, columns, group_lo, folder, seg, limit_rows), handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _decide_here(
    files: list[str],
    storage: Storage,
    stages: list[GlobalStage],
    columns: dict,
    group_lo: np.ndarray,
    folder: RunFolder,
    seg: int,
    limit_rows: int,
) -> tuple[dict, int] | None:
    rows = 0
    for uri in files:
        rows += staged_rows(storage, uri)
        if rows > limit_rows:
            return None
    staged_only = tuple(c for s in stages for c in s.staged_columns())
    keys = LocalRows(read_files(files, storage, None, staged_only))
    for stage in stages:  # everything is in this process: no step needs a partitioned path
        stage.ctx = dataclasses.replace(stage.ctx, broadcast_limit_rows=sys.maxsize)
    try:
        counts, decided = _decide_stages(keys, stages, StagedKeys([files], _reader(storage), local=True))
    finally:
        clear_worker_cache()  # it pins this decision's tables
    written = _write_all_decisions([(ds.blocks(), which) for ds, which in decided], columns, group_lo, folder, seg)
    return counts, written["rows"]


def _reader(storage: Storage) -> functools.partial:
    """Staged files read as one table (``read(uris, columns=...)``), for ``StagedKeys``."""
    return functools.partial(read_files, storage=storage)


def decide(
    folder: RunFolder, seg: int, segment: Segment, groups: list[tuple[int, int]], limit_rows: int
) -> dict[str, dict]:
    """Run the segment's global stages on the key rows staged by segment ``seg - 1``, write the decisions of
    each apply group, and return per stage the rows in, out and rejected (counted on the key rows).

    Up to ``limit_rows`` key rows, when every stage can (``GlobalStage.decides_locally``), all of it runs in one
    task; else on Ray, the decisions written from one task up to ``limit_rows``, beyond grouped by apply group."""
    files = sorted(folder.keys_parts(seg - 1))
    if not files:
        return {s.name: {"in": 0, "out": 0, "rejected": 0} for s in segment.global_stages}
    columns = {c: s.decision_types().get(c, pa.string()) for s in segment.global_stages for c in s.decision_columns()}
    group_lo = np.array([lo for lo, _ in groups], np.int64)
    result = None
    if all(s.decides_locally for s in segment.global_stages):
        tasks = RayTasks()
        result, records = tasks.get(
            tasks.run(
                _decide_in_one_task,
                [uri for uri, _ in files],
                folder.storage,
                segment.global_stages,
                columns,
                group_lo,
                folder,
                seg,
                limit_rows,
            )
        )
        for name, level, message in records:
            logging.getLogger(name).log(level, "%s", message)
    counts, total = result or _decide_on_ray(files, folder, seg, segment, columns, group_lo, limit_rows)
    for name, c in counts.items():
        log.info("%s: %s", name, c)
    expected = counts[segment.global_stages[0].name]["in"]
    if total != expected:
        raise RuntimeError(f"segment {seg}: wrote {total} decisions for {expected} key rows")
    return counts


def _decide_on_ray(
    files: list[tuple[str, int]],
    folder: RunFolder,
    seg: int,
    segment: Segment,
    columns: dict,
    group_lo: np.ndarray,
    limit_rows: int,
) -> tuple[dict[str, dict], int]:
    """:func:`decide` on ``RayRows``: the counts and the decisions written."""
    tasks = RayTasks()
    # staged parts read into a few blocks of about KEY_BLOCK_BYTES, at least two per CPU (no repartition copy)
    blocks = max(2 * tasks.cpus(), math.ceil(sum(n for _, n in files) / KEY_BLOCK_BYTES))
    groups_of_files = _file_groups(files, blocks)
    staged_only = tuple(c for s in segment.global_stages for c in s.staged_columns())
    keys = tasks.rows([tasks.run(read_files, group, folder.storage, None, staged_only) for group in groups_of_files])
    staged = StagedKeys(groups_of_files, _reader(folder.storage))
    counts, decided = _decide_stages(keys, segment.global_stages, staged)
    if counts[segment.global_stages[0].name]["in"] <= limit_rows:
        parts = [(ds.blocks(), which) for ds, which in decided]
        written = [tasks.get(tasks.run(_write_all_decisions, parts, columns, group_lo, folder, seg))]
    else:
        pieces = [
            (ds if which is None else ds.map_blocks(_rejected, True)).map_blocks(_decision_rows, columns)
            for ds, which in decided
        ]
        decisions = functools.reduce(lambda a, b: a.concat(b), pieces)
        routed = decisions.map_blocks(_with_group, group_lo)
        write = functools.partial(_write_decisions, folder=folder, seg=seg)
        written = routed.map_groups(GROUP, write).to_table().to_pylist()
    return counts, sum(r["rows"] for r in written)


def apply_groups(folder: RunFolder, seg: int, target_bytes: int) -> tuple[list[tuple[int, int]], list[dict]]:
    """The apply groups of segment ``seg``: whole staged parts of segment ``seg - 1``, about ``target_bytes``
    each, cut between read-task ranges; with, per group, its ranges and parts."""
    parts = sorted(folder.live_parts(seg - 1), key=lambda p: (p.lo, p.hi, p.uri))
    ranges: dict[tuple[int, int], list] = {}
    for p in parts:
        ranges.setdefault((p.lo, p.hi), []).append(p)
    groups, items, current, size = [], [], [], 0
    for (lo, hi), ps in ranges.items():
        current.append(((lo, hi), ps))
        size += sum(p.size for p in ps)
        if size >= target_bytes:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    bounds = []
    for i, group in enumerate(groups):
        bounds.append((group[0][0][0], group[-1][0][1]))
        items.append(
            {"index": i, "ranges": [r for r, _ in group], "parts": [p.__dict__ for _, ps in group for p in ps]}
        )
    return bounds, items
