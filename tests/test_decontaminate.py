"""Decontamination: GSM8K test questions planted into GSM8K train data are all caught, and exactly the train
records that really share a 13-gram with the test set are rejected besides them (checked against a brute-force
reference implementation), with the reference set broadcast whole or in hash-range shards; short references,
flag mode, Parquet/JSON-array/s3:// references, a missing check field, config errors; a leak in a second field
or a chat message."""

from __future__ import annotations

import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import data_path
from tests.samples import gsm8k
from tests.test_text_stages import frame
from thresher.core.config import ConfigError
from thresher.core.storage import Storage
from thresher.curate.config import parse_config
from thresher.curate.runner import run
from thresher.curate.stage import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, StageContext, run_map_stage
from thresher.curate.stages.decontaminate import Decontaminate, DecontaminateConfig


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def shares_ngram(text: str, reference_grams: set, short_refs: list[tuple[str, ...]], n: int = 13) -> bool:
    """Brute force: a 13-gram in common, or a whole short reference (5..12 words) inside the text."""
    if ngrams(text, n) & reference_grams:
        return True
    w = words(text)
    return any(tuple(w[i : i + len(r)]) == r for r in short_refs for i in range(len(w) - len(r) + 1))


def batch(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"d{i}" for i in range(len(texts))],
            "text": texts,
            REJECT_STAGE: None,
            REJECT_REASON: None,
            REJECT_DETAIL: None,
        }
    )


def check(stage: Decontaminate, frame: pd.DataFrame) -> pd.DataFrame:
    """The stage over one batch, as its Ray Data map operator runs it (every shard in turn)."""
    return run_map_stage(stage, frame)


@pytest.mark.parametrize("shard_ngrams", [None, 20_000], ids=["broadcast", "3-shards"])
def test_planted_test_questions_caught_and_nothing_else(ray_local, tmp_path, shard_ngrams):
    train = gsm8k()  # the first 1,500 train items; three of them share a 13-gram with the test split
    test_path = data_path("examples/data/gsm8k_test.jsonl")
    test = [json.loads(l) for l in test_path.read_text().splitlines()]
    planted = {}
    for k, i in enumerate(range(0, 1319, 22)):  # 60 test questions, three ways
        q = test[i]["question"]
        if k % 3 == 1:  # case, punctuation and spacing changed
            q = re.sub(r"[,.?!]", "", q.upper()).replace(" ", "  ")
        elif k % 3 == 2:  # inside a longer text
            q = f"My teacher gave us this one, can you help?\n\n{q}\n\nPlease explain each step."
        planted[f"planted-{i}"] = (q, i)
    records = [{"id": f"train-{j}", **r} for j, r in enumerate(train)]
    records += [{"id": pid, "question": q, "answer": "#### 0"} for pid, (q, _) in planted.items()]
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    options = {"references": [str(test_path)], "fields": ["question"]}
    if shard_ngrams:
        options["shard_ngrams"] = shard_ngrams
    cfg = parse_config(
        {
            "input": {"paths": [str(src)], "text_field": "question"},
            "output": {"path": str(out)},
            "stages": [{"normalize": {}}, {"decontaminate": options}],
        }
    )
    if shard_ngrams:
        stage = Decontaminate(cfg.stages[1].config, StageContext(text_field="question"))
        assert len(stage.shards) == 3 and 40_000 < len(stage.references) <= 60_000
    manifest = run(cfg)

    rejects = pq.read_table(out / "rejects").to_pandas()
    caught = rejects[rejects["stage"] == "decontaminate"]
    assert set(caught["reason"]) == {"contaminated"}
    for pid, (q, _) in planted.items():
        row = caught[caught["id"] == pid]
        assert len(row) == 1, f"{pid} not caught: {q[:80]}"
        detail = row["detail"].iloc[0]
        item = int(re.search(r"gsm8k_test\.jsonl item (\d+)", detail).group(1))
        assert ngrams(test[item]["question"], 13) & ngrams(q, 13), detail  # the named item really matches

    reference = set().union(*(ngrams(t["question"], 13) for t in test))
    short = [tuple(words(t["question"])) for t in test if 5 <= len(words(t["question"])) < 13]
    expected = {f"train-{j}" for j, r in enumerate(train) if shares_ngram(r["question"], reference, short)}
    assert 0 < len(expected) < 20  # GSM8K's own train/test overlap is small but real
    assert set(caught["id"]) - set(planted) == expected
    assert manifest["metrics"]["decontaminate"] == {
        "checked": len(records),
        "contaminated": len(planted) + len(expected),
    }
    assert manifest["counts"]["output"] == len(records) - len(planted) - len(expected)


