"""Dedup benchmark: signature throughput against datasketch, accuracy on planted near duplicates and on the
Clough-Stevenson corpus, and end-to-end fuzzy dedup against DataTrove's MinHash pipeline and rensa's MinHash LSH
(bench/dedup_rensa.py) on generated corpora.

    python bench/dedup_bench.py --sizes 200 1000            # everything, then bench/results/dedup.md
    python bench/dedup_bench.py --only datatrove --sizes 1000  # one part (results kept under --work)
    python bench/dedup_bench.py --only rensa --sizes 200       # rensa, from its venv (--rensa-python)

Each measurement is saved as JSON under ``--work`` and reused by later invocations (``--fresh`` measures
again), so the long DataTrove runs can go in the background; the results file is written from every
measurement present. End-to-end runs are subprocesses whose whole process tree (driver, Ray's processes and
workers, DataTrove's worker pool) is sampled with psutil every 0.25 s: peak memory is the largest sum of RSS
over the tree at one sample, CPU time the sum over processes of their last sampled user + system time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from corpus import SHARED, sample_tree  # noqa: E402
from dedup_corpus import generate  # noqa: E402

from thresher.curate.dedup.minhash import jaccard, jaccard_estimate, shingle_set, signatures  # noqa: E402
from thresher.curate.dedup.removal import KEPT_DETAIL  # noqa: E402
from thresher.curate.stage import StageContext  # noqa: E402
from thresher.curate.stages.dedup_fuzzy import DedupFuzzy, DedupFuzzyConfig  # noqa: E402

THRESHOLD = 0.8
DEFAULT = DedupFuzzy(DedupFuzzyConfig(threshold=THRESHOLD), StageContext())  # the stage's default bands x rows
PARTS = ("signatures", "accuracy", "clough", "thresher", "datatrove", "rensa")


def measure(cmd: list[str], log: Path, env: dict | None = None, out: Path | None = None) -> dict:
    """Run ``cmd`` twice: unobserved, for the wall time a user sees, then sampling its process tree, for peak memory
    and CPU seconds (that run's wall time is kept as ``sampled_wall_s``: the sampler reads /proc for every process of
    the tree 4 times a second, CPU the run lacks on a small machine, the more the more processes it has).

    Memory is the largest sum over the tree at one sample of each process's PSS (proportional set size: a page
    shared by k processes, such as Ray's object store or a forked pool's pages, counts 1/k in each), so it is
    the tree's real footprint; the sum of RSS (which counts shared pages once per process) is kept too. Each run
    starts after the data earlier runs wrote reached the disk, and without ``out`` (removed first)."""
    wall, sampled = _run(cmd, log, env, out, None), {}
    sampled_wall = _run(cmd, log, env, out, sampled)
    return {"wall_s": round(wall, 2), "sampled_wall_s": round(sampled_wall, 2), **sampled}


def _run(cmd: list[str], log: Path, env: dict | None, out: Path | None, sampled: dict | None) -> float:
    """One run of ``cmd``: its wall seconds; with ``sampled`` (a dict), its peak memory and CPU seconds go there."""
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    os.sync()  # the files earlier runs wrote go to disk now, not while this one runs
    time.sleep(1)
    peak_pss = peak_rss = 0
    cpu = {}
    t = time.perf_counter()
    with open(log, "wb") as output:
        proc = subprocess.Popen(
            cmd, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})}
        )
        if sampled is None:
            proc.wait()
        else:
            root = psutil.Process(proc.pid)
            while proc.poll() is None:
                sample = sample_tree(root, cpu)
                if sample is None:
                    break
                peak_pss, peak_rss = max(peak_pss, sample[0]), max(peak_rss, sample[1])
                time.sleep(0.25)
            proc.wait()
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{cmd} failed ({proc.returncode}); see {log}")
    if sampled is not None:
        sampled.update(
            peak_pss_mb=round(peak_pss / 2**20),
            peak_rss_sum_mb=round(peak_rss / 2**20),
            cpu_s=round(sum(cpu.values()), 1),
        )
    return wall


# -- signatures ------------------------------------------------------------------------------------


def signature_throughput(corpus: Path, mb: float) -> dict:
    """MB/s of one core (process CPU time) on the first ``mb`` MB of the end-to-end corpus: our kernel on all of
    it and on a 10% sample, datasketch on the sample (with our shingling in Python, and on prepared shingles);
    best of 3 (ours) and of 2 (datasketch)."""
    from datasketch import MinHash

    docs, size = [], 0
    for line in (corpus / "part-00000.jsonl").read_bytes().splitlines():
        docs.append(orjson.loads(line)["text"])
        size += len(docs[-1].encode())
        if size > mb * 1e6:
            break
    signatures(docs[:10])  # JIT compile (cached on disk)
    texts = pa.array(docs, pa.large_string())

    def ours(batch, megabytes: float) -> float:
        t = time.process_time()
        signatures(batch, num_perm=128, ngram=5)
        return megabytes / (time.process_time() - t)

    runs = [ours(texts, size / 1e6) for _ in range(3)]
    sample = docs[::10]
    sample_mb = sum(len(d.encode()) for d in sample) / 1e6
    ours_sample = max(ours(pa.array(sample, pa.large_string()), sample_mb) for _ in range(3))

    def datasketch(shingled) -> float:
        t = time.process_time()
        for shingles in shingled:
            MinHash(num_perm=128).update_batch(list(shingles() if callable(shingles) else shingles))
        return sample_mb / (time.process_time() - t)

    theirs_with_shingling = max(datasketch([lambda d=d: shingle_set(d, 5) for d in sample]) for _ in range(2))
    prepared = [list(shingle_set(d, 5)) for d in sample]
    theirs_hashing_only = max(datasketch(prepared) for _ in range(2))
    return {
        "mb": round(size / 1e6, 1),
        "docs": len(docs),
        "ours_mb_s": round(max(runs), 1),
        "ours_runs": [round(x, 1) for x in runs],
        "ours_sample_mb_s": round(ours_sample, 1),
        "datasketch_mb_s": round(theirs_with_shingling, 2),
        "datasketch_hashing_only_mb_s": round(theirs_hashing_only, 2),
        "datasketch_sample_mb": round(sample_mb, 2),
        "cpu": cpu_model(),
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            flags = Path("/proc/cpuinfo").read_text()
            return line.split(":", 1)[1].strip() + (
                " (AVX-512)" if "avx512f" in flags else " (AVX2)" if "avx2" in flags else ""
            )
    return "unknown"


# -- accuracy --------------------------------------------------------------------------------------


def load_truth(corpus: Path) -> list[dict]:
    return [orjson.loads(line) for line in (corpus / "truth.jsonl").read_bytes().splitlines()]


def texts_of(corpus: Path, ids: set[str]) -> dict[str, str]:
    out = {}
    for f in sorted(corpus.glob("part-*.jsonl")):
        for line in f.read_bytes().splitlines():
            r = orjson.loads(line)
            if r["id"] in ids:
                out[r["id"]] = r["text"]
    return out


def accuracy(corpus: Path, removed: dict[str, str]) -> dict:
    """``removed``: removed id -> id of the kept record of its cluster.

    recall: planted copies with true J >= 0.85 whose pair (copy, source) ended in one cluster (not both kept);
    far: removed records whose kept record has true J < 0.65 to them."""
    truth = load_truth(corpus)
    high = [t for t in truth if t["jaccard"] >= 0.85]
    collapsed = sum(t["id"] in removed or t["source"] in removed for t in high)
    texts = texts_of(corpus, set(removed) | set(removed.values()))
    sims = [jaccard(shingle_set(texts[r], 5), shingle_set(texts[k], 5)) for r, k in removed.items()]
    far = sum(s < 0.65 for s in sims)
    return {
        "planted_high": len(high),
        "recall_high": round(collapsed / max(1, len(high)), 4),
        "removed": len(removed),
        "far": far,
        "far_rate": round(far / max(1, len(removed)), 4),
        "planted": len(truth),
    }


def removed_of(out: Path) -> dict[str, str]:
    """Removed id -> kept id of its cluster, from a thresher run's rejects."""
    return {
        r["id"]: r["detail"].removeprefix(KEPT_DETAIL)
        for r in pq.read_table(out / "rejects", columns=["id", "detail"]).to_pylist()
    }


