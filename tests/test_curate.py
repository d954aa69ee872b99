"""Curation end to end: readers on every format, bad input with exact accounting, config errors, run output."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from testkit.runs import assert_accounting, config_file, curate, read_dir, write_jsonl
from tests.conftest import data_path
from tests.samples import c4_docs
from thresher.cli import main as cli_main
from thresher.core.storage import Storage
from thresher.curate.config import parse_config
from thresher.curate.runner import run


def test_jsonl_plain_gz_zst_and_derived_ids(ray_local, tmp_path):
    docs = c4_docs(60)
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": f"a{i}", **d} for i, d in enumerate(docs[:20])])
    b = write_jsonl(tmp_path / "b.jsonl.gz", docs[20:40], opener=gzip.open)
    c = tmp_path / "c.jsonl.zst"  # one frame that states its size (zstd's default)
    c.write_bytes(zstandard.ZstdCompressor().compress(b"".join(json.dumps(d).encode() + b"\n" for d in docs[40:])))
    manifest, out = curate(tmp_path, [a, b, c])
    assert manifest["status"] == "succeeded" and manifest["counts"]["output"] == 60
    assert manifest["resumed"]["read_tasks"] == 3
    table = read_dir(out / "data")
    ids = table["id"].to_pylist()
    assert len(set(ids)) == 60 and {f"a{i}" for i in range(20)} <= set(ids)
    assert sorted(table["text"].to_pylist()) == sorted(d["text"] for d in docs)
    assert_accounting(manifest, out)
    # derived ids are stable: a second run, each file read by several tasks (the compressed ones by ranges of their
    # decompressed bytes), gives the same ids, texts and read bytes
    manifest2, out2 = curate(tmp_path / "again", [a, b, c], block_bytes=2_000)
    assert manifest2["resumed"]["read_tasks"] > 3 + 2 * 2
    again = read_dir(out2 / "data")
    assert sorted(zip(again["id"].to_pylist(), again["text"].to_pylist())) == sorted(
        zip(ids, table["text"].to_pylist())
    )
    assert (
        manifest2["counts"]["read_bytes"]
        == manifest["counts"]["read_bytes"]
        == sum(p.stat().st_size for p in (a, b, c))
    )
    assert_accounting(manifest2, out2)


def test_large_jsonl_is_read_in_byte_ranges_exactly_once(ray_local, tmp_path):
    docs = c4_docs()
    path = write_jsonl(tmp_path / "big.jsonl", docs)
    manifest, out = curate(tmp_path, [path], block_bytes=20_000)
    size = path.stat().st_size
    assert size > 20 * 20_000  # many ranges, boundaries fall inside lines
    texts = read_dir(out / "data")["text"].to_pylist()
    assert sorted(texts) == sorted(d["text"] for d in docs)
    assert_accounting(manifest, out)


def test_parquet_text_and_wet(ray_local, tmp_path):
    docs = c4_docs(30)
    pq.write_table(
        pa.table({"text": [d["text"] for d in docs], "score": list(range(30))}),
        tmp_path / "p.parquet",
        row_group_size=7,
    )
    tdir = tmp_path / "texts"
    tdir.mkdir()
    for i, d in enumerate(docs[:5]):
        (tdir / f"doc{i}.txt").write_text(d["text"])
    wet = data_path("web/whirlwind.warc.wet")
    for paths, n in (([tmp_path / "p.parquet"], 30), ([tdir], 5), ([wet], None)):
        manifest, out = curate(tmp_path / f"run-{paths[0].stem}", paths)
        table = read_dir(out / "data")
        assert manifest["counts"]["output"] == table.num_rows
        if n is not None:
            assert table.num_rows == n
        assert_accounting(manifest, out)
    # WET: the real Common Crawl record, with its URL and WARC record id as id
    assert table.num_rows >= 1 and table["url"][0].as_py().startswith("http")
    assert "urn:uuid" in table["id"][0].as_py()
    assert len(table["text"][0].as_py()) > 100


def test_bad_input_is_accounted_exactly(ray_local, tmp_path):
    good = c4_docs(10)
    huge = "word " * (50 * 1024 * 1024 // 5)  # a 50 MB single document
    lines = [
        *[json.dumps(d).encode() for d in good],
        b'{"text": "unterminated',  # malformed JSON
        b'{"text": "caf\xe9 latin-1 bytes"}',  # invalid UTF-8
        b'{"title": "no text field"}',  # missing text
        b'{"text": null}',  # missing text: null
        b'{"text": 42}',  # non-string text
        b'{"text": ["a", "list"]}',  # non-string text
        b'{"text": "   "}',  # empty document
        b'["not", "an", "object"]',  # not an object
        json.dumps({"text": huge}).encode(),  # too long (default max_doc_chars 10M)
    ]
    bad = write_jsonl(tmp_path / "bad.jsonl", lines)
    payload = b"".join(json.dumps(d).encode() + b"\n" for d in good)
    truncated = tmp_path / "trunc.jsonl.gz"
    truncated.write_bytes(gzip.compress(payload)[:-40])
    manifest, out = curate(tmp_path, [bad, truncated], stages=[{"normalize": {}}, {"pii": {}}])
    assert_accounting(manifest, out)
    reasons = manifest["rejected_by_reason"]["read"]
    assert reasons == {
        "malformed_json": 1,
        "invalid_utf8": 1,
        "missing_text": 2,
        "non_string_text": 2,
        "empty_text": 1,
        "not_an_object": 1,
        "too_long": 1,
        "unreadable_file": 1,
    }
    rejects = read_dir(out / "rejects")
    assert set(rejects.column_names) >= {"id", "stage", "reason", "detail", "text"}
    assert set(rejects["stage"].to_pylist()) == {"read"}
    unreadable = [
        d for r, d in zip(rejects["reason"].to_pylist(), rejects["detail"].to_pylist()) if r == "unreadable_file"
    ]
    assert "trunc.jsonl.gz" in unreadable[0]
    missing = sorted(
        d for r, d in zip(rejects["reason"].to_pylist(), rejects["detail"].to_pylist()) if r == "missing_text"
    )
    assert missing == ["no field 'text'", "text is null"]
    # the truncated file's complete records before the damage are kept
    kept = manifest["counts"]["output"]
    assert 10 < kept < 20


def test_damaged_input_is_measured_in_bytes(ray_local, tmp_path):
    """A truncated gzip gives its readable lines and loses the decompressed bytes of the line it was cut in (every
    stored byte was taken); two malformed lines lose their bytes with their newlines, whatever the byte ranges; a
    Parquet file without its footer loses its size. The manifest counts and lists them, and so does the report."""
    docs = [{"text": f"document {i}: " + "lorem ipsum " * (i % 7 + 1)} for i in range(60)]
    compressed = gzip.compress(b"".join(json.dumps(d).encode() + b"\n" for d in docs))
    cut = len(compressed) * 2 // 3
    truncated = tmp_path / "trunc.jsonl.gz"
    truncated.write_bytes(compressed[:cut])
    given = zlib.decompressobj(wbits=31).decompress(compressed[:cut])  # all that the first cut bytes hold
    readable = given[: given.rfind(b"\n") + 1]
    malformed = [b'{"text": "cut off', b'{"text": "a trailing comma",}']
    lines = [json.dumps(d).encode() for d in docs[:20]]
    plain = write_jsonl(tmp_path / "plain.jsonl", [*lines[:7], malformed[0], *lines[7:15], malformed[1], *lines[15:]])
    parquet = tmp_path / "broken.parquet"
    pq.write_table(pa.table({"text": [d["text"] for d in docs]}), parquet)
    parquet.write_bytes(parquet.read_bytes()[:-100])
    manifest, out = curate(tmp_path, [plain, truncated, parquet], block_bytes=500)
    assert_accounting(manifest, out)
    assert manifest["rejected_by_reason"]["read"] == {"malformed_json": 2, "unreadable_file": 2}
    assert sorted(read_dir(out / "data")["text"].to_pylist()) == sorted(
        json.loads(line)["text"] for line in [*lines, *readable.splitlines()]
    )
    lost = {
        str(plain): sum(len(m) + 1 for m in malformed),
        str(truncated): len(given) - len(readable),
        str(parquet): parquet.stat().st_size,
    }
    assert manifest["counts"]["read_bytes"] == sum(p.stat().st_size for p in (plain, truncated, parquet))
    assert manifest["counts"]["rejected_bytes"] == sum(lost.values())
    largest = [
        {"file": Path(f).name, "rejected_bytes": n}  # named as the input is
        for f, n in sorted(lost.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    assert manifest["damaged_input"] == {"files": 3, "largest": largest}
    report = json.loads((out / "report.json").read_text())["damaged_input"]
    assert report == {
        "read_bytes": manifest["counts"]["read_bytes"],
        "rejected_bytes": sum(lost.values()),
        "rejected_fraction": sum(lost.values()) / manifest["counts"]["read_bytes"],
        "files": 3,
        "largest": largest,
    }
    page = (out / "report.html").read_text()
    assert str(tmp_path) not in page
    assert "Damaged input" in page and all(f"{n:,}" in page for n in lost.values())


def test_the_malformed_bytes_gate_fails_a_run_whose_rows_pass(ray_local, tmp_path):
    """One huge malformed line among many small good ones: few rows rejected at read, most bytes lost."""
    huge = b'{"text": "' + b"x" * 100_000
    lines = [json.dumps({"text": f"small document {i}"}).encode() for i in range(300)]
    path = write_jsonl(tmp_path / "docs.jsonl", [*lines[:150], huge, *lines[150:]])
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(path)]},
                "output": {"path": str(tmp_path / "out")},
                "gates": {"max_malformed_fraction": 0.01, "max_malformed_bytes_fraction": 0.5},
            }
        )
    )
    assert manifest["status"] == "gate_failed"
    assert {g["gate"]: (g["measured"], g["ok"]) for g in manifest["gates"]} == {
        "max_malformed_fraction": (round(1 / 301, 6), True),
        "max_malformed_bytes_fraction": (round((len(huge) + 1) / path.stat().st_size, 6), False),
    }


def test_a_written_file_that_disagrees_with_the_counts_fails_the_run(ray_local, tmp_path):
    """The final files are counted again from their footers: a row lost after the counts were taken (planted here
    by a stage's after_publish hook, which runs once the files are written) fails the run, and no manifest says
    otherwise."""
    from testkit.faults import DropsAWrittenRow  # noqa: F401  (registers the stage)
    from thresher.curate.runner import RunFailed

    src = write_jsonl(tmp_path / "docs.jsonl", [{"id": str(i), "text": f"document number {i}"} for i in range(20)])
    with pytest.raises(
        RunFailed,
        match=r"accounting mismatch: the written files hold \{'data': 19\} rows, "
        r"the counts say \{'data': 20\}",
    ):
        curate(tmp_path, [src], [{"test_drops_a_written_row": {}}])
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("stages", [[], [{"normalize": {}}, {"dedup_exact": {}}]])
def test_a_field_only_in_the_ninth_file_is_kept(ray_local, tmp_path, stages):
    """The planner samples the first 8 files: fields of the ninth (and of a later line of the first) still reach
    the output, null elsewhere; a declared field list keeps only its fields and counts the others."""
    paths = [
        write_jsonl(
            tmp_path / f"f{i}.jsonl",
            [{"id": f"{i}-{j}", "text": f"file {i} doc {j}", "url": f"u{i}"} for j in range(5)],
        )
        for i in range(8)
    ]
    paths.append(
        write_jsonl(
            tmp_path / "f8.jsonl",
            [{"id": f"8-{j}", "text": f"file 8 doc {j}", "license": "cc-by", "score": j / 4} for j in range(5)],
        )
    )
    with open(paths[0], "a") as f:
        f.write(json.dumps({"id": "0-late", "text": "a late line", "source": "appended"}) + "\n")
    manifest, out = curate(tmp_path, paths, stages)
    rows = {r["id"]: r for r in read_dir(out / "data").to_pylist()}
    assert manifest["counts"]["output"] == 46 == len(rows)
    assert rows["8-1"]["license"] == "cc-by" and rows["8-1"]["score"] == "0.25" and rows["8-1"]["url"] is None
    assert rows["0-late"]["source"] == "appended" and rows["3-2"]["license"] is None and rows["3-2"]["url"] == "u3"
    declared, out = curate(tmp_path / "declared", paths, stages, fields=["license"])
    added = {"dup_cluster"} if stages else set()  # dedup_exact's
    assert set(read_dir(out / "data").column_names) == {"id", "text", "license", *added}
    assert declared["metrics"]["read"] == {"undeclared.url": 40, "undeclared.score": 5, "undeclared.source": 1}


def test_a_failed_rerun_leaves_the_previous_dataset_readable(ray_local, tmp_path):
    """A re-run with another config writes its files aside until it commits: when it fails after writing them
    (the planted loss above), the previous run's data, rejects, reports and manifest are byte for byte as they
    were, and training still accepts and reads them. The next successful run replaces them."""
    from testkit.faults import DropsAWrittenRow  # noqa: F401  (registers the stage)
    from thresher.curate.runner import RunFailed
    from thresher.train.data import Encoding, parquet_files

    src = write_jsonl(tmp_path / "docs.jsonl", [{"id": str(i), "text": f"document number {i % 24}"} for i in range(30)])
    first, out = curate(tmp_path, [src], [{"dedup_exact": {}}])
    assert first["counts"]["output"] == 24 and first["counts"]["rejected"] == 6

    def published() -> dict:
        return {
            str(p.relative_to(out)): p.read_bytes()
            for p in out.rglob("*")
            if p.is_file() and p.relative_to(out).parts[0] not in ("_progress", "_staging")
        }

    before = published()
    assert {
        "manifest.json",
        "report.json",
        "README.md",
        "data/part-00000.parquet",
        "rejects/part-00000.parquet",
    } <= set(before)
    with pytest.raises(RunFailed, match="accounting mismatch"):
        curate(tmp_path, [src], [{"test_drops_a_written_row": {}}])
    assert published() == before
    files = parquet_files(str(out / "data"), "data.path", Encoding("text", "text", 64, False), Storage())
    assert pq.read_table(files[0]).num_rows == 24
    second, _ = curate(tmp_path, [src], [])
    assert second["counts"]["output"] == 30 and not (out / "rejects").exists() and not (out / "_staging").exists()
    assert_accounting(second, out)


def test_rerun_replaces_previous_output_and_report(ray_local, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", c4_docs(40))
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "part-99999.parquet").write_bytes(b"stale")
    (out / "manifest.json").write_text("{}")  # a previous run's (a folder without one is refused)
    manifest, out = curate(tmp_path, [src], stages=[{"normalize": {}}])
    assert not (out / "data" / "part-99999.parquet").exists()
    assert manifest["ray"]["nodes"] == 1
    report = json.loads((out / "report.json").read_text())
    assert report["funnel"]["by_stage"]["normalize"]["in"] == 40
    assert report["lengths"]["kept"]["docs"] == 40
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Stage funnel" in html
    # `thresher report` recomputes the same report from the written files
    (out / "report.json").unlink()
    assert cli_main(["report", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["lengths"] == report["lengths"]


@pytest.mark.parametrize(
    "body, overrides, key",
    [
        ({"input": {"paths": ["x"]}, "output": {"path": "o"}, "stagse": []}, [], "stagse"),
        ({"input": {"paths": ["x"], "format": "csv"}, "output": {"path": "o"}}, [], "input.format"),
        (
            {"input": {"paths": ["x"]}, "output": {"path": "o"}, "stages": [{"pii": {"mode": "erase"}}]},
            [],
            "stages.0.pii.mode",
        ),
        ({"input": {"paths": ["x"]}, "output": {"path": "o"}, "stages": [{"normalise": {}}]}, [], "normalise"),
        (
            {"input": {"paths": ["x"]}, "output": {"path": "o"}, "stages": [{"normalize": {"nfc": True}}]},
            [],
            "stages.0.normalize.nfc",
        ),
        (
            {"input": {"paths": ["x"]}, "output": {"path": "o"}, "stages": ["dedup_exact", "normalize", "dedup_exact"]},
            [],
            "stages.2.dedup_exact",
        ),
        ({"input": {"paths": ["x"]}, "output": {"path": "o"}}, ["input.max_doc_chars=-5"], "input.max_doc_chars"),
        ({"output": {"path": "o"}}, [], "input"),
    ],
)
def test_config_errors_exit_2_naming_the_key(tmp_path, capsys, body, overrides, key):
    args = ["curate", config_file(tmp_path, body)] + [a for o in overrides for a in ("--set", o)]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert key in err, err


@pytest.mark.parametrize(
    "override, error",
    [
        ("stages={normalize: {}, pii: {mode: bogus}}", "stages: a list of stages"),
        ("stages=[{normalize: false}]", "stages.0.normalize: Input should be a valid dictionary"),
        ("stages=[{pii: 0}]", "stages.0.pii: Input should be a valid dictionary"),
    ],
)
def test_stages_as_a_mapping_or_with_options_that_are_no_mapping_exit_2(tmp_path, capsys, override, error):
    cfg = config_file(tmp_path, {"input": {"paths": ["x"]}, "output": {"path": "o"}})
    assert cli_main(["curate", cfg, "--set", override]) == 2
    assert error in capsys.readouterr().err


def test_unreadable_yaml_exits_2_naming_where_without_echoing_it(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("input:\n  paths: [in.jsonl]\n  token: hunter2: x\n")
    assert cli_main(["curate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: invalid YAML at line 3, column 17" in err and "hunter2" not in err, err
    cfg.write_text("input:\n  token: *hunter2\n")
    assert cli_main(["curate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "invalid YAML at line 2, column 10" in err and "hunter2" not in err, err
    cfg.write_bytes(b"input:\n  paths: [caf\xe9.jsonl]\n")
    assert cli_main(["curate", str(cfg)]) == 2
    assert f"{cfg}: not UTF-8 text" in capsys.readouterr().err
    cfg.write_text("input: {paths: [in.jsonl]}\noutput: {path: o}\n")
    assert cli_main(["curate", str(cfg), "--set", "input.paths=[unclosed-hunter2"]) == 2
    err = capsys.readouterr().err
    assert "--set input.paths: invalid YAML at line 1, column 18" in err and "hunter2" not in err, err


def test_missing_input_and_unwritable_output_exit_2_before_work(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello world"}])
    cfg = config_file(
        tmp_path, {"input": {"paths": [str(tmp_path / "nope.jsonl")]}, "output": {"path": str(tmp_path / "o")}}
    )
    assert cli_main(["curate", cfg]) == 2
    assert "input.paths" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = config_file(tmp_path, {"input": {"paths": [str(src)]}, "output": {"path": str(blocker / "o")}})
    assert cli_main(["curate", cfg]) == 2
    assert "output.path" in capsys.readouterr().err
    assert cli_main(["curate", cfg, "--set", "novalue"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err


def test_set_overrides_reach_stage_options(tmp_path):
    from thresher.core.config import apply_overrides

    data = {"stages": [{"normalize": {}}, {"pii": None}]}
    apply_overrides(data, ["stages.1.mode=hash", "input.paths=[a, b]", "stages.0.unicode_form=NFKC"])
    assert data["stages"][1] == {"pii": {"mode": "hash"}}
    assert data["stages"][0] == {"normalize": {"unicode_form": "NFKC"}}
    assert data["input"]["paths"] == ["a", "b"]
    # as error messages name a stage's option: stages.N.NAME.key (and a list item's options in an option the same way)
    data = {"stages": [{"decontaminate": {"references": ["x"]}}, {"augment": {"methods": [{"paraphrase": {"n": 1}}]}}]}
    apply_overrides(data, ["stages.0.decontaminate.references=[y]", "stages.1.augment.methods.0.paraphrase.n=2"])
    assert data["stages"] == [
        {"decontaminate": {"references": ["y"]}},
        {"augment": {"methods": [{"paraphrase": {"n": 2}}]}},
    ]


def test_set_reaches_keys_of_list_items_that_are_no_stage_entries():
    from thresher.core.config import apply_overrides

    data = {"data": {"train": "x"}, "variants": [{"name": "base"}], "space": {"optim.lr": {"choice": [0.1]}}}
    apply_overrides(
        data,
        [
            "data.train=[{path: out/a}, {path: out/b}]",
            "data.train.1.weight=3",
            "variants.0.set.method=prefix",
            "space.optim.lr={loguniform: [1.0e-5, 1.0e-3]}",  # a key holding dots, matched whole
        ],
    )
    assert data["data"]["train"] == [{"path": "out/a"}, {"path": "out/b", "weight": 3}]
    assert data["variants"] == [{"name": "base", "set": {"method": "prefix"}}]
    assert data["space"] == {"optim.lr": {"loguniform": [1e-5, 1e-3]}}
