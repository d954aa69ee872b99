"""The labels stage: agreement against published hand-computed values and the libraries, majority consensus on
SNLI against its gold labels with the undecided items in review, Dawid-Skene recovering planted annotator noise,
and the review queue export."""

from __future__ import annotations

import json
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import cohen_kappa_score

from tests.conftest import data_path
from tests.samples import sentences
from thresher.core.config import ConfigError
from thresher.core.storage import Storage
from thresher.curate.config import parse_config
from thresher.curate.labels import agreement
from thresher.curate.labels.agreement import Annotations
from thresher.curate.labels.export import export_review_queue
from thresher.curate.runner import run

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 coders x 12 units with missing values;
# the paper's hand-computed alphas: nominal 0.743, ordinal 0.815, interval 0.849.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 items, 14 raters, 5 categories; kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]
SNLI_CLASSES = ["contradiction", "entailment", "neutral"]


def long_form(matrix: list[list], classes: list) -> Annotations:
    """Annotations of a coders x units matrix (None: no annotation); the coder is the annotator."""
    item, label, rater = [], [], []
    for r, row in enumerate(matrix):
        for u, value in enumerate(row):
            if value is not None:
                item.append(u), label.append(classes.index(value)), rater.append(r)
    return Annotations(len(matrix[0]), np.array(item), np.array(label), np.array(rater))


def split_items(a: Annotations, at: int) -> list[Annotations]:
    """The same annotations as two blocks (items before ``at`` and from ``at`` on): counts must add up."""
    low = a.item < at
    return [
        Annotations(at, a.item[low], a.label[low], a.rater[low]),
        Annotations(a.n_items - at, a.item[~low] - at, a.label[~low], a.rater[~low]),
    ]


def merged_summary(a: Annotations, classes: list, raters: list | None, numeric: bool, at: int) -> dict:
    counts = None
    for block in split_items(a, at):
        counts = agreement.merge(
            counts, agreement.block_counts(block, len(classes), len(raters or [0]), raters is not None)
        )
    return agreement.summarize(counts, [str(c) for c in classes], raters, numeric)


def test_alpha_matches_krippendorff_2011_and_the_library():
    classes = [1, 2, 3, 4, 5]
    s = merged_summary(long_form(KRIPPENDORFF_2011, classes), classes, None, numeric=True, at=5)
    levels = s["krippendorff_alpha_by_level"]
    assert round(levels["nominal"], 3) == 0.743
    assert round(levels["ordinal"], 3) == 0.815
    assert round(levels["interval"], 3) == 0.849
    data = np.array([[np.nan if v is None else v for v in row] for row in KRIPPENDORFF_2011], float)
    for level, value in levels.items():
        assert value == pytest.approx(krippendorff.alpha(reliability_data=data, level_of_measurement=level), abs=1e-6)


def test_fleiss_kappa_matches_the_worked_example():
    item, label = [], []
    for i, row in enumerate(FLEISS_TABLE):
        for c, n in enumerate(row):
            item += [i] * n
            label += [c] * n
    a = Annotations(len(FLEISS_TABLE), np.array(item), np.array(label), np.zeros(len(item), np.int64))
    s = merged_summary(a, list(range(5)), None, numeric=False, at=4)
    assert round(s["fleiss_kappa"], 3) == 0.210
    assert s["percent_agreement"] == pytest.approx(0.378, abs=1e-3)  # P-bar of the worked example
    assert "cohen_kappa_pairs" not in s  # annotators not identified


def test_cohen_kappa_per_pair_matches_sklearn():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 300)
    matrix = [[int(t) if rng.random() < acc else int(rng.integers(0, 3)) for t in truth] for acc in (0.9, 0.7, 0.5)]
    for row in matrix:  # every annotator skips some items
        for u in rng.choice(300, 40, replace=False):
            row[u] = None
    s = merged_summary(long_form(matrix, [0, 1, 2]), [0, 1, 2], ["a", "b", "c"], numeric=True, at=123)
    pairs = {tuple(p["annotators"]): p for p in s["cohen_kappa_pairs"]}
    assert set(pairs) == {("a", "b"), ("a", "c"), ("b", "c")}
    for (x, y), p in pairs.items():
        i, j = "abc".index(x), "abc".index(y)
        both = [u for u in range(300) if matrix[i][u] is not None and matrix[j][u] is not None]
        assert p["items"] == len(both)
        assert p["cohen_kappa"] == pytest.approx(
            cohen_kappa_score([matrix[i][u] for u in both], [matrix[j][u] for u in both]), abs=1e-6
        )
    assert pairs[("a", "b")]["cohen_kappa"] > pairs[("b", "c")]["cohen_kappa"]


