"""A dedup benchmark corpus with planted near duplicates of known true Jaccard similarity.

Base documents are distinct mixes of real sentences (Wikipedia, C4 and Common Crawl text from the shared
data): each takes 6-24 sentences drawn at random, so two base documents share a few word 5-grams at most.
A fraction of them get planted copies: exact copies, and copies edited at a word edit rate (substitutions,
insertions, deletions with words of the same text), some with several copies (clusters of 3-4). The true
Jaccard similarity of every planted copy to its source is computed on the exact word 5-gram sets the MinHash
kernel hashes (``thresher.curate.dedup.minhash.shingle_set``) and written to ``truth.jsonl``.

    python bench/dedup_corpus.py --mb 200 --out /tmp/dedup200
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import orjson
from corpus import JsonlShards, source_documents

from thresher.curate.dedup.minhash import jaccard, shingle_set

EDIT_RATES = (0.0, 0.003, 0.006, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2)
COPY_RATE = 0.12  # base documents with one planted copy
CLUSTER_RATE = 0.03  # base documents with 2-3 planted copies
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentence_pool() -> list[str]:
    sentences = []
    for doc in source_documents():
        sentences += [s.strip() for s in _SENTENCE_END.split(doc) if 40 <= len(s.strip()) <= 600]
    return sorted(set(sentences))


def edit(text: str, rate: float, rng: random.Random) -> str:
    """``text`` with about ``rate`` of its words substituted, deleted or preceded by an inserted word."""
    words = text.split()
    if rate == 0:
        return text
    out = []
    for w in words:
        if rng.random() >= rate:
            out.append(w)
            continue
        op = rng.randrange(3)
        if op == 0:
            out.append(rng.choice(words))
        elif op == 2:
            out += [rng.choice(words), w]
    return " ".join(out)


def generate(mb: float, out: Path, seed: int = 0, shard_mb: float = 32) -> dict:
    """Write ``part-*.jsonl`` (about ``mb`` MB, records ``{"id", "text"}``) and ``truth.jsonl`` under ``out``."""
    rng = random.Random(seed)
    pool = sentence_pool()
    shards = JsonlShards(out, shard_mb)
    truth = open(out / "truth.jsonl", "wb")

    def emit(doc_id: str, text: str) -> None:
        shards.write(orjson.dumps({"id": doc_id, "text": text}) + b"\n")

    base = 0
    while shards.written < mb * 1e6:
        text = " ".join(rng.sample(pool, rng.randint(6, 24)))
        # ids from a hash-like permutation so sources and copies interleave in id order
        source_id = f"d{(base * 7919) % 10**9:09d}-0"
        emit(source_id, text)
        roll = rng.random()
        copies = 1 if roll < COPY_RATE else rng.randint(2, 3) if roll < COPY_RATE + CLUSTER_RATE else 0
        source_shingles = shingle_set(text, 5, False) if copies else None
        for c in range(1, copies + 1):
            rate = rng.choice(EDIT_RATES)
            copy = edit(text, rate, rng)
            copy_id = f"d{(base * 7919) % 10**9:09d}-{c}"
            emit(copy_id, copy)
            truth.write(
                orjson.dumps(
                    {
                        "id": copy_id,
                        "source": source_id,
                        "rate": rate,
                        "jaccard": jaccard(source_shingles, shingle_set(copy, 5, False)),
                    }
                )
                + b"\n"
            )
        base += 1
    shards.close()
    truth.close()
    return {"docs": shards.lines, "bytes": shards.written, "base_docs": base}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(json.dumps(generate(a.mb, a.out, a.seed)))
