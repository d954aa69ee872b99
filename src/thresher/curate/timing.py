"""Where a run's time went, in ``manifest.json``'s ``timing``.

``phases``: the driver's wall-clock phases, back to back from the command's start (the interpreter's, when run by
the CLI) to the manifest's write, so that they add up to ``wall_s``. ``tasks``: per stage (and for reading,
writing and the report's statistics) the seconds the tasks spent in it, summed over tasks (CPU-seconds when each
task holds one CPU), with the rows it received per second; reading also in bytes per second.
"""

from __future__ import annotations

import os
import time

READ, WRITE, REPORT = "read", "write", "report"
IMPORTED = time.perf_counter()  # the CLI imports this module within a fraction of a second of Python's start
MAX_STARTUP_S = 2.0  # the most a process's start is taken to precede IMPORTED (see process_started)


class Phases:
    """Wall-clock phases, back to back from ``started`` (a ``time.perf_counter`` value): ``lap(name)`` ends the
    current phase and books it under ``name`` (a name booked twice adds up)."""

    def __init__(self, started: float | None = None):
        self.started = self.mark = time.perf_counter() if started is None else started
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.mark
        self.mark = now

    @property
    def wall(self) -> float:
        return self.mark - self.started


def process_started() -> float:
    """When this process started, on the ``time.perf_counter`` clock (interpreter start and imports included). On
    Linux from the process's start in clock ticks since boot and the boot-time clock (10 ms steps); psutil's
    ``create_time`` adds the boot time that ``/proc/stat`` gives in whole seconds, which put the start up to a second
    off. A process that ran something else before it became Python (``bash -c "pip install ... && thresher curate
    ..."``: the shell runs its last command in its own process) started before the interpreter did: its start is
    taken as MAX_STARTUP_S before this module's import at the earliest."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, AttributeError, ValueError, IndexError):  # not Linux
        import psutil

        age = time.time() - psutil.Process().create_time()
    return max(time.perf_counter() - age, IMPORTED - MAX_STARTUP_S)


def timing(phases: Phases, task_seconds: dict[str, float], stage_names: list[str], counts: dict, cpus: float) -> dict:
    """``manifest.timing``: ``phases`` as booked, and the tasks' seconds per stage in pipeline order (reading
    first; then each stage; then applying decisions, writing and the report's statistics)."""
    by_stage = counts["by_stage"]
    order = [READ, *stage_names]
    names = order + sorted(n for n in task_seconds if n not in order and n not in (WRITE, REPORT)) + [WRITE, REPORT]
    tasks = {}
    for name in names:
        seconds = task_seconds.get(name, 0.0)
        if name not in task_seconds and name not in order:
            continue
        entry: dict = {"seconds": round(seconds, 3)}
        rows = by_stage.get(name, {}).get("in")
        if rows is not None:
            entry.update(rows=rows, rows_per_s=round(rows / seconds) if seconds >= 0.01 else None)
        if name == READ:
            entry["mb_per_s"] = round(counts["read_bytes"] / 1e6 / seconds, 2) if seconds >= 0.01 else None
        tasks[name] = entry
    return {
        "wall_s": round(phases.wall, 3),
        "cpus": cpus,
        "phases": {name: round(s, 3) for name, s in phases.seconds.items()},
        "task_seconds": round(sum(task_seconds.values()), 3),
        "tasks": tasks,
    }
