"""A ``thresher`` command ended by SIGTERM or by Ctrl-C (SIGINT to its process group) stops with exit 143 or 130,
leaves none of its Ray processes behind, and the same command run again finishes the run; an embedded Ray that
fails to start is stopped and started again (``THRESHER_RAY_START_ATTEMPTS``), and the last failure names that
setting. The commands run as a user runs them (``python -m thresher``), each on its own embedded Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import run_cli, start_cli

pytestmark = pytest.mark.slow

QUICKSTART = ["curate", "examples/quickstart.yaml", "--output"]


def curate(out: Path, **env: str) -> subprocess.Popen:
    return start_cli(*QUICKSTART, str(out), **env)


def finished(out: Path) -> dict:
    """The finished run's manifest, its accounting checked."""
    m = json.loads((out / "manifest.json").read_text())
    counts = m["counts"]
    assert counts["input"] == 380 == counts["output"] + counts["rejected"], counts
    return m


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The quickstart's manifest, run once without a signal."""
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    done = run_cli(*QUICKSTART, str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return finished(out)


@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_ends_the_run_within_10_s_and_the_same_command_finishes_it(uninterrupted, tmp_path, sig, code, said):
    """Ended once the run has started: the exit code of the signal within 10 s, no Ray process left, no manifest;
    the same command then finishes the run with the records and the output digests of one never interrupted."""
    out = tmp_path / "out"
    command = curate(out)
    deadline = time.monotonic() + 300
    while not (out / "_progress" / "run.json").exists() and command.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the run has started: Ray is up and the run folder holds its progress
    assert command.poll() is None, command.communicate()[1][-3000:]
    ray_processes = psutil.Process(command.pid).children(recursive=True)
    assert ray_processes
    started = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(command.pid, sig)  # what Ctrl-C does: the whole foreground process group
    else:
        command.send_signal(sig)
    _, err = command.communicate(timeout=120)
    took = time.monotonic() - started
    assert command.returncode == code and f"thresher: {said}" in err and took < 10, (took, err[-3000:])
    _, alive = psutil.wait_procs(ray_processes, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    assert not (out / "manifest.json").exists()
    again = run_cli(*QUICKSTART, str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = finished(out)
    assert resumed["counts"] == uninterrupted["counts"] and resumed["digests"] == uninterrupted["digests"]


def test_an_embedded_ray_that_fails_to_start_is_started_again(tmp_path):
    """Ray's temporary folder is a file at the first attempt (Ray's start fails), removed once thresher says it
    tries again: the second attempt starts Ray and the run finishes."""
    blocker = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp")) / "t"  # short: Ray's socket paths go under it
    blocker.write_text("a file where Ray's temporary folder goes")
    out = tmp_path / "out"
    command = curate(out, RAY_TMPDIR=str(blocker), THRESHER_RAY_START_ATTEMPTS="3")
    said = []
    for line in command.stderr:
        said.append(line)
        if "attempt 1 of 3, trying again in 2 s" in line:
            blocker.unlink()
            break
    _, err = command.communicate(timeout=600)
    assert command.returncode == 0, "".join(said) + err[-3000:]
    assert "starting the embedded Ray failed (NotADirectoryError" in said[-1]
    finished(out)


def test_a_start_that_keeps_failing_names_the_setting_and_leaves_no_ray(tmp_path):
    blocker = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp")) / "t"
    blocker.write_text("a file where Ray's temporary folder goes")
    command = curate(tmp_path / "out", RAY_TMPDIR=str(blocker), THRESHER_RAY_START_ATTEMPTS="2")
    _, err = command.communicate(timeout=300)
    assert command.returncode == 1
    assert "attempt 1 of 2, trying again in 2 s" in err
    assert "starting the embedded Ray failed after 2 attempt(s): NotADirectoryError" in err
    assert "THRESHER_RAY_START_ATTEMPTS=2 may be raised" in err
    assert not (tmp_path / "out").exists()
