"""Coverage gaps of ``thresher eval`` (``candidates.coverage``): clusters of test prompts the training data hardly
holds, on planted vectors with hand-computed shares and on real sentence embeddings of planted topics."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from thresher.evaluate.candidates import candidates
from thresher.evaluate.coverage import COVERAGE_GAP, RATIO, contents, gaps, kmeans


def blob(centre: np.ndarray, n: int, rng) -> np.ndarray:
    points = centre + 0.05 * rng.standard_normal((n, len(centre)))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def test_a_topic_absent_from_the_training_data_is_the_one_gap():
    """Test prompts 12/10/8 around three orthogonal directions, training prompts 30/10/0 around the first two:
    shares 12/30 vs 30/40, 10/30 vs 10/40, 8/30 vs 0; ratios 1.875, 0.75, 0: only the third is under 0.5."""
    rng = np.random.default_rng(1)
    axes = np.eye(16)[:3]
    test = np.vstack([blob(axes[0], 12, rng), blob(axes[1], 10, rng), blob(axes[2], 8, rng)])
    train = np.vstack([blob(axes[0], 30, rng), blob(axes[1], 10, rng)])
    labels, clusters = gaps(test, train, clusters=3, max_ratio=0.5, seed=0)
    by_size = {c["test"]: c for c in clusters}
    assert sorted(by_size) == [8, 10, 12]
    expected = {12: (30, 30 / 40 / (12 / 30)), 10: (10, 10 / 40 / (10 / 30)), 8: (0, 0.0)}
    for size, (train_count, ratio) in expected.items():
        assert by_size[size]["train"] == train_count and by_size[size]["ratio"] == pytest.approx(ratio)
        assert by_size[size]["gap"] == (size == 8)
    # the rows of a cluster are the rows of a blob
    assert len(set(labels[:12])) == len(set(labels[12:22])) == len(set(labels[22:])) == 1


def test_kmeans_finds_no_more_clusters_than_distinct_vectors():
    vectors = np.repeat(np.eye(4)[:2], 5, axis=0)
    centres, labels = kmeans(vectors, 6, seed=0)
    assert len(centres) == 2 and set(labels[:5]) != set(labels[5:])


def test_coverage_gaps_become_candidates_with_their_reason():
    rows = pa.table(
        {
            "id": ["a", "b", "c"],
            "confidence": [-0.1, -0.2, -0.3],
            "reference_nll": [1.0, 1.0, 1.0],
            "reference_tokens": [1, 1, 1],
            RATIO: [1.2, 0.1, 0.4],
        }
    )
    chosen = candidates(rows, 0.0, None, max_coverage_ratio=0.5).to_pylist()
    assert [(c["id"], c["reason"]) for c in chosen] == [("c", COVERAGE_GAP), ("b", COVERAGE_GAP)]


def test_prompt_contents_leave_the_template_out():
    alpaca = pa.table({"instruction": ["Add 2 and 3.", "Say hi."], "input": ["now", None]})
    assert contents(alpaca, "alpaca", "text") == ["Add 2 and 3.\nnow", "Say hi."]
    chat = pa.table(
        {
            "messages": [
                [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "bye"},
                ]
            ]
        }
    )
    assert contents(chat, "chat", "text") == ["hi\nbye"]


TOPICS = {
    "arithmetic": [
        "What is 17 plus 25?",
        "Compute 8 times 9.",
        "A farmer has 12 cows and buys 7 more. How many cows does he have?",
        "Subtract 45 from 100.",
        "If a pencil costs 3 dollars, how much do 6 pencils cost?",
        "What is half of 84?",
        "Tom had 20 apples and gave away 8. How many are left?",
        "Multiply 14 by 3.",
    ],
    "cooking": [
        "How long should I boil an egg for a soft yolk?",
        "What spices go well in a tomato soup?",
        "How do I keep pasta from sticking together?",
        "What is the best way to caramelize onions?",
        "How can I make bread rise faster?",
        "Should I salt the water before cooking rice?",
        "How do I make a simple vinaigrette dressing?",
        "What temperature should I roast a chicken at?",
    ],
    "astronomy": [
        "Why does Mars look red in the night sky?",
        "How far is the Moon from the Earth?",
        "What is a black hole made of?",
        "Which planet has the most moons?",
        "How do astronomers measure the distance to a star?",
        "Why do comets have tails?",
        "What causes a solar eclipse?",
        "How old is the Milky Way galaxy?",
    ],
}


def test_a_planted_topic_the_training_prompts_lack_is_flagged_on_real_embeddings():
    """all-MiniLM-L6-v2 vectors: test prompts of three topics, training prompts of two (each test prompt but the
    astronomy ones, and reworded copies): the astronomy prompts, and only they, are in gap clusters."""
    from thresher.models.encoders import SentenceEncoder
    from thresher.models.resolve import resolve_model

    encoder = SentenceEncoder(resolve_model("pkg:all_minilm_l6_v2"), "cpu")
    test_text = [t for topic in TOPICS.values() for t in topic]
    train_text = [f"{t} Explain." for t in TOPICS["arithmetic"] + TOPICS["cooking"]] + TOPICS["arithmetic"]
    labels, clusters = gaps(encoder.encode(test_text), encoder.encode(train_text), 4, 0.5, seed=0)
    gap = {c["cluster"] for c in clusters if c["gap"]}
    flagged = {t for t, j in zip(test_text, labels) if j in gap}
    assert flagged == set(TOPICS["astronomy"])
