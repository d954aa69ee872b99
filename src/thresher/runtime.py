"""Where Ray runs: an embedded local instance by default, or the cluster at ``--address`` / ``RAY_ADDRESS``."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)
# Ray Train's placement-group watchdog asks the state API, served by the dashboard, whether the controller lives;
# an embedded Ray starts no dashboard, so without this it warns on every poll of a healthy run.
QUIET_IN_EMBEDDED_RAY = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


# The embedded raylet connects to its own object store as it starts, and a try made before the store listens waits
# ``raylet_client_connect_timeout_milliseconds`` (1 s by default) for the next one: in most starts on 2 cores. Short
# waits, more tries: the same 10 s bound on the connections of the raylet and its workers.
class Terminated(BaseException):
    """SIGTERM, raised in the main thread so a command unwinds as from Ctrl-C (``finally`` blocks stop Ray, staging
    stays for the next run) and exits 143."""


def _terminate(signum, frame):
    raise Terminated()


def end_on_sigterm() -> None:
    """SIGTERM raises :class:`Terminated` in the main thread (the ``thresher`` command's; :func:`ray_session` puts it
    back after Ray's ``init``, whose handler exits at once with status 15)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


START_ATTEMPTS = 3  # Ray starts or connections tried (THRESHER_RAY_START_ATTEMPTS)
EMBEDDED_SYSTEM_CONFIG = {"raylet_client_connect_timeout_milliseconds": 20, "raylet_client_num_connect_attempts": 500}


def quiet_embedded_workers() -> None:
    """``worker_process_setup_hook`` of the embedded Ray: silences the warnings above in its worker processes."""
    for name in QUIET_IN_EMBEDDED_RAY:
        logging.getLogger(name).setLevel(logging.ERROR)


class ProgressCounter:
    """A Ray actor that tasks add their progress to (fire and forget) and the driver polls."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def add(self, counts: dict[str, int]) -> None:
        for name, n in counts.items():
            self.counts[name] = self.counts.get(name, 0) + n

    def put(self, counts: dict[str, int]) -> None:
        self.counts.update(counts)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


def progress_counter():
    """A ``ProgressCounter`` actor when a console shows progress, else None (nothing to report to). It lives on the
    driver's node, so losing a worker node does not take it along (and it is restarted, counting from zero, if its
    process dies)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from thresher.core.console import current

    if not current().shows_progress:
        return None
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(num_cpus=0, max_restarts=-1, scheduling_strategy=here)(ProgressCounter).remote()


def progress_counts(counter) -> dict[str, int]:
    """What the tasks have added to ``counter`` so far (raises after 10 s, e.g. while the actor restarts)."""
    import ray

    return ray.get(counter.snapshot.remote(), timeout=10)


def _exit_after_this() -> tuple[str, int]:
    import ray

    return ray.get_runtime_context().get_node_id(), os.getpid()


def retire_workers(timeout_s: float = 10.0) -> None:
    """End the idle worker processes, so that the next phase of a command starts fresh ones: a worker keeps the
    memory its allocators and the object store's pages reached in earlier phases, and a phase run on the same
    workers adds its own peak on top. One task per CPU ends the worker it runs on (``max_calls=1``); the driver
    waits (at most ``timeout_s``) until those of its node are gone."""
    import ray

    task = ray.remote(num_cpus=1, max_calls=1)(_exit_after_this)
    here = ray.get_runtime_context().get_node_id()
    deadline = time.monotonic() + timeout_s
    refs = [task.remote() for _ in range(int(ray.cluster_resources().get("CPU", 0)))]
    done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
    for ref in pending:  # CPUs another job holds: their workers stay
        ray.cancel(ref)
    pids = [pid for node, pid in ray.get(done) if node == here]
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)


def wait_for_idle_cpus(timeout_s: float = 30.0) -> None:
    """After a failure, wait (at most ``timeout_s``) until no task holds a CPU. Ray Data stops scheduling but does not
    interrupt a task blocked in I/O (a storage endpoint that went away), and a rerun in the same Ray session must
    not race such a task still writing into the run folder."""
    import ray

    deadline = time.monotonic() + timeout_s
    total = ray.cluster_resources().get("CPU", 0)
    while time.monotonic() < deadline and ray.available_resources().get("CPU", 0) < total:
        time.sleep(0.2)


