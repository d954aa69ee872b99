"""Readers: plan read tasks over files (and byte ranges of large files) and turn each into Arrow batches.

A ``.json`` file whose content is one JSON array (as Hugging Face and LLaMA-Factory data sets ship) is read
whole, each element a record; other ``.json`` files are JSON Lines. A text field holding a chat conversation (a
list of ``{role, content}`` or ``{from, value}`` messages) is kept as its JSON text, as other non-string fields
are (``thresher.curate.fields`` reads it as a conversation).

Every record read becomes a row, including the ones that cannot be used: malformed JSON, invalid UTF-8,
a missing or non-string text field, an empty or too long document, or the unreadable remainder of a
truncated compressed file all become rows already rejected by the ``read`` stage, with the reason and
(truncated) raw input in ``detail``. Ids come from ``id_field`` when the record has one, otherwise they
are derived from the source URI and the record's byte offset (or row index), so they are stable.

Every field of every record is kept (non-string values as their JSON text), including fields that first appear
late in a file or in a file the planner did not sample: the sample only orders the columns and types the fast
path. With ``input.fields`` only the fields listed are kept, and the records holding others are counted per
field in the manifest (``metrics.read["undeclared.<field>"]``).

JSON Lines are read in chunks of whole lines, each parsed by Arrow where that surely gives the rows the per-line
reader (orjson) gives, and line by line otherwise.

Each read task measures the bytes it lost to damage, per file (``LostBytes``): a malformed, invalid UTF-8 or
non-object line its bytes with the line end (an array element its compact JSON text); a damaged range of an
uncompressed file from the offset of the chunk it lost to the range's end; a damaged compressed stream the stored
bytes the decompressor had not taken when the error surfaced, plus the decompressed bytes of the unfinished line it
had given (a truncated file loses only those: every stored byte was taken). The decompressor reads ahead by its
input buffer (8 KiB for gzip, bzip2 and xz on Python 3.11, 128 KiB for gzip from 3.12, 1 MiB for zstd): up to that
much more is lost than counted. A text file, a JSON array or a Parquet file that cannot be read loses its stored
size, a corrupt Parquet row group its compressed size in the footer. A line of a compressed file counts its
decompressed bytes against the file's stored ones: there the byte fraction overstates the loss by about the
compression ratio.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import zstandard
import pyarrow.parquet as pq
import xxhash

from thresher.core.storage import Storage
from thresher.curate.config import InputConfig
from thresher.curate.fields import conversation
from thresher.curate.stage import METRIC_PREFIX, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE

READ_STAGE = "read"
DETAIL_CHARS = 2000
ROWS_PER_BATCH = 1024
BYTES_PER_BATCH = 32 << 20
TEXT_FILES_PER_TASK = 256
SAMPLE_BYTES = 256 << 10
CHUNK_BYTES = 8 << 20  # JSON Lines are read (and parsed by Arrow where it can) in chunks of whole lines this big
MAX_DEPTH = 1024  # orjson's nesting limit: a deeper document is malformed JSON
SCAN_BYTES = 256 << 10  # numpy passes over a chunk go a cache-sized block at a time
COMPRESSED = (".gz", ".zst", ".zstd", ".bz2", ".xz")
JSON_ARRAY = "json_array"  # a .json file holding one array of records (detected, not configured)
EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".txt": "text", ".text": "text", ".md": "text",
    ".wet": "wet", ".warc": "wet",
}




def damaged(error: BaseException) -> bool:
    """Whether ``error``, raised while a file was read, says its bytes are damaged (a truncated or corrupt compressed
    stream, malformed contents, a corrupt Parquet file): those bytes become a reject. Any other error (a network or
    disk failure) is not the data's: it propagates, Ray runs the read task again, and after the retries the run fails
    without a manifest."""
    if isinstance(error, OSError):  # gzip's and bz2's words for corrupt data; any other OSError is I/O
        return isinstance(error, gzip.BadGzipFile) or str(error) == "Invalid data stream"
    return isinstance(error, (EOFError, ValueError, zlib.error, zstandard.ZstdError, lzma.LZMAError,
                              pa.ArrowException))


class ReadError(Exception):
    """An input problem found while planning (no files, unknown format)."""


@dataclass(frozen=True)
class ReadTask:
    """One unit of reading: a byte range of an uncompressed file, a whole file, or a group of text files."""

    format: str
    uris: tuple[str, ...]
    sizes: tuple[int, ...]  # the stored size of each file, as planned
    start: int = 0
    end: int = -1

    @property
    def nbytes(self) -> int:
        """The input bytes the task covers: its byte range, else its files' stored sizes."""
        return (self.end if self.end >= 0 else sum(self.sizes)) - self.start


