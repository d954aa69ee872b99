"""Exact and MinHash-LSH dedup: the signature kernel against datasketch and true Jaccard, LSH parameters,
connected components against union-find, planted near duplicates end to end, and the duplicates report section.
Determinism across runs and CPU counts is in test_reliability.py; partitioned paths against broadcast ones (other
block boundaries and partition counts) in test_data_path.py."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.samples import revision_corpus, wiki_articles
from thresher.curate.config import parse_config
from thresher.curate.dedup.components import (
    both_directions,
    connected_components,
    edge_schema,
    large_star,
    larger_first,
    small_star,
)
from thresher.curate.dedup.lsh import optimal_bands
from thresher.curate.dedup.minhash import jaccard, jaccard_estimate, shingle_set, signatures
from thresher.curate.execution.rows import RayRows
from thresher.curate.runner import run
from thresher.curate.stage import StageContext
from thresher.curate.stages.dedup_exact import DedupExact, DedupExactConfig


def paragraphs(n: int, words: int = 150) -> list[str]:
    """Distinct passages of ``words`` words cut from the Wikipedia sample."""
    tokens = " ".join(wiki_articles()).split()
    chunks = [" ".join(tokens[i : i + words]) for i in range(0, len(tokens) - words, words)]
    return list(dict.fromkeys(chunks))[:n]


def mutate(text: str, rate: float, rng: random.Random) -> str:
    """``text`` with ``rate`` of its words replaced by other words of it, marked (so they are new words)."""
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, int(rate * len(words)))):
        words[i] = rng.choice(words) + "x"
    return " ".join(words)


def test_signatures_agree_with_datasketch_and_true_jaccard():
    """On real text pairs at several edit rates: |ours - true J| <= 3 sigma and |ours - datasketch| <= 3 sqrt(2)
    sigma (two independent estimates), sigma = sqrt(J (1 - J) / num_perm); over all pairs the errors are
    unbiased with unit variance."""
    from datasketch import MinHash

    rng = random.Random(0)
    num_perm = 256
    z = []
    for doc in paragraphs(60, words=200):
        other = mutate(doc, rng.choice([0.01, 0.03, 0.06, 0.1, 0.2]), rng)
        a, b = shingle_set(doc, 5), shingle_set(other, 5)
        true = jaccard(a, b)
        sig = signatures([doc, other], num_perm=num_perm, seed=1)
        ours = jaccard_estimate(sig[0], sig[1])
        m1, m2 = MinHash(num_perm=num_perm, seed=1), MinHash(num_perm=num_perm, seed=1)
        m1.update_batch(list(a))
        m2.update_batch(list(b))
        sigma = np.sqrt(true * (1 - true) / num_perm)
        assert abs(ours - true) <= 3 * sigma, (ours, true)
        assert abs(ours - m1.jaccard(m2)) <= 3 * np.sqrt(2) * sigma, (ours, m1.jaccard(m2), true)
        z.append((ours - true) / sigma)
    assert abs(np.mean(z)) < 3 / np.sqrt(len(z)) and 0.7 < np.std(z) < 1.3, (np.mean(z), np.std(z))
    assert signatures(paragraphs(3), seed=7).tolist() == signatures(paragraphs(3), seed=7).tolist()
    assert signatures(paragraphs(3), seed=7).tolist() != signatures(paragraphs(3), seed=8).tolist()
    assert (signatures(["", "   !!! ", None]) == 0xFFFFFFFF).all()


def test_an_indexs_low_byte_signatures_estimate_true_jaccard():
    """A reference index keeps one byte per minimum hash: on real text pairs at several edit rates, the corrected
    estimate from low bytes (one side or both) is within 3 sigma of the true Jaccard (sigma of b-bit minwise
    hashing, Li and König), unbiased over all pairs, and a pair with a full signature on both sides is compared
    in full."""
    from thresher.curate.stages.dedup_fuzzy import LOW_BYTE_COLLISION, jaccard_estimates, low_bytes

    rng = random.Random(1)
    num_perm, c = 128, LOW_BYTE_COLLISION
    pairs = [(doc, mutate(doc, rng.choice([0.01, 0.03, 0.06, 0.1, 0.2, 0.4]), rng)) for doc in paragraphs(80, 200)]
    true = np.array([jaccard(shingle_set(a, 5), shingle_set(b, 5)) for a, b in pairs])

    def binary(texts):
        sig = signatures(texts, num_perm=num_perm)
        return pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(4 * num_perm), len(sig), [None, pa.py_buffer(sig.tobytes())]
        )

    a, b = binary([p[0] for p in pairs]), binary([p[1] for p in pairs])
    full, low = jaccard_estimates(a, b, num_perm)
    assert not low.any() and np.allclose(
        full,
        [
            jaccard_estimate(x, y)
            for x, y in zip(
                signatures([p[0] for p in pairs], num_perm=num_perm),
                signatures([p[1] for p in pairs], num_perm=num_perm),
            )
        ],
    )
    assert low_bytes(a, num_perm).type == pa.binary(num_perm)
    agree = true + (1 - true) * c
    sigma = np.sqrt(agree * (1 - agree) / num_perm) / (1 - c)
    # a shuffle turns the values into variable-size binary: full and low-byte signatures side by side
    mixed = pa.concat_arrays([a.cast(pa.binary()), low_bytes(a, num_perm).cast(pa.binary())])
    for left, right in [
        (low_bytes(a, num_perm), b),
        (a, low_bytes(b, num_perm)),
        (low_bytes(a, num_perm), low_bytes(b, num_perm)),
        (mixed, pa.concat_arrays([b, b])),
    ]:
        estimate, low = jaccard_estimates(left, right, num_perm)
        estimate, low = estimate[-len(pairs) :], low[-len(pairs) :]
        assert low.all()
        z = (estimate - true) / sigma
        assert (np.abs(z) <= 3).all(), z
        assert abs(z.mean()) < 3 / np.sqrt(len(z)) and 0.6 < z.std() < 1.4, (z.mean(), z.std())
    assert np.array_equal(jaccard_estimates(mixed, pa.concat_arrays([b, b]), num_perm)[0][: len(pairs)], full)


@pytest.mark.parametrize("char_ngrams", [False, True])
def test_shingle_set_is_what_the_kernel_hashes(char_ngrams):
    """Texts hash to the same signature exactly when their reference shingle sets are equal."""
    texts = [
        "Hello, World! Ça va?",
        "hello world ça va",
        "HELLO...world;  ça va",
        "hello world Ça va",
        "  tabs\tand\nnewlines  here ",
        "tabs and newlines here",
        "café naïve 東京 2024",
        "cafe naive 東京 2024",
        "a",
        "A!",
        "b",
        "x y",
        "x  y",
        "über",
        "Über",
        "one two three four five six",
        "one two three four five",
    ]
    n = 3 if char_ngrams else 2
    sig = signatures(texts, num_perm=64, ngram=n, char_ngrams=char_ngrams)
    sets = [shingle_set(t, n, char_ngrams) for t in texts]
    for i in range(len(texts)):
        for j in range(len(texts)):
            assert (sets[i] == sets[j]) == bool((sig[i] == sig[j]).all()), (texts[i], texts[j], sets[i], sets[j])


def test_signatures_are_stable():
    """Signatures are persisted and compared across runs: the kernel must keep these values (digests of the
    signatures computed by its first, scalar version) bit for bit, in both modes and at odd permutation counts."""
    rng = random.Random(0)
    words = [
        "the",
        "The",
        "QUICK",
        "brown",
        "fox,",
        "café",
        "naïve",
        "東京",
        "über",
        "don't",
        "e-mail",
        "a",
        "1999",
        "😀",
    ]
    seps = [" ", "  ", "\n", "\t", ". ", "!", "--"]
    texts = ["".join(rng.choice(words) + rng.choice(seps) for _ in range(n)) for n in (0, 1, 2, 4, 5, 6, 50, 700)]
    texts += [None, "x" * 999, "  !!  Hello,\tWORLD  ", "Ça va? ça VA!"]
    expected = {
        (128, 5, False): "05da7b4ba87d5d90",
        (13, 3, False): "286096095f2e0f47",
        (64, 5, True): "2bbd334f38ce12be",
        (7, 1, True): "c2f56da85cc1258d",
    }
    for (num_perm, ngram, char_ngrams), digest in expected.items():
        sig = signatures(texts, num_perm, ngram, char_ngrams, seed=3)
        assert hashlib.sha256(sig.astype("<u4").tobytes()).hexdigest()[:16] == digest, (num_perm, ngram, char_ngrams)


def test_lsh_parameters_are_datasketchs_choice():
    from datasketch.lsh import _optimal_param

    for threshold, num_perm, weights in [(0.8, 128, (0.5, 0.5)), (0.8, 128, (0.2, 0.8)), (0.5, 64, (0.5, 0.5))]:
        assert optimal_bands(threshold, num_perm, *weights) == _optimal_param(threshold, num_perm, *weights)


def union_find_roots(edges: list[tuple[str, str]]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges:
        a, b = find(u), find(v)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {x: find(x) for x in parent if find(x) != x}


def random_graph(rng: random.Random, nodes: int, edges: int) -> list[tuple[str, str]]:
    names = [f"n{i:05d}" for i in range(nodes)]
    return [(rng.choice(names), rng.choice(names)) for _ in range(edges)]


def test_star_steps_converge_to_union_find_components():
    """The large-star / small-star steps on one partition, to their fixpoint, on random graphs."""
    rng = random.Random(0)
    for _ in range(40):
        graph = random_graph(rng, rng.randint(2, 200), rng.randint(1, 300))
        edges = pa.table({"u": [u for u, _ in graph], "v": [v for _, v in graph]})
        schema = edge_schema(pa.string())
        while True:
            stepped = large_star(both_directions(edges, schema), schema)
            if not stepped.num_rows or stepped["violations"][0].as_py() == 0:
                break
            edges = small_star(larger_first(stepped.drop_columns(["violations"]), schema), schema)
        roots = {r["u"]: r["v"] for r in stepped.to_pylist()}
        assert len(roots) == stepped.num_rows
        assert roots == union_find_roots([(u, v) for u, v in graph if u != v])


def test_distributed_components_match_union_find(ray_local, caplog):
    import ray.data

    rng = random.Random(1)
    graph = random_graph(rng, 1000, 500) + [(f"c{i:03d}", f"c{i + 1:03d}") for i in range(8)]  # and a chain
    rng.shuffle(graph)
    table = pa.table({"u": [u for u, _ in graph], "v": [v for _, v in graph]})
    edges = RayRows(ray.data.from_arrow([table.slice(lo, 400) for lo in range(0, table.num_rows, 400)]))
    with caplog.at_level("INFO", logger="thresher.curate.dedup.components"):
        roots = connected_components(edges, partitions=3, limit_rows=0).to_table().to_pylist()
        result = {r["node"]: r["root"] for r in roots}
    assert result == union_find_roots([(u, v) for u, v in graph if u != v])
    assert sum("connected components: round" in m for m in caplog.messages) >= 3  # several rounds were needed


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """200 distinct Wikipedia passages; 80 with a near-duplicate copy at a known edit rate, 10 with two copies
    (clusters of 3), 10 exact copies; ids shuffled so that sources and copies interleave."""
    rng = random.Random(0)
    tmp = tmp_path_factory.mktemp("planted")
    base = paragraphs(200)
    docs, pairs = {}, {}
    names = [f"r{i:04d}" for i in rng.sample(range(10000), 320)]
    for text in base:
        docs[names.pop()] = text
    sources = sorted(docs)
    for i, key in enumerate(sources[:90]):
        for _ in range(2 if i >= 80 else 1):
            copy = mutate(docs[key], [0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3][i % 7], rng)
            name = names.pop()
            docs[name] = copy
            pairs[name] = (key, jaccard(shingle_set(docs[key], 5), shingle_set(copy, 5)))
    for key in sources[90:100]:
        docs[names.pop()] = docs[key]
    src = tmp / "planted.jsonl"
    keys = list(docs)
    rng.shuffle(keys)
    src.write_text("".join(json.dumps({"id": k, "text": docs[k]}) + "\n" for k in keys))
    return src, docs, pairs, tmp


def dedup_config(src, out, block_bytes=32 << 10, partitions=None, **execution):
    fuzzy = {"threshold": 0.8, **({"partitions": partitions} if partitions else {})}
    return {
        "input": {"paths": [str(src)], "block_bytes": block_bytes},
        "output": {"path": str(out)},
        "stages": [{"dedup_exact": {}}, {"dedup_fuzzy": fuzzy}],
        **({"execution": execution} if execution else {}),
    }


@pytest.fixture(scope="module")
def planted_run(ray_local, planted):
    """The default exact + fuzzy dedup of the planted corpus: its manifest (output under ``tmp / "out"``)."""
    src, docs, pairs, tmp = planted
    return run(parse_config(dedup_config(src, tmp / "out")))


def test_planted_duplicates_end_to_end(planted, planted_run):
    src, docs, pairs, tmp = planted
    manifest = planted_run
    c = manifest["counts"]
    assert c["input"] == len(docs) == c["output"] + c["rejected"]
    stages = c["by_stage"]
    assert stages["dedup_exact"]["out"] == stages["dedup_fuzzy"]["in"]
    assert stages["dedup_fuzzy"]["out"] == c["output"]
    rejects = pq.read_table(tmp / "out" / "rejects").to_pylist()
    kept = {r["id"]: r for r in pq.read_table(tmp / "out" / "data").to_pylist()}
    removed = {r["id"]: r for r in rejects}
    assert {(r["stage"], r["reason"]) for r in rejects} == {
        ("dedup_exact", "exact_duplicate"),
        ("dedup_fuzzy", "near_duplicate"),
    }
    prefix = "duplicate of kept record "
    assert all(r["detail"].startswith(prefix) and r["detail"][len(prefix) :] in kept for r in rejects)  # a kept record
    assert all(k["dup_cluster"] for k in kept.values())
    # rejected duplicates, exact ones too, carry the cluster of the record kept for them
    assert all(r["detail"] == prefix + r["dup_cluster"] for r in rejects)
    exact = [r for r in rejects if r["stage"] == "dedup_exact"]
    assert len(exact) == 10 and all(
        docs[r["id"]] == docs[r["dup_cluster"]] and r["dup_cluster"] < r["id"] for r in exact
    )

    high = [(q, p) for q, (p, j) in pairs.items() if j >= 0.85]
    cluster = {
        **{i: r["dup_cluster"] for i, r in kept.items()},
        **{i: r["dup_cluster"] for i, r in removed.items() if r["stage"] == "dedup_fuzzy"},
    }
    found = sum(cluster[q] == cluster[p] for q, p in high)  # recall per planted pair: copy and source in one cluster
    assert found >= 0.95 * len(high), (found, len(high))
    far = sum(
        jaccard(shingle_set(docs[r], 5), shingle_set(docs[x["dup_cluster"]], 5)) < 0.65 for r, x in removed.items()
    )
    assert far <= 0.01 * len(removed), far

    report = json.loads((tmp / "out" / "report.json").read_text())["duplicates"]["stages"]
    assert report["dedup_exact"]["removed"] == 10
    assert report["dedup_fuzzy"]["removed"] == stages["dedup_fuzzy"]["rejected"]
    assert sum(report["dedup_fuzzy"]["cluster_sizes"].values()) == report["dedup_fuzzy"]["clusters_counted"]
    assert report["dedup_fuzzy"]["examples"][0]["removed"] and report["dedup_fuzzy"]["examples"][0]["kept_snippet"]


def clusters_of(out, stage: str = "dedup_fuzzy") -> dict[str, list[str]]:
    """Kept id -> the ids ``stage`` removed into its cluster, from a run's rejects."""
    clusters: dict[str, list[str]] = {}
    for r in pq.read_table(out / "rejects", columns=["id", "stage", "detail"]).to_pylist():
        if r["stage"] == stage:
            clusters.setdefault(r["detail"].removeprefix("duplicate of kept record "), []).append(r["id"])
    return clusters


