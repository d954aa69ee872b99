"""The terminal of a command: Ray's output goes to the log file, the terminal shows phases and the summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RAY_NOISE = re.compile(r"\bINFO\b|streaming_executor|Execution plan|Token authentication|core_worker|logging_progress")


def test_curate_prints_phases_and_summary_and_logs_the_details(ray_local, tmp_path):
    cfg = {
        "input": {"paths": [str(ROOT / "examples/corpus/web-00.jsonl")]},
        "output": {"path": str(tmp_path / "out")},
        "stages": [{"normalize": {}}, {"dedup_exact": {}}, {"split": {}}],
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "THRESHER_LOG_DIR": str(tmp_path / "logs")}
    address = ray_local.get_runtime_context().gcs_address
    started = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "thresher", "curate", str(tmp_path / "cfg.yaml"), "--address", address],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.perf_counter() - started
    assert res.returncode == 0, res.stderr
    # where the time went: phases back to back make the command's wall time; every stage's tasks have a time
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    timing = manifest["timing"]
    assert abs(sum(timing["phases"].values()) - timing["wall_s"]) < 0.01 * len(timing["phases"])
    # the manifest's time runs from the process's start to its commit: the exit after it (summary, interpreter
    # shutdown, ~0.2 s, 0.6 s on a busy machine) is outside; it never exceeds the time seen from outside
    assert 0 <= wall - timing["wall_s"] <= 0.1 * wall + 1.0, (timing, wall)
    assert set(timing["tasks"]) == {
        "read",
        "normalize",
        "unique_ids",
        "dedup_exact",
        "split",
        "apply1",
        "write",
        "report",
    }, timing["tasks"]
    assert timing["tasks"]["normalize"]["rows"] == manifest["counts"]["by_stage"]["normalize"]["in"]
    assert all(timing["tasks"][t]["seconds"] > 0 for t in ("read", "normalize", "dedup_exact", "write"))
    shown = res.stdout + res.stderr
    assert not RAY_NOISE.search(shown), shown
    lines = shown.splitlines()
    (log,) = (tmp_path / "logs").glob("curate-*.log")
    assert lines[0] == f"log: {log}"
    assert any(re.fullmatch(r"read and map stages: \d+ records in [\d.]+ s", l) for l in lines), shown
    assert any(l.startswith("decide: unique_ids, dedup_exact, split: in ") for l in lines), shown
    # the figures of the phases' last lines are the manifest's, not a progress poll's (which can lag behind)
    counts = json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]
    figures = {
        m[1]: int(m[2].replace(",", "")) for m in (re.fullmatch(r"(.+): ([\d,]+) records in .*", l) for l in lines) if m
    }
    assert figures == {
        "read and map stages": counts["input"],
        "apply decisions, write": counts["by_stage"]["unique_ids"]["in"],
    }, (figures, counts)
    assert any(l.startswith("stage ") for l in lines) and "output: " in lines[-1], shown
    assert len(lines) < 25, shown
    text = log.read_text()
    assert "thresher.curate.decide: dedup_exact: {'in': 150, 'out': 146" in text  # the details, kept in the log


def test_a_phase_says_what_is_starting_until_something_is_counted(monkeypatch):
    """While nothing is counted yet (workers starting, a model loading) the line says so, not "0 records"."""
    import io

    from thresher.core import console as console_module

    monkeypatch.setattr(console_module, "PLAIN_EVERY_S", 0.0)
    out = io.StringIO()
    phase = console_module._PlainPhase(out, "generate", "records", "loading the model on the workers")
    phase.update(0, 256)
    phase.update(64, 256)
    phase.finish(256, 3.0)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("generate: loading the model on the workers (") and "0 records" not in lines[0]
    assert lines[1].startswith("generate: 64") and lines[2] == "generate: 256 records in 3.0 s"


def test_an_estimated_total_says_about(monkeypatch):
    """The read's total is estimated from the read tasks done: the line says "of about", an exact total does not."""
    import io

    from thresher.core import console as console_module

    monkeypatch.setattr(console_module, "PLAIN_EVERY_S", 0.0)
    out = io.StringIO()
    phase = console_module._PlainPhase(out, "read and map stages", "records", "starting")
    phase.update(267, console_module.Estimate(400))
    phase.update(300, 380)
    first, second = out.getvalue().splitlines()
    assert first.startswith("read and map stages: 267 records of about 400, ")
    assert second.startswith("read and map stages: 300 records of 380, ")


