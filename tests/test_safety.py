"""Safe defaults: the PII salt comes only from the environment and appears in no output or log; an output folder
that a run would damage is refused before anything is touched; training reads plain Parquet and refuses only
unfinished or gate-failed thresher runs."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import run_cli
from thresher.cli import main
from thresher.core.config import ConfigError
from thresher.core.storage import Storage
from thresher.curate.config import parse_config
from thresher.curate.run_folder import check_output
from thresher.curate.runner import run
from thresher.train.data import Encoding, check_no_leak, parquet_files

EMAILS = ["ann.lee@example.org", "bo.chen@example.net", "cy@mail.example.com"]
RECORDS = [
    {"id": f"r{i}", "text": f"Write to {EMAILS[i % 3]} about order {i}; we answer within two days."} for i in range(30)
]


def write_config(path: Path, inputs: list[str], output: str, stages: list | None = None, **extra) -> str:
    path.write_text(
        yaml.safe_dump({"input": {"paths": inputs}, "output": {"path": output}, "stages": stages or [], **extra})
    )
    return str(path)


def corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return folder


def digest(salt: str, value: str) -> str:
    return hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()[:12]


# -- the PII salt ----------------------------------------------------------------------------------------------


@pytest.mark.slow  # 10 s or more: not in the fast subset
def test_hash_mode_takes_the_salt_from_the_environment_and_it_appears_in_no_output_or_log(tmp_path):
    salt = "salt-" + secrets.token_hex(12)
    cfg = write_config(
        tmp_path / "cfg.yaml", [str(corpus(tmp_path / "in"))], str(tmp_path / "out"), [{"pii": {"mode": "hash"}}]
    )
    res = run_cli("curate", cfg, env={"THRESHER_PII_SALT": salt, "THRESHER_LOG_DIR": str(tmp_path / "logs")})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    texts = pq.read_table(tmp_path / "out" / "data").column("text").to_pylist()
    assert len(texts) == len(RECORDS) and not any(e in t for t in texts for e in EMAILS)
    assert all(
        f"[EMAIL:{digest(salt, EMAILS[int(i[1:]) % 3])}]" in t
        for i, t in zip(pq.read_table(tmp_path / "out" / "data").column("id").to_pylist(), texts)
    )
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    pii = manifest["config"]["stages"][0]["pii"]
    assert pii["mode"] == "hash" and pii["salt_env"] == "THRESHER_PII_SALT" and "salt" not in pii
    logs = [Path(p) for p in re.findall(r"^log: (.+)$", res.stdout + res.stderr, re.M)]
    files = [*(tmp_path / "out").rglob("*"), *(tmp_path / "logs").rglob("*"), *logs]
    written = [f for f in files if f.is_file()]
    assert {"manifest.json", "report.json", "report.html", "README.md"} <= {f.name for f in written}
    assert any(f.suffix == ".log" for f in written), "no run log found"
    for f in written:
        assert salt.encode() not in f.read_bytes(), f
    assert salt not in res.stdout + res.stderr


def test_the_workers_hash_with_the_salt_the_driver_read(ray_local, tmp_path, monkeypatch):
    """The session's Ray workers started before the variable was set: the salt travels with the stage."""
    salt = secrets.token_hex(8)
    monkeypatch.setenv("PII_SALT_FOR_THIS_TEST", salt)
    run(
        parse_config(
            {
                "input": {"paths": [str(corpus(tmp_path / "in"))]},
                "output": {"path": str(tmp_path / "out")},
                "stages": [{"pii": {"mode": "hash", "salt_env": "PII_SALT_FOR_THIS_TEST"}}],
            }
        )
    )
    rows = pq.read_table(tmp_path / "out" / "data").to_pylist()
    assert len(rows) == len(RECORDS)
    assert all(f"[EMAIL:{digest(salt, EMAILS[int(r['id'][1:]) % 3])}]" in r["text"] for r in rows)


def test_a_run_resumes_only_into_output_hashed_with_the_same_salt(tmp_path, monkeypatch):
    from thresher.curate.plan import preflight, run_key

    monkeypatch.setenv("THRESHER_PII_SALT", "first")
    cfg = parse_config(
        {
            "input": {"paths": [str(corpus(tmp_path / "in"))]},
            "output": {"path": str(tmp_path / "out")},
            "stages": [{"pii": {"mode": "hash"}}],
            "gates": {"min_output_records": 1},
        }
    )
    keys = []
    for salt in ("first", "first", "second"):
        monkeypatch.setenv("THRESHER_PII_SALT", salt)
        tasks, _, segs = preflight(cfg, Storage())
        keys.append(run_key(cfg, tasks, segs))
    assert keys[0] == keys[1] != keys[2]
    assert not any(salt in k for k in keys for salt in ("first", "second"))
    relaxed = cfg.model_copy(update={"gates": cfg.gates.model_copy(update={"min_output_records": 0})})
    assert run_key(relaxed, tasks, segs) == keys[2]  # gates do not change what a run computes