def test_exact_verification_keep_longest_and_annotate(planted, planted_run):
    """verify: exact, keep: longest, action: annotate: nothing is removed, every record of a cluster has a sibling
    at true Jaccard >= threshold, each cluster is named after its longest record; the planted pairs are
    clustered as well as by the default (signature verification, removal), which removes no record far from
    its kept one."""
    src, docs, pairs, tmp = planted
    sets = {i: shingle_set(docs[i], 5) for i in docs}
    high = [(q, p) for q, (p, j) in pairs.items() if j >= 0.85]
    cfg = dedup_config(src, tmp / "exact-longest")
    cfg["stages"][1]["dedup_fuzzy"].update(verify=True, keep="longest", action="annotate")
    manifest = run(parse_config(cfg))
    assert manifest["counts"]["by_stage"]["dedup_fuzzy"]["rejected"] == 0
    clusters: dict[str, list[str]] = {}
    for r in pq.read_table(tmp / "exact-longest" / "data", columns=["id", "dup_cluster"]).to_pylist():
        clusters.setdefault(r["dup_cluster"], []).append(r["id"])
    multi = {k: v for k, v in clusters.items() if len(v) > 1}
    for head, members in multi.items():
        assert head in members and len(docs[head]) == max(len(docs[m]) for m in members)
        for r in members:
            assert any(jaccard(sets[r], sets[m]) >= 0.8 for m in members if m != r), r
    together = {m: k for k, members in multi.items() for m in members}
    assert sum(q in together and together[q] == together.get(p) for q, p in high) >= 0.95 * len(high)
    removed = {r: k for k, members in clusters_of(tmp / "out").items() for r in members}
    assert sum(removed.get(q, q) == removed.get(p, p) for q, p in high) >= 0.95 * len(high)  # pairs, one cluster each
    assert sum(jaccard(sets[r], sets[k]) < 0.65 for r, k in removed.items()) == 0