class LostBytes(dict[str, int]):
    """The bytes a read task lost to damage, per file (module docstring)."""

    def add(self, uri: str, nbytes: int) -> None:
        if nbytes:
            self[uri] = self.get(uri, 0) + nbytes


class _Damage(NamedTuple):
    """A read error that says the bytes are damaged, and the bytes lost to it."""

    error: Exception
    nbytes: int


@dataclass(frozen=True)
class ReaderSpec:
    """What every read task needs to know, shipped to the Ray tasks."""

    text_field: str
    id_field: str | None
    fields: tuple[str, ...]  # the fields found in a sample (or declared): the first columns after id and text
    max_doc_chars: int
    storage: Storage = field(default_factory=Storage)
    declared: bool = False  # ``fields`` were declared (``input.fields``): no other field is kept

    @property
    def not_fields(self) -> tuple[str, ...]:
        """Record keys that are not kept as fields: the text and the id."""
        return (self.text_field, "id", *([self.id_field] if self.id_field else []))

    def record_fields(self, rec: dict) -> dict[str, str | None]:
        """The fields of ``rec`` to keep, as strings; undeclared fields count as ``UNDECLARED`` + name: 1."""
        if not self.declared:
            skip = self.not_fields
            return {k: _as_str(v) for k, v in rec.items() if k not in skip}
        out: dict = {f: _as_str(rec.get(f)) for f in self.fields}
        if len(rec) > len(out):
            skip = (*self.not_fields, *self.fields)
            out.update({UNDECLARED + k: 1 for k in rec if k not in skip})
        return out


UNDECLARED = f"{METRIC_PREFIX}read.undeclared."


def infer_format(uri: str) -> str | None:
    name = uri.lower()
    for ext in COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
    for ext, fmt in EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    return None


def _compression(uri: str) -> str | None:
    for ext in COMPRESSED:
        if uri.lower().endswith(ext):
            return ext
    return None


def plan(cfg: InputConfig, storage: Storage) -> tuple[list[ReadTask], ReaderSpec]:
    """List the input files, split them into read tasks and decide the output columns."""
    files: list[tuple[str, int, str]] = []
    for pattern in cfg.paths:
        found = storage.expand(pattern)
        if not found:
            raise ReadError(f"input.paths: no files match {pattern!r}")
        for uri, size in found:
            fmt = cfg.format or infer_format(uri)
            if fmt == "jsonl" and _is_json_array(storage, uri):
                fmt = JSON_ARRAY
            if fmt is None:
                raise ReadError(f"input.format: cannot infer the format of {uri!r}; set input.format")
            files.append((uri, size, fmt))
    tasks: list[ReadTask] = []
    text_uris: list[str] = []
    text_sizes: list[int] = []
    text_bytes = 0
    for uri, size, fmt in files:
        if fmt == "jsonl" and _compression(uri) is None and size > cfg.block_bytes:
            tasks += [ReadTask(fmt, (uri,), (size,), s, min(s + cfg.block_bytes, size))
                      for s in range(0, size, cfg.block_bytes)]
        elif fmt == "text":
            text_uris.append(uri)
            text_sizes.append(size)
            text_bytes += size
            if len(text_uris) >= TEXT_FILES_PER_TASK or text_bytes >= cfg.block_bytes:
                tasks.append(ReadTask(fmt, tuple(text_uris), tuple(text_sizes)))
                text_uris, text_sizes, text_bytes = [], [], 0
        else:
            tasks.append(ReadTask(fmt, (uri,), (size,)))
    if text_uris:
        tasks.append(ReadTask("text", tuple(text_uris), tuple(text_sizes)))
    fields = tuple(cfg.fields) if cfg.fields is not None else _discover_fields(files, cfg, storage)
    fields = tuple(f for f in fields if f not in (cfg.text_field, "id", cfg.id_field))
    spec = ReaderSpec(cfg.text_field, cfg.id_field, fields, cfg.max_doc_chars, storage, cfg.fields is not None)
    return tasks, spec


