"""A command on a busy machine or cluster: what cannot run is refused before any work (exit 2, naming the key);
SIGTERM and SIGINT end ``train`` and ``eval`` within 10 s with 143 and 130, leaving no Ray process behind, and a
training run ended so resumes from its checkpoint to the model an uninterrupted run exports; with CPU-bound processes beside it,
the embedded Ray starts (tried again where the load makes it time out) and a submission to a head just started
runs. Everything runs on real Ray: the refusals on the test session's, the commands as a user runs them."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from testkit.ray_cluster import RayHead
from testkit.tiny_llama import build_tiny_llama
from tests.conftest import start_cli
from tests.samples import gsm8k
from thresher.cli import main as cli

STEPS = 16


def texts(records: list[dict]) -> list[str]:
    return [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in records]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Llama and its training data (Parquet, a ``text`` column): the model's folder and the data's."""
    tmp = tmp_path_factory.mktemp("busy")
    records = gsm8k(24)
    for name, rows in (("train", records[:16]), ("validation", records[16:])):
        (tmp / name).mkdir()
        pq.write_table(pa.table({"text": texts(rows)}), tmp / name / "part-0.parquet")
    (tmp / "eval").mkdir()
    questions = {"question": [r["question"] for r in records], "answer": [r["answer"] for r in records]}
    pq.write_table(pa.table(questions), tmp / "eval" / "part-0.parquet")
    return build_tiny_llama(tmp / "tiny", texts(records)), tmp


def train_config(model: Path, data: Path, out: Path, **scaling) -> dict:
    return {
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data / "train"), "validation": str(data / "validation"), "max_seq_len": 128},
        "method": "lora",
        "scaling": {"num_workers": 1, **scaling},
        "optim": {"max_steps": STEPS, "batch_size": 2, "log_every_steps": 1, "lr": 1e-2},
        "checkpoint": {"every_steps": 2, "keep": 2},
        "output": {"path": str(out)},
    }


def eval_config(model: Path, data: Path, out: Path, **generation) -> dict:
    return {
        "model": {"name_or_path": str(model)},
        "data": {"path": str(data / "eval"), "format": "text", "text_field": "question", "reference_field": "answer"},
        "generation": generation,
        "output": {"path": str(out)},
    }


