"""The numba kernels of :mod:`thresher.curate.filters.text` (what they compute is described there). Imported on first
use, so only the processes that score text load numba."""

from __future__ import annotations

import numba
import numpy as np

from thresher.curate.filters.bits import (
    ALPHA,
    BULLET,
    C4_END,
    CLOSER,
    DUP_NS,
    L_BRACKET,
    L_BULLET,
    L_C4_END,
    L_CURLY,
    L_DOTS,
    L_ELLIPSIS,
    L_TERMINAL,
    PUNCT,
    SENTENCE_END,
    SPACE,
    TERMINAL,
    TOP_NS,
    UNSPACED_END,
)

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_SEED = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)
TOP, DUP = 1, 2
NGRAM_KINDS = np.zeros(max(DUP_NS) + 1, np.uint8)  # n -> TOP | DUP: what ngram_chars measures for n
NGRAM_KINDS[list(TOP_NS)] |= TOP
NGRAM_KINDS[list(DUP_NS)] |= DUP


@numba.njit(cache=True, inline="always")
def _class(classes, c):
    return classes[c] if c < 0x10000 else np.uint16(0)


@numba.njit(cache=True)
def scan_words(cps, classes, lower, stop_table):
    """One pass over a text's code points: (word hashes, word lengths, tokens, tokens without a letter, hash of
    the last word lowercased, distinct stop words found, word characters). ``stop_table``: see
    :func:`stop_word_table`."""
    n = len(cps)
    ids = np.empty(n // 2 + 1, np.uint64)
    lengths = np.empty(n // 2 + 1, np.int64)
    mask = np.uint64(stop_table.shape[1] - 1)
    found = np.zeros(stop_table.shape[1], np.bool_)
    n_words = n_tokens = letterless = word_chars = 0
    last_lower = np.uint64(0)
    in_token = has_letter = False
    start = end = -1  # the token's first and after its last character that is not punctuation
    for i in range(n + 1):
        k = _class(classes, cps[i]) if i < n else np.uint16(SPACE)
        if not k & SPACE:
            if not in_token:
                in_token, has_letter, start = True, False, -1
                n_tokens += 1
            if k & ALPHA:
                has_letter = True
            if not k & PUNCT:
                if start < 0:
                    start = i
                end = i + 1
            continue
        if not in_token:
            continue
        in_token = False
        if not has_letter:
            letterless += 1
        if start < 0:
            continue
        h = hl = _FNV_OFFSET
        for j in range(start, end):
            c = cps[j]
            h = (h ^ np.uint64(c)) * _FNV_PRIME
            hl = (hl ^ np.uint64(lower[c] if c < 0x10000 else c)) * _FNV_PRIME
        ids[n_words] = h
        lengths[n_words] = end - start
        word_chars += end - start
        n_words += 1
        last_lower = hl
        slot = hl & mask
        while stop_table[1, slot]:
            if stop_table[0, slot] == hl:
                found[slot] = True
                break
            slot = (slot + np.uint64(1)) & mask
    return ids[:n_words], lengths[:n_words], n_tokens, letterless, last_lower, int(found.sum()), word_chars


@numba.njit(cache=True)
def scan_lines(cps, classes, split):
    """The lines of a text: split at newlines, stripped, blank ones dropped (``split`` false: the whole text is one
    line, as it is). A row per line: start, end, tokens, longest token, flags (``L_*``), C4 sentence ends in
    spaced scripts (a SENTENCE_END followed by a space, or by a CLOSER and a space, within the line), and
    UNSPACED_ENDs; and the number of lines with each flag bit. (One table: each array returned costs ~1 us.)"""
    n = len(cps)
    table = np.empty((n // 2 + 1 if split else 1, 7), np.int64)
    flag_counts = np.zeros(8, np.int64)
    n_lines = 0
    pos = 0
    while pos <= n and (split or n_lines == 0):
        s = pos
        e = n
        if split:
            e = s
            while e < n and cps[e] != 10:
                e += 1
            pos = e + 1
            while s < e and _class(classes, cps[s]) & SPACE:
                s += 1
            while e > s and _class(classes, cps[e - 1]) & SPACE:
                e -= 1
            if s == e:
                continue
        n_tok = long_tok = run = n_ends = n_terminals = 0
        f = 0
        for i in range(s, e):
            c = cps[i]
            k = _class(classes, c)
            if k & SPACE:
                run = 0
                continue
            if run == 0:
                n_tok += 1
            run += 1
            long_tok = max(long_tok, run)
            if c == 91:  # [
                f |= L_BRACKET
            elif c == 123:  # {
                f |= L_CURLY
            if k & UNSPACED_END:
                n_terminals += 1
            if k & SENTENCE_END and i + 1 < e:
                k1 = _class(classes, cps[i + 1])
                if k1 & SPACE or (k1 & CLOSER and i + 2 < e and _class(classes, cps[i + 2]) & SPACE):
                    n_ends += 1
        if e > s:
            first, last = _class(classes, cps[s]), _class(classes, cps[e - 1])
            if first & BULLET:
                f |= L_BULLET
            if last & TERMINAL:
                f |= L_TERMINAL
            if last & C4_END:
                f |= L_C4_END
            if e - s >= 3 and cps[e - 1] == 46 and cps[e - 2] == 46 and cps[e - 3] == 46:  # ...
                f |= L_DOTS | L_ELLIPSIS
            elif cps[e - 1] == 0x2026:  # …
                f |= L_ELLIPSIS
        row = table[n_lines]
        row[0], row[1], row[2], row[3], row[4], row[5], row[6] = s, e, n_tok, long_tok, f, n_ends, n_terminals
        for b in range(8):
            if f >> b & 1:
                flag_counts[b] += 1
        n_lines += 1
    return table[:n_lines], flag_counts


@numba.njit(cache=True)
def _table_size(n_items):
    size = 16
    while size < 2 * n_items:
        size *= 2
    return size


@numba.njit(cache=True)
def ngram_chars(ids, lengths, kinds):
    """Gopher's word n-gram measures for each n with ``kinds[n]`` set: TOP, (characters of the most frequent
    n-gram, spaces included) x its count, ties going to the first seen; DUP, the characters (words joined without
    spaces) of n-grams that repeat an earlier one, scanning left to right and jumping past each repeat.

    An n-gram's hash is the FNV-1a fold of its word hashes, finished with a shift; the unfinished folds of the
    n-grams are extended one word per n, so all n cost one pass each."""
    n_words = len(ids)
    top = np.zeros(len(kinds), np.float64)
    dup = np.zeros(len(kinds), np.float64)
    size = _table_size(n_words)
    mask = np.uint64(size - 1)
    keys = np.zeros(size, np.uint64)
    used = np.zeros(size, np.bool_)
    counts = np.zeros(size, np.int64)
    first = np.zeros(size, np.int64)
    cum = np.zeros(n_words + 1, np.int64)
    for i in range(n_words):
        cum[i + 1] = cum[i] + lengths[i]
    folds = np.empty(n_words, np.uint64)
    for i in range(n_words):
        folds[i] = (_SEED ^ ids[i]) * _FNV_PRIME
    hashes = np.empty(n_words, np.uint64)
    for n in range(2, len(kinds)):
        m = n_words - n + 1
        if m <= 0:
            break
        for i in range(m):
            f = (folds[i] ^ ids[i + n - 1]) * _FNV_PRIME
            folds[i] = f
            hashes[i] = f ^ (f >> _SHIFT)
        if kinds[n] & TOP:
            used[:] = False
            best_count, best_first = 0, 0
            for i in range(m):
                h = hashes[i]
                slot = h & mask
                while used[slot] and keys[slot] != h:
                    slot = (slot + np.uint64(1)) & mask
                if not used[slot]:
                    used[slot] = True
                    keys[slot] = h
                    counts[slot] = 0
                    first[slot] = i
                counts[slot] += 1
                c = counts[slot]
                if c > best_count or (c == best_count and first[slot] < best_first):
                    best_count, best_first = c, first[slot]
            top[n] = (cum[best_first + n] - cum[best_first] + n - 1) * best_count
        if kinds[n] & DUP:
            used[:] = False
            repeated = 0
            i = 0
            while i < m:
                h = hashes[i]
                slot = h & mask
                while used[slot] and keys[slot] != h:
                    slot = (slot + np.uint64(1)) & mask
                if used[slot]:
                    repeated += cum[i + n] - cum[i]
                    i += n
                else:
                    used[slot] = True
                    keys[slot] = h
                    i += 1
            dup[n] = repeated
    return top, dup
