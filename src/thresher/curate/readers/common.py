"""What every format's reader shares: read tasks, the reader spec, the damage accounting (which errors are the data's,
the bytes lost) and the batcher that turns records into Arrow tables."""

from __future__ import annotations

import gzip
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
import zstandard

from thresher.core.json_values import json_text
from thresher.core.storage import Storage
from thresher.curate.readers.streams import compression
from thresher.curate.stage import (
    ID,
    INTERNAL_COLUMNS,
    KEY,
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    REPORT_PREFIX,
    SIDE_PREFIXES,
    side_column,
)

READ_STAGE = "read"
RENAMED = "record_"  # + a record's field named like a column of thresher's own: the column it is kept in
DETAIL_CHARS = 2000
ROWS_PER_BATCH = 1024
BYTES_PER_BATCH = 32 << 20


def damaged(error: BaseException) -> bool:
    """Whether ``error``, raised while a file was read, says its bytes are damaged (a truncated or corrupt compressed
    stream, malformed contents, a corrupt Parquet file as Arrow says it): those bytes become a reject. Any other error
    (a network or disk failure) is not the data's: it propagates, Ray runs the read task again, and after the retries
    the run fails without a manifest. (Arrow reports some Parquet damage as a plain OSError: ``readers.parquet``
    tells those apart.)"""
    if isinstance(error, OSError):  # gzip's and bz2's words for corrupt data; any other OSError is I/O
        return isinstance(error, gzip.BadGzipFile) or str(error) == "Invalid data stream"
    return isinstance(error, (EOFError, ValueError, zlib.error, zstandard.ZstdError, lzma.LZMAError, pa.ArrowException))


STORAGE_WORDS = (
    "aws error",
    "curl",
    "connection",
    "timed out",
    "timeout",
    "reset by peer",
    "broken pipe",
    "network",
    "socket",
    "unreachable",
    "temporarily unavailable",
    "throttl",
    "slow down",
    "service unavailable",
)


def storage_error(error: BaseException) -> bool:
    """Whether ``error`` is the storage's (a failing disk, network or object store), surely not the bytes': an
    OSError of a subclass (``ConnectionError``, ``TimeoutError``, ...), with an errno, or in the words of the
    filesystem or network layer (S3's "AWS Error ... curl"). Arrow's Parquet decoder raises a plain OSError with
    none of these."""
    if not isinstance(error, OSError) or damaged(error):
        return False
    message = str(error).lower()
    return type(error) is not OSError or error.errno is not None or any(w in message for w in STORAGE_WORDS)


@dataclass(frozen=True)
class ReadTask:
    """One unit of reading: a byte range of an uncompressed file, a range of a compressed JSONL file's decompressed
    bytes (the last one open-ended: ``end`` -1), a whole file, or a group of text files."""

    format: str
    uris: tuple[str, ...]
    sizes: tuple[int, ...]  # the stored size of each file, as planned
    start: int = 0
    end: int = -1

    @property
    def nbytes(self) -> int:
        """The stored bytes the task covers: its byte range, else its files' stored sizes (a compressed file read in
        ranges: its first range counts them all)."""
        if compression(self.uris[0]) is not None:
            return sum(self.sizes) if self.start == 0 else 0
        return (self.end if self.end >= 0 else sum(self.sizes)) - self.start


class LostBytes(dict[str, int]):
    """The bytes a read task lost to damage, per file (the package's docstring)."""

    def add(self, uri: str, nbytes: int) -> None:
        if nbytes:
            self[uri] = self.get(uri, 0) + nbytes


