"""Curation ablations in ``thresher compare``: variants that drop a stage or change a threshold of one base curation
config are curated in runs cut where their chains part, so a prefix shared by several variants is curated once and a
variant that changes one threshold re-runs only that stage and the ones after it; its kept records and per-stage
removals equal those of one ``thresher curate`` of its whole chain, run apart. Config errors exit 2 naming the key."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import data_path
from thresher.cli import main as cli
from thresher.core.storage import Storage
from thresher.curate.config import parse_config
from thresher.evaluate.curation import CurationChange, chain, curate, plan_runs

STAGES = [
    {"normalize": {}},
    {"pii": {"mode": "redact"}},
    {"langid": {"keep": ["en", "de", "fr", "es"]}},  # its columns come back as text in the runs that read its output
    {"quality": {"presets": ["gopher"]}},
    {"dedup_exact": {}},
]
STRICT = CurationChange(set={"quality": {"gopher": {"min_words": 120}}})


def base_config(tmp) -> dict:
    corpus = tmp / "corpus"
    corpus.mkdir(exist_ok=True)
    for f in ("web-00.jsonl", "web-01.jsonl"):
        shutil.copy(data_path(f"examples/corpus/{f}"), corpus / f)
    config = {"input": {"paths": [str(corpus)], "id_field": "id"}, "output": {"path": str(tmp / "unused")}}
    return parse_config({**config, "stages": STAGES}).dump()


def kept_ids(folder) -> set[str]:
    return set(pq.read_table(f"{folder}/data", columns=["id"]).column("id").to_pylist())


def test_chains_part_where_the_variants_differ_and_share_the_runs_before(tmp_path):
    """Base, a stricter quality threshold and no dedup_exact: normalize + pii + langid is one run for all three; the base and
    no-dedup share their quality run too; the strict variant's quality and dedup_exact run after the shared one."""
    base = base_config(tmp_path)
    chains = {
        "base": chain(base, CurationChange(), "variants.0.curate"),
        "strict": chain(base, STRICT, "variants.1.curate"),
        "no-dedup": chain(base, CurationChange(drop=["dedup_exact"]), "variants.2.curate"),
    }
    runs = plan_runs(base, chains, str(tmp_path / "out"))
    stages = {name: [[n for n, _ in r.stages] for r in rs] for name, rs in runs.items()}
    assert stages == {
        "base": [["normalize", "pii", "langid"], ["quality"], ["dedup_exact"]],
        "strict": [["normalize", "pii", "langid"], ["quality", "dedup_exact"]],
        "no-dedup": [["normalize", "pii", "langid"], ["quality"]],
    }
    assert len({runs[n][0].key for n in runs}) == 1  # one prefix run for all
    assert runs["base"][1].key == runs["no-dedup"][1].key != runs["strict"][1].key
    assert chains["strict"][3][1]["quality"]["gopher"]["min_words"] == 120
    assert chains["strict"][3][1]["quality"]["gopher"]["max_words"] == 100_000  # merged key by key
    for rs in runs.values():  # each run reads the one before it
        assert rs[0].source is None and all(b.source == a.folder for a, b in zip(rs, rs[1:]))


