"""Per-string figures of Arrow string arrays (or chunked arrays): whitespace tokens, characters and XXH64, computed
on their UTF-8 buffers by the compiled kernels of :mod:`thresher.curate.report.kernels` (imported on first use, so
processes that only merge and render the report never load numba).

Within :func:`shared`, the string columns of the given tables get all three figures in one pass over their bytes,
computed once whichever sections ask; other arrays are measured for what is asked.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

import numpy as np
import pyarrow as pa

EMPTY_HASH = 0xEF46DB3751D8E999  # XXH64 of no bytes: the hash of null

_shared: ContextVar[dict | None] = ContextVar("shared_string_stats", default=None)


class StringStats(NamedTuple):
    tokens: np.ndarray  # whitespace tokens: ``\S+`` runs (RE2's ``\s``: tab, newline, form feed, carriage return,
    #                     space), the same as ``pc.count_substring_regex(s, r"\S+")``; 0 for null
    chars: np.ndarray  # characters (code points), the same as ``pc.utf8_length``; 0 for null
    hashes: np.ndarray  # uint64 XXH64 (seed 0) of the UTF-8 bytes, ``xxhash.xxh64_intdigest(s.encode())``;
    #                     null hashes as the empty string


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _key(chunk: pa.Array) -> tuple:
    return (str(chunk.type), chunk.offset, len(chunk), *(b.address if b is not None else 0 for b in chunk.buffers()))


@contextmanager
def shared(tables: Iterable[pa.Table]):
    """Within, the figures of the string columns of ``tables`` (which the caller keeps alive, so their buffers
    cannot be reused by other arrays) are computed once; a nested ``shared`` adds its tables to the outer one's."""
    outer = _shared.get()
    keys = {_key(c) for t in tables for col in t.columns if _is_string(col.type) for c in col.chunks}
    if outer is not None:  # nested: the outer figures stay shared; the keys added here go when this ends
        added = keys - outer.keys()
        outer.update(dict.fromkeys(added))
        try:
            yield
        finally:
            for key in added:
                del outer[key]
        return
    token = _shared.set(dict.fromkeys(keys))
    try:
        yield
    finally:
        _shared.reset(token)


def utf8(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's offsets (int64, one more than its strings) and data bytes (a view of its Arrow buffer)."""
    if not len(strings):
        return np.zeros(1, np.int64), np.zeros(0, np.uint8)
    width = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    _, offsets, data = strings.buffers()
    offsets = np.frombuffer(offsets, width, len(strings) + 1, strings.offset * np.dtype(width).itemsize)
    return offsets.astype(np.int64), np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    return [c if _is_string(c.type) else c.cast(pa.string()) for c in chunks if len(c)]


def _chunk_stats(chunk: pa.Array) -> StringStats:
    memo = _shared.get() or {}
    key = _key(chunk) if memo else None
    if memo.get(key) is not None:
        return memo[key]
    from thresher.curate.report.kernels import string_stats

    offsets, data = utf8(chunk)
    out = StringStats(np.empty(len(chunk), np.int64), np.empty(len(chunk), np.int64), np.empty(len(chunk), np.uint64))
    string_stats(data, offsets, *out)
    if chunk.null_count:
        nulls = chunk.is_null().to_numpy(zero_copy_only=False)
        out.tokens[nulls] = out.chars[nulls] = 0
        out.hashes[nulls] = EMPTY_HASH
    for figure in out:
        figure.flags.writeable = False  # shared by the sections
    if key in memo:
        memo[key] = out
    return out


def string_stats(values: pa.Array | pa.ChunkedArray) -> StringStats:
    """Per value (cast to string), its whitespace tokens, characters and hash."""
    parts = [_chunk_stats(c) for c in _chunks(values)]
    if len(parts) == 1:
        return parts[0]
    empty = StringStats(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint64))
    return StringStats(*(np.concatenate(figure) for figure in zip(empty, *parts)))


def hashes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per value (cast to string), its hash: from the shared figures of a shared column, else hashed alone."""
    from thresher.curate.report.kernels import string_hashes

    memo = _shared.get() or {}
    out = [np.zeros(0, np.uint64)]
    for chunk in _chunks(values):
        if memo and _key(chunk) in memo:
            out.append(_chunk_stats(chunk).hashes)
            continue
        offsets, data = utf8(chunk.fill_null("") if chunk.null_count else chunk)
        out.append(np.empty(len(chunk), np.uint64))
        string_hashes(data, offsets, out[-1])
    return np.concatenate(out)


def take(values: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> pa.Array | pa.ChunkedArray:
    """``values.take(rows)``, chunk by chunk (``ChunkedArray.take`` concatenates string chunks first)."""
    if isinstance(values, pa.Array) or values.num_chunks <= 1 or not len(rows):
        return values.take(pa.array(rows, pa.int64()))
    starts = np.cumsum([0] + [len(c) for c in values.chunks])
    chunk = np.searchsorted(starts, rows, side="right") - 1
    order = np.argsort(chunk, kind="stable")
    rows, chunk = rows[order], chunk[order]
    parts = [values.chunk(i).take(pa.array(rows[chunk == i] - starts[i])) for i in np.unique(chunk)]
    return pa.concat_arrays(parts).take(pa.array(np.argsort(order)))
