"""curate -> train -> eval -> compare on the test session's Ray: GSM8K records curated into train/validation/test
(with curriculum difficulties), two variants of a tiny random Llama (LoRA, and prompt tuning in curriculum order)
trained and evaluated on the test split by ``thresher compare``, run from the folder of its config and data, which
it names by relative paths; the evaluation's outputs are checked against the model itself and its lineage leads back
to the curation run; what compare and eval write names the paths as the config gives them; a re-run skips both
variants; config errors, missing data and a model that is not there exit 2 naming the key."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from testkit.tiny_llama import build_tiny_llama
from tests.conftest import ROOT, data_path
from thresher.cli import main as cli
from thresher.core.lineage import config_hash, data_lineage
from thresher.core.storage import Storage
from thresher.evaluate.scoring import extract_answer
from thresher.train.data import IGNORE, Encoding, encode_batch, render_alpaca


@pytest.fixture(scope="module")
def curated(ray_local, tmp_path_factory) -> Path:
    """40 GSM8K records curated by thresher into train/validation/test, Alpaca columns and a difficulty, in the
    folder the compare config will be in."""
    from thresher.curate.config import parse_config
    from thresher.curate.runner import run

    tmp = tmp_path_factory.mktemp("compare")
    (tmp / "gsm8k.jsonl").write_text(
        "".join(data_path("examples/data/gsm8k_train.jsonl").read_text().splitlines(True)[:40])
    )
    run(
        parse_config(
            {
                "input": {"paths": [str(tmp / "gsm8k.jsonl")], "text_field": "question"},
                "output": {"path": str(tmp / "curated")},
                "stages": [
                    {"curriculum": {"signals": {"length": 1}}},
                    {"split": {"ratios": {"train": 0.6, "validation": 0.2, "test": 0.2}, "seed": 0}},
                    {"format": {"template": "alpaca", "mapping": {"instruction": "question", "output": "answer"}}},
                ],
            }
        )
    )
    return tmp / "curated/data"


@pytest.fixture(scope="module")
def compare_config(curated, tmp_path_factory) -> Path:
    """The compare config, beside the curated run it names by relative paths; the tiny Llama is named absolute (Ray
    Train runs the workers, which load it, in a folder of their own)."""
    rows = [r for split in ("train", "validation", "test") for r in pq.read_table(curated / split).to_pylist()]
    tiny = build_tiny_llama(
        tmp_path_factory.mktemp("tiny-llama"),
        [render_alpaca(r["instruction"], r["input"], r["output"])[0] for r in rows],
    )
    tmp = curated.parent.parent
    config = {
        "train": {
            "model": {"name_or_path": str(tiny)},
            "data": {
                "train": "curated/data/train",
                "validation": "curated/data/validation",
                "format": "alpaca",
                "max_seq_len": 256,
            },
            "method": "lora",
            "scaling": {"num_workers": 1},
            "optim": {"lr": 1e-2, "max_steps": 2, "batch_size": 4, "log_every_steps": 1},
            "checkpoint": {"every_steps": 2},
        },
        "eval": {
            "data": {"path": "curated/data/test", "format": "alpaca", "max_rows": 3},
            "generation": {"max_new_tokens": 4, "batch_size": 3},
            "answer": {"extract": "last_number"},
            "bootstrap": {"samples": 50},
        },
        "variants": [
            {"name": "lora"},
            {
                "name": "prompt",
                "set": {
                    "method": "prompt",
                    "prompt_tuning": {"num_virtual_tokens": 4},
                    "optim": {"lr": 0.3},
                    "data": {"order": "curriculum", "curriculum_buckets": 2},
                },
            },
        ],
        "output": {"path": "out"},
    }
    (tmp / "compare.yaml").write_text(yaml.safe_dump(config))
    return tmp / "compare.yaml"


@pytest.fixture(scope="module")
def compared(curated, compare_config, tmp_path_factory):
    """The compare command run twice (in-process, as the CLI runs it) from the config's folder, the test session's
    Ray started in another: the second run finds both variants done."""
    tmp = compare_config.parent
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THRESHER_LOG_DIR", str(tmp_path_factory.mktemp("logs")))
        mp.chdir(tmp)
        first = cli(["compare", "compare.yaml"])
        result = json.loads((tmp / "out/compare.json").read_text())
        second = cli(["compare", "compare.yaml"])
    return SimpleNamespace(
        codes=(first, second),
        tmp=tmp,
        out=tmp / "out",
        first=result,
        curated=curated,
        second=json.loads((tmp / "out/compare.json").read_text()),
    )


def test_compare_trains_and_evaluates_every_variant(compared):
    assert compared.codes[0] == 0
    lora, prompt = compared.first["variants"]
    assert [v["name"] for v in (lora, prompt)] == ["lora", "prompt"] and not lora["skipped"] and not prompt["skipped"]
    for v in (lora, prompt):
        folder = compared.out / v["name"]
        train = json.loads((folder / "metrics.json").read_text())
        evaluation = json.loads((folder / "eval/metrics.json").read_text())
        assert v["eval"]["metrics"] == evaluation["metrics"] and v["eval"]["rows"] == 3
        assert v["output"] == f"out/{v['name']}" and evaluation["model"]["name_or_path"] == f"out/{v['name']}/model"
        assert all(m["ci95"][0] <= m["value"] <= m["ci95"][1] for m in evaluation["metrics"].values())
        t = v["train"]
        assert (t["steps"], t["eval_loss"], t["tokens_per_s"]) == (2, train["eval_loss"], train["tokens_per_s"])
        assert t["wall_seconds"] > t["train_seconds"] > 0 and t["peak_memory_bytes"] > 0
        assert t["saved_bytes"] == sum(f.stat().st_size for f in (folder / "model").iterdir())
    assert prompt["method"] == "prompt" and prompt["train"]["trainable_params"] == 4 * 64  # 4 virtual tokens
    assert lora["train"]["trainable_params"] > prompt["train"]["trainable_params"]
    page = (compared.out / "compare.html").read_text()
    assert "<td>lora</td>" in page and "<td>prompt</td>" in page and "exact_match [95% CI]" in page
    # the prompt variant against the base (lora) on the same 3 test items
    assert compared.first["base"] == "lora" and lora["paired"] is None
    assert set(prompt["paired"]) == set(lora["eval"]["metrics"])
    em = prompt["paired"]["exact_match"]
    assert em["test"] == "mcnemar_exact" and em["items"] == 3 and sum(em["discordant"]) <= 3
    assert prompt["paired"]["token_f1"]["test"] == "paired_bootstrap"
    assert all(t["verdict"] in ("better", "worse", "within noise") for t in prompt["paired"].values())
    assert "exact_match vs lora [95% CI], p" in page and "(McNemar): " in page
    assert "<script" not in page


def test_what_compare_and_eval_write_names_paths_as_the_config_gives_them(compared):
    """compare.json, compare.html, each variant's variant.json and its evaluation's metrics.json and report.html,
    and the printed table name the config's relative paths, never the folder compare ran in."""
    from thresher.evaluate.compare_report import render_markdown

    assert compared.first["output"] == "out" and compared.first["eval_data"] == "curated/data/test"
    written = ["compare.json", "compare.html"] + [
        f"{name}/{file}"
        for name in ("lora", "prompt")
        for file in ("variant.json", "eval/metrics.json", "eval/report.html")
    ]
    for name in written:
        assert str(compared.tmp) not in (compared.out / name).read_text(), name
    assert str(compared.tmp) not in render_markdown(compared.first)