def test_config_errors():
    base = {"input": {"paths": ["x.jsonl"]}, "output": {"path": "out/x"}}
    with pytest.raises(ConfigError, match="annotations_field"):
        parse_config({**base, "stages": [{"labels": {}}]})
    with pytest.raises(ConfigError, match="annotations_field"):
        parse_config({**base, "stages": [{"labels": {"annotations_field": "a", "annotation_fields": ["b"]}}]})
    with pytest.raises(ConfigError, match="min_confidence"):
        parse_config({**base, "stages": [{"labels": {"annotations_field": "a", "min_confidence": 2}}]})


def read_dir(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files]) if files else pd.DataFrame()


def test_snli_majority_matches_gold_and_review_queue(ray_local, tmp_path):
    src = data_path("examples/data/snli_dev_sample.jsonl")
    records = [json.loads(line) for line in src.read_text().splitlines()]
    out = tmp_path / "snli"
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(src)], "text_field": "sentence2", "id_field": "pairID"},
                "output": {"path": str(out)},
                "stages": [
                    {"split": {"ratios": {"train": 0.9, "test": 0.1}}},
                    {
                        "labels": {
                            "annotations_field": "annotator_labels",
                            "consensus": "majority",
                            "min_confidence": 0.6,
                            "review_split": "review",
                        }
                    },
                ],
            }
        )
    )
    assert manifest["counts"]["input"] == len(records) == manifest["counts"]["output"]
    train, test, review = (read_dir(out / "data" / name) for name in ("train", "test", "review"))
    assert not list((out / "data").glob("*.parquet"))  # every record kept its split or went to review
    assert len(test) == pytest.approx(0.1 * len(records), abs=17)
    kept = pd.concat([train, test])
    gold = {r["pairID"]: r["gold_label"] for r in records}
    assert len(review) == sum(g == "-" for g in gold.values()) == 16
    assert set(review["id"]) == {i for i, g in gold.items() if g == "-"}
    assert (kept["label"] == kept["id"].map(gold)).all() and (kept["label_status"] == "consensus").all()
    assert kept["label_confidence"].dtype == float and kept["label_confidence"].min() >= 0.6
    assert set(review["label_status"]) == {"tie", "low_confidence"}

    report = json.loads((out / "report.json").read_text())["labels"]
    data = np.full((5, len(records)), np.nan)
    for u, r in enumerate(records):
        for i, label in enumerate(r["annotator_labels"]):
            data[i, u] = SNLI_CLASSES.index(label)
    assert report["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"), abs=1e-6
    )
    m = np.stack([np.bincount(np.array(r)[~np.isnan(r)].astype(int), minlength=3) for r in data.T])
    n = m.sum(1)
    p_bar = (((m**2).sum(1) - n) / (n * (n - 1))).mean()
    shares = m.sum(0) / m.sum()
    assert report["fleiss_kappa"] == pytest.approx((p_bar - (shares**2).sum()) / (1 - (shares**2).sum()), abs=1e-6)
    assert report["percent_agreement"] == pytest.approx(p_bar, abs=1e-6)
    assert report["consensus"]["review_queue"] == 16 and report["items"] == len(records)
    assert "Labels: agreement and consensus" in (out / "report.html").read_text()

    result = export_review_queue(str(out), Storage())
    assert result["items"] == 16
    queue = [json.loads(line) for line in (out / "review_queue" / "review_queue.jsonl").read_text().splitlines()]
    assert [q["rank"] for q in queue] == list(range(1, 17)) and {q["id"] for q in queue} == set(review["id"])
    assert [q["uncertainty"] for q in queue] == sorted((q["uncertainty"] for q in queue), reverse=True)
    tasks = json.loads((out / "review_queue" / "review_queue.label_studio.json").read_text())
    assert [t["data"]["id"] for t in tasks] == [q["id"] for q in queue]
    assert all(("predictions" in t) == (t["data"]["label"] is not None) for t in tasks)
    csv = pd.read_csv(out / "review_queue" / "review_queue.csv")
    assert list(csv["id"]) == [q["id"] for q in queue]


