"""Compiled (numba) kernels of the report's per-string statistics, on the UTF-8 bytes and offsets of Arrow string
arrays: imported by :mod:`thresher.curate.report.arrays` on first use, so only the processes that collect statistics load
numba."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types, uint8, uint64
from numba.extending import intrinsic

BLOCK = 255  # bytes per uint8 partial count (narrow counters vectorize)

P1 = uint64(0x9E3779B185EBCA87)
P2 = uint64(0xC2B2AE3D27D4EB4F)
P3 = uint64(0x165667B19E3779F9)
P4 = uint64(0x85EBCA77C2B2AE63)
P5 = uint64(0x27D4EB2F165667C5)


@njit(inline="always")
def _space(b):
    """RE2's ``\\s`` (the complement of ``\\S``): tab, newline, form feed, carriage return, space."""
    return (b == 32) | (b == 9) | (b == 10) | (b == 12) | (b == 13)


@njit(inline="always")
def _lead(b):
    """A byte that starts a UTF-8 character (not a continuation byte)."""
    return (b & 0xC0) != 0x80


@intrinsic
def _load64(typingctx, data, index):
    """The little-endian uint64 at byte ``index`` of a uint8 array (an unaligned load)."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = builder.bitcast(builder.gep(array.data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(pointer, align=1)

    return types.uint64(data, index), codegen


@njit(inline="always")
def _rotl(x, r):
    return (x << uint64(r)) | (x >> uint64(64 - r))


@njit(inline="always")
def _round(acc, lane):
    return _rotl(acc + lane * P2, 31) * P1


@njit(inline="always")
def _merge(acc, v):
    return (acc ^ _round(uint64(0), v)) * P1 + P4


@njit(inline="always")
def _counts(data, lo, hi):
    """The ``\\S+`` runs and the characters of ``data[lo:hi]``: a run starts at a non-space byte that is first or
    follows a space; counted in blocks of ``BLOCK`` bytes with uint8 partial counts (they vectorize)."""
    if lo == hi:
        return 0, 0
    n, c = int(not _space(data[lo])), int(_lead(data[lo]))
    lo += 1
    while lo < hi:
        end = min(hi, lo + BLOCK)
        cur, prev = data[lo:end], data[lo - 1 : end - 1]
        bn = bc = uint8(0)
        for k in range(len(cur)):
            bn = uint8(bn + (_space(prev[k]) & ~_space(cur[k])))
            bc = uint8(bc + _lead(cur[k]))
        n += bn
        c += bc
        lo = end
    return n, c


@njit(inline="always")
def _xxh64(data, start, end):
    """XXH64 (seed 0) of ``data[start:end]``, the same as ``xxhash.xxh64_intdigest``."""
    p = start
    if end - p >= 32:
        v1, v2, v3, v4 = P1 + P2, P2, uint64(0), uint64(0) - P1
        while p <= end - 32:
            v1 = _round(v1, _load64(data, p))
            v2 = _round(v2, _load64(data, p + 8))
            v3 = _round(v3, _load64(data, p + 16))
            v4 = _round(v4, _load64(data, p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge(_merge(_merge(_merge(h, v1), v2), v3), v4)
    else:
        h = P5
    h += uint64(end - start)
    while p + 8 <= end:
        h = _rotl(h ^ _round(uint64(0), _load64(data, p)), 27) * P1 + P4
        p += 8
    if p + 4 <= end:
        lane = (
            uint64(data[p])
            | uint64(data[p + 1]) << uint64(8)
            | uint64(data[p + 2]) << uint64(16)
            | uint64(data[p + 3]) << uint64(24)
        )
        h = _rotl(h ^ (lane * P1), 23) * P2 + P3
        p += 4
    while p < end:
        h = _rotl(h ^ (uint64(data[p]) * P5), 11) * P1
        p += 1
    h = (h ^ (h >> uint64(33))) * P2
    h = (h ^ (h >> uint64(29))) * P3
    return h ^ (h >> uint64(32))


@njit(cache=True)
def string_stats(
    data: np.ndarray, offsets: np.ndarray, tokens: np.ndarray, chars: np.ndarray, hashes: np.ndarray
) -> None:
    """Per string ``i`` (``data[offsets[i]:offsets[i + 1]]``): its ``\\S+`` runs, its characters and its XXH64 (the
    hash reads each string right after the counts, from cache). Little-endian machines only, like the unaligned
    loads of the hash."""
    for i in range(len(offsets) - 1):
        tokens[i], chars[i] = _counts(data, offsets[i], offsets[i + 1])
        hashes[i] = _xxh64(data, offsets[i], offsets[i + 1])


@njit(cache=True)
def string_hashes(data: np.ndarray, offsets: np.ndarray, hashes: np.ndarray) -> None:
    """Per string ``i``, its XXH64 alone."""
    for i in range(len(offsets) - 1):
        hashes[i] = _xxh64(data, offsets[i], offsets[i + 1])
