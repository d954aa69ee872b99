"""The JSON Lines reader's fast path (Arrow, a chunk of lines at a time) gives exactly the rows of its per-line path
(orjson), on any input, and is taken on clean input; every field of every record is kept, wherever it first
appears (or, with declared fields, the others are counted)."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import random
from unittest import mock

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.core.storage import Storage
from thresher.curate import readers
from thresher.curate.config import InputConfig
from thresher.curate.fields import unpack
from thresher.curate.readers import ReaderSpec, ReadTask, common
from thresher.curate.readers import jsonl as jsonl_reader

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

SPACES = " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000"  # whitespace to str.strip (the empty-text check)
texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=SPACES, max_size=4),
    st.sampled_from(["", "a\x00b", "\U0001f600 ok", "é" * 30, "x" * 90, "\ufeffhi", "\x7f\x80"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["a", "text"]), children, max_size=2)
    ),
    max_leaves=6,
)
clean_records = st.fixed_dictionaries(
    {"text": texts},
    optional={  # what the fast path reads
        "id": st.one_of(st.text(max_size=6), st.just(""), st.none()),
        "url": st.one_of(texts, st.none()),
        "meta": st.none()
        | st.fixed_dictionaries(
            {"score": st.floats(allow_nan=False, allow_infinity=False), "tags": st.lists(texts, max_size=2)}
        ),
    },
)
any_records = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(texts, json_values),
        "id": st.one_of(st.text(max_size=6), st.integers(), st.booleans(), json_values),
        "url": json_values,
        "meta": json_values,
    },
)


def json_lines(records: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(
        lambda rec, ascii, compact: json.dumps(
            rec, ensure_ascii=ascii, separators=(",", ":") if compact else None
        ).encode(),
        records,
        st.booleans(),
        st.booleans(),
    )


# lines the per-line reader rejects or reads differently from Arrow's defaults, each of which must send its chunk
# to the per-line reader
FALLBACK = [
    b'{"text": "a", "x": NaN}',
    b'{"text": "a", "x": [1, -Infinity]}',
    b'{"text": "a", "x": {"y": Infinity}}',
    b'{"text": "a", "x": ' + b"[" * 1024 + b"]" * 1024 + b"}",  # one level deeper than orjson allows
    b'{"text": "a", "x": ' + b"[" * 9000 + b"]" * 9000 + b"}",  # deep enough to crash Arrow's type inference
    b'{"text": "a", "text": "b"}',
    b'{"text": "a"} {"text": "b"}',
    b'{"text": "a"}\r{"text": "b"}',
    b'\xef\xbb\xbf{"text": "a"}',
    b'{"text": "\xff"}',
    b'{"text": "a", "x": "\xed\xa0\x80"}',
    b'{"text": "a"}\x00',
    b'{"text": "a\x00"}',
    b'{"text": "\\ud800"}',
    b'{"text": "a", "x": 1e400}',
    b' {"text": "a"}',
    b'{"text": "a"} ',
    b"\x0b",
    b"  ",
    b"[1, 2]",
    b'"text"',
    b"not json",
    b'{"text": "a",}',
    b'{"text": ["a"]}',
    b'{"text": [{"role": "user", "content": "hi"}]}',
    b'{"text": "a", "id": 7}',
    b'{"text": "a", "id": true}',
    b'{"text": "a", "url": 1.5}',
    b'{"text": "a", "url": {"b": 1}}',
    b'{"text": null}',
    b"{}",
    b'{"text": "a", "x": 1}\r\r',
]
ODD = [b"", b"\r", b'{"text": "a", "x": ' + b"[" * 1023 + b"]" * 1023 + b"}"]  # blank, or as deep as orjson allows
clean_lines = st.one_of(json_lines(clean_records), st.sampled_from(ODD))
any_lines = st.one_of(
    json_lines(clean_records), json_lines(any_records), st.sampled_from(FALLBACK), st.sampled_from(ODD)
)
files = st.one_of(st.lists(clean_lines, max_size=12), st.lists(any_lines, max_size=12))
chunk_sizes = st.integers(min_value=1, max_value=2000) | st.just(jsonl_reader.CHUNK_BYTES)
specs = st.builds(
    ReaderSpec,
    st.just("text"),
    st.sampled_from([None, "id"]),
    st.sampled_from([(), ("url",), ("url", "meta")]),
    st.integers(min_value=1, max_value=60),
    declared=st.booleans(),
)


def jsonl(lines: list[bytes], crlf: list[bool], final_newline: bool) -> bytes:
    ends = [b"\r\n" if c else b"\n" for c in crlf]
    data = b"".join(line + end for line, end in zip(lines, ends))
    return data if final_newline or not data else data[: -len(ends[-1])]


def read(path, spec: ReaderSpec, fast: bool, start: int = 0, end: int = -1) -> pa.Table | None:
    task = ReadTask("jsonl", (str(path),), (path.stat().st_size,), start, end)
    tables = list(jsonl_reader.read_jsonl(task, spec, readers.LostBytes(), fast=fast))
    assert all(t.num_rows <= common.ROWS_PER_BATCH for t in tables)
    # a field first seen in a later batch is a column from that batch on (missing columns: null before it; counts: 0)
    return metrics_zero_filled(pa.concat_tables(tables, promote_options="default") if tables else None)


def metrics_zero_filled(table: pa.Table | None) -> pa.Table | None:
    """A metric column is null in batches read before its field was first seen: 0 there."""
    for i, name in enumerate(table.column_names if table else []):
        if name.startswith("_metric."):
            table = table.set_column(i, name, pc.fill_null(table[name], 0))
    return table


def assert_same(fast: pa.Table | None, slow: pa.Table | None) -> None:
    """The same rows and columns (a field found late may be placed differently: batches are cut differently)."""
    assert (fast is None) == (slow is None)
    if slow is not None:
        assert sorted(fast.schema, key=str) == sorted(slow.schema, key=str)
        assert fast.to_pylist() == slow.select(fast.column_names).to_pylist()


@SETTINGS
@given(
    lines=files,
    crlf=st.lists(st.booleans(), min_size=12, max_size=12),
    final_newline=st.booleans(),
    spec=specs,
    chunk=chunk_sizes,
    data=st.data(),
)
def test_fast_path_gives_the_rows_of_the_per_line_path(tmp_path_factory, lines, crlf, final_newline, spec, chunk, data):
    payload = jsonl(lines, crlf, final_newline)
    path = tmp_path_factory.mktemp("r") / "x.jsonl"
    path.write_bytes(payload)
    start = data.draw(st.integers(min_value=0, max_value=len(payload)))
    end = data.draw(st.sampled_from([-1, len(payload)]) | st.integers(min_value=start, max_value=len(payload)))
    with mock.patch.object(jsonl_reader, "CHUNK_BYTES", chunk), mock.patch.object(common, "ROWS_PER_BATCH", 5):
        assert_same(read(path, spec, True, start, end), read(path, spec, False, start, end))


@SETTINGS
@given(
    lines=files,
    crlf=st.lists(st.booleans(), min_size=12, max_size=12),
    final_newline=st.booleans(),
    spec=specs,
    chunk=chunk_sizes,
    data=st.data(),
)
def test_fast_path_on_compressed_and_truncated_input(tmp_path_factory, lines, crlf, final_newline, spec, chunk, data):
    compressed = gzip.compress(jsonl(lines, crlf, final_newline))
    path = tmp_path_factory.mktemp("r") / "x.jsonl.gz"
    path.write_bytes(compressed[: data.draw(st.integers(min_value=0, max_value=len(compressed)))])
    with mock.patch.object(jsonl_reader, "CHUNK_BYTES", chunk):
        assert_same(read(path, spec, True), read(path, spec, False))


CLEAN = [
    json.dumps(rec, ensure_ascii=ascii).encode()
    for ascii in (True, False)
    for rec in [
        {"text": "Plain text.", "id": "a1", "url": "https://example.com", "meta": "a field the sample missed"},
        {"text": "Ünïcödé, CJK 中文 and an emoji \U0001f600 with a NUL \x00 escaped", "id": ""},
        {"text": " \t\u3000\x1c\u2028 ", "id": None, "url": None},  # empty to str.strip
        {"text": "", "other": "x"},
        {"text": "é" * 25, "id": "long"},  # 25 characters, 50 bytes
        {"text": "x" * 20, "url": "u", "other": "[[[{}]]]", "meta": None},
        {"text": "dup id", "id": "a1"},
    ]
]
DEEP = b'{"text": "deep", "x": "' + b"[" * 1000 + b"1.5" + b"]" * 1000 + b'"}'  # brackets in a string


@pytest.mark.parametrize("id_field", [None, "id"])
def test_fast_path_is_taken_on_clean_input(tmp_path, id_field):
    lines = CLEAN * 20 + [DEEP]
    payload = jsonl(lines[:100] + [b"", b"\r"] + lines[100:], [i % 3 == 0 for i in range(len(lines) + 2)], False)
    path = tmp_path / "clean.jsonl"
    path.write_bytes(payload)
    spec = ReaderSpec("text", id_field, ("url",), 24)
    slow, slow_range = read(path, spec, False), read(path, spec, False, 1000, 5000)
    assert {"empty_text", "too_long", None} <= set(slow["_reject_reason"].to_pylist())
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_bytes(FALLBACK[0] + b"\n")
    with mock.patch.object(jsonl_reader, "add_json_line", side_effect=AssertionError("per-line path taken")):
        with pytest.raises(AssertionError, match="per-line path taken"):  # the patch is where the reader looks
            read(hostile, spec, True)
        for chunk in (1, 1000, jsonl_reader.CHUNK_BYTES):
            with mock.patch.object(jsonl_reader, "CHUNK_BYTES", chunk):
                assert_same(read(path, spec, True), slow)
                assert_same(read(path, spec, True, 1000, 5000), slow_range)


def test_chunk_bytes_is_where_the_reader_looks():
    """A patch of ``jsonl_reader.CHUNK_BYTES`` (as the tests above make) sets the chunks, of a file and of a stream."""
    line = b'{"text": "a"}\n'
    with mock.patch.object(jsonl_reader, "CHUNK_BYTES", 1):
        assert [c for _, c, _ in jsonl_reader._line_chunks(io.BytesIO(line * 3), 0, len(line) * 3)] == [line] * 3
        stream = io.BufferedReader(io.BytesIO(line * 3))
        assert [c for _, c, _ in jsonl_reader._stream_chunks(stream, stream, len(line) * 3)] == [line] * 3


@pytest.mark.parametrize("line", FALLBACK)
def test_hostile_lines_send_their_chunk_to_the_per_line_path(tmp_path, line):
    clean = b'{"text": "fine", "id": "c"}\n'
    chunk = clean + line + b"\n" + clean
    assert jsonl_reader._parse_chunk(ReaderSpec("text", "id", ("url",), 100), "k", 0, chunk) is None
    assert jsonl_reader._parse_chunk(ReaderSpec("text", "id", ("url",), 100), "k", 0, clean * 2) is not None
    path = tmp_path / "x.jsonl"
    path.write_bytes(chunk)
    for spec in (ReaderSpec("text", None, (), 100), ReaderSpec("text", "id", ("url", "x"), 3)):
        assert_same(read(path, spec, True), read(path, spec, False))


def test_arrow_whitespace_is_pythons():
    """The fast path's empty-text check (``utf8_is_space``) agrees with the per-line one (``str.strip``)."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    assert pc.utf8_is_space(pa.array(chars)).to_pylist() == [c.isspace() for c in chars]