def test_a_changed_threshold_reruns_only_the_stages_after_it(ray_local, tmp_path):
    base = base_config(tmp_path)
    chains = {"base": chain(base, CurationChange(), "v0"), "strict": chain(base, STRICT, "v1")}
    runs = plan_runs(base, chains, str(tmp_path / "out"))
    storage = Storage.from_options(None)
    manifests = curate(runs["base"] + runs["strict"], base, storage, None)
    assert len(manifests) == 3  # normalize + pii + langid once, then quality + dedup_exact for each variant
    prefix, base_rest, strict_rest = (manifests[r.key] for r in (runs["base"][0], *runs["base"][1:], runs["strict"][1]))
    assert {"normalize", "pii", "langid"} <= set(prefix["counts"]["by_stage"]) and "quality" not in prefix["counts"][
        "by_stage"
    ]
    for rest in (base_rest, strict_rest):
        assert "normalize" not in rest["counts"]["by_stage"] and "quality" in rest["counts"]["by_stage"]
        assert rest["counts"]["input"] == prefix["counts"]["output"]

    # the strict variant's whole chain in one run, apart: the same records kept, the same removals per stage
    whole = tmp_path / "whole"
    from thresher.curate.runner import run

    alone = run(parse_config({**base, "output": {"path": str(whole)}, "stages": [s for _, s in chains["strict"]]}))
    assert kept_ids(runs["strict"][-1].folder) == kept_ids(whole)
    for stage in ("normalize", "pii", "langid", "quality", "dedup_exact"):
        part = prefix if stage in prefix["counts"]["by_stage"] else strict_rest
        assert part["counts"]["by_stage"][stage]["rejected"] == alone["counts"]["by_stage"][stage]["rejected"]
    assert (
        strict_rest["counts"]["by_stage"]["quality"]["rejected"]
        > base_rest["counts"]["by_stage"]["quality"]["rejected"]
    )

    again = curate(runs["strict"], base, storage, None)  # complete runs are reused, not curated again
    assert all(m["reused"] for m in again.values())


@pytest.mark.parametrize(
    "change, error",
    [
        ({"curate": None, "variants": [{"name": "a", "curate": {"drop": ["pii"]}}]}, "variants.0.curate: needs a base"),
        (
            {"variants": [{"name": "a", "curate": {"drop": ["dedup_fuzzy"]}}]},
            "variants.0.curate.drop: no stage dedup_fuzzy",
        ),
        (
            {"variants": [{"name": "a", "curate": {"set": {"quality": {"gopher": {"min_words": -1}}}}}]},
            "variants.0.curate.set",
        ),
        ({"variants": [{"name": "a"}]}, "variants.0.curate: its curation does not decontaminate against the eval data"),
    ],
)
def test_curation_config_errors_exit_2_naming_the_key(tmp_path, capsys, change, error):
    eval_data = tmp_path / "test.jsonl"
    eval_data.write_text('{"question": "q", "answer": "a"}\n')
    base = base_config(tmp_path)
    curate_cfg = {**base, "stages": [*base["stages"], {"decontaminate": {"references": [str(eval_data)]}}]}
    if "decontaminate against" in error:
        curate_cfg = base
    config = {
        "curate": curate_cfg,
        "train": {"model": {"name_or_path": "unused"}, "data": {"train": "unused"}},
        "eval": {"model": {"name_or_path": "unused"}, "data": {"path": str(eval_data)}},
        "variants": [{"name": "a"}],
        "output": {"path": str(tmp_path / "out")},
        **change,
    }
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(config))
    assert cli(["compare", str(tmp_path / "compare.yaml")]) == 2
    assert error in capsys.readouterr().err


