"""Embedded vs --address, token auth, and S3 input/output through a real S3 server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
import yaml

from testkit.links import CuttableLink, FlakyLink
from tests.conftest import ROOT, S3_PORT, data_path, run_cli
from tests.samples import c4_docs
from thresher.core.config import ConfigError
from thresher.core.storage import Storage, require_complete_run
from thresher.curate.commit import load_manifest
from thresher.curate.config import parse_config
from thresher.curate.runner import run


def _config(tmp_path, inp, out, **extra) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "input": {"paths": [str(inp)]},
                "output": {"path": str(out)},
                "stages": [{"normalize": {}}, {"pii": {}}],
                **extra,
            }
        )
    )
    return str(path)


def test_curate_runs_unchanged_on_a_cluster_given_by_address(ray_head, tmp_path):
    src = data_path("web/c4_demo.jsonl")
    cfg = _config(tmp_path, src, tmp_path / "out")
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray_head.token}
    res = run_cli("curate", cfg, "--address", ray_head.address, env=auth)
    assert res.returncode == 0, res.stderr[-3000:] + ray_head.logs()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["ray"] == {"nodes": 2, "cpus": manifest["ray"]["cpus"]}  # no address in a published file
    assert manifest["counts"]["input"] == 300 == manifest["counts"]["output"] + manifest["counts"]["rejected"]
    # RAY_ADDRESS selects the cluster too
    res = run_cli("curate", cfg, "--output", str(tmp_path / "out2"), env={**auth, "RAY_ADDRESS": ray_head.address})
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "out2" / "manifest.json").read_text())["ray"]["nodes"] == 2


@pytest.mark.parametrize(
    "token, said", [({"RAY_AUTH_TOKEN": "wrong-token-0000"}, "refused the token"), ({}, "no token found")]
)
def test_a_cluster_with_token_auth_refuses_a_client_without_the_token(ray_head, tmp_path, token, said):
    """A wrong token, or none (token mode, no token file in the home folder), exits 2 naming RAY_AUTH_TOKEN without
    saying the token, at the first refusal (Ray's own connection tries for 20 s per attempt, three attempts, and
    then says only that it failed)."""
    cfg = _config(tmp_path, data_path("web/c4_demo.jsonl"), tmp_path / "out")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    res = subprocess.run(
        [sys.executable, "-m", "thresher", "curate", cfg, "--address", ray_head.address],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**env, "HOME": str(tmp_path), "RAY_AUTH_MODE": "token", **token},
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert (
        said in res.stderr and "set RAY_AUTH_TOKEN" in res.stderr and "wrong-token-0000" not in res.stderr + res.stdout
    )
    assert "attempt" not in res.stderr  # refused once, not tried again
    assert not (tmp_path / "out" / "manifest.json").exists()


def _upload(bucket: str, key: str, path) -> str:
    boto3.client("s3").upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def test_curation_reads_and_writes_s3(ray_local, s3_bucket):
    src = _upload(s3_bucket, "raw/c4/part-0.jsonl", data_path("web/c4_demo.jsonl"))
    out = f"s3://{s3_bucket}/curated/run1"
    manifest = run(
        parse_config(
            {
                "input": {"paths": [f"s3://{s3_bucket}/raw/c4/"]},
                "output": {"path": out},
                "stages": [{"normalize": {}}, {"pii": {}}],
            }
        )
    )
    assert src.endswith("part-0.jsonl")
    s3 = boto3.client("s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="curated/run1/")["Contents"]}
    assert {"curated/run1/manifest.json", "curated/run1/report.json", "curated/run1/report.html"} <= keys
    assert any(k.startswith("curated/run1/data/part-") for k in keys)
    stored = json.loads(s3.get_object(Bucket=s3_bucket, Key="curated/run1/manifest.json")["Body"].read())
    assert stored["counts"] == manifest["counts"] and stored["counts"]["input"] == 300

    # training side: the curated Parquet streams back from S3 into Ray Data
    import ray.data

    storage = Storage.from_options(None)
    require_complete_run(storage, f"{out}/data")
    fs, path = storage.resolve(f"{out}/data")
    ds = ray.data.read_parquet(path, filesystem=fs)
    assert ds.count() == manifest["counts"]["output"]
    assert "text" in ds.schema().names


def test_storage_block_names_the_endpoint_and_incomplete_runs_are_refused(ray_local, s3_bucket, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    endpoint = f"http://127.0.0.1:{S3_PORT}"
    boto3.client("s3", endpoint_url=endpoint).upload_file(str(data_path("web/c4_demo.jsonl")), s3_bucket, "in/a.jsonl")
    cfg = {
        "input": {"paths": [f"s3://{s3_bucket}/in/a.jsonl"]},
        "output": {"path": f"s3://{s3_bucket}/o"},
        "storage": {"endpoint_url": endpoint},
    }
    manifest = run(parse_config(cfg))
    assert manifest["counts"]["output"] == 300
    storage = Storage.from_options(parse_config(cfg).storage)
    assert load_manifest(f"s3://{s3_bucket}/o", storage)["status"] == "succeeded"
    # without its manifest the folder is plain Parquet to training; with a run marker too it is an unfinished run
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.delete_object(Bucket=s3_bucket, Key="o/manifest.json")
    require_complete_run(storage, f"s3://{s3_bucket}/o/data")
    with pytest.raises(ConfigError, match="did not complete"):
        load_manifest(f"s3://{s3_bucket}/o", storage)
    s3.put_object(Bucket=s3_bucket, Key="o/_progress/run.json", Body=b"{}")
    with pytest.raises(ConfigError, match="did not complete"):
        require_complete_run(storage, f"s3://{s3_bucket}/o/data")


def test_credentials_never_appear_in_run_outputs(ray_local, s3_bucket):
    _upload(s3_bucket, "in/a.jsonl", data_path("web/c4_demo.jsonl"))
    out = f"s3://{s3_bucket}/secret-check"
    run(parse_config({"input": {"paths": [f"s3://{s3_bucket}/in/a.jsonl"]}, "output": {"path": out}}))
    s3 = boto3.client("s3")
    for key in ("secret-check/manifest.json", "secret-check/report.json", "secret-check/report.html"):
        body = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read().decode()
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in body and os.environ["AWS_ACCESS_KEY_ID"] not in body


def test_s3_endpoint_going_away_mid_run_fails_without_manifest_and_the_rerun_resumes(ray_local, s3_bucket, tmp_path):
    from thresher.curate.runner import RunFailed

    link = CuttableLink(S3_PORT)
    docs = c4_docs()
    src = tmp_path / "big.jsonl"
    src.write_text("".join(json.dumps({"text": d["text"] + f" {c}"}) + "\n" for c in range(4) for d in docs))
    cfg = parse_config(
        {
            "input": {"paths": [str(src)], "block_bytes": 64 << 10},
            "output": {"path": f"s3://{s3_bucket}/out"},
            "stages": [{"normalize": {}}, {"pii": {}}],
            "storage": {"endpoint_url": f"http://127.0.0.1:{link.port}"},
        }
    )
    s3 = boto3.client("s3")  # straight to the server, never through the link

    def keys() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="out/").get("Contents", [])]

    def cut_once_a_read_task_is_written() -> None:
        while True:
            names = [k.rsplit("/", 1)[-1] for k in keys() if "/_progress/" in k]
            read = {n[len("read-") :][:6] for n in names if n.startswith("read-")}
            if read & {n[len("write-s0-") :][:6] for n in names if n.startswith("write-s0-")}:
                return link.cut()
            time.sleep(0.05)

    threading.Thread(target=cut_once_a_read_task_is_written, daemon=True).start()
    with pytest.raises(RunFailed) as err:
        run(cfg)
    message = str(err.value)
    assert f"127.0.0.1:{link.port}" in message or "connect" in message.lower() or "s3" in message.lower(), message
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in message and os.environ["AWS_ACCESS_KEY_ID"] not in message
    written = keys()
    assert "out/manifest.json" not in written and "out/_progress/run.json" in written, written
    assert not any(k.startswith(("out/data/", "out/rejects/")) for k in written), written
    finished = sum("/_progress/read-" in k for k in written)
    assert finished >= 1

    link.restore()  # the endpoint is back: the same command resumes and completes
    manifest = run(cfg)
    assert manifest["counts"]["input"] == len(docs) * 4 == manifest["counts"]["output"] + manifest["counts"]["rejected"]
    assert 1 <= manifest["resumed"]["reused_read_tasks"] < manifest["resumed"]["read_tasks"]
    assert "out/manifest.json" in keys()


def _input_through(link, s3_bucket: str, tmp_path, name: str) -> tuple[dict, Path]:
    """A 400 KB JSON Lines file in the bucket, read through ``link`` as 64 KB ranges; the output is local."""
    s3 = boto3.client("s3")
    lines = [
        json.dumps({"id": str(i), "text": f"record {i} " + "lorem ipsum dolor sit amet " * 20}) for i in range(700)
    ]
    s3.put_object(Bucket=s3_bucket, Key=f"{name}.jsonl", Body=("\n".join(lines) + "\n").encode())
    out = tmp_path / name
    cfg = {
        "input": {"paths": [f"s3://{s3_bucket}/{name}.jsonl"], "block_bytes": 64 << 10},
        "output": {"path": str(out)},
        "stages": [{"normalize": {}}],
        "storage": {"endpoint_url": f"http://127.0.0.1:{link.port}"},
    }
    return cfg, out


def _arm_once_planned(link, out, failures: int) -> None:
    """Arm ``link`` once the run has planned its reads (the driver's own sampling read is not cut)."""

    def arm() -> None:
        while not (out / "_progress" / "run.json").exists():
            time.sleep(0.01)
        link.arm(failures)

    threading.Thread(target=arm, daemon=True).start()


def test_a_connection_lost_while_reading_is_retried_to_the_clean_result(ray_local, s3_bucket, tmp_path):
    """Connections reset in the middle of the input's bytes (beyond the S3 client's own retries) are not damage: the
    read task fails, Ray runs it again, and the run ends with the clean run's records, none of them rejected."""
    link = FlakyLink(S3_PORT)
    cfg, out = _input_through(link, s3_bucket, tmp_path, "clean")
    clean = run(parse_config(cfg))
    cfg["output"]["path"] = str(tmp_path / "flaky")
    _arm_once_planned(link, tmp_path / "flaky", failures=5)
    flaky = run(parse_config(cfg))
    assert link.failures <= 0, "the link cut fewer connections than planned"
    assert flaky["counts"] == clean["counts"] and flaky["counts"]["rejected"] == 0
    assert flaky["digests"] == clean["digests"]


def test_a_read_that_keeps_failing_fails_the_run_without_a_manifest(ray_local, s3_bucket, tmp_path):
    link = FlakyLink(S3_PORT)
    cfg, out = _input_through(link, s3_bucket, tmp_path, "broken")
    _arm_once_planned(link, out, failures=10**6)
    from thresher.curate.runner import RunFailed

    with pytest.raises(RunFailed, match="(?i)network|connection|curl|AWS Error"):
        run(parse_config(cfg))
    assert not (out / "manifest.json").exists()
