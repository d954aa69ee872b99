"""``thresher tune`` over curation choices beside training keys: every combination of the space's ``curate.*``
choices is curated before the trials (the stage they share once), each trial trains on its combination's data and
is measured on the one validation set every chain is decontaminated against, and the best config names its data.
Curation keys in the wrong form, without a base curation config, or whose chain is not decontaminated against the
validation data exit 2 naming the key."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import data_path
from thresher.cli import main as cli
from thresher.train.data import render_alpaca


def search_config(tmp, model: bool = True) -> dict:
    """40 GSM8K records, 2 of them validation questions (leaked) and one repeated twice more; the base chain
    decontaminates against the validation set, removes exact duplicates and formats Alpaca records. ``model``: the
    tiny Llama built (the config checks fail before it is read)."""
    from testkit.tiny_llama import build_tiny_llama

    records = [json.loads(line) for line in data_path("examples/data/gsm8k_train.jsonl").read_text().splitlines()[:46]]
    validation, corpus = records[40:], records[:40]
    corpus[5], corpus[6] = validation[0], validation[1]
    corpus += [corpus[10], corpus[10]]
    (tmp / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (tmp / "validation").mkdir()
    alpaca = [{"instruction": r["question"], "input": "", "output": r["answer"]} for r in validation]
    pq.write_table(pa.Table.from_pylist(alpaca), tmp / "validation/part-0.parquet")
    texts = [render_alpaca(r["question"], "", r["answer"])[0] for r in records]
    tiny = build_tiny_llama(tmp / "tiny", texts) if model else tmp / "no-model"
    return {
        "curate": {
            "input": {"paths": [str(tmp / "gsm8k.jsonl")], "text_field": "question"},
            "output": {"path": "unused"},
            "stages": [
                {"decontaminate": {"references": [str(tmp / "validation")], "reference_fields": ["instruction"]}},
                {"dedup_exact": {}},
                {"format": {"template": "alpaca", "mapping": {"instruction": "question", "output": "answer"}}},
            ],
        },
        "train": {
            "model": {"name_or_path": str(tiny)},
            "data": {"train": "curated per trial", "validation": str(tmp / "validation"), "format": "alpaca"},
            "method": "lora",
            "scaling": {"num_workers": 1},
            "optim": {"max_steps": 2, "batch_size": 4},
            "eval": {"every_steps": 2},
        },
        "space": {"curate.drop.dedup_exact": {"choice": [False, True]}, "optim.lr": {"choice": [1e-3, 1e-2]}},
        "num_samples": 1,  # both combinations are curated before any trial; one trial trains on its own
        "output": {"path": str(tmp / "out")},
    }


@pytest.mark.slow  # a search of one trial after two curations
def test_a_search_over_curation_choices_trains_each_trial_on_its_curated_data(ray_local, tmp_path, monkeypatch):
    config = search_config(tmp_path)
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tmp_path / "logs"))
    assert cli(["tune", str(tmp_path / "tune.yaml")]) == 0
    result = json.loads((tmp_path / "out/tune.json").read_text())
    kept = {row["params"]["curate.drop.dedup_exact"]: row for row in result["curation"]}
    # 42 records: 2 leaked validation questions removed by both, the 2 repeats by dedup_exact only
    assert (kept[False]["records"], kept[True]["records"]) == (38, 40)
    assert kept[False]["runs"][0]["key"] == kept[True]["runs"][0]["key"]  # decontaminate curated once for both
    assert len(list((tmp_path / "out/curation").iterdir())) == 3
    for row in kept.values():
        assert sum(pq.read_metadata(f).num_rows for f in (tmp_path / row["train"]).glob("*.parquet")) == row["records"]
    best = result["best"]
    best_config = yaml.safe_load((tmp_path / "out/best_config.yaml").read_text())
    assert best_config["data"]["train"] == kept[best["params"]["curate.drop.dedup_exact"]]["train"]
    assert not any(k.startswith("curate") for k in best_config)  # a plain training config
    assert all(t["state"] == "completed" for t in result["trials"])


@pytest.mark.parametrize(
    "change, error",
    [
        ({"curate": None}, "space.curate.drop.dedup_exact: needs a base curation config"),
        (
            {"space": {"curate.drop.dedup_exact": {"uniform": [0, 1]}}},
            "space.curate.drop.dedup_exact: a curation key takes a choice",
        ),
        ({"space": {"curate.keep.format": {"choice": [True]}}}, "space.curate.keep.format: curation keys are"),
        (
            {"space": {"curate.drop.langid": {"choice": [True]}}},
            "space.curate.drop.langid: value True: curate.drop: no stage langid",
        ),
        (
            {"space": {"curate.drop.decontaminate": {"choice": [False, True]}}},
            "does not decontaminate against train.data.validation",
        ),
    ],
)
def test_curation_keys_exit_2_naming_the_key(tmp_path, capsys, change, error):
    config = {**search_config(tmp_path, model=False), **change}
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump(config))
    assert cli(["tune", str(tmp_path / "tune.yaml")]) == 2
    assert error in capsys.readouterr().err
