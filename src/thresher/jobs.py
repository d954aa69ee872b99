"""Run thresher commands on a Ray cluster through the Ray Jobs API: submit, list, status, logs, stop.

Address: ``--address``, else ``RAY_API_SERVER_ADDRESS``, else ``RAY_ADDRESS``, else
``http://127.0.0.1:8265``. The Jobs API is the head's dashboard (``http(s)://HEAD:8265``); a GCS address
(``HEAD:6379``) or a Ray Client address (``ray://HEAD:10001``) also works: Ray looks the dashboard up there.

Token authentication (a head started with ``RAY_AUTH_MODE=token``): the token comes from ``RAY_AUTH_TOKEN``,
else the file ``RAY_AUTH_TOKEN_PATH``, else, with ``RAY_AUTH_MODE=token`` set here, ``~/.ray/auth_token``.
A missing or wrong token is a usage error (exit 2). The token goes only to an ``https://`` or loopback address, as
forwarded AWS keys do (below); ``THRESHER_CLEARTEXT_CREDENTIALS=1`` allows plain http on a network the user trusts.

The job runs in a copy of ``--working-dir`` (the project). When that is a thresher checkout, its
``src/thresher`` also goes as a runtime_env ``py_modules`` entry, which Ray puts first on the ``PYTHONPATH`` of
the driver and of every worker, so the cluster runs the code being submitted. Left out of the upload: EXCLUDES,
what ``.gitignore``/``.rayignore`` list, and files over ``--max-file-mib`` (named on stderr). ``thresher ARGS``
runs as ``python -m thresher ARGS``: the cluster's ``python`` needs thresher's dependencies (the image in
``deploy/``, or ``--runtime-env deploy/runtime-env-stock-ray.yaml`` on the stock Ray image).

The standard AWS variables set here are passed to the job as runtime_env ``env_vars`` only with
``--forward-aws``, and only to an ``https://`` or loopback address (elsewhere they would cross the network in
clear text: refused before any connection); their names, never their values, are printed. Anyone holding the
cluster's token can read a job's runtime_env, credentials included: where the nodes have their own credentials
(instance role, IRSA, a Kubernetes Secret), leave --forward-aws out.
thresher itself never shows a credential or the token: job logs, job messages and the cluster's errors are
printed with those values replaced by their variable's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from thresher.core.config import ConfigError, load_yaml
from thresher.core.secrets import redact_text
from thresher.runtime import token_error

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
FORWARDED_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)
# Never uploaded with the working dir (Ray also skips what .gitignore and .rayignore list).
EXCLUDES = [
    ".git",
    ".venv",
    "venv",
    "/out/",
    "**/__pycache__",
    ".pytest_cache",
    ".hypothesis",
    "*.egg-info",
    "/build/",
    "/dist/",
]
# Values never shown by thresher, not even in a job's logs or an error the cluster sends back.
CLEARTEXT_OPT_IN = "THRESHER_CLEARTEXT_CREDENTIALS"  # =1: credentials may go over plain http to any address
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "RAY_AUTH_TOKEN")
MAX_FILE_MIB = 10  # Ray warns about files from this size on: data belongs in s3://, not in the upload
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
CLUSTER_COMMANDS = {"curate", "train", "report"}
RETRY_SECONDS = 60  # THRESHER_JOBS_RETRY_S: how long a head still coming up is waited for
UNKNOWN_HOST = ("NameResolutionError", "Name or service not known", "nodename nor servname", "getaddrinfo failed")
NOT_READY = ("no available agent", "try again later", "status code 502", "status code 503", "status code 504")
log = logging.getLogger(__name__)


def api_address(address: str | None) -> str:
    """The Jobs API address: explicit, else RAY_API_SERVER_ADDRESS, else RAY_ADDRESS, else the local default."""
    for candidate in (address, *(os.environ.get(v) for v in ADDRESS_VARIABLES)):
        if candidate and candidate.strip():
            return candidate.strip().rstrip("/")
    return DEFAULT_ADDRESS


def safe_for_credentials(address: str) -> bool:
    """Whether credentials (the Ray token, forwarded AWS keys) may be sent to ``address``: an ``https://`` URL, or a
    loopback host (127.0.0.0/8, ::1, localhost; e.g. a port-forward) whatever the scheme; anywhere when the user
    says so explicitly (``THRESHER_CLEARTEXT_CREDENTIALS=1``: a network they trust)."""
    if os.environ.get(CLEARTEXT_OPT_IN) == "1":
        return True
    scheme, sep, rest = address.partition("://")
    if sep and scheme.lower() == "https":
        return True
    host = urlsplit("//" + (rest if sep else address)).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ClusterUnreachable(Exception):
    """Nothing answered at the Jobs API address."""


@contextlib.contextmanager
def _cluster_errors(address: str) -> Iterator[None]:
    """Turn the Jobs SDK's errors into a usage error (token, unknown job) or ClusterUnreachable."""
    import aiohttp
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as e:
        refused = "invalid" in str(e).lower() or "forbidden" in str(e).lower()
        raise token_error(address, refused) from None
    except (ConnectionError, requests.exceptions.ConnectionError, aiohttp.ClientConnectionError) as e:
        raise ClusterUnreachable(
            f"cannot reach the Ray Jobs API at {address} ({type(e).__name__}); give the "
            "head's dashboard URL with --address http://HEAD:8265 or RAY_ADDRESS"
        ) from None


