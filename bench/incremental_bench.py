"""Incremental benchmark: release 2 curated against a release 1 (``against``), next to curating both together.

Release 1 is ``--mb`` MB of documents made of real sentences (those of the shared C4, Common Crawl and Wikipedia
documents of ``THRESHER_SHARED``, ``bench/corpus.py``), each a random sequence of 15 to 45 sentences of the first
90 % of the source documents: distinct documents, as a crawl's are (``bench/corpus.py``'s cycled documents are
near copies of a few thousand sources, which dedup would reduce to those). Release 2 is ``--new-mb`` MB of such
documents from the sentences of the other 10 %, plus exact copies and near copies (one word changed) of
``--copies`` release-1 documents. The stages are dedup_exact, dedup_fuzzy and split. Three runs of
``thresher curate`` (a subprocess: the venv's ``thresher``, an embedded local Ray), each sampled every 0.25 s
(``bench/scale_bench.py``: wall time, driver peak RSS, peak PSS of the process tree):

1. release 1 with ``output.reference_index: true`` (its index written at commit);
2. release 1 without it (what the index costs at commit);
3. release 2 against release 1 (``against`` on every stage);
4. release 2 against run 2, which has no index (an older run: its index built on demand, once, from its data);
5. both inputs in one run (what re-curating everything costs).

Also: the size of release 1's data and of its index per stage, and what release 2 removed per reference.

    python bench/incremental_bench.py                              # 1 GB release 1 -> bench/results/incremental.*
    python bench/incremental_bench.py --mb 2 --new-mb 0.5 --copies 20 --results /tmp/incr   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from corpus import JsonlShards, source_documents  # noqa: E402
from scale_bench import count_files, measure, version  # noqa: E402

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def stages(against: list[str]) -> list[dict]:
    return [
        {"dedup_exact": {"against": against}},
        {"dedup_fuzzy": {"threshold": 0.8, "against": against}},
        {"split": {"against": against}},
    ]


def sentence_pools() -> tuple[list[str], list[str]]:
    """The sentences of the shared documents (``bench/corpus.py``), those of the first 90 % of the documents and
    those of the rest."""
    docs = source_documents()
    cut = int(len(docs) * 0.9)

    def sentences(part: list[str]) -> list[str]:
        return [s for d in part for s in SENTENCE_END.split(d) if 20 <= len(s) <= 400]

    return sentences(docs[:cut]), sentences(docs[cut:])


def document(pool: list[str], rng: random.Random) -> str:
    """A document of 15 to 45 sentences drawn from ``pool``: real sentences, in a sequence no other document has."""
    return " ".join(rng.choice(pool) for _ in range(rng.randint(15, 45)))


def make_releases(work: Path, mb: float, new_mb: float, copies: int, shard_mb: float) -> dict:
    """Write release 1's and release 2's JSONL shards under ``work``; returns their sizes and counts."""
    old, new = sentence_pools()
    rng = random.Random(0)
    r1 = JsonlShards(work / "release1-input", shard_mb)
    kept: list[str] = []
    while r1.written < mb * 1e6:
        n = r1.lines
        text = document(old, rng)
        if len(kept) < copies:
            kept.append(text)
        elif rng.random() < copies / max(1, n):  # reservoir: copies of documents from all of release 1
            kept[rng.randrange(copies)] = text
        r1.write(json.dumps({"id": f"a-{n:09d}", "text": text}).encode() + b"\n")
    r1.close()
    r2 = JsonlShards(work / "release2-input", shard_mb)
    while r2.written < new_mb * 1e6:
        r2.write(json.dumps({"id": f"b-{r2.lines:09d}", "text": document(new, rng)}).encode() + b"\n")
    for i, text in enumerate(kept):
        words = text.split(" ")
        words[rng.randrange(len(words))] += "x"
        r2.write(json.dumps({"id": f"c-{i:09d}", "text": text}).encode() + b"\n")
        r2.write(json.dumps({"id": f"d-{i:09d}", "text": " ".join(words)}).encode() + b"\n")
    r2.close()
    return {
        "release1": {"documents": r1.lines, "bytes": r1.written},
        "release2": {"documents": r2.lines, "bytes": r2.written, "exact_copies": len(kept), "near_copies": len(kept)},
    }


def curate(
    work: Path, name: str, inputs: list[Path], out: Path, against: list[str], index: bool, thresher: str, timeout: float
) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # a run folder left there would be resumed
    cfg = work / f"{name}.yaml"
    files = sorted(str(f) for folder in inputs for f in folder.glob("part-*.jsonl"))
    cfg.write_text(
        yaml.safe_dump(
            {
                "input": {"paths": files},
                "output": {"path": str(out), "reference_index": index},
                "stages": stages(against),
            },
            sort_keys=False,
        )
    )
    cmd = [*shlex.split(thresher), "curate", str(cfg)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # an embedded local Ray
    print(f"{name}: {shlex.join(cmd)}", flush=True)
    result = {"command": shlex.join(cmd), "config": yaml.safe_load(cfg.read_text())}
    result.update(measure(cmd, work / f"{name}.log", out, timeout, env))
    manifest = out / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        result["counts"] = {k: m["counts"][k] for k in ("input", "output", "rejected")}
        result["removed_by_reference"] = {
            s: v["removed_by_reference"] for s, v in m.get("metrics", {}).items() if "removed_by_reference" in v
        }
        result["placed_by_reference"] = m.get("metrics", {}).get("split", {}).get("placed_by_reference")
        result["phases"] = m.get("timing", {}).get("phases", {})
    return result


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def markdown(r: dict) -> str:
    runs = r["runs"]
    rows = [
        ("release 1 (index written at commit)", runs["release1"]),
        ("release 1, no index", runs["release1_plain"]),
        ("release 2 against release 1", runs["release2"]),
        ("release 2 against release 1 without an index (built on demand)", runs["release2_on_demand"]),
        ("release 1 + 2 together", runs["together"]),
    ]
    lines = [
        "# Incremental curation: a release against the last one",
        "",
        f"`python bench/incremental_bench.py {r['args']}` (thresher {r['thresher_version']}, {os.cpu_count()} "
        "cores, embedded local Ray). Stages: dedup_exact, dedup_fuzzy (threshold 0.8), split; `against` on each "
        "for release 2.",
        "",
        f"Release 1: {r['corpus']['release1']['documents']:,} documents, {r['corpus']['release1']['bytes'] / 1e6:,.1f} "
        f"MB. Release 2: {r['corpus']['release2']['documents']:,} documents, "
        f"{r['corpus']['release2']['bytes'] / 1e6:,.1f} MB, of which {r['corpus']['release2']['exact_copies']:,} exact "
        f"and {r['corpus']['release2']['near_copies']:,} near copies of release-1 documents.",
        "",
        "| run | status | wall s | of which `write files` s | driver peak RSS MB | tree peak PSS MB | input | output | "
        "rejected |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, x in rows:
        c = x.get("counts", {})
        written = x.get("phases", {}).get("write files")
        lines.append(
            f"| {label} | {x['status']} | {x['wall_s']:.1f} | {'-' if written is None else written} | "
            f"{x['driver_peak_rss_mb']:,} | "
            f"{x['tree_peak_pss_mb']:,} | {c.get('input', '-')} | {c.get('output', '-')} | "
            f"{c.get('rejected', '-')} |"
        )
    index = r["index"]
    lines += [
        "",
        f"Release 1's data: {index['data_bytes'] / 1e6:,.1f} MB; its reference index: "
        f"{index['total_bytes'] / 1e6:,.2f} MB ({100 * index['total_bytes'] / max(1, index['data_bytes']):.1f} % "
        f"of the data, {100 * index['total_bytes'] / r['corpus']['release1']['bytes']:.1f} % of its input's "
        f"{r['corpus']['release1']['bytes'] / 1e6:,.1f} MB), "
        f"{index['total_bytes'] / max(1, runs['release1'].get('counts', {}).get('output', 1)):,.0f} bytes per "
        "kept record; per stage: " + ", ".join(f"{s} {b / 1e6:,.2f} MB" for s, b in index["by_stage"].items()) + ".",
        "",
        f"Release 2 removed per reference: `{json.dumps(runs['release2'].get('removed_by_reference'))}`; "
        f"split placed per reference: `{json.dumps(runs['release2'].get('placed_by_reference'))}`.",
        "",
    ]
    r1, plain, r2, demand = runs["release1"], runs["release1_plain"], runs["release2"], runs["release2_on_demand"]
    if all(x["status"] == "ok" for x in (r1, plain, r2, demand)):
        written = r1["phases"].get("write files", 0) - plain["phases"].get("write files", 0)
        lines += [
            f"The index at commit: {r1['wall_s'] - plain['wall_s']:+.1f} s of wall ({written:+.1f} s in `write "
            f"files`), tree peak PSS {r1['tree_peak_pss_mb']:,} against {plain['tree_peak_pss_mb']:,} MB without "
            f"it. Built on demand for a run without one (once, from its data files): release 2 took "
            f"{demand['wall_s']:.1f} s against {r2['wall_s']:.1f} s with the index there.",
            "",
            "Release 2's phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r2["phases"].items() if v >= 0.05) + ".",
            "",
        ]
    return "\n".join(lines)


NOTES = "## Notes (by hand)"


def with_notes(text: str, previous: Path) -> str:
    """``text`` followed by the hand-written notes section of ``previous`` (the results it replaces), if any."""
    old = previous.read_text() if previous.exists() else ""
    return text + old[old.index(NOTES) :] if NOTES in old else text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=1000, help="release 1's size")
    ap.add_argument("--new-mb", type=float, default=100, help="release 2's new documents")
    ap.add_argument(
        "--copies", type=int, default=2000, help="release-1 documents copied (exactly and near) into release 2"
    )
    ap.add_argument("--shard-mb", type=float, default=64)
    ap.add_argument("--work", type=Path, default=Path("/tmp/incremental-bench"))
    ap.add_argument("--thresher", default=f"{sys.executable} -m thresher")
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument(
        "--results",
        type=Path,
        default=ROOT / "bench" / "results" / "incremental",
        help="writes <results>.json and <results>.md",
    )
    ap.add_argument("--keep", action="store_true", help="keep the corpora and run folders")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    corpus = make_releases(a.work, a.mb, a.new_mb, a.copies, a.shard_mb)
    r1_in, r2_in = a.work / "release1-input", a.work / "release2-input"
    release1 = a.work / "release1"
    runs = {"release1": curate(a.work, "release1", [r1_in], release1, [], True, a.thresher, a.timeout)}
    runs["release1_plain"] = curate(
        a.work, "release1_plain", [r1_in], a.work / "release1-plain", [], False, a.thresher, a.timeout
    )
    runs["release2"] = curate(
        a.work, "release2", [r2_in], a.work / "release2", [str(release1)], False, a.thresher, a.timeout
    )
    runs["release2_on_demand"] = curate(
        a.work,
        "release2_on_demand",
        [r2_in],
        a.work / "release2-on-demand",
        [str(a.work / "release1-plain")],
        False,
        a.thresher,
        a.timeout,
    )
    runs["together"] = curate(a.work, "together", [r1_in, r2_in], a.work / "together", [], False, a.thresher, a.timeout)
    by_stage = (
        {p.name: folder_bytes(p) for p in sorted((release1 / "index").iterdir())}
        if (release1 / "index").exists()
        else {}
    )
    result = {
        "args": " ".join(sys.argv[1:]),
        "thresher_version": version(),
        "cores": os.cpu_count(),
        "corpus": corpus,
        "runs": runs,
        "index": {
            "data_bytes": folder_bytes(release1 / "data"),
            "total_bytes": sum(by_stage.values()),
            "by_stage": by_stage,
            "files": count_files(release1 / "index")[0],
        },
    }
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = a.results.with_suffix(".md")
    md.write_text(with_notes(markdown(result), md))
    print(markdown(result))
    if not a.keep:
        shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
