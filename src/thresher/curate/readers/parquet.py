"""Parquet files, row group by row group.

Arrow reports a corrupt page, footer or compressed block as a plain OSError or ArrowInvalid, the types a failing
disk or network gives too. A storage error (``storage_error``) propagates, so Ray runs the read task again; any other
read error is confirmed by reading the same footer or row group again from a fresh file handle: the same error
again is damage, a clean second read is used as it is, and two reads that disagree are the storage's (an OSError
naming the file)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.curate.readers.common import (
    Batcher,
    LostBytes,
    ReaderSpec,
    ReadTask,
    damaged,
    field_text,
    missing_text,
    record_id,
    storage_error,
    uri_key,
)

T = TypeVar("T")


def decode_error(error: BaseException) -> bool:
    """Whether ``error``, raised while a Parquet file was read, may be its bytes' (to be confirmed by a second
    read): damage as other formats see it, or a plain OSError that is not the storage's."""
    return damaged(error) or (isinstance(error, OSError) and not storage_error(error))


def confirmed(uri: str, read: Callable[[], T], reread: Callable[[], T]) -> tuple[T | None, Exception | None]:
    """``(read(), None)``; after a decode error ``(reread(), None)``, or ``(None, error)`` when the second read (from
    a fresh file handle) raised the same error again: the bytes are damaged. Any other error propagates."""
    try:
        return read(), None
    except Exception as e:
        if not decode_error(e):
            raise
        first = e
    try:
        return reread(), None
    except Exception as e:
        if type(e) is type(first) and str(e) == str(first):
            return None, e
        if not decode_error(e):
            raise
        raise OSError(f"{uri}: two reads of the same bytes failed differently ({first}; then {e})") from e


def read_parquet(task: ReadTask, spec: ReaderSpec, lost: LostBytes) -> Iterator[pa.Table]:
    """Row group by row group; a file whose footer cannot be read loses its size, a corrupt row group its
    compressed size (its rows' ids are skipped: the other rows keep theirs)."""
    uri = task.uris[0]
    key = uri_key(uri)
    fs, path = spec.storage.resolve(uri)
    b = Batcher(spec)

    def open_file() -> pq.ParquetFile:
        return pq.ParquetFile(fs.open_input_file(path))

    pf, error = confirmed(uri, open_file, open_file)
    if error is not None:
        b.add(f"{key}-unreadable", None, {}, "unreadable_file", f"{uri}: {error}")
        lost.add(uri, task.sizes[0])
        yield b.flush()
        return
    row = 0
    for rg in range(pf.num_row_groups):
        records, error = confirmed(
            uri, lambda: pf.read_row_group(rg).to_pylist(), lambda: open_file().read_row_group(rg).to_pylist()
        )
        if error is not None:
            b.add(f"{key}-rg{rg}-unreadable", None, {}, "unreadable_file", f"{uri} row group {rg}: {error}")
            group = pf.metadata.row_group(rg)
            lost.add(uri, sum(group.column(c).total_compressed_size for c in range(group.num_columns)))
            row += group.num_rows
            continue
        for rec in records:
            fields = spec.record_fields(rec)
            rid = record_id(spec, rec, f"{key}-{row}")
            row += 1
            text = rec.get(spec.text_field)
            if isinstance(text, bytes):  # a binary column (as some writers store strings): its UTF-8 text
                text = _utf8(text)
            if text is None:
                b.add(rid, None, fields, "missing_text", missing_text(spec.text_field, rec))
            elif isinstance(text, bytes):  # rejected with its bytes in base64
                b.add(rid, field_text(text), fields, "invalid_utf8", f"{spec.text_field} is not UTF-8")
            elif not isinstance(text, str):  # rejected with its value's JSON text
                b.add(rid, field_text(text), fields, "non_string_text", f"{spec.text_field} is {type(text).__name__}")
            else:
                b.add(rid, text, fields)
            if b.full():
                yield b.flush()
    if (t := b.flush()) is not None:
        yield t


def _utf8(data: bytes) -> str | bytes:
    """``data`` decoded as UTF-8, or as it is where it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data
