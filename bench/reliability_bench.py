"""Fault campaign: randomized trials of each fault class against curation and training runs, and a soak of quickstarts
beside a CPU-bound load; every outcome compared with a clean run.

Classes (issue 51): a Ray worker SIGKILLed at a random moment; a worker node of a two-node token-auth cluster (``ray
start`` on 127.0.0.1) stopped after a random number of read tasks; S3 connections reset mid-object, or stalled
past the client's timeout (moto's server behind a relay), a random number of times at a random byte; a corrupt file
(a gzip shard cut at a random byte, or a Parquet page of a random row group damaged); a disk that fills (the output
on a tmpfs with a random part of the room the run needs; the re-run after room is made must complete); the driver
and its embedded Ray SIGKILLed after a random number of written parts, then the run resumed; a Ray Train worker
SIGKILLed after a random registered checkpoint on a two-node cluster; the checkpoint storage (S3) gone for a few
seconds once, at a random checkpoint; 20 back-to-back quickstarts beside three CPU-bound processes. Extra classes
keep the earlier matrix's faults (dedup phases, cut markers, a killed re-run, S3 gone for good, a late field, files
that disagree with the counts). Each trial's random point comes from ``--seed``, the class and the trial number.

A curation trial passes when the run completes with the clean run's counts and output digests (no record lost,
added or changed), or, for the faults that must fail or reject, as each function's docstring says; a training trial
when the run ends at its last step with one loss per step. "records lost": kept records the clean run has and the
trial's output lacks (a run that must fail: records published by it). Writes bench/results/reliability.md and .json
(every trial: seed point, outcome, seconds) after every trial; ``--classes`` runs some classes and keeps the other
rows of the JSON (``--trials 0``: writes the table of the JSON again).

    python bench/reliability_bench.py                      # 20 trials per class
    python bench/reliability_bench.py --trials 1 --classes worker-sigkill corrupt-file
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from testkit.links import FlakyLink  # noqa: E402
from testkit.ray_cluster import RayHead  # noqa: E402  (the same two-node cluster the tests use)

sys.path.insert(0, str(ROOT / "bench"))
from corpus import generate  # noqa: E402

STAGES = [{"normalize": {}}, {"pii": {}}]
Trial = tuple[bool, str, int | None]  # passed, what happened, records lost
DEDUP_STAGES = [{"normalize": {}}, {"dedup_exact": {}}, {"dedup_fuzzy": {}}]
# Ray worker process title fragments, one per dedup phase (as tests/test_reliability.py)
DEDUP_PHASES = (
    "read_batches",
    "with_keep_keys",
    "HashShuffleMap",
    "HashShuffleReduce",
    "large_star",
    "_node_values",
    "_mark_joined",
    "apply_batches",
    "compact",
)


def write_config(work: Path, name: str, src: Path, stages: list = STAGES, **execution) -> tuple[Path, Path]:
    out = work / name
    cfg = work / f"{name}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "input": {"paths": [str(src)], "block_bytes": 1 << 20},
                "output": {"path": str(out)},
                "stages": stages,
                **({"execution": execution} if execution else {}),
            }
        )
    )
    return cfg, out


def curate(cfg: Path, env=None, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "thresher", "curate", str(cfg)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def manifest(out: Path) -> dict | None:
    p = out / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else None


def same(m: dict | None, clean: dict) -> bool:
    return bool(m) and m["digests"] == clean["digests"] and m["counts"] == clean["counts"]


NOT_TASK_WORKERS = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::_", "ray::ProgressCounter")


def _cmdline(p: psutil.Process) -> str:
    """``p``'s command line, or "" for one that ended (or is a zombie) since it was listed."""
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def kill_a_task_worker(proc: subprocess.Popen, rng: random.Random) -> str | None:
    """SIGKILL a busy Ray worker under ``proc``, picked at random: one running a task of the run, or one of Ray
    Data's actors while it starts (``ray::<name>:<class>.__init__``); not an idle worker, not the node's agents (their
    loss is the node's: the node-loss class), not an actor once started (Ray Data's, thresher's progress actor, which
    Ray restarts). Its title and pid, or None when none is busy."""
    workers = []
    for p in psutil.Process(proc.pid).children(recursive=True):
        title = _cmdline(p)
        if title.startswith("ray::") and not title.startswith(NOT_TASK_WORKERS):
            workers.append((p.pid, title.split()[0]))
    if not workers:
        return None
    pid, title = rng.choice(workers)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    return f"{title} (pid {pid})"