def _is_json_array(storage: Storage, uri: str) -> bool:
    """A ``.json`` file whose first non-blank byte opens an array."""
    if not uri.lower().removesuffix(_compression(uri) or "").endswith(".json"):
        return False
    try:
        with _open_stream(storage, uri) as f:
            return f.read(4096).lstrip()[:1] == b"["
    except Exception as e:
        if not damaged(e):
            raise
        return False


def _discover_fields(files: list[tuple[str, int, str]], cfg: InputConfig, storage: Storage) -> list[str]:
    """The fields seen in a sample of the first files (first-seen order): the columns' order, and the fields the
    fast JSON path parses as strings."""
    seen: dict[str, None] = {}
    for uri, _, fmt in files[:8]:
        if fmt == JSON_ARRAY:
            try:
                records = _json_array(storage, uri)
            except Exception as e:
                if not damaged(e):
                    raise
                continue
            for rec in records[:1000]:
                if isinstance(rec, dict):
                    seen.update(dict.fromkeys(rec))
        elif fmt == "jsonl":
            try:
                with _open_stream(storage, uri) as f:
                    head = f.read(SAMPLE_BYTES)
            except Exception as e:
                if not damaged(e):
                    raise
                continue
            for line in head.splitlines()[:1000]:
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(rec, dict):
                    seen.update(dict.fromkeys(rec))
        elif fmt == "parquet":
            fs, path = storage.resolve(uri)
            try:
                seen.update(dict.fromkeys(pq.read_schema(fs.open_input_file(path)).names))
            except Exception as e:
                if not damaged(e):
                    raise
        elif fmt == "text":
            seen["path"] = None
        elif fmt == "wet":
            seen.update(dict.fromkeys(WET_FIELDS.values()))
    return list(seen)


def _open_stream(storage: Storage, uri: str):
    """A decompressing binary stream over the whole file."""
    fs, path = storage.resolve(uri)
    return _decompressing(fs.open_input_stream(path, compression=None), uri)


def _decompressing(raw, uri: str):
    """A binary stream of ``raw``'s bytes, decompressed as ``uri``'s extension says."""
    comp = _compression(uri)
    if comp == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if comp in (".zst", ".zstd"):
        return io.BufferedReader(_ZstdStream(raw), buffer_size=1 << 20)
    if comp == ".bz2":
        return bz2.BZ2File(raw)
    if comp == ".xz":
        return lzma.LZMAFile(raw)
    return io.BufferedReader(raw, buffer_size=1 << 20)


class _Counted:
    """A stored (compressed) stream that counts the bytes a decompressor took from it."""

    def __init__(self, raw):
        self.raw, self.taken = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.taken += len(data)
        return data

    def close(self) -> None:
        self.raw.close()


