"""Planning: list the input files, infer their formats, split them into read tasks and find the fields to keep."""

from __future__ import annotations

import codecs
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import orjson
import pyarrow.parquet as pq
import zstandard

from thresher.core.storage import Storage
from thresher.curate.config import InputConfig
from thresher.curate.readers.common import ReaderSpec, ReadTask, damaged
from thresher.curate.readers.json_array import JSON_ARRAY, load_json_array
from thresher.curate.readers.parquet import decode_error
from thresher.curate.readers.streams import COMPRESSED, compression, open_stream
from thresher.curate.readers.wet import WET_FIELDS

T = TypeVar("T")

TEXT_FILES_PER_TASK = 256
STREAM_RANGES = 8  # a compressed JSONL file is read in at most this many ranges (each decompresses what precedes it)
SAMPLE_BYTES = 256 << 10
SAMPLE_TRIES = 4  # a storage error in the planner's reads: tried again after 0.5 s, then twice as long each time
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".wet": "wet",
    ".warc": "wet",
}


class ReadError(Exception):
    """An input problem found while planning (no files, unknown format)."""


def infer_format(uri: str) -> str | None:
    name = uri.lower()
    for ext in COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
    for ext, fmt in EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    return None


def plan(cfg: InputConfig, storage: Storage) -> tuple[list[ReadTask], ReaderSpec]:
    """List the input files, split them into read tasks and decide the output columns."""
    files: list[tuple[str, int, str]] = []
    for pattern in cfg.paths:
        found = _sampled(pattern, lambda: storage.expand(pattern), damage=lambda e: False)
        if not found:
            raise ReadError(f"input.paths: no files match {pattern!r}")
        for uri, size in found:
            fmt = cfg.format or infer_format(uri)
            if fmt == "jsonl" and is_json_array(storage, uri):
                fmt = JSON_ARRAY
            if fmt is None:
                raise ReadError(f"input.format: cannot infer the format of {uri!r}; set input.format")
            files.append((uri, size, fmt))
    tasks: list[ReadTask] = []
    text_uris: list[str] = []
    text_sizes: list[int] = []
    text_bytes = 0
    streams = [
        (uri, size) for uri, size, fmt in files if fmt == "jsonl" and compression(uri) in (".gz", ".zst", ".zstd")
    ]
    with ThreadPoolExecutor(16) as pool:
        unpacked = dict(zip((u for u, _ in streams), pool.map(lambda f: _unpacked_size(storage, *f), streams)))
    for uri, size, fmt in files:
        if fmt == "jsonl" and compression(uri) is None and size > cfg.block_bytes:
            tasks += [
                ReadTask(fmt, (uri,), (size,), s, min(s + cfg.block_bytes, size))
                for s in range(0, size, cfg.block_bytes)
            ]
        elif fmt == "jsonl" and unpacked.get(uri, 0) > cfg.block_bytes:
            tasks += stream_ranges(uri, size, unpacked[uri], cfg.block_bytes)
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
    fields = tuple(f for f in fields if f not in (cfg.text_field, cfg.id_field))
    spec = ReaderSpec(cfg.text_field, cfg.id_field, fields, cfg.max_doc_chars, storage, cfg.fields is not None)
    return tasks, spec


def stream_ranges(uri: str, size: int, unpacked: int, block_bytes: int) -> list[ReadTask]:
    """A compressed JSONL file of about ``unpacked`` decompressed bytes as ranges of them (at most STREAM_RANGES,
    else of ``block_bytes``), the last open-ended: each range's task decompresses the file from its start and parses
    only the lines that begin in its range, so a file of few large streams is read by several tasks at once."""
    n = min(STREAM_RANGES, -(-unpacked // block_bytes))
    step = -(-unpacked // n)
    return [ReadTask("jsonl", (uri,), (size,), i * step, (i + 1) * step if i < n - 1 else -1) for i in range(n)]


def _unpacked_size(storage: Storage, uri: str, size: int) -> int:
    """The decompressed size a gzip (its trailer) or zstd file (its first frame's header) states, 0 when it states
    none or none that is plausible (a truncated file, several members or frames: the last range reads the rest). A
    storage error is tried again as the planner's other reads are, then fails the run."""

    def stated() -> int:
        fs, path = storage.resolve(uri)
        with fs.open_input_file(path) as f:
            if compression(uri) == ".gz":
                return struct.unpack("<I", f.read_at(4, size - 4))[0] if size >= 18 else 0
            return max(zstandard.frame_content_size(f.read_at(min(size, 18), 0)), 0)

    n = _sampled(uri, stated, damage=lambda e: isinstance(e, (zstandard.ZstdError, struct.error))) or 0
    return n if size <= n <= 64 * size else 0


def _sampled(uri: str, read: Callable[[], T], damage: Callable[[BaseException], bool] = damaged) -> T | None:
    """``read()`` of (a sample of) ``uri`` on the driver, or None when ``damage`` says its bytes are damaged (the read
    task rejects them). Any other OSError (the storage's) is tried again, SAMPLE_TRIES times in all, then fails the
    run naming the file."""
    for attempt in range(SAMPLE_TRIES):
        try:
            return read()
        except Exception as e:
            if damage(e):
                return None
            if not isinstance(e, OSError):
                raise
            if attempt == SAMPLE_TRIES - 1:
                raise OSError(f"{uri}: the planner's read failed {SAMPLE_TRIES} times: {e}") from e
        time.sleep(0.5 * 2**attempt)


def _head(storage: Storage, uri: str, nbytes: int) -> bytes:
    """The first ``nbytes`` (decompressed) bytes of ``uri``."""
    with open_stream(storage, uri) as f:
        return f.read(nbytes)


def is_json_array(storage: Storage, uri: str) -> bool:
    """A ``.json`` file whose first non-blank byte opens an array."""
    if not uri.lower().removesuffix(compression(uri) or "").endswith(".json"):
        return False
    head = _sampled(uri, lambda: _head(storage, uri, 4096))
    return head is not None and head.removeprefix(codecs.BOM_UTF8).lstrip()[:1] == b"["


def _discover_fields(files: list[tuple[str, int, str]], cfg: InputConfig, storage: Storage) -> list[str]:
    """The fields seen in a sample of the first files (first-seen order): the columns' order, and the fields the
    fast JSON path parses as strings."""
    seen: dict[str, None] = {}
    for uri, _, fmt in files[:8]:
        if fmt in (JSON_ARRAY, "jsonl"):
            if fmt == JSON_ARRAY:
                records = _sampled(uri, lambda: load_json_array(storage, uri)) or []
            else:
                head = _sampled(uri, lambda: _head(storage, uri, SAMPLE_BYTES)) or b""
                records = []
                for line in head.removeprefix(codecs.BOM_UTF8).splitlines()[:1000]:
                    try:
                        records.append(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        continue
            for rec in records[:1000]:
                if isinstance(rec, dict):
                    seen.update(dict.fromkeys(rec))
        elif fmt == "parquet":
            fs, path = storage.resolve(uri)
            schema = _sampled(uri, lambda: pq.read_schema(fs.open_input_file(path)), damage=decode_error)
            seen.update(dict.fromkeys(schema.names if schema is not None else ()))
        elif fmt == "text":
            seen["path"] = None
        elif fmt == "wet":
            seen.update(dict.fromkeys(WET_FIELDS.values()))
    return list(seen)
