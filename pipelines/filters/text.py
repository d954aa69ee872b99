"""Text statistics for the quality rules, each computed once per document and shared by every rule that needs it.

Definitions (where they differ from DataTrove's, which tokenizes words with NLTK):

* ``lines``: the non-blank lines, stripped. (DataTrove's Gopher quality filter counts blank lines in its line
  fractions; its repetition filter splits on runs of newlines; FineWeb drops blank lines.)
* tokens: whitespace-delimited, as ``str.split()``. Words: tokens with leading and trailing punctuation
  (:data:`PUNCTUATION`) stripped, empty ones (pure symbols) dropped. NLTK would split punctuation off as tokens
  of its own, so word counts and mean word lengths agree with DataTrove's, while ratios "per word" are over
  whitespace tokens. A token "has a letter" if a character is ``str.isalpha``.
* n-grams are over words, compared by a 64-bit FNV-1a hash of their code points (a collision needs two
  different words with equal hashes in one document).

The word-level statistics come from one pass over the text's code points (:func:`scan_words`, numba), with
character classes tabulated from Python's own ``str.isspace``/``isalpha``/``lower`` for the Basic Multilingual
Plane (characters beyond it count as neither space, punctuation nor letter). Line-level statistics use ``str``
methods; the one regex is linear (possessive quantifiers, see ``pipelines/stages/pii.py``).
"""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from pathlib import Path

import numba
import numpy as np

from pipelines.filters.languages import uses_spaces

# ASCII punctuation and the common Unicode quotes, dashes, brackets and CJK punctuation.
PUNCTUATION = (
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    "¡¦§¨«¬¯°±´¶·¸»¿×÷‐‑‒–—―‖‘’‚‛“”„‟†‡•‣․‥…‰′″‹›※‼⁇⁈⁉€™←→↑↓■□▪▫►●◦◆◇★☆"
    "、。〃〈〉《》「」『』【】〔〕〜・！＂＃％＆＇（）＊＋，－．／：；＜＝＞？＠［＼］＾＿｀｛｜｝～｡､"
)
# Sentence terminals of the major scripts (Latin, CJK, Devanagari, Arabic, Ethiopic, Armenian, Myanmar, ...).
TERMINAL_PUNCTUATION = tuple(".!?‼‽⁇⁈⁉。！？．｡।॥۔؟؞܀܁܂።፧፨։။၊᙮។៕᠃᠉")
BULLETS = ("-", "•", "*", "‣", "◦", "●", "▪", "·", "–")
ELLIPSES = ("...", "…")
TOP_NS = (2, 3, 4)  # Gopher's "top n-gram character fraction"
DUP_NS = (5, 6, 7, 8, 9, 10)  # Gopher's "duplicate n-gram character fraction"

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*+\n\s*+")
STOPWORDS_DIR = Path(__file__).with_name("stopwords")
SPACE, PUNCT, ALPHA = 1, 2, 4
_NO_STOPS = np.zeros(0, np.uint64)


@lru_cache(maxsize=1)
def char_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each BMP code point: its class bits (SPACE, PUNCT, ALPHA) and its lowercase (first character)."""
    chars = [chr(i) for i in range(0x10000)]
    punct = set(PUNCTUATION)
    classes = np.array([(c.isspace() and SPACE) | ((c in punct) and PUNCT) | (c.isalpha() and ALPHA)
                        for c in chars], np.uint8)
    lower = np.array([ord(c.lower()[0]) if c.lower() else i for i, c in enumerate(chars)], np.uint32)
    return classes, lower


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


@lru_cache(maxsize=None)
def stop_words(lang: str) -> frozenset[str] | None:
    """The stop-word list of ``lang`` (``stopwords/<lang>.txt``; ``#`` lines are comments), None if none."""
    path = STOPWORDS_DIR / f"{lang}.txt"
    if not path.is_file():
        return None
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(line.lower() for line in lines if line and not line.startswith("#"))


@lru_cache(maxsize=256)
def stop_word_hashes(words: frozenset[str]) -> np.ndarray:
    """Sorted hashes of the lowercased words, as :func:`scan_words` hashes lowercased words."""
    classes, lower = char_tables()
    return np.unique(np.array([scan_words(code_points(w), classes, lower, _NO_STOPS)[4] for w in words
                               if w and w.strip(PUNCTUATION) == w and len(w.split()) == 1], np.uint64))


def duplicates(items: list[str]) -> tuple[int, int]:
    """(number, characters) of the items that repeat an earlier one (Gopher's ``find_duplicates``)."""
    seen: set[str] = set()
    n = chars = 0
    for item in items:
        if item in seen:
            n += 1
            chars += len(item)
        else:
            seen.add(item)
    return n, chars


class TextStats:
    """Lazily computed statistics of one document in one language (``stops``: its stop words, if any)."""

    def __init__(self, text: str, lang: str, stops: frozenset[str] | None = None):
        self.text = text
        self.lang = lang
        self.stops = stops
        self.spaced = uses_spaces(lang)
        self.chars = len(text)

    @cached_property
    def lines(self) -> list[str]:
        return [s for s in (line.strip() for line in self.text.split("\n")) if s]

    @cached_property
    def paragraphs(self) -> list[str]:
        return _PARAGRAPH_BREAK.split(self.text.strip())

    @cached_property
    def _scan(self):
        stops = stop_word_hashes(self.stops) if self.stops else _NO_STOPS
        return scan_words(code_points(self.text), *char_tables(), stops)

    @property
    def word_ids(self) -> np.ndarray:
        return self._scan[0]

    @property
    def word_lengths(self) -> np.ndarray:
        return self._scan[1]

    @property
    def words(self) -> int:
        return len(self._scan[0])

    @property
    def tokens(self) -> int:
        return self._scan[2]

    @property
    def letterless_tokens(self) -> int:
        """Tokens without a letter: pure punctuation, ``2020``, ``3.5%``."""
        return self._scan[3]

    @property
    def stop_words_found(self) -> int | None:
        """Distinct stop words among the (lowercased) words; None without a stop-word list."""
        return self._scan[5] if self.stops else None

    @cached_property
    def dup_lines(self) -> tuple[int, int]:
        return duplicates(self.lines)

    @cached_property
    def dup_paragraphs(self) -> tuple[int, int]:
        return duplicates(self.paragraphs)

    @cached_property
    def top_ngrams(self) -> dict[int, float]:
        """n -> characters covered by the most frequent n-gram (its length with spaces, times its count)."""
        return dict(zip(TOP_NS, top_ngram_chars(self.word_ids, self.word_lengths, np.asarray(TOP_NS)).tolist()))

    @cached_property
    def dup_ngrams(self) -> dict[int, float]:
        """n -> characters of the words inside n-grams that repeat an earlier one (Gopher's duplicate n-grams)."""
        return dict(zip(DUP_NS, dup_ngram_chars(self.word_ids, self.word_lengths, np.asarray(DUP_NS)).tolist()))


# -- numba kernels -------------------------------------------------------------------------------------------

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_SEED = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)


