"""``quality``: the published heuristic filters (Gopher quality and repetition, C4, FineWeb) as presets.

Defaults follow the papers as implemented in DataTrove (``gopher_quality_filter.py``,
``gopher_repetition_filter.py``, ``c4_filters.py``, ``fineweb_quality_filter.py``):

* Gopher quality (Rae et al. 2021, app. A): 50..100,000 words; mean word length 3..10 characters;
  symbol (``#``, ``...``, ``…``) to word ratio <= 0.1; <= 90% of lines start with a bullet; <= 30% of lines end
  with an ellipsis; >= 80% of words contain a letter; >= 2 stop words (per language, see ``STOP_WORDS``).
* Gopher repetition: duplicate lines <= 30% of lines and <= 20% of characters; duplicate paragraphs <= 30% and
  <= 20% of characters; the most frequent 2/3/4-gram covers <= 20/18/16% of characters; duplicated 5..10-grams
  cover <= 15/14/13/12/11/10% of characters.
* C4 (Raffel et al. 2020): drop the document on "lorem ipsum", a curly bracket or a word over 1,000
  characters; with ``remove_lines`` (on by default, as in C4) drop lines without terminal punctuation, with
  fewer than 3 words, mentioning javascript or a cookie/privacy/terms policy; then require >= 5 sentences.
* FineWeb (Penedo et al. 2024): >= 12% of lines end in punctuation; <= 67% of lines are 30 characters or
  shorter; duplicated lines hold <= 1% of characters; newlines <= 0.3 per word.

Every threshold is an option (``gopher_quality: {min_words: 20}``). A rejected document records the first
failing rule as ``<preset>.<rule>`` and ``value=... threshold=...``. ``annotate_only`` adds the signals as
``q_<preset>_<signal>`` columns and drops nothing; ``signals: true`` adds them while filtering too.

Languages: word-based rules (word counts and lengths, stop words, word n-grams, words per line) assume
whitespace-separated words. For languages written without spaces (``NO_SPACE_LANGS``: zh, ja, th, ...) those
rules are skipped, never silently applied; line, paragraph and character rules still apply. The stop-word
rule uses the list of the document's ``lang`` (from ``langid``; else ``default_lang``) and is skipped for a
language without a list.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from pipelines.stage import MapStage, StageConfig, reject

NO_SPACE_LANGS = {"zh", "ja", "th", "lo", "km", "my", "bo", "wuu", "yue"}
# The most frequent function words of each language (Gopher's English list, extended per language).
STOP_WORDS = {
    "en": {"the", "be", "to", "of", "and", "that", "have", "with"},
    "de": {"der", "die", "das", "und", "zu", "den", "nicht", "von", "ist", "mit", "sich", "des", "auf", "ein"},
    "fr": {"le", "la", "les", "de", "des", "et", "un", "une", "est", "que", "pour", "dans", "du", "en"},
    "es": {"el", "la", "de", "que", "y", "en", "los", "las", "un", "una", "por", "con", "para", "es"},
    "it": {"il", "la", "di", "che", "e", "un", "una", "per", "non", "in", "sono", "con", "del", "le"},
    "pt": {"o", "a", "de", "que", "e", "do", "da", "em", "um", "uma", "para", "os", "as", "com"},
    "nl": {"de", "het", "een", "en", "van", "is", "dat", "op", "te", "in", "niet", "zijn", "met", "voor"},
}
BULLETS = ("•", "‣", "⁃", "◦", "-", "*", "·", "●", "▪")
TERMINAL = (".", "!", "?", '"', "'", "”", "’", "…", "。", "！", "？")
# A whitespace-delimited word without any letter; possessive and anchored on a preceding space: linear time.
_NON_ALPHA_WORD = re.compile(r"(?<!\S)(?:(?![^\W\d_])\S)++(?!\S)")
_SENTENCE_END = re.compile(r"[.!?。！？]++(?=\s|$)")  # possessive: linear time
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class GopherQuality(StageConfig):
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3
    max_mean_word_length: float = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_frac: float = 0.9
    max_ellipsis_lines_frac: float = 0.3
    min_alpha_words_frac: float = 0.8
    min_stop_words: int = 2


class GopherRepetition(StageConfig):
    max_dup_line_frac: float = 0.3
    max_dup_para_frac: float = 0.3
    max_dup_line_char_frac: float = 0.2
    max_dup_para_char_frac: float = 0.2
    max_top_ngram_char_frac: dict[int, float] = {2: 0.20, 3: 0.18, 4: 0.16}
    max_dup_ngram_char_frac: dict[int, float] = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


class C4(StageConfig):
    remove_lines: bool = True
    min_words_per_line: int = 3
    max_word_length: int = 1000
    min_sentences: int = 5


class FineWeb(StageConfig):
    min_line_punct_frac: float = 0.12
    max_short_line_frac: float = 0.67
    short_line_chars: int = 30
    max_dup_line_char_frac: float = 0.01
    max_newline_per_word: float = 0.3


class QualityConfig(StageConfig):
    presets: list[Literal["gopher_quality", "gopher_repetition", "gopher", "c4", "fineweb"]] = [
        "gopher", "c4", "fineweb"]
    gopher_quality: GopherQuality = GopherQuality()
    gopher_repetition: GopherRepetition = GopherRepetition()
    c4: C4 = C4()
    fineweb: FineWeb = FineWeb()
    annotate_only: bool = False
    signals: bool = Field(False, description="also add q_* signal columns when filtering")
    default_lang: str = "en"


class Failure(Exception):
    def __init__(self, rule: str, value: float, threshold: float):
        self.rule, self.value, self.threshold = rule, value, threshold


def _check(rule: str, value: float, ok: bool, threshold: float, signals: dict, annotate: bool) -> None:
    signals[rule] = value
    if not ok and not annotate:
        raise Failure(rule, value, threshold)


def dup_stats(items: list[str]) -> tuple[float, float]:
    """Fraction of items that repeat an earlier item, and the fraction of characters they hold."""
    seen: set[str] = set()
    dup = dup_chars = total_chars = 0
    for item in items:
        total_chars += len(item)
        if item in seen:
            dup += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return (dup / len(items) if items else 0.0), (dup_chars / total_chars if total_chars else 0.0)


def ngram_keys(ids: np.ndarray, n: int) -> np.ndarray:
    """One 64-bit key per word n-gram (polynomial hash of word ids; wraps around, collisions negligible)."""
    keys = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    for j in range(n):
        keys = keys * np.uint64(1_000_003) + ids[j: len(ids) - n + 1 + j]
    return keys


def repetition_signals(words: list[str], top: list[int], dup: list[int]) -> dict[tuple[str, int], float]:
    """Gopher's n-gram repetition signals, vectorised over the document's words.

    ``top n``: characters of the most frequent n-gram times its count, over all word characters.
    ``dup n``: characters of the words covered by n-grams seen earlier in the document (each word once).
    """
    array = np.array(words)
    ids = np.unique(array, return_inverse=True)[1].astype(np.uint64).ravel()
    lengths = np.char.str_len(array).astype(np.int64)
    total = int(lengths.sum())
    out: dict[tuple[str, int], float] = {}
    for n in top:
        if len(words) < n or not total:
            out["top", n] = 0.0
            continue
        keys = ngram_keys(ids, n)
        uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
        best = int(np.argmax(counts))
        start = int(first[best])
        out["top", n] = int(lengths[start: start + n].sum()) * int(counts[best]) / total
    for n in dup:
        if len(words) < n or not total:
            out["dup", n] = 0.0
            continue
        keys = ngram_keys(ids, n)
        _, first = np.unique(keys, return_index=True)
        repeated = np.ones(len(keys), dtype=bool)
        repeated[first] = False
        starts = np.flatnonzero(repeated)
        cover = np.zeros(len(words) + 1, dtype=np.int64)
        np.add.at(cover, starts, 1)
        np.add.at(cover, starts + n, -1)
        out["dup", n] = int(lengths[np.cumsum(cover[:-1]) > 0].sum()) / total
    return out


class Quality(MapStage):
    name = "quality"
    Config = QualityConfig

    def presets(self) -> list[str]:
        out: list[str] = []
        for p in self.config.presets:
            out += ["gopher_quality", "gopher_repetition"] if p == "gopher" else [p]
        return list(dict.fromkeys(out))

    def evaluate(self, text: str, lang: str) -> tuple[str, dict]:
        """The (possibly line-cleaned) text and the signals; raises Failure at the first failing rule."""
        c, annotate, s = self.config, self.config.annotate_only, {}
        spaced = lang not in NO_SPACE_LANGS
        for preset in self.presets():
            if preset == "c4":
                text = self.c4(text, spaced, s)
                continue
            lines = [l for l in text.split("\n") if l.strip()]
            words = text.split() if spaced else []
            if preset == "gopher_quality":
                g = c.gopher_quality
                if spaced:
                    n = len(words)
                    _check("gopher_quality.min_words", n, n >= g.min_words, g.min_words, s, annotate)
                    _check("gopher_quality.max_words", n, n <= g.max_words, g.max_words, s, annotate)
                    mean = sum(map(len, words)) / n if n else 0.0
                    _check("gopher_quality.min_mean_word_length", mean, mean >= g.min_mean_word_length, g.min_mean_word_length, s, annotate)
                    _check("gopher_quality.max_mean_word_length", mean, mean <= g.max_mean_word_length, g.max_mean_word_length, s, annotate)
                    symbols = (text.count("#") + text.count("...") + text.count("…")) / n if n else 0.0
                    _check("gopher_quality.max_symbol_word_ratio", symbols, symbols <= g.max_symbol_word_ratio, g.max_symbol_word_ratio, s, annotate)
                    alpha = 1 - len(_NON_ALPHA_WORD.findall(text)) / n if n else 0.0
                    _check("gopher_quality.min_alpha_words_frac", alpha, alpha >= g.min_alpha_words_frac, g.min_alpha_words_frac, s, annotate)
                    stops = STOP_WORDS.get(lang)
                    if stops is not None:
                        found = 0
                        for w in words:  # counting stops early unless the full count is wanted
                            found += w.lower() in stops
                            if found >= g.min_stop_words and not annotate:
                                break
                        _check("gopher_quality.min_stop_words", found, found >= g.min_stop_words, g.min_stop_words, s, annotate)
                nl = len(lines) or 1
                bullets = sum(l.lstrip().startswith(BULLETS) for l in lines) / nl
                _check("gopher_quality.max_bullet_lines_frac", bullets, bullets <= g.max_bullet_lines_frac, g.max_bullet_lines_frac, s, annotate)
                ellipsis = sum(l.rstrip().endswith(("...", "…")) for l in lines) / nl
                _check("gopher_quality.max_ellipsis_lines_frac", ellipsis, ellipsis <= g.max_ellipsis_lines_frac, g.max_ellipsis_lines_frac, s, annotate)
            elif preset == "gopher_repetition":
                r = c.gopher_repetition
                line_frac, line_chars = dup_stats(lines)
                paras = [p for p in text.split("\n\n") if p.strip()]
                para_frac, para_chars = dup_stats(paras)
                _check("gopher_repetition.max_dup_line_frac", line_frac, line_frac <= r.max_dup_line_frac, r.max_dup_line_frac, s, annotate)
                _check("gopher_repetition.max_dup_para_frac", para_frac, para_frac <= r.max_dup_para_frac, r.max_dup_para_frac, s, annotate)
                _check("gopher_repetition.max_dup_line_char_frac", line_chars, line_chars <= r.max_dup_line_char_frac, r.max_dup_line_char_frac, s, annotate)
                _check("gopher_repetition.max_dup_para_char_frac", para_chars, para_chars <= r.max_dup_para_char_frac, r.max_dup_para_char_frac, s, annotate)
                if spaced:
                    rep = repetition_signals(words, sorted(r.max_top_ngram_char_frac), sorted(r.max_dup_ngram_char_frac))
                    for n, limit in sorted(r.max_top_ngram_char_frac.items()):
                        v = rep["top", n]
                        _check(f"gopher_repetition.max_top_{n}gram_char_frac", v, v <= limit, limit, s, annotate)
                    for n, limit in sorted(r.max_dup_ngram_char_frac.items()):
                        v = rep["dup", n]
                        _check(f"gopher_repetition.max_dup_{n}gram_char_frac", v, v <= limit, limit, s, annotate)
            elif preset == "fineweb":
                f = c.fineweb
                nl = len(lines) or 1
                punct = sum(l.rstrip().endswith(TERMINAL) for l in lines) / nl
                _check("fineweb.min_line_punct_frac", punct, punct >= f.min_line_punct_frac, f.min_line_punct_frac, s, annotate)
                short = sum(len(l) <= f.short_line_chars for l in lines) / nl
                _check("fineweb.max_short_line_frac", short, short <= f.max_short_line_frac, f.max_short_line_frac, s, annotate)
                _, dup_chars = dup_stats(lines)
                _check("fineweb.max_dup_line_char_frac", dup_chars, dup_chars <= f.max_dup_line_char_frac, f.max_dup_line_char_frac, s, annotate)
                if spaced:
                    ratio = text.count("\n") / (len(words) or 1)
                    _check("fineweb.max_newline_per_word", ratio, ratio <= f.max_newline_per_word, f.max_newline_per_word, s, annotate)
        return text, s

    def c4(self, text: str, spaced: bool, s: dict) -> str:
        c, annotate = self.config.c4, self.config.annotate_only
        low = text.lower()
        _check("c4.lorem_ipsum", float("lorem ipsum" in low), "lorem ipsum" not in low, 0, s, annotate)
        _check("c4.curly_bracket", float("{" in text), "{" not in text, 0, s, annotate)
        longest = max(map(len, text.split()), default=0)
        _check("c4.max_word_length", longest, longest <= c.max_word_length, c.max_word_length, s, annotate)
        if c.remove_lines and not annotate:
            kept = []
            for line in text.split("\n"):
                stripped = line.strip()
                if not stripped.endswith(TERMINAL) or stripped.endswith("..."):
                    continue
                if spaced and len(stripped.split()) < c.min_words_per_line:
                    continue
                lower = stripped.lower()
                if "javascript" in lower or any(p in lower for p in POLICY):
                    continue
                kept.append(line)
            text = "\n".join(kept)
        sentences = len(_SENTENCE_END.findall(text))
        _check("c4.min_sentences", sentences, sentences >= c.min_sentences, c.min_sentences, s, annotate)
        return text

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        langs = batch["lang"] if "lang" in batch else pd.Series(self.config.default_lang, index=batch.index)
        texts, reasons, details, signals = [], [], [], []
        for text, lang in zip(batch[self.text], langs):
            try:
                new, sig = self.evaluate(text, lang or self.config.default_lang)
                texts.append(new)
                reasons.append(None)
                details.append(None)
            except Failure as f:
                texts.append(text)
                reasons.append(f.rule)
                details.append(f"value={f.value:.4g} threshold={f.threshold:g}")
                sig = {}
            signals.append(sig)
        batch[self.text] = texts
        if self.config.annotate_only or self.config.signals:
            names = sorted({k for sig in signals for k in sig})
            for name in names:
                batch["q_" + name.replace(".", "_")] = [sig.get(name) for sig in signals]
        reasons = pd.Series(reasons, index=batch.index, dtype=object)
        reject(batch, reasons.notna(), reasons, pd.Series(details, index=batch.index, dtype=object))
        return batch
