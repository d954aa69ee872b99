"""``thresher stages`` and ``thresher schema``: every stage listed and described from its config model; each config
file's JSON Schema accepts every example config of its kind and refuses a misspelled option or stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from testkit.faults import DropsAWrittenRow  # noqa: F401  (a test stage: registered, not listed)
from tests.conftest import ROOT, run_cli
from thresher.cli import main
from thresher.curate.config import load_stages
from thresher.curate.stage import REGISTRY

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KIND_OF = {"train_": "train", "eval_": "eval", "compare_": "compare", "tune_": "tune"}


def kind_of(path: Path) -> str:
    return next((kind for prefix, kind in KIND_OF.items() if path.name.startswith(prefix)), "curate")


def schema(kind: str, capsys) -> jsonschema.Draft202012Validator:
    assert main(["schema", kind]) == 0
    document = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(document)
    return jsonschema.Draft202012Validator(document)


@pytest.mark.parametrize("kind", ["curate", "train", "eval", "compare", "tune"])
def test_every_example_config_is_valid_under_its_schema(kind, capsys):
    validator = schema(kind, capsys)
    examples = [p for p in sorted(EXAMPLES.glob("*.yaml")) if kind_of(p) == kind]
    assert examples
    for path in examples:
        errors = [
            f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in validator.iter_errors(yaml.safe_load(path.read_text()))
        ]
        assert not errors, f"{path.name}: {errors}"


def test_the_curate_schema_refuses_what_the_parser_refuses(capsys):
    validator = schema("curate", capsys)
    good = {
        "input": {"paths": "in/*.jsonl"},
        "output": {"path": "out"},
        "stages": [
            "normalize",
            {"pii": {"fields": "text"}},
            {"split": {"group_by": "q"}},
            {"dedup_fuzzy": {"verify": True}},
        ],
    }
    assert not list(validator.iter_errors(good))
    for bad in (
        {"stages": [{"pii": {"mode": "erase"}}]},
        {"stages": ["normalise"]},
        {"stages": [{"normalize": {"nfc": True}}]},
        {"inputs": {}},
    ):
        assert list(validator.iter_errors({**good, **bad})), bad


def test_stages_lists_every_stage_and_shows_each_ones_options(capsys):
    load_stages()
    assert main(["stages"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == sorted(n for n, c in REGISTRY.items() if c.__module__.startswith("thresher."))
    assert "test_drops_a_written_row" in REGISTRY and "test_drops_a_written_row" not in listed
    assert main(["stages", "dedup_fuzzy"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("dedup_fuzzy (global stage): ") and "  threshold: " in page and "- dedup_fuzzy: {}" in page
    assert main(["stages", "dedupe"]) == 2
    assert "unknown stage 'dedupe'" in capsys.readouterr().err


def test_the_cli_stops_quietly_in_a_pipe_and_names_a_user_error_without_a_traceback(capsys):
    """``| head`` closes the pipe before the schema (about 100 kB, more than a pipe holds) is written: thresher
    stops with exit 0 and nothing on stderr; a wrong stage name is one line; descriptions are plain text."""
    piped = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m thresher schema curate | head -1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, "{\n", "")
    wrong = run_cli("stages", "nonexistent", timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1, wrong.stderr
    assert wrong.stderr.startswith("thresher: error: stages: unknown stage 'nonexistent'")
    assert main(["stages"]) == 0 and main(["stages", "langid"]) == 0
    shown = capsys.readouterr().out
    assert "lang and lang_score" in shown and "`" not in shown
