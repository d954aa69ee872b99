"""Time to a training run's first step on the embedded Ray: thresher's environment for it (``EMBEDDED_ENV``: no
preemption watcher, one Parquet footer reader) against Ray's defaults for a cluster, alternated in fresh processes.

Each process starts a local Ray as thresher does and runs ``thresher.train.main`` twice (LoRA on a tiny random
Llama, 4 steps, evaluation every 2, one worker): the first run pays the imports of the driver, the second is what
a later run in the same Ray pays. Figures: ``startup_seconds`` of the metrics (seconds from the call) and the wall
time of the call.

    python bench/train_startup.py --rounds 3
    python bench/train_startup.py --rounds 3 --embedded-only --src ../other-checkout/src --results DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RAYS_DEFAULTS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1", "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "32"}
SETTINGS = {"Ray's defaults": RAYS_DEFAULTS, "thresher's embedded Ray": {}}


def child(work: Path) -> None:
    """Two training runs on a local Ray started as thresher starts its embedded one; their figures as JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from testkit.ray_cluster import start_local_ray
    from testkit.tiny_llama import build_tiny_llama
    from tests.samples import gsm8k

    records = gsm8k(24)
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in records]
    if not (work / "tiny").exists():
        for name, rows in (("train", texts[:16]), ("validation", texts[16:])):
            (work / name).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"text": rows}), work / name / "part-0.parquet")
        build_tiny_llama(work / "tiny", texts)
    start_local_ray(num_cpus=2)
    from thresher import train

    runs = []
    for i in range(2):
        cfg = {
            "model": {"name_or_path": str(work / "tiny")},
            "data": {"train": str(work / "train"), "validation": str(work / "validation"), "max_seq_len": 128},
            "method": "lora",
            "scaling": {"num_workers": 1},
            "optim": {"max_steps": 4, "batch_size": 4},
            "eval": {"every_steps": 2},
            "checkpoint": {"every_steps": 4, "keep": 1},
            "output": {"path": str(work / f"out-{os.getpid()}-{i}")},
        }
        started = time.perf_counter()
        metrics = train.main(cfg)
        runs.append({"wall_s": round(time.perf_counter() - started, 2), **metrics["startup_seconds"]})
    print("SOURCE " + str(Path(train.__file__).resolve().parents[1]), flush=True)
    print("RESULT " + json.dumps(runs), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/thresher-train-startup"))
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--embedded-only", action="store_true", help="only thresher's embedded Ray (to compare checkouts)")
    ap.add_argument("--src", type=Path, help="the thresher source folder the runs import (default: the installed one)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.work)
        return
    a.work.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in SETTINGS.items() if k != "Ray's defaults" or not a.embedded_only}
    path = os.pathsep.join([*([str(a.src.resolve())] if a.src else []), str(ROOT)])
    found: dict[str, list[list[dict]]] = {name: [] for name in settings}
    for _ in range(a.rounds):
        for name, env in settings.items():
            clean = {k: v for k, v in os.environ.items() if k not in RAYS_DEFAULTS}
            out = subprocess.run(
                [sys.executable, __file__, "--child", "--work", str(a.work)],
                env={**clean, **env, "PYTHONPATH": path},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            found[name].append(json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:]))
            source = os.path.relpath(next(x for x in out.splitlines() if x.startswith("SOURCE "))[7:], ROOT)
            print(name, found[name][-1], flush=True)
    command = "python bench/train_startup.py " + " ".join(sys.argv[1:])
    rows = []
    for name, rounds in found.items():
        for i, which in enumerate(("first run in the process", "second run, same Ray")):
            runs = [r[i] for r in rounds]

            def median(key: str) -> float:
                return statistics.median(r[key] for r in runs)

            rows.append(
                f"| {name} | {which} | {median('worker_started'):.1f} | {median('model_loaded'):.1f} | "
                f"{median('first_batch'):.1f} | {median('first_step'):.1f} | {median('wall_s'):.1f} | "
                + ", ".join(f"{r['first_step']:.1f}" for r in runs)
                + " |"
            )
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / "train_startup.json").write_text(
        json.dumps({"command": command, "thresher": source, "runs": found}, indent=1)
    )
    (a.results / "train_startup.md").write_text(
        "# Time to the first training step on the embedded Ray\n\n"
        f"Command: `{command}` on {os.cpu_count()} cores; {a.rounds} rounds, the settings alternated, each in a fresh "
        "process that starts a local Ray of 2 CPUs and runs `thresher.train.main` twice (LoRA on a tiny random "
        "Llama, 4 steps of 4 rows x 128 tokens, evaluation every 2 steps, one worker). Seconds from the call "
        "(`startup_seconds`), medians over the rounds. Ray's defaults: `RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1`, "
        "`RAY_DATA_PARQUET_FOOTER_NUM_ACTORS=32`; thresher's embedded Ray sets 0 and 1 (`thresher.runtime."
        "EMBEDDED_ENV`). A plain PyTorch loop on the same model reaches its first step in about 0.7 s "
        "(`train_overhead.md`).\n\n"
        "| environment | run | worker started | model loaded | first batch | first step | wall of the call | "
        "first step, each round |\n|---|---|---:|---:|---:|---:|---:|---|\n" + "\n".join(rows) + "\n"
    )
    print(f"wrote {a.results / 'train_startup.md'}")


if __name__ == "__main__":
    main()
