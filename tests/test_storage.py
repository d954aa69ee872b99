"""Storage: globs match as a shell does (``*`` within one folder, ``**`` at any depth) on local disks and on S3, in
linear time, and files are written whole (a crash mid-write leaves the previous file or none, never a truncated one).
A URI storage cannot use (another scheme, credentials in it, a malformed glob) exits 2 naming the key."""

from __future__ import annotations

import json

import boto3
import pytest

from tests.conftest import ROOT
from thresher.cli import main as cli
from thresher.core.config import ConfigError
from thresher.core.storage import Storage, UriError
from thresher.evaluate.eval_config import parse_eval_config
from thresher.train.config import parse_config as parse_train_config

FILES = [
    "crawl/a.jsonl.gz",
    "crawl/b.jsonl.gz",
    "crawl/old/x.jsonl.gz",
    "crawl/old/deeper/y.jsonl.gz",
    "crawl/2024/c.jsonl",
    "crawl/2024/d.parquet",
    "crawl/_tmp/z.jsonl.gz",
    "other/e.jsonl.gz",
]
CASES = [
    ("crawl/*.jsonl.gz", ["crawl/a.jsonl.gz", "crawl/b.jsonl.gz"]),  # not crawl/old/x.jsonl.gz
    ("crawl/?.jsonl.gz", ["crawl/a.jsonl.gz", "crawl/b.jsonl.gz"]),
    ("crawl/[!a].jsonl.gz", ["crawl/b.jsonl.gz"]),
    ("crawl/*/*.jsonl*", ["crawl/2024/c.jsonl", "crawl/old/x.jsonl.gz"]),
    (
        "crawl/**/*.jsonl.gz",
        ["crawl/a.jsonl.gz", "crawl/b.jsonl.gz", "crawl/old/deeper/y.jsonl.gz", "crawl/old/x.jsonl.gz"],
    ),
    (
        "crawl/**",
        [
            "crawl/2024/c.jsonl",
            "crawl/2024/d.parquet",
            "crawl/a.jsonl.gz",
            "crawl/b.jsonl.gz",
            "crawl/old/deeper/y.jsonl.gz",
            "crawl/old/x.jsonl.gz",
        ],
    ),
    ("*/e.jsonl.gz", ["other/e.jsonl.gz"]),
]


@pytest.mark.parametrize("pattern, expected", CASES)
def test_globs_match_like_a_shell_on_a_local_disk(tmp_path, pattern, expected):
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    found = [uri for uri, _ in Storage().expand(str(tmp_path / pattern))]
    assert found == [str(tmp_path / e) for e in expected]


def test_globs_match_like_a_shell_on_s3(s3_bucket):
    client = boto3.client("s3")
    for name in FILES:
        client.put_object(Bucket=s3_bucket, Key=name, Body=b"{}\n")
    storage = Storage.from_options(None)
    for pattern, expected in CASES:
        found = [uri for uri, _ in storage.expand(f"s3://{s3_bucket}/{pattern}")]
        assert found == [f"s3://{s3_bucket}/{e}" for e in expected], pattern


WRITE_PAST_THE_LIMIT = """
import resource, signal, sys
from thresher.core.storage import Storage
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    Storage().write_bytes(sys.argv[1], b"x" * 1_000_000)
except OSError as e:
    print("failed:", e)
"""