def test_a_rerun_skips_complete_variants(compared):
    assert compared.codes[1] == 0
    assert [v["skipped"] for v in compared.second["variants"]] == [True, True]
    strip = [{k: v for k, v in row.items() if k != "skipped"} for row in compared.second["variants"]]
    assert strip == [{k: v for k, v in row.items() if k != "skipped"} for row in compared.first["variants"]]
    assert (compared.out / "compare.html").read_text().count("complete, not retrained") == 2


def test_the_prompt_tuning_export_gives_the_trained_logits(compared, compare_config):
    """The prompt variant's saved adapter, reloaded with peft, gives the logits of the base model with the prompt
    encoder of its last checkpoint."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from thresher.core.config import load_yaml, validate
    from thresher.evaluate.compare import CompareConfig, plan
    from thresher.train.engines import TORCH_STATE_FILE
    from thresher.train.models import apply_method, load_base_model

    (prompt,) = [p for p in plan(validate(CompareConfig, load_yaml(compare_config))) if p.variant.name == "prompt"]
    reference = apply_method(load_base_model(prompt.train.model, torch.float32), prompt.train)
    checkpoint = json.loads((compared.out / "prompt/metrics.json").read_text())["checkpoint"]
    state = torch.load(compared.tmp / checkpoint / TORCH_STATE_FILE, weights_only=True)["trainable"]  # as given
    assert not reference.load_state_dict(state, strict=False).unexpected_keys
    tiny = prompt.train.model.name_or_path
    exported = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32), compared.out / "prompt/model"
    )
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        torch.testing.assert_close(
            exported.eval()(input_ids=ids).logits, reference.eval()(input_ids=ids).logits, atol=1e-5, rtol=1e-5
        )


# -- the LoRA variant's evaluation: its outputs and its lineage ---------------------------------------------------


def test_train_records_the_curated_data_lineage(compared, tmp_path):
    run_dir = compared.curated.parent
    manifest = json.loads((run_dir / "manifest.json").read_text())
    lineage = json.loads((compared.out / "lora/metrics.json").read_text())["lineage"]
    assert lineage == {
        split: {
            "path": f"curated/data/{split}",
            "run": "curated",
            "digests": manifest["digests"],
            "config_hash": config_hash(manifest["config"]),
        }
        for split in ("train", "validation")
    }
    record = json.loads((compared.out / "lora/model/thresher.json").read_text())
    assert record["lineage"] == lineage and record["method"] == "lora"
    assert set(manifest["digests"]) >= {"data/train", "data/validation", "data/test"}
    pq.write_table(pq.read_table(compared.curated / "test"), tmp_path / "part-0.parquet")
    assert data_lineage(str(tmp_path), Storage.from_options(None)) == {
        "path": str(tmp_path),
        "run": None,
        "digests": None,
        "config_hash": None,
    }


def test_eval_outputs_and_lineage(compared):
    m = json.loads((compared.out / "lora/eval/metrics.json").read_text())
    train_lineage = json.loads((compared.out / "lora/metrics.json").read_text())["lineage"]
    assert m["rows"] == 3 and set(m["metrics"]) == {
        "exact_match",
        "token_f1",
        "rouge_l",
        "bleu",
        "accuracy",
        "perplexity",
    }
    for name, metric in m["metrics"].items():
        assert metric["count"] == 3, name  # every GSM8K reference ends in "#### <number>"
        assert metric["ci95"][0] <= metric["value"] <= metric["ci95"][1], name
    assert m["lineage"]["model"] == train_lineage
    assert m["lineage"]["data"] == {**train_lineage["train"], "path": "curated/data/test"}
    predictions = pq.read_table(compared.out / "lora/eval/predictions.parquet").to_pylist()
    test_rows = pq.read_table(compared.curated / "test").to_pylist()[:3]
    assert [p["id"] for p in predictions] == [r["id"] for r in test_rows]
    for p, r in zip(predictions, test_rows):
        assert p["prompt"] == render_alpaca(r["instruction"], r["input"], "")[0] and p["reference"] == r["output"]
        assert p["answer_reference"] == extract_answer(r["output"], "last_number")
        answer = extract_answer(p["prediction"], "last_number") or ""
        assert p["exact_match"] == float(answer == p["answer_reference"])
    assert m["metrics"]["perplexity"]["value"] == pytest.approx(
        math.exp(sum(p["reference_nll"] for p in predictions) / sum(p["reference_tokens"] for p in predictions))
    )
    report = (compared.out / "lora/eval/report.html").read_text()
    assert "Worst examples by token_f1" in report and "Prediction length" in report and "<script" not in report


def test_eval_predictions_are_the_models_greedy_outputs_and_its_training_loss(compared, compare_config):
    """The first row's prediction is the adapter's greedy continuation of the prompt; the reference NLL per token
    is the loss training computes on that record (same tokens, same prompt masking)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thresher.train.sft import loss_sum

    config = yaml.safe_load(compare_config.read_text())
    tiny, new_tokens = config["train"]["model"]["name_or_path"], config["eval"]["generation"]["max_new_tokens"]
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32), compared.out / "lora/model"
    ).eval()
    tok = AutoTokenizer.from_pretrained(compared.out / "lora/model")
    first = pq.read_table(compared.out / "lora/eval/predictions.parquet").to_pylist()[0]
    ids = torch.tensor([tok(first["prompt"])["input_ids"]])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
    assert first["prediction"] == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    record = pq.read_table(compared.curated / "test", columns=["instruction", "input", "output"]).slice(0, 1)
    rows = encode_batch(record, tok, Encoding("alpaca", "text", 1024, packing=False))
    n = int(rows["attention_mask"][0].sum())
    batch_ids, labels = (torch.tensor(rows[k][:, :n], dtype=torch.long) for k in ("input_ids", "labels"))
    with torch.no_grad():
        loss = loss_sum(model(input_ids=batch_ids).logits, labels).item()
    assert first["reference_tokens"] == int((labels[:, 1:] != IGNORE).sum())
    assert first["reference_nll"] == pytest.approx(loss, rel=1e-4)