def cluster_info(resources: dict) -> dict[str, int | float]:
    """The live nodes and the CPUs of the session (``resources``: what :func:`ray_session` yielded)."""
    import ray

    return {"nodes": sum(1 for n in ray.nodes() if n.get("Alive")), "cpus": resources.get("CPU", 0)}


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def resolve_address(address: str | None) -> str | None:
    """The cluster address to use: the explicit one, else ``RAY_ADDRESS``, else None (embedded)."""
    return address or os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, ray_train: bool = False) -> Iterator[dict]:
    """Connect to Ray for the duration of a command and yield the cluster's resources.

    Without an address an embedded local Ray starts and stops with the command; ``ray_train``: the command runs
    Ray Train (its workers get ``quiet_embedded_workers``, a setup hook that costs about a second at start). If Ray
    is already initialised in this process (tests, notebooks), that session is used and left running.
    """
    import ray

    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    addr = resolve_address(address)
    kwargs: dict = {"log_to_driver": True, "configure_logging": False}
    ends_on_sigterm = signal.getsignal(signal.SIGTERM) is _terminate
    if addr:
        log.info("connecting to Ray at %s", addr)
        start = functools.partial(ray.init, address=addr, **kwargs)
    else:
        log.info("starting an embedded local Ray")
        if ray_train:
            kwargs["runtime_env"] = {"worker_process_setup_hook": "thresher.runtime.quiet_embedded_workers"}
        start = functools.partial(
            ray.init,
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _system_config=EMBEDDED_SYSTEM_CONFIG,
            **kwargs,
        )
    try:
        _start_with_retries(
            start,
            "connecting to Ray at " + addr if addr else "starting the embedded Ray",
            ConnectionError if addr else Exception,
        )
    except SystemExit as e:  # Ray's own SIGTERM handler, in place while ray.init runs
        ray.shutdown()
        if ends_on_sigterm and e.code == signal.SIGTERM:
            raise Terminated() from None
        raise
    if not addr:
        _stop_autoscaler_monitor()
    if ends_on_sigterm:
        end_on_sigterm()
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


def _start_with_retries(start, what: str, retried: type[BaseException]) -> None:
    """``start()``, tried again after a failure of the ``retried`` kind (Ray's start timing out on a busy machine, a
    head not up yet), Ray's processes stopped in between, with waits of 2, 4, 8, ... s up to
    ``THRESHER_RAY_START_ATTEMPTS`` attempts (default 3); the last failure names that setting."""
    import ray

    attempts = max(1, int(os.environ.get("THRESHER_RAY_START_ATTEMPTS", START_ATTEMPTS)))
    for attempt in range(1, attempts + 1):
        try:
            start()
            return
        except retried as e:
            ray.shutdown()
            if attempt == attempts or isinstance(e, (ValueError, TypeError)):
                raise RuntimeError(
                    f"{what} failed after {attempt} attempt(s): {type(e).__name__}: {e} (on a busy "
                    f"machine, THRESHER_RAY_START_ATTEMPTS={attempts} may be raised)"
                ) from e
            wait = min(30, 2**attempt)
            log.warning(
                "%s failed (%s: %s); attempt %d of %d, trying again in %d s",
                what,
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
                attempt,
                attempts,
                wait,
            )
            time.sleep(wait)


def _stop_autoscaler_monitor() -> None:
    """Kill the embedded Ray's autoscaler monitor as soon as it started: a local Ray has nothing to scale, the monitor
    holds ~50 MB all along, and ``ray.shutdown`` (which stops the processes one after the other) would wait a second
    for it, as it ignores SIGTERM."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    for info in (getattr(node, "all_processes", None) or {}).get("monitor", []):
        with contextlib.suppress(OSError):
            info.process.kill()
            info.process.wait(timeout=5)
