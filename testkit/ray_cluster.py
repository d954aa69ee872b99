"""A Ray cluster of separate ``ray start`` processes on loopback, with token auth: a head and worker nodes."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def start_local_ray(**resources: float) -> None:
    """A local Ray in this process, started as thresher starts its embedded one (its system config and
    environment), quiet and without the dashboard; ``resources``: ``num_cpus``, ``num_gpus``."""
    import ray

    from thresher.runtime import EMBEDDED_SYSTEM_CONFIG, embedded_environment

    embedded_environment()
    ray.init(
        address="local",
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        _system_config=EMBEDDED_SYSTEM_CONFIG,
        **resources,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class RayHead:
    """A Ray cluster started with ``ray start`` on loopback with token auth: a head and worker nodes.

    The nodes' IP is 127.0.0.2: Ray replaces 127.0.0.1 by the machine's outward address, and traffic here
    stays on loopback. The dashboard (the Jobs API) listens on 127.0.0.1. The nodes keep their files in their
    own temp dir: ``ray start`` records its address in ``<temp dir>/ray_current_cluster``, where Ray's state
    API in the session's local Ray (Ray Train's controller watchdog) would otherwise find and query it.
    """

    NODE_IP = "127.0.0.2"

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.token = secrets.token_hex(16)
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        # The nodes get no AWS settings: a job reaches S3 with what its submitter passes (thresher submit).
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_") and k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
        }
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        self.procs: list[subprocess.Popen] = []
        self.temp_dir = tempfile.mkdtemp(prefix="ray-head-")  # short: Ray's socket paths live under it
        script = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
        # Ray unpacked onto PYTHONPATH (the GPU bundle) has no script: its CLI module runs the same commands
        self.ray_command = [script] if Path(script).exists() else [sys.executable, "-m", "ray.scripts.scripts"]

    @property
    def address(self) -> str:
        return f"{self.NODE_IP}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, args: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        # Each node's dashboard agent gets its own port: the default (52365) is taken by any other Ray on the
        # machine, and a head whose agent cannot listen refuses Jobs API submissions.
        args = [
            *args,
            f"--node-ip-address={self.NODE_IP}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
        ]
        p = subprocess.Popen(
            [*self.ray_command, "start", "--block", *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def start_head(self, num_cpus: int = 1, dashboard: bool = True) -> None:
        """``dashboard=False``: no dashboard (Ray without its ``default`` extra's packages, as on the GPU bundle's
        machine); the alive nodes are then counted by a driver."""
        self.dashboard = dashboard
        # The head stops at once when told (no 30 s drain): nothing runs on it after the tests.
        self._start(
            [
                "--head",
                f"--port={self.gcs_port}",
                *(
                    [
                        "--include-dashboard=true",
                        "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={self.dashboard_port}",
                    ]
                    if dashboard
                    else ["--include-dashboard=false"]
                ),
                f"--num-cpus={num_cpus}",
            ],
            "head",
            env={"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},
        )
        _wait_for_port(self.gcs_port, self.NODE_IP)
        if dashboard:
            _wait_for_port(self.dashboard_port, timeout=120)
        self.wait_for_nodes(1)

    def alive_nodes(self) -> int:
        """Alive nodes, from the dashboard's state API (with the token), or from a driver without a dashboard."""
        if not getattr(self, "dashboard", True):
            count = "import ray; ray.init(address=%r, log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
            done = subprocess.run(
                [sys.executable, "-c", count % self.address], env=self.env, capture_output=True, text=True, timeout=60
            )
            return int(done.stdout.split()[-1]) if done.returncode == 0 and done.stdout.split() else 0
        import requests

        r = requests.get(
            f"{self.dashboard_url}/api/v0/nodes", headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        r.raise_for_status()
        return sum(n["state"] == "ALIVE" for n in r.json()["data"]["result"]["result"])

    def wait_for_nodes(self, n: int, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.alive_nodes() == n:
                    return
            except Exception:
                pass
            time.sleep(1)
        raise TimeoutError(f"the cluster did not reach {n} alive nodes in {timeout}s")

    def add_worker(self, num_cpus: int = 1) -> subprocess.Popen:
        before = self.alive_nodes()
        p = self._start([f"--address={self.address}", f"--num-cpus={num_cpus}"], f"worker{len(self.procs)}")
        self.wait_for_nodes(before + 1)
        return p

    def stop_node(self, p: subprocess.Popen) -> None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        for p in reversed(self.procs):
            self.stop_node(p)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"== {f.name}\n{f.read_text(errors='replace')[-4000:]}" for f in self.tmp.glob("*.log"))