class Damage(NamedTuple):
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

    def record_fields(self, rec: dict) -> dict[str, str | None]:
        """The fields of ``rec`` to keep, as strings, by column (:func:`field_column`): all but the text and the id
        field, unless its value is there but gave no id (:func:`record_id`); with declared fields those only, and each
        other field but the id field counts as ``UNDECLARED`` + name: 1."""
        skip = {self.text_field}
        value = rec.get(self.id_field) if self.id_field is not None else None
        if self.id_field is not None and (self.declared or value is None or usable_id(value)):
            skip.add(self.id_field)
        if not self.declared:
            return {field_column(k): field_text(v) for k, v in rec.items() if k not in skip}
        out: dict = {field_column(f): field_text(rec.get(f)) for f in self.fields}
        skip.update(self.fields)
        out.update({UNDECLARED + k: 1 for k in rec.keys() - skip})
        return out


def field_column(name: str) -> str:
    """The column a record's field ``name`` is kept in: ``name``, or ``RENAMED`` + ``name`` where a column of
    thresher's own has that name (``id``, which every row has; ``_key``, ``_split``, ``_reject_*``, ``_report.*``
    and the side columns)."""
    internal = name in (ID, KEY, *INTERNAL_COLUMNS) or name.startswith((REPORT_PREFIX, *SIDE_PREFIXES))
    return RENAMED + name if internal else name


UNDECLARED = side_column("metric", "read.undeclared.")  # + the field: counted, never written
METRIC = side_column("metric", "")


def uri_key(uri: str) -> str:
    return xxhash.xxh64_hexdigest(uri.encode())[:12]


class Batcher:
    """Accumulates rows into Arrow tables of bounded size; a field first seen in a later row becomes a column, null
    in the rows before."""

    def __init__(self, spec: ReaderSpec):
        self.spec = spec
        self._reset()

    def _reset(self):
        self.rows: dict[str, list] = {
            c: [] for c in ("id", self.spec.text_field, REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)
        }
        self.fields: dict[str, list] = {field_column(f): [] for f in self.spec.fields}
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
                column = columns[name] = [0 if name.startswith(METRIC) else None] * n
            column.append(value)
        if len(fields) < len(columns):
            for name, column in columns.items():
                if len(column) == n:
                    column.append(0 if name.startswith(METRIC) else None)
        self.nbytes += len(text) if isinstance(text, str) else 0

    def full(self) -> bool:
        return len(self.rows["id"]) >= ROWS_PER_BATCH or self.nbytes >= BYTES_PER_BATCH

    def flush(self) -> pa.Table | None:
        if not self.rows["id"]:
            return None
        r, text = self.rows, self.spec.text_field
        columns = {
            "id": r["id"],
            text: r[text],
            **self.fields,
            **{c: r[c] for c in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)},
        }
        table = pa.table(
            {c: pa.array(v, type=pa.int64() if c.startswith(METRIC) else pa.string()) for c, v in columns.items()}
        )
        self._reset()
        return table


def slices(table: pa.Table, text_field: str) -> Iterator[pa.Table]:
    """``table`` (no text null) in batches bounded as ``Batcher``'s are."""
    ends = np.cumsum(pc.binary_length(table[text_field]).to_numpy())
    lo = 0
    while lo < table.num_rows:
        by_bytes = np.searchsorted(ends, (ends[lo - 1] if lo else 0) + BYTES_PER_BATCH) + 1
        hi = min(lo + ROWS_PER_BATCH, by_bytes, table.num_rows)
        yield table.slice(lo, hi - lo)
        lo = hi


def field_text(value) -> str | None:
    """A field's value as text: strings as they are, anything else as its JSON text."""
    return value if value is None or isinstance(value, str) else json_text(value)


def missing_text(text_field: str, rec: dict) -> str:
    """The detail of a record without text: the field absent, or null."""
    return f"{text_field} is null" if text_field in rec else f"no field {text_field!r}"


def usable_id(value) -> bool:
    """Whether an id field's value gives the record's id: a non-empty string or an integer."""
    return isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) != ""


def record_id(spec: ReaderSpec, rec: dict, fallback: str) -> str:
    """The record's id: its ``id_field``'s value where usable (:func:`usable_id`), else ``fallback``."""
    value = rec.get(spec.id_field) if spec.id_field else None
    return str(value) if usable_id(value) else fallback
