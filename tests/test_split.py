"""The split stage on real data: exact ratios, stratification within one record, groups that never span splits
(dedup_fuzzy clusters, group_by fields), k folds, and the streaming hash mode's stability."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.samples import gsm8k as gsm8k_records
from thresher.core.config import ConfigError
from thresher.curate.config import parse_config
from thresher.curate.runner import run
from thresher.curate.stage import KEY
from thresher.curate.stages.split import HASH, PLACED, PLACED_BY, Split, largest_remainder, nearest_boundary


def gsm8k(n: int | None = None) -> list[dict]:
    """GSM8K train records (the first 1,500) with a real, imbalanced label: the number of lines of the worked
    answer."""
    return [{**r, "steps": str(r["answer"].count("\n"))} for r in gsm8k_records(n)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def curate(
    tmp_path: Path, records: list[dict], stages: list[dict], name: str = "out", **execution
) -> tuple[dict, dict[str, pd.DataFrame]]:
    src = write_jsonl(tmp_path / f"{name}.jsonl", records)
    out = tmp_path / name
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(src)], "text_field": "question", "id_field": "id"},
                "output": {"path": str(out)},
                "stages": stages,
                "execution": execution,
            }
        )
    )
    assert manifest["counts"]["input"] == manifest["counts"]["output"] + manifest["counts"]["rejected"]
    splits = {
        d.name: pd.concat([pq.read_table(f).to_pandas() for f in sorted(d.glob("*.parquet"))])
        for d in sorted((out / "data").iterdir())
        if d.is_dir()
    }
    return manifest, splits


def with_ids(records: list[dict]) -> list[dict]:
    return [{"id": f"r{i:05d}", **r} for i, r in enumerate(records)]


def split_of(splits: dict[str, pd.DataFrame]) -> dict[str, str]:
    out = {}
    for name, df in splits.items():
        for rid in df["id"]:
            assert rid not in out, f"{rid} in {out.get(rid)} and {name}"
            out[rid] = name
    return out


def test_helpers():
    assert largest_remainder(7473, [0.8, 0.1, 0.1]) == [5979, 747, 747]
    assert largest_remainder(10, [1 / 3] * 3) == [4, 3, 3]
    assert sum(largest_remainder(12345, [0.7, 0.2, 0.1])) == 12345
    assert nearest_boundary([3, 3, 3], 0, 4) == 1 and nearest_boundary([3, 3, 3], 0, 5) == 2
    assert nearest_boundary([3, 3, 3], 10, 10) == 0 and nearest_boundary([3, 3, 3], 10, 30) == 3


def test_exact_ratios_and_stratified_within_one_record(ray_local, tmp_path):
    records = with_ids(gsm8k())
    # plain: exact sizes, every record in exactly one split
    manifest, splits = curate(tmp_path, records, [{"split": {}}], "plain")
    assert {k: len(v) for k, v in splits.items()} == {"train": 1200, "validation": 150, "test": 150}
    assert manifest["counts"]["splits"] == {"train": 1200, "validation": 150, "test": 150}
    plain = split_of(splits)
    assert set(plain) == {r["id"] for r in records}

    # stratified by the answer's number of lines (8 classes of 3 to 415 records)
    ratios = {"train": 0.7, "validation": 0.2, "test": 0.1}
    manifest, splits = curate(
        tmp_path, records, [{"split": {"ratios": ratios, "stratify": "steps", "seed": 7}}], "strat"
    )
    per_class = pd.Series([r["steps"] for r in records]).value_counts()
    assert len(per_class) >= 7 and per_class.min() < 20 < 400 < per_class.max()
    for name, df in splits.items():
        got = df["steps"].value_counts()
        for label, n in per_class.items():
            assert abs(got.get(label, 0) - n * ratios[name]) < 1, (name, label, got.get(label, 0), n * ratios[name])
    assert split_of(splits).keys() == plain.keys()
    assert split_of(splits) != plain  # another seed, another assignment


def test_dup_clusters_never_span_splits(ray_local, tmp_path):
    """Planted near-duplicates found by dedup_fuzzy (annotate: all kept) land in one split with their original."""
    base = gsm8k(600)
    records = list(base)
    for r in base[:100]:
        records.append({**r, "question": r["question"] + " Show your work."})
        records.append({**r, "question": "Problem: " + r["question"]})
    manifest, splits = curate(tmp_path, with_ids(records), [{"dedup_fuzzy": {"action": "annotate"}}, {"split": {}}])
    rows = pd.concat([df.assign(split=name) for name, df in splits.items()])
    assert len(rows) == len(records)
    per_cluster = rows.groupby("dup_cluster")["split"].nunique()
    assert (per_cluster == 1).all(), per_cluster[per_cluster > 1]
    sizes = rows.groupby("dup_cluster").size()
    assert (sizes >= 2).sum() >= 95  # the planted triples were found (LSH may miss a variant or two)
    targets = largest_remainder(len(records), [0.8, 0.1, 0.1])
    for name, target in zip(("train", "validation", "test"), targets):
        assert abs(len(splits[name]) - target) <= sizes.max(), (name, len(splits[name]), target)


@pytest.mark.parametrize(
    "n, execution",
    [(1500, {}), pytest.param(400, {"broadcast_limit_rows": 0}, marks=pytest.mark.slow)],
    ids=["in-one-task", "distributed"],
)
def test_group_by_and_clusters_join_components(ray_local, tmp_path, n, execution):
    """Records sharing a topic or a dup_cluster stay together (connected components over both fields), also
    when a group carries several classes of the stratify field. ``distributed``: the components and the
    classes of groups go through a shuffle and Ray Data joins instead of one task, with the same result."""
    records = gsm8k(n)
    for i, r in enumerate(records):
        r["topic"] = f"t{(i // 10) % 20}" if i % 10 == 0 else None  # 20 topics of 10 records, 200 apart
        r["dup_cluster"] = f"c{i // 3}" if i < 600 else None  # clusters of three consecutive records
    records = with_ids(records)
    manifest, splits = curate(tmp_path, records, [{"split": {"group_by": "topic", "stratify": "steps"}}], **execution)
    where = split_of(splits)
    assert len(where) == len(records)
    parent = {r["id"]: r["id"] for r in records}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_by_value = {}
    for r in records:
        for field in ("topic", "dup_cluster"):
            if r[field] is not None:
                parent[find(r["id"])] = find(first_by_value.setdefault((field, r[field]), r["id"]))
    components = defaultdict(list)
    for r in records:
        components[find(r["id"])].append(where[r["id"]])
    assert all(len(set(s)) == 1 for s in components.values())
    assert max(map(len, components.values())) >= 6  # a topic merged with the clusters of its records
    if execution:
        _, in_one_task = curate(tmp_path, records, [{"split": {"group_by": "topic", "stratify": "steps"}}], "local")
        assert split_of(in_one_task) == where


def test_folds_and_streaming_hash_mode(ray_local, tmp_path):
    records = with_ids(gsm8k())
    manifest, splits = curate(tmp_path, records, [{"split": {"folds": 5, "stratify": "steps"}}], "folds")
    assert sorted(splits) == [f"fold_{i}" for i in range(5)]
    assert max(map(len, splits.values())) - min(map(len, splits.values())) <= len(set(r["steps"] for r in records))
    per_class = pd.Series([r["steps"] for r in records]).value_counts()
    for df in splits.values():
        got = df["steps"].value_counts()
        assert all(abs(got.get(label, 0) - n / 5) < 1 for label, n in per_class.items())

    # exact: false: fixed hash ranges; a record keeps its split when the corpus grows
    _, small = curate(tmp_path, records[:800], [{"split": {"exact": False}}], "hash_small")
    _, full = curate(tmp_path, records, [{"split": {"exact": False}}], "hash_full")
    before, after = split_of(small), split_of(full)
    assert all(after[rid] == s for rid, s in before.items())
    n = len(records)
    for name, ratio in {"train": 0.8, "validation": 0.1, "test": 0.1}.items():
        assert abs(len(full[name]) - n * ratio) < 4 * (n * ratio * (1 - ratio)) ** 0.5  # binomial, 4 sigma


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ratios": {"train": 0.8, "test": 0.1}}, "sum to 1"),
        ({"ratios": {"train": 0.5}, "folds": 2}, "not both"),
        ({"ratios": {"../x": 1.0}}, "folder name"),
        ({"stratify": "label", "exact": False}, "exact"),
        ({"folds": 1}, "folds"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse_config({"input": {"paths": ["x.jsonl"]}, "output": {"path": "o"}, "stages": [{"split": options}]})
    assert "stages.0.split" in str(e.value)


@pytest.mark.parametrize("arrow", [False, True])
def test_rows_of_no_references_group_are_placed_by_none(arrow):
    """Placing key rows by their groups' reference splits, from a broadcast (possibly empty) or from joined columns
    (null where no reference holds the group), with NumPy or Arrow-backed frames: the reference rows (negative
    keys) are dropped, the others say the reference's split and position, or "" and -1."""
    mapper = pd.ArrowDtype if arrow else None
    rows = pa.table({HASH: pa.array([5, 6, 7], pa.int64()), KEY: pa.array([0, 1, -1], pa.int64())})
    for places, placed in (({}, ["", ""]), ({6: ("test", 0), 7: ("train", 1)}, ["", "test"])):
        out = Split._to_place(rows.to_pandas(types_mapper=mapper), places)
        assert out[PLACED].tolist() == placed and out[PLACED_BY].tolist() == [-1 if p == "" else 0 for p in placed]
    joined = rows.append_column("place", pa.array([None, "test", "train"])).append_column(
        "place_by", pa.array([None, 0, 1], pa.int64())
    )
    out = Split._to_place(joined.to_pandas(types_mapper=mapper), None)
    assert out[PLACED].tolist() == ["", "test"] and out[PLACED_BY].tolist() == [-1, 0]