def test_dawid_skene_recovers_planted_annotator_accuracy(ray_local, tmp_path):
    """Five annotators of known accuracy (errors uniform over the other classes), 3 to 5 of them per item, one
    column each; one record carries a label outside ``classes`` and is rejected."""
    rng = np.random.default_rng(7)
    accuracy = {"ann_a": 0.95, "ann_b": 0.85, "ann_c": 0.7, "ann_d": 0.55, "ann_e": 0.4}
    classes = ["cat", "dog", "fox"]
    records, truth = [], {}
    for i in range(1500):
        t = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
        who = rng.choice(list(accuracy), rng.integers(3, 6), replace=False)
        rec = {"id": f"i{i:04d}", "text": f"item {i}"}
        for name in who:
            wrong = [c for c in range(3) if c != t]
            rec[str(name)] = classes[t] if rng.random() < accuracy[name] else classes[int(rng.choice(wrong))]
        records.append(rec)
        truth[rec["id"]] = classes[t]
    records.append({"id": "bad", "text": "x", "ann_a": "cow", "ann_b": "cat"})
    src = tmp_path / "ds.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))

    def curate(consensus: str) -> tuple[dict, pd.DataFrame]:
        out = tmp_path / consensus
        manifest = run(
            parse_config(
                {
                    "input": {"paths": [str(src)]},
                    "output": {"path": str(out)},
                    "stages": [
                        {
                            "labels": {
                                "annotation_fields": list(accuracy),
                                "classes": classes,
                                "consensus": consensus,
                                "min_confidence": 0.0,
                            }
                        }
                    ],
                }
            )
        )
        rejects = read_dir(out / "rejects")
        assert list(rejects["id"]) == ["bad"] and list(rejects["reason"]) == ["unknown_label"]
        assert list(rejects["detail"]) == ["cow"] and list(rejects["stage"]) == ["labels"]
        return manifest["metrics"]["labels"], pd.concat([read_dir(out / "data"), read_dir(out / "data" / "review")])

    ds_metrics, ds_out = curate("dawid_skene")
    estimated = {a["annotator"]: a["accuracy"] for a in ds_metrics["dawid_skene"]["annotators"]}
    for name, acc in accuracy.items():
        assert estimated[name] == pytest.approx(acc, abs=0.04), (name, estimated)
    assert ds_metrics["dawid_skene"]["converged"]
    assert ds_metrics["dawid_skene"]["prior"]["cat"] == pytest.approx(0.5, abs=0.04)
    assert len(ds_metrics["cohen_kappa_pairs"]) == 10

    majority_metrics, majority_out = curate("majority")
    ds_correct = (ds_out["label"] == ds_out["id"].map(truth)).mean()
    majority_correct = (majority_out["label"] == majority_out["id"].map(truth)).mean()
    assert ds_correct > majority_correct + 0.03, (ds_correct, majority_correct)
    rate = majority_metrics["consensus"]["annotator_match_rate"]
    assert rate["ann_a"] > rate["ann_c"] > rate["ann_e"]


def flipped_languages(n_per_language: int, flips: int, seed: int) -> tuple[list[dict], set[str]]:
    """Sentences labelled with their language, ``flips`` of them with another language's label."""
    rng = np.random.default_rng(seed)
    languages = ["de", "en", "fr", "es"]
    records = []
    for lang in languages:
        records += [
            {"id": f"{lang}{i:04d}", "text": line, "lang_label": lang}
            for i, line in enumerate(sentences(lang, n_per_language))
        ]
    flipped = set()
    for i in rng.choice(len(records), flips, replace=False):
        records[i]["lang_label"] = str(rng.choice([x for x in languages if x != records[i]["lang_label"]]))
        flipped.add(records[i]["id"])
    return records, flipped


@pytest.mark.parametrize("action", ["review", "drop"])
def test_label_noise_finds_planted_flips(ray_local, tmp_path, action):
    records, flipped = flipped_languages(150, 30, seed=11)
    src = tmp_path / "langs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / action
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(src)]},
                "output": {"path": str(out)},
                "stages": [{"label_noise": {"label_field": "lang_label", "action": action}}],
            }
        )
    )
    metrics = manifest["metrics"]["label_noise"]
    kept, review, rejects = read_dir(out / "data"), read_dir(out / "data" / "review"), read_dir(out / "rejects")
    found = set(review["id"]) if action == "review" else set(rejects["id"])
    assert metrics["issues"] == len(found) and metrics["judged"] == len(records)
    assert metrics["out_of_fold_accuracy"] > metrics["majority_class_accuracy"] + 0.5
    # hashed character n-grams and 120 training sentences per language: most flips, few false alarms (5% of
    # the records are flipped: flagging at random would be right 5% of the time)
    assert len(found & flipped) >= 0.7 * len(flipped), (len(found & flipped), len(found))
    assert len(found & flipped) >= 0.9 * len(found), (len(found & flipped), len(found))
    if action == "review":
        assert review["label_issue"].str.startswith("likely ").all() and kept["label_issue"].isna().all()
        assert (review["label_suggested"] != review["lang_label"]).all()
        assert len(kept) + len(review) == len(records) and rejects.empty
    else:
        assert set(rejects["reason"]) == {"label_noise"} and rejects["detail"].str.startswith("likely ").all()
        assert len(kept) + len(rejects) == len(records)