def lost(m: dict | None, clean: dict) -> int:
    """Kept records of the clean run that the trial's output lacks (all of them without a manifest)."""
    return max(0, clean["counts"]["output"] - (m["counts"]["output"] if m else 0))


def wait_for(ready, proc: subprocess.Popen, timeout: float = 600) -> bool:
    """Poll ``ready()`` while ``proc`` runs; whether it became true."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ready():
            return True
        time.sleep(0.05)
    return bool(ready())


def markers(out: Path, kind: str) -> int:
    return len(list((out / "_progress").glob(f"{kind}-*.json")))


def kill_worker(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """SIGKILL a busy Ray worker (:func:`kill_a_task_worker`: mostly a read + map stages task's) at a random moment
    of the clean run's map phase (0.05 to 0.8 of its seconds after Ray is up)."""
    cfg, out = write_config(work, f"worker{i}", src)
    proc = curate(cfg)
    delay = rng.uniform(0.05, 0.8) * clean["timing"]["phases"]["read and map stages"]
    wait_for(lambda: (out / "_progress" / "run.json").exists(), proc)
    time.sleep(delay)
    killed = None
    while killed is None and proc.poll() is None:
        killed = kill_a_task_worker(proc, rng)
        time.sleep(0.02)
    proc.wait()
    m = manifest(out)
    note = f"killed {killed or '-'} {delay:.1f} s in; exit {proc.returncode}"
    return same(m, clean) and killed is not None, note, lost(m, clean)


def kill_dedup_workers(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """SIGKILL one Ray worker in each dedup phase (the first process seen running a task of that phase)."""
    cfg, out = write_config(work, f"dedup{i}", src, DEDUP_STAGES, broadcast_limit_rows=0)  # partitioned paths
    proc = curate(cfg)
    hit: set[str] = set()
    while len(hit) < len(DEDUP_PHASES) and proc.poll() is None:
        for p in psutil.Process(proc.pid).children(recursive=True):
            try:
                title = " ".join(p.cmdline())
                phases = (
                    {f for f in DEDUP_PHASES if f in title and f not in hit} if title.startswith("ray::") else set()
                )
                if phases:
                    os.kill(p.pid, signal.SIGKILL)
                    hit |= phases
                    break
            except psutil.Error:
                continue
        time.sleep(0.01)
    proc.wait()
    m = manifest(out)
    note = f"{len(hit)} phases hit ({', '.join(sorted(hit))}); exit {proc.returncode}"
    return same(m, clean) and len(hit) >= 5, note, lost(m, clean)


def kill_driver_then_resume(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """SIGKILL the driver and its embedded Ray after a random number of written parts, then run again: the re-run
    reuses what was done and completes."""
    cfg, out = write_config(work, f"driver{i}", src, num_cpus=1)
    proc = curate(cfg, start_new_session=True)
    parts = rng.randint(1, max(1, clean["resumed"]["read_tasks"] - 2))
    wait_for(lambda: markers(out, "write") >= parts, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    curate(cfg).wait()
    m = manifest(out)
    reused = m["resumed"]["reused_read_tasks"] if m else 0
    note = f"killed after {parts} parts; re-run reused {reused} of {m['resumed']['read_tasks'] if m else '?'}"
    return same(m, clean) and reused > 0, note, lost(m, clean)


def truncated_markers_then_resume(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """SIGKILL the driver mid-run, cut a read marker and a write marker short (as a crash inside their write would
    on a disk without atomic renames), then re-run: the cut markers' tasks are redone."""
    cfg, out = write_config(work, f"markers{i}", src, num_cpus=1)
    proc = curate(cfg, start_new_session=True)
    parts = rng.randint(2, max(2, clean["resumed"]["read_tasks"] - 2))
    wait_for(lambda: markers(out, "write") >= parts, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    cut = [rng.choice(sorted((out / "_progress").glob(f"{kind}-*.json"))) for kind in ("read", "write")]
    for marker in cut:
        marker.write_bytes(marker.read_bytes()[: len(marker.read_bytes()) // 2])
    curate(cfg).wait()
    m = manifest(out)
    reused = m["resumed"]["reused_read_tasks"] if m else 0
    note = f"cut {', '.join(p.name for p in cut)}; re-run reused {reused} of {m['resumed']['read_tasks'] if m else '?'}"
    return same(m, clean) and 0 < reused < m["resumed"]["read_tasks"], note, lost(m, clean)


def published(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and p.relative_to(out).parts[0] not in ("_progress", "_staging")
    }


def killed_rerun_keeps_previous(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """A completed run, then a re-run with another config into the same folder, SIGKILLed once it has written
    some of its parts (early or while it writes its final files, at random): the previous dataset, reports and
    manifest must be byte for byte as they were; a third run then completes."""
    cfg, out = write_config(work, f"rerun{i}", src)
    curate(cfg).wait()
    before = published(out)
    other, _ = write_config(work, f"rerun{i}", src, [{"normalize": {}}])
    proc = curate(other, start_new_session=True)
    staged = out / "_staging" / rng.choice(["out", "final"])
    wait_for(lambda: staged.exists() and any(staged.rglob("*.*")), proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(staged.rglob("*.*")))
    kept = published(out) == before
    again = curate(other)
    again.wait()
    m = manifest(out)
    replaced = bool(m) and [next(iter(s)) for s in m["config"]["stages"]] == ["normalize"]
    note = (
        f"killed with {written} files in _staging/{staged.name}/; previous {'intact' if kept else 'CHANGED'} "
        f"({len(before)} files); next run exit {again.returncode}{'' if replaced else ', its manifest missing or wrong'}"
    )
    return kept and replaced, note, 0 if kept else clean["counts"]["output"]


def lose_node(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """Stop the worker node of a two-node cluster after a random number of read tasks are done."""
    head = RayHead(work / f"cluster{i}")
    head.tmp.mkdir()
    head.start_head(num_cpus=1)
    worker = head.add_worker(num_cpus=1)
    try:
        cfg, out = write_config(work, f"node{i}", src)
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": head.token, "RAY_ADDRESS": head.address}
        proc = curate(cfg, env=env)
        reads = rng.randint(1, max(1, clean["resumed"]["read_tasks"] // 2))
        wait_for(lambda: markers(out, "read") >= reads, proc)
        running = proc.poll() is None
        head.stop_node(worker)
        proc.wait()
        m = manifest(out)
        note = f"worker node stopped after {reads} read tasks{'' if running else ' (the run had ended)'}"
        return same(m, clean) and running, note, lost(m, clean)
    finally:
        head.stop()


STEPS = 40


def registered_checkpoint_step(snapshot: Path) -> int | None:
    """The step of the latest checkpoint Ray Train's controller has registered (a step folder on disk is not
    enough: the controller registers it once it has collected every worker's report)."""
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    except (OSError, ValueError):
        return None
    return latest["metrics"]["step"] if latest else None


def train_setup(work: Path) -> Path:
    """The curated GSM8K sample and the tiny Llama every training trial uses (made once)."""
    from train_bench import curate as curate_gsm8k
    from train_bench import tiny_model

    setup = work / "train-setup"
    if not setup.exists():
        setup.mkdir()
        data = curate_gsm8k(64, setup)
        (setup / "model.json").write_text(json.dumps(tiny_model(data, setup / "tiny")))
    return setup


def train(work: Path, name: str, env: dict | None = None, **sections) -> tuple[subprocess.Popen, Path, Path]:
    """``thresher train`` (LoRA, tiny Llama, 2 workers, 40 steps, a checkpoint every 5, 2 retries) started in the
    background; the process, its output folder and its log."""
    setup = train_setup(work)
    out = work / name
    cfg = work / f"{name}.yaml"
    config = {
        "model": json.loads((setup / "model.json").read_text()),
        "data": {"train": str(setup / "run/data"), "format": "alpaca", "max_seq_len": 256},
        "method": "lora",
        "scaling": {"num_workers": 2},
        "optim": {"lr": 1e-2, "max_steps": STEPS, "batch_size": 4, "log_every_steps": 1},
        "checkpoint": {"every_steps": 5, "keep": 2, "max_failures": 2},
        "output": {"path": str(out)},
        **sections,
    }
    cfg.write_text(yaml.safe_dump(config))
    log = work / f"{name}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "thresher", "train", str(cfg)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return proc, out, log


def trained(
    proc: subprocess.Popen, out: Path, log: Path, note: str, after: int | None, must_resume: bool = True
) -> Trial:
    """A training trial's outcome: exit 0, the last step reached with one loss per step, resumed from a checkpoint
    at or after step ``after`` (without ``must_resume``: or not resumed at all, the fault having failed no attempt)."""
    proc.wait()
    m = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    resumes = m.get("resumes") or []
    ok = (
        proc.returncode == 0
        and after is not None
        and m.get("steps") == STEPS
        and len(m.get("train_loss", [])) == STEPS
        and (bool(resumes) or not must_resume)
        and all(r >= after for r in resumes[:1])
    )
    note = (
        f"{note}; resumed from step {m.get('resumes')}; finished at step {m.get('steps')} with "
        f"{len(m.get('train_loss', []))} losses; exit {proc.returncode}"
    )
    steps_lost = STEPS - len(m.get("train_loss", []))
    return ok, note if proc.returncode == 0 else note + ": " + log.read_text(errors="replace")[-300:], steps_lost


def kill_training_worker(work: Path, src: Path, clean: dict | None, i: int, rng: random.Random) -> Trial:
    """On a two-node cluster (a worker on each node), SIGKILL one Ray Train worker, picked at random, once the
    controller has registered a random checkpoint (step 5 to 30); Ray Train must restart the workers from the last
    checkpoint and the run end at step 40 with one loss per step."""
    train_setup(work)  # before the cluster: its in-process curation stops its own Ray's processes, ours children
    head = RayHead(work / f"train-cluster{i}")
    head.tmp.mkdir()
    head.start_head(num_cpus=2)
    head.add_worker(num_cpus=2)
    try:
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": head.token, "RAY_ADDRESS": head.address}
        proc, out, log = train(work, f"train{i}", env=env)
        snapshot = out / "checkpoints/thresher/checkpoint_manager_snapshot.json"
        at = rng.choice(range(5, 31, 5))
        wait_for(lambda: (registered_checkpoint_step(snapshot) or 0) >= at, proc, timeout=1800)
        after = registered_checkpoint_step(snapshot)
        workers = [  # the cluster's own: its nodes' process trees (--block keeps them under ``ray start``)
            c.pid
            for node in head.procs
            for c in psutil.Process(node.pid).children(recursive=True)
            if _cmdline(c).startswith("ray::RayTrainWorker")
        ]
        killed = rng.choice(workers) if workers and proc.poll() is None else None
        if killed:
            os.kill(killed, signal.SIGKILL)
        return trained(proc, out, log, f"killed pid {killed} after checkpoint step {after}", after if killed else None)
    finally:
        head.stop()


# -- input and storage faults --------------------------------------------------------------------------------------

_S3: dict = {}


def s3_input(work: Path, src: Path) -> tuple[str, dict]:
    """The corpus in a bucket of moto's standalone S3 server on loopback (started once); its URI glob and the env a
    run needs (test credentials; the endpoint is given by each config)."""
    if not _S3:
        import boto3
        from moto.server import ThreadedMotoServer

        from testkit.ray_cluster import free_port

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
        port = free_port()
        ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "bench-key",
            "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
        s3.create_bucket(Bucket="bench")
        for f in sorted(src.glob("*.jsonl")):
            s3.upload_file(str(f), "bench", f"corpus/{f.name}")
        _S3.update(port=port, env=env)
    return "s3://bench/corpus/*.jsonl", _S3["env"]


def s3_config(work: Path, name: str, src: Path, port: int) -> tuple[Path, Path, dict]:
    uri, env = s3_input(work, src)
    out = work / name
    cfg = work / f"{name}.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "input": {"paths": [uri], "block_bytes": 1 << 20},
                "output": {"path": str(out)},
                "stages": STAGES,
                "storage": {"endpoint_url": f"http://127.0.0.1:{port}"},
            }
        )
    )
    return cfg, out, env


def s3_clean(work: Path, src: Path) -> dict:
    """The manifest of a clean run reading the corpus from S3 (made once)."""
    s3_input(work, src)
    if "clean" not in _S3:
        cfg, out, env = s3_config(work, "s3-clean", src, _S3["port"])
        curate(cfg, env=env).wait()
        _S3["clean"] = manifest(out)
    return _S3["clean"]


def arm_when_planned(link, out: Path, failures: int, proc: subprocess.Popen) -> None:
    """Arm ``link`` once the run has planned its reads (the driver's sampling reads are not cut)."""
    wait_for(lambda: (out / "_progress" / "run.json").exists(), proc)
    link.arm(failures)


class StallingLink(FlakyLink):
    """A :class:`FlakyLink` whose spoiled connections, after ``after`` bytes of the answer, send nothing more for
    ``stall`` seconds before they close: a server that stops answering mid-object (the client's timeout fires)."""

    def __init__(self, target_port: int, after: int, stall: float):
        self.stall = stall
        super().__init__(target_port, after)

    def _pipe(self, src, dst, limit: int | None = None) -> None:  # type: ignore[override]
        if limit is None:
            FlakyLink._pipe(src, dst)
            return
        sent = 0
        with contextlib.suppress(OSError):
            while sent < limit and (data := src.recv(min(65536, limit - sent))):
                dst.sendall(data)
                sent += len(data)
        time.sleep(self.stall)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def s3_faults(work: Path, src: Path, i: int, name: str, link, failures: int) -> Trial:
    """A run reading from S3 through ``link``, armed with ``failures`` spoiled connections once the reads are
    planned: it must end with the clean S3 run's records, none rejected."""
    clean = s3_clean(work, src)
    cfg, out, env = s3_config(work, f"{name}{i}", src, link.port)
    proc = curate(cfg, env=env)
    arm_when_planned(link, out, failures, proc)
    proc.wait()
    m = manifest(out)
    ok = same(m, clean) and m["counts"]["rejected"] == clean["counts"]["rejected"] and link.failures <= 0
    note = (
        f"{failures - max(link.failures, 0)} of {failures} connections spoiled after {link.after} bytes; exit "
        f"{proc.returncode}; rejected {m['counts']['rejected'] if m else '-'}"
    )
    return ok, note, lost(m, clean)


def s3_resets_then_recovers(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """1 to 5 connections to S3 reset in the middle of an object's bytes (beyond the S3 client's own retries): the
    read tasks fail and are run again."""
    s3_input(work, src)
    link = FlakyLink(_S3["port"], after=rng.randint(1024, 1 << 19))
    return s3_faults(work, src, i, "s3-flaky", link, rng.randint(1, 5))


def s3_stalls_then_recovers(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """1 to 3 connections to S3 stop answering mid-object for 30 s (past the S3 client's request timeout)."""
    s3_input(work, src)
    link = StallingLink(_S3["port"], after=rng.randint(1024, 1 << 19), stall=30)
    return s3_faults(work, src, i, "s3-stall", link, rng.randint(1, 3))


def s3_resets_forever(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """Every connection to S3 reset mid-object once the reads start: the run must fail (exit 1) after its retries,
    naming the cause, with no manifest and no credentials in the message."""
    s3_input(work, src)
    link = FlakyLink(_S3["port"], after=rng.randint(1024, 1 << 19))
    cfg, out, env = s3_config(work, f"s3-broken{i}", src, link.port)
    proc = curate(cfg, env=env)
    arm_when_planned(link, out, 10**9, proc)
    _, err = proc.communicate()
    said = next((line for line in reversed(err.splitlines()) if line.startswith("thresher: ")), "")
    ok = proc.returncode == 1 and manifest(out) is None and "bench-secret" not in err and "failed" in said
    return ok, f"exit {proc.returncode}; no manifest: {manifest(out) is None}; said: {said[:160]}", 0


def truncated_gzip(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """The corpus gzipped, one shard cut at a random byte: its whole lines before the cut are kept, the line it was
    cut in is one ``unreadable_file`` reject, and the decompressed bytes lost are counted (expected figures
    computed here with zlib, apart from thresher's readers)."""
    import gzip
    import zlib

    folder = work / f"gz{i}"
    folder.mkdir()
    records = 0
    for n, f in enumerate(sorted(src.glob("*.jsonl"))):
        data = gzip.compress(f.read_bytes(), compresslevel=6)
        if n == 0:
            data = data[: rng.randrange(len(data) // 4, len(data) * 3 // 4)]
            given = zlib.decompressobj(wbits=31).decompress(data)
            whole = given[: given.rfind(b"\n") + 1]
            records += whole.count(b"\n")
            lost_bytes = len(given) - len(whole)
        else:
            records += f.read_bytes().count(b"\n")
        (folder / (f.name + ".gz")).write_bytes(data)
    cfg, out = write_config(work, f"gzout{i}", folder / "*.jsonl.gz")
    curate(cfg).wait()
    m = manifest(out)
    c = m["counts"] if m else {}
    ok = (
        bool(m)
        and c["input"] == records + 1
        and c["rejected"] == 1
        and c["rejected_bytes"] == lost_bytes
        and c["output"] == records
    )
    note = (
        f"gzip shard cut: expected {records:,} records kept and {lost_bytes:,} bytes lost; got "
        f"{c.get('output', '-'):,} kept, {c.get('rejected', '-')} rejected, {c.get('rejected_bytes', '-'):,} bytes lost"
    )
    return ok, note, max(0, records - c.get("output", 0))


def corrupt_parquet_page(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """The corpus as Parquet (row groups of 500 rows, no compression), one byte of a data page of a random row group
    flipped: that row group is one ``unreadable_file`` reject costing its compressed size, every other row is kept
    (the expected figures come from the file's own metadata, written here with pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = work / f"pq{i}"
    folder.mkdir()
    records = [json.loads(line) for f in sorted(src.glob("*.jsonl")) for line in f.read_text().splitlines()]
    target = folder / "part-0.parquet"
    pq.write_table(pa.Table.from_pylist(records), target, row_group_size=500, compression="none")
    meta = pq.read_metadata(target)
    group = rng.randrange(meta.num_row_groups)
    column = meta.row_group(group).column(meta.schema.names.index("text"))
    data = bytearray(target.read_bytes())
    at = column.data_page_offset + 8  # inside the page header: Arrow cannot decode the page
    data[at] ^= 0xFF
    target.write_bytes(bytes(data))
    lost_rows = meta.row_group(group).num_rows
    lost_bytes = sum(meta.row_group(group).column(c).total_compressed_size for c in range(meta.num_columns))
    cfg, out = write_config(work, f"pqout{i}", folder)
    curate(cfg).wait()
    m = manifest(out)
    c = m["counts"] if m else {}
    ok = (
        bool(m) and c["output"] == len(records) - lost_rows and c["rejected"] == 1 and c["rejected_bytes"] == lost_bytes
    )
    note = (
        f"Parquet row group {group} ({lost_rows} rows, {lost_bytes:,} bytes) corrupt; got {c.get('output', '-')} "
        f"kept of {len(records)}, {c.get('rejected', '-')} rejected, {c.get('rejected_bytes', '-')} bytes lost"
    )
    return ok, note, max(0, len(records) - lost_rows - c.get("output", 0))


def corrupt_file(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """A gzip shard cut at a random byte, or a Parquet page of a random row group damaged (picked at random)."""
    fault = rng.choice([truncated_gzip, corrupt_parquet_page])
    return fault(work, src, clean, i, rng)


def disk_fills(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """The output on a tmpfs with room for a random 10 to 90 % of what the run writes: the run must fail (exit 1,
    naming the full disk) without a manifest; once room is made the same command completes with the clean run's
    records."""
    need = sum(f.stat().st_size for f in (work / "clean").rglob("*") if f.is_file())
    mount = work / f"disk{i}"
    mount.mkdir()
    size = need * 10  # the failed run's staged parts stay until the next run replaces them
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        room = int(rng.uniform(0.1, 0.9) * need)
        filler = mount / "filler"
        with open(filler, "wb") as f:
            f.truncate(0)
            f.write(b"\0" * max(0, os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize - room))
        cfg, out = write_config(work, f"disk{i}", src)
        cfg.write_text(cfg.read_text().replace(str(out), str(mount / "out")))
        proc = curate(cfg)
        _, err = proc.communicate()
        said = next((line for line in reversed(err.splitlines()) if line.startswith("thresher: ")), "")
        failed_well = proc.returncode == 1 and manifest(mount / "out") is None
        filler.unlink()
        again = curate(cfg)
        _, err = again.communicate()
        then = next((line for line in reversed(err.splitlines()) if line.startswith("thresher: ")), "")
        m = manifest(mount / "out")
        note = (
            f"room for {room / need:.0%} of the output: exit {proc.returncode}, said: {said[:120]}; after room "
            f"was made: exit {again.returncode}{f', said: {then[:300]}' if again.returncode else ''}"
        )
        return failed_well and same(m, clean), note, lost(m, clean)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def checkpoint_storage_fails_once(work: Path, src: Path, clean: dict | None, i: int, rng: random.Random) -> Trial:
    """Checkpoints on S3 (moto's server behind a relay); once a random checkpoint (step 5 to 30) is registered the
    endpoint goes away for 2 to 10 s. An upload that meets the outage is retried by the storage client or fails its
    attempt, which is then retried from the last registered checkpoint (at or after that step); either way the run
    ends at step 40 with one loss per step. The note says which."""
    from testkit.links import CuttableLink

    s3_input(work, src)
    link = CuttableLink(_S3["port"])
    proc, out, log = train(
        work,
        f"ckpt{i}",
        env=_S3["env"],
        checkpoint={"every_steps": 5, "keep": 2, "max_failures": 2, "storage_path": f"s3://bench/ckpt{i}"},
        storage={"endpoint_url": f"http://127.0.0.1:{link.port}"},
    )
    import boto3

    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{_S3['port']}")
    at, gone = rng.choice(range(5, 31, 5)), rng.uniform(2, 10)

    def registered() -> int:
        try:
            body = s3.get_object(Bucket="bench", Key=f"ckpt{i}/thresher/checkpoint_manager_snapshot.json")["Body"]
            latest = json.loads(body.read()).get("latest_checkpoint_result")
        except Exception:
            return 0
        return latest["metrics"]["step"] if latest else 0

    wait_for(lambda: registered() >= at, proc, timeout=1800)
    after = registered() if proc.poll() is None else None
    link.cut()
    time.sleep(gone)
    link.restore()
    return trained(proc, out, log, f"checkpoint storage gone {gone:.1f} s after step {after}", after, False)


def late_field(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """A field that only the last of ten files has (and one on the last line of the first file): every record that
    had it still has it in data/ or rejects/."""
    import pyarrow.parquet as pq

    folder = work / f"late{i}"
    folder.mkdir()
    lines = [line for f in sorted(src.glob("*.jsonl")) for line in f.read_text().splitlines()][:2000]
    per = len(lines) // 10
    planted = 0
    for n in range(10):
        chunk = [json.loads(line) for line in lines[n * per : (n + 1) * per]]
        for k, record in enumerate(chunk):
            if n == 9 or (n == 0 and k == len(chunk) - 1):
                record["late_field"] = f"planted {n}-{k}"
                planted += 1
        (folder / f"part-{n:02d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk))
    cfg, out = write_config(work, f"lateout{i}", folder)
    curate(cfg).wait()
    found = 0
    for f in list((out / "data").rglob("*.parquet")) + list((out / "rejects").rglob("*.parquet")):
        table = pq.read_table(f)
        if "late_field" in table.column_names:
            found += sum(v is not None for v in table["late_field"].to_pylist())
    ok = found == planted and manifest(out) is not None
    return ok, f"{planted} records had the field; {found} kept it", planted - found


def files_disagree_with_counts(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """A faulty stage removes a row from a final file after it was written (``testkit.faults.DropsAWrittenRow``, as a
    faulty disk or writer would): the footers disagree with the counts, so the run must fail without a manifest."""
    cfg, out = write_config(work, f"drop{i}", src, [{"normalize": {}}, {"test_drops_a_written_row": {}}])
    code = "import sys, testkit.faults; from thresher.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "curate", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
    )
    said = next((line for line in reversed(proc.stderr.splitlines()) if line.startswith("thresher: ")), "")
    ok = proc.returncode == 1 and manifest(out) is None and "accounting mismatch" in said
    return ok, f"exit {proc.returncode}; no manifest: {manifest(out) is None}; said: {said[:160]}", 0


def quickstart_beside_load(work: Path, src: Path, clean: dict, i: int, rng: random.Random) -> Trial:
    """The README's quickstart (its own embedded Ray) while three CPU-bound processes spin: it must finish with
    the counts of the first one, however its Ray start went (retries are noted)."""
    out = work / f"soak{i}"
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "thresher", "curate", "examples/quickstart.yaml", "--output", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    m = manifest(out)
    first = _SOAK.setdefault("first", m)
    retries = proc.stderr.count("trying again in")
    note = f"exit {proc.returncode}; {retries} Ray start retries" + (
        "" if proc.returncode == 0 else ": " + proc.stderr[-200:]
    )
    ok = proc.returncode == 0 and bool(m) and bool(first) and m["counts"] == first["counts"]
    return ok, note, lost(m, first) if first else 0


_SOAK: dict = {}

# class: (what it hits, trial, reference run); "train"/"soak": no curation reference
CLASSES: dict[str, tuple[str, Callable[..., Trial], str | None]] = {
    "worker-sigkill": ("curation: a Ray worker SIGKILLed at a random moment", kill_worker, "clean"),
    "node-loss": ("curation on 2 nodes: the worker node stopped after random reads", lose_node, "clean"),
    "s3-resets": ("curation from S3: 1-5 connections reset mid-object", s3_resets_then_recovers, "clean"),
    "s3-timeouts": ("curation from S3: 1-3 connections stalled 30 s mid-object", s3_stalls_then_recovers, "clean"),
    "corrupt-file": ("curation: a gzip shard cut or a Parquet page damaged", corrupt_file, "clean"),
    "disk-full": ("curation: the output disk full at a random point, then room made", disk_fills, "clean"),
    "driver-kill-resume": ("curation: driver + embedded Ray SIGKILLed, re-run", kill_driver_then_resume, "clean"),
    "train-worker-kill": ("training on 2 nodes: a worker SIGKILLed mid-run", kill_training_worker, None),
    "checkpoint-storage-once": ("training: checkpoint storage gone once", checkpoint_storage_fails_once, None),
    "soak": ("20 back-to-back quickstarts beside 3 CPU-bound processes", quickstart_beside_load, None),
    "dedup-phases": ("curation: a worker SIGKILLed in every dedup phase", kill_dedup_workers, "clean-dedup"),
    "markers-cut": ("curation: driver SIGKILLed, markers cut short, re-run", truncated_markers_then_resume, "clean"),
    "killed-rerun": ("curation: a re-run with another config SIGKILLed", killed_rerun_keeps_previous, "clean"),
    "s3-gone-for-good": ("curation from S3: every connection reset; must fail", s3_resets_forever, "clean"),
    "late-field": ("curation: a field only in the last file", late_field, "clean"),
    "files-disagree": ("curation: a written row removed; must fail", files_disagree_with_counts, "clean"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20, help="trials per class (default 20)")
    ap.add_argument("--classes", nargs="*", choices=list(CLASSES), help="classes to run (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of every trial's random fault point")
    ap.add_argument("--mb", type=float, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/reliability.md")
    a = ap.parse_args()
    command = "python bench/reliability_bench.py " + " ".join(sys.argv[1:])
    raw = a.out.with_suffix(".json")
    kept = json.loads(raw.read_text()).get("classes", {}) if a.classes and raw.exists() else {}
    results: dict = {}
    merged = {name: kept[name] for name in CLASSES if name in kept}  # --trials 0: the table of the JSON again
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "corpus"
        generate(a.mb, src)
        cleans = {}
        chosen = [name for name in CLASSES if not a.classes or name in a.classes]
        needed = {"clean"} | {CLASSES[name][2] for name in chosen}
        for name, stages in (("clean", STAGES), ("clean-dedup", DEDUP_STAGES)):
            if name not in needed:
                continue
            cfg, out = write_config(work, name, src, stages)
            curate(cfg).wait()
            cleans[name] = manifest(out)
        for name in chosen:
            what, fn, reference = CLASSES[name]
            trials = []
            for i in range(a.trials):
                rng = random.Random(f"{a.seed}:{name}:{i}")
                started = time.perf_counter()
                try:
                    ok, note, records_lost = fn(work, src, cleans.get(reference or "clean"), i, rng)
                except Exception as e:  # the trial's own machinery failed: a failed trial, named
                    ok, note, records_lost = False, f"the trial raised {type(e).__name__}: {e}", None
                seconds = round(time.perf_counter() - started, 1)
                trials.append(
                    {"trial": i, "passed": ok, "records_lost": records_lost, "seconds": seconds, "note": note}
                )
                print(name, i, ok, records_lost, seconds, note, flush=True)
                results[name] = {"what": what, "trials": trials, "command": command}
                merged = {n: results.get(n) or kept.get(n) for n in CLASSES if results.get(n) or kept.get(n)}
                raw.write_text(json.dumps({"corpus_mb": a.mb, "seed": a.seed, "classes": merged}, indent=2))
    clean = cleans["clean"]
    lines = [
        "# Reliability: fault campaign",
        "",
        f"Command: `{command}` on this 2-core machine (a row run by another command names it). Corpus: {a.mb:g} MB of",
        f"real web text (bench/corpus.py), {clean['resumed']['read_tasks']} read tasks, {clean['counts']['input']:,}",
        "records. Each trial's fault lands at a random point drawn from the seed, the class and the trial number;",
        "`bench/reliability_bench.py` says what each class does and when a trial passes. Records lost: kept records of",
        "the clean run missing from the trial's output (training: steps without a loss). Raw trials: reliability.json.",
        "",
        "| class | what | trials | passed | records lost | wall time (s, total / median) | failures |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, r in merged.items():
        t = r["trials"]
        seconds = sorted(x["seconds"] for x in t)
        failures = "; ".join(f"trial {x['trial']}: {x['note']}" for x in t if not x["passed"]) or "none"
        lost_total = sum(x["records_lost"] or 0 for x in t)
        by = "" if r["command"] == command else f" (run by `{r['command']}`)"
        lines.append(
            f"| {name} | {r['what']} | {len(t)} | {sum(x['passed'] for x in t)}/{len(t)} | {lost_total} | "
            f"{sum(seconds):.0f} / {seconds[len(seconds) // 2]:.0f} | {failures}{by} |"
        )
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
