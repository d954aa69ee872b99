"""MinHash signatures over word or character n-grams, computed for a whole batch in one JIT-compiled pass.

Tokens: in word mode, words are maximal runs of bytes other than ASCII whitespace, controls and punctuation
(non-ASCII letters belong to words); in character mode, tokens are Unicode code points, with runs of ASCII
whitespace and controls collapsed to one space and leading ones dropped. ASCII letters are lowercased in both
(so case and punctuation do not hide duplicates). A token gets a 64-bit FNV-1a hash; a shingle (``ngram``
consecutive tokens) combines its tokens' hashes and is folded to 32 bits ``x``. Permutation ``i`` maps ``x`` to
``(a_i * x + b_i mod 2**64) >> 32`` (multiply-add-shift, a strongly universal family) with odd ``a_i`` and
``b_i`` drawn from ``seed``; the signature keeps the minimum per permutation. A document with fewer than
``ngram`` tokens is one shingle of all of them; a document without any token gets no signature (all
``EMPTY``) and is never a candidate. :func:`shingle_set` builds the same shingles as Python strings: the
reference for exact Jaccard similarity (verification, tests, benchmarks).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

EMPTY = np.uint32(0xFFFFFFFF)
FNV_OFFSET = np.uint64(14695981039346656037)
FNV_PRIME = np.uint64(1099511628211)
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_WORD_SEPARATORS = re.compile(rb"[\x00-\x20!-/:-@\[-`{-~]+")
_SPACES = re.compile(rb"[\x00-\x20]+")


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


@njit(cache=True)
def _is_sep(c: np.uint8) -> bool:
    return c <= 32 or (33 <= c <= 47) or (58 <= c <= 64) or (91 <= c <= 96) or (123 <= c <= 126)


@njit(cache=True)
def _word_hashes(data, start, end, out):
    """Hashes of the words in data[start:end] into ``out``; returns how many."""
    n = 0
    h = FNV_OFFSET
    in_word = False
    for i in range(start, end):
        c = data[i]
        if _is_sep(c):
            if in_word:
                out[n] = h
                n += 1
                in_word = False
            continue
        if 65 <= c <= 90:
            c += 32
        if not in_word:
            h = FNV_OFFSET
            in_word = True
        h = (h ^ np.uint64(c)) * FNV_PRIME
    if in_word:
        out[n] = h
        n += 1
    return n


@njit(cache=True)
def _char_hashes(data, start, end, out):
    """Hashes of the code points of data[start:end] (UTF-8), ASCII whitespace runs collapsed to one space."""
    n = 0
    prev_space = True
    for i in range(start, end):
        c = data[i]
        if 0x80 <= c <= 0xBF and n > 0:  # continuation byte: part of the current code point
            out[n - 1] = (out[n - 1] ^ np.uint64(c)) * FNV_PRIME
            continue
        space = c <= 32
        if space and prev_space:
            continue
        prev_space = space
        if 65 <= c <= 90:
            c += 32
        out[n] = (FNV_OFFSET ^ np.uint64(32 if space else c)) * FNV_PRIME
        n += 1
    return n


@njit(cache=True)
def _signatures(data, offsets, ngram, char_mode, a, b, sig):
    num_perm = a.shape[0]
    longest = 0
    for d in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    tokens = np.empty(longest + 1, dtype=np.uint64)
    shingles = np.empty(longest + 1, dtype=np.uint64)
    row = np.empty(num_perm, dtype=np.uint32)
    for d in range(offsets.shape[0] - 1):
        if char_mode:
            m = _char_hashes(data, offsets[d], offsets[d + 1], tokens)
        else:
            m = _word_hashes(data, offsets[d], offsets[d + 1], tokens)
        row[:] = 0xFFFFFFFF
        if m > 0:
            count = m - ngram + 1 if m >= ngram else 1
            width = ngram if m >= ngram else m
            for s in range(count):
                h = np.uint64(0)
                for j in range(width):
                    h = (h ^ tokens[s + j]) * FNV_PRIME + np.uint64(j + 1)
                shingles[s] = (h ^ (h >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
            # permutations innermost over a row that stays in cache: the loop vectorises
            for s in range(count):
                x = shingles[s]
                for p in range(num_perm):
                    row[p] = min(row[p], np.uint32((a[p] * x + b[p]) >> np.uint64(32)))
        sig[d, :] = row


def signatures(texts, num_perm: int = 128, ngram: int = 5, char_ngrams: bool = False, seed: int = 0) -> np.ndarray:
    """uint32 array (len(texts), num_perm) of MinHash signatures of a list or Arrow array of strings (null:
    no signature). An Arrow array is read in place, without a copy to Python strings."""
    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(texts, pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.large_string())
    arr = pc.fill_null(arr.cast(pa.large_string()), "")
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None and data_buf.size else np.zeros(1, np.uint8)
    a, b = permutations(num_perm, seed)
    sig = np.empty((len(arr), num_perm), dtype=np.uint32)
    _signatures(data, offsets, ngram, char_ngrams, a, b, sig)
    return sig


def shingle_set(text: str, ngram: int, char_ngrams: bool = False) -> set[bytes]:
    """The shingles the kernel hashes, as UTF-8 strings (tokens joined by a space in word mode)."""
    data = text.encode("utf-8", "replace").translate(_ASCII_LOWER)
    if char_ngrams:
        tokens = list(_SPACES.sub(b" ", data).lstrip(b" ").decode())
        glue = ""
    else:
        tokens = [w for w in _WORD_SEPARATORS.split(data) if w]
        glue = b" "
    if not tokens:
        return set()
    if len(tokens) < ngram:
        return {glue.join(tokens) if glue else "".join(tokens).encode()}
    if glue:
        return {glue.join(tokens[i:i + ngram]) for i in range(len(tokens) - ngram + 1)}
    return {"".join(tokens[i:i + ngram]).encode() for i in range(len(tokens) - ngram + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def jaccard_estimate(s1: np.ndarray, s2: np.ndarray) -> float:
    return float(np.mean(s1 == s2))


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """int64 array (n, bands): one hash per band of ``rows`` signature values, the band index mixed in (equal
    keys in different bands do not collide)."""
    n = sig.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(n, (np.uint64(band) + FNV_OFFSET) * FNV_PRIME, dtype=np.uint64)
            for r in range(rows):
                h = (h ^ sig[:, band * rows + r].astype(np.uint64)) * FNV_PRIME
            keys[:, band] = h
    return keys.view(np.int64)