@pytest.mark.parametrize(
    "override, key",
    [
        ("variants.1.set.optim.lrr=1", "variants.1.set.optim.lrr: unknown key"),
        ("train.method=sft", "train.method"),
        ("variants.1.name=lora", "variants"),
        ("eval.metrics=[meteor]", "eval.metrics.0"),
        ("output.path=s3://bucket/compare", "output.path"),
        # the data and model of the variants to train, checked before any training, named where the config gives them
        (
            "train.data.validation=curated/data/missing",
            "train.data.validation: no Parquet files at curated/data/missing",
        ),
        (
            "variants.1.set.model.name_or_path=pkg:thresher_no_such_model",
            "variants.1.set.model.name_or_path: no installed Python package 'thresher_no_such_model'",
        ),
    ],
)
def test_config_errors_exit_2_naming_the_key(compare_config, override, key, capsys, monkeypatch):
    monkeypatch.chdir(compare_config.parent)
    assert cli(["compare", "compare.yaml", "--set", "output.path=out-errors", "--set", override]) == 2
    assert key in capsys.readouterr().err
    assert not (compare_config.parent / "out-errors").exists()


def test_a_variants_key_is_named_under_its_set_and_its_record_holds_no_password():
    from thresher.core.config import ConfigError, validate
    from thresher.evaluate.compare import CompareConfig, plan

    uri = "http://alice:hunter2-secret@127.0.0.1:9/mlflow"
    train = {"model": {"name_or_path": "m"}, "data": {"train": "t"}, "tracking": {"mlflow": {"tracking_uri": uri}}}
    config = {"train": train, "eval": {"data": {"path": "e"}}, "variants": [{"name": "a"}], "output": {"path": "o"}}
    (only,) = plan(validate(CompareConfig, config))
    assert only.train.tracking.mlflow.tracking_uri == uri  # training gets it whole
    assert "hunter2-secret" not in json.dumps(only.configs())  # variant.json's configs, compared on a rerun
    assert only.configs()["train"]["tracking"]["mlflow"]["tracking_uri"] == "http://alice:***@127.0.0.1:9/mlflow"
    config["variants"] = [{"name": "a", "set": {"bogus": 1}}]
    with pytest.raises(ConfigError, match=r"variants\.0\.set\.bogus: unknown key"):
        plan(validate(CompareConfig, config))


