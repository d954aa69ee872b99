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

from thresher.core.config import ConfigError

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


def signal_inside(error: BaseException) -> BaseException | None:
    """The SIGTERM or Ctrl-C exception ``error`` wraps: raised by the signal's handler inside one of Ray's compiled
    calls (``get``, ``wait``), it comes out as a ``SystemError`` caused by it."""
    if isinstance(error, SystemError) and isinstance(error.__cause__, (Terminated, KeyboardInterrupt)):
        return error.__cause__
    return None


SIGNAL_EXITS = {signal.SIGTERM: (143, "terminated"), signal.SIGINT: (130, "interrupted")}  # exit code, what is said


@contextlib.contextmanager
def ending_at_once(address: str | None) -> Iterator[None]:
    """Around a call that cleans up at length when an exception reaches it (Ray Tune's ``fit`` gives its trials'
    actors up to 10 s to stop): SIGTERM and Ctrl-C end the ``thresher`` command's process there, as a crash would,
    its embedded Ray's processes killed first; what the call saved as it went (Ray Tune's search state, the trials'
    checkpoints) is what a re-run resumes from. Elsewhere (a test or a notebook calling in-process) it does nothing."""
    if signal.getsignal(signal.SIGTERM) is not _terminate or threading.current_thread() is not threading.main_thread():
        yield
        return
    import sys

    from thresher.core.console import current

    def end(signum, frame):
        code, said = SIGNAL_EXITS[signum]
        print(f"thresher: {said}", file=getattr(current(), "errors", sys.stderr), flush=True)  # not the log file
        if resolve_address(address) is None:
            _stop_embedded(graceful=False)
        sys.stdout.flush()
        os._exit(code)

    previous = {sig: signal.getsignal(sig) for sig in SIGNAL_EXITS}
    disabled = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ray Tune's own: a graceful stop that returns the trials so far
    for sig in SIGNAL_EXITS:
        signal.signal(sig, end)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if disabled is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER")
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = disabled