def planted_accuracy(work: Path) -> dict:
    """Accuracy of ``thresher curate`` (dedup_fuzzy at threshold 0.8) on a 20 MB planted corpus for each
    ``verify`` mode, and the default's kept ids with 1 and 2 CPUs."""
    corpus = work / "planted20"
    if not (corpus / "truth.jsonl").exists():
        generate(20, corpus, seed=1, shard_mb=4)
    result, kept = {}, {}
    for verify, cpus in (("signatures", 2), ("signatures", 1), ("none", 2), ("exact", 2)):
        out = work / f"planted20-{verify}-{cpus}"
        r = run_thresher(corpus, out, cpus, work / f"planted20-{verify}-{cpus}.log", options={"verify": verify})
        kept[verify, cpus] = set(pq.read_table(out / "data", columns=["id"])["id"].to_pylist())
        if cpus == 2:
            result[verify] = {**accuracy(corpus, removed_of(out)), "wall_s": r["wall_s"]}
        shutil.rmtree(out)
    result["identical_1_vs_2_cpus"] = kept["signatures", 1] == kept["signatures", 2]
    return result


def clough_stevenson(work: Path) -> dict:
    """Precision and recall of 'near duplicate of its source' (labels light revision and cut-and-paste): of
    ``thresher curate`` with dedup_fuzzy (default options) over the answers and their sources, and of the
    MinHash-estimated Jaccard of each (answer, source) pair for word 5- and 3-grams at several thresholds."""
    rows = list(csv.reader((SHARED / "neardup" / "clough_stevenson.csv").open(encoding="utf-8-sig")))
    actual = [label in ("2", "3") for _, _, label in rows]

    def scores(predicted: list[bool]) -> dict:
        tp = sum(p and a for p, a in zip(predicted, actual))
        fp = sum(p and not a for p, a in zip(predicted, actual))
        fn = sum(a and not p for p, a in zip(predicted, actual))
        return {
            "precision": round(tp / max(1, tp + fp), 3),
            "recall": round(tp / max(1, tp + fn), 3),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }

    sources = {text: f"s{i}" for i, text in enumerate(dict.fromkeys(source for _, source, _ in rows))}
    corpus = work / "clough"
    corpus.mkdir(exist_ok=True)
    records = [{"id": sid, "text": text} for text, sid in sources.items()]
    records += [{"id": f"t{i:02d}", "text": text} for i, (text, _, _) in enumerate(rows)]
    (corpus / "part-00000.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    pipeline = {}
    for threshold in (THRESHOLD, 0.5):
        out = work / f"clough-out-{threshold}"
        run_thresher(corpus, out, 2, work / f"clough-{threshold}.log", None, None, {"threshold": threshold})
        kept_for = removed_of(out)
        pipeline[f"dedup_fuzzy@{threshold}"] = scores(
            [kept_for.get(f"t{i:02d}") == sources[source] for i, (_, source, _) in enumerate(rows)]
        )
        shutil.rmtree(out)
    pairs = {}
    for ngram in (5, 3):
        est = [jaccard_estimate(*signatures([text, source], num_perm=128, ngram=ngram)) for text, source, _ in rows]
        for threshold in (THRESHOLD, 0.5, 0.3, 0.2):
            pairs[f"{ngram}-gram@{threshold}"] = scores([e >= threshold for e in est])
    labels = {label: sum(1 for *_, lab in rows if lab == label) for label in "0123"}
    return {"pairs": len(rows), "labels": labels, "pipeline": pipeline, "by_threshold": pairs}


# -- end to end ------------------------------------------------------------------------------------


# thresher configurations measured end to end: dedup_fuzzy options, extra environment of the run, execution options
VARIANTS = {
    "thresher": ({}, {}, {}),
    "thresher-noverify": ({"verify": "none"}, {}, {}),
    # Ray kills idle workers beyond one per CPU after 1 s, so every Ray Data execution of a multi-step stage
    # starts fresh worker processes (~1 s each here); kept for 60 s they are reused
    "thresher-warm": ({}, {"RAY_idle_worker_killing_time_threshold_ms": "60000"}, {}),
    # the apply phase on fresh worker processes, not on those that made the decisions
    "thresher-fresh": ({}, {}, {"fresh_workers_after_rows": 0}),
}


def run_thresher(
    corpus: Path,
    out: Path,
    cpus: int,
    log: Path,
    bands: int | None = DEFAULT.bands,
    rows: int | None = DEFAULT.rows,
    options: dict | None = None,
    env: dict | None = None,
    execution: dict | None = None,
) -> dict:
    """``thresher curate`` with only dedup_fuzzy (word 5-grams; ``bands`` x ``rows``, or the stage's choice)."""
    lsh = {"num_perm": max(128, bands * rows), "bands": bands, "rows": rows} if bands else {}
    fuzzy = {"threshold": THRESHOLD, "ngram": 5, **lsh, **(options or {})}
    cfg = out.with_suffix(".yaml")
    cfg.write_text(
        yaml.safe_dump(
            {
                "input": {"paths": [str(p) for p in sorted(corpus.glob("part-*.jsonl"))]},
                "output": {"path": str(out)},
                "stages": [{"dedup_fuzzy": fuzzy}],
                "execution": {"num_cpus": cpus, **(execution or {})},
            }
        )
    )
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **(env or {})}
    result = measure([sys.executable, "-m", "thresher", "curate", str(cfg)], log, env, out)
    manifest = json.loads((out / "manifest.json").read_text())
    result.update(run_s=manifest["seconds"], docs=manifest["counts"]["input"], removed=manifest["counts"]["rejected"])
    return result


