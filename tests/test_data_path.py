"""The data path: records stay where they are, only key rows travel (design.md).

Partitioned paths (``execution.broadcast_limit_rows: 0``) against broadcast ones, the bound on output files,
repeated ids, rows rejected by map stages kept away from global stages, map stages run in one task per read task,
workers retired between the decisions and their application, resume after a kill inside dedup, and driver memory
against the number of read tasks.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import ROOT
from tests.samples import c4_docs
from thresher.curate.config import parse_config
from thresher.curate.runner import run
from thresher.curate.stages.dedup_exact import DedupExact

STAGES = [{"quality": {"presets": ["gopher"]}}, {"dedup_exact": {}}, {"dedup_fuzzy": {"threshold": 0.8}}, {"split": {}}]


def write_corpus(tmp: Path) -> tuple[list[Path], list[dict]]:
    """C4 documents with planted near and exact copies, some very short documents (quality rejects them),
    and ids that repeat on different documents (as when dumps are merged), over three files."""
    rng = random.Random(0)
    docs = [d["text"] for d in c4_docs()]
    records = []
    for i, text in enumerate(docs):
        records.append({"id": f"d{i:03d}", "text": text})
        if i % 3 == 0:
            words = text.split()
            for _ in range(max(1, len(words) // 100)):
                words[rng.randrange(len(words))] = "edited"
            records.append({"id": f"n{i:03d}", "text": " ".join(words)})
        if i % 10 == 0:
            records.append({"id": f"e{i:03d}", "text": text})
        if i % 25 == 0:
            records.append({"id": f"d{i:03d}", "text": docs[(i + 7) % len(docs)] + " (another record, same id)"})
        if i % 20 == 0:
            records.append({"id": f"s{i:03d}", "text": "too short"})
    rng.shuffle(records)
    paths = []
    for k in range(3):
        path = tmp / f"part-{k}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records[k::3]))
        paths.append(path)
    return paths, records


def config(paths, out, block_bytes=64 << 10, **execution) -> dict:
    return {
        "input": {"paths": [str(p) for p in paths], "block_bytes": block_bytes},
        "output": {"path": str(out)},
        "stages": STAGES,
        **({"execution": execution} if execution else {}),
    }


def rows(out: Path, sub: str) -> list[dict]:
    return [r for f in sorted((out / sub).rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("datapath")
    paths, records = write_corpus(tmp)
    return tmp, paths, records


@pytest.fixture(scope="module")
def broadcast_run(ray_local, corpus):
    tmp, paths, _ = corpus
    return run(parse_config(config(paths, tmp / "broadcast")))


def test_partitioned_paths_give_the_broadcast_paths_records_in_few_files(broadcast_run, corpus):
    tmp, paths, records = corpus
    target_mb = 1
    cfg = config(paths, tmp / "partitioned", block_bytes=16 << 10, broadcast_limit_rows=0)
    cfg["output"]["target_file_mb"] = target_mb
    cfg["stages"] = [
        s if "dedup_fuzzy" not in s else {"dedup_fuzzy": {**s["dedup_fuzzy"], "partitions": 5}} for s in STAGES
    ]  # another shuffle partition count
    partitioned = run(parse_config(cfg))
    assert partitioned["resumed"]["read_tasks"] > 3 * broadcast_run["resumed"]["read_tasks"]
    assert partitioned["digests"] == broadcast_run["digests"]
    assert partitioned["counts"] == broadcast_run["counts"]
    for sub in ("data/train", "data/validation", "data/test", "rejects"):
        a = sorted((r["id"], r["text"]) for r in rows(tmp / "broadcast", sub))
        b = sorted((r["id"], r["text"]) for r in rows(tmp / "partitioned", sub))
        assert a == b and a, sub
    assert {r["reason"] for r in rows(tmp / "partitioned", "rejects")} >= {"exact_duplicate", "near_duplicate"}
    # file bound: about ceil(bytes / target) per destination, never one per read task
    input_mb = sum(p.stat().st_size for p in paths) / (1 << 20)
    for dest in ("data/train", "data/validation", "data/test", "rejects"):
        files = list((tmp / "partitioned" / dest).glob("*.parquet"))
        assert 1 <= len(files) <= math.ceil(input_mb / target_mb) + 1, (dest, len(files))
    assert len(broadcast_run["files"]) == 4  # one file per split and rejects at the default 256 MB


def test_dedup_decided_in_one_task_gives_the_partitioned_paths_records(corpus, ray_local):
    """Dedup stages alone decide in one task on the key rows held in that process (``GlobalStage.decides_locally``):
    the same records, rejects (repeated ids rejected too) and per-stage counts as the partitioned paths."""
    tmp, paths, _ = corpus
    outs = {}
    for name, execution in (("local", {}), ("shuffled", {"broadcast_limit_rows": 0})):
        cfg = config(paths, tmp / f"dedup-{name}", **execution)
        cfg["stages"] = [s for s in STAGES if "split" not in s]
        cfg["input"]["unique_ids"] = "reject"
        outs[name] = run(parse_config(cfg))
    local, shuffled = outs["local"], outs["shuffled"]
    assert local["digests"] == shuffled["digests"] and local["counts"] == shuffled["counts"]
    assert local["metrics"] == shuffled["metrics"]
    by_stage = local["counts"]["by_stage"]
    assert all(by_stage[s]["rejected"] > 0 for s in ("unique_ids", "dedup_exact", "dedup_fuzzy")), by_stage
    for sub in ("data", "rejects"):
        assert sorted(map(str, rows(tmp / "dedup-local", sub))) == sorted(map(str, rows(tmp / "dedup-shuffled", sub)))


def test_workers_retired_after_the_decisions_leave_the_output_unchanged(broadcast_run, corpus, ray_local, monkeypatch):
    """Past ``execution.fresh_workers_after_rows`` key rows the decisions' workers end and the apply phase starts
    fresh ones."""
    import ray

    from thresher.runtime import retire_workers

    @ray.remote(num_cpus=0)
    class Arrivals:
        def __init__(self):
            self.pids = set()

        def arrive(self, pid: int) -> int:
            self.pids.add(pid)
            return len(self.pids)

    @ray.remote(num_cpus=1)
    def worker_pid(arrivals) -> int:
        """Waits (up to 60 s) until a task in another worker process has arrived: two at once, one per worker
        (a sleep let one worker run both when a second one started slowly)."""
        deadline = time.monotonic() + 60
        while ray.get(arrivals.arrive.remote(os.getpid())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        return os.getpid()

    retired = []

    def retire():
        arrivals = Arrivals.remote()
        retired.append(set(ray.get([worker_pid.remote(arrivals) for _ in range(2)])))
        ray.kill(arrivals)
        retire_workers()

    monkeypatch.setattr("thresher.curate.apply.retire_workers", retire)
    tmp, paths, _ = corpus
    manifest = run(parse_config(config(paths, tmp / "retired", fresh_workers_after_rows=0)))
    assert retired and len(retired[0]) == 2
    for pid in retired[0]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert manifest["digests"] == broadcast_run["digests"] and manifest["counts"] == broadcast_run["counts"]


def test_repeated_ids_lose_nothing_and_can_be_rejected(broadcast_run, corpus, ray_local):
    tmp, paths, records = corpus
    out = tmp / "broadcast"
    written = Counter((r["id"], r["text"]) for sub in ("data", "rejects") for r in rows(out, sub))
    assert written == Counter((r["id"], r["text"]) for r in records)  # every record, exactly once
    # counted before the first global stage: among the records the map stages kept
    early = Counter((r["id"], r["text"]) for r in rows(out, "rejects") if r["stage"] == "quality")
    reached = Counter((r["id"], r["text"]) for r in records) - early
    repeated = sum(n - 1 for n in Counter(rid for rid, _ in reached.elements()).values())
    assert repeated > 0 and broadcast_run["metrics"]["unique_ids"]["repeated"] == repeated

    cfg = config(paths, tmp / "unique")
    cfg["input"]["unique_ids"] = "reject"
    unique = run(parse_config(cfg))
    dropped = [r for r in rows(tmp / "unique", "rejects") if r["reason"] == "duplicate_id"]
    assert len(dropped) == unique["counts"]["by_stage"]["unique_ids"]["rejected"]
    kept = [r["id"] for r in rows(tmp / "unique", "data")]
    assert len(kept) == len(set(kept))
    # the rejected occurrence is the later one in input order: the first file's records come first
    first_seen = {}
    for i, path in enumerate(paths):
        for line in path.read_text().splitlines():
            first_seen.setdefault(json.loads(line)["id"], (i, json.loads(line)["text"]))
    assert all(first_seen[r["id"]][1] != r["text"] for r in dropped)


def test_rows_rejected_by_map_stages_never_reach_a_global_stage(ray_local, corpus, tmp_path, monkeypatch):
    """The key rows dedup_exact decides on are exactly the records quality kept (observed, not assumed: on the
    Ray path, where ``decide`` runs in this process; the one-task path reads the same staged key files)."""
    _, paths, records = corpus
    seen = []
    decide = DedupExact.decide

    def spy(self, ds):
        seen.extend(ds.select_columns(["id", "_reject_stage"]).to_table().to_pylist())
        return decide(self, ds)

    monkeypatch.setattr(DedupExact, "decide", spy)
    manifest = run(parse_config(config(paths, tmp_path / "out", broadcast_limit_rows=0)))
    unique = {i for i, n in Counter(r["id"] for r in records).items() if n == 1}
    short = {r["id"] for r in rows(tmp_path / "out", "rejects") if r["stage"] == "quality"} & unique
    assert short and not short & {r["id"] for r in seen}
    assert all(r["_reject_stage"] is None for r in seen)
    assert len(seen) == manifest["counts"]["by_stage"]["quality"]["out"]


def test_map_stages_run_in_one_task_per_read_task(ray_local):
    """The map stages are fused into the source's tasks without bundling the source's input rows (read tasks): 8 read
    tasks run as 8 Ray tasks. A Ray Data ``batch_size`` on a map stage would put them all into one task. A stage gets
    the frame the stage before it returned, not converted to Arrow and back (the text normalize set is still an
    ``object`` column, not Arrow-backed strings)."""
    import pandas as pd
    import ray.data

    from testkit.batches import TextDtype
    from thresher.curate.execution.segments import map_stages
    from thresher.curate.stage import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, StageConfig, StageContext
    from thresher.curate.stages.normalize import Normalize, NormalizeConfig

    def read(batch):
        (task,) = batch["task"]
        yield pd.DataFrame(
            {
                "id": [f"{task}-{i}" for i in range(3)],
                "text": ["Some  text.\u0007"] * 3,
                "ray_task": [ray.get_runtime_context().get_task_id()] * 3,
                **{c: [None] * 3 for c in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)},
            }
        )

    source = ray.data.from_items([{"task": t} for t in range(8)], override_num_blocks=8)
    ds, pool = map_stages(
        source.map_batches(read, batch_size=1, batch_format="pandas"),
        [Normalize(NormalizeConfig(), StageContext()), TextDtype(StageConfig(), StageContext())],
        batch_size=1024,
    )
    out = ds.to_pandas()
    assert pool == 0 and len(out) == 24 and set(out["text"]) == {"Some text."}
    assert set(out["text_dtype"]) == {"object"}
    assert out.groupby("ray_task")["id"].apply(lambda ids: len({i.split("-")[0] for i in ids})).max() == 1
    assert out["ray_task"].nunique() == 8


def test_an_actor_pool_starts_no_more_actors_than_it_has_blocks(ray_local):
    """A stateful stage's pool holds one actor per CPU, but no more than the blocks it gets: one read task on the
    2-CPU Ray starts one actor (a second would load its model for nothing), four read tasks start two."""
    import pandas as pd
    import ray.data

    from testkit.batches import TextDtype, batch
    from thresher.curate.execution.segments import map_stages
    from thresher.curate.stage import StageConfig, StageContext

    class Pid(TextDtype):
        name, stateful = "test_pid", True

        def process(self, frame):
            frame["pid"] = os.getpid()
            return frame

    for blocks, actors in ((1, 1), (4, 2)):
        source = ray.data.from_items([{"task": t} for t in range(blocks)], override_num_blocks=blocks)
        ds, pool = map_stages(
            source.map_batches(lambda b: batch(["a", "b"]), batch_size=1, batch_format="pandas"),
            [Pid(StageConfig(), StageContext())],
            batch_size=1024,
            blocks=blocks,
        )
        out: pd.DataFrame = ds.to_pandas()
        assert pool == actors and len(out) == 2 * blocks and out["pid"].nunique() <= actors


def _peak_rss(cmd: list[str], until=None) -> tuple[int, subprocess.Popen]:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    peak, me = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, me.memory_info().rss)
        except psutil.Error:
            pass
        if until is not None and until():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.05)
    return peak, proc


def test_resume_after_a_kill_inside_dedup_reuses_the_staged_records(ray_local, corpus, tmp_path):
    _, paths, _ = corpus
    clean = run(parse_config(config(paths, tmp_path / "clean", block_bytes=32 << 10)))
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config(paths, out, block_bytes=32 << 10, num_cpus=1)))
    tasks = clean["resumed"]["read_tasks"]

    def in_global_stages() -> bool:  # every read task staged: the driver is deciding on key rows
        progress = out / "_progress"
        return (
            len(list(progress.glob("read-*.json"))) == tasks
            and len(list(progress.glob("write-s0-*.json"))) >= tasks
            and (out / "_staging" / "keys").exists()
        )

    _, proc = _peak_rss([sys.executable, "-m", "thresher", "curate", str(cfg)], until=in_global_stages)
    assert proc.returncode == -signal.SIGKILL and not (out / "manifest.json").exists()
    resumed = run(parse_config(config(paths, out, block_bytes=32 << 10)))
    assert resumed["resumed"] == {"reused_read_tasks": tasks, "read_tasks": tasks}
    assert resumed["digests"] == clean["digests"] and resumed["counts"] == clean["counts"]
    assert not (out / "_staging").exists() and not (out / "_progress").exists()


@pytest.mark.slow  # 10 s or more: not in the fast subset
def test_driver_memory_does_not_grow_with_read_tasks(corpus, tmp_path):
    """The same corpus read as ~30 and ~3,000 read tasks: the driver's peak RSS stays within 1.3x."""
    _, paths, _ = corpus
    size = sum(p.stat().st_size for p in paths)
    peaks = {}
    for tasks in (30, 3000):
        cfg = tmp_path / f"{tasks}.yaml"
        body = config(paths, tmp_path / f"out{tasks}", block_bytes=max(1, size // tasks), num_cpus=2)
        body["stages"] = [{"dedup_exact": {}}]
        cfg.write_text(yaml.safe_dump(body))
        peaks[tasks], proc = _peak_rss([sys.executable, "-m", "thresher", "curate", str(cfg)])
        assert proc.returncode == 0
        manifest = json.loads((tmp_path / f"out{tasks}" / "manifest.json").read_text())
        assert manifest["resumed"]["read_tasks"] >= tasks * 0.9
        assert len(manifest["files"]) <= 2  # data and rejects, one file each
    assert peaks[3000] <= 1.3 * peaks[30], peaks


def test_compacted_row_groups_do_not_depend_on_how_parts_were_cut(tmp_path, monkeypatch):
    """A final file's row groups close where the rows reach ``ROW_GROUP_BYTES`` (or ``ROW_GROUP_ROWS``): the
    same rows staged as 3 parts or as 11 give the same file, and no row group holds more than the bound (one
    oversized row alone excepted)."""
    import numpy as np
    import pyarrow as pa

    from thresher.core.storage import Storage
    from thresher.curate import writer
    from thresher.curate.run_folder import Part, RunFolder, write_staged
    from thresher.curate.stage import KEY, TASK_SHIFT

    monkeypatch.setattr(writer, "ROW_GROUP_BYTES", 4000)
    rng = random.Random(1)
    texts = ["x" * rng.choice([10, 200, 900, 5000]) for _ in range(300)]
    table = pa.table(
        {
            "id": [f"d{i}" for i in range(300)],
            "text": texts,
            KEY: pa.array((np.arange(300) // 100 << TASK_SHIFT) + np.arange(300), pa.int64()),
        }
    )
    sizes = writer.row_sizes(table.drop_columns([KEY]))
    files = []
    for cuts in ([0, 100, 200, 300], [0, 7, 30, 31, 90, 100, 150, 151, 200, 260, 299, 300]):
        folder = RunFolder(str(tmp_path / f"run{len(cuts)}"), Storage())
        parts = []
        for lo, hi in zip(cuts, cuts[1:]):
            uri = folder.out_part("data", 1, lo // 100, (hi - 1) // 100, lo)
            write_staged(folder.storage, uri, table.slice(lo, hi - lo))
            parts.append(Part(uri, 1, lo // 100, (hi - 1) // 100).__dict__)
        out = writer.compact(
            {"dest": "data", "uri": folder.final_part("data", 0), "lo": 0, "hi": 2, "parts": parts}, folder
        )
        assert out["rows"] == 300
        files.append(pq.ParquetFile(folder.storage.resolve(out["uri"])[1]))
    groups = [[f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)] for f in files]
    assert groups[0] == groups[1] and len(groups[0]) > 5
    assert files[0].read().equals(files[1].read())
    assert files[0].read().column("id").to_pylist() == table["id"].to_pylist()
    start = 0
    for n in groups[0]:
        assert n == 1 or sizes[start : start + n].sum() <= 4000
        start += n
