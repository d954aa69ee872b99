"""Semantic benchmark: encoder throughput per CPU core, semantic dedup against dedup_fuzzy on MRPC paraphrase pairs,
and end-to-end ``thresher curate`` with embed + dedup_semantic on a generated corpus.

    python bench/semantic_bench.py --pairs 1000 --e2e 200:bfloat16 20:float32   # bench/results/semantic.{md,json}

* Throughput: ``thresher.models.encoders.SentenceEncoder`` with one torch thread on MRPC sentences (short) and on web
  documents cut to 2,000 characters (MiniLM truncates at 256 tokens), after a warm-up batch, in float32 and under
  bfloat16 autocast (with the lowest cosine between the two dtypes' vectors of the same texts).
* Accuracy: the first ``--pairs`` MRPC train pairs become records ``a<i>``/``b<i>``; each stage's ``decide`` runs on
  their key rows on a local Ray (the stages' own code paths); a removal counts as a true positive when it names
  the other sentence of its own pair and MRPC labels that pair a paraphrase (precision: over all removals,
  cross-pair links included; recall: over the labelled paraphrase pairs). The labels are read here, independently
  of the stages.
* End to end: ``thresher curate`` (a subprocess, embedded Ray on every core) on a corpus from
  ``bench/dedup_corpus.py`` with normalize, embed (``--e2e MB:DTYPE``), dedup_semantic, split; wall time and
  records/s, and the planted copies the generator recorded (``truth.jsonl``, with each copy's true word 5-gram
  Jaccard to its source) that the removals collapsed (``--rescore`` recomputes this on the kept run folders).

The machine may be shared: ``os.getloadavg()`` is recorded before and after each part.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from corpus import SHARED, source_documents  # noqa: E402
from dedup_corpus import generate  # noqa: E402

from thresher.curate.dedup.removal import KEPT_DETAIL  # noqa: E402

MODEL = "pkg:all_minilm_l6_v2"
SEMANTIC_THRESHOLDS = (0.75, 0.8, 0.85, 0.9, 0.95)
FUZZY = [(5, 0.8), (5, 0.5), (5, 0.3), (3, 0.5), (3, 0.3), (2, 0.5), (2, 0.3), (1, 0.5)]
RESULTS = ROOT / "bench" / "results"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def mrpc(pairs: int) -> list[tuple[int, str, str]]:
    with open(SHARED / "paraphrase" / "msr_paraphrase_train.txt", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1 : pairs + 1]
    return [(int(q), s1, s2) for q, _, _, s1, s2 in rows]


def throughput(encoder, texts: list[str]) -> tuple[float, np.ndarray]:
    encoder.encode(texts[:32])
    t0 = time.perf_counter()
    vectors = encoder.encode(texts)
    return len(texts) / (time.perf_counter() - t0), vectors


def decide(stage, records: pa.Table) -> pa.Table:
    import ray

    from thresher.curate.stage import ID, KEY, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE

    n = records.num_rows
    keys = {
        KEY: pa.array(np.arange(n), pa.int64()),
        ID: records[ID],
        **{c: pa.nulls(n, pa.string()) for c in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)},
    }
    keys.update(stage.keys(records))
    import ray.data

    ds = ray.data.from_arrow([pa.table(keys)])
    return pa.concat_tables(ray.get(stage.decide(ds).materialize().to_arrow_refs()))


def scores(decided: pa.Table, labels: list[int]) -> dict:
    removed = decided.filter(pc.is_valid(decided["_reject_stage"]))
    right = sum(
        1
        for rid, detail in zip(removed["id"].to_pylist(), removed["_reject_detail"].to_pylist())
        if rid[1:] == detail.removeprefix(KEPT_DETAIL)[1:] and labels[int(rid[1:])] == 1
    )
    return {
        "removed": removed.num_rows,
        "true_pairs": right,
        "precision": round(right / removed.num_rows, 3) if removed.num_rows else None,
        "recall": round(right / sum(labels), 3),
    }


def accuracy(pairs: int, encoder) -> dict:
    import ray

    from thresher.curate.stage import StageContext
    from thresher.curate.stages.dedup_fuzzy import DedupFuzzy, DedupFuzzyConfig
    from thresher.curate.stages.dedup_semantic import DedupSemantic, DedupSemanticConfig

    data = mrpc(pairs)
    labels = [q for q, _, _ in data]
    texts = [s for _, s1, s2 in data for s in (s1, s2)]
    t0 = time.perf_counter()
    vectors = encoder.encode(texts)
    encode_s = time.perf_counter() - t0
    records = pa.table(
        {
            "id": [f"{side}{i}" for i in range(len(data)) for side in "ab"],
            "text": texts,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
        }
    )
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False, log_to_driver=False)
    rows = []
    for threshold in SEMANTIC_THRESHOLDS:
        t0 = time.perf_counter()
        out = decide(DedupSemantic(DedupSemanticConfig(threshold=threshold), StageContext()), records)
        rows.append(
            {
                "method": "dedup_semantic",
                "setting": f"cosine >= {threshold}",
                **scores(out, labels),
                "decide_s": round(time.perf_counter() - t0, 2),
            }
        )
        print(rows[-1], flush=True)
    for ngram, threshold in FUZZY:
        t0 = time.perf_counter()
        out = decide(DedupFuzzy(DedupFuzzyConfig(threshold=threshold, ngram=ngram), StageContext()), records)
        rows.append(
            {
                "method": "dedup_fuzzy",
                "setting": f"word {ngram}-grams, Jaccard {threshold}",
                **scores(out, labels),
                "decide_s": round(time.perf_counter() - t0, 2),
            }
        )
        print(rows[-1], flush=True)
    ray.shutdown()
    return {"pairs": len(data), "paraphrase_pairs": sum(labels), "encode_s": round(encode_s, 2), "rows": rows}


def end_to_end(mb: float, dtype: str, work: Path) -> dict:
    corpus = work / f"corpus-{mb:g}mb"
    if not (corpus / "truth.jsonl").exists():
        info = generate(mb, corpus)
    else:
        info = {"docs": sum(1 for p in corpus.glob("part-*.jsonl") for _ in open(p))}
    out = work / f"out-{mb:g}mb-{dtype}"
    config = {
        "input": {"paths": [str(corpus / "part-*.jsonl")]},
        "output": {"path": str(out)},
        "stages": [
            {"normalize": {}},
            {"embed": {"model": MODEL, "dtype": dtype}},
            {"dedup_semantic": {"threshold": 0.9}},
            {"split": {}},
        ],
    }
    path = work / f"semantic-{mb:g}mb-{dtype}.yaml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run(["rm", "-rf", str(out)], check=True)
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "thresher", "curate", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    manifest = json.loads((out / "manifest.json").read_text())
    stage = manifest["counts"]["by_stage"]["dedup_semantic"]
    return {
        "mb": mb,
        "dtype": dtype,
        "planted": planted(corpus, out),
        "bytes": sum(p.stat().st_size for p in corpus.glob("part-*.jsonl")),
        "docs": info["docs"],
        "wall_s": round(wall, 1),
        "records_per_s": round(manifest["counts"]["input"] / wall, 1),
        "semantic_removed": stage["rejected"],
        "clusters": manifest["metrics"]["dedup_semantic"]["clusters"],
        "cpus": manifest["ray"]["cpus"],
        "load_before": before,
        "load_after": load(),
    }


def planted(corpus: Path, out: Path) -> dict:
    """The generator's planted pairs that dedup_semantic collapsed, by true Jaccard: the copy or its source was
    removed naming a member of the same planted group; and the removals that name a record of another group."""
    import pyarrow.parquet as pq

    rejects = pq.read_table(out / "rejects", columns=["id", "stage", "detail"])
    named = {
        r: k.removeprefix(KEPT_DETAIL)
        for r, s, k in zip(*(rejects[c].to_pylist() for c in ("id", "stage", "detail")))
        if s == "dedup_semantic"
    }

    def group(i: str) -> str:
        return i.rsplit("-", 1)[0]

    bins = {"J >= 0.85": [0, 0], "0.5 <= J < 0.85": [0, 0], "J < 0.5": [0, 0]}
    with open(corpus / "truth.jsonl") as f:
        for line in f:
            t = json.loads(line)
            b = "J >= 0.85" if t["jaccard"] >= 0.85 else "0.5 <= J < 0.85" if t["jaccard"] >= 0.5 else "J < 0.5"
            bins[b][0] += any(r in named and group(named[r]) == group(r) for r in (t["id"], t["source"]))
            bins[b][1] += 1
    return {
        "collapsed": {b: [hit, n] for b, (hit, n) in bins.items()},
        "removed_outside_group": sum(1 for r, k in named.items() if group(k) != group(r)),
    }


def rescore(work: Path) -> None:
    """The planted-copy figures of semantic.json's end-to-end runs, again from their run folders under ``work``."""
    path = RESULTS / "semantic.json"
    results = json.loads(path.read_text())
    for e in results["end_to_end"]:
        e["planted"] = planted(work / f"corpus-{e['mb']:g}mb", work / f"out-{e['mb']:g}mb-{e['dtype']}")
    path.write_text(json.dumps(results, indent=2))
    (RESULTS / "semantic.md").write_text(markdown(results))


