"""Scale benchmark: the same corpus read as 64, 512 and 4,096 read tasks with the partitioned paths forced.

For each corpus size and read-task count N, ``thresher curate`` (a subprocess: the venv's ``thresher``, an
embedded local Ray) runs ``dedup_exact``, ``dedup_fuzzy {threshold: 0.8}`` and ``split {}`` over the dedup
benchmark's generated JSONL corpus (``bench/dedup_corpus.py``, 32 MB shards; reused from ``bench/dedup_bench.py``'s
work folder when it is there), with ``--set input.block_bytes=B`` (uncompressed JSONL is read in byte ranges of
``block_bytes``: B is the smallest size that plans at most N read tasks) and ``--set
execution.broadcast_limit_rows=0`` (no key table goes to every task: every global decision takes its
partitioned path). ``output.target_file_mb`` keeps its default.

    python bench/scale_bench.py                                  # 1000 MB as 64, 512 and 4096 read tasks
    python bench/scale_bench.py --sizes-mb 20 --tasks 8 64 --work /tmp/scale-small --results /tmp/scale-small

Measured, sampling every 0.25 s: wall time; the driver's peak RSS (the ``thresher`` process itself); the peak
over samples of the summed PSS of the whole process tree (driver, Ray's processes and workers; as
``bench/dedup_bench.py``'s ``measure``: a page shared by k processes counts 1/k in each) and the tree's CPU time;
the most files seen at once under the output's ``_progress/`` and ``_staging/`` (the run's markers and staged
parts, removed at commit) and of ``_progress/read-*.json`` (one per read task done). After the run: the files
under ``data/`` and ``rejects/`` and the manifest's counts. Each run is saved as JSON under ``--work`` and reused
by later invocations when it succeeded (``--fresh`` measures again); ``--results`` gets ``scale.md`` and
``scale.json`` from the saved runs of the requested sizes and task counts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from corpus import sample_tree  # noqa: E402
from dedup_corpus import generate  # noqa: E402

STAGES = [{"dedup_exact": {}}, {"dedup_fuzzy": {"threshold": 0.8}}, {"split": {}}]
DEDUP_BENCH_WORK = Path("/tmp/thresher-dedup-bench")  # bench/dedup_bench.py's default --work


def corpus_for(work: Path, mb: int) -> Path:
    """The dedup benchmark's corpus of ``mb`` MB: its copy when present, else generated under ``work`` (same
    seed and shards, so the same bytes)."""
    for folder in (DEDUP_BENCH_WORK / f"corpus{mb}", work / f"corpus{mb}"):
        if (folder / "truth.jsonl").exists():
            return folder
    corpus = work / f"corpus{mb}"
    shutil.rmtree(corpus, ignore_errors=True)
    print(f"generating {mb} MB under {corpus} ...", flush=True)
    generate(mb, corpus, seed=0)
    return corpus


def read_tasks(sizes: list[int], block_bytes: int) -> int:
    """Read tasks thresher plans for uncompressed JSONL files of ``sizes`` (``thresher.curate.readers.plan``)."""
    return sum(-(-s // block_bytes) if s > block_bytes else 1 for s in sizes)


def block_bytes_for(sizes: list[int], tasks: int) -> int:
    """The smallest block size that plans at most ``tasks`` read tasks."""
    lo, hi = 1, max(sizes)
    while lo < hi:
        mid = (lo + hi) // 2
        if read_tasks(sizes, mid) <= tasks:
            hi = mid
        else:
            lo = mid + 1
    return lo


def count_files(folder: Path, prefix: str = "") -> tuple[int, int]:
    """Files under ``folder`` (0 while it does not exist), and of them those named ``prefix...``."""
    n = named = 0
    for _, _, files in os.walk(folder):
        n += len(files)
        named += sum(f.startswith(prefix) for f in files) if prefix else 0
    return n, named


def measure(cmd: list[str], log: Path, out: Path, timeout: float, env: dict) -> dict:
    """Run ``cmd``, sampling its process tree and ``out`` every 0.25 s (see the module docstring)."""
    peak = dict.fromkeys(("pss", "rss", "driver_rss", "progress", "staging", "read_markers"), 0)
    cpu: dict[int, float] = {}
    t = time.perf_counter()
    status = "ok"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            sample = sample_tree(root, cpu)
            if sample is None:
                break
            peak["pss"], peak["rss"] = max(peak["pss"], sample[0]), max(peak["rss"], sample[1])
            peak["driver_rss"] = max(peak["driver_rss"], sample[2])
            progress, read_markers = count_files(out / "_progress", "read-")
            peak["progress"] = max(peak["progress"], progress)
            peak["read_markers"] = max(peak["read_markers"], read_markers)
            peak["staging"] = max(peak["staging"], count_files(out / "_staging")[0])
            if time.perf_counter() - t > timeout:
                status = f"timed out after {timeout:.0f} s"
                for p in reversed([root, *root.children(recursive=True)]):  # children first
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                proc.wait()
                break
            time.sleep(0.25)
    wall = time.perf_counter() - t
    if status == "ok" and proc.returncode:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        status = f"failed (exit {proc.returncode}): {tail[0][:300]}"
    return {
        "status": status,
        "pid": proc.pid,
        "wall_s": round(wall, 2),
        "driver_peak_rss_mb": round(peak["driver_rss"] / 2**20),
        "tree_peak_pss_mb": round(peak["pss"] / 2**20),
        "tree_peak_rss_sum_mb": round(peak["rss"] / 2**20),
        "cpu_s": round(sum(cpu.values()), 1),
        "max_progress_files": peak["progress"],
        "max_read_markers": peak["read_markers"],
        "max_staging_files": peak["staging"],
    }


def run(
    corpus: Path,
    work: Path,
    mb: int,
    tasks: int,
    thresher: str,
    broadcast_limit: str,
    cpus: int | None,
    timeout: float,
    keep: bool,
) -> dict:
    files = sorted(corpus.glob("part-*.jsonl"))
    sizes = [f.stat().st_size for f in files]
    block = block_bytes_for(sizes, tasks)
    out = work / f"out-{mb}-{tasks}"
    shutil.rmtree(out, ignore_errors=True)  # a run folder left there would be resumed
    cfg = work / f"scale-{mb}-{tasks}.yaml"
    execution = {"num_cpus": cpus} if cpus else {}
    cfg.write_text(
        yaml.safe_dump(
            {
                "input": {"paths": [str(f) for f in files]},
                "output": {"path": str(out)},
                "stages": STAGES,
                **({"execution": execution} if execution else {}),
            },
            sort_keys=False,
        )
    )
    cmd = [*shlex.split(thresher), "curate", str(cfg), "--set", f"input.block_bytes={block}"]
    if broadcast_limit.lower() != "none":
        cmd += ["--set", f"execution.broadcast_limit_rows={broadcast_limit}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # an embedded local Ray, as a user's laptop
    result = {
        "mb": mb,
        "tasks_requested": tasks,
        "read_tasks_planned": read_tasks(sizes, block),
        "block_bytes": block,
        "corpus": str(corpus),
        "corpus_files": len(files),
        "corpus_bytes": sum(sizes),
        "config": yaml.safe_load(cfg.read_text()),
        "command": shlex.join(cmd),
        "thresher_version": version(),
    }
    print(f"running {result['command']} ...", flush=True)
    result.update(measure(cmd, work / f"scale-{mb}-{tasks}.log", out, timeout, env))
    result["spilled_mib"] = spilled_mib(result["pid"])
    result["data_files"] = count_files(out / "data")[0]
    result["rejects_files"] = count_files(out / "rejects")[0]
    result["left_in_progress"] = count_files(out / "_progress")[0]
    result["left_in_staging"] = count_files(out / "_staging")[0]
    manifest = out / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        result["manifest_seconds"] = m.get("seconds")
        result["counts"] = m.get("counts")
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


def spilled_mib(driver_pid: int) -> int:
    """What the run's embedded Ray spilled to disk over the run: the largest "Spilled N MiB" (a running total) its
    raylet logged. The run's session folder is the one named after the driver's pid (``session_latest`` may be
    another Ray's by the time the run ends)."""
    found = []
    for log in Path("/tmp/ray").glob(f"session_*_{driver_pid}/logs/raylet.out"):
        found += re.findall(r"Spilled (\d+) MiB", log.read_text(errors="replace"))
    return max(map(int, found), default=0)


def version() -> str | None:
    """The commit of the thresher checkout the bench runs from (``-dirty``: with uncommitted changes)."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def fmt(x, spec: str = ",") -> str:
    return "-" if x is None else format(x, spec)


def markdown(runs: list[dict], command: str, broadcast_limit: str) -> str:
    versions = ", ".join(sorted({str(r.get("thresher_version")) for r in runs}))
    memory = psutil.virtual_memory().total / 2**30
    forced = (
        f"`--set execution.broadcast_limit_rows={broadcast_limit}`"
        + (" (every global decision takes its partitioned path)" if broadcast_limit == "0" else "")
        if broadcast_limit.lower() != "none"
        else "`execution.broadcast_limit_rows` left at its default"
    )
    lines = [
        "# Scale benchmark: one corpus read as more and more read tasks",
        "",
        f"Command: `{command}`. Machine: {os.cpu_count()} cores, {memory:.0f} GB RAM. "
        "Each run: `thresher curate` with `dedup_exact`, `dedup_fuzzy {threshold: 0.8}`, `split {}` on the dedup "
        "benchmark's generated JSONL corpus (`bench/dedup_corpus.py`, 32 MB shards), `--set input.block_bytes=B` "
        f"(the smallest B that plans at most the requested read tasks), {forced}, thresher {versions}, an "
        "embedded local Ray, default `output.target_file_mb`. Sampled every 0.25 s: driver peak RSS (the "
        "`thresher` process), peak PSS summed over the process tree (driver, Ray's processes and workers), the tree's CPU "
        "time, the most files seen at once under the output's `_progress/` (of them `read-*.json`, one per read "
        "task done) and `_staging/` (removed at commit). Spilled: the largest `Spilled N MiB` the raylet logged. Files: "
        "those under `data/` and `rejects/` after the run.",
        "",
        "| corpus | read tasks (planned) | block_bytes | status | wall s | run s (manifest) | driver peak RSS MB | "
        "tree peak PSS MB | CPU s | spilled MiB | max `_progress` files (`read-*`) | max `_staging` files | "
        "data files | rejects files | input | output | rejected | load avg |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        c = r.get("counts") or {}
        lines.append(
            f"| {r['mb']} MB | {r['read_tasks_planned']:,} | {r['block_bytes']:,} | {r['status'].replace('|', '/')} | "
            f"{r['wall_s']} | {fmt(r.get('manifest_seconds'), '')} | {r['driver_peak_rss_mb']:,} | {r['tree_peak_pss_mb']:,} | "
            f"{r['cpu_s']} | {fmt(r.get('spilled_mib'))} | {r['max_progress_files']:,} ({r['max_read_markers']:,}) | {r['max_staging_files']:,} | "
            f"{r['data_files']:,} | {r['rejects_files']:,} | {fmt(c.get('input'))} | {fmt(c.get('output'))} | "
            f"{fmt(c.get('rejected'))} | {r['load_average']} |"
        )
    lines += ["", "thresher commands:", ""] + [f"- `{r['command']}`" for r in runs]
    by_stage = [(r, (r.get("counts") or {}).get("by_stage")) for r in runs]
    if any(s for _, s in by_stage):
        lines += ["", "Rejected per stage:", ""]
        lines += [
            f"- {r['mb']} MB, {r['read_tasks_planned']:,} read tasks: { {k: v.get('rejected') for k, v in s.items()} }"
            for r, s in by_stage
            if s
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=[1000])
    ap.add_argument("--tasks", type=int, nargs="+", default=[64, 512, 4096])
    ap.add_argument("--work", type=Path, default=Path("/tmp/scale-bench"))
    ap.add_argument("--results", type=Path, default=ROOT / "bench/results", help="where NAME.md and NAME.json go")
    ap.add_argument("--name", default="scale", help="the results' file name (e.g. large for a 10 GB run)")
    ap.add_argument("--thresher", default=str(ROOT / ".venv/bin/thresher"), help="the thresher command")
    ap.add_argument(
        "--broadcast-limit-rows",
        default="0",
        help="execution.broadcast_limit_rows of every run ('none': leave the config key out)",
    )
    ap.add_argument("--cpus", type=int, default=None, help="execution.num_cpus (default: all)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds before a run is stopped")
    ap.add_argument("--fresh", action="store_true", help="measure again what --work already holds")
    ap.add_argument("--keep", action="store_true", help="keep the output folders under --work")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "bench/scale_bench.py", *sys.argv[1:]])
    runs = []
    for mb in a.sizes_mb:
        for tasks in a.tasks:
            saved = a.work / f"scale-{mb}-{tasks}.json"
            if saved.exists() and not a.fresh and json.loads(saved.read_text())["status"] == "ok":
                runs.append(json.loads(saved.read_text()))
                continue
            r = run(
                corpus_for(a.work, mb), a.work, mb, tasks, a.thresher, a.broadcast_limit_rows, a.cpus, a.timeout, a.keep
            )
            r["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            r["load_average"] = [round(x, 1) for x in os.getloadavg()]
            saved.write_text(json.dumps(r, indent=1))
            print(json.dumps({k: v for k, v in r.items() if k != "config"}), flush=True)
            runs.append(r)
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / f"{a.name}.json").write_text(json.dumps({"command": command, "runs": runs}, indent=1))
    (a.results / f"{a.name}.md").write_text(markdown(runs, command, a.broadcast_limit_rows))
    print(markdown(runs, command, a.broadcast_limit_rows))
    print(f"wrote {a.results / (a.name + '.md')} and {a.results / (a.name + '.json')}")


if __name__ == "__main__":
    main()