def thresher_e2e(corpus: Path, work: Path, mb: int, bands: int, rows: int, variant: str) -> dict:
    out = work / f"{variant}{mb}-out"
    options, env, execution = VARIANTS[variant]
    result = run_thresher(corpus, out, 2, work / f"{variant}{mb}.log", bands, rows, options, env, execution)
    removed = {
        r["id"]: r["detail"].removeprefix(KEPT_DETAIL)
        for r in pq.read_table(out / "rejects", columns=["id", "detail"]).to_pylist()
    }
    result["accuracy"] = accuracy(corpus, removed)
    shutil.rmtree(out)
    return result


def datatrove_e2e(corpus: Path, work: Path, mb: int, bands: int, rows: int, python: str) -> dict:
    out = work / f"datatrove{mb}-out"
    shutil.rmtree(out, ignore_errors=True)
    log = work / f"datatrove{mb}.log"
    result = measure(
        [
            python,
            "bench/dedup_datatrove.py",
            "--input",
            str(corpus),
            "--out",
            str(out),
            "--workers",
            "2",
            "--bands",
            str(bands),
            "--rows",
            str(rows),
        ],
        log,
        out=out,
    )
    steps = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"seconds"')]
    result["steps"] = steps[-1]["seconds"] if steps else {}
    removed_docs = [
        orjson.loads(line) for f in sorted((out / "removed").glob("*.jsonl")) for line in f.read_bytes().splitlines()
    ]
    kept_by_cluster = {}
    for f in sorted((out / "kept").glob("*.jsonl")):
        for line in f.read_bytes().splitlines():
            r = orjson.loads(line)
            cluster = r.get("metadata", {}).get("minhash_cluster_id", -1)
            if cluster != -1:
                kept_by_cluster.setdefault(cluster, r["id"])
    removed = {r["id"]: kept_by_cluster.get(r["metadata"]["minhash_cluster_id"], r["id"]) for r in removed_docs}
    result["docs"] = sum(1 for f in (out / "kept").glob("*.jsonl") for _ in f.open("rb")) + len(removed)
    result["removed"] = len(removed)
    result["accuracy"] = accuracy(corpus, removed)
    shutil.rmtree(out)
    return result


