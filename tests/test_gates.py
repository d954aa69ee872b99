"""Run gates: a violated gate fails the run (exit 1) but keeps its report and a manifest saying why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from thresher.cli import main as cli_main
from thresher.curate.gates import GatesConfig, check

ROOT = Path(__file__).resolve().parents[1]


def counts(**over):
    c = {
        "input": 100,
        "output": 60,
        "rejected": 40,
        "splits": {"train": 50, "test": 10},
        "read_bytes": 8000,
        "rejected_bytes": 2000,
        "by_stage": {
            "read": {"in": 100, "out": 95, "rejected": 5},
            "langid": {"in": 95, "out": 80, "rejected": 15},
            "dedup_exact": {"in": 80, "out": 70, "rejected": 10},
            "dedup_fuzzy": {"in": 70, "out": 60, "rejected": 10},
        },
    }
    return {**c, **over}


@pytest.mark.parametrize(
    "gates, gate, measured, ok",
    [
        ({"max_rejected_fraction": 0.4}, "max_rejected_fraction", 0.4, True),
        ({"max_rejected_fraction": 0.39}, "max_rejected_fraction", 0.4, False),
        ({"max_duplicate_rate": 0.25}, "max_duplicate_rate", 0.25, True),  # (10 + 10) / 80 entering dedup
        ({"max_duplicate_rate": 0.2}, "max_duplicate_rate", 0.25, False),
        ({"max_malformed_fraction": 0.05}, "max_malformed_fraction", 0.05, True),
        ({"max_malformed_fraction": 0.01}, "max_malformed_fraction", 0.05, False),
        ({"max_malformed_bytes_fraction": 0.25}, "max_malformed_bytes_fraction", 0.25, True),  # 2000 / 8000 bytes
        ({"max_malformed_bytes_fraction": 0.2}, "max_malformed_bytes_fraction", 0.25, False),
        ({"min_output_records": 60}, "min_output_records", 60, True),
        ({"min_output_records": 61}, "min_output_records", 60, False),
        ({"max_output_records": 60}, "max_output_records", 60, True),
        ({"max_output_records": 59}, "max_output_records", 60, False),
        ({"min_split_records": {"test": 10}}, "min_split_records.test", 10, True),
        ({"min_split_records": {"validation": 1}}, "min_split_records.validation", 0, False),
        ({"max_stage_rejected_fraction": {"langid": 0.16}}, "max_stage_rejected_fraction.langid", 0.157895, True),
        ({"max_stage_rejected_fraction": {"langid": 0.15}}, "max_stage_rejected_fraction.langid", 0.157895, False),
    ],
)
def test_each_gate_on_both_sides(gates, gate, measured, ok):
    (result,) = check(GatesConfig(**gates), counts())
    assert (result["gate"], result["measured"], result["ok"]) == (gate, measured, ok)


def test_gate_on_a_stage_not_in_the_run_is_a_config_error(tmp_path, capsys):
    cfg = {
        "input": {"paths": ["x.jsonl"]},
        "output": {"path": str(tmp_path / "out")},
        "stages": [{"normalize": {}}],
        "gates": {"max_stage_rejected_fraction": {"langid": 0.1}},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert cli_main(["curate", str(tmp_path / "cfg.yaml")]) == 2
    assert "gates.max_stage_rejected_fraction.langid" in capsys.readouterr().err


@pytest.mark.parametrize(
    "stages, gates, error",
    [
        ([{"split": {}}], {"min_split_records": {"tset": 100}}, "gates.min_split_records.tset: no stage"),
        ([{"normalize": {}}], {"min_split_records": {"test": 1}}, "gates.min_split_records.test: no stage"),
        ([{"split": {}}], {"min_split_records": {"test": -1}}, "gates.min_split_records: test:"),
        ([{"langid": {}}], {"max_stage_rejected_fraction": {"langid": -0.1}}, "gates.max_stage_rejected_fraction:"),
        ([{"langid": {}}], {"max_stage_rejected_fraction": {"langid": 1.5}}, "langid: a fraction from 0 to 1"),
        ([{"langid": {}}], {"max_stage_rejected_fraction": {"unique_ids": 0.1}}, "rejected_fraction.unique_ids: no"),
        ([], {"min_output_records": 10, "max_output_records": 5}, "min_output_records: 10 is above max_output_records"),
        ([], {"max_rejected_fraction": float("nan")}, "gates.max_rejected_fraction:"),
    ],
)
def test_gates_that_cannot_hold_or_name_nothing_of_the_run_exit_2(tmp_path, capsys, stages, gates, error):
    cfg = {"input": {"paths": ["x.jsonl"]}, "output": {"path": str(tmp_path / "out")}, "stages": stages}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({**cfg, "gates": gates}))
    assert cli_main(["curate", str(tmp_path / "cfg.yaml")]) == 2
    assert error in capsys.readouterr().err


def curate_web_00(tmp_path: Path, **gates) -> int:
    """``thresher curate`` of a bundled file into ``tmp_path/out`` with ``gates``; its exit status."""
    cfg = {
        "input": {"paths": [str(ROOT / "examples/corpus/web-00.jsonl")]},
        "output": {"path": str(tmp_path / "out")},
        "stages": [{"normalize": {}}, {"dedup_exact": {}}],
        "gates": gates,
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return cli_main(["curate", str(tmp_path / "cfg.yaml")])


def test_violated_gate_exits_1_and_writes_report_and_manifest(ray_local, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tmp_path / "logs"))
    out = tmp_path / "out"
    assert curate_web_00(tmp_path, min_output_records=1_000_000, max_rejected_fraction=1.0) == 1
    err = capfd.readouterr().err
    assert "gate min_output_records: measured" in err and "limit 1000000" in err and "max_rejected_fraction" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "gate_failed"
    by_gate = {g["gate"]: g for g in manifest["gates"]}
    assert by_gate["min_output_records"]["ok"] is False
    assert by_gate["min_output_records"]["measured"] == manifest["counts"]["output"]
    assert by_gate["max_rejected_fraction"]["ok"] is True
    report = json.loads((out / "report.json").read_text())
    assert report["gates"]["status"] == "gate_failed"
    assert "VIOLATED" in (out / "report.html").read_text()


def test_a_rerun_that_fails_its_gates_leaves_the_succeeded_dataset_in_place(ray_local, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tmp_path / "logs"))
    out = tmp_path / "out"

    def data() -> list[bytes]:
        return sorted(p.read_bytes() for p in (out / "data").rglob("*.parquet"))

    assert curate_web_00(tmp_path, max_rejected_fraction=1.0) == 0
    good, manifest = data(), (out / "manifest.json").read_text()
    capfd.readouterr()
    assert curate_web_00(tmp_path, min_output_records=1_000_000) == 1
    err = capfd.readouterr().err
    assert f"stays in place; this run's data, report and manifest (gate_failed) are in {out}/_gate_failed" in err
    assert data() == good and (out / "manifest.json").read_text() == manifest  # training still reads the good one
    aside = json.loads((out / "_gate_failed/manifest.json").read_text())
    assert (aside["status"], aside["kept_previous_dataset"]) == ("gate_failed", True)
    assert (out / "_gate_failed/report.html").is_file() and list((out / "_gate_failed/data").glob("*.parquet"))
    assert not (out / "_progress").exists() and not (out / "_staging").exists()
    assert curate_web_00(tmp_path, max_rejected_fraction=1.0) == 0 and not (out / "_gate_failed").exists()