def test_fields_found_late_are_kept_and_undeclared_ones_counted(tmp_path):
    """A field that first appears after the planner's sample (in a later file, or deep in a file) is kept, strings
    as they are and other values as their JSON text, null in the records without it; with ``input.fields``
    declared, only those are kept and each other field's records are counted."""
    early = [{"text": f"doc {i}", "id": str(i), "url": f"u{i}"} for i in range(3000)]
    late = [
        {"text": "late one", "id": "L1", "url": "u", "license": "cc-by", "score": 0.25, "tags": ["a", "b"]},
        {"text": "late two", "id": "L2", "license": "mit", "nested": {"k": [1, None]}},
    ]
    path = tmp_path / "late.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in early + late))
    plan_spec = readers.plan(InputConfig(paths=[str(path)]), Storage())[1]
    assert plan_spec.fields == ("url",)  # the sample (the first 1,000 lines) saw only url
    for fast in (True, False):
        table = read(path, plan_spec, fast)
        rows = {r["id"]: r for r in table.to_pylist()}
        assert rows["L1"]["license"] == "cc-by" and rows["L1"]["score"] == "0.25" and rows["L1"]["tags"] == '["a","b"]'
        assert rows["L2"]["nested"] == '{"k":[1,null]}' and rows["L2"]["url"] is None
        assert rows["5"]["license"] is None and rows["5"]["url"] == "u5"
    declared = ReaderSpec("text", "id", ("license",), 100, declared=True)
    table = read(path, declared, True)
    assert "score" not in table.column_names and table["license"].to_pylist()[-2:] == ["cc-by", "mit"]
    assert pc.sum(table["_metric.read.undeclared.url"]).as_py() == 3001
    assert {
        c: pc.sum(table[c]).as_py()
        for c in table.column_names
        if c.startswith("_metric.read.undeclared.") and c != "_metric.read.undeclared.url"
    } == {"_metric.read.undeclared.score": 1, "_metric.read.undeclared.tags": 1, "_metric.read.undeclared.nested": 1}


