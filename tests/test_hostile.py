"""Hostile input, generated: random bytes, invalid UTF-8, NUL bytes, deep or huge JSON, very long lines.

Readers must turn every line into exactly one row (kept or rejected with a reason) and never raise; stages
must never raise on any string and stay linear in time.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from testkit.batches import batch
from thresher.core.storage import Storage
from thresher.curate.config import InputConfig, parse_config
from thresher.curate.readers import LostBytes, plan, read_task
from thresher.curate.runner import run
from thresher.curate.stage import REJECT_STAGE, StageContext, run_map_stage
from thresher.curate.stages.normalize import Normalize, NormalizeConfig
from thresher.curate.stages.pii import Pii, PiiConfig

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
hostile_line = st.one_of(
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" ")),
    st.dictionaries(st.sampled_from(["text", "id", "url", "x"]), json_values, max_size=4).map(
        lambda d: json.dumps(d).encode()
    ),
    st.text(max_size=200).map(lambda t: json.dumps({"text": t}).encode()),
    st.text(max_size=50).map(lambda t: json.dumps({"text": t + "\x00" + t, "id": t}).encode()),
)


def read_all(tmp_path, name: str, payload: bytes, **opts) -> pa.Table:
    path = tmp_path / name
    path.write_bytes(payload)
    tasks, spec = plan(InputConfig(paths=[str(path)], **opts), Storage())
    tables = [t for task in tasks for t in read_task(task, spec, LostBytes())]
    return (
        pa.concat_tables(tables, promote_options="default") if tables else pa.table({"id": pa.array([], pa.string())})
    )


@SETTINGS
@given(lines=st.lists(hostile_line, max_size=30), block=st.integers(min_value=1, max_value=400))
def test_every_jsonl_line_becomes_exactly_one_row(tmp_path_factory, lines, block):
    tmp = tmp_path_factory.mktemp("h")
    payload = b"\n".join(lines) + b"\n"
    table = read_all(tmp, "x.jsonl", payload, block_bytes=block)
    assert table.num_rows == sum(1 for l in lines if l.strip())
    if table.num_rows:
        rejected = table[REJECT_STAGE].is_valid()
        texts = table["text"].to_pylist()
        assert all(t is not None and t.strip() for t, r in zip(texts, rejected.to_pylist()) if not r)


def lines_before_truncation(data: bytes, cut: int, codec: str = "gzip") -> int:
    """Rows the reader gives for ``data`` compressed with ``codec`` and cut to ``cut`` bytes: one per non-blank line
    that was decompressed whole (every line when nothing was cut), plus one for the unreadable remainder when
    something was cut."""
    compressed = gzip.compress(data) if codec == "gzip" else zstandard.ZstdCompressor().compress(data)
    if cut >= len(compressed):
        return sum(1 for line in data.split(b"\n") if line.strip())
    if cut == 0:
        return 0  # an empty file: nothing to read
    decompressor = zlib.decompressobj(wbits=31) if codec == "gzip" else zstandard.ZstdDecompressor().decompressobj()
    readable = decompressor.decompress(compressed[:cut])
    return sum(1 for line in readable.split(b"\n")[:-1] if line.strip()) + 1


@SETTINGS
@given(data=st.binary(max_size=4000), cut=st.integers(min_value=0, max_value=4000))
def test_random_and_truncated_compressed_bytes_never_raise(tmp_path_factory, data, cut):
    # random bytes that happen to open a gzip stream, a zstd frame (or a prefix of its magic number) or a WARC
    # record are not random enough here
    zstd = data and (
        b"\x28\xb5\x2f\xfd".startswith(data[:4]) or data[0] & 0xF0 == 0x50 and b"\x2a\x4d\x18".startswith(data[1:4])
    )
    assume(not data.startswith(b"\x1f\x8b") and not zstd and b"WARC/" not in data)
    tmp = tmp_path_factory.mktemp("h")
    damaged = int(bool(data))  # random bytes are no compressed stream: one row for the unreadable file
    expected = {
        "r.jsonl.gz": damaged,
        "t.jsonl.gz": lines_before_truncation(data, cut),
        "r.wet": 0,
        "r.jsonl.zst": damaged,
        "t.jsonl.zst": lines_before_truncation(data, cut, "zstd"),
        "r.txt": 1,
    }  # WET: no WARC record; text: the file is one document
    payloads = {
        "r.jsonl.gz": data,
        "t.jsonl.gz": gzip.compress(data)[:cut],
        "r.wet": data,
        "r.jsonl.zst": data,
        "t.jsonl.zst": zstandard.ZstdCompressor().compress(data)[:cut],
        "r.txt": data,
    }
    for name, payload in payloads.items():
        table = read_all(tmp, name, payload)
        assert table.num_rows == expected[name], name


def test_deep_and_huge_json_and_a_million_character_line(tmp_path):
    deep = b'{"text": "ok", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge_line = json.dumps({"text": "w" * 1_000_000}).encode()
    wide = json.dumps({"text": "fine text", **{f"k{i}": i for i in range(10_000)}}).encode()
    table = read_all(tmp_path, "x.jsonl", b"\n".join([deep, huge_line, wide]) + b"\n")
    assert table.num_rows == 3
    reasons = table["_reject_reason"].to_pylist()
    assert reasons[0] == "malformed_json" and reasons[1] is None and reasons[2] is None


@SETTINGS
@given(texts=st.lists(st.text(max_size=400), min_size=1, max_size=20))
def test_text_stages_accept_any_string(texts):
    for stage in (Normalize(NormalizeConfig(html_to_text=True), StageContext()), Pii(PiiConfig(), StageContext())):
        out = run_map_stage(stage, batch(texts))
        assert len(out) == len(texts)


def test_a_run_over_hostile_files_accounts_for_every_record(ray_local, tmp_path):
    import random

    rng = random.Random(7)
    lines = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b" ") for _ in range(200)]
    lines += [
        json.dumps({"text": "Good text about the weather in spring. " * 5, "id": f"g{i}"}).encode() for i in range(50)
    ]
    rng.shuffle(lines)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines))[:-100])
    (tmp_path / "in" / "c.txt").write_bytes(b"\xff\xfe\x00 not utf-8 \x80")
    parquet = tmp_path / "in" / "d.parquet"  # bytes flipped in a data page's header, then in the footer
    pq.write_table(
        pa.table({"text": [f"Parquet document {i} about rivers." for i in range(30)]}), parquet, row_group_size=10
    )
    data, at = parquet.read_bytes(), pq.read_metadata(parquet).row_group(1).column(0).data_page_offset
    parquet.write_bytes(data[:at] + b"\xff" * 4 + data[at + 4 :])
    footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    (tmp_path / "in" / "e.parquet").write_bytes(data[:footer] + b"\xff" * 4 + data[footer + 4 :])
    t0 = time.perf_counter()
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(tmp_path / "in")], "format": None},
                "output": {"path": str(tmp_path / "out")},
                "stages": [{"normalize": {"html_to_text": True}}, {"pii": {}}],
            }
        )
    )
    c = manifest["counts"]
    assert c["input"] == c["output"] + c["rejected"]
    assert c["output"] >= 70 and c["rejected"] > 100
    assert manifest["counts"]["rejected_bytes"] >= (tmp_path / "in" / "e.parquet").stat().st_size
    assert time.perf_counter() - t0 < 120


def test_parquet_large_string_fields_with_nulls_keep_their_type_through_a_global_stage(ray_local, tmp_path):
    """A thresher run's Parquet (large_string fields, an answer missing) curated again: pii rewrites both fields,
    dedup_exact decides, decontaminate runs after it on the staged records. The answers come back as text, nulls
    as nulls (a null read as pd.NA and written back as an object made Ray pickle the column, which the stage after
    the global one could not slice)."""
    questions = [f"How many apples does farmer {i} have if she buys {i % 7} more?" for i in range(40)]
    answers = [None if i % 10 == 3 else f"She has {i} apples. Mail a@b.org" for i in range(40)]
    (tmp_path / "in").mkdir()
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(40)],
            "question": pa.array(questions, pa.large_string()),
            "answer": pa.array(answers, pa.large_string()),
        }
    )
    pq.write_table(table, tmp_path / "in" / "part-0.parquet")
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "An unrelated question about the moon and tides."}))
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(tmp_path / "in")], "format": "parquet", "text_field": "question"},
                "output": {"path": str(tmp_path / "out")},
                "stages": [
                    {"pii": {"fields": ["question", "answer"]}},
                    {"dedup_exact": {}},
                    {"decontaminate": {"references": [str(tmp_path / "test.jsonl")], "fields": ["question"]}},
                ],
            }
        )
    )
    assert manifest["counts"]["output"] == 40
    out = pq.read_table(tmp_path / "out" / "data")
    assert pa.types.is_string(out.schema.field("answer").type) or pa.types.is_large_string(
        out.schema.field("answer").type
    )
    got = dict(zip(out.column("id").to_pylist(), out.column("answer").to_pylist()))
    assert got == {f"r{i}": None if a is None else a.replace("a@b.org", "[EMAIL]") for i, a in enumerate(answers)}


def test_a_records_fields_survive_whatever_they_are_named_and_typed(ray_local, tmp_path):
    """Fields named like thresher's own columns (the rejects' stage, reason and detail; id beside another id field;
    _split, _key, _report.*, _metric.*), a non-string text, a byte order mark, JSON nested past what orjson writes,
    and Parquet types JSON has none for (bytes, decimals, durations, pandas' nanosecond timestamps, a binary text
    column) neither fail the run nor lose a value: each comes back in data/ or rejects/, renamed where it had to be."""
    import datetime
    import decimal

    (tmp_path / "in").mkdir()
    odd = {"stage": "draft", "reason": "user's", "detail": "d", "_split": "../../escape", "_key": "k"}
    records = [
        {"text": "The first document about rivers and lakes.", "doc": "a", "id": "orig-a", **odd},
        {"text": "The first document about rivers and lakes.", "doc": "b", "id": "orig-b", **odd},  # duplicate
        {"text": 5, "doc": "c", "_report.x": "r", "_metric.y": "m"},
        {"text": "A third document, its doc a number.", "doc": 2.5, "id": "orig-d"},
    ]
    (tmp_path / "in" / "a.jsonl").write_bytes(
        b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\n" for r in records)
    )
    deep = {"text": "A document with a deep field.", "doc": "e", "deep": [[[[[]]]]]}
    for _ in range(300):
        deep["deep"] = [deep["deep"]]
    (tmp_path / "in" / "b.json").write_text(json.dumps([deep]))
    pq.write_table(
        pa.table(
            {
                "text": pa.array([b"Parquet text stored as bytes.", b"\xff not UTF-8"], pa.binary()),
                "doc": ["f", "g"],
                "blob": pa.array([b"\x00\x01", None], pa.binary()),
                "price": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(5, 2)),
                "took": pa.array([datetime.timedelta(seconds=90), None], pa.duration("s")),
                "at": pa.array([1_700_000_000_123_456_789, None], pa.timestamp("ns")),
                "image": pa.array([{"bytes": b"\x89PNG", "path": "x.png"}, None]),
            }
        ),
        tmp_path / "in" / "c.parquet",
    )
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(tmp_path / "in")], "id_field": "doc"},
                "output": {"path": str(tmp_path / "out")},
                "stages": [{"dedup_exact": {}}, {"split": {}}],
            }
        )
    )
    c = manifest["counts"]
    assert (c["input"], c["output"], c["rejected"]) == (7, 4, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # nothing written outside the output
    kept = pq.read_table(tmp_path / "out" / "data").to_pylist()
    rejected = pq.read_table(tmp_path / "out" / "rejects").to_pylist()
    rows = {r["id"]: r for r in kept + rejected}
    assert {k: rows["a"][k] for k in ("stage", "reason", "detail", "record__split", "record__key", "record_id")} == {
        **{k: odd[k] for k in ("stage", "reason", "detail")},
        "record__split": "../../escape",
        "record__key": "k",
        "record_id": "orig-a",
    }
    duplicate = rows["b"]
    assert (duplicate["stage"], duplicate["reason"]) == ("dedup_exact", "exact_duplicate")
    assert {k: duplicate[k] for k in ("record_stage", "record_reason", "record_detail", "record_id")} == {
        "record_stage": "draft",
        "record_reason": "user's",
        "record_detail": "d",
        "record_id": "orig-b",
    }
    assert (rows["c"]["reason"], rows["c"]["text"], rows["c"]["record__report.x"], rows["c"]["record__metric.y"]) == (
        "non_string_text",
        "5",
        "r",
        "m",
    )
    numbered = next(r for r in kept if r["text"] == "A third document, its doc a number.")
    assert (numbered["doc"], numbered["record_id"]) == ("2.5", "orig-d")
    assert json.loads(rows["e"]["deep"]) == deep["deep"]
    assert rows["f"]["text"] == "Parquet text stored as bytes."
    assert (rows["f"]["blob"], rows["f"]["price"], rows["f"]["took"]) == ('"AAE="', '"1.50"', "90.0")
    assert rows["f"]["at"] == '"2023-11-14T22:13:20.123456789"'
    assert json.loads(rows["f"]["image"]) == {"bytes": "iVBORw==", "path": "x.png"}
    assert rows["g"]["reason"] == "invalid_utf8"