def write(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


# -- refused before any work ----------------------------------------------------------------------------------------


def test_a_search_whose_trials_cannot_fit_is_refused_naming_the_key(ray_local, tiny_data, tmp_path, capsys):
    """The test session's Ray has 2 CPUs: a trial's worker of 2 CPUs leaves none for its data pipeline, and a value
    of the space asking for 3 workers of 1 CPU does not fit at all. Refused with exit 2, and the search's folder
    holds nothing that would refuse the corrected config."""
    model, data = tiny_data
    base = train_config(model, data, tmp_path / "unused", resources_per_worker={"CPU": 2})
    search = {"train": base, "space": {"optim.lr": {"choice": [1e-3, 1e-2]}}, "output": {"path": str(tmp_path / "t")}}
    assert cli(["tune", write(tmp_path / "tune.yaml", search)]) == 2
    said = capsys.readouterr().err
    assert "train.scaling.resources_per_worker: 1 worker(s) x 2 CPU leave 0 of the Ray cluster's 2 CPU" in said
    assert not (tmp_path / "t" / "tune-config.json").exists()
    base["scaling"]["resources_per_worker"] = {"CPU": 1}
    search["space"] = {"scaling.num_workers": {"choice": [1, 3]}}
    assert cli(["tune", write(tmp_path / "tune.yaml", search)]) == 2
    said = capsys.readouterr().err
    assert "space.scaling.num_workers: value 3: train.scaling.resources_per_worker: 3 worker(s) x 1 CPU do not fit" in (
        said
    )


def test_an_evaluation_whose_actors_leave_no_cpu_for_its_data_is_refused(ray_local, tiny_data, tmp_path, capsys):
    model, data = tiny_data
    config = eval_config(model, data, tmp_path / "out", num_actors=2, max_new_tokens=4)
    assert cli(["eval", write(tmp_path / "eval.yaml", config)]) == 2
    said = capsys.readouterr().err
    assert "generation.num_actors: 2 generation actor(s) x 1 CPU leave 0 of the Ray cluster's 2 CPU" in said
    config["generation"] = {"use_gpu": True}
    assert cli(["eval", write(tmp_path / "eval.yaml", config)]) == 2
    assert "generation.use_gpu: 1 generation actor(s) x 1 GPU do not fit the Ray cluster's 0 GPU" in (
        capsys.readouterr().err
    )


# -- signals ---------------------------------------------------------------------------------------------------------


def end(proc: subprocess.Popen, sig: int) -> tuple[float, str]:
    """Send ``sig`` as a user would (SIGINT: Ctrl-C, to the process group); the seconds to the exit, and stderr.
    None of the command's processes (its embedded Ray's) may outlive it by more than the 10 s."""
    ray_processes = psutil.Process(proc.pid).children(recursive=True)
    assert ray_processes
    started = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - started
    while (alive := [p for p in ray_processes if running(p)]) and time.monotonic() < started + 10:
        time.sleep(0.05)
    assert not alive, (alive, err[-3000:])
    return took, err


def running(p: psutil.Process) -> bool:
    """Whether ``p`` still runs (a zombie, ended and waiting to be reaped by whoever adopted it, does not)."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def titles(proc: subprocess.Popen) -> list[str]:
    """The command lines of ``proc``'s descendants (those that end while read left out)."""
    found = []
    for p in psutil.Process(proc.pid).children(recursive=True):
        try:
            found.append(" ".join(p.cmdline()))
        except psutil.Error:
            continue
    return found


def model_digest(out: Path) -> str:
    h = hashlib.sha256()
    for f in sorted((out / "model").glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def registered_step(out: Path) -> int | None:
    """The step of the latest checkpoint Ray Train's controller has registered."""
    import json

    try:
        snapshot = json.loads((out / "checkpoints/thresher/checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):
        return None
    latest = snapshot.get("latest_checkpoint_result")
    return latest["metrics"]["step"] if latest else None


@pytest.mark.slow
def test_sigterm_ends_training_within_10_s_and_the_run_resumes_to_the_same_model(ray_local, tiny_data, tmp_path):
    """Killed by SIGTERM once a checkpoint is registered: exit 143 within 10 s, no Ray process left; the same
    config then resumes from that checkpoint and ends at the last step, every step logged once with the loss of a run
    that was never interrupted, and exports the same model byte for byte (one worker: its rows come in the same
    order; the checkpoint restores the random state that LoRA's dropout draws from)."""
    from thresher.train import main as train

    model, data = tiny_data
    whole = train(train_config(model, data, tmp_path / "whole"))
    out = tmp_path / "ended"
    cfg = write(tmp_path / "train.yaml", train_config(model, data, out))
    proc = start_cli("train", cfg)
    while registered_step(out) is None and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    took, err = end(proc, signal.SIGTERM)
    assert proc.returncode == 143 and "thresher: terminated" in err and took < 10, (took, err[-3000:])
    assert not (out / "metrics.json").exists()
    at = registered_step(out)
    resumed = train(train_config(model, data, out))
    assert resumed["resumes"][0] >= at and resumed["steps"] == whole["steps"] == STEPS
    steps = [x["step"] for x in resumed["train_loss"]]
    assert steps == list(range(1, STEPS + 1)), steps  # each step once: none lost, none repeated in the history
    assert [x["loss"] for x in resumed["train_loss"]] == [x["loss"] for x in whole["train_loss"]]
    assert model_digest(out) == model_digest(tmp_path / "whole")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "interrupted")])
def test_a_signal_ends_an_evaluation_within_10_s(tiny_data, tmp_path, sig, code, said):
    """Ended while its actors generate: the exit code of the signal within 10 s, no Ray process left, no outputs."""
    model, data = tiny_data
    config = eval_config(model, data, tmp_path / "out", max_new_tokens=200, batch_size=1)
    proc = start_cli("eval", write(tmp_path / "eval.yaml", config))
    while proc.poll() is None and not any("MapWorker" in title for title in titles(proc)):
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(2)  # generating
    took, err = end(proc, sig)
    assert proc.returncode == code and f"thresher: {said}" in err and took < 10, (took, err[-3000:])
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "verb, sig, code, said",
    [("tune", signal.SIGTERM, 143, "terminated"), ("compare", signal.SIGINT, 130, "interrupted")],
)
def test_a_signal_ends_a_search_or_a_comparison_within_10_s(tiny_data, tmp_path, verb, sig, code, said):
    """Ended while a trial's or a variant's training worker runs: the exit code of the signal within 10 s, no Ray
    process left, no result written."""
    model, data = tiny_data
    base = train_config(model, data, tmp_path / "unused")
    base["optim"]["max_steps"] = 200
    output = {"path": str(tmp_path / "out")}
    if verb == "tune":
        config = {"train": base, "space": {"optim.lr": {"choice": [1e-3, 1e-2]}}, "output": output}
        result = tmp_path / "out" / "tune.json"
    else:
        evaluation = {k: v for k, v in eval_config(model, data, tmp_path / "unused").items() if k == "data"}
        config = {"train": base, "eval": evaluation, "variants": [{"name": "a"}, {"name": "b"}], "output": output}
        result = tmp_path / "out" / "compare.json"
    proc = start_cli(verb, write(tmp_path / f"{verb}.yaml", config))
    while proc.poll() is None and not any(t.startswith("ray::RayTrainWorker") for t in titles(proc)):
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(2)  # training
    took, err = end(proc, sig)
    assert proc.returncode == code and f"thresher: {said}" in err and took < 10, (took, err[-3000:])
    assert not result.exists()


