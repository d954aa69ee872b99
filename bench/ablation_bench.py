"""What each curation step buys, measured: ``thresher compare examples/compare_ablation_smollm2.yaml`` (the full GSM8K chain,
without its dedup stages, without its quality filter; SmolLM2-135M-Instruct LoRA; the same test questions for all)
run as a user runs it, from a fresh output folder, its wall time seen from outside (Ray's start included). Writes
``bench/results/ablation.md`` (the compare table, each variant's curation: records kept, records each stage removed,
runs reused, seconds; the paired tests against the full chain) and ``ablation.json`` (compare.json, with the wall
time, the command and the load average).

    python bench/ablation_bench.py [--set KEY=VALUE ...]     # e.g. --set train.optim.max_steps=20
    python bench/ablation_bench.py --noisy 1500 --set ...     # the chain on a noisy corpus: ablation-noisy.{md,json}

``--noisy N``: instead of the example's clean GSM8K sample, the chain curates ``bench/proof.py``'s noisy corpus of N
GSM8K training records (exact and near duplicates, boilerplate, other languages, one-word and missing answers, broken
JSON lines, PII, and 3 copies of each of the first 16 test questions the variants are evaluated on), seeded; the
faults planted are in the results. Its variants: the full chain, without dedup, without language ID.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "examples/compare_ablation_smollm2.yaml"


def noisy_config(records: int, seed: int = 0) -> tuple[str, dict]:
    """A compare config (under out/ablation-noisy-input, relative to the repository) whose base curation config is
    examples/gsm8k_instruct.yaml reading bench/proof.py's noisy corpus of ``records`` records; the faults planted."""
    sys.path.insert(0, str(ROOT / "bench"))
    from proof import build_corpus

    work = Path("out/ablation-noisy-input")
    (ROOT / work).mkdir(parents=True, exist_ok=True)
    test = [json.loads(line) for line in (ROOT / "examples/data/gsm8k_test.jsonl").read_text().splitlines()]
    lines, faults = build_corpus(records, test[:16], 3, seed)
    (ROOT / work / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    curate = yaml.safe_load((ROOT / "examples/gsm8k_instruct.yaml").read_text())
    curate["input"]["paths"] = [str(work / "corpus.jsonl")]
    (ROOT / work / "curate.yaml").write_text(yaml.safe_dump(curate, sort_keys=False))
    compare = yaml.safe_load((ROOT / CONFIG).read_text())
    compare["curate"] = str(work / "curate.yaml")
    compare["output"]["path"] = "out/ablation-noisy"
    # gsm8k_instruct's quality rules (fitted to math word problems) keep this corpus's boilerplate: without them
    # the data is the same; language ID is the step with something to remove here
    compare["variants"] = [
        {"name": "full"},
        {"name": "no-dedup", "curate": {"drop": ["dedup_exact", "dedup_fuzzy"]}},
        {"name": "no-langid", "curate": {"drop": ["langid"]}},
    ]
    (ROOT / work / "compare.yaml").write_text(yaml.safe_dump(compare, sort_keys=False))
    return str(work / "compare.yaml"), {"records": records, "seed": seed, "lines": len(lines), "faults": faults}


def markdown(result: dict, command: str, wall: float, load: list[float], corpus: dict | None) -> str:
    from thresher.evaluate.compare_report import render_markdown

    steps = sorted({v["train"]["steps"] for v in result["variants"] if (v.get("train") or {}).get("steps")})
    data = (
        f"bench/proof.py's noisy corpus: {corpus['records']:,} GSM8K training records (seed {corpus['seed']}) and "
        f"the faults planted in them, {corpus['lines']:,} lines ("
        + ", ".join(f"{k.replace('_', ' ')} {n:,}" for k, n in corpus["faults"].items())
        + ")"
        if corpus
        else "the example's GSM8K sample (examples/data/gsm8k_train.jsonl: 1,500 records)"
    )
    lines = [
        "# Ablation: what each curation step buys",
        "",
        f"Command: `{command}` (run by `python bench/ablation_bench.py`), from an empty output folder, on "
        f"{os.cpu_count()} cores; wall {wall:.0f} s seen from outside (Ray's start and every curation, training and "
        f"evaluation included); load average at the end {', '.join(f'{x:.1f}' for x in load)}. Data: {data}. The "
        f"model is SmolLM2-135M-Instruct with LoRA, {'/'.join(map(str, steps))} steps per variant: the run shows what "
        "each step removes and costs, and whether the eval can tell the variants apart at this size (the paired tests "
        "say so), not converged quality.",
        "",
        render_markdown(result),
        "## Curation per variant",
        "",
        "| variant | records kept | removed per stage | curation runs (reused) | curation s |",
        "|---|---:|---|---|---:|",
    ]
    for v in result["variants"]:
        c = v["curation"]
        removed = ", ".join(f"{s} {n:,}" for s, n in c["removed_by_stage"].items() if n)
        runs = "; ".join(f"{'+'.join(r['stages'])}{' (reused)' if r['reused'] else ''}" for r in c["runs"])
        lines.append(f"| {v['name']} | {c['records']:,} of {c['input']:,} | {removed} | {runs} | {c['seconds']:.0f} |")
    lines += ["", "## Paired tests against the full chain", ""]
    for v in result["variants"][1:]:
        for metric, test in (v.get("paired") or {}).items():
            lines.append(
                f"- {v['name']}, {metric}: difference {test['difference']:+.4g} "
                f"[{test['ci95'][0]:+.4g}, {test['ci95'][1]:+.4g}], {test['test']}, p = {test['p_value']:.3g}: "
                f"{test['verdict']}"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE overrides of the compare config")
    ap.add_argument("--noisy", type=int, default=0, help="curate bench/proof.py's noisy corpus of N records")
    ap.add_argument("--results", type=Path, default=ROOT / "bench/results")
    a = ap.parse_args()
    config, corpus = noisy_config(a.noisy) if a.noisy else (CONFIG, None)
    name = "ablation-noisy" if a.noisy else "ablation"
    out = ROOT / yaml.safe_load((ROOT / config).read_text())["output"]["path"]
    shutil.rmtree(out, ignore_errors=True)
    command = ["thresher", "compare", config, *(x for kv in a.set for x in ("--set", kv))]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "thresher", *command[1:]], cwd=ROOT, check=True)
    wall = time.perf_counter() - started
    load = list(os.getloadavg())
    result = json.loads((out / "compare.json").read_text())
    a.results.mkdir(parents=True, exist_ok=True)
    record = {"command": shlex.join(command), "corpus": corpus, "wall_s": wall, "load_average": load, "compare": result}
    (a.results / f"{name}.json").write_text(json.dumps(record, indent=1))
    (a.results / f"{name}.md").write_text(markdown(result, shlex.join(command), wall, load, corpus))
    print(f"wrote {a.results / name}.md")


if __name__ == "__main__":
    main()
