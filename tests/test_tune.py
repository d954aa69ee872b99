"""``thresher tune`` on the tiny random Llama: a 4-trial random search over the learning rate and the LoRA rank with
ASHA, one trial at a time, started as a command (its own embedded Ray) in the folder of its config and data, which
it names by relative paths, that is killed, process group and all, once the first trial has finished, then run again
from that folder on the test session's Ray (started in another), which resumes the search without re-running that
trial, and whose trials stopped early leave no placement group behind. The outputs (tune.json, tune.html,
best_config.yaml, best/) agree with the trials' own metrics and name the paths as the config gives them, and the
best config trained alone, from the same folder, reaches the best trial's metric. A search whose trials all failed
says why, and a re-run runs them again. A key missing from the training config, missing data or a model that is not
there exits 2 before any Ray work."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from testkit.tiny_llama import build_tiny_llama
from tests.conftest import ROOT
from tests.samples import gsm8k
from thresher.cli import main as cli


def texts(records: list[dict]) -> list[str]:
    return [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in records]


def tune_config(tmp: Path, tiny: Path, relative: bool = False) -> dict:
    """The search's config: its data and output in ``tmp``, named relative to ``tmp`` or absolute, and the model,
    built in ``tiny`` and named absolute (Ray Train runs the workers, which load it, in a folder of their own)."""
    records = gsm8k(24)
    for name, rows in (("train", records[:16]), ("validation", records[16:])):
        (tmp / name).mkdir()
        pq.write_table(pa.table({"text": texts(rows)}), tmp / name / "part-0.parquet")
    build_tiny_llama(tiny, texts(records))

    def path(p: Path) -> str:
        return os.path.relpath(p, tmp) if relative else str(p)

    return {
        "train": {
            "model": {"name_or_path": str(tiny)},
            "data": {"train": path(tmp / "train"), "validation": path(tmp / "validation"), "max_seq_len": 128},
            "method": "lora",
            "scaling": {"num_workers": 1},
            "optim": {"max_steps": 4, "batch_size": 4, "log_every_steps": 2},
            "eval": {"every_steps": 2},
            "checkpoint": {"every_steps": 4, "keep": 1},
            "tracking": {"mlflow": {}},
        },
        "space": {"optim.lr": {"loguniform": [1e-4, 0.3]}, "lora.r": {"choice": [2, 8]}},
        "scheduler": {"asha": {"grace_period": 2, "reduction_factor": 2}},
        "num_samples": 4,
        "output": {"path": path(tmp / "out")},
    }


def finished_trials(out: Path) -> list[Path]:
    return sorted(out.glob("trials/*/metrics.json"))


@pytest.fixture(scope="module")
def tuned(request, tmp_path_factory):
    """The search started as a command in its folder, killed once a trial has finished, then run again there
    in-process on the test session's Ray (started after the kill: one Ray at a time on the 2 CPUs), which was
    started in another folder."""
    tmp = tmp_path_factory.mktemp("tune")
    config = tune_config(tmp, tmp_path_factory.mktemp("tiny-llama"), relative=True)
    (tmp / "tune.yaml").write_text(yaml.safe_dump(config))
    out = tmp / "out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "THRESHER_LOG_DIR": str(tmp / "logs"),
        "RAY_ADDRESS": "",
    }
    stderr = tmp / "stderr.txt"
    with stderr.open("wb") as err:
        command = subprocess.Popen(
            [sys.executable, "-m", "thresher", "tune", "tune.yaml"],
            cwd=tmp,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 300
    while not finished_trials(out) and command.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # Ray Tune saves its state at most every second (thresher.evaluate.tune)
    os.killpg(command.pid, signal.SIGKILL)
    command.wait()
    first = {p.parent.name: p.stat().st_mtime_ns for p in finished_trials(out)}
    assert first and len(first) < 4, stderr.read_text()
    ray = request.getfixturevalue("ray_local")
    before = set(ray.util.placement_group_table())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THRESHER_LOG_DIR", str(tmp / "logs"))
        mp.chdir(tmp)
        code = cli(["tune", "tune.yaml"])
    return SimpleNamespace(
        code=code,
        tmp=tmp,
        out=out,
        first=first,
        config=config,
        result=json.loads((out / "tune.json").read_text()),
        groups_held=held_groups(ray, before),
    )


def held_groups(ray, before: set[str]) -> list[dict]:
    """The placement groups made since ``before`` that still hold resources 10 s on (their removal is asynchronous)."""
    deadline = time.monotonic() + 10
    while True:
        held = [g for pg, g in ray.util.placement_group_table().items() if pg not in before and g["state"] != "REMOVED"]
        if not held or time.monotonic() > deadline:
            return held
        time.sleep(0.5)


@pytest.mark.slow  # the search of the tuned fixture
def test_a_killed_search_resumes_and_reports_every_trial(tuned):
    assert tuned.code == 0
    result, trials = tuned.result, tuned.result["trials"]
    assert result["resumed"] and len(trials) == 4 and result["max_concurrent_trials"] == 1  # all CPUs but 1 each
    for trial_id, mtime in tuned.first.items():  # finished before the kill: not run again
        assert (tuned.out / "trials" / trial_id / "metrics.json").stat().st_mtime_ns == mtime
    assert {t["state"] for t in trials} <= {"completed", "stopped"}
    stopped = [t for t in trials if t["state"] == "stopped"]
    assert stopped and all(t["steps"] < 4 and t["value"] is None for t in stopped)  # ASHA stopped some early
    assert tuned.groups_held == []  # a stopped trial's workers left none behind (they would hold its CPU for good)
    completed = [t for t in trials if t["state"] == "completed"]
    for t in completed:
        metrics = json.loads((tuned.tmp / t["output"] / "metrics.json").read_text())
        assert [p["value"] for p in t["curve"]] == [e["loss"] for e in metrics["evals"]]
        assert t["value"] == metrics["eval_loss"] and t["steps"] == 4 and t["tokens_per_s"] > 0
        assert metrics["lineage"]["train"]["path"] == tuned.config["train"]["data"]["train"]
        assert {"lora.r", "optim.lr"} == set(t["params"])
    best = min(completed, key=lambda t: t["value"])
    assert result["best"]["id"] == best["id"] and result["best"]["value"] == best["value"]


@pytest.mark.slow  # the search of the tuned fixture
def test_the_search_is_one_mlflow_run_with_a_child_per_trial(tuned):
    from thresher.train.tracking import PARENT_TAG, client

    search = tuned.result["mlflow"]
    assert search["tracking_uri"] == "out/mlruns"  # as the config gives it (the default: in output.path)
    mlflow = client((tuned.out / "mlruns").as_uri())
    parent = mlflow.get_run(search["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["thresher.best_trial"] == tuned.result["best"]["id"]
    assert parent.data.metrics["best_eval_loss"] == tuned.result["best"]["value"]
    runs = mlflow.search_runs([parent.info.experiment_id])
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == search["run_id"]]
    # one per training attempt: the trial running at the kill has two
    assert {r.info.run_name for r in children} == {t["id"] for t in tuned.result["trials"]}
    assert all(PARENT_TAG in r.data.tags for r in runs if r.info.run_id != search["run_id"])


@pytest.mark.slow  # the search of the tuned fixture
def test_the_best_trial_is_exported_as_a_training_config_and_a_model(tuned):
    best = tuned.result["best"]
    config = yaml.safe_load((tuned.out / "best_config.yaml").read_text())
    assert config["optim"]["lr"] == best["params"]["optim.lr"] and config["lora"]["r"] == best["params"]["lora.r"]
    assert config["output"]["path"] == "out/best"
    trial = tuned.out / "trials" / best["id"]
    assert (tuned.out / "best/model/adapter_config.json").read_bytes() == (
        trial / "model/adapter_config.json"
    ).read_bytes()
    assert json.loads((tuned.out / "best/metrics.json").read_text())["eval_loss"] == best["value"]
    page = (tuned.out / "tune.html").read_text()
    assert "<svg" in page and page.count("<polyline") == 4 and "<script" not in page and f"{best['id']} (best)" in page


@pytest.mark.slow  # the search of the tuned fixture
def test_what_the_search_publishes_names_paths_as_the_config_gives_them(tuned):
    """tune.json, tune.html, best_config.yaml, best/metrics.json and the printed summary name the config's relative
    paths, never the folder the search ran in."""
    from thresher.evaluate.tune_report import render_markdown

    result, best = tuned.result, tuned.result["best"]
    assert (result["output"], best["config"], best["model"]) == ("out", "out/best_config.yaml", "out/best/model")
    assert all(t["output"] == f"out/trials/{t['id']}" for t in result["trials"])
    for name in ("tune.json", "tune.html", "best_config.yaml", "best/metrics.json"):
        assert str(tuned.tmp) not in (tuned.out / name).read_text(), name
    assert str(tuned.tmp) not in render_markdown(result)


@pytest.mark.slow  # the search of the tuned fixture
def test_the_best_config_trained_alone_reaches_the_best_trials_metric(tuned, ray_local, monkeypatch):
    """``thresher train out/best_config.yaml``, run where the search ran."""
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tuned.tmp / "logs"))
    monkeypatch.chdir(tuned.tmp)
    assert cli(["train", "out/best_config.yaml", "--set", "output.path=alone"]) == 0
    metrics = json.loads((tuned.tmp / "alone" / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["eval_loss"] == pytest.approx(tuned.result["best"]["value"], rel=1e-4)


def test_the_tracking_uris_password_reaches_no_file_the_search_writes(tmp_path, monkeypatch):
    """tune-config.json, mlflow-run.json and best_config.yaml hold the tracking URI redacted; the MLflow client
    (also of a resumed search, which reads the run's id from mlflow-run.json) gets it whole."""
    from thresher.core.config import validate
    from thresher.evaluate import tune
    from thresher.evaluate.tune_config import TuneConfig

    uri = "http://alice:hunter2-secret@127.0.0.1:9/mlflow"
    train = {"model": {"name_or_path": "m"}, "data": {"train": "t"}, "tracking": {"mlflow": {"tracking_uri": uri}}}
    space = {"optim.lr": {"loguniform": [1e-5, 1e-3]}}
    cfg = validate(TuneConfig, {"train": train, "space": space, "output": {"path": str(tmp_path)}})
    store = SimpleNamespace(
        get_experiment_by_name=lambda name: None,
        create_experiment=lambda name: "1",
        create_run=lambda *args, **kwargs: SimpleNamespace(info=SimpleNamespace(run_id="run-1")),
        log_param=lambda *args: None,
    )
    clients = []
    monkeypatch.setattr("thresher.train.tracking.client", lambda u: clients.append(u) or store)
    for _ in range(2):  # started, then resumed
        tune._check_record(cfg, train, str(tmp_path))
        trial_base, search = tune._search_run(cfg, train, str(tmp_path))
        assert (
            search == {"tracking_uri": uri, "run_id": "run-1"}
            and trial_base["tracking"]["mlflow"]["tracking_uri"] == uri
        )
    assert clients == [uri]
    (tmp_path / "trials/t1/model").mkdir(parents=True)
    (tmp_path / "trials/t1/metrics.json").write_text("{}")
    tune._export_best({"id": "t1", "params": {"optim.lr": 1e-4}, "value": 1.0}, train, str(tmp_path), "out", None)
    written = {p.name: p.read_text() for p in tmp_path.iterdir() if p.is_file()}
    assert sorted(written) == ["best_config.yaml", "mlflow-run.json", "tune-config.json"]
    assert all("http://alice:***@127.0.0.1:9/mlflow" in text for text in written.values()), written
    assert not any("hunter2-secret" in text for text in written.values()), written


def test_a_key_outside_the_training_config_exits_2_naming_it(tmp_path, capsys):
    config = {
        "train": {"model": {"name_or_path": "m"}, "data": {"train": "t", "validation": "v"}},
        "space": {"optim.learning_rate": {"loguniform": [1e-5, 1e-3]}},
        "output": {"path": str(tmp_path)},
    }
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(config))
    assert cli(["tune", str(tmp_path / "tune.yaml")]) == 2
    assert "space.optim.learning_rate: no key optim.learning_rate" in capsys.readouterr().err
    config["space"] = {"lora.r": {"choice": [8, 0]}}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(config))
    assert cli(["tune", str(tmp_path / "tune.yaml")]) == 2
    assert "space.lora.r: value 0: lora.r: Input should be greater than 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, error",
    [
        ("space.lora.r={uniform: [4, 16]}", "space.lora.r: uniform samples fractional numbers, which lora.r does not"),
        ("space={lora: {r: {loguniform: [4, 16]}}}", "space.lora.r: loguniform samples fractional numbers"),
        ("space.optim.lr={loguniform: [0, 1]}", "space.optim.lr: loguniform: [low, high] with low < high"),
        ("space.optim.warmup_steps={uniform: [0.5, 10]}", "space.optim.warmup_steps: uniform samples fractional"),
    ],
)
def test_a_distribution_the_key_cannot_take_exits_2_naming_it(tmp_path, capsys, override, error):
    """An integer key searched by a continuous distribution (whose ends alone are valid), a key set with --set as the
    space writes it (optim.lr) or nested (lora.r)."""
    config = {
        "train": {"model": {"name_or_path": "m"}, "data": {"train": "t", "validation": "v"}},
        "space": {"optim.lr": {"loguniform": [1e-5, 1e-3]}},
        "output": {"path": str(tmp_path)},
    }
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(config))
    assert cli(["tune", str(tmp_path / "tune.yaml"), "--set", override]) == 2
    assert error in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, error",
    [
        ("train.data.validation=validation", "train.data.validation: no Parquet files at validation"),
        (
            "train.model.name_or_path=pkg:thresher_no_such_model",
            "train.model.name_or_path: no installed Python package 'thresher_no_such_model'",
        ),
        (
            "train.model.name_or_path=thresher-tests/no-such-model",  # a hub id not in the local cache
            "train.model.name_or_path: cannot load a tokenizer from 'thresher-tests/no-such-model'",
        ),
    ],
)
def test_missing_data_or_model_exits_2_naming_the_key_before_any_trial(tmp_path, monkeypatch, capsys, override, error):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train").mkdir()
    pq.write_table(pa.table({"text": texts(gsm8k(2))}), tmp_path / "train/part-0.parquet")
    config = {
        "train": {
            "model": {"name_or_path": "pkg:thresher_no_such_model"},
            "data": {"train": "train", "validation": "train"},
        },
        "space": {"optim.lr": {"loguniform": [1e-5, 1e-3]}},
        "output": {"path": "out"},
    }
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(config))
    assert cli(["tune", "tune.yaml", "--set", override]) == 2
    assert error in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_search_whose_trials_failed_says_why_and_a_rerun_runs_them_again(ray_local, tmp_path, monkeypatch, capsys):
    """Its one trial fails (a file where its checkpoint folder goes): the command exits 1 with that trial's error
    and what to do next; the file removed, the same command runs the trial again, to the end."""
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tmp_path / "logs"))
    config = tune_config(tmp_path, tmp_path / "tiny-llama")
    config["train"].update(
        optim={"max_steps": 2, "batch_size": 4},
        checkpoint={"storage_path": str(tmp_path / "ckpt")},
        eval={},
        tracking={},
    )
    config.update(space={"optim.lr": {"choice": [1e-3]}}, scheduler=None, num_samples=1)
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "ckpt").write_text("not a folder")
    assert cli(["tune", str(tmp_path / "tune.yaml")]) == 1
    err = capsys.readouterr().err
    failed = re.search(r"no trial completed \(1 failed\); trial (\w+) failed with \w+Error: .*ckpt", err)
    assert failed, err
    assert f"run the same command again (it runs the failed trials again), or delete {tmp_path / 'out'} to" in err
    (tmp_path / "ckpt").unlink()
    assert cli(["tune", str(tmp_path / "tune.yaml")]) == 0
    result = json.loads((tmp_path / "out/tune.json").read_text())
    assert result["resumed"] and [(t["id"], t["state"], t["steps"]) for t in result["trials"]] == [
        (failed[1], "completed", 2)
    ]


def test_concurrent_trials_default_to_what_the_cluster_fits():
    from thresher.core.config import validate
    from thresher.evaluate.tune import trials_that_fit
    from thresher.train.config import TrainConfig

    def train(**scaling) -> TrainConfig:
        return validate(
            TrainConfig,
            {"model": {"name_or_path": "m"}, "data": {"train": "t"}, "scaling": scaling, "output": {"path": "o"}},
        )

    assert trials_that_fit(train(num_workers=2), {"CPU": 16.0}) == 1  # a CPU run takes all CPUs but one
    assert trials_that_fit(train(num_workers=2, resources_per_worker={"CPU": 2}), {"CPU": 17.0}) == 4
    assert trials_that_fit(train(num_workers=2, use_gpu=True), {"CPU": 16.0, "GPU": 8.0}) == 4
    assert trials_that_fit(train(num_workers=4, use_gpu=True), {"CPU": 16.0, "GPU": 2.0}) == 1