def test_short_references_flag_mode_and_reference_formats(s3_bucket, tmp_path):
    parquet = tmp_path / "evals.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["q1", "q2", "q3"],
                "prompt": [
                    "Compute the integral of x squared",  # 6 words: used whole
                    "What is it",  # 3 words: skipped (min_words 5)
                    "Name the largest planet of the solar system and explain why it is a gas giant",
                ],
            }
        ),
        parquet,
    )
    array = tmp_path / "more.json"  # one JSON array (the Alpaca files' shape)
    array.write_text(
        json.dumps([{"prompt": "Translate the following sentence into French and keep the tone of the original"}])
    )
    storage = Storage.from_options(None)
    s3_uri = f"s3://{s3_bucket}/evals/gsm8k_test.jsonl"
    storage.write_bytes(s3_uri, data_path("examples/data/gsm8k_test.jsonl").read_bytes())
    gsm_question = gsm8k(6, "test")[5]["question"]

    cfg = DecontaminateConfig(references=[str(parquet), str(array)], reference_fields=["prompt"], ngram=8, mode="flag")
    stage = Decontaminate(cfg, StageContext(text_field="text", storage=storage))
    assert len(stage.references.origins.index) == 4 and stage.references.skipped == 1
    texts = [
        "Please compute the integral of x squared, then stop.",  # whole short reference
        "Compute the integral of y squared.",  # one word differs
        "What is it? Nobody knows.",  # the skipped 3-word reference
        "Quiz: name the largest planet of the solar system and explain",  # an 8-gram of q3 (n=8)
        "translate the following sentence into French, and keep the tone",  # JSON-array reference
        "Name the largest planet. Explain why it is a gas giant.",  # no 8 words in a row
    ]
    out = check(stage, batch(texts))
    assert out["contaminated"].tolist() == [True, False, False, True, True, False]
    assert out[REJECT_REASON].isna().all()
    one_per_pass = Decontaminate(
        cfg.model_copy(update={"shard_ngrams": 1}), StageContext(text_field="text", storage=storage)
    )
    assert len(one_per_pass.shards) == len(stage.references) > 10  # every n-gram in a pass of its own
    assert check(one_per_pass, batch(texts))["contaminated"].tolist() == out["contaminated"].tolist()

    s3_stage = Decontaminate(
        DecontaminateConfig(references=[s3_uri], reference_fields=["question", "answer"]),
        StageContext(text_field="text", storage=storage),
    )
    out = check(s3_stage, batch([gsm_question, "An unrelated sentence about the weather in spring."]))
    assert out[REJECT_REASON].tolist() == ["contaminated", None]
    assert f"{s3_uri} item 5" in out[REJECT_DETAIL].iloc[0]
    assert set(out.columns) == {
        "id",
        "text",
        REJECT_STAGE,
        REJECT_REASON,
        REJECT_DETAIL,
        "_metric.decontaminate.checked",
        "_metric.decontaminate.contaminated",
        "_seen.decontaminate",
        "_seconds.decontaminate",
    }

    # a check field the records lack: every record is rejected, nothing crashes
    typo = Decontaminate(
        DecontaminateConfig(references=[s3_uri], reference_fields=["question"], fields=["questoin"]),
        StageContext(text_field="text", storage=storage),
    )
    out = check(typo, batch([gsm_question, "Another sentence."]))
    assert out[REJECT_REASON].tolist() == ["missing_field"] * 2 and "questoin" in out[REJECT_DETAIL].iloc[0]


def test_reference_errors_are_config_errors(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "hello world"}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    for refs, message in [([str(tmp_path / "missing.jsonl")], "no files match"), ([str(bad)], "")]:
        cfg = parse_config(
            {
                "input": {"paths": [str(src)]},
                "output": {"path": str(tmp_path / "out")},
                "stages": [{"normalize": {}}, {"decontaminate": {"references": refs}}],
            }
        )
        with pytest.raises(ConfigError, match=f"stages.1.decontaminate.references: .*{message}"):
            run(cfg)


def test_a_leak_in_a_second_field_or_a_chat_message_is_caught():
    test_path = data_path("examples/data/gsm8k_test.jsonl")
    leaked = json.loads(test_path.read_text().splitlines()[42])["question"]
    clean = "A farmer has 12 cows and buys 5 more. How many cows does the farmer have now?"
    chat = [{"role": "user", "content": "Solve this for me please."}, {"role": "assistant", "content": leaked}]
    b = frame(
        question=[clean, clean, clean],
        answer=[f"Worked answer. {leaked}", "17 cows.", "17 cows."],
        messages=[None, json.dumps(chat), None],
    )
    every = Decontaminate(
        DecontaminateConfig(
            references=[str(test_path)], fields=["question", "answer", "messages"], reference_fields=["question"]
        ),
        StageContext(text_field="question"),
    )
    out = check(every, b.copy())
    assert out[REJECT_REASON].tolist() == ["contaminated", "contaminated", None]
    assert all("gsm8k_test.jsonl item 42" in d for d in out[REJECT_DETAIL][:2])
    assert out["_metric.decontaminate.contaminated"].tolist() == [1, 1, 0]
    # the text field alone (the default, reference fields of the same name) misses both
    default = Decontaminate(DecontaminateConfig(references=[str(test_path)]), StageContext(text_field="question"))
    assert check(default, b.copy())[REJECT_REASON].isna().all()