# -- beside CPU-bound load ------------------------------------------------------------------------------------------


@pytest.fixture
def cpu_load():
    """Three processes spinning on the CPU (the machine's 2 cores and more), ended after the test."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    yield
    for p in spinners:
        p.kill()
        p.wait()


@pytest.mark.slow
def test_beside_cpu_bound_load_the_embedded_ray_starts_and_the_run_finishes(cpu_load, tmp_path):
    """The embedded Ray starts beside three spinning processes (a start the load makes time out is stopped and
    tried again, saying so) and the quickstart finishes."""
    proc = start_cli("curate", "examples/quickstart.yaml", "--output", str(tmp_path / "out"))
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert (tmp_path / "out" / "manifest.json").exists()
    if "starting the embedded Ray failed" in err:
        assert "trying again in" in err and "(on a busy machine" not in err, err[-3000:]


def test_a_head_that_never_answers_fails_the_command_within_the_wait_naming_the_address(tmp_path):
    """Nothing listens at the address: the command tries again for THRESHER_HEAD_WAIT_S (here 3 s), saying so, then
    fails naming the address and the setting (Ray's own connection would try for about 13 minutes)."""
    from testkit.ray_cluster import free_port

    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = start_cli(
        "curate",
        "examples/quickstart.yaml",
        "--output",
        str(tmp_path / "out"),
        "--address",
        address,
        THRESHER_HEAD_WAIT_S="3",
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and time.monotonic() - started < 30, err[-3000:]
    assert f"no Ray head answers at {address} yet" in err
    assert f"no Ray head answered at {address} within 3 s" in err and "THRESHER_HEAD_WAIT_S" in err


@pytest.mark.slow
def test_beside_cpu_bound_load_a_submission_waits_for_a_head_still_coming_up(cpu_load, tmp_path):
    """The command starts before the head: its connection is refused, tried again, and once the head is up (its
    Jobs API may first answer that no agent is available) the job is submitted and runs; the token is never shown."""
    head = RayHead(tmp_path)
    proc = start_cli(
        "submit",
        "--address",
        head.dashboard_url,
        "--",
        "python",
        "-c",
        "print('ran on the cluster')",
        RAY_AUTH_TOKEN=head.token,
        THRESHER_JOBS_RETRY_S="300",
    )
    try:
        time.sleep(2)
        head.start_head(num_cpus=1)
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
        head.stop()
    assert proc.returncode == 0, err[-3000:] + head.logs()
    assert "ran on the cluster" in out and " SUCCEEDED" in err
    assert f"the Ray Jobs API at {head.dashboard_url} is not ready" in err and head.token not in out + err


# -- a cluster that loses what a running pipeline needs ----------------------------------------------------------------


@pytest.mark.slow
def test_a_pipeline_left_without_a_cpu_mid_run_fails_saying_so_and_resumes(tmp_path):
    """A head without CPUs (as KubeRay heads often are) and one worker node of 1 CPU: the worker node is stopped once
    the first read tasks are done. The cluster then has no CPU for the map phase's tasks; the run fails within
    THRESHER_UNSCHEDULABLE_S of that (here 5 s) saying so rather than waiting for ever, and once a node is back the
    same command finishes the run."""
    head = RayHead(tmp_path)
    head.start_head(num_cpus=0, dashboard=False)
    worker = head.add_worker(num_cpus=1)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(f'{{"id": "{i}", "text": "record {i} {"of some words " * 40}"}}\n' for i in range(20000)))
    cfg = write(
        tmp_path / "curate.yaml",
        {
            "input": {"paths": [str(src)], "block_bytes": 64 << 10},
            "stages": [{"normalize": {}}, {"pii": {}}],
            "output": {"path": str(tmp_path / "out")},
        },
    )
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": head.token, "THRESHER_UNSCHEDULABLE_S": "5"}
    try:
        proc = start_cli("curate", cfg, "--address", head.address, **auth)
        progress = tmp_path / "out" / "_progress"
        deadline = time.monotonic() + 180
        while not list(progress.glob("read-*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the node could be stopped"
        head.stop_node(worker)
        stopped = time.monotonic()
        _, err = proc.communicate(timeout=300)
        waited = time.monotonic() - stopped
        assert proc.returncode == 1, err[-3000:]
        assert "Cluster resources are not enough to run any task from" in err, err[-3000:]
        assert "the cluster's 0 CPU leave none for its tasks" in err, err[-3000:]
        assert "THRESHER_UNSCHEDULABLE_S" in err and not (tmp_path / "out" / "manifest.json").exists()
        assert waited < 120, f"{waited:.0f} s from the node's loss to the failure"
        head.add_worker(num_cpus=1)
        again = start_cli("curate", cfg, "--address", head.address, **auth)
        _, err = again.communicate(timeout=600)
        assert again.returncode == 0, err[-3000:]
        assert (tmp_path / "out" / "manifest.json").exists()
    finally:
        head.stop()


def test_a_ray_data_pipeline_reported_unschedulable_fails_only_when_the_cluster_has_no_cpu_for_it(
    ray_local, monkeypatch, caplog
):
    """A stateful stage's segment runs on Ray Data, whose starvation report fails the run when the cluster's CPUs,
    less those held for training workers, leave none for it, and is logged as a wait when they leave some."""
    from ray.data import DataContext, ExecutionResources

    from thresher.runtime import RESOURCE_MANAGER, UNSCHEDULABLE, Unschedulable, fail_unschedulable

    monkeypatch.setenv("THRESHER_UNSCHEDULABLE_S", "5")
    fail_unschedulable()
    manager = __import__("logging").getLogger(RESOURCE_MANAGER)
    report = f"{UNSCHEDULABLE} TaskPoolMapOperator[MapBatches(apply_batches)]. The job may hang forever"
    options = DataContext.get_current().execution_options
    monkeypatch.setattr(options, "exclude_resources", ExecutionResources(cpu=1))
    with caplog.at_level("WARNING", logger="thresher.runtime"):
        manager.warning(report)
    assert "waiting for CPUs" in caplog.text and "leave 1 for it" in caplog.text
    monkeypatch.setattr(options, "exclude_resources", ExecutionResources(cpu=2))
    with pytest.raises(Unschedulable, match="the cluster's 2 CPU less 2 held for training workers leave none"):
        manager.warning(report)
