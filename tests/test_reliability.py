"""Same answer every time: determinism across runs and CPU counts, and a worker killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import yaml

from tests.conftest import run_cli
from tests.samples import c4_docs
from thresher.curate.config import parse_config
from thresher.curate.runner import run

STAGES = [{"normalize": {}}, {"pii": {}}]
DEDUP_STAGES = [{"normalize": {}}, {"dedup_exact": {}}, {"dedup_fuzzy": {}}]


def corpus(tmp_path: Path, copies: int) -> Path:
    """Real C4 documents, repeated with distinct ids, as one JSONL file (read in many byte ranges)."""
    docs = c4_docs()
    path = tmp_path / "corpus.jsonl"
    with open(path, "w") as f:
        for c in range(copies):
            for i, d in enumerate(docs):
                f.write(json.dumps({"id": f"c{c}-{i}", "text": d["text"] + f" ({c})"}) + "\n")
    return path


def config(src: Path, out: Path, stages: list = STAGES, **execution) -> dict:
    return {
        "input": {"paths": [str(src)], "block_bytes": 256 << 10},
        "output": {"path": str(out)},
        "stages": stages,
        **({"execution": execution} if execution else {}),
    }


def sorted_rows(out: Path, sub: str) -> list[dict]:
    rows = [r for f in sorted((out / sub).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: r["id"])


def test_same_output_across_runs_and_cpu_counts(ray_local, tmp_path):
    """Map stages, exact and fuzzy dedup: the same files, byte for byte, from two runs and from 1 CPU."""
    src = corpus(tmp_path, 4)
    stages = STAGES + DEDUP_STAGES[1:]
    a = run(parse_config(config(src, tmp_path / "a", stages)))
    b = run(parse_config(config(src, tmp_path / "b", stages)))
    cfg1 = tmp_path / "one-cpu.yaml"
    cfg1.write_text(yaml.safe_dump(config(src, tmp_path / "c", stages, num_cpus=1)))
    res = run_cli("curate", str(cfg1))
    assert res.returncode == 0, res.stderr[-2000:]
    c = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert c["ray"]["cpus"] == 1 and a["ray"]["cpus"] == 2
    assert a["digests"] == b["digests"] == c["digests"]
    assert a["counts"] == b["counts"] == c["counts"]
    assert a["counts"]["by_stage"]["dedup_fuzzy"]["rejected"] > 0
    assert sorted_rows(tmp_path / "a", "data") == sorted_rows(tmp_path / "c", "data")
    for run_dir in ("b", "c"):
        for sub in ("data", "rejects"):
            files = sorted((tmp_path / "a" / sub).glob("*.parquet"))
            assert files and [f.name for f in files] == sorted(
                f.name for f in (tmp_path / run_dir / sub).glob("*.parquet")
            )
            for f in files:
                assert f.read_bytes() == (tmp_path / run_dir / sub / f.name).read_bytes(), (run_dir, f.name)


def _kill_a_map_worker(stop: threading.Event, killed: list) -> None:
    """SIGKILL the first Ray worker process seen running a map-phase task (a read task's) of this test's Ray."""
    me = psutil.Process()
    while not stop.is_set() and not killed:
        for p in me.children(recursive=True):
            try:
                title = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if title.startswith("ray::read_batches"):
                os.kill(p.pid, signal.SIGKILL)
                killed.append(title)
                return
        time.sleep(0.05)


def test_a_worker_killed_mid_run_changes_nothing(ray_local, tmp_path):
    src = corpus(tmp_path, 12)
    clean = run(parse_config(config(src, tmp_path / "clean")))
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_map_worker, args=(stop, killed))
    killer.start()
    try:
        faulty = run(parse_config(config(src, tmp_path / "faulty")))
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed: the run ended before one was seen"
    assert faulty["digests"] == clean["digests"] and faulty["counts"] == clean["counts"]
    assert sorted_rows(tmp_path / "faulty", "data") == sorted_rows(tmp_path / "clean", "data")


# fragments of Ray worker process titles, one per phase (partitioned paths forced): read, map stages and staging
# with key rows (fused with the write), keep keys, hash shuffle map and reduce tasks (ids, exact groups, LSH
# buckets, connected components, joins), components steps, verification values (Bloom semi-join), removal on key
# rows (join), decisions routed back to the staged records (fused with the write), compaction
DEDUP_PHASES = (
    "read_batches",
    "with_keep_keys",
    "split_",  # grouping and joins by key (curate/execution/shuffle.py): a block cut by key
    "join_",  # the parts of a partition joined
    "large_star",
    "_node_values",
    "_mark_joined",
    "apply_batches",
    "compact",
)


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _kill_in_phases(stop: threading.Event, killed: list) -> None:
    """SIGKILL a Ray worker of this test's Ray in every phase of DEDUP_PHASES: the first process seen running a
    task whose title holds a phase's fragment (one kill covers every fragment its title holds). Some phases' tasks
    last 5-70 ms on 2 cores, so the workers' titles are read every millisecond from /proc; the list of workers (a
    scan of every process) is refreshed every 50 ms, for the workers Ray starts to replace those killed."""
    me = psutil.Process()
    todo, workers, listed = set(DEDUP_PHASES), [], 0.0
    while not stop.is_set() and todo:
        if time.monotonic() - listed > 0.05:
            workers = [p.pid for p in me.children(recursive=True) if _title(p.pid).startswith("ray::")]
            listed = time.monotonic()
        for pid in workers:
            title = _title(pid)
            hits = {f for f in todo if f in title} if title.startswith("ray::") else set()
            if hits:
                os.kill(pid, signal.SIGKILL)
                killed.append(title)
                todo -= hits
                break
        time.sleep(0.001)


def test_workers_killed_in_every_dedup_phase_change_nothing(ray_local, tmp_path):
    """Exact and fuzzy dedup on the partitioned paths with one worker SIGKILLed in each phase (read and staging,
    the split by key and the join of its parts, connected components, verification, removal, decisions applied +
    write, compaction): the run completes with the clean (broadcast) run's records and rejects. Ray retries the
    killed tasks (Ray Data map tasks without limit, plain tasks 3 times) from their inputs, and every step is
    deterministic."""
    src = corpus(tmp_path, 4)  # each C4 document 4 times with a different suffix: clusters of near duplicates
    clean = run(parse_config(config(src, tmp_path / "clean", DEDUP_STAGES)))  # broadcast paths
    assert clean["counts"]["by_stage"]["dedup_fuzzy"]["rejected"] > 500
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_in_phases, args=(stop, killed))
    killer.start()
    try:
        faulty = run(parse_config(config(src, tmp_path / "faulty", DEDUP_STAGES, broadcast_limit_rows=0)))
    finally:
        stop.set()
        killer.join()
    hit = {f for f in DEDUP_PHASES if any(f in title for title in killed)}
    assert {"split_", "join_", "apply_batches", "compact"} <= hit and len(hit) >= 6, killed
    assert faulty["digests"] == clean["digests"] and faulty["counts"] == clean["counts"]
    for sub in ("data", "rejects"):
        assert sorted_rows(tmp_path / "faulty", sub) == sorted_rows(tmp_path / "clean", sub)


def test_losing_a_worker_node_mid_run_still_completes_identically(ray_head, tmp_path):
    """A two-node cluster (head + worker on 127.0.0.1); the worker node is stopped while the run is going."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    src = corpus(tmp_path, 25)
    auth = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray_head.token}
    clean_cfg, cfg = tmp_path / "clean.yaml", tmp_path / "faulty.yaml"
    clean_cfg.write_text(yaml.safe_dump(config(src, tmp_path / "clean")))
    cfg.write_text(yaml.safe_dump(config(src, tmp_path / "faulty")))
    res = run_cli("curate", str(clean_cfg), "--address", ray_head.address, env=auth)
    assert res.returncode == 0, res.stderr[-2000:]
    worker = ray_head.procs[-1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "thresher", "curate", str(cfg), "--address", ray_head.address],
        env=auth,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stopped = False
    try:
        # stop the node once the run is under way: its first read tasks are done, most are still to come
        progress = tmp_path / "faulty" / "_progress"
        deadline = time.time() + 120
        while not list(progress.glob("read-*.json")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before the node could be stopped"
        ray_head.stop_node(worker)
        stopped = True
        out, _ = proc.communicate(timeout=600)
    finally:  # leave the shared cluster as it was: wait for the stopped node to be declared dead, add one
        if stopped:
            ray_head.wait_for_nodes(1, timeout=180)
            ray_head.add_worker()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    clean = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    faulty = json.loads((tmp_path / "faulty" / "manifest.json").read_text())
    assert faulty["digests"] == clean["digests"] and faulty["counts"] == clean["counts"]


def test_a_killed_run_resumes_without_redoing_finished_work_and_configs_never_mix(ray_local, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    src = corpus(tmp_path, 12)
    clean = run(parse_config(config(src, tmp_path / "clean")))
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config(src, out, num_cpus=1)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "thresher", "curate", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while len(list((out / "_progress").glob("write-*.json"))) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its embedded Ray die mid-run
    proc.wait()
    assert not (out / "manifest.json").exists()
    # markers cut short, as a crash in the middle of writing one in place leaves them: their tasks are redone
    write_markers = sorted((out / "_progress").glob("write-s0-*.json"))
    write_markers[0].write_text(write_markers[0].read_text()[:7])
    read_markers = sorted((out / "_progress").glob("read-*.json"))
    read_markers[-1].write_text("")

    resumed = run(parse_config(config(src, out)))
    reused = resumed["resumed"]["reused_read_tasks"]
    assert 2 <= reused <= min(len(write_markers), len(read_markers)) - 1
    assert resumed["digests"] == clean["digests"] and resumed["counts"] == clean["counts"]
    assert sorted_rows(out, "data") == sorted_rows(tmp_path / "clean", "data")
    assert not (out / "_progress").exists()

    # another config into the same output: nothing is reused, nothing of the old output remains
    other = config(src, out)
    other["stages"] = [{"pii": {"mode": "mask"}}]
    changed = run(parse_config(other))
    assert changed["resumed"]["reused_read_tasks"] == 0
    on_disk = sorted(str(p) for p in out.rglob("*.parquet"))
    assert on_disk == sorted(changed["files"])
