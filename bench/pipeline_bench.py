"""Pipeline benchmark: the whole curation chain, per stage and per CPU count, from the manifests' ``timing``.

A 200 MB corpus of real web text (``bench/corpus.py``: C4, Common Crawl, Wikipedia from ``THRESHER_SHARED``), in
16 gzip shards, through normalize, pii, langid (keep en), quality (gopher, c4, fineweb), dedup_exact,
dedup_fuzzy and split, by ``thresher curate`` (a subprocess: the venv's ``thresher``) on an embedded local Ray of
N CPUs (``--set execution.num_cpus=N``), and on two Ray nodes of one CPU each (``ray start --head`` and a worker
node on loopback, ``--address``) against one node of two. For each run: the wall time seen from outside (Ray's
start and stop included), the manifest's phases and per-stage task seconds, and documents per second per CPU in
the map phase; for the embedded runs, the CPU seconds of every process of the run (the driver, Ray's workers,
raylet, GCS and the other Ray processes), sampled every 0.2 s.

    python bench/pipeline_bench.py                       # 1 and 2 CPUs, and 2 nodes x 1 CPU
    python bench/pipeline_bench.py --baseline /tmp/old    # the same with an earlier checkout's source first
    python bench/pipeline_bench.py --cpus 1 2 4 8 16 --nodes 2x8 --name pipeline-16core   # on a 16-core machine
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from corpus import generate  # noqa: E402

from testkit.ray_cluster import RayHead  # noqa: E402

STAGES = [
    {"normalize": {}},
    {"pii": {}},
    {"langid": {"keep": ["en"]}},
    {"quality": {"presets": ["gopher", "c4", "fineweb"]}},
    {"dedup_exact": {}},
    {"dedup_fuzzy": {}},
    {"split": {}},
]
MAP_PHASE = "read and map stages"


def corpus(work: Path, mb: int, shards: int, distinct: bool = False) -> Path:
    """``mb`` MB of JSONL in about ``shards`` gzip files under ``work`` (made once): ``bench/corpus.py``'s cycled
    documents, or with ``distinct`` ``bench/dedup_corpus.py``'s (distinct documents mixed from real sentences, about
    15 % of them with planted exact and near copies: what dedup keeps grows with the corpus)."""
    out = work / f"{'distinct' if distinct else 'corpus'}{mb}"
    if (out / "done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    plain = work / f"plain{mb}"
    shutil.rmtree(plain, ignore_errors=True)
    if distinct:
        from dedup_corpus import generate as generate_distinct

        generate_distinct(mb, plain, shard_mb=mb / shards)
    else:
        generate(mb, plain, shard_mb=mb / shards)
    out.mkdir(parents=True)
    parts = sorted(plain.glob("part-*.jsonl"))
    with ProcessPoolExecutor() as pool:  # one shard per core: 1 GB in seconds on 16 cores
        list(pool.map(gzip_file, parts, [out] * len(parts)))
    shutil.rmtree(plain)
    (out / "done").write_text("")
    return out


def gzip_file(f: Path, out: Path) -> None:
    with open(f, "rb") as src, gzip.open(out / (f.name + ".gz"), "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)


def thresher() -> list[str]:
    """The command line of ``thresher`` in this interpreter (a machine with the bundle on PYTHONPATH has no script)."""
    return [sys.executable, "-m", "thresher"]


def process_kind(p: psutil.Process, driver: int) -> str:
    if p.pid == driver:
        return "driver (thresher curate)"
    name, cmdline = p.name(), " ".join(p.cmdline())
    if "raylet" in name:
        return "raylet"
    if "gcs_server" in name:
        return "gcs_server"
    if cmdline.startswith("ray::") or "default_worker.py" in cmdline:
        return "Ray workers (tasks, actors, idle)"
    return "other Ray processes"


class ProcessSampler:
    """CPU seconds (user + system) and peak resident memory of a process and its descendants by kind, sampled every
    ``every_s``: a process counts with its last sample, so one that ends loses at most ``every_s`` of CPU; the peak
    of a kind is the largest sum of its processes' RSS in one sample."""

    def __init__(self, pid: int, every_s: float = 0.2):
        self.pid, self.every_s, self.last = pid, every_s, {}
        self.peak_rss: dict[str, float] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            rss: dict[str, float] = {}
            for p in procs:
                try:
                    kind, t = process_kind(p, self.pid), p.cpu_times()
                    self.last[p.pid] = (kind, t.user + t.system)
                    rss[kind] = rss.get(kind, 0) + p.memory_info().rss / 1e6
                except psutil.Error:
                    pass
            for kind, mb in rss.items():
                self.peak_rss[kind] = round(max(self.peak_rss.get(kind, 0), mb))

    def stop(self) -> dict[str, float]:
        self.stopped.set()
        self.thread.join()
        out: dict[str, float] = {}
        for kind, seconds in self.last.values():
            out[kind] = round(out.get(kind, 0) + seconds, 2)
        return out


