"""``thresher compare`` on the test session's local Ray: two variants (LoRA, prompt tuning) of a tiny random Llama
trained on curated GSM8K records and evaluated on the test split; a re-run skips both; config errors exit 2
naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import yaml

from cluster.cli import main as cli
from testkit.tiny_llama import build_tiny_llama
from tests.conftest import ROOT, shared_path
from training.data import render_alpaca


@pytest.fixture(scope="module")
def curated(ray_local, tmp_path_factory) -> Path:
    """40 GSM8K records curated by thresher into train/validation/test, Alpaca columns."""
    from pipelines.config import parse_config
    from pipelines.runner import run

    tmp = tmp_path_factory.mktemp("compare-data")
    (tmp / "gsm8k.jsonl").write_text("".join(shared_path("sft/gsm8k_train.jsonl").read_text().splitlines(True)[:40]))
    run(parse_config({"input": {"paths": [str(tmp / "gsm8k.jsonl")], "text_field": "question"},
                      "output": {"path": str(tmp / "curated")},
                      "stages": [{"split": {"ratios": {"train": 0.6, "validation": 0.2, "test": 0.2}, "seed": 0}},
                                 {"format": {"template": "alpaca",
                                             "mapping": {"instruction": "question", "output": "answer"}}}]}))
    return tmp / "curated/data"


@pytest.fixture(scope="module")
def compare_config(curated, tmp_path_factory) -> Path:
    rows = [r for split in ("train", "validation", "test") for r in pq.read_table(curated / split).to_pylist()]
    tiny = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"),
                            [render_alpaca(r["instruction"], r["input"], r["output"])[0] for r in rows])
    tmp = tmp_path_factory.mktemp("compare")
    config = {
        "train": {"model": {"name_or_path": str(tiny)},
                  "data": {"train": str(curated / "train"), "validation": str(curated / "validation"),
                           "format": "alpaca", "max_seq_len": 256},
                  "method": "lora", "scaling": {"num_workers": 1},
                  "optim": {"lr": 1e-2, "max_steps": 2, "batch_size": 4, "log_every_steps": 1},
                  "checkpoint": {"every_steps": 2}},
        "eval": {"data": {"path": str(curated / "test"), "format": "alpaca", "max_rows": 3},
                 "generation": {"max_new_tokens": 4, "batch_size": 3}, "answer": {"extract": "last_number"},
                 "bootstrap": {"samples": 50}},
        "variants": [{"name": "lora"},
                     {"name": "prompt", "set": {"method": "prompt", "prompt_tuning": {"num_virtual_tokens": 4},
                                                "optim": {"lr": 0.3}}}],
        "output": {"path": str(tmp / "out")},
    }
    (tmp / "compare.yaml").write_text(yaml.safe_dump(config))
    return tmp / "compare.yaml"


@pytest.fixture(scope="module")
def compared(compare_config, tmp_path_factory):
    """The compare command run twice (in-process, as the CLI runs it): the second run finds both variants done."""
    out = Path(yaml.safe_load(compare_config.read_text())["output"]["path"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THRESHER_LOG_DIR", str(tmp_path_factory.mktemp("logs")))
        first = cli(["compare", str(compare_config)])
        result = json.loads((out / "compare.json").read_text())
        second = cli(["compare", str(compare_config)])
    return SimpleNamespace(codes=(first, second), out=out, first=result,
                           second=json.loads((out / "compare.json").read_text()))


def test_compare_trains_and_evaluates_every_variant(compared):
    assert compared.codes[0] == 0
    lora, prompt = compared.first["variants"]
    assert [v["name"] for v in (lora, prompt)] == ["lora", "prompt"] and not lora["skipped"] and not prompt["skipped"]
    for v in (lora, prompt):
        folder = compared.out / v["name"]
        train = json.loads((folder / "metrics.json").read_text())
        evaluation = json.loads((folder / "eval/metrics.json").read_text())
        assert v["eval"]["metrics"] == evaluation["metrics"] and v["eval"]["rows"] == 3
        assert evaluation["model"]["name_or_path"] == str(folder / "model")
        assert all(m["ci95"][0] <= m["value"] <= m["ci95"][1] for m in evaluation["metrics"].values())
        t = v["train"]
        assert (t["steps"], t["eval_loss"], t["tokens_per_s"]) == (2, train["eval_loss"], train["tokens_per_s"])
        assert t["wall_seconds"] > t["train_seconds"] > 0 and t["peak_memory_bytes"] > 0
        assert t["saved_bytes"] == sum(f.stat().st_size for f in (folder / "model").iterdir())
    assert prompt["method"] == "prompt" and prompt["train"]["trainable_params"] == 4 * 64  # 4 virtual tokens
    assert lora["train"]["trainable_params"] > prompt["train"]["trainable_params"]
    page = (compared.out / "compare.html").read_text()
    assert "<td>lora</td>" in page and "<td>prompt</td>" in page and "exact_match [95% CI]" in page
    assert "<script" not in page


def test_a_rerun_skips_complete_variants(compared):
    assert compared.codes[1] == 0
    assert [v["skipped"] for v in compared.second["variants"]] == [True, True]
    strip = [{k: v for k, v in row.items() if k != "skipped"} for row in compared.second["variants"]]
    assert strip == [{k: v for k, v in row.items() if k != "skipped"} for row in compared.first["variants"]]
    assert (compared.out / "compare.html").read_text().count("complete, not retrained") == 2


@pytest.mark.parametrize("override, key", [
    ("variants.1.set.optim.lrr=1", "variants.1.optim.lrr"),
    ("train.method=sft", "train.method"),
    ("variants.1.name=lora", "variants"),
    ("eval.metrics=[meteor]", "eval.metrics.0"),
    ("output.path=s3://bucket/compare", "output.path"),
])
def test_config_errors_exit_2_naming_the_key(compare_config, override, key, capsys):
    assert cli(["compare", str(compare_config), "--set", override]) == 2
    assert key in capsys.readouterr().err


def test_example_config_is_valid():
    from cluster.config import load_yaml, validate
    from training.compare import CompareConfig, plan

    plans = plan(validate(CompareConfig, load_yaml(ROOT / "examples/compare_smollm2.yaml")))
    assert {p.train.method for p in plans} == {"lora", "prefix", "prompt", "full"}