def end_on_sigterm() -> None:
    """SIGTERM raises :class:`Terminated` in the main thread (the ``thresher`` command's; :func:`ray_session` puts it
    back after Ray's ``init``, whose handler exits at once with status 15)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


def in_worker_thread(fn, *args):
    """``fn(*args)``, run in a thread of its own while the main thread waits for it: Ray Train's ``fit`` and Ray
    Tune's, called from the main thread, put in SIGINT handlers of their own (a graceful abort that returns as if
    the run had ended, and may take long); waiting here, the main thread keeps thresher's, so Ctrl-C and SIGTERM end
    the command at once (130, 143) and :func:`ray_session` stops Ray, the thread with it. In a Ray actor
    (``thresher tune``'s trial driver, which a SIGINT aborts) ``fn`` runs in this thread, where Ray Train's handler
    aborts the run, its workers and placement group removed: a KeyboardInterrupt would leave them running, and the
    group, which outlives the actor, holding the cluster's CPUs for good."""
    import ray

    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        return fn(*args)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as e:  # handed to the main thread
            outcome["error"] = e

    thread = threading.Thread(target=run, name=getattr(fn, "__name__", "run"), daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


START_ATTEMPTS = 3  # Ray starts or connections tried (THRESHER_RAY_START_ATTEMPTS)
EMBEDDED_SYSTEM_CONFIG = {"raylet_client_connect_timeout_milliseconds": 20, "raylet_client_num_connect_attempts": 500}
# Ray's defaults for a cluster that cost the embedded Ray a process each, per training run: Ray Train's preemption
# watcher (one machine is not preempted) and Ray Data's Parquet footer readers (32 actors per listing, for many files
# on object storage; one reads a local run's files). Set in the environment, a user's values win.
EMBEDDED_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1"}


def embedded_environment() -> None:
    """:data:`EMBEDDED_ENV` in this process's environment, which the embedded Ray's processes inherit."""
    for name, value in EMBEDDED_ENV.items():
        os.environ.setdefault(name, value)


def quiet_embedded_workers() -> None:
    """``worker_process_setup_hook`` of the embedded Ray: silences the warnings above in its worker processes, and
    fails their Ray Data pipelines that cannot be scheduled (Ray Train's data runs in a worker of its own)."""
    for name in QUIET_IN_EMBEDDED_RAY:
        logging.getLogger(name).setLevel(logging.ERROR)
    fail_unschedulable()


UNSCHEDULABLE_S = 60  # seconds a pipeline may wait for resources before it fails (THRESHER_UNSCHEDULABLE_S)
UNSCHEDULABLE = "Cluster resources are not enough to run any task from"
STARVATION_DELAY = "RAY_DATA_STARVATION_WARNING_DELAY_S"  # Ray Data's, read as its resource manager is imported
RESOURCE_MANAGER = "ray.data._internal.execution.resource_manager"


class Unschedulable(RuntimeError):
    """Ray Data reported that no task of a pipeline can be scheduled on the cluster's resources."""


class _FailUnschedulable(logging.Handler):
    """Turns Ray Data's report that the first operator of a pipeline could not run a task for
    ``RAY_DATA_STARVATION_WARNING_DELAY_S`` into :class:`Unschedulable`, raised in its streaming executor, which
    fails the pipeline's consumer with it, when the cluster itself has no CPU left for the pipeline. When it has (other
    jobs hold the CPUs, or Ray Data's share of them is still held for a job that ended) and on an autoscaling
    cluster it logs what the pipeline waits for instead."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if UNSCHEDULABLE not in message:
            return
        what = message.split(" The job may hang")[0].rstrip(".")
        if _autoscaling():
            log.warning("waiting for the cluster to scale up: %s", what)
            return
        cpus, held = _cpus_for_data()
        if cpus - held >= 1:
            log.warning(
                "waiting for CPUs: %s for %s s, though the cluster's %g CPU leave %g for it: other jobs hold them "
                "(`ray status` shows who), or Ray Data still counts them for a job that ended",
                what,
                os.environ.get(STARVATION_DELAY),
                cpus,
                cpus - held,
            )
            return
        raise _no_cpu(what, os.environ.get(STARVATION_DELAY), cpus, held)


def _no_cpu(what: str, seconds: object, cpus: float, held: float = 0.0) -> Unschedulable:
    return Unschedulable(
        f"{what} for {seconds} s: the cluster's {cpus:g} CPU"
        + (f" less {held:g} held for training workers" if held else "")
        + " leave none for its tasks (a node was lost, or the config asks for more than the cluster has); add "
        "CPUs or ask for fewer (THRESHER_UNSCHEDULABLE_S sets the wait, 0 waits as long as Ray does)"
    )


class SchedulingWatch:
    """Plain Ray tasks of ``cpus`` CPUs each, waited for: :meth:`check` raises :class:`Unschedulable` once the
    cluster has had fewer CPUs than one task needs for ``THRESHER_UNSCHEDULABLE_S`` (none of them can run: a node
    was lost), as Ray Data's pipelines fail (:class:`_FailUnschedulable`); on an autoscaling cluster it logs, once,
    that the run waits for it to scale up."""

    def __init__(self, what: str, cpus: float) -> None:
        self.what, self.cpus = what, cpus
        self.limit = float(os.environ.get("THRESHER_UNSCHEDULABLE_S", UNSCHEDULABLE_S))
        self.short_since: float | None = None
        self.logged = False

    def check(self) -> None:
        import ray

        if self.limit <= 0:
            return
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if cpus >= self.cpus:
            self.short_since = None
            return
        now = time.monotonic()
        self.short_since = self.short_since or now
        if now - self.short_since < self.limit:
            return
        what = f"{UNSCHEDULABLE} {self.what}"
        if not _autoscaling():
            raise _no_cpu(what, f"{self.limit:g}", cpus)
        if not self.logged:
            log.warning("waiting for the cluster to scale up: %s", what)
            self.logged = True


def _cpus_for_data() -> tuple[float, float]:
    """The alive cluster's CPUs and those Ray Data leaves out of its pipelines (Ray Train's workers')."""
    import ray
    from ray.data import DataContext

    excluded = DataContext.get_current().execution_options.exclude_resources
    return float(ray.cluster_resources().get("CPU", 0)), float(excluded.cpu or 0)


def _autoscaling() -> bool:
    """Whether an autoscaler serves the cluster (it publishes the cluster's node groups; a local Ray has none)."""
    import ray

    try:
        return ray._private.state.state.get_cluster_config() is not None
    except Exception:  # an older Ray, or a state it cannot read: no autoscaler known
        return False


def fail_unschedulable() -> None:
    """Make a Ray Data pipeline that cannot be scheduled fail after ``THRESHER_UNSCHEDULABLE_S`` (default 60 s)
    with Ray's message (:class:`_FailUnschedulable`), in this process and in the Ray processes it starts."""
    import sys

    seconds = float(os.environ.get("THRESHER_UNSCHEDULABLE_S", UNSCHEDULABLE_S))
    if seconds <= 0:
        return
    os.environ[STARVATION_DELAY] = f"{seconds:g}"
    manager = sys.modules.get(RESOURCE_MANAGER)
    if manager is not None:  # imported already: its delay was read from the environment then
        manager.STARVATION_WARNING_DELAY_S = seconds
    logger = logging.getLogger(RESOURCE_MANAGER)
    if not any(isinstance(h, _FailUnschedulable) for h in logger.handlers):
        logger.addHandler(_FailUnschedulable())


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
    # the tasks still waiting for CPUs another job holds end a worker when they run: not cancelled, since a
    # cancellation that races a task's reply can abort the driver (a Ray bug)
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
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


def live_nodes() -> list[dict[str, float]]:
    """The resources of each live node of the session's cluster."""
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def check_fits(
    key: str,
    count: int,
    each: dict[str, float],
    cluster: dict[str, float],
    nodes: list[dict[str, float]],
    what: str = "worker",
    pipeline: str = "the data pipeline's read tasks",
) -> None:
    """Refuse (a ConfigError naming ``key``: exit 2) ``count`` actors or workers of ``each`` resources that the
    cluster cannot run: more of a resource than the cluster has, one more than any node has, or less than one CPU
    left for Ray Data's tasks (``pipeline``: what they are), which would then never run and the run wait forever.
    ``cluster``: the cluster's resources; ``nodes``: each live node's."""
    for name, amount in each.items():
        if amount <= 0:
            continue
        total, largest = cluster.get(name, 0.0), max((node.get(name, 0.0) for node in nodes), default=0.0)
        if count * amount > total or amount > largest:
            raise ConfigError(
                f"{key}: {count} {what}(s) x {amount:g} {name} do not fit the Ray cluster's {total:g} "
                f"{name} (at most {largest:g} on one node)"
            )
    left = cluster.get("CPU", 0.0) - count * each.get("CPU", 0.0)
    if left < 1:
        raise ConfigError(
            f"{key}: {count} {what}(s) x {each.get('CPU', 0.0):g} CPU leave {left:g} of the Ray "
            f"cluster's {cluster.get('CPU', 0.0):g} CPU for {pipeline}, which need 1; ask for fewer CPUs per "
            f"{what} or fewer {what}s"
        )


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

    fail_unschedulable()
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    addr = resolve_address(address)
    kwargs: dict = {"log_to_driver": True, "configure_logging": False}
    ends_on_sigterm = signal.getsignal(signal.SIGTERM) is _terminate
    if addr:
        log.info("connecting to Ray at %s", addr)
        wait_for_head(addr)
        check_token(addr)
        start = functools.partial(ray.init, address=addr, **kwargs)
    else:
        log.info("starting an embedded local Ray")
        embedded_environment()
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
    signalled = False
    try:
        yield ray.cluster_resources()
    except (Terminated, KeyboardInterrupt):
        signalled = True
        raise
    except SystemError as e:
        if (inside := signal_inside(e)) is not None:
            signalled = True
            raise inside from None
        raise
    finally:
        if addr:
            ray.shutdown()
        else:
            _stop_embedded(graceful=not (signalled and ends_on_sigterm))


HEAD_WAIT_S = 120  # seconds to wait for a cluster's head to answer (THRESHER_HEAD_WAIT_S)


def is_gcs_address(address: str) -> bool:
    """Whether ``address`` is a head's GCS as ``host:port`` (not ``auto`` or ``ray://...``)."""
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and "://" not in address


def wait_for_head(address: str) -> None:
    """Wait until the head's GCS port at ``address`` (``host:port``) accepts a connection, trying again with waits
    of 1, 2, 4 ... 10 s for up to ``THRESHER_HEAD_WAIT_S`` (a head still coming up); then fail naming the address
    and the setting. Ray's own connection to a head that does not answer tries for about 13 minutes, deaf to
    signals. Other forms (``auto``, ``ray://``) go to Ray as they are."""
    import socket

    if not is_gcs_address(address):
        return
    host, _, port = address.rpartition(":")
    seconds = float(os.environ.get("THRESHER_HEAD_WAIT_S", HEAD_WAIT_S))
    deadline, wait = time.monotonic() + seconds, 1.0
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=5):
                return
        except OSError as e:
            if time.monotonic() + wait > deadline:
                raise RuntimeError(
                    f"no Ray head answered at {address} within {seconds:g} s ({e}): check the address and that the "
                    "head runs (THRESHER_HEAD_WAIT_S sets the wait)"
                ) from None
            log.warning("no Ray head answers at %s yet (%s); trying again in %g s", address, e, wait)
            time.sleep(wait)
            wait = min(10.0, wait * 2)


def check_token(address: str) -> None:
    """Refuse (:func:`token_error`: exit 2) a head at ``address`` (``host:port``) that does not
    accept this client's token: one call to its GCS, where Ray's own connection tries again for 20 s per attempt and
    then says only that it failed. Any other answer leaves the connection to Ray."""
    import grpc
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    from ray.exceptions import AuthenticationError

    if not is_gcs_address(address):
        return
    try:
        with init_grpc_channel(address) as channel:
            gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=10
            )
    except AuthenticationError:  # found before any call
        raise ConfigError(
            "RAY_AUTH_MODE=token and no token found: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, or put it in "
            "~/.ray/auth_token) to the cluster's token"
        ) from None
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise token_error(address, refused=True) from None