def curate(cfg: Path, out: Path, extra: list[str], log: Path, env: dict | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*thresher(), "curate", str(cfg), "--output", str(out), *extra]
    started = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        sampler = ProcessSampler(proc.pid)
        rc = proc.wait()
        process_cpu = sampler.stop()
    wall = time.perf_counter() - started
    if rc:
        raise SystemExit(f"{shlex.join(cmd)} failed ({rc}); see {log}")
    manifest = json.loads((out / "manifest.json").read_text())
    timing = manifest.get("timing")  # absent before thresher kept it (a --baseline run)
    docs = manifest["counts"]["input"]
    result = {
        "command": shlex.join(cmd).replace(str(ROOT) + "/", ""),
        "wall_s": round(wall, 2),
        "docs": docs,
        "counts": manifest["counts"],
        "digests": manifest["digests"],
        "load_average": list(os.getloadavg()),
        "cpus": manifest["ray"]["cpus"],
        "phases": {},
        "tasks": {},
        "map_docs_per_s_per_cpu": None,
        "process_cpu_s": process_cpu,
        "peak_rss_mb": sampler.peak_rss,
    }
    if timing:
        result.update(
            manifest_wall_s=timing["wall_s"],
            phases=timing["phases"],
            tasks=timing["tasks"],
            map_docs_per_s_per_cpu=round(docs / timing["phases"][MAP_PHASE] / timing["cpus"], 1),
        )
    return result


def two_nodes(cfg: Path, work: Path, cpus_each: int) -> dict:
    """The run on a Ray head and one worker node on loopback, ``cpus_each`` CPUs each (``ray start``, the tests'
    cluster: ``testkit.ray_cluster``)."""
    head = RayHead(work / f"cluster-2x{cpus_each}")
    shutil.rmtree(head.tmp, ignore_errors=True)
    head.tmp.mkdir(parents=True)
    head.start_head(num_cpus=cpus_each, dashboard=False)  # the run needs none; the GPU bundle's Ray has none
    try:
        head.add_worker(num_cpus=cpus_each)
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": head.token}
        return curate(
            cfg, work / f"out-2x{cpus_each}", ["--address", head.address], work / f"run-2x{cpus_each}.log", env
        )
    finally:
        head.stop()