def _token_header() -> dict:
    """The token given by RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, sent whether or not RAY_AUTH_MODE is set.

    Without either, Ray's own lookup applies (with RAY_AUTH_MODE=token: ``~/.ray/auth_token``). An unreadable
    RAY_AUTH_TOKEN_PATH is reported here: Ray's loader would abort the process.
    """
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token and os.environ.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"RAY_AUTH_TOKEN_PATH={path}: cannot read the token ({e.strerror})") from None
        if not token:
            raise ConfigError(f"RAY_AUTH_TOKEN_PATH={path}: the file is empty")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _client(address: str):
    """A JobSubmissionClient for ``address``, authenticated when a token is configured."""
    from ray.job_submission import JobSubmissionClient

    headers = _token_header()
    if (headers or os.environ.get("RAY_AUTH_MODE") == "token") and not safe_for_credentials(address):
        raise ConfigError(
            f"the Ray token would go to {address} in clear text (neither https:// nor loopback); use "
            f"an https:// address or a loopback port-forward, or set {CLEARTEXT_OPT_IN}=1 on a "
            "network you trust"
        )
    # The SDK lets RAY_ADDRESS override the address it is given; the address resolved here must win.
    hidden = {v: os.environ.pop(v) for v in ADDRESS_VARIABLES if v in os.environ}
    try:
        return JobSubmissionClient(address, headers=headers)
    finally:
        os.environ.update(hidden)


def _token_mode() -> None:
    """A given token turns on Ray's token mode here: a GCS address is looked up over token-checked RPC.

    Called before anything imports Ray, which reads the mode once.
    """
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def _quiet_ray() -> None:
    """Ray logs each step of packaging the upload at INFO; ``thresher -v`` shows them, otherwise warnings only."""
    import ray  # noqa: F401  (sets up Ray's loggers, which the level below then applies to)

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("ray").setLevel(logging.WARNING)


def _redact(text: str) -> str:
    """``text`` with passwords in URLs hidden (:func:`redact_text`) and the values of SECRET_VARIABLES replaced by
    their names."""
    text = redact_text(text)
    for name in SECRET_VARIABLES:
        value = os.environ.get(name, "").strip()
        if len(value) >= 8:
            text = text.replace(value, f"<{name}>")
    return text


def _not_ready(e: BaseException) -> bool:
    """Whether ``e`` is a head still coming up: no connection yet, a reset one, or the job agent not up."""
    import aiohttp
    import requests

    if isinstance(e, (ConnectionError, requests.exceptions.ConnectionError, aiohttp.ClientConnectionError)):
        return not _unknown_host(e)  # a name that does not resolve is no head coming up
    return isinstance(e, RuntimeError) and any(m in str(e).lower() for m in NOT_READY)


def _unknown_host(e: BaseException | None) -> bool:
    """Whether ``e`` or an error it was raised from says the host name does not resolve."""
    while e is not None:
        if any(m in f"{type(e).__name__}: {e}" for m in UNKNOWN_HOST):
            return True
        e = e.__cause__ or e.__context__
    return False