def test_a_salt_in_the_config_or_a_missing_salt_variable_is_a_config_error(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("THRESHER_PII_SALT", raising=False)
    inputs = [str(corpus(tmp_path / "in"))]
    written = write_config(
        tmp_path / "a.yaml",
        inputs,
        str(tmp_path / "out"),
        [{"normalize": {}}, {"pii": {"mode": "hash", "salt": "typed-into-the-config"}}],
    )
    assert main(["curate", written]) == 2
    err = capfd.readouterr().err
    assert "stages.1.pii.salt:" in err and "environment variable" in err and "typed-into-the-config" not in err, err
    missing = write_config(tmp_path / "b.yaml", inputs, str(tmp_path / "out"), [{"pii": {"mode": "hash"}}])
    assert main(["curate", missing]) == 2
    err = capfd.readouterr().err
    assert "stages.0.pii.salt_env:" in err and "THRESHER_PII_SALT" in err and "not set" in err, err
    monkeypatch.setenv("THRESHER_PII_SALT", "")
    assert main(["curate", missing]) == 2
    assert not (tmp_path / "out").exists()


# -- output folders ----------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["is the input", "contains the input", "lies inside the input", "not a run"])
def test_an_output_a_run_would_damage_is_refused_before_anything_is_touched(tmp_path, monkeypatch, capfd, case):
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tmp_path / "logs"))
    project = tmp_path / "project"
    inputs = {
        "is the input": project / "raw",
        "contains the input": project / "raw",
        "lies inside the input": project,
        "not a run": project / "raw",
    }[case]
    output = {
        "is the input": project / "raw",
        "contains the input": project,
        "lies inside the input": project / "curated",
        "not a run": project / "notes",
    }[case]
    corpus(project / "raw")
    (project / "data").mkdir()  # a name a run replaces
    (project / "data" / "keep.parquet").write_bytes(b"not thresher's")
    (project / "README.md").write_text("my project")
    (project / "notes").mkdir()
    (project / "notes" / "report.html").write_text("my report")
    before = snapshot(project)
    cfg = write_config(tmp_path / "cfg.yaml", [str(inputs)], str(output))
    assert main(["curate", cfg]) == 2
    err = capfd.readouterr().err
    expected = "is a non-empty folder" if case == "not a run" else case
    assert f"output.path: {output} {expected}" in err, err
    assert snapshot(project) == before


def test_globs_and_existing_runs(tmp_path):
    storage = Storage()
    raw = corpus(tmp_path / "raw")
    check_output(str(raw / "curated"), [str(raw / "*.jsonl")], storage)  # the glob never reads a run's files
    with pytest.raises(ConfigError, match="lies inside the input"):
        check_output(str(raw / "curated"), [str(raw / "*")], storage)
    with pytest.raises(ConfigError, match="is the input"):
        check_output(str(raw), [str(raw / "part-*.jsonl")], storage)
    with pytest.raises(ConfigError, match="is a file"):
        check_output(str(raw / "part-0.jsonl"), [str(tmp_path / "elsewhere")], storage)
    for marker in ("manifest.json", "_progress", "_staging"):  # a previous run (complete or not) is replaced
        folder = tmp_path / f"run-{marker}"
        (folder / "data").mkdir(parents=True)
        (folder / marker).write_text("{}") if marker.endswith(".json") else (folder / marker).mkdir()
        check_output(str(folder), [str(raw)], storage)
    (tmp_path / "empty").mkdir()
    check_output(str(tmp_path / "empty"), [str(raw)], storage)
    check_output(str(tmp_path / "new" / "run"), [str(raw)], storage)
    check_output(str(tmp_path / "raw2"), [str(raw)], storage)  # a sibling whose name starts like the input's


