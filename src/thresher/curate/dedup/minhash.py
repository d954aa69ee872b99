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


def _byte_tables() -> tuple[np.ndarray, np.ndarray]:
    """The kernels' per-byte tables, from the same separators and lowercasing as :func:`shingle_set`.

    ``word[c]`` is all ones for a word byte, 0 for a separator; ``word[256 + c]`` is the lowercased byte, or for a
    separator ``FNV_OFFSET / FNV_PRIME mod 2**64``: the step ``h = ((h & word[c]) ^ word[256 + c]) * FNV_PRIME``
    is FNV-1a inside a word and resets ``h`` to ``FNV_OFFSET`` on a separator, without a branch. ``char[c]`` is the
    hash of a code point's first byte ``c`` (ASCII whitespace and controls hash as a space)."""
    lower = np.frombuffer(bytes(range(256)).translate(_ASCII_LOWER), np.uint8).astype(np.uint64)
    is_word = np.array([_WORD_SEPARATORS.fullmatch(bytes([c])) is None for c in range(256)])
    reset = np.uint64(int(FNV_OFFSET) * pow(int(FNV_PRIME), -1, 2**64) % 2**64)
    word = np.concatenate([np.where(is_word, np.uint64(2**64 - 1), np.uint64(0)), np.where(is_word, lower, reset)])
    first = np.where(np.arange(256) <= 32, np.uint64(32), lower)
    return word, (FNV_OFFSET ^ first) * FNV_PRIME


_WORD_BYTE, _CHAR_HASH = _byte_tables()


@njit(cache=True, inline="always")
def _word_step(c, h, prev, n, out):
    """Byte ``c`` of a word chain: ``h`` hashes the word so far, ``prev`` is the previous byte's mask. ``h`` is
    stored at ``out[n]`` and kept (``n`` advances) where a word ends."""
    mask = _WORD_BYTE[c]
    out[n] = h
    n += (prev & ~mask) >> np.uint64(63)
    return ((h & mask) ^ _WORD_BYTE[c + 256]) * FNV_PRIME, mask, n


@njit(cache=True)
def _word_hashes(doc, out):
    """Hashes of the words of ``doc`` into ``out`` (``len(doc) + 1`` long); returns how many. ``doc`` is cut at a
    separator near its middle and both halves are hashed in one loop: two independent multiply chains."""
    cut = len(doc) // 2
    while cut < len(doc) and _WORD_BYTE[doc[cut]]:
        cut += 1
    first, second = doc[:cut], doc[cut:]
    both = min(len(first), len(second))
    h0 = h1 = FNV_OFFSET
    prev0 = prev1 = np.uint64(0)
    n0, n1 = np.uint64(0), np.uint64(cut)  # the second half's words go to out[cut:] first
    for i in range(both):
        h0, prev0, n0 = _word_step(first[i], h0, prev0, n0, out)
        h1, prev1, n1 = _word_step(second[i], h1, prev1, n1, out)
    for i in range(both, len(first)):
        h0, prev0, n0 = _word_step(first[i], h0, prev0, n0, out)
    h0, prev0, n0 = _word_step(np.uint8(0), h0, prev0, n0, out)  # a separator ends the last word
    for i in range(both, len(second)):
        h1, prev1, n1 = _word_step(second[i], h1, prev1, n1, out)
    h1, prev1, n1 = _word_step(np.uint8(0), h1, prev1, n1, out)
    n = np.int64(n0)
    for j in range(cut, np.int64(n1)):
        out[n] = out[j]
        n += 1
    return n


@njit(cache=True)
def _char_hashes(doc, out):
    """Hashes of the code points of ``doc`` (UTF-8) into ``out`` (``len(doc) + 1`` long), ASCII whitespace runs
    collapsed to one space; returns how many."""
    n = 0
    prev_space = True
    for c in doc:
        if 0x80 <= c <= 0xBF and n > 0:  # continuation byte: part of the current code point
            out[n - 1] = (out[n - 1] ^ np.uint64(c)) * FNV_PRIME
            continue
        space = c <= 32
        out[n] = _CHAR_HASH[c]
        n += not (space and prev_space)
        prev_space = space
    return n


@njit(cache=True)
def _shingles(tokens, ngram, out):
    """The 32-bit values ``x`` of the shingles of ``tokens`` into ``out``; returns how many. Token by token over all
    shingles, so that the inner loops vectorise."""
    width = min(ngram, len(tokens))
    x = out[: len(tokens) - width + 1]
    x[:] = 0
    for j in range(width):
        t = tokens[j : j + len(x)]
        for s in range(len(x)):
            x[s] = (x[s] ^ t[s]) * FNV_PRIME + np.uint64(j + 1)
    for s in range(len(x)):
        x[s] = (x[s] ^ (x[s] >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    return len(x)


@njit(cache=True)
def _min_hashes(x, a, b, out):
    """``out[i] = min over x of (a[i] * x + b[i] mod 2**64) >> 32``, as the minimum of the 64-bit values shifted
    once (the shift is monotone). Two permutations per pass over the shingles, which are innermost (vectorised)."""
    last = len(a) - 1
    for p in range(0, len(a), 2):
        q = min(p + 1, last)
        a0, b0, a1, b1 = a[p], b[p], a[q], b[q]
        m0 = m1 = np.uint64(0xFFFFFFFFFFFFFFFF)
        for k in range(len(x)):
            m0 = min(m0, a0 * x[k] + b0)
            m1 = min(m1, a1 * x[k] + b1)
        out[p] = m0 >> np.uint64(32)
        out[q] = m1 >> np.uint64(32)


@njit(cache=True, nogil=True)
def _signatures(data, offsets, ngram, char_mode, a, b, sig):
    longest = 0
    for d in range(len(offsets) - 1):
        longest = max(longest, offsets[d + 1] - offsets[d])
    tokens = np.empty(longest + 1, dtype=np.uint64)
    shingles = np.empty(longest + 1, dtype=np.uint64)
    for d in range(len(offsets) - 1):
        doc = data[offsets[d] : offsets[d + 1]]
        m = _char_hashes(doc, tokens) if char_mode else _word_hashes(doc, tokens)
        if m == 0:
            sig[d, :] = EMPTY
            continue
        count = _shingles(tokens[:m], ngram, shingles)
        _min_hashes(shingles[:count], a, b, sig[d])


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
        return {glue.join(tokens[i : i + ngram]) for i in range(len(tokens) - ngram + 1)}
    return {"".join(tokens[i : i + ngram]).encode() for i in range(len(tokens) - ngram + 1)}


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