class _ZstdStream(io.RawIOBase):
    """Decompresses a stream of concatenated zstd frames; one that ends inside a frame (a truncated file) raises
    EOFError, where zstandard's own stream reader would just end."""

    def __init__(self, raw):
        self.raw, self.frame = raw, zstandard.ZstdDecompressor().decompressobj()
        self.in_frame, self.pending, self.offset = False, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.offset >= len(self.pending):
            chunk = self.raw.read(1 << 20)
            if not chunk:
                if self.in_frame:
                    raise EOFError("compressed data ends inside a zstd frame (truncated file)")
                return 0
            self.pending, self.offset = self._decompress(chunk), 0
        n = min(len(buffer), len(self.pending) - self.offset)
        buffer[:n] = self.pending[self.offset:self.offset + n]
        self.offset += n
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            self.in_frame = True
            out.append(self.frame.decompress(data))
            data = b""
            if self.frame.eof:
                data, self.in_frame = self.frame.unused_data, False
                self.frame = zstandard.ZstdDecompressor().decompressobj()
        return b"".join(out)

    def close(self) -> None:
        self.raw.close()
        super().close()


def _uri_key(uri: str) -> str:
    return xxhash.xxh64_hexdigest(uri.encode())[:12]


class _Batcher:
    """Accumulates rows into Arrow tables of bounded size; a field first seen in a later row becomes a column, null
    in the rows before."""

    def __init__(self, spec: ReaderSpec):
        self.spec = spec
        self._reset()

    def _reset(self):
        self.rows: dict[str, list] = {c: [] for c in ("id", self.spec.text_field, REJECT_STAGE, REJECT_REASON,
                                                       REJECT_DETAIL)}
        self.fields: dict[str, list] = {f: [] for f in self.spec.fields}
        self.nbytes = 0

    def add(self, rid: str, text, fields: dict, reason: str | None = None, detail: str | None = None):
        if reason is None and isinstance(text, str):
            if not text.strip():
                reason = "empty_text"
            elif len(text) > self.spec.max_doc_chars:
                reason, detail = "too_long", f"{len(text)} characters > input.max_doc_chars={self.spec.max_doc_chars}"
        r = self.rows
        n = len(r["id"])
        r["id"].append(rid)
        r[self.spec.text_field].append(text)
        r[REJECT_STAGE].append(READ_STAGE if reason else None)
        r[REJECT_REASON].append(reason)
        r[REJECT_DETAIL].append(detail[:DETAIL_CHARS] if detail else None)
        columns = self.fields
        for name, value in fields.items():
            column = columns.get(name)
            if column is None:
                column = columns[name] = [0 if name.startswith(METRIC_PREFIX) else None] * n
            column.append(value)
        if len(fields) < len(columns):
            for name, column in columns.items():
                if len(column) == n:
                    column.append(0 if name.startswith(METRIC_PREFIX) else None)
        self.nbytes += len(text) if isinstance(text, str) else 0

    def full(self) -> bool:
        return len(self.rows["id"]) >= ROWS_PER_BATCH or self.nbytes >= BYTES_PER_BATCH

    def flush(self) -> pa.Table | None:
        if not self.rows["id"]:
            return None
        r, text = self.rows, self.spec.text_field
        columns = {"id": r["id"], text: r[text], **self.fields,
                   **{c: r[c] for c in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)}}
        table = pa.table({c: pa.array(v, type=pa.int64() if c.startswith(METRIC_PREFIX) else pa.string())
                          for c, v in columns.items()})
        self._reset()
        return table


def _as_str(value) -> str | None:
    """A field's value as text: strings as they are, anything else as its JSON text."""
    if value is None or isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (it reads 1,024 levels, writes 255)
        return _deep_json(value)


def _deep_json(value) -> str:
    """Compact JSON text of a value nested too deep for orjson, written without recursion."""
    out, todo = [], [value]
    while todo:
        item = todo.pop()
        if isinstance(item, _Text):
            out.append(item)
        elif isinstance(item, (dict, list)):
            pieces = [_Text("{" if isinstance(item, dict) else "[")]
            for i, entry in enumerate(item.items() if isinstance(item, dict) else item):
                pieces += [_Text(",")] if i else []
                pieces += [_Text(orjson.dumps(entry[0]).decode() + ":"), entry[1]] if isinstance(item, dict) else [entry]
            pieces.append(_Text("}" if isinstance(item, dict) else "]"))
            todo += reversed(pieces)
        else:
            out.append(orjson.dumps(item).decode())
    return "".join(out)


