"""Shared fixtures: one local Ray per test run, a real S3 server on loopback, a token-auth Ray head; the suite's
data files (``tests/data``, see its README.md: everything a test reads ships with the repository).

The AWS environment is set at import, before any Ray process starts, so every worker reaches the
test S3 server exactly as it would reach AWS or MinIO: through AWS_ENDPOINT_URL and credentials.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.ray_cluster import RayHead, free_port, start_local_ray

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

S3_PORT = free_port()
os.environ.update(
    AWS_ACCESS_KEY_ID="thresher-test-key",
    AWS_SECRET_ACCESS_KEY="thresher-test-secret-9f8e7d6c5b4a",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    AWS_ENDPOINT_URL=f"http://127.0.0.1:{S3_PORT}",
)
# Ray Train's controller collects the workers' reports every 0.5 s instead of 2 s (a worker reporting a checkpoint
# waits until the report before it was collected; Ray Train passes the variable to its processes)
os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.5"
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("RAY_ADDRESS", None)


# Fixtures that start Ray, the S3 server or a Ray head: a test that uses one (itself or through another fixture) is
# marked slow, as are those marked by hand (they start Ray some other way); ``pytest -m "not slow"`` runs the rest.
STARTS_SERVICES = {"ray_local", "ray_head", "s3_server"}


def pytest_collection_modifyitems(items):
    for item in items:
        if STARTS_SERVICES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def data_path(rel: str) -> Path:
    """A file of tests/data, or of the repository where ``rel`` starts with ``examples/`` (the examples' data, which
    the suite reads too); a missing one is an error of the checkout, never a reason to skip."""
    p = ROOT / rel if rel.startswith("examples/") else DATA / rel
    assert p.exists(), f"{p} is missing: it ships with the repository"
    return p


@pytest.fixture(scope="session")
def ray_local():
    """The test run's one local Ray instance (2 CPUs)."""
    import ray

    if not ray.is_initialized():
        start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 server on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_PORT, verbose=False)
    server.start()
    yield os.environ["AWS_ENDPOINT_URL"]
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket created through the S3 API; yields its name."""
    import boto3

    name = f"thresher-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A token-auth Ray head plus one worker node on loopback, torn down after the session."""
    head = RayHead(tmp_path_factory.mktemp("ray-head"))
    try:
        head.start_head(num_cpus=1)
        head.add_worker(num_cpus=1)
    except Exception as e:
        head.stop()
        raise RuntimeError(f"could not start a Ray head:\n{head.logs()}") from e
    yield head
    head.stop()


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run the ``thresher`` CLI in a subprocess, as a user would."""
    cmd = [sys.executable, "-m", "thresher", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd
    )


def start_cli(*args: str, **env: str) -> subprocess.Popen:
    """Start the ``thresher`` CLI in a subprocess of its own session (a signal sent to it reaches it alone), its
    output piped, ``env`` added to this process's environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "thresher", *args],
        cwd=ROOT,
        text=True,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