GOOD = [b'{"text": "a fine document"}', b'{"text": "another", "id": "x"}', b'{"text": "   "}', b'{"title": "no text"}']
DAMAGED = [b'{"text": "unterminated', b'{"text": "caf\xe9"}', b'["not", "an", "object"]', b"42", b'{"text": "a",}']


def read_bytes(tasks, spec, fast: bool) -> tuple[pa.Table | None, readers.LostBytes]:
    lost = readers.LostBytes()
    tables = [
        t
        for task in tasks
        for t in readers.READERS[task.format](task, spec, lost, **({"fast": fast} if task.format == "jsonl" else {}))
    ]
    return (pa.concat_tables(tables, promote_options="default") if tables else None), lost


@SETTINGS
@given(
    lines=st.lists(st.sampled_from([*GOOD, *DAMAGED, b"", b"  "]), max_size=20),
    crlf=st.lists(st.booleans(), min_size=20, max_size=20),
    final_newline=st.booleans(),
    block=st.integers(min_value=1, max_value=300),
    compressed=st.booleans(),
    fast=st.booleans(),
)
def test_damaged_lines_lose_their_bytes_once_in_any_range(
    tmp_path_factory, lines, crlf, final_newline, block, compressed, fast
):
    """A malformed, invalid UTF-8 or non-object line loses its bytes with its line end, counted once whatever the
    byte ranges; the ranges cover the file exactly."""
    crlf = crlf[: len(lines)]
    payload = jsonl(lines, crlf, final_newline)
    path = tmp_path_factory.mktemp("b") / ("x.jsonl.gz" if compressed else "x.jsonl")
    path.write_bytes(gzip.compress(payload) if compressed else payload)
    tasks, spec = readers.plan(InputConfig(paths=[str(path)], block_bytes=block), Storage())
    assert sum(t.nbytes for t in tasks) == path.stat().st_size
    ends = [b"\r\n" if c else b"\n" for c in crlf]
    if ends and not final_newline:
        ends[-1] = b""
    expected = sum(len(line) + len(end) for line, end in zip(lines, ends) if line in DAMAGED)
    table, lost = read_bytes(tasks, spec, fast)
    assert lost == ({str(path): expected} if expected else {})
    assert (table["_reject_reason"].to_pylist().count("unreadable_file") if table else 0) == 0


