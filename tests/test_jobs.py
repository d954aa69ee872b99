"""``thresher submit`` / ``thresher jobs`` against a token-auth Ray head with a worker node, reading and writing S3.

The cluster's nodes have no AWS settings: a job reaches the S3 server only with what ``thresher submit
--forward-aws`` passes it, and only to an https:// or loopback address. Submissions go through the CLI in
subprocesses, as a user's would, except one that checks that submitting from a process with its own local Ray
leaves that Ray alone.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import time
import zipfile
from types import SimpleNamespace

import boto3
import pytest

from tests.conftest import ROOT, free_port, run_cli
from thresher.cli import main
from thresher.jobs import EXCLUDES, api_address, runtime_env, safe_for_credentials, submit

CORPUS = sorted((ROOT / "examples" / "corpus").glob("web-*"))
SECRETS = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")


def _auth(head) -> dict:
    return {"RAY_AUTH_TOKEN": head.token}


def _job_id(res) -> str:
    match = re.search(r"submitted (raysubmit_\w+)", res.stderr)
    assert match, res.stderr[-3000:]
    return match.group(1)


def _lines(path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return sum(1 for _ in f)


def _no_credentials_in(*texts: str) -> None:
    for text in texts:
        for name in SECRETS:
            assert os.environ[name] not in text, f"{name} leaked"


def test_submit_runs_the_quickstart_on_the_cluster_from_s3_to_s3(ray_head, s3_bucket):
    s3 = boto3.client("s3")
    for path in CORPUS:
        s3.upload_file(str(path), s3_bucket, f"in/{path.name}")
    out = f"s3://{s3_bucket}/out/run1"
    started = time.monotonic()
    res = run_cli(
        "submit",
        "--address",
        ray_head.dashboard_url,
        "--forward-aws",
        "--",
        "thresher",
        "curate",
        "examples/quickstart.yaml",
        "--input",
        f"s3://{s3_bucket}/in/web-*",
        "--output",
        out,
        env=_auth(ray_head),
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:] + ray_head.logs()
    print(f"curation job: {time.monotonic() - started:.0f}s")
    job = _job_id(res)
    assert "python -m thresher curate examples/quickstart.yaml" in res.stdout  # the job's log, streamed
    assert f"{job} SUCCEEDED" in res.stderr
    assert "AWS_SECRET_ACCESS_KEY" in res.stderr and "warning" not in res.stderr  # names forwarded, output is s3

    manifest = json.loads(s3.get_object(Bucket=s3_bucket, Key="out/run1/manifest.json")["Body"].read())
    counts = manifest["counts"]
    assert manifest["status"] == "succeeded"
    assert counts["input"] == sum(map(_lines, CORPUS)) == counts["output"] + counts["rejected"]
    assert counts["output"] > 0 and counts["rejected"] > 0
    assert manifest["ray"]["nodes"] == 2  # ran on the cluster (head + worker), not an embedded Ray
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="out/run1/")["Contents"]}
    assert any(k.startswith("out/run1/data/") and k.endswith(".parquet") for k in keys)
    assert {"out/run1/report.html", "out/run1/report.json"} <= keys

    listed = run_cli("jobs", "list", "--address", ray_head.dashboard_url, env=_auth(ray_head))
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert re.search(rf"^{job}\s+SUCCEEDED\s", listed.stdout, re.M), listed.stdout
    status = run_cli("jobs", "status", job, "--address", ray_head.dashboard_url, env=_auth(ray_head))
    assert status.returncode == 0 and f"{job}: SUCCEEDED" in status.stdout, status.stdout + status.stderr
    logs = run_cli("jobs", "logs", job, "--address", ray_head.dashboard_url, env=_auth(ray_head))
    assert logs.returncode == 0 and f"input {counts['input']} = output {counts['output']}" in logs.stdout
    _no_credentials_in(res.stdout, res.stderr, listed.stdout, status.stdout, logs.stdout)


def test_the_job_gets_the_submitting_shells_aws_settings_only_with_forward_aws(ray_head):
    show = [
        "--",
        "python",
        "-c",
        "import os; print('region=' + os.environ.get('AWS_REGION', 'unset'), "
        "'secret=' + os.environ.get('AWS_SECRET_ACCESS_KEY', 'unset'))",
    ]
    env = {**_auth(ray_head), "AWS_REGION": "eu-thresher-1"}
    res = run_cli("submit", "--address", ray_head.dashboard_url, *show, env=env)
    assert res.returncode == 0 and "region=unset secret=unset" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    assert "not passing this shell's AWS_ACCESS_KEY_ID" in res.stderr and "the job gets" not in res.stderr
    res = run_cli("submit", "--address", ray_head.dashboard_url, "--forward-aws", *show, env=env)
    assert res.returncode == 0 and "region=eu-thresher-1" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    # the job has the secret and prints it; thresher shows its name instead, streamed or fetched
    logs = run_cli("jobs", "logs", _job_id(res), "--address", ray_head.dashboard_url, env=env).stdout
    assert "secret=<AWS_SECRET_ACCESS_KEY>" in res.stdout and "secret=<AWS_SECRET_ACCESS_KEY>" in logs, logs
    _no_credentials_in(res.stdout, res.stderr, logs)


@pytest.mark.parametrize(
    "address, safe",
    [
        ("https://ray.example.com", True),
        ("HTTPS://ray.example.com:443", True),
        ("http://127.0.0.1:8265", True),
        ("http://127.8.0.1:8265", True),
        ("http://localhost:8265", True),
        ("http://[::1]:8265", True),
        ("127.0.0.2:6379", True),
        ("ray://127.0.0.1:10001", True),
        ("http://10.0.0.1:8265", False),
        ("10.0.0.1:6379", False),
        ("ray://head:10001", False),
        ("http://head:8265", False),
        ("http://127.0.0.1.example.com:8265", False),
        ("http://0.0.0.0:8265", False),
    ],
)
def test_credentials_may_go_only_to_https_or_loopback_addresses(address, safe):
    assert safe_for_credentials(address) is safe


def test_the_token_goes_only_to_https_or_loopback_unless_the_user_allows_cleartext():
    token = {"RAY_AUTH_TOKEN": "thresher-test-token-0123456789"}
    res = run_cli("jobs", "list", "--address", "http://thresher.invalid:8265", env=token)
    assert res.returncode == 2 and "in clear text" in res.stderr and "THRESHER_CLEARTEXT_CREDENTIALS" in res.stderr
    assert token["RAY_AUTH_TOKEN"] not in res.stdout + res.stderr
    # allowed explicitly: it goes on to connect (and finds nothing at that name)
    res = run_cli(
        "jobs",
        "list",
        "--address",
        "http://thresher.invalid:8265",
        env={**token, "THRESHER_CLEARTEXT_CREDENTIALS": "1"},
    )
    assert res.returncode == 1 and "cannot reach" in res.stderr, res.stderr
    assert token["RAY_AUTH_TOKEN"] not in res.stdout + res.stderr


def test_forward_aws_to_an_address_neither_https_nor_loopback_is_refused_before_connecting():
    with socket.socket() as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        server.bind(("0.0.0.0", 0))
        server.listen()
        server.setblocking(False)
        probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outward interface
        outward = probe.getsockname()[0]
        addresses = [f"http://{outward}:{server.getsockname()[1]}", "ray://thresher.invalid:10001", "10.0.0.1:6379"]
        for address in addresses if not outward.startswith("127.") else addresses[1:]:
            res = run_cli("submit", "--forward-aws", "--address", address, "--", "python", "-c", "print(1)")
            assert res.returncode == 2 and "neither https:// nor loopback" in res.stderr, (address, res.stderr)
            _no_credentials_in(res.stdout, res.stderr)
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing connected
    # a loopback address passes the check (and then finds nothing listening)
    res = run_cli(
        "submit",
        "--forward-aws",
        "--address",
        f"http://127.0.0.1:{free_port()}",
        "--",
        "python",
        "x.py",
        env={"THRESHER_JOBS_RETRY_S": "0"},  # not tried again
    )
    assert res.returncode == 1 and "cannot reach" in res.stderr, res.stderr


def test_runtime_env_file_and_large_files_shape_what_the_job_gets(ray_head, tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "probe.py").write_text(
        "import os\nprint('files=' + ','.join(sorted(os.listdir('.') + os.listdir('data'))))\n"
        "print('probe=' + os.environ['THRESHER_PROBE'])\n"
    )
    (project / "data" / "small.jsonl").write_text("{}\n")
    (project / "data" / "big.jsonl").write_bytes(b"x" * (11 << 20))
    env_file = tmp_path / "env.yaml"
    env_file.write_text("env_vars: {THRESHER_PROBE: from-file}\nexcludes: [notes.txt]\n")
    (project / "notes.txt").write_text("left out by the file's excludes")
    res = run_cli(
        "submit",
        "--address",
        ray_head.dashboard_url,
        "--working-dir",
        str(project),
        "--runtime-env",
        str(env_file),
        "--",
        "python",
        "probe.py",
        env=_auth(ray_head),
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "files=data,probe.py,small.jsonl" in res.stdout and "probe=from-file" in res.stdout, res.stdout
    assert "not uploading 1 file(s) over 10 MiB: data/big.jsonl (11 MiB)" in res.stderr, res.stderr


def test_no_wait_prints_the_job_id_and_jobs_stop_stops_it(ray_head):
    # RAY_ADDRESS in GCS form (host:port) is resolved to the dashboard through the cluster
    env = {**_auth(ray_head), "RAY_ADDRESS": ray_head.address}
    res = run_cli(
        "submit", "--no-wait", "--", "python", "-c", "import time; print('up', flush=True); time.sleep(600)", env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    job = res.stdout.strip()
    assert re.fullmatch(r"raysubmit_\w+", job), res.stdout
    deadline = time.monotonic() + 120
    while "RUNNING" not in (status := run_cli("jobs", "status", job, env=env)).stdout:
        assert status.returncode == 0 and time.monotonic() < deadline, status.stdout + status.stderr
        time.sleep(2)
    stop = run_cli("jobs", "stop", job, env=env)
    assert stop.returncode == 0 and f"{job}: STOPPED" in stop.stdout, stop.stdout + stop.stderr
    assert f"{job}: STOPPED" in run_cli("jobs", "status", job, env=env).stdout
    assert "up" in run_cli("jobs", "logs", job, env=env).stdout
    assert "already STOPPED" in run_cli("jobs", "stop", job, env=env).stdout
    res = run_cli("jobs", "status", "raysubmit_nosuchjob", env=env)
    assert res.returncode == 2 and "no job raysubmit_nosuchjob" in res.stderr, res.stderr


def test_a_failed_job_exits_1_and_a_config_error_on_the_cluster_exits_2(ray_head):
    url = ray_head.dashboard_url
    res = run_cli("submit", "--address", url, "--", "python", "-c", "import sys; sys.exit(3)", env=_auth(ray_head))
    assert res.returncode == 1 and "FAILED" in res.stderr, res.stderr[-2000:]
    res = run_cli(
        "submit",
        "--address",
        url,
        "--",
        "thresher",
        "curate",
        "examples/quickstart.yaml",
        "--set",
        "stages.0.normalize.no_such_option=1",
        env=_auth(ray_head),
    )
    assert res.returncode == 2 and "no_such_option" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]


def test_the_cluster_refuses_clients_without_its_token(ray_head, tmp_path):
    url = ray_head.dashboard_url
    no_token = {"HOME": str(tmp_path)}  # no ~/.ray/auth_token either
    before = run_cli("jobs", "list", "--address", url, env=_auth(ray_head)).stdout.count("raysubmit_")
    res = run_cli("submit", "--address", url, "--", "python", "-c", "print(1)", env=no_token)
    assert res.returncode == 2 and "requires a token" in res.stderr, res.stderr[-2000:]
    res = run_cli("jobs", "list", "--address", url, env={**no_token, "RAY_AUTH_TOKEN": "0" * 32})
    assert res.returncode == 2 and "refused the token" in res.stderr, res.stderr[-2000:]
    res = run_cli("jobs", "list", "--address", url, env={"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})
    assert res.returncode == 2 and "RAY_AUTH_TOKEN_PATH" in res.stderr, res.stderr[-2000:]
    (tmp_path / "token").write_text(ray_head.token + "\n")
    res = run_cli("jobs", "list", "--address", url, env={"RAY_AUTH_TOKEN_PATH": str(tmp_path / "token")})
    assert res.returncode == 0 and res.stdout.count("raysubmit_") == before, res.stdout + res.stderr


def test_submitting_from_a_process_with_its_own_ray_leaves_that_ray_alone(ray_local, ray_head, monkeypatch, capsys):
    monkeypatch.setenv("RAY_AUTH_TOKEN", ray_head.token)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # submit sets it when a token is given; restored after the test
    local = ray_local.get_runtime_context().gcs_address
    code = "import ray; ray.init(); print('cluster', ray.get_runtime_context().gcs_address, len(ray.nodes()))"
    assert submit(["python", "-c", code], ray_head.dashboard_url, str(ROOT), wait=True) == 0
    out = capsys.readouterr().out
    assert f"cluster {ray_head.address} 2" in out, out
    assert ray_local.is_initialized() and ray_local.get_runtime_context().gcs_address == local != ray_head.address
    assert ray_local.cluster_resources()["CPU"] == 2


@pytest.mark.slow  # 10 s or more: not in the fast subset
def test_usage_errors_and_an_unreachable_address_are_reported_without_a_cluster(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    res = run_cli("jobs", "list", "--address", url, env={"THRESHER_JOBS_RETRY_S": "4"})
    said = res.stderr.strip().splitlines()  # tried again after 1 and 2 s (a head may be coming up), then failed
    assert res.returncode == 1 and url in said[-1] and len(said) == 3, res.stderr
    assert all(f"the Ray Jobs API at {url} is not ready (ConnectionError" in line for line in said[:2]), res.stderr
    # a local output is written on the cluster's nodes, not here: said before anything is sent
    res = run_cli(
        "submit",
        "--address",
        url,
        "--",
        "thresher",
        "curate",
        "examples/quickstart.yaml",
        env={"THRESHER_JOBS_RETRY_S": "0"},
    )
    assert res.returncode == 1 and "output out/quickstart is a local path" in res.stderr, res.stderr
    outside = tmp_path / "cfg.yaml"
    outside.write_text("input: {paths: [x]}\n")
    bad_env = tmp_path / "env.yaml"
    bad_env.write_text("pipp: [thresher]\n")
    for args in (
        ["submit"],
        ["submit", "--", "thresher", "jobs", "list"],
        ["jobs", "stop"],
        ["jobs", "list", "x"],
        ["submit", "--address", url, "--", "thresher", "curate", str(outside)],
        ["submit", "--address", url, "--", "thresher", "curate", "examples/quickstart.yaml", "--bogus"],
        ["submit", "--address", url, "--runtime-env", str(bad_env), "--", "python", "x.py"],
        ["submit", "--address", url, "--runtime-env", str(tmp_path / "none.yaml"), "--", "python", "x.py"],
        ["submit", "--working-dir", str(tmp_path / "nope"), "--", "thresher", "curate", "x.yaml"],
    ):
        res = run_cli(*args)
        assert res.returncode == 2, (args, res.stderr)
    res = run_cli("submit", "--address", url, "--runtime-env", str(bad_env), "--", "python", "x.py")
    assert "unknown field pipp" in res.stderr, res.stderr


class RecordingClient:
    """A Jobs API client that takes one job, which has succeeded at once."""

    def submit_job(self, entrypoint, runtime_env, submission_id):
        self.job = SimpleNamespace(
            submission_id=submission_id, job_id=None, status="SUCCEEDED", start_time=None, entrypoint=entrypoint
        )
        return submission_id

    async def tail_job_logs(self, job_id):
        yield "done\n"

    def get_job_info(self, job_id):
        return SimpleNamespace(**vars(self.job), message="", driver_exit_code=0)

    def list_jobs(self):
        return [self.job]


def test_passwords_in_the_address_and_the_entrypoint_are_not_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("THRESHER_JOBS_RETRY_S", "0")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    url = f"http://alice:hunter2pass@127.0.0.1:{free_port()}"
    assert main(["jobs", "list", "--address", url]) == 1  # nothing answers
    assert "cannot reach the Ray Jobs API at http://alice:***@127.0.0.1" in capsys.readouterr().err
    client = RecordingClient()
    monkeypatch.setattr("thresher.jobs._client", lambda address: client)
    entry = ["python", "x.py", "s3://AKIAEXAMPLE:wJalrXUtnFEMIsecret@bucket/x"]
    assert submit(entry, url, str(tmp_path), wait=True) == 0
    assert main(["jobs", "list", "--address", url]) == 0
    assert main(["jobs", "status", client.job.submission_id, "--address", url]) == 0
    said = capsys.readouterr()
    assert "to http://alice:***@127.0.0.1" in said.err and "x.py s3://AKIAEXAMPLE:***@bucket/x" in said.err, said
    assert said.out.count("s3://AKIAEXAMPLE:***@bucket/x") == 2, said  # jobs list, jobs status
    assert "hunter2pass" not in said.out + said.err and "wJalrXUtnFEMIsecret" not in said.out + said.err, said


def test_address_precedence_and_runtime_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    assert api_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert api_address(None) == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://head:8265/")
    assert api_address(None) == "http://head:8265"
    assert api_address("https://ray.example.com") == "https://ray.example.com"

    monkeypatch.setenv("AWS_PROFILE", "local-only")
    env, notes = runtime_env(ROOT, forward_aws=True)
    assert env["working_dir"] == str(ROOT) and env["excludes"] == EXCLUDES
    assert env["env_vars"]["AWS_ENDPOINT_URL"] == os.environ["AWS_ENDPOINT_URL"]
    assert env["env_vars"]["AWS_SECRET_ACCESS_KEY"] == os.environ["AWS_SECRET_ACCESS_KEY"]
    assert "AWS_PROFILE" not in env["env_vars"]  # names a file on this machine, not the cluster's
    assert notes == [f"the job gets this shell's {', '.join(env['env_vars'])}"]
    _no_credentials_in(*notes)
    assert env["py_modules"] == [str(ROOT / "src" / "thresher")]  # the job imports this checkout's code
    assert runtime_env(ROOT, forward_aws=False) == (
        {"working_dir": str(ROOT), "py_modules": [str(ROOT / "src" / "thresher")], "excludes": EXCLUDES},
        [f"not passing this shell's {', '.join(env['env_vars'])} to the job (--forward-aws passes them)"],
    )
    # a --runtime-env file adds fields; its working_dir gives way, its excludes and env_vars add up
    env, _ = runtime_env(
        ROOT,
        forward_aws=True,
        base={"working_dir": "/elsewhere", "pip": ["x"], "excludes": ["/bench/"], "env_vars": {"AWS_REGION": "r"}},
    )
    assert env["working_dir"] == str(ROOT) and env["pip"] == ["x"] and env["excludes"] == [*EXCLUDES, "/bench/"]
    assert env["env_vars"]["AWS_REGION"] == "r" and "AWS_ACCESS_KEY_ID" in env["env_vars"]


def test_the_upload_skips_caches_outputs_and_large_files(tmp_path):
    from ray._private.runtime_env.packaging import create_package

    project = tmp_path / "project"
    for rel in (
        "src/thresher/cli.py",
        "examples/quickstart.yaml",
        "out/run1/manifest.json",
        ".venv/lib/site.py",
        "src/thresher/__pycache__/cli.pyc",
        ".git/HEAD",
        "thresher.egg-info/PKG-INFO",
        "sub/out/kept.txt",
        "ignored/by-git.txt",
        "data/[odd] name*.bin",
        "data/big.parquet",
        ".venv/big.bin",
    ):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("x")
    (project / ".gitignore").write_text("ignored/\n")
    for rel in ("data/[odd] name*.bin", "data/big.parquet", ".venv/big.bin"):
        (project / rel).write_bytes(b"x" * (2 << 20))
    env, notes = runtime_env(project, forward_aws=False, max_file_mib=1)
    assert notes[0] == (
        "not uploading 2 file(s) over 1 MiB: data/[odd] name*.bin (2 MiB), data/big.parquet (2 MiB); "
        "read data from s3:// (or raise --max-file-mib)"
    )
    create_package(str(project), tmp_path / "pkg.zip", include_gitignore=True, excludes=env["excludes"])
    names = {n.rstrip("/") for n in zipfile.ZipFile(tmp_path / "pkg.zip").namelist()}
    assert {"src/thresher/cli.py", "examples/quickstart.yaml", "sub/out/kept.txt"} <= names
    assert not any(
        n.split("/")[0] in {"out", ".venv", ".git", "thresher.egg-info", "ignored"}
        or "__pycache__" in n
        or n.startswith("data/")
        for n in names
    ), names
    assert runtime_env(project, forward_aws=False, max_file_mib=0)[0] == {
        "working_dir": str(project),
        "py_modules": [str(project / "src" / "thresher")],
        "excludes": EXCLUDES,
    }


def test_the_upload_listing_matches_rays_own_walk(tmp_path, monkeypatch):
    """``_uploaded_files`` (pathspec, public API) lists exactly what Ray's runtime_env packaging would upload: nested
    .gitignore and .rayignore files, thresher's excludes, negations, folder-only patterns."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes  # the reference, in the test only

    from thresher.jobs import _uploaded_files

    files = [
        "a.py",
        "out/x.parquet",
        "sub/out/kept.txt",
        "sub/keep.log",
        "sub/drop.log",
        "sub/deep/y.tmp",
        "sub/deep/z.txt",
        "data/big.bin",
        "data/small.txt",
        ".venv/lib/site.py",
        "pkg/__pycache__/m.pyc",
        "build/b.txt",
        "notes/build/c.txt",
    ]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / ".gitignore").write_text("*.log\n!keep.log\ndata/*.bin\n")
    (tmp_path / "sub" / ".rayignore").write_text("deep/*.tmp\n")
    (tmp_path / "sub" / "deep" / ".gitignore").write_text("z.txt\n")
    excludes = [*EXCLUDES, "/notes/build/"]

    def reference() -> set[str]:
        found: set[str] = set()
        _dir_travel(
            tmp_path,
            [_get_excludes(tmp_path, excludes)],
            lambda p: found.add(p.relative_to(tmp_path).as_posix()) if p.is_file() else None,
            include_gitignore=os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1",
        )
        return found

    for ignore_gitignore in ("0", "1"):
        monkeypatch.setenv("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", ignore_gitignore)
        ours = {p.relative_to(tmp_path).as_posix() for p in _uploaded_files(tmp_path, excludes)}
        assert ours == reference(), ignore_gitignore
        assert "a.py" in ours and "sub/out/kept.txt" in ours and ".venv/lib/site.py" not in ours
    assert "sub/drop.log" in ours  # .gitignore ignored with RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1