def test_example_config_is_valid():
    from thresher.core.config import load_yaml, validate
    from thresher.evaluate.compare import CompareConfig, plan

    plans = plan(validate(CompareConfig, load_yaml(ROOT / "examples/compare_smollm2.yaml")))
    assert {p.train.method for p in plans} == {"lora", "prefix", "prompt", "full"}


# -- paired tests against the base, on constructed prediction files (no Ray) --------------------------------------


def prediction_file(path: Path, ids: list[str], columns: dict[str, list]) -> Path:
    import pyarrow as pa

    n = len(ids)
    table = pa.table(
        {
            "id": ids,
            "prediction": [f"answer {i}" for i in range(n)],
            "reference": [f"answer {i}" for i in range(n)],
            **columns,
        }
    )
    pq.write_table(table, path)
    return path


def test_paired_tests_on_constructed_prediction_files(tmp_path):
    """Exact McNemar on exact_match gives the textbook p-value (2 P(X <= min(b, c)), X ~ Binomial(b + c, 1/2));
    the paired bootstrap of token_f1 covers the true mean difference; items are matched by id, whatever the order."""
    import numpy as np

    from thresher.evaluate.compare import paired_tests
    from thresher.evaluate.compare_report import paired_cell

    # 40 items: both right 15, both wrong 13, base right only 3 (b), variant right only 9 (c)
    base_em = [1.0] * 15 + [0.0] * 13 + [1.0] * 3 + [0.0] * 9
    variant_em = [1.0] * 15 + [0.0] * 13 + [0.0] * 3 + [1.0] * 9
    rng = np.random.default_rng(0)
    base_f1 = rng.uniform(0.2, 0.8, 40)
    noise = rng.uniform(-0.05, 0.05, 40)
    noise -= noise.mean()  # the sample's mean difference is exactly the true one
    variant_f1 = base_f1 + 0.1 + noise
    nll, tokens = rng.uniform(5, 20, 40), rng.integers(3, 9, 40)
    ids = [f"item-{i}" for i in range(40)]
    base = prediction_file(
        tmp_path / "base.parquet",
        ids,
        {
            "exact_match": base_em,
            "token_f1": base_f1.tolist(),
            "reference_nll": nll.tolist(),
            "reference_tokens": tokens.tolist(),
        },
    )
    order = rng.permutation(40)  # the variant's file in another order
    variant = prediction_file(
        tmp_path / "variant.parquet",
        [ids[i] for i in order],
        {
            "exact_match": [variant_em[i] for i in order],
            "token_f1": [variant_f1[i] for i in order],
            "reference_nll": [nll[i] * 0.5 for i in order],
            "reference_tokens": [int(tokens[i]) for i in order],
        },
    )
    result = paired_tests(
        pq.read_table(base), pq.read_table(variant), ["exact_match", "token_f1", "perplexity"], samples=2000, seed=0
    )
    em = result["exact_match"]
    textbook = 2 * sum(math.comb(12, k) for k in range(4)) / 2**12  # b = 3, c = 9: 598 / 4096 = 0.146
    assert em["test"] == "mcnemar_exact" and em["discordant"] == [3, 9] and em["items"] == 40
    assert em["p_value"] == pytest.approx(textbook) and em["verdict"] == "within noise"
    assert em["difference"] == pytest.approx((9 - 3) / 40)
    assert em["ci95"][0] < em["difference"] < em["ci95"][1]
    f1 = result["token_f1"]
    assert f1["test"] == "paired_bootstrap" and f1["difference"] == pytest.approx(0.1)
    assert f1["ci95"][0] < 0.1 < f1["ci95"][1] and f1["ci95"][1] - f1["ci95"][0] < 0.02  # covers it, narrowly
    assert f1["p_value"] < 0.05 and f1["verdict"] == "better"
    ppl = result["perplexity"]
    expected = math.exp(nll.sum() * 0.5 / tokens.sum()) - math.exp(nll.sum() / tokens.sum())
    assert ppl["difference"] == pytest.approx(expected) and ppl["verdict"] == "better"  # lower is better
    lo, hi = (f"{x:.3g}" for x in em["ci95"])
    assert paired_cell(result, "exact_match") == f"+0.15 [{lo}, {hi}], p=0.15 (McNemar): within noise"
    assert paired_cell(None, "exact_match") == "base"
    # a clear win: b = 1, c = 12 gives p = 2 (1 + 13) / 2^13
    b_file = prediction_file(tmp_path / "b.parquet", ids[:13], {"exact_match": [1.0] + [0.0] * 12})
    c_file = prediction_file(tmp_path / "c.parquet", ids[:13], {"exact_match": [0.0] + [1.0] * 12})
    clear = paired_tests(pq.read_table(b_file), pq.read_table(c_file), ["exact_match"], samples=200, seed=0)
    assert clear["exact_match"]["p_value"] == pytest.approx(2 * (1 + 13) / 2**13)
    assert clear["exact_match"]["verdict"] == "better"