class _Text(str):
    """A piece of JSON text already written (``_deep_json``)."""


def _record_id(spec: ReaderSpec, rec: dict, fallback: str) -> str:
    if spec.id_field:
        v = rec.get(spec.id_field)
        if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v):
            return str(v)
    return fallback


def _add_json_line(b: _Batcher, spec: ReaderSpec, key: str, offset: int, line: bytes) -> bool:
    """The record of ``line`` into ``b``; whether the line is damaged (malformed JSON, invalid UTF-8, not an
    object)."""
    rid = f"{key}-{offset}"
    try:
        rec = orjson.loads(line)
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
    rid = _record_id(spec, rec, rid)
    text = rec.get(spec.text_field)
    if text is None:
        b.add(rid, None, fields, "missing_text", f"no field {spec.text_field!r}")
    elif isinstance(text, list) and conversation(text) is not None:
        b.add(rid, orjson.dumps(text).decode(), fields)
    elif not isinstance(text, str):
        b.add(rid, None, fields, "non_string_text", f"{spec.text_field} is {type(text).__name__}")
    else:
        b.add(rid, text, fields)
    return False


def _json_array(storage: Storage, uri: str) -> list:
    with _open_stream(storage, uri) as f:
        records = orjson.loads(f.read())
    if not isinstance(records, list):
        raise ValueError(f"{uri} is not a JSON array")
    return records


def _read_json_array(task: ReadTask, spec: ReaderSpec, lost: LostBytes) -> Iterator[pa.Table]:
    """A whole file holding one JSON array; element i is the record at offset i."""
    uri = task.uris[0]
    key = _uri_key(uri)
    b = _Batcher(spec)
    try:
        records = _json_array(spec.storage, uri)
    except Exception as e:
        if not damaged(e):
            raise
        b.add(f"{key}-unreadable", None, {}, "unreadable_file", f"{uri}: {e}")
        lost.add(uri, task.sizes[0])
        records = []
    for i, rec in enumerate(records):
        if _add_json_line(b, spec, key, i, element := orjson.dumps(rec)):
            lost.add(uri, len(element))
        if b.full():
            yield b.flush()
    if (t := b.flush()) is not None:
        yield t


def _read_jsonl(task: ReadTask, spec: ReaderSpec, lost: LostBytes, fast: bool = True) -> Iterator[pa.Table]:
    """JSON Lines, a chunk of whole lines at a time: parsed by Arrow where ``fast`` and the chunk allows it
    (``_parse_chunk``), otherwise line by line with orjson; both give the same rows."""
    uri = task.uris[0]
    key = _uri_key(uri)
    b = _Batcher(spec)
    fs, path = spec.storage.resolve(uri)
    if _compression(uri) is None:
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
        stored = _Counted(fs.open_input_stream(path, compression=None))
        f = _decompressing(stored, uri)
        chunks = _stream_chunks(f, stored, task.sizes[0])
    try:
        for offset, chunk, damage in chunks:
            table = _parse_chunk(spec, key, offset, chunk) if fast and chunk else None
            if table is not None:
                if (t := b.flush()) is not None:
                    yield t
                yield from _slices(table, spec.text_field)
            else:
                lost.add(uri, (yield from _add_json_lines(b, spec, key, offset, chunk)))
            if damage is not None:
                offset += len(chunk)
                b.add(f"{key}-{offset}-unreadable", None, {}, "unreadable_file",
                      f"{uri} from offset {offset}: {damage.error}")
                lost.add(uri, damage.nbytes)
            del chunk  # before the next is read: with two alive, the allocator hands their memory back each time
    finally:
        f.close()
        stored.close()  # a gzip, bzip2 or xz stream leaves it open
    if (t := b.flush()) is not None:
        yield t