def test_s3_outputs_are_compared_by_bucket_and_prefix(s3_bucket, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tmp_path / "logs"))
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="crawl/raw/a.jsonl", Body=json.dumps(RECORDS[0]).encode() + b"\n")
    s3.put_object(Bucket=s3_bucket, Key="team/notes.txt", Body=b"someone else's")

    def objects() -> dict[str, bytes]:
        listed = s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
        return {o["Key"]: s3.get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read() for o in listed}

    before = objects()
    for output, inputs, said in (
        (f"s3://{s3_bucket}/crawl", [f"s3://{s3_bucket}/crawl/raw/*.jsonl"], "contains"),
        (f"s3://{s3_bucket}/team", [f"s3://{s3_bucket}/crawl/raw/"], "is a non-empty"),
    ):
        assert main(["curate", write_config(tmp_path / "cfg.yaml", inputs, output)]) == 2
        err = capfd.readouterr().err
        assert f"output.path: {output} {said}" in err, err
    assert objects() == before
    check_output(f"s3://{s3_bucket}/crawl-out", [f"s3://{s3_bucket}/crawl/raw/"], Storage.from_options(None))


# -- what training reads -----------------------------------------------------------------------------------------


TEXT = Encoding("text", "text", 64, True)


def parquet_folder(folder: Path, name: str = "part-00000.parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": ["plain parquet row one", "and row two"]}), folder / name)
    return folder


def test_training_reads_plain_parquet_folders_named_data(tmp_path):
    storage = Storage()
    hf = parquet_folder(tmp_path / "hf-dataset" / "data", "train-00000-of-00001.parquet")
    (tmp_path / "hf-dataset" / "README.md").write_text("---\nconfigs: [{config_name: default}]\n---\n")
    assert parquet_files(str(hf), "data.train", TEXT, storage) == [str(hf / "train-00000-of-00001.parquet")]
    plain = parquet_folder(tmp_path / "export" / "data" / "train")
    assert parquet_files(str(plain), "data.train", TEXT, storage) == [str(plain / "part-00000.parquet")]


def test_training_refuses_data_that_holds_the_validation_split(tmp_path):
    """A thresher run's data/ with split subfolders would train on validation and test too: refused, naming the
    split to give; so are training files that include the validation files. A Hugging Face dataset's data/ with
    split subfolders (no manifest.json) is read as it is."""
    storage = Storage()
    run_data = tmp_path / "run" / "data"
    for split in ("train", "validation", "test"):
        parquet_folder(run_data / split)
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"status": "succeeded"}))
    files = parquet_files(str(run_data), "data.train", TEXT, storage)
    validation = parquet_files(str(run_data / "validation"), "data.validation", TEXT, storage)
    with pytest.raises(ConfigError, match=rf"data\.train: .*splits test, train, validation.*{run_data}/train"):
        check_no_leak("data.train", str(run_data), files, validation, storage)
    with pytest.raises(ConfigError, match=r"data\.train\.1\.path: .* holds 1 of data\.validation's files"):
        check_no_leak("data.train.1.path", str(run_data / "*" / "*.parquet"), files, validation, storage)
    check_no_leak(
        "data.train",
        str(run_data / "train"),
        parquet_files(str(run_data / "train"), "data.train", TEXT, storage),
        validation,
        storage,
    )
    hf = tmp_path / "hf" / "data"
    for split in ("train", "validation"):
        parquet_folder(hf / split)
    check_no_leak("data.train", str(hf), parquet_files(str(hf), "data.train", TEXT, storage), None, storage)


@pytest.mark.parametrize("marker", ["_progress", "_staging"])
def test_training_refuses_an_unfinished_thresher_run(tmp_path, marker):
    run_folder = tmp_path / "run"
    data = parquet_folder(run_folder / "data" / "train")
    (run_folder / marker).mkdir()
    with pytest.raises(ConfigError, match=r"data\.train: .*did not complete"):
        parquet_files(str(data), "data.train", TEXT, Storage())
    (run_folder / "manifest.json").write_text(json.dumps({"status": "succeeded"}))
    assert parquet_files(str(data), "data.train", TEXT, Storage())  # committed (the markers are left over)


def test_training_refuses_a_run_that_failed_its_gates(ray_local, tmp_path):
    out = tmp_path / "out"
    cfg = {
        "input": {"paths": [str(corpus(tmp_path / "in"))]},
        "output": {"path": str(out)},
        "gates": {"min_output_records": 1000, "max_rejected_fraction": 0.5},
    }
    assert run(parse_config(cfg))["status"] == "gate_failed"
    with pytest.raises(
        ConfigError,
        match=r"data\.train: .*failed its gates: min_output_records \(measured 30, "
        r"limit 1000\); refusing",
    ):
        parquet_files(str(out / "data"), "data.train", TEXT, Storage())
