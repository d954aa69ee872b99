"""Join what ``bench/scale_run.sh`` measured on a many-core machine (``pipeline-16core*.json``) into one results
file: the scaling summary per corpus (speed-up and parallel efficiency of the whole run and of the map phase against
the same corpus at 1 CPU), then each run set's tables from ``bench/pipeline_bench.py``.

    python bench/scale_report.py RESULTS_DIR [--machine machine.txt] [--out bench/results/pipeline-16core]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from pipeline_bench import MAP_PHASE, markdown  # noqa: E402


def corpus_mb(command: str) -> int:
    words = command.split()
    return int(words[words.index("--mb") + 1]) if "--mb" in words else 200


def summary(sets: list[dict]) -> list[str]:
    rows = [(corpus_mb(s["command"]), r) for s in sets for r in s["runs"]]
    lines = [
        "| corpus | run | wall s (Ray start included) | map phase s | other phases s | speed-up (wall) "
        "| efficiency (wall) | speed-up (map) | efficiency (map) | docs/s (wall) | identical output |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mb, r in sorted(rows, key=lambda x: (x[0], "nodes" in x[1]["name"], x[1]["cpus"])):
        one = next((b for m, b in rows if m == mb and b["cpus"] == 1 and "nodes" not in b["name"]), None)
        p = r["phases"]
        wall_x = one["wall_s"] / r["wall_s"] if one else None
        map_x = one["phases"][MAP_PHASE] / p[MAP_PHASE] if one else None
        lines.append(
            f"| {mb:,} MB | {r['name']} | {r['wall_s']:.1f} | {p[MAP_PHASE]:.1f} | {r['wall_s'] - p[MAP_PHASE]:.1f} "
            + (
                f"| x{wall_x:.2f} | {wall_x / r['cpus']:.0%} | x{map_x:.2f} | {map_x / r['cpus']:.0%} "
                if one
                else "| - | - | - | - "
            )
            + f"| {r['docs'] / r['wall_s']:,.0f} | {r['digests'] == one['digests'] if one else '-'} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--machine", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/pipeline-16core")
    a = ap.parse_args()
    found = [{**json.loads(f.read_text()), "name": f.stem} for f in sorted(a.results.glob("pipeline-16core*.json"))]
    sets = [s for s in found if "command" in s]  # a joined file from an earlier call is not a run set
    sets.sort(key=lambda s: (corpus_mb(s["command"]), -len(s["runs"])))
    machine, cores = "not recorded", None
    if a.machine:  # bench/device_run.sh's: nvidia-smi's GPU line, lscpu's CPU(s) and model name, free -g's Mem line
        text = a.machine.read_text()
        gpu = text.splitlines()[0].split(",")[0]
        cores = int(re.search(r"CPU\(s\):\s+(\d+)", text)[1])
        model = re.search(r"Model name:\s+(.+)", text)[1].strip()
        memory = re.search(r"Mem:\s+(\d+)", text)[1]
        machine = f"{cores} cores ({model}), {memory} GB of memory, beside one {gpu}"
    for s in sets:  # run sets saved before pipeline_bench recorded them: the machine's cores, the .md's file count
        s.setdefault("cores", cores)
        if "files" not in s and (md := a.results / f"{s['name']}.md").exists():
            s["files"] = int(re.search(r"documents in (\d+) gzip shards", md.read_text())[1])
    lines = [
        "# Curation on 16 cores and two nodes",
        "",
        f"Machine: {machine}. Commands: `bash bench/scale_run.sh` (inside `bash bench/device_run.sh`), which runs "
        "`bench/pipeline_bench.py` once per line below; then `python bench/scale_report.py`. Speed-up and efficiency "
        "are against the same corpus at 1 CPU on one node; efficiency = speed-up / CPUs.",
        "",
        *summary(sets),
        "",
    ]
    for s in sets:
        body = markdown(
            s["runs"],
            corpus_mb(s["command"]),
            s.get("files", 16),
            s["command"],
            "--distinct" in s["command"],
            s["cores"],
        ).split("\n", 1)[1]
        lines += [f"## {corpus_mb(s['command']):,} MB: {', '.join(r['name'] for r in s['runs'])}", ""]
        lines += [ln.replace("## ", "### ", 1) if ln.startswith("## ") else ln for ln in body.splitlines()]
        lines.append("")
    a.out.with_suffix(".md").write_text("\n".join(lines))
    a.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "sets": sets}, indent=1))
    print(f"wrote {a.out}.md")


if __name__ == "__main__":
    main()