def test_exact_dedup_normalization_and_keep(ray_local, tmp_path):
    texts = {
        "a1": "Hello  World",
        "a2": "hello world",
        "a3": "HELLO WORLD!",
        "a4": "Hello, world 2",
        "a5": "hello world",
        "b1": "\ufb01ne \ufb01sh",
        "b2": "fine fish",
        "c1": "",
        "c2": "unique text here",
    }

    def normalized(**options) -> list[str]:
        stage = DedupExact(DedupExactConfig(**options), StageContext())
        return stage.normalized(pa.chunked_array([list(texts.values())])).to_pylist()

    assert normalized() == [
        "hello world",
        "hello world",
        "hello world!",
        "hello, world 2",
        "hello world",
        "\ufb01ne \ufb01sh",
        "fine fish",
        "",
        "unique text here",
    ]
    assert normalized(lowercase=False, collapse_whitespace=False)[:2] == ["Hello  World", "hello world"]
    assert normalized(strip_punctuation_digits=True, unicode_nfkc=True) == [
        "hello world",
        "hello world",
        "hello world",
        "hello world",
        "hello world",
        "fine fish",
        "fine fish",
        "",
        "unique text here",
    ]

    src = tmp_path / "exact.jsonl"
    src.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in texts.items()))

    def removed(options: dict, out: str) -> dict[str, str]:
        manifest = run(
            parse_config(
                {
                    "input": {"paths": [str(src)]},
                    "output": {"path": str(tmp_path / out)},
                    "stages": [{"dedup_exact": options}],
                }
            )
        )
        assert (
            manifest["counts"]["input"] == len(texts) == manifest["counts"]["output"] + manifest["counts"]["rejected"]
        )
        return {r: k for k, members in clusters_of(tmp_path / out, "dedup_exact").items() for r in members}

    assert removed({}, "default") == {"a2": "a1", "a5": "a1"}  # lowest id
    kept = pq.read_table(tmp_path / "default" / "data", columns=["id", "dup_cluster"]).to_pylist()
    assert all(r["dup_cluster"] == r["id"] for r in kept)  # each kept record names its own group
    assert removed({"strip_punctuation_digits": True, "unicode_nfkc": True, "keep": "longest"}, "longest") == {
        "a1": "a4",
        "a2": "a4",
        "a3": "a4",
        "a5": "a4",
        "b1": "b2",
    }  # the longest text of each group is kept


