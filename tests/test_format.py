"""The format stage: valid Alpaca and chat records from GSM8K and Alpaca-format data, invalid ones rejected with a
reason (missing source fields too), the plain-text record schema, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.samples import alpaca_records, gsm8k
from thresher.core.config import ConfigError
from thresher.curate.config import parse_config
from thresher.curate.runner import run
from thresher.curate.stage import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, StageContext, run_map_stage
from thresher.curate.stages.format import Format, FormatConfig, check_chat


def curate(tmp_path: Path, name: str, records: list[dict], text_field: str, stages: list[dict]) -> pd.DataFrame:
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / name
    manifest = run(
        parse_config(
            {"input": {"paths": [str(src)], "text_field": text_field}, "output": {"path": str(out)}, "stages": stages}
        )
    )
    assert manifest["counts"]["output"] == len(records), manifest["rejected_by_reason"]
    return pq.read_table(out / "data").to_pandas()


def frame(columns: dict) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame(
        {"id": [f"r{i}" for i in range(n)], **columns, REJECT_STAGE: None, REJECT_REASON: None, REJECT_DETAIL: None}
    )


def stage(text_field: str = "text", **options) -> Format:
    return Format(FormatConfig(**options), StageContext(text_field=text_field))


def test_gsm8k_to_alpaca_and_chat(ray_local, tmp_path):
    records = gsm8k(300)
    alpaca = curate(
        tmp_path,
        "alpaca",
        records,
        "question",
        [
            {"normalize": {}},
            {"format": {"template": "alpaca", "mapping": {"instruction": "question", "output": "answer"}}},
        ],
    )
    answers = {r["answer"] for r in records}
    assert (alpaca["instruction"] == alpaca["question"]).all()  # the question after normalize
    assert (alpaca["output"] == alpaca["answer"]).all() and set(alpaca["output"]) == answers
    assert (alpaca["input"] == "").all() and alpaca["output"].str.contains("####").all()

    chat = curate(
        tmp_path,
        "chat",
        records,
        "question",
        [
            {
                "format": {
                    "template": "chat",
                    "mapping": {"user": "question", "assistant": "answer"},
                    "system_prompt": "Solve the problem step by step.",
                }
            }
        ],
    )
    for question, answer, messages in zip(chat["question"], chat["answer"], chat["messages"]):
        messages = list(messages)
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert (messages[1]["content"], messages[2]["content"]) == (question, answer)
        assert check_chat([dict(m) for m in messages]) is None


def test_alpaca_data_to_alpaca_and_chat(ray_local, tmp_path):
    records = alpaca_records(300)  # Alpaca-format records from GSM8K test items, a hint as input in every third
    with_input = sum(1 for r in records if r["input"])
    assert len({r["instruction"] for r in records}) == 300 and 0 < with_input < 300
    alpaca = curate(tmp_path, "alpaca", records, "instruction", [{"format": {"template": "alpaca"}}])
    source = {r["instruction"]: r for r in records}
    for row in alpaca.itertuples():
        assert (row.input, row.output) == (source[row.instruction]["input"], source[row.instruction]["output"])

    chat = curate(
        tmp_path,
        "chat",
        records,
        "instruction",
        [{"format": {"template": "chat", "mapping": {"user": ["instruction", "input"]}}}],
    )
    joined = 0
    for instruction, messages in zip(chat["instruction"], chat["messages"]):
        r = source[instruction]
        user, assistant = messages
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert user["content"] == (f"{r['instruction']}\n\n{r['input']}" if r["input"] else r["instruction"])
        assert assistant["content"] == r["output"]
        joined += bool(r["input"])
    assert joined == with_input


def test_invalid_records_are_rejected_with_a_reason():
    out = run_map_stage(
        stage(template="alpaca", mapping={"instruction": "q", "output": "a"}),
        frame({"q": ["What is 2+2?", " ", "Name a colour."], "a": ["4", "x", "\n"]}),
    )
    assert out[REJECT_REASON].tolist() == [None, "empty_instruction", "empty_output"]
    assert (out[REJECT_STAGE].dropna() == "format").all()

    conversations = [
        [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}],  # ShareGPT: valid
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Bye!"},
        ],  # valid, 2 turns
        [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi again"}],
        [{"role": "narrator", "content": "Once"}, {"role": "assistant", "content": "upon"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}],
        [{"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Hi"}, {"role": "system", "content": "late"}],
        "not json",
        [],
    ]
    out = run_map_stage(
        stage(template="chat", mapping={"messages": "conversations"}),
        frame({"conversations": [c if isinstance(c, str) else json.dumps(c) for c in conversations]}),
    )
    assert out[REJECT_REASON].tolist() == [None, None] + ["invalid_chat"] * 7
    assert out["messages"][0] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    details = out[REJECT_DETAIL].tolist()[2:]
    assert details == [
        "turn 1: expected assistant, got user",
        "message 0: unknown role 'narrator'",
        "message 1 (assistant): empty content",
        "the conversation must end with an assistant reply",
        "turn 1: expected assistant, got system",
        "not a JSON list of messages",
        "no messages",
    ]
    # a list column (Parquet) reads as an array of dicts; an empty role is no role
    arrays = pd.Series(
        [
            np.array([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]),
            np.array([{"role": "", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]),
        ]
    )
    out = run_map_stage(stage(template="chat", mapping={"messages": "conversations"}), frame({"conversations": arrays}))
    assert out["messages"][0][1] == {"role": "assistant", "content": "Yo"}
    assert out[REJECT_DETAIL].tolist() == [None, "message 0: unknown role ''"]


def test_text_record_schema():
    out = run_map_stage(
        stage(template="text", metadata={"source": "url", "timestamp": "date", "quality_score": "score"}),
        frame(
            {
                "text": ["A document.", ""],
                "url": ["https://example.org/a", None],
                "date": ["2024-05-01", None],
                "score": ["0.93", "high"],
            }
        ),
    )
    assert out[REJECT_REASON].tolist() == [None, "empty_text"]
    assert orjson.loads(out["metadata"][0]) == {
        "source": "https://example.org/a",
        "timestamp": "2024-05-01",
        "domain": None,
        "quality_score": 0.93,
    }
    assert orjson.loads(out["metadata"][1])["quality_score"] is None
    # defaults: the text field as text, each key from the first of its usual fields present, domain from url
    out = run_map_stage(
        stage(text_field="body", template="text"),
        frame(
            {
                "body": ["Hello.", "Hi."],
                "domain": ["news", None],
                "created": ["2020-04-01", None],
                "date": ["1999", "1999"],
            }
        ),
    )
    assert out["text"].tolist() == ["Hello.", "Hi."]
    assert [orjson.loads(m) for m in out["metadata"]] == [
        {"source": None, "timestamp": "2020-04-01", "domain": "news", "quality_score": None},
        {"source": None, "timestamp": None, "domain": None, "quality_score": None},
    ]
    out = run_map_stage(
        stage(template="text"),
        frame({"text": ["Page."], "url": ["https://www.example.org:8080/a?b"], "warc_date": ["2024-05-01T00:00:00Z"]}),
    )
    assert orjson.loads(out["metadata"][0]) == {
        "source": None,
        "timestamp": "2024-05-01T00:00:00Z",
        "domain": "www.example.org",
        "quality_score": None,
    }


def test_missing_fields_reject_instead_of_failing():
    """A source column the records lack (a mapping's typo) rejects the records with the field named; an absent
    optional ``input`` is just empty."""
    cases = [
        (dict(template="alpaca", mapping={"output": "answer"}), "'answer'"),
        (dict(template="alpaca"), "'output'"),  # the default source of output
        (dict(template="chat", mapping={"messages": "conversations"}), "'conversations'"),
        (dict(template="chat", mapping={"user": "text", "system": "persona"}), "'persona'"),
        (dict(template="text", metadata={"source": "url"}), "'url'"),
    ]
    for options, field in cases:
        out = run_map_stage(stage(**options), frame({"text": ["q", "r"]}))
        assert out[REJECT_REASON].tolist() == ["missing_field"] * 2, options
        assert field in out[REJECT_DETAIL].iloc[0] and "columns: id, text" in out[REJECT_DETAIL].iloc[0]
    out = run_map_stage(stage(template="alpaca"), frame({"text": ["q"], "output": ["a"]}))
    assert out[REJECT_REASON].isna().all() and out["input"].tolist() == [""]


def test_config_errors():
    for options, message in [
        ({"template": "alpaca", "mapping": {"messages": "m"}}, "not an output of template alpaca"),
        ({"template": "chat", "mapping": {"messages": ["a", "b"]}}, "mapping.messages: one field"),
        ({"template": "chat", "mapping": {"messages": "m", "user": "u"}}, "not both"),
        ({"template": "alpaca", "metadata": {"source": "s"}}, "only for template text"),
    ]:
        with pytest.raises(ConfigError, match=f"stages.0.format.*{message}"):
            parse_config({"input": {"paths": ["x"]}, "output": {"path": "o"}, "stages": [{"format": options}]})
