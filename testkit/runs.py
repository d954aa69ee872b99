"""Curation runs in tests: run a config, read what it wrote, check its accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from thresher.curate.config import parse_config
from thresher.curate.runner import run


def curate(tmp_path: Path, paths, stages=None, **input_opts) -> tuple[dict, Path]:
    out = tmp_path / "out"
    cfg = {
        "input": {"paths": [str(p) for p in paths], **input_opts},
        "output": {"path": str(out)},
        "stages": stages or [],
    }
    return run(parse_config(cfg)), out


def read_dir(path: Path) -> pa.Table:
    files = sorted(path.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive") if files else None


def assert_accounting(manifest: dict, out: Path) -> None:
    c = manifest["counts"]
    assert c["input"] + c["generated"] == c["output"] + c["rejected"]
    kept = sum(pq.read_metadata(f).num_rows for f in (out / "data").rglob("*.parquet"))
    rejected = (
        sum(pq.read_metadata(f).num_rows for f in (out / "rejects").rglob("*.parquet"))
        if (out / "rejects").exists()
        else 0
    )
    assert (kept, rejected) == (c["output"], c["rejected"])
    prev_out = c["input"]
    for stage, s in c["by_stage"].items():
        assert s["in"] == prev_out and s["in"] + s.get("generated", 0) == s["out"] + s["rejected"], stage
        prev_out = s["out"]
    assert prev_out == c["output"]


def write_jsonl(path: Path, records, opener=open) -> Path:
    with opener(path, "wb") as f:
        for r in records:
            f.write((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n")
    return path


def config_file(tmp_path: Path, body: dict) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(body))
    return str(p)