def markdown(runs: list[dict], mb: int, shards: int, command: str, distinct: bool, cores: int | None = None) -> str:
    """The tables of one run set; ``cores``: the machine's (default: this one's)."""
    first = runs[0]
    lines = [
        "# Pipeline benchmark: the whole chain, per stage and per CPU count",
        "",
        f"Command: `{command}`. Corpus: {mb} MB of real web text ("
        + (
            "`bench/dedup_corpus.py`: distinct documents mixed from real sentences, some with planted copies"
            if distinct
            else "`bench/corpus.py`: real documents cycled"
        )
        + f"), {first['docs']:,} documents in "
        f"{shards} gzip shards. Stages: {', '.join(next(iter(s)) for s in STAGES)} (langid keeps en; quality: gopher, "
        f"c4, fineweb). Machine: {cores or os.cpu_count()} cores. Wall: `thresher curate` seen from outside (interpreter, "
        "Ray's start and stop included); the phases and task seconds are the manifest's `timing`. Each checkout first curates one shard once, unmeasured (its numba kernels compile "
        "then and are cached on disk). Speed-ups and "
        "identical output (equal digests of every output folder) are against the first run of the same checkout.",
        "",
        "| run | wall s | map phase s | decide + apply + write s | Ray start s | map docs/s per CPU | speed-up (wall) "
        "| speed-up (map) | identical output | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]

    def version(r: dict) -> bool:
        return r["name"].startswith("before:")

    for r in runs:
        base = next(b for b in runs if version(b) == version(r))  # the same checkout's first run
        p = r["phases"]
        rest = sum(v for k, v in p.items() if k.startswith(("decide", "apply", "merge", "write")))
        cells = (
            [
                f"{p[MAP_PHASE]:.1f}",
                f"{rest:.1f}",
                f"{p.get('ray start', 0):.1f}",
                f"{r['map_docs_per_s_per_cpu']:,.0f}",
            ]
            if p
            else ["-"] * 4
        )
        lines.append(
            f"| {r['name']} | {r['wall_s']:.1f} | {' | '.join(cells)} | x{base['wall_s'] / r['wall_s']:.2f} "
            f"| {f'x{base_map / p[MAP_PHASE]:.2f}' if p and (base_map := base['phases'][MAP_PHASE]) else '-'} "
            f"| {r['digests'] == base['digests']} | {', '.join(f'{x:.1f}' for x in r['load_average'])} |"
        )
    timed = [r for r in runs if r["tasks"]]
    lines += [
        "",
        "## Task seconds per stage (summed over tasks)",
        "",
        "| stage | " + " | ".join(r["name"] for r in timed) + " |",
        "|---|" + "---:|" * len(timed),
    ]
    runs, first = timed, timed[0]
    for stage in first["tasks"]:
        cells = []
        for r in runs:
            t = r["tasks"].get(stage, {})
            rate = f" ({t['rows_per_s']:,} rows/s)" if t.get("rows_per_s") else ""
            cells.append(f"{t.get('seconds', 0):.2f}{rate}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Phases (wall seconds, back to back)",
        "",
        "| phase | " + " | ".join(r["name"] for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for phase in first["phases"]:
        lines.append(f"| {phase} | " + " | ".join(f"{r['phases'].get(phase, 0):.2f}" for r in runs) + " |")
    sampled = [r for r in runs if r.get("process_cpu_s") and "--address" not in r["command"]]
    if sampled:
        kinds = list(dict.fromkeys(k for r in sampled for k in r["process_cpu_s"]))

        def per_process(title: str, cell) -> list[str]:
            head = ["", title, "", "| process | " + " | ".join(r["name"] for r in sampled) + " |"]
            return (
                head
                + ["|---|" + "---:|" * len(sampled)]
                + [f"| {kind} | " + " | ".join(cell(r, kind) for r in sampled) + " |" for kind in kinds]
            )

        lines += per_process(
            "## CPU seconds by process (sampled every 0.2 s; embedded runs)",
            lambda r, kind: f"{r['process_cpu_s'].get(kind, 0):.1f}",
        )
        lines.append("| all | " + " | ".join(f"{sum(r['process_cpu_s'].values()):.1f}" for r in sampled) + " |")
        lines.append(
            "| of which in the tasks' stages, reader and writer (task seconds) | "
            + " | ".join(f"{sum(t.get('seconds', 0) for t in r['tasks'].values()):.1f}" for r in sampled)
            + " |"
        )
        lines.append("| wall x CPUs | " + " | ".join(f"{r['wall_s'] * r['cpus']:.1f}" for r in sampled) + " |")
        lines += per_process(
            "## Peak resident memory by process kind (MB; the largest sum over a kind's processes in one sample)",
            lambda r, kind: f"{r.get('peak_rss_mb', {}).get(kind, 0):,}",
        )
    lines += ["", "Commands:", ""] + [f"- {r['name']}: `{r['command']}`" for r in runs]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--distinct", action="store_true", help="bench/dedup_corpus.py's distinct documents")
    ap.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--nodes", nargs="*", default=["2x1"], help="NODESxCPUS runs on ray start nodes (2 nodes only)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/thresher-pipeline-bench"))
    ap.add_argument("--name", default="pipeline")
    ap.add_argument("--baseline", help="a checkout of an earlier thresher: its runs first, labelled before")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE in the runs' config (input.block_bytes=N)")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    data = corpus(a.work, a.mb, a.shards, a.distinct)

    def config(paths: list[str]) -> str:
        doc = {"input": {"paths": paths}, "output": {"path": "unused"}, "stages": STAGES}
        for setting in a.set:
            key, value = setting.split("=", 1)
            *parents, last = key.split(".")
            node = doc
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = yaml.safe_load(value)
        return yaml.safe_dump(doc)

    cfg = a.work / "pipeline.yaml"
    cfg.write_text(config([str(data / "*.jsonl.gz")]))
    warm = a.work / "warmup.yaml"  # one shard, once per checkout: its numba kernels compile (cached on disk) here
    warm.write_text(config([str(sorted(data.glob("*.jsonl.gz"))[0])]))
    runs: list[dict] = []
    command = "python bench/pipeline_bench.py " + shlex.join(sys.argv[1:])
    a.results.mkdir(parents=True, exist_ok=True)

    def save(r: dict) -> None:  # after every run: a run stopped by a time limit keeps what it measured
        runs.append(r)
        files = len(list(data.glob("*.jsonl.gz")))
        (a.results / f"{a.name}.json").write_text(
            json.dumps({"command": command, "cores": os.cpu_count(), "files": files, "runs": runs}, indent=1)
        )
        (a.results / f"{a.name}.md").write_text(
            markdown(runs, a.mb, len(list(data.glob("*.jsonl.gz"))), command.strip(), a.distinct)
        )

    if a.baseline:
        curate(
            warm,
            a.work / "warm-base",
            [],
            a.work / "warm-base.log",
            {**os.environ, "PYTHONPATH": f"{a.baseline}/src:{a.baseline}"},
        )  # the same runs with another checkout's source first (its manifests may lack the timing)
        env = {**os.environ, "PYTHONPATH": f"{a.baseline}/src:{a.baseline}"}
        for n in a.cpus:
            print(f"baseline, {n} CPU(s) ...", flush=True)
            r = curate(cfg, a.work / f"base-{n}", ["--set", f"execution.num_cpus={n}"], a.work / f"base-{n}.log", env)
            save({"name": f"before: 1 node, {n} CPU{'s' if n > 1 else ''}", **r})
    curate(warm, a.work / "warm", [], a.work / "warm.log")
    for n in a.cpus:
        print(f"{n} CPU(s) ...", flush=True)
        r = curate(cfg, a.work / f"out-{n}", ["--set", f"execution.num_cpus={n}"], a.work / f"run-{n}.log")
        save({"name": f"1 node, {n} CPU{'s' if n > 1 else ''}", **r})
    for spec in a.nodes:
        nodes, each = (int(x) for x in spec.split("x"))
        if nodes != 2:
            raise SystemExit("--nodes: only 2 nodes are supported")
        print(f"2 nodes x {each} CPU(s) ...", flush=True)
        r = two_nodes(cfg, a.work, each)
        save({"name": f"2 nodes x {each} CPU{'s' if each > 1 else ''}", **r})
    print(f"wrote {a.results / a.name}.md")


if __name__ == "__main__":
    main()
