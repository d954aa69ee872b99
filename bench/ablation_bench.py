"""What each curation step buys, measured: ``thresher compare examples/compare_ablation_smollm2.yaml`` (the full GSM8K chain,
without its dedup stages, without its quality filter; SmolLM2-135M-Instruct LoRA; the same test questions for all)
run as a user runs it, from a fresh output folder, its wall time seen from outside (Ray's start included). Writes
``bench/results/ablation.md`` (the compare table, each variant's curation: records kept, records each stage removed,
runs reused, seconds; the paired tests against the full chain) and ``ablation.json`` (compare.json, with the wall
time, the command and the load average).

    python bench/ablation_bench.py [--set KEY=VALUE ...]     # e.g. --set train.optim.max_steps=20
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

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "examples/compare_ablation_smollm2.yaml"


def markdown(result: dict, command: str, wall: float, load: list[float]) -> str:
    from thresher.evaluate.compare_report import render_markdown

    lines = [
        "# Ablation: what each curation step buys",
        "",
        f"Command: `{command}` (run by `python bench/ablation_bench.py`), from an empty output folder, on "
        f"{os.cpu_count()} cores; wall {wall:.0f} s seen from outside (Ray's start and every curation, training and "
        f"evaluation included); load average at the end {', '.join(f'{x:.1f}' for x in load)}. The model is "
        "SmolLM2-135M-Instruct with LoRA, 4 steps per variant: the run shows what each step removes and costs, and "
        "whether the eval can tell the variants apart at this size (the paired tests say so), not converged quality.",
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
    ap.add_argument("--results", type=Path, default=ROOT / "bench/results")
    a = ap.parse_args()
    out = ROOT / "out/ablation-smollm2"
    shutil.rmtree(out, ignore_errors=True)
    command = ["thresher", "compare", CONFIG, *(x for kv in a.set for x in ("--set", kv))]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "thresher", *command[1:]], cwd=ROOT, check=True)
    wall = time.perf_counter() - started
    load = list(os.getloadavg())
    result = json.loads((out / "compare.json").read_text())
    a.results.mkdir(parents=True, exist_ok=True)
    record = {"command": shlex.join(command), "wall_s": wall, "load_average": load, "compare": result}
    (a.results / "ablation.json").write_text(json.dumps(record, indent=1))
    (a.results / "ablation.md").write_text(markdown(result, shlex.join(command), wall, load))
    print(f"wrote {a.results / 'ablation.md'}")


if __name__ == "__main__":
    main()