def rensa_e2e(corpus: Path, work: Path, mb: int, bands: int, rows: int, python: str) -> dict:
    """bench/dedup_rensa.py (one process) on the corpus; its removed ids name the kept record that removed them."""
    if not Path(python).exists():
        raise SystemExit(
            f"{python} not found: python3 -m venv /work/peers/rensa && /work/peers/rensa/bin/pip install "
            "'rensa==0.5.*' numpy orjson psutil (or pass --rensa-python)"
        )
    out = work / f"rensa{mb}-out"
    shutil.rmtree(out, ignore_errors=True)
    log = work / f"rensa{mb}.log"
    result = measure(
        [
            python,
            "bench/dedup_rensa.py",
            "--input",
            str(corpus),
            "--out",
            str(out),
            "--threshold",
            str(THRESHOLD),
            "--bands",
            str(bands),
            "--rows",
            str(rows),
        ],
        log,
        out=out,
    )
    summary = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"seconds"')][-1]
    result["steps"] = summary["seconds"]
    result.update({k: summary[k] for k in ("docs", "num_perm", "cut", "candidate_pairs")})
    removed = {r["id"]: r["kept"] for r in map(orjson.loads, (out / "removed.jsonl").read_bytes().splitlines())}
    result["removed"] = len(removed)
    result["accuracy"] = accuracy(corpus, removed)
    result["version"] = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('rensa'))"], capture_output=True, text=True
    ).stdout.strip()
    shutil.rmtree(out)
    return result