def token_error(address: str, refused: bool) -> ConfigError:
    """The usage error of a cluster that refused this client's token (``refused``) or wants one it was not given."""
    return ConfigError(
        f"the Ray cluster at {address} {'refused the token' if refused else 'requires a token'}: set "
        "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, or put it in ~/.ray/auth_token with RAY_AUTH_MODE=token) "
        "to the cluster's token"
    )


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


def _stop_embedded(graceful: bool) -> None:
    """Stop the embedded Ray and leave none of its processes behind: ``ray.shutdown``, then SIGKILL for those still
    there after 3 s (a worker blocked in a call, such as Ray Train's placement-group cleaner asking the state API,
    notices its raylet's end late on a busy machine). Not ``graceful`` (a signal ends the ``thresher`` command, whose
    process exits at once after it): SIGKILL, as a crash would, without ``ray.shutdown``, which waits seconds for
    the services just killed (what the run finished is on disk, and the next run resumes from it)."""
    import psutil
    import ray

    ours = []  # the processes the embedded node started (GCS, raylet, dashboard, ...) and theirs (workers, agents)
    node = getattr(ray._private.worker, "_global_node", None)
    for started in (getattr(node, "all_processes", None) or {}).values():
        for info in started:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(info.process.pid)
                ours += [p, *p.children(recursive=True)]
    log.info("stopping the embedded Ray%s", "" if graceful else " (the command was ended by a signal)")
    if graceful:
        ray.shutdown()
        deadline = time.monotonic() + 3
        while any(_running(p.pid) for p in ours) and time.monotonic() < deadline:
            time.sleep(0.05)
    _kill([p for p in ours if _running(p.pid)])
    log.info("the embedded Ray stopped")


def _kill(processes: list) -> None:
    import psutil

    for p in processes:
        with contextlib.suppress(psutil.Error):
            p.kill()


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