def _line_chunks(f, pos: int, end: int) -> Iterator[tuple[int, bytes, _Damage | None]]:
    """``(offset, chunk, damage)``: the whole lines of the uncompressed file ``f`` from offset ``pos`` in chunks of
    about CHUNK_BYTES, up to the line that holds byte ``end - 1``. A damaged read ends them, losing the chunk it was
    reading and the rest of the range."""
    while pos < end:
        try:
            chunk = bytearray(min(CHUNK_BYTES, end - pos))  # read into, then the rest of its last line appended
            del chunk[f.readinto(chunk):]
            if chunk and not chunk.endswith(b"\n"):
                chunk += f.readline()
        except Exception as e:
            if not damaged(e):
                raise
            yield pos, b"", _Damage(e, end - pos)
            return
        if not chunk:
            return
        yield pos, chunk, None
        pos += len(chunk)


def _stream_chunks(f, stored: _Counted, size: int) -> Iterator[tuple[int, bytes, _Damage | None]]:
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
            yield pos, held[:whole], _Damage(e, size - stored.taken + len(held) - whole)
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


def _add_json_lines(b: _Batcher, spec: ReaderSpec, key: str, offset: int,
                    chunk: bytes) -> Generator[pa.Table, None, int]:
    """The per-line reader: each non-blank line of ``chunk`` (at ``offset``) into ``b``, yielding full batches;
    returns the bytes of the damaged lines, line ends included."""
    start, damaged_bytes = 0, 0
    while start < len(chunk):
        stop = chunk.find(b"\n", start) + 1 or len(chunk)
        line = chunk[start:stop]
        if line.strip() and _add_json_line(b, spec, key, offset + start, line.rstrip(b"\r\n")):
            damaged_bytes += len(line)
        if b.full():
            yield b.flush()
        start = stop
    return damaged_bytes


def _parse_chunk(spec: ReaderSpec, key: str, offset: int, chunk: bytes) -> pa.Table | None:
    """The rows of ``chunk`` (non-empty, whole lines at ``offset``) parsed by Arrow, or None unless they are surely
    the rows the per-line reader gives: valid UTF-8 without NUL (which ends Arrow's input), every line blank (empty
    or a lone ``\\r``) or one object from ``{`` to ``}`` nesting no deeper than orjson allows, text, id and fields
    strings (or null) and every text present."""
    columns = ["id", spec.text_field, *spec.fields, REJECT_STAGE, REJECT_REASON, REJECT_DETAIL]
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
    options = pj.ParseOptions(explicit_schema=pa.schema([(name, pa.string()) for name in kept]),
                              unexpected_field_behavior="infer")
    try:
        table = pj.read_json(pa.BufferReader(chunk), pj.ReadOptions(use_threads=False, block_size=len(chunk)), options)
    except pa.ArrowException:
        return None
    text = table[spec.text_field]
    late = [name for name in table.column_names if name not in kept and name != "id"]
    # a line holding two objects (Arrow reads both) gives one row too many
    if table.num_rows != len(starts) or text.null_count or (late and spec.declared) or not all(
            pa.types.is_string(table[name].type) or pa.types.is_null(table[name].type) for name in late):
        return None
    rid = pc.binary_join_element_wise(f"{key}-", pa.array(starts + offset).cast(pa.string()), "")
    if spec.id_field:  # a non-empty string id, else the derived one
        given = table[spec.id_field]
        rid = pc.if_else(pc.fill_null(pc.greater(pc.binary_length(given), 0), False), given, rid)
    rejections = _text_rejections(text, spec.max_doc_chars)
    rejections = rejections or [pa.nulls(table.num_rows, pa.string())] * 3
    late = {name: table[name].cast(pa.string()) for name in late}
    out = {"id": rid, spec.text_field: text, **{f: table[f] for f in spec.fields}, **late,
           **dict(zip((REJECT_STAGE, REJECT_REASON, REJECT_DETAIL), rejections))}
    return pa.table({c: out[c] for c in [*columns[:-3], *late, *columns[-3:]]})