@numba.njit(cache=True, inline="always")
def _class(classes, c):
    return classes[c] if c < 0x10000 else np.uint8(0)


@numba.njit(cache=True)
def scan_words(cps, classes, lower, stop_hashes):
    """One pass over a text's code points: (word hashes, word lengths, tokens, tokens without a letter,
    hash of the last word lowercased, distinct stop words found). ``stop_hashes``: sorted, may be empty."""
    n = len(cps)
    ids = np.empty(n // 2 + 1, np.uint64)
    lengths = np.empty(n // 2 + 1, np.int64)
    found = np.zeros(len(stop_hashes), np.bool_)
    n_words = n_tokens = letterless = 0
    last_lower = np.uint64(0)
    i = 0
    while i < n:
        while i < n and _class(classes, cps[i]) & SPACE:
            i += 1
        if i == n:
            break
        start = i
        has_letter = False
        while i < n and not _class(classes, cps[i]) & SPACE:
            if _class(classes, cps[i]) & ALPHA:
                has_letter = True
            i += 1
        n_tokens += 1
        if not has_letter:
            letterless += 1
        s, e = start, i
        while s < e and _class(classes, cps[s]) & PUNCT:
            s += 1
        while e > s and _class(classes, cps[e - 1]) & PUNCT:
            e -= 1
        if s == e:
            continue
        h = _FNV_OFFSET
        hl = _FNV_OFFSET
        for j in range(s, e):
            c = cps[j]
            h = (h ^ np.uint64(c)) * _FNV_PRIME
            hl = (hl ^ np.uint64(lower[c] if c < 0x10000 else c)) * _FNV_PRIME
        ids[n_words] = h
        lengths[n_words] = e - s
        n_words += 1
        last_lower = hl
        if len(stop_hashes):
            k = np.searchsorted(stop_hashes, hl)
            if k < len(stop_hashes) and stop_hashes[k] == hl:
                found[k] = True
    return ids[:n_words], lengths[:n_words], n_tokens, letterless, last_lower, int(found.sum())


@numba.njit(cache=True, inline="always")
def _ngram_hash(ids, i, n):
    h = _SEED
    for j in range(n):
        h = (h ^ ids[i + j]) * _FNV_PRIME
    return h ^ (h >> _SHIFT)


@numba.njit(cache=True)
def _table_size(n_items):
    size = 16
    while size < 2 * n_items:
        size *= 2
    return size


@numba.njit(cache=True)
def top_ngram_chars(ids, lengths, ns):
    """For each n: (characters of the most frequent n-gram, spaces included) x its count; ties: the first seen."""
    out = np.zeros(len(ns), np.float64)
    n_words = len(ids)
    size = _table_size(n_words)
    mask = np.uint64(size - 1)
    keys = np.zeros(size, np.uint64)
    used = np.zeros(size, np.bool_)
    counts = np.zeros(size, np.int64)
    first = np.zeros(size, np.int64)
    cum = np.zeros(n_words + 1, np.int64)
    for i in range(n_words):
        cum[i + 1] = cum[i] + lengths[i]
    for k in range(len(ns)):
        n = ns[k]
        if n_words < n:
            continue
        used[:] = False
        best_count, best_first = 0, 0
        for i in range(n_words - n + 1):
            h = _ngram_hash(ids, i, n)
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
        out[k] = (cum[best_first + n] - cum[best_first] + n - 1) * best_count
    return out


@numba.njit(cache=True)
def dup_ngram_chars(ids, lengths, ns):
    """For each n, Gopher's duplicate n-gram characters: scanning left to right, an n-gram seen before adds its
    characters (words joined without spaces) and the scan jumps past it; a new one is remembered."""
    out = np.zeros(len(ns), np.float64)
    n_words = len(ids)
    size = _table_size(n_words)
    mask = np.uint64(size - 1)
    keys = np.zeros(size, np.uint64)
    used = np.zeros(size, np.bool_)
    cum = np.zeros(n_words + 1, np.int64)
    for i in range(n_words):
        cum[i + 1] = cum[i] + lengths[i]
    for k in range(len(ns)):
        n = ns[k]
        used[:] = False
        repeated = 0
        i = 0
        while i < n_words - n + 1:
            h = _ngram_hash(ids, i, n)
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
        out[k] = repeated
    return out
