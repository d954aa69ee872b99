"""Where a map task's CPU goes: the pipeline benchmark's chain on shards of its corpus, in this process under
cProfile (no Ray cluster), grouped by stage and by the functions that spend the time.

The chain is the one ``thresher curate`` runs in a read task of ``bench/pipeline_bench.py``'s config: the reader,
normalize, pii, langid, quality, then the map side of dedup_exact and dedup_fuzzy (their key columns), in batches of
``execution.batch_size`` records, with the conversions a map-phase task makes around the stages (a reader's Arrow
table to pandas before the first stage, the last stage's frames to Arrow: ``segments.to_pandas``, ``to_arrow``). It runs once unprofiled (models load,
numba kernels compile) and once under cProfile. The per-stage seconds come from the same ``_seconds.<stage>`` columns
the manifest's timing sums.

    python bench/pipeline_profile.py            # needs the corpus bench/pipeline_bench.py made (or makes it)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shlex
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from pipeline_bench import STAGES, corpus  # noqa: E402

from thresher.core.storage import Storage  # noqa: E402
from thresher.curate.config import CurateConfig  # noqa: E402
from thresher.curate.execution.segments import run_map_stages, to_arrow, to_pandas  # noqa: E402
from thresher.curate.plan import preflight  # noqa: E402
from thresher.curate.readers import LostBytes, read_task  # noqa: E402
from thresher.curate.stage import KEY, REJECT_STAGE, side_column  # noqa: E402

# a function's file and name -> what it belongs to, first match wins (the profile's own grouping; built-in
# functions have no file, their name says what they are)
GROUPS = [
    ("fasttext", "fastText predict (langid)"),
    ("re.Pattern", "regex (stdlib re)"),
    ("zlib", "gzip (reader)"),
    ("of 'str' objects", "str methods"),
    ("of 'bytes' objects", "bytes methods"),
    ("ftfy", "ftfy (normalize)"),
    ("phonenumbers", "libphonenumber (pii)"),
    ("/re/", "regex (stdlib re)"),
    ("regex/", "regex (regex module)"),
    ("numba", "numba dispatch"),
    ("filters/text_kernels", "quality kernels (numba)"),
    ("filters/", "quality filters (Python)"),
    ("stages/normalize", "normalize (Python)"),
    ("stages/pii", "pii (Python)"),
    ("stages/langid", "langid (Python)"),
    ("dedup/", "dedup keys"),
    ("/pandas/", "pandas"),
    ("/pyarrow/", "pyarrow"),
    ("/numpy/", "numpy"),
    ("readers/", "reader"),
    ("unicodedata", "unicodedata"),
    ("curate/stage.py", "stage plumbing"),
]


def chain(shards: list[Path], work: Path):
    """The read tasks of ``shards`` and a function running the chain over them; returns the per-stage seconds."""
    cfg = CurateConfig.model_validate(
        {"input": {"paths": [str(s) for s in shards]}, "output": {"path": str(work / "profile-out")}, "stages": STAGES}
    )
    storage = Storage.from_options(cfg.storage)
    tasks, spec, segs = preflight(cfg, storage)
    stages = segs[0].map_stages
    keyed = segs[1].global_stages
    for stage in stages:
        stage.setup()
    batch_rows = [s.batch_size or cfg.execution.batch_size for s in stages]

    def run() -> dict[str, float]:
        seconds: dict[str, float] = {}
        rows = 0
        for task in tasks:
            for table in read_task(task, spec, LostBytes()):
                table = table.append_column(KEY, pa.array(range(rows, rows + table.num_rows), pa.int64()))
                rows += table.num_rows
                batch = to_pandas(table)  # what a map-phase task hands its first stage
                for part in run_map_stages(batch, stages, batch_rows):
                    for stage in stages:
                        seconds[stage.name] = seconds.get(stage.name, 0) + float(
                            part[side_column("seconds", stage.name)].sum()
                        )
                    out = to_arrow(part)  # what it makes of the last stage's frame
                    live = out.filter(pc.is_null(out[REJECT_STAGE])) if REJECT_STAGE in out.column_names else out
                    for stage in keyed:
                        started = time.perf_counter()
                        stage.keys(live)
                        seconds[stage.name + " keys"] = (
                            seconds.get(stage.name + " keys", 0) + time.perf_counter() - started
                        )
        seconds["records"] = rows
        return seconds

    return run


def group_of(filename: str) -> str:
    return next((name for needle, name in GROUPS if needle in filename), "other")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=2, help="how many of the corpus's shards to profile")
    ap.add_argument("--work", type=Path, default=Path("/tmp/thresher-pipeline-bench"))
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    shards = sorted(corpus(a.work, 200, 16).glob("*.jsonl.gz"))[: a.shards]
    run = chain(shards, a.work)
    run()  # models loaded, kernels compiled and cached
    profile = cProfile.Profile()
    started = time.process_time()
    profile.enable()
    seconds = run()
    profile.disable()
    cpu = time.process_time() - started
    stats = pstats.Stats(profile)
    groups: dict[str, float] = {}
    top = []
    for (filename, line, name), (_, calls, tottime, _cumtime, _) in stats.stats.items():
        group = group_of(f"{filename}:{name}")
        groups[group] = groups.get(group, 0) + tottime
        top.append((tottime, calls, f"{Path(filename).name}:{line}({name})", group))
    top.sort(reverse=True)
    records = seconds.pop("records")
    command = "python bench/pipeline_profile.py " + shlex.join(sys.argv[1:])
    lines = [
        "# Where a map task's CPU goes: the pipeline chain under cProfile",
        "",
        f"Command: `{command.strip()}`. {len(shards)} shards of `bench/pipeline_bench.py`'s corpus, {records:,} "
        f"records, in one process without a Ray cluster (the chain of one read task: reader, {', '.join(seconds)}, "
        "with Ray Data's conversions around the map stages), the second of two runs (the first loads the models and "
        "compiles the kernels). Process CPU under the profiler: "
        f"{cpu:.2f} s ({records / cpu:,.0f} records/s; cProfile's own overhead included, so the shares matter more "
        "than the totals).",
        "",
        "## Per stage (the `_seconds.<stage>` columns, profiled run)",
        "",
        "| stage | seconds | share |",
        "|---|---:|---:|",
    ]
    total = sum(seconds.values())
    lines += [f"| {s} | {v:.2f} | {v / total:.0%} |" for s, v in seconds.items()]
    lines += ["", "## Own time by what the function belongs to", "", "| group | seconds | share |", "|---|---:|---:|"]
    own = sum(groups.values())
    lines += [f"| {g} | {v:.2f} | {v / own:.0%} |" for g, v in sorted(groups.items(), key=lambda kv: -kv[1])]
    lines += [
        "",
        "## The 25 functions with the most own time",
        "",
        "| function | group | calls | own s |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| `{f}` | {g} | {c:,} | {t:.2f} |" for t, c, f, g in top[:25]]
    a.results.mkdir(parents=True, exist_ok=True)
    (a.results / "pipeline-profile.md").write_text("\n".join(lines) + "\n")
    (a.results / "pipeline-profile.json").write_text(
        json.dumps(
            {
                "command": command.strip(),
                "records": records,
                "cpu_s": cpu,
                "stages": seconds,
                "groups": groups,
                "top": [{"function": f, "group": g, "calls": c, "own_s": t} for t, c, f, g in top[:100]],
            },
            indent=1,
        )
    )
    print(f"wrote {a.results / 'pipeline-profile.md'}")


if __name__ == "__main__":
    main()
