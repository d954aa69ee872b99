"""Curating a release against earlier ones (``against``): release 2 = new documents, exact and near copies of
release-1 documents and copies among its own; its output holds none of the copies of release 1 and one of each of
its own clusters, with the broadcast and the partitioned paths, from an index written at commit or built on demand.
A reference that is not a finished run is refused before any work."""

from __future__ import annotations

import hashlib
import json
import random
import shutil

import pyarrow.parquet as pq
import pytest

from thresher.cli import main
from thresher.curate.config import parse_config
from thresher.curate.runner import run
from tests.test_dedup import mutate, paragraphs


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(src, out, against=(), index=False, **execution):
    return {"input": {"paths": [str(src)]}, "output": {"path": str(out), "reference_index": index},
            "stages": [{"dedup_exact": {"against": [str(a) for a in against]}},
                       {"dedup_fuzzy": {"threshold": 0.8, "against": [str(a) for a in against]}}],
            "execution": execution}


@pytest.fixture(scope="module")
def releases(ray_local, tmp_path_factory):
    """Release 1 curated; release 2's input and what it should keep."""
    tmp = tmp_path_factory.mktemp("incremental")
    rng = random.Random(0)
    texts = paragraphs(70)
    old, new = texts[:40], texts[40:]
    r1 = write_jsonl(tmp / "r1.jsonl", [{"id": f"a{i:03d}", "text": t} for i, t in enumerate(old)])
    run(parse_config(config(r1, tmp / "release1", index=True)))
    rows = [{"id": f"b{i:03d}", "text": t} for i, t in enumerate(new)]
    copies = [{"id": f"c{i:03d}", "text": old[i]} for i in range(5)]  # exact copies of release 1
    copies += [{"id": f"c{i:03d}", "text": mutate(old[i], 0.01, rng)} for i in range(5, 10)]  # near copies
    own = [{"id": f"d{i:03d}", "text": new[i]} for i in range(3)]  # copies of its own records
    own += [{"id": f"d{i:03d}", "text": mutate(new[i], 0.01, rng)} for i in range(3, 6)]
    src = write_jsonl(tmp / "r2.jsonl", rows + copies + own)
    return tmp, src, {r["id"] for r in rows}, {r["id"] for r in copies}, {r["id"] for r in own}


def check_release(out, manifest, kept_ids, copies, own, release1):
    c = manifest["counts"]
    assert c["input"] == c["output"] + c["rejected"]
    for name, s in c["by_stage"].items():
        assert s["in"] == s["out"] + s["rejected"], name
    kept = {r["id"] for r in pq.read_table(out / "data").to_pylist()}
    assert kept == kept_ids
    rejects = {r["id"]: r for r in pq.read_table(out / "rejects").to_pylist()}
    assert set(rejects) == copies | own
    for i in copies:
        assert rejects[i]["reason"] == "duplicate_of_reference"
        assert rejects[i]["detail"] == f"duplicate of record a{i[1:]} of {release1}", rejects[i]
        assert rejects[i]["dup_cluster"] == f"a{i[1:]}"
    assert {rejects[i]["stage"] for i in copies} == {"dedup_exact", "dedup_fuzzy"}
    assert all(rejects[i]["reason"] in ("exact_duplicate", "near_duplicate") for i in own)
    removed = {s: manifest["metrics"][s]["removed_by_reference"][str(release1)] for s in ("dedup_exact", "dedup_fuzzy")}
    assert removed == {"dedup_exact": 5, "dedup_fuzzy": 5}
    digest = hashlib.sha256((release1 / "manifest.json").read_bytes()).hexdigest()
    assert {(r["stage"], r["manifest_sha256"]) for r in manifest["lineage"]["references"]} == {
        ("dedup_exact", digest), ("dedup_fuzzy", digest)}


def test_release_against_the_last_one(releases):
    tmp, src, kept_ids, copies, own = releases
    release1 = tmp / "release1"
    index = sorted(p.relative_to(release1).parts[:2] for p in (release1 / "index").rglob("part-*.parquet"))
    assert index == [("index", "dedup_exact"), ("index", "dedup_fuzzy")]  # written at commit (output.reference_index)
    out = tmp / "release2"
    manifest = run(parse_config(config(src, out, [release1])))
    check_release(out, manifest, kept_ids, copies, own, release1)
    report = json.loads((out / "report.json").read_text())["duplicates"]
    assert report["removed_by_reference"] == {"dedup_exact": {str(release1): 5}, "dedup_fuzzy": {str(release1): 5}}
    assert not (release1 / "_staging").exists() and (release1 / "data").exists()  # the reference is left as it was


def test_partitioned_paths_and_an_index_built_on_demand(releases):
    tmp, src, kept_ids, copies, own = releases
    release1 = tmp / "release1"
    shutil.rmtree(release1 / "index")
    out = tmp / "release2-partitioned"
    manifest = run(parse_config(config(src, out, [release1], broadcast_limit_rows=0)))
    check_release(out, manifest, kept_ids, copies, own, release1)
    assert sorted(p.name for p in (release1 / "index").rglob("complete.json")) == ["complete.json"] * 2


@pytest.mark.parametrize("broken", ["missing", "unfinished", "gate_failed"])
def test_a_reference_that_is_not_a_finished_run_is_refused(tmp_path, broken, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "x", "text": "one"}])
    ref = tmp_path / "ref"
    if broken != "missing":
        (ref / "_progress").mkdir(parents=True)
    if broken == "gate_failed":
        (ref / "manifest.json").write_text(json.dumps({"status": "gate_failed"}))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"input": {"paths": [str(src)]}, "output": {"path": str(tmp_path / "out")},
                               "stages": [{"dedup_exact": {"against": [str(ref)]}}]}))
    assert main(["curate", str(cfg)]) == 2
    assert "stages.0.dedup_exact.against" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
