"""What a map-phase worker pays before its records flow: the CPU seconds a fresh Ray worker process spends on the
pipeline benchmark's chain (``bench/pipeline_bench.py``'s stages) before its steady per-batch rate, in fresh
processes, each part apart.

Each round starts a fresh Python process that does what a map-phase task's worker does first: ``import ray`` (every
Ray worker's own start), unpickle the stages as the task gets them from the object store (which imports their
modules), each stage's ``setup()`` (langid loads fastText's model), then one batch of the examples' corpus through
each stage twice: the first call's CPU less the second's is what that stage pays once per process (quality: numba
loading its cached kernels). Medians over the rounds; CPU seconds of the process (``getrusage``).

    python bench/worker_start.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def stages_file(work: Path) -> Path:
    """The chain's map stages as the driver builds them, pickled as Ray puts them in the object store."""
    import ray.cloudpickle
    from pipeline_bench import STAGES

    from thresher.core.storage import Storage
    from thresher.curate.config import CurateConfig
    from thresher.curate.plan import preflight

    paths = sorted(str(p) for p in (ROOT / "examples" / "corpus").glob("web-*"))
    cfg = CurateConfig.model_validate(
        {"input": {"paths": paths}, "output": {"path": str(work / "out")}, "stages": STAGES}
    )
    tasks, spec, segs = preflight(cfg, Storage())
    path = work / "stages.pkl"
    path.write_bytes(ray.cloudpickle.dumps((tasks[0], spec, segs[0].map_stages)))
    return path


def child(path: Path) -> None:
    """One fresh worker's first steps, in CPU seconds each, printed as JSON."""
    parts: dict[str, float] = {}
    mark = cpu()

    def lap(name: str) -> None:
        nonlocal mark
        now = cpu()
        parts[name] = round(now - mark, 3)
        mark = now

    import ray  # noqa: F401  # what every Ray worker process imports before its first task

    lap("import ray")
    task, spec, stages = pickle.loads(path.read_bytes())
    lap("unpickle the stages (their modules' imports)")
    from thresher.curate.execution.segments import _set_up, run_map_stages, to_pandas
    from thresher.curate.readers import LostBytes, read_task

    lap("the map task's own modules")
    for stage in stages:
        _set_up(stage)
        lap(f"setup: {stage.name}")
    table = next(iter(read_task(task, spec, LostBytes())))
    lap("read one batch")
    for stage in stages:
        rows = [stage.batch_size or 1024]
        batch = to_pandas(table)
        start = cpu()
        list(run_map_stages(batch.copy(), [stage], rows))
        first = cpu() - start
        start = cpu()
        list(run_map_stages(batch.copy(), [stage], rows))
        parts[f"first batch less the second: {stage.name}"] = round(first - (cpu() - start), 3)
    print("RESULT " + json.dumps(parts), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/thresher-worker-start"))
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--name", default="worker_start", help="the results' file name, without .md/.json")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child)
        return
    a.work.mkdir(parents=True, exist_ok=True)
    path = stages_file(a.work)
    paths = [str(ROOT / "src"), str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}  # the GPU bundle's Ray is on it there
    rounds = []
    for _ in range(a.rounds + 1):  # the first round compiles what numba has not cached yet: left out
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path)], env=env, capture_output=True, text=True, check=True
        ).stdout
        rounds.append(json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:]))
    rounds = rounds[1:]
    medians = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    command = "python bench/worker_start.py " + " ".join(sys.argv[1:])
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    rows = "\n".join(f"| {k} | {v:.2f} | {', '.join(f'{r[k]:.2f}' for r in rounds)} |" for k, v in medians.items())
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / f"{a.name}.json").write_text(
        json.dumps({"command": command, "machine": machine, "rounds": rounds, "median": medians}, indent=1)
    )
    (a.results / f"{a.name}.md").write_text(
        "# What a map-phase worker pays before its records flow\n\n"
        f"Command: `{command.strip()}` ({machine}; each round a fresh process, {a.rounds} rounds after one left out "
        "for numba's cache). The pipeline benchmark's chain on a batch of the examples' corpus; CPU seconds of the "
        "process. What each part is: the script's docstring.\n\n"
        "| part | CPU s (median) | each round |\n|---|---:|---|\n" + rows + f"\n\nIn all: {sum(medians.values()):.2f} "
        "CPU seconds per worker process, once (a worker runs task after task of a run).\n"
    )
    print(f"wrote {a.results / a.name}.md")


if __name__ == "__main__":
    main()