def test_revision_labels(ray_local, tmp_path):
    """dedup_fuzzy over 95 answers and their 5 sources, in the layout of the Clough & Stevenson corpus (Wikipedia
    passages; answers cut and pasted from them, revised lightly or heavily, or written independently: labels from
    the edits that made them): every answer put in its source's cluster is labelled light revision or cut-and-paste
    (precision 1), and the near-verbatim ones are found."""
    rows = revision_corpus()
    sources = {text: f"s{i}" for i, text in enumerate(dict.fromkeys(source for _, source, _ in rows))}
    src = tmp_path / "revisions.jsonl"
    records = [{"id": sid, "text": text} for text, sid in sources.items()]
    records += [{"id": f"t{i:02d}", "text": text} for i, (text, _, _) in enumerate(rows)]
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    run(
        parse_config(
            {
                "input": {"paths": [str(src)]},
                "output": {"path": str(tmp_path / "out")},
                "stages": [{"dedup_fuzzy": {"threshold": 0.8}}],
            }
        )
    )
    kept_for = {r: k for k, members in clusters_of(tmp_path / "out").items() for r in members}
    predicted = {i for i, (_, source, _) in enumerate(rows) if kept_for.get(f"t{i:02d}") == sources[source]}
    positive = {i for i, (_, _, label) in enumerate(rows) if label in ("2", "3")}
    assert predicted and predicted <= positive, (predicted, positive)
    near_verbatim = {
        i for i, (text, source, _) in enumerate(rows) if jaccard(shingle_set(text, 5), shingle_set(source, 5)) >= 0.85
    }
    assert near_verbatim and near_verbatim <= predicted