def corpus_for(work: Path, mb: int) -> Path:
    corpus = work / f"corpus{mb}"
    if not (corpus / "truth.jsonl").exists():
        shutil.rmtree(corpus, ignore_errors=True)
        generate(mb, corpus, seed=0)
    return corpus


# -- results ---------------------------------------------------------------------------------------


def saved(work: Path, name: str, fresh: bool, compute) -> dict:
    path = work / f"{name}.json"
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    print(f"measuring {name} ...", flush=True)
    value = compute()
    value["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    value["load_average"] = [round(x, 1) for x in os.getloadavg()]
    path.write_text(json.dumps(value, indent=1))
    print(name, json.dumps(value), flush=True)
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 1000], help="end-to-end corpus sizes in MB")
    ap.add_argument("--only", choices=PARTS, nargs="+", default=list(PARTS))
    ap.add_argument("--variants", choices=VARIANTS, nargs="+", default=list(VARIANTS))
    ap.add_argument("--signature-mb", type=float, default=20)
    ap.add_argument("--bands", type=int, default=DEFAULT.bands, help="LSH bands of both systems end to end")
    ap.add_argument("--rows", type=int, default=DEFAULT.rows)
    ap.add_argument(
        "--datatrove-python",
        default="/work/venvs/datatrove/bin/python",
        help="a Python with DataTrove installed (a separate venv: it is not a thresher dependency)",
    )
    ap.add_argument(
        "--rensa-python",
        default="/work/peers/rensa/bin/python",
        help="a Python with rensa installed (a separate venv: it is not a thresher dependency)",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/thresher-dedup-bench"))
    ap.add_argument("--fresh", action="store_true", help="measure again what --work already holds")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/dedup.md")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if "signatures" in a.only:
        saved(a.work, "signatures", a.fresh, lambda: signature_throughput(corpus_for(a.work, 200), a.signature_mb))
    if "clough" in a.only:
        saved(a.work, "clough", a.fresh, lambda: clough_stevenson(a.work))
    if "accuracy" in a.only:
        saved(a.work, "planted20", a.fresh, lambda: planted_accuracy(a.work))
    for mb in a.sizes:
        for variant in a.variants if "thresher" in a.only else ():
            saved(
                a.work,
                f"{variant}{mb}",
                a.fresh,
                lambda: thresher_e2e(corpus_for(a.work, mb), a.work, mb, a.bands, a.rows, variant),
            )
        if "datatrove" in a.only:
            saved(
                a.work,
                f"datatrove{mb}",
                a.fresh,
                lambda: datatrove_e2e(corpus_for(a.work, mb), a.work, mb, a.bands, a.rows, a.datatrove_python),
            )
        if "rensa" in a.only:
            saved(
                a.work,
                f"rensa{mb}",
                a.fresh,
                lambda: rensa_e2e(corpus_for(a.work, mb), a.work, mb, a.bands, a.rows, a.rensa_python),
            )
    from dedup_report import write_results

    a.out.write_text(write_results(a.work, a.sizes, a.bands, a.rows))
    raw = {f.stem: json.loads(f.read_text()) for f in sorted(a.work.glob("*.json"))}
    a.out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print(f"wrote {a.out} and {a.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
