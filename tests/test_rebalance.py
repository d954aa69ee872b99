"""Rebalancing: class targets (uniform, ratios, counts) in each direction, computed by hand; exact class counts,
deterministic undersampling and oversampling on the labelled SNLI sample after a split (the other splits left
alone), its accounting with generated copies and the report's class balance; mixing weights by source with
copies made by an augmentation method, before a split that keeps copies with their source; the partitioned cuts
(radix selection) against the one-task ones."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa

from testkit.runs import assert_accounting, read_dir, write_jsonl
from tests.samples import jsonl
from thresher.curate.config import parse_config
from thresher.curate.execution.rows import RayRows
from thresher.curate.runner import run
from thresher.curate.stage import ID, KEY, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, StageContext
from thresher.curate.stages.rebalance import COPIES, Rebalance, RebalanceConfig, targets


def test_targets_by_hand():
    counts = {"a": 100, "b": 40, "c": 10}
    cfg = lambda **kw: RebalanceConfig(**kw)  # noqa: E731
    assert targets(counts, cfg(method="oversample")) == {"a": 100, "b": 100, "c": 100}
    assert targets(counts, cfg(method="undersample")) == {"a": 10, "b": 10, "c": 10}
    assert targets(counts, cfg(method="both")) == {"a": 50, "b": 50, "c": 50}
    ratios = {"ratios": {"a": 2, "b": 1, "c": 1}}  # a: 50 %, b and c: 25 % each
    assert targets(counts, cfg(target=ratios, method="oversample")) == {"a": 100, "b": 50, "c": 50}
    assert targets(counts, cfg(target=ratios, method="undersample")) == {"a": 20, "b": 10, "c": 10}
    assert targets(counts, cfg(target=ratios, method="both")) == {"a": 75, "b": 38, "c": 37}
    explicit = {"counts": {"a": 60, "c": 25, "z": 5}}  # z is no class of the data; b is left alone
    assert targets(counts, cfg(target=explicit, method="both")) == {"a": 60, "c": 25}
    assert targets(counts, cfg(target=explicit, method="oversample")) == {"a": 100, "c": 25}
    assert targets(counts, cfg(target=explicit, method="undersample")) == {"a": 60, "c": 10}


def snli(n: int) -> list[dict]:
    items = jsonl("examples/data/snli_dev_sample.jsonl")
    return [
        {"id": r["pairID"], "text": r["sentence2"], "premise": r["sentence1"], "label": r["gold_label"]}
        for r in items
        if r["gold_label"] != "-"
    ][:n]


def _run(tmp_path, docs, stages, **execution):
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = [write_jsonl(tmp_path / "snli.jsonl", docs)]
    if execution:  # the same records in two files, read in smaller batches
        paths = [write_jsonl(tmp_path / "snli-1.jsonl", docs[:101]), write_jsonl(tmp_path / "snli-2.jsonl", docs[101:])]
    cfg = {
        "input": {"paths": [str(p) for p in paths]},
        "output": {"path": str(tmp_path / "out")},
        "stages": stages,
        "execution": execution,
    }
    manifest, out = run(parse_config(cfg)), tmp_path / "out"
    assert_accounting(manifest, out)
    return manifest, out


def test_exact_counts_after_split_deterministic_and_other_splits_untouched(ray_local, tmp_path):
    docs = snli(300)
    stages = [
        {"split": {"ratios": {"train": 0.8, "test": 0.2}, "stratify": "label"}},
        {"rebalance": {"field": "label", "target": {"counts": {"entailment": 120, "neutral": 40}}, "method": "both"}},
    ]
    manifest, out = _run(tmp_path / "a", docs, stages)
    train, test = read_dir(out / "data/train").to_pandas(), read_dir(out / "data/test").to_pandas()
    metrics = manifest["metrics"]["rebalance"]
    before = metrics["before"]
    originals = train[train["augmented_from"].isna()]
    copies = train[train["augmented_from"].notna()]
    assert Counter(train["label"]) == {"entailment": 120, "neutral": 40, "contradiction": before["contradiction"]}
    assert metrics["after"] == dict(Counter(train["label"])) and metrics["targets"] == {
        "entailment": 120,
        "neutral": 40,
    }
    assert before["entailment"] < 120 < 2 * before["entailment"] and before["neutral"] > 40
    # oversampling: 120 - n copies of entailment originals, at most one each here (120 < 2 n)
    per_source = Counter(copies["augmented_from"])
    entailment = set(originals.loc[originals["label"] == "entailment", "id"])
    assert set(per_source) <= entailment and len(copies) == 120 - before["entailment"]
    assert set(per_source.values()) == {1}
    assert (
        copies["text"].to_numpy() == originals.set_index("id").loc[copies["augmented_from"], "text"].to_numpy()
    ).all()
    assert all(json.loads(a)["method"] == "duplicate" for a in copies["augmentation"])
    # undersampling: the rejected neutral records, with the reason, are exactly the surplus
    rejects = read_dir(out / "rejects").to_pandas()
    assert (rejects["reason"] == "undersampled").sum() == before["neutral"] - 40
    assert set(rejects["label"]) == {"neutral"} and set(rejects["stage"]) == {"rebalance"}
    # the test split is untouched
    assert test["augmented_from"].isna().all() if "augmented_from" in test.columns else True
    assert len(test) + len(originals) + len(rejects) == len(docs)
    counts = manifest["counts"]["by_stage"]["rebalance"]
    assert counts["generated"] == len(copies) and counts["rejected"] == len(rejects)
    report = json.loads((out / "report.json").read_text())["rebalance"]
    assert report["after"]["entailment"] == 120 and "Class balance" in (out / "report.html").read_text()
    # the same records kept, copied and rejected with another batching and file layout
    again, out2 = _run(tmp_path / "b", docs, stages, batch_size=37)
    assert again["digests"] == manifest["digests"]


def test_source_mixing_weights_with_augmented_copies_before_split(ray_local, tmp_path):
    docs = snli(160)
    for i, d in enumerate(docs):
        d["source"] = "captions" if i % 4 else "forum"  # 40 forum, 120 captions
    stages = [
        {
            "rebalance": {
                "field": "source",
                "target": {"ratios": {"captions": 0.6, "forum": 0.4}},
                "oversample_with": "typos",
                "splits": [],
            }
        },
        {"split": {"ratios": {"train": 0.75, "test": 0.25}}},
    ]
    manifest, out = _run(tmp_path, docs, stages)
    metrics = manifest["metrics"]["rebalance"]
    assert metrics["before"] == {"captions": 120, "forum": 40} and metrics["after"] == {"captions": 120, "forum": 80}
    tables = {d.name: read_dir(d).to_pandas() for d in (out / "data").iterdir()}
    every = pd.concat(tables.values(), ignore_index=True)
    assert Counter(every["source"]) == {"captions": 120, "forum": 80}
    copies = every[every["augmented_from"].notna()]
    assert len(copies) == 40 and Counter(copies["augmented_from"]) == Counter(
        dict.fromkeys(every.loc[every["augmented_from"].isna() & (every["source"] == "forum"), "id"], 1)
    )
    changed = copies["text"].to_numpy() != every.set_index("id").loc[copies["augmented_from"], "text"].to_numpy()
    methods = [json.loads(a)["method"] for a in copies["augmentation"]]
    assert changed.sum() >= 20 and list(changed) == [m == "typos" for m in methods]  # unchanged: a duplicate
    split_of = {i: name for name, t in tables.items() for i in t["id"]}
    assert all(split_of[c] == split_of[s] for c, s in zip(copies["id"], copies["augmented_from"]))


def test_partitioned_cuts_keep_the_same_records(ray_local):
    """``broadcast_limit_rows: 0`` (``execution.broadcast_limit_rows``) finds every cut by radix selection down to its
    last digit, never among a whole class in one task: on SNLI key rows in six blocks, the neutral ones under five
    ids only (equal hashes, ties by key), the same records are kept and copied as by default, to the exact counts."""
    import ray.data

    docs = snli(300)
    labels = [d["label"] for d in docs]
    ids = [f"n{i % 5}" if label == "neutral" else d["id"] for i, (d, label) in enumerate(zip(docs, labels))]
    n = len(docs)
    keys = pa.table(
        {
            KEY: (np.arange(n) % 50) + (np.arange(n) // 50 << 32),
            ID: ids,
            "label": labels,
            **{c: pa.nulls(n, pa.string()) for c in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)},
        }
    )
    config = RebalanceConfig(
        field="label", target={"counts": {"entailment": 150, "neutral": 70}}, method="both", splits=[]
    )

    def decided(limit: int) -> pd.DataFrame:
        stage = Rebalance(config, StageContext(broadcast_limit_rows=limit))
        blocks = [keys.slice(start, 50) for start in range(0, n, 50)]
        out = stage.decide(RayRows(ray.data.from_arrow(blocks))).to_table()
        return out.to_pandas().sort_values(KEY, ignore_index=True)

    default, partitioned = decided(2_000_000), decided(0)
    before = Counter(labels)
    assert 150 % before["entailment"] and before["neutral"] > 70  # a cut in each direction
    kept = partitioned[partitioned[REJECT_STAGE].isna()]
    assert kept[KEY].tolist() == default.loc[default[REJECT_STAGE].isna(), KEY].tolist()
    assert partitioned[COPIES].tolist() == default[COPIES].tolist()
    after = kept.groupby("label")[COPIES].agg(lambda c: len(c) + c.sum())
    assert after.to_dict() == {"entailment": 150, "neutral": 70, "contradiction": before["contradiction"]}
