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

Two passes over a text's code points (numba, in :mod:`thresher.curate.filters.text_kernels`) compute everything but
the duplicate lines and paragraphs: ``scan_words`` the words (hashes, lengths, letters, stop words) and
``scan_lines`` the lines (spans, tokens, longest token, how they start and end, C4's sentence ends);
``ngram_chars`` then measures all the word n-grams at once. Character classes are tabulated from Python's own
``str.isspace``/``isalpha``/``lower`` for the Basic Multilingual Plane (characters beyond it count as neither
space, punctuation nor letter, and no whitespace lies beyond it), so the kernels split and strip exactly as
``str.split``/``str.strip`` do. Duplicate lines and paragraphs compare the strings themselves; the one regex is
linear (possessive quantifiers, see ``src/thresher/curate/stages/pii.py``).
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from thresher.curate.filters.bits import (
    ALPHA,
    BULLET,
    C4_END,
    CLOSER,
    DUP_NS,
    PUNCT,
    SENTENCE_END,
    SPACE,
    TERMINAL,
    TOP_NS,
    UNSPACED_END,
)
from thresher.curate.filters.languages import uses_spaces

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
C4_END_MARKS = ('"',) + TERMINAL_PUNCTUATION  # C4 keeps lines ending in one of these
# C4's sentence ends: in spaced scripts a terminal, optionally a closing quote or bracket, then a space (a regex
# ``[.!?‼‽。！？]["'”’»)\]]?\s`` would count the same); in scripts without spaces every terminal.
SENTENCE_ENDS_SPACED, SENTENCE_CLOSERS = ".!?‼‽。！？", "\"'”’»)]"
SENTENCE_ENDS_UNSPACED = ".!?‼‽。！？．｡।॥۔؟።"

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*+\n\s*+")
STOPWORDS_DIR = Path(__file__).with_name("stopwords")
_NO_STOPS = np.zeros((2, 1), np.uint64)  # a stop-word table without words
_CLASS_SETS = (
    (PUNCT, "".join(PUNCTUATION)),
    (BULLET, "".join(BULLETS)),
    (TERMINAL, "".join(TERMINAL_PUNCTUATION)),
    (C4_END, "".join(C4_END_MARKS)),
    (SENTENCE_END, SENTENCE_ENDS_SPACED),
    (CLOSER, SENTENCE_CLOSERS),
    (UNSPACED_END, SENTENCE_ENDS_UNSPACED),
)


@lru_cache(maxsize=1)
def char_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each BMP code point: its class bits (SPACE, PUNCT, ALPHA, BULLET, ...) and its lowercase (first
    character)."""
    chars = [chr(i) for i in range(0x10000)]
    classes = np.array([(c.isspace() and SPACE) | (c.isalpha() and ALPHA) for c in chars], np.uint16)
    for bit, members in _CLASS_SETS:
        classes[[ord(c) for c in members]] |= bit
    lower = np.array([ord(c.lower()[0]) if c.lower() else i for i, c in enumerate(chars)], np.uint32)
    return classes, lower


@lru_cache(maxsize=1)
def kernels():
    """The numba kernels (:mod:`thresher.curate.filters.text_kernels`), imported on first use (then cached: an
    import statement costs microseconds even for a loaded module, and the rules ask several times per document)."""
    from thresher.curate.filters import text_kernels

    return text_kernels


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


@cache
def stop_words(lang: str) -> frozenset[str] | None:
    """The stop-word list of ``lang`` (``stopwords/<lang>.txt``; ``#`` lines are comments), None if none."""
    path = STOPWORDS_DIR / f"{lang}.txt"
    if not path.is_file():
        return None
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(line.lower() for line in lines if line and not line.startswith("#"))


@lru_cache(maxsize=256)
def stop_word_table(words: frozenset[str]) -> np.ndarray:
    """The hashes of the lowercased words, as ``scan_words`` hashes lowercased words, in an open-addressing
    table: row 0 the hashes, row 1 whether the slot is taken; its size a power of two, at least 4x the words."""
    classes, lower = char_tables()
    hashes = {
        int(kernels().scan_words(code_points(w), classes, lower, _NO_STOPS)[4])
        for w in words
        if w and w.strip(PUNCTUATION) == w and len(w.split()) == 1
    }
    size = 16
    while size < 4 * len(hashes):
        size *= 2
    table = np.zeros((2, size), np.uint64)
    for h in hashes:
        slot = h & (size - 1)
        while table[1, slot]:
            slot = (slot + 1) & (size - 1)
        table[0, slot], table[1, slot] = h, 1
    return table


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


class cached_property:  # noqa: N801 - functools.cached_property without the lock it takes on Python 3.11
    """A method computed once per instance, on first access, then stored in the instance's ``__dict__``."""

    def __init__(self, method):
        self.method, self.name = method, method.__name__
        self.__doc__ = method.__doc__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.method(instance)
        return value


class TextStats:
    """Lazily computed statistics of one document in one language (``stops``: its stop words, if any)."""

    def __init__(self, text: str, lang: str, stops: frozenset[str] | None = None):
        self.text = text
        self.lang = lang
        self.stops = stops
        self.spaced = uses_spaces(lang)
        self.chars = len(text)

    @cached_property
    def code_points(self) -> np.ndarray:
        return code_points(self.text)

    @cached_property
    def line_stats(self) -> LineStats:
        return LineStats(self.text, kernels().scan_lines(self.code_points, char_tables()[0], True))

    @property
    def lines(self) -> list[str]:
        return self.line_stats.lines

    @cached_property
    def paragraphs(self) -> list[str]:
        return _PARAGRAPH_BREAK.split(self.text.strip())

    @cached_property
    def _scan(self):
        stops = stop_word_table(self.stops) if self.stops else _NO_STOPS
        return kernels().scan_words(self.code_points, *char_tables(), stops)

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
    def word_chars(self) -> int:
        return self._scan[6]

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
    def _ngrams(self) -> tuple[list[float], list[float]]:
        top, dup = kernels().ngram_chars(self.word_ids, self.word_lengths, kernels().NGRAM_KINDS)
        return top.tolist(), dup.tolist()

    @cached_property
    def top_ngrams(self) -> dict[int, float]:
        """n -> characters covered by the most frequent n-gram (its length with spaces, times its count)."""
        return {n: self._ngrams[0][n] for n in TOP_NS}

    @cached_property
    def dup_ngrams(self) -> dict[int, float]:
        """n -> characters of the words inside n-grams that repeat an earlier one (Gopher's duplicate n-grams)."""
        return {n: self._ngrams[1][n] for n in DUP_NS}


class LineStats:
    """The lines of a text (``text_kernels.scan_lines``): ``lines``, their ``lengths`` and ``rows`` (per line: start,
    end, tokens, longest token, flags, sentence ends, terminals, as lists); ``fraction`` of the lines with a flag."""

    def __init__(self, text: str, scanned):
        table, self.flag_counts = scanned
        self.rows = table.tolist()
        self.lines = [text[row[0] : row[1]] for row in self.rows]
        self.lengths = table[:, 1] - table[:, 0]

    def fraction(self, flag: int) -> float:
        """Fraction of the lines with ``flag`` (0 without lines)."""
        return int(self.flag_counts[flag.bit_length() - 1]) / len(self.lines) if self.lines else 0.0


def one_line_stats(line: str) -> list[int]:
    """The row of :class:`LineStats` of ``line`` taken as one line as it is (not stripped, even if blank)."""
    return kernels().scan_lines(code_points(line), char_tables()[0], False)[0][0].tolist()
