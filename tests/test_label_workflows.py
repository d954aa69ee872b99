"""The labels stage on long-format input (one row per annotation, one record per item out) against the same
annotations in wide format, and the review queue exported during the run (``export_review``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.samples import sentences
from tests.test_labels import read_dir
from thresher.core.config import ConfigError
from thresher.curate.config import parse_config
from thresher.curate.runner import run

ANNOTATORS = ["ann_a", "ann_b", "ann_c", "ann_d"]
CLASSES = ["neg", "neu", "pos"]


def annotations(n_items: int, seed: int) -> list[dict]:
    """Rows ``item, annotator, label`` (2 to 4 annotators per item, mostly agreeing), items interleaved."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_items):
        truth = int(rng.integers(0, 3))
        for a in rng.choice(ANNOTATORS, int(rng.integers(2, 5)), replace=False):
            label = truth if rng.random() < 0.75 else int(rng.integers(0, 3))
            rows.append(
                {"item": f"item{i:03d}", "annotator": str(a), "label": CLASSES[label], "text": f"text of item {i}"}
            )
    order = rng.permutation(len(rows))
    return [{"id": f"row{n:04d}", **rows[k]} for n, k in enumerate(order)]


def test_config_errors():
    base = {"input": {"paths": ["x.jsonl"]}, "output": {"path": "out/x"}}
    with pytest.raises(ConfigError, match="item_field"):
        parse_config({**base, "stages": [{"labels": {"item_field": "item", "annotations_field": "a"}}]})
    with pytest.raises(ConfigError, match="annotator_field"):
        parse_config({**base, "stages": [{"labels": {"annotations_field": "a", "annotator_field": "who"}}]})


def test_long_format_one_record_per_item_and_review_export(ray_local, tmp_path):
    rows = annotations(120, seed=3)
    src = tmp_path / "long.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "long"
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(src)]},
                "output": {"path": str(out)},
                "stages": [
                    {
                        "labels": {
                            "item_field": "item",
                            "annotator_field": "annotator",
                            "label_field": "label",
                            "min_confidence": 0.6,
                            "export_review": True,
                        }
                    }
                ],
            }
        )
    )
    kept, review, rejects = read_dir(out / "data"), read_dir(out / "data" / "review"), read_dir(out / "rejects")
    items = pd.DataFrame(rows).groupby("item", sort=False)
    first = {item: g["id"].iloc[0] for item, g in items}  # rows are numbered in input order: the lowest key
    records = pd.concat([kept, review])
    assert sorted(records["id"]) == sorted(first.values()) and len(records) == 120
    assert manifest["counts"]["output"] + manifest["counts"]["rejected"] == len(rows)
    assert set(rejects["reason"]) == {"annotation_merged"} and len(rejects) == len(rows) - 120
    by_row = pd.DataFrame(rows).set_index("id")
    assert (rejects["detail"] == rejects["id"].map(lambda r: first[by_row.loc[r, "item"]])).all()
    assert records["annotator"].isna().all()
    for _, rec in records.iterrows():
        g = items.get_group(by_row.loc[rec["id"], "item"])
        assert json.loads(rec["label_annotations"]) == [[a, x] for a, x in zip(g["annotator"], g["label"])]
        votes = g["label"].value_counts()
        if rec["label_status"] == "consensus":
            assert rec["label"] == votes.index[0] and votes.iloc[0] / len(g) >= 0.6
        else:
            assert rec["label_status"] in ("tie", "low_confidence")
    assert len(review) == manifest["metrics"]["labels"]["consensus"]["review_queue"] > 0

    # the same annotations in wide format (one column per annotator): the same agreement
    wide = [{"id": first[item], "text": item, **dict(zip(g["annotator"], g["label"]))} for item, g in items]
    wide_src = tmp_path / "wide.jsonl"
    wide_src.write_text("".join(json.dumps(r) + "\n" for r in wide))
    wide_manifest = run(
        parse_config(
            {
                "input": {"paths": [str(wide_src)]},
                "output": {"path": str(tmp_path / "wide")},
                "stages": [{"labels": {"annotation_fields": ANNOTATORS, "min_confidence": 0.6}}],
            }
        )
    )
    long_m, wide_m = manifest["metrics"]["labels"], wide_manifest["metrics"]["labels"]
    for key in ("fleiss_kappa", "krippendorff_alpha", "percent_agreement", "items", "annotations"):
        assert long_m[key] == pytest.approx(wide_m[key]), key
    assert long_m["consensus"]["status"] == wide_m["consensus"]["status"]
    assert len(long_m["cohen_kappa_pairs"]) == 6

    # the review queue, written by the run itself: every review record, most uncertain first
    queue = [json.loads(line) for line in (out / "review_queue" / "review_queue.jsonl").read_text().splitlines()]
    assert sorted(q["id"] for q in queue) == sorted(review["id"])
    assert [q["uncertainty"] for q in queue] == sorted((q["uncertainty"] for q in queue), reverse=True)
    assert (out / "review_queue" / "review_queue.csv").exists()
    assert len(json.loads((out / "review_queue" / "review_queue.label_studio.json").read_text())) == len(queue)


def test_assist_proposes_calibrated_labels_for_unannotated_records(ray_local, tmp_path):
    """Sentences in four languages; 60% carry three agreeing annotations (their language), the rest none: the
    rest get proposals from the model trained on the annotated part, the unsure ones in review."""
    rng = np.random.default_rng(2)
    records, truth = [], {}
    for lang in ("de", "en", "fr", "es"):
        for i, line in enumerate(sentences(lang, 100)):
            rid = f"{lang}{i:03d}"
            truth[rid] = lang
            records.append({"id": rid, "text": line, "votes": [lang] * 3 if rng.random() < 0.6 else []})
    src = tmp_path / "langs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "assist"
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(src)]},
                "output": {"path": str(out)},
                "stages": [
                    {"labels": {"annotations_field": "votes", "assist": {"min_confidence": 0.8}, "export_review": True}}
                ],
            }
        )
    )
    kept, review = read_dir(out / "data"), read_dir(out / "data" / "review")
    assert len(kept) + len(review) == len(records)
    unannotated = {r["id"] for r in records if not r["votes"]}
    proposed = kept[kept["label_status"] == "proposed"]
    unsure = review[review["label_status"] == "proposal_low_confidence"]
    assert set(proposed["id"]) | set(unsure["id"]) == unannotated and len(review) == len(unsure)
    assert (kept.loc[kept["label_status"] == "consensus", "id"].map(lambda i: i not in unannotated)).all()
    assert proposed["label_confidence"].min() >= 0.8 and unsure["label_confidence"].max() < 0.8
    assert (proposed["label"] == proposed["id"].map(truth)).mean() >= 0.9
    every = pd.concat([proposed, unsure])
    accuracy = (every["label"] == every["id"].map(truth)).mean()
    assert every["label_confidence"].mean() == pytest.approx(accuracy, abs=0.1)  # calibrated: confidence ~ accuracy
    m = manifest["metrics"]["labels"]
    assert m["assist"]["proposed"] == len(proposed) and m["assist"]["proposal_low_confidence"] == len(unsure)
    assert m["consensus"]["review_queue"] == len(review) and m["consensus"]["status"]["no_annotations"] == 0
    queue = [json.loads(line) for line in (out / "review_queue" / "review_queue.jsonl").read_text().splitlines()]
    assert [q["id"] for q in queue] == list(unsure.sort_values(["label_confidence", "id"])["id"])
