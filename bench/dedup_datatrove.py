"""DataTrove's MinHash deduplication (its four-step pipeline on the local executor), for bench/dedup_bench.py.

Reads ``part-*.jsonl`` (``{"id", "text"}``), writes kept documents to ``OUT/kept/`` and removed ones to
``OUT/removed/`` (JSONL, uncompressed, with ``metadata.minhash_cluster_id``) and prints the seconds of each step
as JSON. DataTrove is a benchmark-only dependency: ``pip install datatrove spacy``.

    python bench/dedup_datatrove.py --input /tmp/dedup200 --out /tmp/dt200 --workers 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import datatrove.utils.hashes.xxhash as datatrove_xxhash
import xxhash
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig


def _xxhash64(data: str | bytes) -> int:
    """DataTrove 0.10 passes str to xxhash, which xxhash >= 4 refuses; earlier versions encoded it as UTF-8."""
    return xxhash.xxh64_intdigest(data.encode() if isinstance(data, str) else data)


datatrove_xxhash.xxhash64 = _xxhash64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bands", type=int, default=14)
    ap.add_argument("--rows", type=int, default=8)
    a = ap.parse_args()
    files = sorted(p.name for p in a.input.glob("part-*.jsonl"))
    tasks = len(files)
    config = MinhashConfig(
        n_grams=5, num_buckets=a.bands, hashes_per_bucket=a.rows, hash_config=HashConfig(precision=64)
    )
    out = a.out

    def reader():
        return JsonlReader(str(a.input), glob_pattern="part-*.jsonl", id_key="id", text_key="text")

    steps = {
        "signatures": (
            LocalPipelineExecutor(
                pipeline=[reader(), MinhashDedupSignature(output_folder=str(out / "sigs"), config=config)],
                tasks=tasks,
                workers=a.workers,
                logging_dir=str(out / "logs/sigs"),
            )
        ),
        "buckets": LocalPipelineExecutor(
            pipeline=[
                MinhashDedupBuckets(input_folder=str(out / "sigs"), output_folder=str(out / "buckets"), config=config)
            ],
            tasks=config.num_buckets,
            workers=a.workers,
            logging_dir=str(out / "logs/buckets"),
        ),
        "clusters": LocalPipelineExecutor(
            pipeline=[
                MinhashDedupCluster(
                    input_folder=str(out / "buckets"),
                    output_folder=str(out / "remove_ids"),
                    config=config,
                    save_cluster_id=True,
                )
            ],
            tasks=1,
            logging_dir=str(out / "logs/clusters"),
        ),
        "filter": LocalPipelineExecutor(
            pipeline=[
                reader(),
                MinhashDedupFilter(
                    input_folder=str(out / "remove_ids"),
                    load_cluster_ids=True,
                    exclusion_writer=JsonlWriter(str(out / "removed"), compression=None),
                ),
                JsonlWriter(str(out / "kept"), compression=None),
            ],
            tasks=tasks,
            workers=a.workers,
            logging_dir=str(out / "logs/filter"),
        ),
    }
    seconds = {}
    for name, executor in steps.items():
        t = time.perf_counter()
        executor.run()
        seconds[name] = round(time.perf_counter() - t, 2)
        print(json.dumps({"step": name, "seconds": seconds[name]}), flush=True)
    print(json.dumps({"seconds": seconds, "total": round(sum(seconds.values()), 2)}), flush=True)


if __name__ == "__main__":
    main()