def test_a_run_is_timed_from_pythons_start_even_when_a_shell_became_python():
    """``bash -c "pip install ... && thresher curate ..."`` runs thresher in the shell's own process: the command's
    time (the manifest's first phase, the summary's total) starts about when Python did, not when the shell did; a
    command started on its own starts when its process did."""
    probe = "import time; from thresher.curate.timing import process_started; print(time.perf_counter() - process_started())"
    exec_d = subprocess.run(
        ["bash", "-c", f"sleep 3; exec {sys.executable} -c '{probe}'"], capture_output=True, text=True, check=True
    )
    alone = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert 0 < float(exec_d.stdout) < 2.5 and 0 < float(alone.stdout) < 2.5, (exec_d.stdout, alone.stdout)


def run_logged(script: str, log_dir: Path) -> tuple[subprocess.CompletedProcess, str]:
    """``script`` run by Python in a process of its own with its log files in ``log_dir``; the run and its log."""
    res = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "THRESHER_LOG_DIR": str(log_dir)},
    )
    return res, next(log_dir.glob("*.log")).read_text()


FAILING = """
import sys
from thresher import cli

def fail(args):
    raise RuntimeError("cannot open s3://AKIAEXAMPLE:wJalrXUtnFEMIsecret@bucket/x")

cli.COMMANDS["report"] = fail
sys.exit(cli.main(["report", "run"]))
"""


def test_a_failures_traceback_goes_to_the_log_file_without_the_password(tmp_path):
    res, log = run_logged(FAILING, tmp_path)
    assert res.returncode == 1 and "Traceback" in log and "s3://AKIAEXAMPLE:***@bucket/x" in log, log
    assert "wJalrXUtnFEMIsecret" not in log + res.stdout + res.stderr


RAY_FAILING = """
import sys
import ray
from thresher import cli

def fail(args):
    ray.init(num_cpus=1, include_dashboard=False)
    parse = ray.remote(lambda: __import__("json").loads("{"))
    ray.get(parse.remote())

cli.COMMANDS["report"] = fail
sys.exit(cli.main(["report", "run"]))
"""


def test_a_task_that_failed_on_ray_is_named_by_its_root_error_and_the_traceback_left_in_the_log(tmp_path):
    res, log = run_logged(RAY_FAILING, tmp_path)
    said = [line for line in res.stderr.splitlines() if line.startswith("thresher: failed: ")]
    assert res.returncode == 1 and said == [
        "thresher: failed: json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes: line 1 "
        f"column 2 (char 1) (raised on Ray; the traceback is in {next(tmp_path.glob('*.log'))})"
    ], res.stderr
    assert "RayTaskError" in log and "Traceback" in log


FORWARDING = """
import sys
from ray._private.worker import print_to_stdstream
from thresher.core.console import Console

line = "mlflow: cannot reach https://user:hunter2secret@tracking.example/api"
with Console("forwarded"):
    for is_err in (True, False):
        print_to_stdstream({"pid": 4242, "ip": "10.0.0.2", "is_err": is_err, "lines": [line]}, ignore_prefix=False)
    print("at exit: s3://KEY:hunter2secret@bucket/x", file=sys.stderr)
print(type(sys.stdout).__name__, type(sys.stderr).__name__)
"""


def test_what_ray_forwards_from_its_workers_reaches_the_log_file_without_the_password(tmp_path):
    """Ray prints its workers' output (here lines as its log forwarding hands them over) to sys.stdout and sys.stderr
    as they are when it prints; in a command's console they hide passwords, as its log lines do, and are given back
    at its end."""
    res, log = run_logged(FORWARDING, tmp_path)
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "TextIOWrapper TextIOWrapper", res.stderr
    assert log.count("https://user:***@tracking.example/api") == 2 and "s3://KEY:***@bucket/x" in log, log
    assert "hunter2secret" not in log + res.stdout + res.stderr


def test_the_failure_named_is_the_root_exception_not_rays_wrappers_or_advice():
    """A tokenize task's error as a worker gets it: wrapped by the actors it passed through, followed by Ray Data's
    advice on retries."""
    from thresher.core.console import root_cause

    text = (
        "RayTaskError(UserCodeException): ray::SplitCoordinator.get() (pid=1, ip=10.0.0.1)\n"
        '  File "data.py", line 225, in encode_records\n'
        "TypeError: object of type 'int' has no len()\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "ray::SplitCoordinator.get() (pid=1, ip=10.0.0.1)\n"
        "ray.exceptions.UserCodeException: UDF failed to process a data block.\n"
        "Failed to apply UDF transform after 1/1 attempts (total backoff 0.0s).\n"
        "To change retry attempts, backoff, or which errors are retried, configure `ray.data.DataContext`."
    )
    assert root_cause(RuntimeError(text)) == "TypeError: object of type 'int' has no len()"
    assert root_cause(RuntimeError("a plain message\nits last line")) == "RuntimeError: its last line"
    assert root_cause(KeyError()) == "KeyError"