def _text_rejections(text: pa.ChunkedArray, max_chars: int) -> list | None:
    """Stage, reason and detail of the empty (whitespace only, as ``str.strip`` sees it: Arrow's whitespace is
    Python's) and too long texts, as ``_Batcher.add`` gives them; None when there are none."""
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
    reason = pc.replace_with_mask(pc.if_else(empty, "empty_text", none), too_long,
                                  pa.array(["too_long"] * len(rows), pa.string()))
    details = [f"{n} characters > input.max_doc_chars={max_chars}" for n in chars.tolist()]
    detail = pc.replace_with_mask(none, too_long, pa.array(details, pa.string()))
    return [pc.if_else(pc.is_valid(reason), READ_STAGE, none), reason, detail]


def _scan(a: np.ndarray) -> tuple[np.ndarray, int]:
    """The offsets of the newlines in ``a`` and its number of ``{`` and ``[``, a cache-sized block at a time."""
    newlines, opening = [], 0
    for lo in range(0, len(a), SCAN_BYTES):
        block = a[lo:lo + SCAN_BYTES]
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


def _slices(table: pa.Table, text_field: str) -> Iterator[pa.Table]:
    """``table`` (no text null) in batches bounded as ``_Batcher``'s are."""
    ends = np.cumsum(pc.binary_length(table[text_field]).to_numpy())
    lo = 0
    while lo < table.num_rows:
        by_bytes = np.searchsorted(ends, (ends[lo - 1] if lo else 0) + BYTES_PER_BATCH) + 1
        hi = min(lo + ROWS_PER_BATCH, by_bytes, table.num_rows)
        yield table.slice(lo, hi - lo)
        lo = hi


def _read_text(task: ReadTask, spec: ReaderSpec, lost: LostBytes) -> Iterator[pa.Table]:
    """One record per file; a file that cannot be read or decoded loses its stored size."""
    b = _Batcher(spec)
    for uri, size in zip(task.uris, task.sizes):
        rid = f"{_uri_key(uri)}-0"
        try:
            with _open_stream(spec.storage, uri) as f:
                data = f.read()
        except Exception as e:
            if not damaged(e):
                raise
            b.add(rid, None, {"path": uri}, "unreadable_file", f"{uri}: {e}")
            lost.add(uri, size)
            continue
        try:
            b.add(rid, data.decode("utf-8"), {"path": uri})
        except UnicodeDecodeError as e:
            b.add(rid, None, {"path": uri}, "invalid_utf8", f"{uri}: {e}")
            lost.add(uri, size)
        if b.full():
            yield b.flush()
    if (t := b.flush()) is not None:
        yield t


def _read_parquet(task: ReadTask, spec: ReaderSpec, lost: LostBytes) -> Iterator[pa.Table]:
    """Row group by row group; a file whose footer cannot be read loses its size, a corrupt row group its
    compressed size."""
    uri = task.uris[0]
    key = _uri_key(uri)
    fs, path = spec.storage.resolve(uri)
    b = _Batcher(spec)
    try:
        pf = pq.ParquetFile(fs.open_input_file(path))
    except Exception as e:
        if not damaged(e):
            raise
        b.add(f"{key}-unreadable", None, {}, "unreadable_file", f"{uri}: {e}")
        lost.add(uri, task.sizes[0])
        yield b.flush()
        return
    row = 0
    for rg in range(pf.num_row_groups):
        try:
            records = pf.read_row_group(rg).to_pylist()
        except Exception as e:
            if not damaged(e):
                raise
            b.add(f"{key}-rg{rg}-unreadable", None, {}, "unreadable_file", f"{uri} row group {rg}: {e}")
            group = pf.metadata.row_group(rg)
            lost.add(uri, sum(group.column(c).total_compressed_size for c in range(group.num_columns)))
            continue
        for rec in records:
            fields = spec.record_fields(rec)
            rid = _record_id(spec, rec, f"{key}-{row}")
            row += 1
            text = rec.get(spec.text_field)
            if text is None:
                b.add(rid, None, fields, "missing_text", f"no field {spec.text_field!r}")
            elif not isinstance(text, str):
                b.add(rid, None, fields, "non_string_text", f"{spec.text_field} is {type(text).__name__}")
            else:
                b.add(rid, text, fields)
            if b.full():
                yield b.flush()
    if (t := b.flush()) is not None:
        yield t


