"""The apply phase: the segments one after the other, each its source through its map stages into its sink
(``thresher.curate.execution.segments``). Segment 0's source reads the input (``thresher.curate.map.read_batches``);
a later segment's first runs the decide phase on the key rows the previous one staged (``thresher.curate.decide``),
then its source applies those decisions to the staged records, an apply group per task
(``thresher.curate.map.apply_batches``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from thresher.core.console import Estimate
from thresher.core.console import current as console
from thresher.curate.config import CurateConfig
from thresher.curate.decide import apply_groups, decide
from thresher.curate.execution.segments import TaskProgress, run_segment
from thresher.curate.map import apply_batches, read_batches
from thresher.curate.plan import Segment
from thresher.curate.run_folder import RunFolder
from thresher.curate.timing import Phases
from thresher.curate.writer import RunSink
from thresher.runtime import progress_counter, progress_counts, retire_workers

APPLY_GROUP_BYTES = 32 << 20  # staged bytes per apply task: bounds its memory (its output is written at once)


@dataclass
class _Work:
    """One segment's tasks: its source over ``rows``, the apply groups its sink writes for (None: segment 0), what
    the console shows, and the rows it will have written (None: known when the read tasks report)."""

    rows: list[dict[str, Any]]
    source: Callable[..., Iterator[Any]]
    args: tuple[Any, ...]
    groups: list[tuple[int, int]] | None
    label: str
    tasks: TaskProgress
    poll: Callable[[], Any] | None
    total: int | None


def run_segments(
    cfg: CurateConfig,
    segs: list[Segment],
    planned: list[Any],
    spec: Any,
    folder: RunFolder,
    reused: set[int],
    cpus: int,
    phases: Phases,
) -> tuple[dict[str, dict], dict[int, dict]]:
    """Every segment, in order: per global stage its counts (rows in, out, rejected), and per read task its read
    marker (rows, bytes, damaged)."""
    counts: dict[str, dict] = {}
    counter = None  # the tasks of Ray Data segments add their progress to it (plain tasks return theirs)
    read = None
    for k, segment in enumerate(segs):
        direct = not any(s.stateful for s in segment.map_stages)  # plain tasks, each counted as it ends (TaskProgress)
        if not direct and counter is None:
            counter = progress_counter()
        reporter = None if direct else counter
        if k == 0:
            work = _read_work(planned, reused, spec, folder, reporter, direct)
        else:
            groups, group_items = apply_groups(folder, k, APPLY_GROUP_BYTES)
            decided = _decide(cfg, folder, k, segment, groups, phases)
            counts.update(decided)
            work = _apply_work(folder, k, segment, groups, group_items, decided, reporter, direct)
        if work is None:
            continue
        final = k == len(segs) - 1
        next_stages = [] if final else segs[k + 1].global_stages
        sink = RunSink(folder, k, work.groups, final, next_stages, cfg.input.text_field)
        with console().phase(work.label, work.poll) as shown:
            run_segment(
                work.source, work.rows, work.args, sink, segment.map_stages, cfg.execution.batch_size, cpus, work.tasks
            )
            # the last line shows the exact figure: progress that tasks sent may still be on its way
            if work.total is None:
                read = folder.read_results()
                shown.done = sum(m["rows"] for task, m in read.items() if task not in reused)
            else:
                shown.done = work.total
        phases.lap(work.label)
    return counts, folder.read_results() if read is None else read  # (None: every read task was reused)


def _read_work(
    planned: list[Any], reused: set[int], spec: Any, folder: RunFolder, reporter: Any, direct: bool
) -> _Work | None:
    """Segment 0: one task per read task not reused from an earlier attempt (None when there is none)."""
    rows = [
        {
            "task": {
                "index": i,
                "format": t.format,
                "uris": list(t.uris),
                "sizes": list(t.sizes),
                "start": t.start,
                "end": t.end,
            }
        }
        for i, t in enumerate(planned)
        if i not in reused
    ]
    if not rows:
        return None
    tasks = TaskProgress(len(rows))
    poll = tasks.poll if direct else _read_progress(reporter, len(rows))
    return _Work(rows, read_batches, (spec, folder, reporter), None, "read and map stages", tasks, poll, None)


def _decide(
    cfg: CurateConfig, folder: RunFolder, k: int, segment: Segment, groups: list[tuple[int, int]], phases: Phases
) -> dict[str, dict]:
    """The decide phase before segment ``k``; the workers retired after it when it held many key rows."""
    names = ", ".join(s.name for s in segment.global_stages)
    with console().phase(f"decide: {names}"):
        counts = decide(folder, k, segment, groups, cfg.execution.broadcast_limit_rows)
    phases.lap(f"decide: {names}")
    fresh_after = cfg.execution.fresh_workers_after_rows
    if fresh_after is not None and counts[segment.global_stages[0].name]["in"] >= fresh_after:
        retire_workers()
    return counts


def _apply_work(
    folder: RunFolder,
    k: int,
    segment: Segment,
    groups: list[tuple[int, int]],
    group_items: list[dict],
    counts: dict[str, dict],
    reporter: Any,
    direct: bool,
) -> _Work | None:
    """Segment ``k``: one task per apply group (None when there is none)."""
    if not group_items:
        return None
    columns = [c for s in segment.global_stages for c in s.decision_columns()]
    rows = [{"group": json.dumps(g)} for g in group_items]
    total = counts[segment.global_stages[0].name]["in"]
    what = ", ".join(s.name for s in segment.map_stages) or "write"
    tasks = TaskProgress(len(rows), total)
    poll = tasks.poll if direct else _counted(reporter, f"apply{k}", total)
    args = (folder, k, columns, reporter)
    return _Work(rows, apply_batches, args, groups, f"apply decisions, {what}", tasks, poll, total)


def _read_progress(counter: Any, tasks: int) -> Callable[[], Any] | None:
    """Records read, and the total estimated from the read tasks done (None without a counter)."""
    if counter is None:
        return None

    def poll() -> tuple[int, Estimate | None]:
        c = progress_counts(counter)
        done = c.get("read_tasks", 0)
        return c.get("read", 0), (Estimate(c.get("read_task_rows", 0) * tasks / done) if done else None)

    return poll


def _counted(counter: Any, name: str, total: int) -> Callable[[], Any] | None:
    if counter is None:
        return None
    return lambda: (progress_counts(counter).get(name, 0), total)