def _retried(call: Callable, address: str):
    """``call()``, tried again while the cluster at ``address`` is not ready (:func:`_not_ready`), with waits of 1,
    2, 4, ... s (at most 15) for up to ``THRESHER_JOBS_RETRY_S`` seconds (default 60); then its error."""
    deadline = time.monotonic() + float(os.environ.get("THRESHER_JOBS_RETRY_S", RETRY_SECONDS))
    wait = 1.0
    while True:
        try:
            return call()
        except Exception as e:
            if not _not_ready(e) or time.monotonic() + wait > deadline:
                raise
            log.warning(
                "the Ray Jobs API at %s is not ready (%s); trying again in %.0f s",
                _redact(address),
                _first_line(_redact(f"{type(e).__name__}: {e}")),
                wait,
            )
            time.sleep(wait)
            wait = min(15.0, 2 * wait)


def _run(address: str | None, action: Callable, retry_action: bool = False) -> int:
    """``action(client, address)`` against the cluster; the client's connection is retried while the head comes up
    (:func:`_retried`), and with ``retry_action`` the whole action too (reads and stops, which may run twice)."""
    address = api_address(address)
    try:
        with _cluster_errors(address):
            if retry_action:
                return _retried(lambda: action(_client(address), address), address)
            return action(_retried(lambda: _client(address), address), address)
    except ClusterUnreachable as e:
        print(f"thresher: failed: {_redact(str(e))}", file=sys.stderr)
        return 1
    except ConfigError:
        raise
    except Exception as e:  # the cluster's answer may quote the job's runtime_env: print it redacted
        print(f"thresher: failed: {_redact(f'{type(e).__name__}: {e}')}", file=sys.stderr)
        return 1


def _entrypoint(command: list[str], working_dir: Path) -> str:
    """The shell command the job runs; ``thresher`` becomes ``python -m thresher``."""
    if command[0] != "thresher":
        return shlex.join(command)
    args = list(command[1:])
    if not args or args[0] not in CLUSTER_COMMANDS:
        raise ConfigError(
            f"submit: the job runs `thresher {' | '.join(sorted(CLUSTER_COMMANDS))} ...`, not `{shlex.join(command)}`"
        )
    if len(args) > 1 and args[0] in ("curate", "train") and Path(args[1]).is_file():
        config = Path(args[1]).resolve()
        if not config.is_relative_to(working_dir):
            raise ConfigError(
                f"submit: the config {args[1]} is outside the working dir {working_dir}, "
                "so the job would not see it; copy it there or pass --working-dir"
            )
        args[1] = config.relative_to(working_dir).as_posix()
    return shlex.join(["python", "-m", "thresher", *args])


def _uploaded_files(working_dir: Path, excludes: list[str]) -> list[Path]:
    """The files Ray would upload from ``working_dir``, walked as Ray's runtime_env packaging walks it: the
    ``excludes`` patterns relative to ``working_dir``, each folder's ``.gitignore`` (unless
    RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1) and ``.rayignore`` relative to that folder (gitignore syntax)."""
    from pathspec import PathSpec

    ignore_files = [".rayignore"]
    if os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1":
        ignore_files.insert(0, ".gitignore")
    files: list[Path] = []

    def walk(path: Path, specs: list[tuple[Path, PathSpec]]) -> None:
        if path.is_dir():
            specs = specs + [
                (path, PathSpec.from_lines("gitignore", (path / name).read_text().splitlines()))
                for name in ignore_files
                if (path / name).is_file()
            ]
        if any(spec.match_file(str(path.relative_to(root))) for root, spec in specs if path != root):
            return
        if path.is_dir():
            for sub in path.iterdir():
                walk(sub, specs)
        elif path.is_file():
            files.append(path)

    walk(working_dir, [(working_dir, PathSpec.from_lines("gitignore", excludes))])
    return files


def _pattern(relative: str) -> str:
    """An exclude pattern (gitignore syntax) matching exactly this path under the working dir."""
    return "/" + re.sub(r"([\[\]*?!#\\])", r"\\\1", relative)


