"""JSON Lines, read in chunks of whole lines, each parsed by Arrow where that surely gives the rows the per-line
reader (orjson) gives, and line by line otherwise."""

from __future__ import annotations

import codecs
import io
from collections.abc import Generator, Iterator

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from thresher.core.json_values import json_text, load_json
from thresher.curate.fields import conversation
from thresher.curate.readers.common import (
    DETAIL_CHARS,
    READ_STAGE,
    Batcher,
    Damage,
    LostBytes,
    ReaderSpec,
    ReadTask,
    damaged,
    field_column,
    field_text,
    missing_text,
    record_id,
    slices,
    uri_key,
)
from thresher.curate.readers.streams import Counted, compression, decompressing
from thresher.curate.stage import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE

CHUNK_BYTES = 8 << 20  # JSON Lines are read (and parsed by Arrow where it can) in chunks of whole lines this big
MAX_DEPTH = 1024  # orjson's nesting limit: a deeper document is malformed JSON
SCAN_BYTES = 256 << 10  # numpy passes over a chunk go a cache-sized block at a time


def read_jsonl(task: ReadTask, spec: ReaderSpec, lost: LostBytes, fast: bool = True) -> Iterator[pa.Table]:
    """JSON Lines, a chunk of whole lines at a time: parsed by Arrow where ``fast`` and the chunk allows it
    (``_parse_chunk``), otherwise line by line with orjson; both give the same rows."""
    uri = task.uris[0]
    key = uri_key(uri)
    b = Batcher(spec)
    fs, path = spec.storage.resolve(uri)
    if compression(uri) is None:
        stored = fs.open_input_file(path)
        f = io.BufferedReader(stored, buffer_size=1 << 20)
        pos = task.start
        if pos > 0:  # the line straddling `start` belongs to the previous range
            f.seek(pos - 1)
            pos = pos - 1 + len(f.readline())
        else:
            f.seek(0)
        chunks = _line_chunks(f, pos, task.end if task.end >= 0 else task.sizes[0])
    else:
        stored = Counted(fs.open_input_stream(path, compression=None))
        f = decompressing(stored, uri)
        chunks = _stream_chunks(f, stored, task.sizes[0])
        if task.start > 0 or task.end >= 0:
            chunks = _in_range(chunks, task.start, task.end)
    try:
        for offset, chunk, damage in chunks:
            if offset == 0 and chunk.startswith(codecs.BOM_UTF8):  # a byte order mark opens the file, not a record
                chunk, offset = chunk[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
            table = _parse_chunk(spec, key, offset, chunk) if fast and chunk else None
            if table is not None:
                if (t := b.flush()) is not None:
                    yield t
                yield from slices(table, spec.text_field)
            else:
                lost.add(uri, (yield from _add_json_lines(b, spec, key, offset, chunk)))
            if damage is not None:
                offset += len(chunk)
                b.add(
                    f"{key}-{offset}-unreadable",
                    None,
                    {},
                    "unreadable_file",
                    f"{uri} from offset {offset}: {damage.error}",
                )
                lost.add(uri, damage.nbytes)
            del chunk  # before the next is read: with two alive, the allocator hands their memory back each time
    finally:
        f.close()
        stored.close()  # a gzip, bzip2 or xz stream leaves it open
    if (t := b.flush()) is not None:
        yield t


def _line_chunks(f, pos: int, end: int) -> Iterator[tuple[int, bytes, Damage | None]]:
    """``(offset, chunk, damage)``: the whole lines of the uncompressed file ``f`` from offset ``pos`` in chunks of
    about CHUNK_BYTES, up to the line that holds byte ``end - 1``. A damaged read ends them, losing the chunk it was
    reading and the rest of the range."""
    while pos < end:
        try:
            chunk = bytearray(min(CHUNK_BYTES, end - pos))  # read into, then the rest of its last line appended
            del chunk[f.readinto(chunk) :]
            if chunk and not chunk.endswith(b"\n"):
                chunk += f.readline()
        except Exception as e:
            if not damaged(e):
                raise
            yield pos, b"", Damage(e, end - pos)
            return
        if not chunk:
            return
        yield pos, chunk, None
        pos += len(chunk)


def _stream_chunks(f, stored: Counted, size: int) -> Iterator[tuple[int, bytes, Damage | None]]:
    """``(offset, chunk, damage)``: the whole lines of the decompressing stream ``f`` in chunks of about CHUNK_BYTES
    (the last line may have no newline). A damaged stream ends them with the whole lines it gave, losing the
    ``size`` bytes of ``stored`` the decompressor had not taken and the unfinished line it had given."""
    pos, held, whole = 0, bytearray(), 0  # held[:whole]: whole lines
    while True:
        try:
            block = f.read1(CHUNK_BYTES)
        except Exception as e:
            if not damaged(e):
                raise
            yield pos, held[:whole], Damage(e, size - stored.taken + len(held) - whole)
            return
        if not block:
            if held:
                yield pos, held, None
            return
        held += block
        if (newline := block.rfind(b"\n")) >= 0:
            whole = len(held) - len(block) + newline + 1
        if whole >= CHUNK_BYTES:
            yield pos, held[:whole], None
            del held[:whole]
            pos, whole = pos + whole, 0


def _in_range(
    chunks: Iterator[tuple[int, bytes, Damage | None]], start: int, end: int
) -> Iterator[tuple[int, bytes, Damage | None]]:
    """The lines of a compressed file's ``chunks`` that begin in its range ``[start, end)`` (``end`` -1: to the
    stream's end), as ``_line_chunks`` gives an uncompressed file's. Damage is this range's where the line it cut
    begins in the range; a range before it reads past its end and counts it, a range after it gets no line."""
    for offset, chunk, damage in chunks:
        stop = offset + len(chunk)
        lo = 0 if start <= offset else (chunk.find(b"\n", start - offset - 1) + 1 or len(chunk))
        hi = len(chunk) if end < 0 or stop <= end else (chunk.find(b"\n", end - offset - 1) + 1 or len(chunk))
        if damage is not None and not (start <= stop and (end < 0 or stop < end)):
            damage = None
        if lo < hi or damage is not None:
            yield offset + lo, chunk[lo:hi], damage
        if damage is not None or (end >= 0 and stop >= end):
            return


def _add_json_lines(
    b: Batcher, spec: ReaderSpec, key: str, offset: int, chunk: bytes
) -> Generator[pa.Table, None, int]:
    """The per-line reader: each non-blank line of ``chunk`` (at ``offset``) into ``b``, yielding full batches;
    returns the bytes of the damaged lines, line ends included."""
    start, damaged_bytes = 0, 0
    while start < len(chunk):
        stop = chunk.find(b"\n", start) + 1 or len(chunk)
        line = chunk[start:stop]
        if line.strip() and add_json_line(b, spec, key, offset + start, line.rstrip(b"\r\n")):
            damaged_bytes += len(line)
        if b.full():
            yield b.flush()
        start = stop
    return damaged_bytes


def add_json_line(b: Batcher, spec: ReaderSpec, key: str, offset: int, line: bytes) -> bool:
    """The record of ``line`` into ``b``; whether the line is damaged (malformed JSON, invalid UTF-8, not an
    object)."""
    rid = f"{key}-{offset}"
    try:
        rec = load_json(line)
    except orjson.JSONDecodeError as e:
        try:
            line.decode("utf-8")
            reason = "malformed_json"
        except UnicodeDecodeError:
            reason = "invalid_utf8"
        b.add(rid, None, {}, reason, f"{e}: {line[:DETAIL_CHARS].decode('utf-8', 'replace')}")
        return True
    if not isinstance(rec, dict):
        b.add(rid, None, {}, "not_an_object", line[:DETAIL_CHARS].decode("utf-8", "replace"))
        return True
    fields = spec.record_fields(rec)
    rid = record_id(spec, rec, rid)
    text = rec.get(spec.text_field)
    if text is None:
        b.add(rid, None, fields, "missing_text", missing_text(spec.text_field, rec))
    elif isinstance(text, list) and conversation(text) is not None:
        b.add(rid, json_text(text), fields)
    elif not isinstance(text, str):  # rejected with its value's JSON text
        b.add(rid, field_text(text), fields, "non_string_text", f"{spec.text_field} is {type(text).__name__}")
    else:
        b.add(rid, text, fields)
    return False


def _parse_chunk(spec: ReaderSpec, key: str, offset: int, chunk: bytes) -> pa.Table | None:
    """The rows of ``chunk`` (non-empty, whole lines at ``offset``) parsed by Arrow, or None unless they are surely
    the rows the per-line reader gives: valid UTF-8 without NUL (which ends Arrow's input), every line blank (empty
    or a lone ``\\r``) or one object from ``{`` to ``}`` nesting no deeper than orjson allows, text, id and fields
    strings (or null) and every text present."""
    columns = ["id", spec.text_field, *map(field_column, spec.fields), REJECT_STAGE, REJECT_REASON, REJECT_DETAIL]
    if len(set(columns)) < len(columns) or b"\0" in chunk or not (chunk.isascii() or _valid_utf8(chunk)):
        return None
    a = np.frombuffer(chunk, np.uint8)
    newlines, opening = _scan(a)
    starts = np.concatenate(([0], newlines + 1))[: len(newlines) + (a[-1] != 10)]
    stops = np.append(newlines, len(a))[: len(starts)]
    stops -= (stops > starts) & (a[stops - 1] == 13)  # a \r before the \n
    lines = stops > starts
    starts, stops = starts[lines], stops[lines]
    if not len(starts) or not (np.all(a[starts] == 0x7B) and np.all(a[stops - 1] == 0x7D)):
        return None
    # a line nests no deeper than its count of { and [: bound it before Arrow's inference (which crashes on a deep
    # enough document) as orjson does
    if opening - len(starts) >= MAX_DEPTH:
        at = np.flatnonzero((a == 0x7B) | (a == 0x5B))
        if np.max(np.searchsorted(at, stops) - np.searchsorted(at, starts)) > MAX_DEPTH:
            return None
    # other fields are inferred, not ignored: fields the sample missed are kept where they are strings (or null);
    # any other value (its JSON text, as orjson writes it) or a declared run's undeclared field: the per-line reader
    kept = dict.fromkeys([spec.text_field, *([spec.id_field] if spec.id_field else []), *spec.fields])
    options = pj.ParseOptions(
        explicit_schema=pa.schema([(name, pa.string()) for name in kept]), unexpected_field_behavior="infer"
    )
    try:
        table = pj.read_json(pa.BufferReader(chunk), pj.ReadOptions(use_threads=False, block_size=len(chunk)), options)
    except pa.ArrowException:
        return None
    text = table[spec.text_field]
    late = {name: table[name] for name in table.column_names if name not in kept}
    given = table[spec.id_field] if spec.id_field else None
    used = None if given is None else pc.fill_null(pc.greater(pc.binary_length(given), 0), False)
    if given is not None and not spec.declared and pc.any(pc.equal(given, "")).as_py():  # kept as a field
        late[spec.id_field] = pc.if_else(used, pa.nulls(len(given), pa.string()), given)
    # a line holding two objects (Arrow reads both) gives one row too many
    if (
        table.num_rows != len(starts)
        or text.null_count
        or (late and spec.declared)
        or not all(pa.types.is_string(c.type) or pa.types.is_null(c.type) for c in late.values())
        or len(set(columns + [field_column(name) for name in late])) < len(columns) + len(late)
    ):
        return None
    rid = pc.binary_join_element_wise(f"{key}-", pa.array(starts + offset).cast(pa.string()), "")
    if given is not None:  # a non-empty string id, else the derived one
        rid = pc.if_else(used, given, rid)
    rejections = _text_rejections(text, spec.max_doc_chars)
    rejections = rejections or [pa.nulls(table.num_rows, pa.string())] * 3
    out = {
        "id": rid,
        spec.text_field: text,
        **{field_column(f): table[f] for f in spec.fields},
        **{field_column(name): column.cast(pa.string()) for name, column in late.items()},
        **dict(zip((REJECT_STAGE, REJECT_REASON, REJECT_DETAIL), rejections)),
    }
    return pa.table(out)


def _text_rejections(text: pa.ChunkedArray, max_chars: int) -> list | None:
    """Stage, reason and detail of the empty (whitespace only, as ``str.strip`` sees it: Arrow's whitespace is
    Python's) and too long texts, as ``Batcher.add`` gives them; None when there are none."""
    nbytes = pc.binary_length(text).to_numpy()
    empty = (nbytes == 0) | pc.utf8_is_space(text).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero((nbytes > max_chars) & ~empty)  # a character takes one to four bytes
    chars = pc.utf8_length(text.take(rows)).to_numpy() if len(rows) else nbytes[rows]
    rows, chars = rows[chars > max_chars], chars[chars > max_chars]
    if not len(rows) and not empty.any():
        return None
    too_long = np.zeros(len(nbytes), bool)
    too_long[rows] = True
    none = pa.nulls(len(nbytes), pa.string())
    reason = pc.replace_with_mask(
        pc.if_else(empty, "empty_text", none), too_long, pa.array(["too_long"] * len(rows), pa.string())
    )
    details = [f"{n} characters > input.max_doc_chars={max_chars}" for n in chars.tolist()]
    detail = pc.replace_with_mask(none, too_long, pa.array(details, pa.string()))
    return [pc.if_else(pc.is_valid(reason), READ_STAGE, none), reason, detail]


def _scan(a: np.ndarray) -> tuple[np.ndarray, int]:
    """The offsets of the newlines in ``a`` and its number of ``{`` and ``[``, a cache-sized block at a time."""
    newlines, opening = [], 0
    for lo in range(0, len(a), SCAN_BYTES):
        block = a[lo : lo + SCAN_BYTES]
        newlines.append(np.flatnonzero(block == 10) + lo)
        opening += np.count_nonzero(block == 0x7B) + np.count_nonzero(block == 0x5B)
    return np.concatenate(newlines), opening


def _valid_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8, as Arrow checks a string (no copy)."""
    offsets = np.array([0, len(data)], np.int64)
    array = pa.Array.from_buffers(pa.large_string(), 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True