@pytest.mark.slow  # two curated variants trained and evaluated
def test_compare_curates_trains_and_evaluates_each_variant_on_one_held_out_set(ray_local, tmp_path, monkeypatch):
    """40 GSM8K records, 2 of them the eval set's questions and one repeated twice more, curated by the base chain
    (decontaminate against the eval set, dedup_exact, split, format) and without dedup_exact: the decontaminate run
    is shared, both variants lose the 2 leaked records, only the base loses the 2 repeats; each variant trains on its
    own splits and is evaluated on the one eval file."""
    import json

    from testkit.tiny_llama import build_tiny_llama
    from thresher.train.data import render_alpaca

    lines = data_path("examples/data/gsm8k_train.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines[:45]]
    held_out, corpus = records[40:], records[:40]
    corpus[5], corpus[6] = held_out[0], held_out[1]  # leaked into the training corpus
    corpus += [corpus[10], corpus[10]]  # repeated
    (tmp_path / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(
        "".join(json.dumps({"instruction": r["question"], "input": "", "output": r["answer"]}) + "\n" for r in held_out)
    )
    tiny = build_tiny_llama(tmp_path / "tiny", [render_alpaca(r["question"], "", r["answer"])[0] for r in records])
    config = {
        "curate": {
            "input": {"paths": [str(tmp_path / "gsm8k.jsonl")], "text_field": "question"},
            "output": {"path": "unused"},
            "stages": [
                {"decontaminate": {"references": [str(eval_file)], "reference_fields": ["instruction"]}},
                {"dedup_exact": {}},
                {"split": {"ratios": {"train": 0.8, "validation": 0.2}, "seed": 0}},
                {"format": {"template": "alpaca", "mapping": {"instruction": "question", "output": "answer"}}},
            ],
        },
        "train": {
            "model": {"name_or_path": str(tiny)},
            "data": {"train": "set by compare", "format": "alpaca", "max_seq_len": 256},
            "method": "lora",
            "scaling": {"num_workers": 1},
            "optim": {"lr": 1e-2, "max_steps": 2, "batch_size": 4, "log_every_steps": 1},
        },
        "eval": {
            "data": {"path": str(eval_file), "format": "alpaca", "max_rows": 3},
            "generation": {"max_new_tokens": 4, "batch_size": 3},
            "answer": {"extract": "last_number"},
            "bootstrap": {"samples": 50},
        },
        "variants": [{"name": "base"}, {"name": "no-dedup", "curate": {"drop": ["dedup_exact"]}}],
        "output": {"path": str(tmp_path / "out")},
    }
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("THRESHER_LOG_DIR", str(tmp_path / "logs"))
    assert cli(["compare", str(tmp_path / "compare.yaml")]) == 0
    result = json.loads((tmp_path / "out/compare.json").read_text())
    base, no_dedup = (v["curation"] for v in result["variants"])
    assert base["removed_by_stage"]["decontaminate"] == no_dedup["removed_by_stage"]["decontaminate"] == 2
    assert base["removed_by_stage"]["dedup_exact"] == 2 and "dedup_exact" not in no_dedup["removed_by_stage"]
    assert (base["input"], base["records"], no_dedup["records"]) == (42, 38, 40)
    assert base["runs"][0]["key"] == no_dedup["runs"][0]["key"]  # one decontaminate run for both
    assert len(list((tmp_path / "out/curation").iterdir())) == 3
    assert "own validation split" in (tmp_path / "out/compare.html").read_text()
    for v, c in zip(result["variants"], (base, no_dedup)):
        assert v["train"]["data"] == f"{c['runs'][-1]['folder']}/data/train"
        assert v["train"]["steps"] == 2 and v["eval"]["rows"] == 3
        trained = sum(pq.read_metadata(f).num_rows for f in (tmp_path / v["train"]["data"]).glob("*.parquet"))
        assert trained == c["splits"]["train"]


def test_the_ablation_example_plans_its_shared_runs(monkeypatch):
    """examples/compare_ablation_smollm2.yaml: normalize, langid and pii curated once for the three variants, quality once for
    the two that keep it."""
    from tests.conftest import ROOT
    from thresher.core.config import load_yaml, validate
    from thresher.evaluate.compare import CompareConfig, plan

    monkeypatch.chdir(ROOT)
    plans = {
        p.variant.name: p for p in plan(validate(CompareConfig, load_yaml("examples/compare_ablation_smollm2.yaml")))
    }
    stages = {name: [[n for n, _ in r.stages] for r in p.curation] for name, p in plans.items()}
    assert stages["full"][:2] == stages["no-dedup"][:2] == [["normalize", "langid", "pii"], ["quality"]]
    assert stages["no-quality"][0] == ["normalize", "langid", "pii"] and "quality" not in stages["no-quality"][1]
    assert len({r.key for p in plans.values() for r in p.curation}) == 5
    assert plans["no-dedup"].train.data.train.endswith("/data/train")