def load_runtime_env(path: str) -> dict:
    """A Ray runtime_env YAML file (``--runtime-env``); unknown or mistyped fields are usage errors."""
    from ray.runtime_env import RuntimeEnv

    env = load_yaml(path)
    unknown = sorted(set(env) - set(RuntimeEnv.known_fields))
    if unknown:
        raise ConfigError(
            f"--runtime-env {path}: unknown field {unknown[0]} (Ray's runtime_env fields: "
            f"{', '.join(sorted(f for f in RuntimeEnv.known_fields if not f.startswith('_')))})"
        )
    try:
        RuntimeEnv(**{k: v for k, v in env.items() if k != "working_dir"})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--runtime-env {path}: {e}") from None
    return env


def runtime_env(
    working_dir: Path, forward_aws: bool, base: dict | None = None, max_file_mib: float = MAX_FILE_MIB
) -> tuple[dict, list[str]]:
    """The job's runtime_env and the notes to print about it.

    ``base`` (a --runtime-env file) adds its fields; its working_dir gives way to ``working_dir``, its excludes
    and env_vars add to thresher's. Files over ``max_file_mib`` (0: no limit) are left out of the upload.
    """
    env = {k: v for k, v in (base or {}).items() if k != "working_dir"}
    env["working_dir"] = str(working_dir)
    package = working_dir / "src" / "thresher"
    if package.is_dir():  # a thresher checkout: the job imports its code, not a thresher installed on the nodes
        env["py_modules"] = [str(package), *(m for m in env.get("py_modules", []) if m != str(package))]
    env["excludes"] = [*EXCLUDES, *(p for p in env.get("excludes", []) if p not in EXCLUDES)]
    notes = []
    limit = max_file_mib * 2**20 if max_file_mib > 0 else float("inf")
    large = [
        (p.relative_to(working_dir).as_posix(), p.stat().st_size)
        for p in _uploaded_files(working_dir, env["excludes"])
        if p.stat().st_size > limit
    ]
    if large:
        env["excludes"] += [_pattern(rel) for rel, _ in large]
        named = ", ".join(f"{rel} ({size / 2**20:.0f} MiB)" for rel, size in large[:5])
        notes.append(
            f"not uploading {len(large)} file(s) over {max_file_mib:g} MiB: {named}"
            f"{' ...' if len(large) > 5 else ''}; read data from s3:// (or raise --max-file-mib)"
        )
    aws = [v for v in FORWARDED_AWS_VARIABLES if os.environ.get(v)]
    env_vars = {**({v: os.environ[v] for v in aws} if forward_aws else {}), **env.get("env_vars", {})}
    if env_vars:
        env["env_vars"] = env_vars
    if aws:
        notes.append(
            f"the job gets this shell's {', '.join(aws)}"
            if forward_aws
            else f"not passing this shell's {', '.join(aws)} to the job (--forward-aws passes them)"
        )
    return env, notes


def _first_line(message: str | None) -> str:
    return (message or "").strip().split("\n", 1)[0]


def _exit_status(info) -> int:
    """0 succeeded; the driver's own exit status 2 (usage or config error) is kept; otherwise 1."""
    if info.status == "SUCCEEDED":
        return 0
    return 2 if info.driver_exit_code == 2 else 1


def _wait(client, job_id: str, poll_s: float = 1.0, timeout_s: float | None = None):
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        info = client.get_job_info(job_id)
        if str(info.status) in TERMINAL or (deadline is not None and time.monotonic() > deadline):
            return info
        time.sleep(poll_s)


async def _stream_logs(client, job_id: str) -> None:
    async for chunk in client.tail_job_logs(job_id):
        sys.stdout.write(_redact(chunk))
        sys.stdout.flush()