WET_FIELDS = {
    b"warc-target-uri": "url",
    b"warc-date": "warc_date",
    b"warc-record-id": "warc_record_id",
    b"warc-identified-content-language": "warc_languages",
}


def _read_wet(task: ReadTask, spec: ReaderSpec, lost: LostBytes) -> Iterator[pa.Table]:
    """WARC/WET records of type ``conversion`` (extracted text); other record types are skipped. A damaged record
    ends the file and loses the bytes from its start (in a compressed file: the decompressed bytes of it read, a
    partly read header line not counted, plus the stored bytes the decompressor had not taken); an invalid UTF-8
    body loses its bytes."""
    uri = task.uris[0]
    key = _uri_key(uri)
    b = _Batcher(spec)
    fs, path = spec.storage.resolve(uri)
    raw = fs.open_input_stream(path, compression=None)
    compressed = _compression(uri) is not None
    stored = _Counted(raw) if compressed else raw
    pos = 0
    with _decompressing(stored, uri) as f, raw:
        while True:
            start = pos
            try:
                line = f.readline()
                if not line:
                    break
                pos += len(line)
                if not line.startswith(b"WARC/"):
                    continue
                headers: dict[bytes, bytes] = {}
                while (h := f.readline()) not in (b"\r\n", b"\n", b""):
                    pos += len(h)
                    name, _, value = h.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                pos += len(h)
                length = int(headers.get(b"content-length", b"0"))
                body = bytearray()  # read a block at a time: a damaged stream leaves what it gave here
                while len(body) < length and (block := f.read1(length - len(body))):
                    body += block
                    pos += len(block)
                if len(body) < length:
                    raise EOFError(f"record at {start} truncated ({len(body)} of {length} bytes)")
            except Exception as e:
                if not damaged(e):
                    raise
                b.add(f"{key}-{pos}-unreadable", None, {}, "unreadable_file", f"{uri} from offset {pos}: {e}")
                untaken = task.sizes[0] - (stored.taken if compressed else pos)
                lost.add(uri, untaken + pos - start)
                break
            if headers.get(b"warc-type") != b"conversion":
                continue
            fields = {name: headers[h].decode("utf-8", "replace") for h, name in WET_FIELDS.items() if h in headers}
            rid = fields.get("warc_record_id", "").strip("<>") or f"{key}-{start}"
            try:
                b.add(rid, body.decode("utf-8"), fields)
            except UnicodeDecodeError as e:
                b.add(rid, None, fields, "invalid_utf8", str(e))
                lost.add(uri, len(body))
            if b.full():
                yield b.flush()
    if (t := b.flush()) is not None:
        yield t


READERS = {"jsonl": _read_jsonl, JSON_ARRAY: _read_json_array, "text": _read_text, "parquet": _read_parquet,
           "wet": _read_wet}


def read_task(task: ReadTask, spec: ReaderSpec, lost: LostBytes) -> Iterator[pa.Table]:
    """Arrow batches for one read task; every record read appears in exactly one row, and ``lost`` gets the bytes
    lost to damage."""
    yield from READERS[task.format](task, spec, lost)