def markdown(results: dict) -> str:
    t = results["throughput"]
    lines = [
        "# Semantic dedup and embeddings",
        "",
        f"Machine: {results['cpus']} CPUs; load average (1, 5, 15 min) {results['load_start']} at the start, "
        f"{results['load_end']} at the end (a 1-minute load near the CPU count is this benchmark alone; above it, "
        "other work shared the CPUs and the timings are upper bounds).",
        "",
        "## Encoder throughput (all-MiniLM-L6-v2, plain transformers, 1 torch thread)",
        "",
        "| texts | n | float32 texts/s per core | bfloat16 autocast texts/s per core | lowest cosine "
        "bfloat16 vs float32 |",
        "|---|---|---|---|---|",
        f"| MRPC sentences (~20 words) | {t['short_n']} | {t['short_per_s']:.1f} | {t['short_bf16_per_s']:.1f} | "
        f"{t['short_bf16_min_cos']:.5f} |",
        f"| web documents cut to 2,000 chars (256 tokens) | {t['long_n']} | {t['long_per_s']:.1f} | "
        f"{t['long_bf16_per_s']:.1f} | {t['long_bf16_min_cos']:.5f} |",
        "",
        f"Load average during this part: {t['load']}.",
        "",
        f"## Paraphrase detection on MRPC ({results['accuracy']['pairs']} train pairs, "
        f"{results['accuracy']['paraphrase_pairs']} labelled paraphrases)",
        "",
        "A removal is right when it names the other sentence of its own pair and the pair is a paraphrase; "
        "precision is over all removals (links across pairs count as wrong), recall over the labelled "
        "paraphrase pairs.",
        "",
        "| stage | setting | removed | right | precision | recall | decide s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["accuracy"]["rows"]:
        lines.append(
            f"| {r['method']} | {r['setting']} | {r['removed']} | {r['true_pairs']} | {r['precision']} | "
            f"{r['recall']} | {r['decide_s']} |"
        )
    lines += [
        "",
        results["note_accuracy"],
        "",
        "## End to end: `thresher curate` (normalize, embed, dedup_semantic 0.9, split)",
        "",
        "| corpus MB | embed dtype | docs | wall s | records/s | removed | clusters | CPUs | "
        "load before | load after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in results["end_to_end"]:
        lines.append(
            f"| {e['bytes'] / 1e6:.1f} | {e['dtype']} | {e['docs']} | {e['wall_s']} | {e['records_per_s']} | "
            f"{e['semantic_removed']} | {e['clusters']} | {e['cpus']} | {e['load_before']} | {e['load_after']} |"
        )
    lines += [
        "",
        "Planted copies (`bench/dedup_corpus.py`'s `truth.jsonl`: each copy's true word 5-gram Jaccard to its "
        "source, computed by the generator) collapsed by `dedup_semantic` (the copy or its source removed naming "
        "a member of its own planted group), and removals that name a record of another group:",
        "",
        "| corpus MB | embed dtype | J >= 0.85 | 0.5 <= J < 0.85 | J < 0.5 | removals naming another group |",
        "|---|---|---|---|---|---|",
    ]
    for e in results["end_to_end"]:
        if "planted" in e:
            c = e["planted"]["collapsed"]
            cells = [f"{h / n:.1%} ({h:,} of {n:,})" for h, n in c.values()]
            lines.append(
                f"| {e['bytes'] / 1e6:.1f} | {e['dtype']} | {' | '.join(cells)} | "
                f"{e['planted']['removed_outside_group']:,} of {e['semantic_removed']:,} |"
            )
    lines += ["", results["note_size"], ""]
    return "\n".join(lines)


def rewrite_markdown() -> None:
    """semantic.md again from semantic.json (after editing the notes)."""
    (RESULTS / "semantic.md").write_text(markdown(json.loads((RESULTS / "semantic.json").read_text())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1000, help="MRPC pairs for the accuracy table")
    parser.add_argument(
        "--e2e",
        nargs="*",
        default=["200:bfloat16"],
        help="end-to-end runs as MB:DTYPE (embed dtype float32 or bfloat16)",
    )
    parser.add_argument("--throughput-n", type=int, default=256)
    parser.add_argument("--work", type=Path, default=Path("/tmp/thresher-semantic-bench"))
    parser.add_argument("--size-note", default="", help="a note under the end-to-end table")
    parser.add_argument("--rewrite", action="store_true", help="only rewrite semantic.md from semantic.json")
    parser.add_argument("--rescore", action="store_true", help="only recompute the planted-copy figures")
    args = parser.parse_args()
    if args.rewrite:
        rewrite_markdown()
        return
    if args.rescore:
        rescore(args.work)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    import torch

    from thresher.models.encoders import SentenceEncoder
    from thresher.models.resolve import resolve_model

    results = {"cpus": os.cpu_count(), "load_start": load()}
    torch.set_num_threads(1)
    encoder = SentenceEncoder(resolve_model(MODEL))
    short = [s for _, s1, s2 in mrpc(args.throughput_n) for s in (s1, s2)][: args.throughput_n]
    long = [d[:2000] for d in source_documents() if len(d) >= 1000][: args.throughput_n // 4]
    half = SentenceEncoder(resolve_model(MODEL), dtype="bfloat16")
    results["throughput"] = {"short_n": len(short), "long_n": len(long)}
    for name, texts in (("short", short), ("long", long)):
        rate, vectors = throughput(encoder, texts)
        rate_bf16, vectors_bf16 = throughput(half, texts)
        results["throughput"].update(
            {
                f"{name}_per_s": rate,
                f"{name}_bf16_per_s": rate_bf16,
                f"{name}_bf16_min_cos": float((vectors * vectors_bf16).sum(axis=1).min()),
            }
        )
    results["throughput"]["load"] = load()
    print(results["throughput"], flush=True)
    torch.set_num_threads(os.cpu_count())
    results["accuracy"] = accuracy(args.pairs, encoder)
    results["note_accuracy"] = (
        "MRPC pairs were selected for word overlap, so word unigram and bigram Jaccard at low thresholds are strong "
        "baselines there: at equal precision they find about as many paraphrases as all-MiniLM-L6-v2's cosine. "
        "dedup_fuzzy's default word 5-grams find far fewer at any threshold. MRPC repeats some sentences across "
        "pairs, so a few removals counted wrong (linking two pairs) are true duplicates; both stages are scored "
        "the same way."
    )
    results["end_to_end"] = [
        end_to_end(float(mb), dtype, args.work) for mb, dtype in (run.split(":") for run in args.e2e)
    ]
    results["note_size"] = args.size_note
    results["load_end"] = load()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "semantic.json").write_text(json.dumps(results, indent=2))
    (RESULTS / "semantic.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