@SETTINGS
@given(
    lines=files,
    crlf=st.lists(st.booleans(), min_size=12, max_size=12),
    final_newline=st.booleans(),
    spec=specs,
    chunk=chunk_sizes,
    kind=st.sampled_from([".gz", ".zst"]),
    data=st.data(),
)
def test_a_compressed_file_read_in_ranges_gives_the_rows_and_losses_of_one_read(
    tmp_path_factory, lines, crlf, final_newline, spec, chunk, kind, data
):
    """Whatever the decompressed size the ranges were planned from (a stream's own statement may be wrong: a
    truncated file, garbage after it), its ranges together give the rows, rejects and lost bytes of one task."""
    import zstandard

    payload = jsonl(lines, crlf, final_newline)
    stored = gzip.compress(payload) if kind == ".gz" else zstandard.ZstdCompressor().compress(payload)
    damage = data.draw(st.sampled_from(["none", "truncated", "garbage"]))
    if damage == "truncated":
        stored = stored[: data.draw(st.integers(min_value=0, max_value=len(stored)))]
    elif damage == "garbage":
        stored += random.Random(len(stored)).randbytes(data.draw(st.integers(min_value=1, max_value=300)))
    path = tmp_path_factory.mktemp("z") / f"x.jsonl{kind}"
    path.write_bytes(stored)
    size = len(stored)
    unpacked = data.draw(st.integers(min_value=1, max_value=2 * len(payload) + 2))
    block = data.draw(st.integers(min_value=1, max_value=unpacked))
    ranges = readers.planning.stream_ranges(str(path), size, unpacked, block)
    assert ranges[0].start == 0 and ranges[-1].end == -1 and len(ranges) <= readers.planning.STREAM_RANGES
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:]))
    assert sum(t.nbytes for t in ranges) == size
    whole = [ReadTask("jsonl", (str(path),), (size,))]
    fast = data.draw(st.booleans())
    with mock.patch.object(jsonl_reader, "CHUNK_BYTES", chunk), mock.patch.object(common, "ROWS_PER_BATCH", 5):
        (split, split_lost), (one, one_lost) = read_bytes(ranges, spec, fast), read_bytes(whole, spec, fast)
    assert split_lost == one_lost
    assert_same(*(metrics_zero_filled(t) for t in (split, one)))


