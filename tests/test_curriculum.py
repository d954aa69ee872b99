"""Curriculum: difficulty signals and their combination recomputed independently, the ordered split's files from
easy to hard with ties in key order, and ``thresher train``'s ``data.order`` (the order of the records the dataset
gives). A training run in curriculum order is one of test_compare.py's variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit.tiny_llama import build_tiny_llama
from tests.samples import gsm8k
from thresher.core.config import ConfigError
from thresher.core.storage import Storage
from thresher.curate.config import parse_config
from thresher.curate.runner import run
from thresher.curate.stages.curriculum import text_measures, word_buckets
from thresher.train.data import Encoding, build_dataset, render_alpaca
from thresher.train.order import ORDER_KEY, RecordOrder, _with_order_key

PLANTED = ["zorbleflax quenthivor amplestrad morquelline", "vintrasoke plumbrevian oxtellarium"]


def questions(n: int) -> list[dict]:
    return [{"id": f"q{i:04d}", **r} for i, r in enumerate(gsm8k(n))]


def curate(records: list[dict], out: Path, stages: list[dict]) -> dict:
    src = out.with_suffix(".jsonl")
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    return run(
        parse_config(
            {"input": {"paths": [str(src)], "text_field": "question"}, "output": {"path": str(out)}, "stages": stages}
        )
    )


def files_of(folder: Path) -> list[pa.Table]:
    return [pq.read_table(f) for f in sorted(folder.glob("*.parquet"))]


def test_text_measures_by_hand():
    # 8 words, 2 sentences, syllables 1+1+1+1+1+1 + a-way 2 + quick-ly 2 = 10
    length, grade = text_measures("The cat sat. The dog ran away quickly.")
    assert length == pytest.approx(np.log(9))
    assert grade == pytest.approx(0.39 * 8 / 2 + 11.8 * 10 / 8 - 15.59)
    assert text_measures("") == (0.0, 0.0)


def test_config_errors():
    base = {"input": {"paths": ["x.jsonl"]}, "output": {"path": "out/x"}}
    with pytest.raises(ConfigError, match="signals"):
        parse_config({**base, "stages": [{"curriculum": {"signals": {"perplexity": 1}}}]})
    with pytest.raises(ConfigError, match="signals"):
        parse_config({**base, "stages": [{"curriculum": {"signals": {"length": 0}}}]})
    for weight in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="curriculum.signals.length: Input should be a finite number"):
            parse_config({**base, "stages": [{"curriculum": {"signals": {"length": weight, "readability": 1}}}]})


@pytest.mark.timeout(120)  # the backtracking sentence pattern took hours here
def test_sentences_are_counted_in_linear_time():
    """A run of marks ends one sentence when a space or the end follows it; a run of a million dots followed by a
    letter (7 s at 40,000 with the backtracking pattern) is none."""
    assert text_measures("Wait... what?! Yes. No") == text_measures("Wait. what. Yes. No")
    length, grade = text_measures("a" + "." * 1_000_000 + "b")
    assert grade == pytest.approx(0.39 * 2 / 1 + 11.8 * 2 / 2 - 15.59)


def test_difficulty_and_train_files_from_easy_to_hard(ray_local, tmp_path):
    records = questions(300) + [{"id": f"rare{i}", "question": text, "answer": ""} for i, text in enumerate(PLANTED)]
    manifest = curate(
        records,
        tmp_path / "all",
        [
            {"split": {"ratios": {"train": 0.8, "test": 0.2}, "seed": 1}},
            {"curriculum": {"signals": {"length": 1, "readability": 0.5, "rare_words": 2}}},
        ],
    )
    assert manifest["counts"]["input"] == len(records) == manifest["counts"]["output"]
    train = files_of(tmp_path / "all" / "data" / "train")
    test = pa.concat_tables(files_of(tmp_path / "all" / "data" / "test")).to_pandas()
    for table in train:  # the ordered split: each file easy to hard
        d = table["difficulty"].to_numpy()
        assert np.all(np.diff(d) >= 0)
    assert not np.all(np.diff(test["difficulty"].to_numpy()) >= 0)  # other splits keep key order
    assert list(test["id"]) == sorted(test["id"])

    # the signals and their weighted z-scores, recomputed here (words as the stage's hash buckets: about two
    # pairs of this corpus's words share a bucket)
    texts = texts_by_id(records)
    words = {i: word_buckets(t, 512) for i, t in texts.items()}
    df: dict[str, int] = {}
    for ws in words.values():
        for w in ws:
            df[w] = df.get(w, 0) + 1
    ids = list(texts)
    signals = np.array([[*text_measures(texts[i]), np.mean([df[w] < 2 for w in words[i]])] for i in ids])
    signals = np.rint(signals * 1e4) / 1e4  # the stage's quantization
    z = (signals - signals.mean(0)) / signals.std(0)
    expected = dict(zip(ids, (z @ np.array([1, 0.5, 2])) / 3.5))
    out = pd.concat([t.to_pandas() for t in train] + [test], ignore_index=True)
    assert len(out) == len(records)
    assert np.allclose(out["difficulty"], out["id"].map(expected), atol=1e-6)
    assert out.loc[out["id"].str.startswith("rare"), "difficulty"].min() > np.quantile(out["difficulty"], 0.9)
    assert manifest["metrics"]["curriculum"]["signals"]["rare_words"]["weight"] == 2


def test_ties_in_key_order_without_split(ray_local, tmp_path):
    """Word counts repeat: equal difficulties stay in key order (here: input line order)."""
    records = questions(120)
    curate(records, tmp_path / "len", [{"curriculum": {"signals": {"length": 1}}}])
    table = pa.concat_tables(files_of(tmp_path / "len" / "data")).to_pandas()
    line = {r["id"]: i for i, r in enumerate(records)}
    expected = sorted(table["id"], key=lambda i: (text_measures(texts_by_id(records)[i])[0], line[i]))
    assert list(table["id"]) == expected
    assert table["difficulty"].duplicated().any()


def texts_by_id(records: list[dict]) -> dict[str, str]:
    return {r["id"]: r["question"] for r in records}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    texts = [render_alpaca(r["question"], "", r["answer"])[0] for r in questions(40)]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-curriculum"), texts + [f"record {i}" for i in range(64)])


def test_dataset_order_curriculum(ray_local, tiny, tmp_path):
    """64 records in two files with a known difficulty each: the rows the dataset gives, decoded."""
    from transformers import AutoTokenizer

    rng = np.random.default_rng(5)
    difficulty = rng.permutation(64).astype(float)
    files = []
    for k in range(2):
        path = tmp_path / f"part-{k}.parquet"
        rows = range(32 * k, 32 * k + 32)
        pq.write_table(pa.table({"text": [f"record {i}" for i in rows], "difficulty": difficulty[list(rows)]}), path)
        files.append(str(path))
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    enc = Encoding("text", "text", 16, packing=False)

    def seen(order: RecordOrder) -> list[int]:
        ds = build_dataset(files, tokenizer, enc, Storage(), 8, order)
        out = []
        for row in ds.take_all():
            text = tokenizer.decode(
                np.asarray(row["input_ids"])[np.asarray(row["attention_mask"]) == 1], skip_special_tokens=True
            )
            out.append(int(text.split()[1]))
        return out

    curriculum = seen(RecordOrder("curriculum", "difficulty", 4, seed=0))
    ranks = difficulty[curriculum]
    for k in range(4):  # bucket k: the 16 records of ranks 16k..16k+15, shuffled
        bucket = ranks[16 * k : 16 * k + 16]
        assert sorted(bucket) == list(range(16 * k, 16 * k + 16)), ranks
    assert not np.all(np.diff(ranks) >= 0)
    # the order within a bucket is a seeded hash of the record: the same however the rows are cut into blocks
    table = pa.table({"text": [f"record {i}" for i in range(64)], "difficulty": difficulty})
    bounds = np.array([15.0, 31.0, 47.0])
    whole = _with_order_key(table, "difficulty", bounds, 0)[ORDER_KEY]
    pieces = [_with_order_key(table.slice(a, b - a), "difficulty", bounds, 0)[ORDER_KEY] for a, b in ((0, 5), (5, 64))]
    assert whole.to_pylist() == pa.chunked_array(pieces).to_pylist()
    assert whole.to_pylist() != _with_order_key(table, "difficulty", bounds, 1)[ORDER_KEY].to_pylist()
    with pytest.raises(ConfigError, match="data.difficulty_field"):
        build_dataset(files, tokenizer, enc, Storage(), 8, RecordOrder("curriculum", "level", 4))