def test_a_file_is_replaced_whole(tmp_path):
    """The new content goes to a temporary name that is renamed over the old file: a write that fails midway (a
    real one: past the process's file-size limit) leaves the old content and no partial file."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    target = tmp_path / "marker.json"
    Storage().write_bytes(str(target), b'{"rows": 1}')
    done = subprocess.run(
        [sys.executable, "-c", WRITE_PAST_THE_LIMIT, str(target)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert "failed:" in done.stdout, done.stdout + done.stderr
    assert json.loads(target.read_text()) == {"rows": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker.json"]


def test_a_folder_moves_whole_on_a_local_disk_and_on_s3(tmp_path, s3_bucket):
    """``move`` (how a run swaps its final files in at commit): every file arrives under the new name with its
    bytes, and nothing stays under the old one."""
    client = boto3.client("s3")
    names = ["data/part-00000.parquet", "data/train/part-00000.parquet", "data/test/part-00001.parquet"]
    for i, name in enumerate(names):
        client.put_object(Bucket=s3_bucket, Key=f"run/_staging/final/{name}", Body=bytes([i]) * 1000)
        (tmp_path / "_staging/final" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "_staging/final" / name).write_bytes(bytes([i]) * 1000)
    storage = Storage.from_options(None)
    for root in (f"s3://{s3_bucket}/run", str(tmp_path)):
        storage.move(f"{root}/_staging/final/data", f"{root}/data")
        assert [(uri.removeprefix(root + "/"), size) for uri, size in storage.expand(f"{root}/**")] == [
            (name, 1000) for name in sorted(names)
        ]
        assert [storage.read_bytes(f"{root}/{name}")[:1] for name in names] == [b"\0", b"\1", b"\2"]
        assert not storage.exists(f"{root}/_staging/final/data")


def test_the_write_check_leaves_no_folder_it_made_and_keeps_those_that_were_there(tmp_path):
    storage = Storage.from_options(None)
    storage.check_writable(str(tmp_path / "out/run"))
    assert list(tmp_path.iterdir()) == []  # a run that fails after the check leaves no empty out/run
    (tmp_path / "out").mkdir()
    storage.check_writable(str(tmp_path / "out/run"))
    assert [p.name for p in tmp_path.rglob("*")] == ["out"]
    (tmp_path / "out/file").write_text("x")
    with pytest.raises(OSError):
        storage.check_writable(str(tmp_path / "out/file/run"))


@pytest.mark.timeout(120)  # a backtracking matcher takes hours here
def test_a_glob_matches_a_long_name_in_linear_time(tmp_path):
    """``*a*a...*b`` against a 150-character name: Python's ``re`` backtracks through every split of the name (over
    30 s with eight ``*a``, before Ray started); RE2 answers at once."""
    (tmp_path / ("a" * 150)).write_text("{}\n")
    (tmp_path / ("a" * 149 + "b")).write_text("{}\n")
    found = Storage().expand(str(tmp_path / ("*a" * 12 + "*b")))
    assert [uri for uri, _ in found] == [str(tmp_path / ("a" * 149 + "b"))]


def test_another_scheme_and_credentials_in_a_uri_are_refused_not_read_as_a_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UriError, match="gs://bucket/run: storage reads and writes local paths, file:// and s3://"):
        Storage().resolve("gs://bucket/run")
    with pytest.raises(UriError, match="put credentials in the environment") as refused:
        Storage().resolve("s3://AKIAEXAMPLE:wJalrXUtnFEMIsecret@bucket/x")
    assert "wJalrXUtnFEMIsecret" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match=r"data\.train: gs://b/train: storage reads"):
        parse_train_config({"model": {"name_or_path": "m"}, "data": {"train": "gs://b/train"}, "output": {"path": "o"}})
    with pytest.raises(ConfigError, match=r"data\.path: d/\[z-a\]\*: not a valid glob"):
        parse_eval_config({"model": {"name_or_path": "m"}, "data": {"path": "d/[z-a]*"}, "output": {"path": "o"}})


@pytest.mark.parametrize(
    "override, error",
    [
        (
            "input.paths=['examples/corpus/[z-a]*']",
            "input.paths.0: examples/corpus/[z-a]*: not a valid glob (invalid character class range: z-a)",
        ),
        ("output.path=gs://bucket/run", "output.path: gs://bucket/run: storage reads and writes local paths"),
        (
            "input.paths=[s3://AKIAEXAMPLE:wJalrXUtnFEMIsecret@bucket/x]",
            "input.paths.0: s3://AKIAEXAMPLE:***@bucket/x: put credentials in the environment",
        ),
    ],
)
def test_a_uri_storage_cannot_use_exits_2_naming_the_key(tmp_path, monkeypatch, capsys, override, error):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tmp_path / "logs"))
    args = ["curate", "examples/quickstart.yaml", "--set", f"output.path={tmp_path / 'out'}", "--set", override]
    assert cli(args) == 2
    said = capsys.readouterr().err
    assert error in said and "wJalrXUtnFEMIsecret" not in said, said
    assert not (ROOT / "gs:").exists() and not (tmp_path / "out").exists()