def test_a_large_compressed_file_is_planned_as_ranges_of_its_stated_size(tmp_path):
    """gzip's trailer and zstd's frame header state the decompressed size: a file larger than ``block_bytes`` is read
    by up to STREAM_RANGES tasks; a stated size that cannot be (a truncated gzip's last bytes) plans one task."""
    import zstandard

    rnd = random.Random(5)
    payload = b"".join(json.dumps({"text": rnd.randbytes(150).hex()}).encode() + b"\n" for _ in range(2000))
    for name, data, n in [
        ("a.jsonl.gz", gzip.compress(payload), 6),
        ("b.jsonl.zst", zstandard.ZstdCompressor().compress(payload), 6),
        ("c.jsonl.gz", gzip.compress(payload)[:-9] + b"\xff\xff\xff\xff", 1),  # states 4 GiB of a few KB
        ("d.jsonl.zst", zstandard.ZstdCompressor(write_content_size=False).compress(payload), 1),
    ]:
        (tmp_path / name).write_bytes(data)
        tasks, _ = readers.plan(InputConfig(paths=[str(tmp_path / name)], block_bytes=len(payload) // 6 + 1), Storage())
        assert len(tasks) == n, name
    tasks, _ = readers.plan(
        InputConfig(paths=[str(tmp_path / "a.jsonl.gz")], block_bytes=len(payload) // 100), Storage()
    )
    assert len(tasks) == readers.planning.STREAM_RANGES


def decompressed(kind: str, data: bytes) -> bytes:
    """What a decompressor gives of ``data`` (a truncated stream: as much as it can)."""
    import bz2
    import lzma
    import zlib

    import zstandard

    if kind == ".gz":
        return zlib.decompressobj(wbits=31).decompress(data)
    if kind == ".zst":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return (bz2.BZ2Decompressor() if kind == ".bz2" else lzma.LZMADecompressor()).decompress(data)


@pytest.mark.parametrize("kind", [".gz", ".zst", ".bz2", ".xz"])
def test_a_truncated_stream_gives_its_whole_lines_and_loses_its_unfinished_one(tmp_path, kind):
    """Every stored byte of a truncated file was taken: it loses the decompressed bytes of the line it was cut in."""
    import bz2
    import lzma

    import zstandard

    rnd = random.Random(7)
    payload = b"".join(json.dumps({"text": "w " * rnd.randrange(1, 2000)}).encode() + b"\n" for _ in range(300))
    compress = {
        ".gz": gzip.compress,
        ".zst": zstandard.ZstdCompressor().compress,
        ".bz2": bz2.compress,
        ".xz": lzma.compress,
    }[kind]
    full = compress(payload)
    path = tmp_path / f"x.jsonl{kind}"
    for cut in [*rnd.sample(range(len(full)), 8), len(full) - 1]:
        path.write_bytes(full[:cut])
        given = decompressed(kind, full[:cut])
        whole = given[: given.rfind(b"\n") + 1]
        table, lost = read_bytes([ReadTask("jsonl", (str(path),), (cut,))], ReaderSpec("text", None, (), 10**6), True)
        kept = [t for t, r in zip(table["text"].to_pylist(), table["_reject_reason"].to_pylist()) if r is None]
        assert kept == [json.loads(line)["text"] for line in whole.splitlines()]
        assert table["_reject_reason"].to_pylist()[-1] == "unreadable_file"
        assert lost == ({str(path): len(given) - len(whole)} if len(given) > len(whole) else {})


def test_a_damaged_stream_loses_the_stored_bytes_not_taken(tmp_path):
    """Garbage after a gzip member: its lines are kept, and the bytes the decompressor had not taken when the error
    surfaced are lost (it reads ahead by its input buffer, so a little less than the garbage is counted)."""
    read_ahead = getattr(gzip, "READ_BUFFER_SIZE", io.DEFAULT_BUFFER_SIZE)  # gzip's input buffer
    member = gzip.compress(b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(100)))
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(member + random.Random(3).randbytes(20 * read_ahead))
    size = path.stat().st_size
    table, lost = read_bytes([ReadTask("jsonl", (str(path),), (size,))], ReaderSpec("text", None, (), 100), True)
    assert table["_reject_reason"].to_pylist() == [None] * 100 + ["unreadable_file"]
    assert size - len(member) - 2 * read_ahead <= lost[str(path)] <= size - len(member)


def test_corrupt_parquet_loses_its_size_or_its_row_group(tmp_path):
    import pyarrow.parquet as pq

    spec = ReaderSpec("text", None, (), 10**6)
    texts = [f"document {i:03d} " * 20 for i in range(30)]
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": texts}), path, row_group_size=10, compression="none")
    data = path.read_bytes()
    at = data.index(texts[15].encode())  # a text of row group 1 made invalid UTF-8
    path.write_bytes(data[:at] + b"\xff" + data[at + 1 :])
    table, lost = read_bytes([ReadTask("parquet", (str(path),), (len(data),))], spec, True)
    assert table["_reject_reason"].to_pylist() == [None] * 10 + ["unreadable_file"] + [None] * 10
    assert lost == {str(path): pq.read_metadata(path).row_group(1).column(0).total_compressed_size}
    path.write_bytes(data[: len(data) // 2])  # no footer
    table, lost = read_bytes([ReadTask("parquet", (str(path),), (len(data) // 2,))], spec, True)
    assert table["_reject_reason"].to_pylist() == ["unreadable_file"] and lost == {str(path): len(data) // 2}


def test_a_record_without_text_says_whether_the_field_is_absent_or_null(tmp_path):
    import pyarrow.parquet as pq

    spec = ReaderSpec("text", None, (), 10**6)
    pq.write_table(pa.table({"text": ["a document", None]}), tmp_path / "null.parquet")
    pq.write_table(pa.table({"title": ["no text column"]}), tmp_path / "absent.parquet")
    (tmp_path / "r.jsonl").write_bytes(b'{"text": null}\n{"title": "no text"}\n')
    tasks = [
        ReadTask("parquet", (str(tmp_path / "null.parquet"),), (1,)),
        ReadTask("parquet", (str(tmp_path / "absent.parquet"),), (1,)),
        ReadTask("jsonl", (str(tmp_path / "r.jsonl"),), ((tmp_path / "r.jsonl").stat().st_size,)),
    ]
    table, _ = read_bytes(tasks, spec, True)
    rejected = [(r, d) for r, d in zip(table["_reject_reason"].to_pylist(), table["_reject_detail"].to_pylist()) if r]
    assert rejected == [
        ("missing_text", "text is null"),
        ("missing_text", "no field 'text'"),
        ("missing_text", "text is null"),
        ("missing_text", "no field 'text'"),
    ]


def parquet_input(tmp_path) -> tuple:
    """A Parquet file of three row groups of ten records (snappy, as pyarrow writes by default), its bytes, its
    read task and the metadata of its row group 1."""
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": [f"document {i:03d} " * 20 for i in range(30)]}), path, row_group_size=10)
    data = path.read_bytes()
    return path, data, ReadTask("parquet", (str(path),), (len(data),)), pq.read_metadata(path).row_group(1)


def test_a_corrupt_parquet_page_loses_its_row_group_and_a_corrupt_footer_its_file(tmp_path):
    """Bytes flipped in a data page's header, which Arrow reports as a plain OSError (as it may a failing disk): the
    row group is rejected with its compressed size and the others are kept, with the clean file's ids. A footer
    corrupted or cut: the file is rejected with its stored size."""
    spec = ReaderSpec("text", None, (), 10**6)
    path, data, task, group = parquet_input(tmp_path)
    clean, _ = read_bytes([task], spec, True)
    at = group.column(0).data_page_offset
    path.write_bytes(data[:at] + b"\xff" * 4 + data[at + 4 :])
    table, lost = read_bytes([task], spec, True)
    assert table["_reject_reason"].to_pylist() == [None] * 10 + ["unreadable_file"] + [None] * 10
    assert "deserialize thrift" in table["_reject_detail"][10].as_py()
    kept = table.filter(pc.is_null(table["_reject_reason"]))
    assert kept["id"].to_pylist() == clean["id"].to_pylist()[:10] + clean["id"].to_pylist()[20:]
    assert kept["text"].to_pylist() == clean["text"].to_pylist()[:10] + clean["text"].to_pylist()[20:]
    assert lost == {str(path): group.column(0).total_compressed_size}
    footer = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    for payload in (data[:footer] + b"\xff" * 4 + data[footer + 4 :], data[:-3]):
        path.write_bytes(payload)
        table, lost = read_bytes([ReadTask("parquet", (str(path),), (len(payload),))], spec, True)
        assert table["_reject_reason"].to_pylist() == ["unreadable_file"] and lost == {str(path): len(payload)}


class FlakyHandler:
    """A local filesystem for pyarrow whose reads covering byte ``at`` of a file fail ``failures`` times: ``fault``
    "reset" (the connection is reset), "aws" (S3's words for a timeout) or "garbled" (the bytes arrive flipped)."""

    def __new__(cls, at: int, fault: str, failures: int = 1):
        import fsspec
        import pyarrow.fs as pafs

        class Handler(pafs.FSSpecHandler):
            def open_input_file(self, path):
                return pa.PythonFile(FlakyFile(open(path, "rb"), handler), mode="r")

            def open_input_stream(self, path):
                return self.open_input_file(path)

        handler = Handler(fsspec.filesystem("file"))
        handler.at, handler.fault, handler.failures = at, fault, failures
        return handler


@dataclasses.dataclass(frozen=True)
class FlakyStorage(Storage):
    """Local files read through a :class:`FlakyHandler`."""

    handler: object = None

    def resolve(self, uri):
        import pyarrow.fs as pafs

        return pafs.PyFileSystem(self.handler), super().resolve(uri)[1]


class FlakyFile(io.RawIOBase):
    def __init__(self, file, handler):
        self.file, self.handler = file, handler

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, *args) -> int:
        return self.file.seek(*args)

    def tell(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        self.file.close()
        super().close()

    def readinto(self, buffer) -> int:
        h, pos = self.handler, self.file.tell()
        n = self.file.readinto(buffer)
        if h.failures and pos <= h.at < pos + n:
            h.failures -= 1
            if h.fault == "reset":
                raise ConnectionResetError("Connection reset by peer")
            if h.fault == "aws":
                raise OSError(
                    "AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 28, Timeout was reached"
                )
            buffer[h.at - pos] ^= 0xFF
        return n


@pytest.mark.parametrize("fault", ["reset", "aws", "garbled"])
def test_a_transient_parquet_read_error_is_not_damage(tmp_path, fault):
    """A connection lost while a row group is read propagates (Ray runs the read task again: here the test does),
    and bytes garbled once in transit are read again: either way the output is the clean file's, nothing rejected."""
    path, data, task, group = parquet_input(tmp_path)
    clean, _ = read_bytes([task], ReaderSpec("text", None, (), 10**6), True)
    handler = FlakyHandler(group.column(0).data_page_offset, fault)
    spec = ReaderSpec("text", None, (), 10**6, FlakyStorage(handler=handler))
    if fault != "garbled":
        with pytest.raises(OSError, match="Connection reset|AWS Error"):
            read_bytes([task], spec, True)
    table, lost = read_bytes([task], spec, True)
    assert handler.failures == 0, "the fault was not injected"
    assert table.equals(clean) and lost == {}


def test_the_planners_reads_are_tried_again_then_fail_naming_the_file(tmp_path):
    """A storage error in the driver's sample reads (listing, field discovery) is tried again with backoff; one
    that lasts fails the run naming the file."""
    path, data, _, _ = parquet_input(tmp_path)
    lines = tmp_path / "x.jsonl"
    lines.write_text('{"text": "a", "url": "u"}\n')
    for uri, at, fields in ((path, len(data) - 1, ()), (lines, 0, ("url",))):
        handler = FlakyHandler(at, "reset")
        assert readers.plan(InputConfig(paths=[str(uri)]), FlakyStorage(handler=handler))[1].fields == fields
        assert handler.failures == 0, "the fault was not injected"
    packed = tmp_path / "x.jsonl.gz"  # the trailer that states its decompressed size, read again after a reset
    packed.write_bytes(gzip.compress(b"".join(b'{"text": "%d"}\n' % i for i in range(1000))))
    handler = FlakyHandler(packed.stat().st_size - 1, "reset")
    tasks, _ = readers.plan(InputConfig(paths=[str(packed)], block_bytes=4000), FlakyStorage(handler=handler))
    assert len(tasks) == 4 and handler.failures == 0
    with mock.patch("time.sleep") as sleep, pytest.raises(OSError, match=f"{lines}.*4 times.*Connection reset"):
        readers.plan(InputConfig(paths=[str(lines)]), FlakyStorage(handler=FlakyHandler(0, "reset", 10)))
    assert [c.args[0] for c in sleep.call_args_list] == [0.5, 1, 2]


def test_a_truncated_wet_file_loses_the_record_it_was_cut_in(tmp_path):
    """Uncompressed: the bytes from the record's start; compressed: the decompressed bytes of the record read."""
    import zlib

    def record(i: int) -> bytes:
        body = b"hello world %d " % i * 30
        return (
            b"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Record-ID: <urn:uuid:%d>\r\nContent-Length: %d\r\n\r\n"
            % (i, len(body))
            + body
            + b"\r\n\r\n"
        )

    records = [record(i) for i in range(5)]
    data = b"".join(records)
    spec = ReaderSpec("text", None, ("url",), 10**6)
    cut_gz = gzip.compress(data)[:-30]
    given = zlib.decompressobj(wbits=31).decompress(cut_gz)
    kept = given.count(b"WARC/1.0") - 1  # the records before the one it was cut in
    start = sum(map(len, records[:kept]))
    for name, payload, reasons, lost_bytes in (
        ("t.warc.wet", data[:-200], [None] * 4 + ["unreadable_file"], len(data) - 200 - sum(map(len, records[:4]))),
        ("t.warc.wet.gz", cut_gz, [None] * kept + ["unreadable_file"], len(given) - start),
    ):
        path = tmp_path / name
        path.write_bytes(payload)
        table, lost = read_bytes([ReadTask("wet", (str(path),), (len(payload),))], spec, True)
        assert table["_reject_reason"].to_pylist() == reasons and lost == {str(path): lost_bytes}


def test_too_few_read_tasks_for_the_cluster_are_named_with_the_setting():
    """An input of 64 MiB or more with fewer than two read tasks per CPU: its waves and input.block_bytes are said."""
    from thresher.curate.plan import few_read_tasks

    shards = [ReadTask("jsonl", (f"s3://b/{i}.jsonl.gz",), (12 << 20,)) for i in range(17)]
    assert few_read_tasks(shards, 16, 16 << 20) == (
        "input: 17 read tasks for 16 CPUs (2 waves, at most 16 CPUs busy in the map phase); JSONL is read in ranges "
        "of input.block_bytes (16 MiB; a compressed file in at most 8): a smaller value, or the input as more files, "
        "gives more tasks"
    )
    assert few_read_tasks(shards, 8, 16 << 20) is None  # two per CPU or more
    assert few_read_tasks(shards[:5], 16, 16 << 20) is None  # 60 MiB: seconds whatever its tasks


def test_a_byte_order_mark_and_fields_named_like_thresher_columns_read_alike_on_both_paths(tmp_path):
    """A file opening with a UTF-8 byte order mark loses no record to it; fields named like thresher's own columns
    are kept renamed, an empty id as a field, by the fast path and the per-line path alike."""
    records = [
        {"text": "first", "id": "a", "_split": "../x", "_reject_reason": "r", "_seen.s": "1"},
        {"text": "second", "id": ""},
        {"text": "third", "id": "c", "record_id": "taken"},
    ]
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\n" for r in records))
    spec = readers.plan(InputConfig(paths=[str(path)]), Storage())[1]
    fast, slow = read(path, spec, True), read(path, spec, False)
    assert_same(fast, slow)
    rows = slow.to_pylist()
    assert [r["_reject_reason"] for r in rows] == [None, None, None]
    assert {k: rows[0][k] for k in ("id", "record__split", "record__reject_reason", "record__seen.s")} == {
        "id": "a",
        "record__split": "../x",
        "record__reject_reason": "r",
        "record__seen.s": "1",
    }
    assert rows[1]["record_id"] == "" and rows[1]["id"] and rows[2]["record_id"] == "taken"


def test_an_undeclared_field_is_counted_whatever_the_records_number_of_fields():
    spec = ReaderSpec("text", "id", ("a", "b", "c"), 100, declared=True)
    fields = spec.record_fields({"text": "t", "id": "1", "secret": "s"})
    assert fields == {"a": None, "b": None, "c": None, "_metric.read.undeclared.secret": 1}


def test_integers_beyond_64_bits_keep_their_digits(tmp_path):
    """orjson reads an integer beyond 64 bits as a float: a field, an id, a conversation's value and a JSON array's
    element keep every digit on both paths all the same."""
    big, neg = 2**64 + 1, -(2**63) - 1
    lines = [
        f'{{"text": "a", "n": {big}, "nested": {{"m": [{neg}, 1.5]}}, "note": "{"9" * 25}"}}',
        f'{{"text": "b", "id": {big * 10}}}',
        f'{{"text": [{{"role": "user", "content": "q", "n": {big}}}, {{"role": "assistant", "content": "r"}}]}}',
        f'{{"text": {big}}}',
    ]
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(lines) + "\n")
    spec = readers.plan(InputConfig(paths=[str(path)]), Storage())[1]
    fast, slow = read(path, spec, True), read(path, spec, False)
    assert_same(fast, slow)
    rows = slow.to_pylist()
    assert json.loads(rows[0]["n"]) == big and json.loads(rows[0]["nested"]) == {"m": [neg, 1.5]}
    assert rows[0]["note"] == "9" * 25 and rows[1]["id"] == str(big * 10)
    assert json.loads(rows[2]["text"])[0]["n"] == big
    assert (rows[3]["text"], rows[3]["_reject_reason"]) == (str(big), "non_string_text")
    array = tmp_path / "big.json"
    array.write_text("[" + ",".join(lines) + "]")
    task = ReadTask("json_array", (str(array),), (array.stat().st_size,), 0, -1)
    spec = readers.plan(InputConfig(paths=[str(array)]), Storage())[1]
    from_array = pa.concat_tables(readers.read_task(task, spec, readers.LostBytes())).to_pylist()
    assert [json.loads(r["n"]) for r in from_array if r["n"]] == [big]
    assert [r["id"] for r in from_array][1] == str(big * 10)
    texts, pack = unpack(rows[2]["text"])  # a stage that edits a conversation's texts writes its integers back whole
    assert json.loads(pack([t.upper() for t in texts]))[0] == {"role": "user", "content": "Q", "n": big}
