"""Fuzzy dedup with rensa (Rust MinHash and LSH with Python bindings) in one process, for bench/dedup_bench.py.

Reads ``part-*.jsonl`` (``{"id", "text"}``) in file and line order and, a chunk of documents at a time: builds
the same word 5-gram shingles as thresher (``src/thresher/curate/dedup/minhash.py``: words are maximal runs of bytes other
than ASCII whitespace, controls and punctuation, ASCII letters lowercased, tokens joined by a space; a document
with fewer than 5 words is one shingle of all of them, one without words is never a candidate), in Python;
computes R-MinHash sketches with rensa's batch constructor (``RMinHash.from_token_sets``); inserts them into an
``RMinHashLSH`` of ``--bands`` x ``--rows`` (num_perm = bands x rows: rensa needs num_perm divisible by the bands)
and queries the chunk against everything inserted so far, so each document sees its candidates among earlier
ones. A candidate pair is verified when rensa's estimated Jaccard of the two sketches reaches ``--cut``; greedy
keep-first: a document is removed when it is a verified candidate of an earlier kept document (the first such,
recorded as its kept record). Writes ``OUT/removed.jsonl`` (``{"id", "kept"}``) and prints the seconds of each
step as JSON. rensa is a benchmark-only peer, never a thresher dependency: its own venv (``python3 -m venv
/work/peers/rensa; pip install 'rensa==0.5.*' numpy orjson psutil``); this file imports nothing from thresher.

    /work/peers/rensa/bin/python bench/dedup_rensa.py --input /tmp/dedup200 --out /tmp/rensa200
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import orjson
from rensa import RMinHash, RMinHashLSH

_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
# a word: a maximal run of bytes that are not ASCII whitespace, controls or punctuation (as thresher's kernel)
_WORD = re.compile(rb"[^\x00-\x20!-/:-@\[-`{-~]+")


def shingles(text: str, ngram: int = 5) -> list[bytes]:
    """thresher's word n-gram shingles of ``text`` (``shingle_set``), as a list (repeats do not change a
    MinHash): UTF-8 words lowercased in ASCII, joined by a space."""
    words = _WORD.findall(text.encode("utf-8", "replace").translate(_ASCII_LOWER))
    if len(words) < ngram:
        return [b" ".join(words)] if words else []
    return list(map(b" ".join, zip(*(words[i:] for i in range(ngram)))))


def documents(folder: Path, chunk: int):
    """(ids, texts) of up to ``chunk`` records at a time, in file then line order."""
    ids, texts = [], []
    for f in sorted(folder.glob("part-*.jsonl")):
        with open(f, "rb") as lines:
            for line in lines:
                record = orjson.loads(line)
                ids.append(str(record["id"]))
                texts.append(record.get("text") or "")
                if len(ids) == chunk:
                    yield ids, texts
                    ids, texts = [], []
    if ids:
        yield ids, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threshold", type=float, default=0.8, help="RMinHashLSH's threshold argument")
    ap.add_argument(
        "--cut",
        type=float,
        default=None,
        help="estimated Jaccard a candidate pair must reach to be a duplicate (default: --threshold)",
    )
    ap.add_argument("--bands", type=int, default=14)
    ap.add_argument("--rows", type=int, default=9)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--chunk",
        type=int,
        default=2048,
        help="documents shingled and hashed per batch call (their shingles are the peak memory)",
    )
    a = ap.parse_args()
    cut = a.threshold if a.cut is None else a.cut
    num_perm = a.bands * a.rows
    lsh = RMinHashLSH(a.threshold, num_perm, a.bands)
    steps = dict.fromkeys(("read", "shingles", "minhash", "lsh", "verify", "write"), 0.0)
    all_ids: list[str] = []
    sketches: list = []  # RMinHash of every document, by index (None: no words)
    removed: dict[int, int] = {}  # removed index -> kept index
    candidate_pairs = 0  # (document, earlier candidate) pairs LSH returned

    t = time.perf_counter()
    for ids, texts in documents(a.input, a.chunk):
        t1 = time.perf_counter()
        steps["read"] += t1 - t
        shingled = [shingles(text, a.ngram) for text in texts]
        t2 = time.perf_counter()
        keys = [len(all_ids) + i for i, s in enumerate(shingled) if s]
        hashed = RMinHash.from_token_sets([s for s in shingled if s], num_perm, a.seed)
        t3 = time.perf_counter()
        lsh.insert_pairs(list(zip(keys, hashed)))
        candidates = lsh.query_all(hashed)
        t4 = time.perf_counter()
        by_index = [None] * len(ids)
        for key, sketch in zip(keys, hashed):
            by_index[key - len(all_ids)] = sketch
        sketches += by_index
        all_ids += ids
        # greedy keep-first, in document order: the chunk's documents query everything inserted so far (this
        # chunk included), so every earlier candidate is known; an earlier document's fate is already final
        for key, found in zip(keys, candidates):
            earlier = sorted(k for k in found if k < key)
            candidate_pairs += len(earlier)
            mine = sketches[key]
            for k in earlier:
                if k not in removed and mine.jaccard(sketches[k]) >= cut:
                    removed[key] = k
                    break
        t = time.perf_counter()
        steps["shingles"] += t2 - t1
        steps["minhash"] += t3 - t2
        steps["lsh"] += t4 - t3
        steps["verify"] += t - t4

    t = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "removed.jsonl").write_bytes(
        b"".join(orjson.dumps({"id": all_ids[r], "kept": all_ids[k]}) + b"\n" for r, k in sorted(removed.items()))
    )
    steps["write"] = time.perf_counter() - t
    seconds = {k: round(v, 2) for k, v in steps.items()}
    print(
        json.dumps(
            {
                "seconds": seconds,
                "total": round(sum(steps.values()), 2),
                "docs": len(all_ids),
                "empty": sum(s is None for s in sketches),
                "num_perm": num_perm,
                "bands": a.bands,
                "rows": a.rows,
                "cut": cut,
                "candidate_pairs": candidate_pairs,
                "removed": len(removed),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