def submit(
    entrypoint: list[str],
    address: str | None,
    working_dir: str,
    wait: bool,
    forward_aws: bool = False,
    runtime_env_file: str | None = None,
    max_file_mib: float = MAX_FILE_MIB,
) -> int:
    """Submit ``entrypoint`` as a Ray job; stream its logs and return its exit status, or print its id."""
    if forward_aws and not safe_for_credentials(api_address(address)):
        raise ConfigError(
            f"submit: --forward-aws would send this shell's AWS credentials to {api_address(address)} "
            "in clear text (neither https:// nor loopback); use an https:// address or a loopback "
            "port-forward, or leave --forward-aws out and give the cluster its own credentials (or set "
            f"{CLEARTEXT_OPT_IN}=1 on a network you trust)"
        )
    _token_mode()
    _quiet_ray()
    wd = Path(working_dir).resolve()
    if not wd.is_dir():
        raise ConfigError(f"submit: --working-dir {working_dir} is not a directory")
    command = _entrypoint(entrypoint, wd)
    base = load_runtime_env(runtime_env_file) if runtime_env_file else None
    env, notes = runtime_env(wd, forward_aws, base, max_file_mib)
    for note in notes:
        print(f"thresher: {note}", file=sys.stderr)

    submission_id = f"raysubmit_{secrets.token_hex(8)}"  # one id for every try: a retry never submits twice
    tries = []

    def submit_once(client) -> str:
        tries.append(1)
        try:
            return client.submit_job(entrypoint=command, runtime_env=env, submission_id=submission_id)
        except RuntimeError as e:
            if len(tries) > 1 and f"{submission_id} already exists" in str(e):  # an earlier try reached the head
                return submission_id
            raise

    def action(client, url) -> int:
        job_id = _retried(lambda: submit_once(client), url)
        if not wait:
            print(job_id)
            return 0
        print(f"thresher: submitted {job_id} to {_redact(f'{url}: {command}')}", file=sys.stderr)
        try:
            try:
                asyncio.run(_stream_logs(client, job_id))
            except RuntimeError as e:  # the log stream broke off: the job goes on, so wait for its end
                print(f"thresher: log stream interrupted ({_redact(str(e))}); waiting for the job", file=sys.stderr)
            info = _wait(client, job_id)
        except KeyboardInterrupt:
            print(f"\nthresher: {job_id} keeps running; `thresher jobs stop {job_id}` stops it", file=sys.stderr)
            raise
        why = f": {_redact(_first_line(info.message))}" if info.status != "SUCCEEDED" else ""
        print(f"thresher: {job_id} {info.status}{why}", file=sys.stderr)
        return _exit_status(info)

    return _run(address, action)


def _known(client, job_id: str):
    """The job's info; an unknown id is a usage error."""
    try:
        return client.get_job_info(job_id)
    except RuntimeError as e:
        if "404" in str(e) or "does not exist" in str(e):
            raise ConfigError(f"jobs: no job {job_id} on this cluster (see `thresher jobs list`)") from None
        raise


def _list(client, url) -> int:
    rows = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
    print(f"{'JOB':<32} {'STATUS':<10} {'STARTED':<20} ENTRYPOINT")
    for j in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.start_time / 1000)) if j.start_time else "-"
        print(f"{j.submission_id or j.job_id:<32} {j.status!s:<10} {started:<20} {_redact(j.entrypoint)}")
    return 0


def _status(client, job_id: str) -> int:
    info = _known(client, job_id)
    print(f"{job_id}: {info.status}")
    if info.message:
        print(f"message: {_redact(_first_line(info.message))}")
    if info.driver_exit_code is not None:
        print(f"exit code: {info.driver_exit_code}")
    print(f"entrypoint: {_redact(info.entrypoint)}")
    return 0


def _logs(client, job_id: str) -> int:
    _known(client, job_id)
    sys.stdout.write(_redact(client.get_job_logs(job_id)))
    return 0


def _stop(client, job_id: str) -> int:
    info = _known(client, job_id)
    if str(info.status) in TERMINAL:
        print(f"{job_id} already {info.status}")
        return 0
    client.stop_job(job_id)
    info = _wait(client, job_id, timeout_s=60)
    print(f"{job_id}: {info.status}")
    return 0 if str(info.status) in TERMINAL else 1


ACTIONS = {"status": _status, "logs": _logs, "stop": _stop}


def jobs(action: str, job_id: str | None, address: str | None) -> int:
    """``thresher jobs list | status ID | logs ID | stop ID``."""
    _token_mode()
    _quiet_ray()
    if action == "list":
        if job_id:
            raise ConfigError("jobs list takes no job id")
        return _run(address, _list, retry_action=True)
    if not job_id:
        raise ConfigError(f"jobs {action}: give the job id (see `thresher jobs list`)")
    return _run(address, lambda client, url: ACTIONS[action](client, job_id), retry_action=True)
