"""MinHash signatures over word or character n-grams, computed for a whole batch in one JIT-compiled pass.

Words are maximal runs of bytes other than ASCII whitespace and punctuation, ASCII letters lowercased (so
case and punctuation do not hide duplicates). Each word gets a 64-bit FNV-1a hash, an n-gram combines its
words' hashes, and permutation ``i`` maps a shingle hash ``h`` to ``(a_i * h + b_i) >> 32`` (multiply-shift
hashing, 64-bit arithmetic) with ``a_i``, ``b_i`` drawn from ``seed``. A document shorter than ``n`` words is
one shingle; a document without any word gets no signature (all ones: ``EMPTY``) and is never a candidate.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.integrate import quad

EMPTY = np.uint32(0xFFFFFFFF)
FNV_OFFSET = np.uint64(14695981039346656037)
FNV_PRIME = np.uint64(1099511628211)


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
    """Hashes of each byte position (character n-grams are built from these), whitespace collapsed."""
    n = 0
    prev_space = True
    for i in range(start, end):
        c = data[i]
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
    tokens = np.empty(data.shape[0] + 1, dtype=np.uint64)
    for d in range(offsets.shape[0] - 1):
        if char_mode:
            m = _char_hashes(data, offsets[d], offsets[d + 1], tokens)
        else:
            m = _word_hashes(data, offsets[d], offsets[d + 1], tokens)
        for p in range(num_perm):
            sig[d, p] = 0xFFFFFFFF
        if m == 0:
            continue
        count = m - ngram + 1 if m >= ngram else 1
        width = ngram if m >= ngram else m
        for s in range(count):
            h = np.uint64(0)
            for j in range(width):
                h = (h ^ tokens[s + j]) * FNV_PRIME + np.uint64(j + 1)
            for p in range(num_perm):
                v = np.uint32((a[p] * h + b[p]) >> np.uint64(32))
                if v < sig[d, p]:
                    sig[d, p] = v


def signatures(texts: list[str], num_perm: int = 128, ngram: int = 5, char_ngrams: bool = False,
               seed: int = 0) -> np.ndarray:
    """uint32 array (len(texts), num_perm) of MinHash signatures."""
    encoded = [t.encode("utf-8", "replace") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)
    a, b = permutations(num_perm, seed)
    sig = np.empty((len(texts), num_perm), dtype=np.uint32)
    _signatures(data, offsets, ngram, char_ngrams, a, b, sig)
    return sig


def jaccard_estimate(s1: np.ndarray, s2: np.ndarray) -> float:
    return float(np.mean(s1 == s2))


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 array (n, bands): one hash per band of ``rows`` signature values (band index mixed in)."""
    n = sig.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(n, np.uint64(band) * FNV_PRIME + FNV_OFFSET, dtype=np.uint64)
            for r in range(rows):
                h = (h ^ sig[:, band * rows + r].astype(np.uint64)) * FNV_PRIME
            keys[:, band] = h
    return keys


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted false positive and negative areas
    under the LSH S-curve 1 - (1 - s^r)^b (the choice datasketch's MinHashLSH makes)."""
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = quad(lambda s: 1 - (1 - s ** r) ** b, 0.0, threshold)[0]
            fn = quad(lambda s: (1 - s ** r) ** b, threshold, 1.0)[0]
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best
