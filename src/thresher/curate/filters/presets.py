"""The published heuristic filters as rule sets: Gopher quality, Gopher repetition, C4 and FineWeb.

A rule measures one signal of a document and compares it with one threshold of its preset's config
(``min_<signal>``, ``max_<signal>``, or a ``filter_*`` switch); ``null`` disables it. Rules run in the order of
the published implementations (DataTrove's, which reproduce the papers), and a document is rejected by the first
that fails, with reason ``<section>.<option>``: the config key to change to let it through
(``gopher.max_dup_line_frac``, ``c4.filter_lorem_ipsum``), and the measured value and threshold in the detail. Signal values go to ``q_<signal>`` columns where asked (:data:`SIGNALS`).

Languages written without spaces (:data:`thresher.curate.filters.languages.NO_SPACE_LANGS`: zh, ja, th, ...) have no
whitespace-delimited words: the rules marked ``spaced_only`` (word counts, mean word length, per-word ratios, stop
words, word n-grams, C4's words per line and word length, FineWeb's newlines per word) are skipped for them, and
the documents counted in the manifest (``metrics.quality.word_rules_skipped``). So is FineWeb's short-line rule:
its 30 characters assume spaced scripts (of the Leipzig sentences in ``langid/sentences``, 29 % of the Chinese
and Japanese ones are 30 characters or shorter, 3 % of the English ones; FineWeb-2 disabled the rule for every
language but English: ``max_short_line_ratio: null`` does the same). The other line- and character-based rules
still apply. The stop-word rule is skipped, and counted (``stop_words_skipped``), for languages without a list.

Scripts that end sentences without punctuation (Thai, Lao) fail FineWeb's line-punctuation rule and C4's
end-mark line filter whatever their quality (FineWeb-2's Thai threshold is 0): for such corpora set
``fineweb: {min_line_punct_ratio: null}`` and ``c4: {filter_no_terminal_punct: false}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from thresher.core.config import StrictModel
from thresher.curate.filters.bits import (
    DUP_NS,
    L_BRACKET,
    L_BULLET,
    L_C4_END,
    L_CURLY,
    L_DOTS,
    L_ELLIPSIS,
    L_TERMINAL,
    TOP_NS,
)
from thresher.curate.filters.languages import normalize_code
from thresher.curate.filters.text import TextStats, one_line_stats, stop_words


class GopherConfig(StrictModel):
    """Gopher quality and repetition filters: Rae et al. 2021, "Scaling Language Models: Methods, Analysis &
    Insights from Training Gopher", appendix A1.1 and table A1 (https://arxiv.org/abs/2112.11446); defaults
    as in the paper and DataTrove's ``GopherQualityFilter`` / ``GopherRepetitionFilter``.

    Quality: 50..100,000 words, mean word length 3..10 characters, at most 0.1 ``#`` and 0.1 ellipses per
    word, at most 90 % of lines starting with a bullet and 30 % ending in an ellipsis, at least 80 % of words
    with a letter, at least 2 distinct stop words of the document's language (the paper's English list is
    ``the be to of and that have with``; thresher's lists in ``curate/filters/stopwords/`` have ~50 of the
    most frequent function words, the paper's eight included, matched lowercase; ``stop_words`` replaces a
    language's list). Repetition (fractions of documents, or of characters): duplicate paragraphs 0.3 / 0.2,
    duplicate lines 0.3 / 0.2; the most frequent 2-, 3-, 4-gram at most 0.20, 0.18, 0.16 of the characters;
    duplicated 5- to 10-grams at most 0.15 down to 0.10.
    """

    min_words: int | None = Field(50, ge=0)
    max_words: int | None = Field(100_000, ge=0)
    min_mean_word_len: float | None = Field(3, ge=0)
    max_mean_word_len: float | None = Field(10, ge=0)
    max_hash_word_ratio: float | None = Field(0.1, ge=0)
    max_ellipsis_word_ratio: float | None = Field(0.1, ge=0)
    max_bullet_line_frac: float | None = Field(0.9, ge=0)
    max_ellipsis_line_frac: float | None = Field(0.3, ge=0)
    min_alpha_word_frac: float | None = Field(0.8, ge=0)
    min_stop_words: int | None = Field(2, ge=0)
    stop_words: dict[str, frozenset[str]] = Field({}, description="language -> stop words, replacing its list")
    max_dup_para_frac: float | None = Field(0.3, ge=0)
    max_dup_para_char_frac: float | None = Field(0.2, ge=0)
    max_dup_line_frac: float | None = Field(0.3, ge=0)
    max_dup_line_char_frac: float | None = Field(0.2, ge=0)
    max_top_2gram_char_frac: float | None = Field(0.2, ge=0)
    max_top_3gram_char_frac: float | None = Field(0.18, ge=0)
    max_top_4gram_char_frac: float | None = Field(0.16, ge=0)
    max_dup_5gram_char_frac: float | None = Field(0.15, ge=0)
    max_dup_6gram_char_frac: float | None = Field(0.14, ge=0)
    max_dup_7gram_char_frac: float | None = Field(0.13, ge=0)
    max_dup_8gram_char_frac: float | None = Field(0.12, ge=0)
    max_dup_9gram_char_frac: float | None = Field(0.11, ge=0)
    max_dup_10gram_char_frac: float | None = Field(0.1, ge=0)

    @field_validator("stop_words", mode="after")
    @classmethod
    def _normalize(cls, v):
        return {normalize_code(lang): frozenset(w.lower() for w in words) for lang, words in v.items()}


class C4Config(StrictModel):
    """C4's cleaning: Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
    Transformer", section 2.2 (https://jmlr.org/papers/v21/20-074.html), with the constants of its reference
    code, TensorFlow Datasets' ``c4_utils.py`` (``_MIN_WORDS_PER_LINE = 5``, ``_MIN_NUM_SENTENCES = 3``,
    ``_MAX_WORD_LENGTH = 1000``, end marks ``. ? ! "``). DataTrove's ``C4QualityFilter`` (used for FineWeb)
    defaults to 3 words per line and 5 sentences and also accepts ``'``: set ``min_words_per_line: 3,
    min_sentences: 5`` for its thresholds (FineWeb also set ``filter_no_terminal_punct: false``).

    Line by line (lines stripped): drop lines with a word over ``max_word_length`` characters; remove Wikipedia
    citation marks (``[1]``, ``[edit]``, ``[citation needed]``); drop lines that do not end in ``. ? ! "`` (or
    a sentence terminal of a non-Latin script, e.g. ``。`` ``।`` ``؟``) or that end in ``...``; drop lines of
    fewer than ``min_words_per_line`` words, lines mentioning "javascript" and lines with cookie or
    terms-of-use phrases. Among the remaining lines, "lorem ipsum" or a ``{`` rejects the document; so do fewer
    than ``min_sentences`` sentences in them. Sentences are counted as terminal punctuation followed by
    whitespace, plus the line's own end (C4 used NLTK's punkt, which also knows abbreviations).

    The line filters edit the text only with ``remove_lines: true`` (the kept lines joined by newlines, as C4
    does, so paragraph breaks are lost); by default the document rules are decided on the kept lines and the
    text is left as it was. C4's bad-words list is not applied.
    """

    remove_lines: bool = False
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_words_per_line: int | None = Field(5, ge=0)
    max_word_length: int | None = Field(1000, ge=1)
    filter_javascript: bool = True
    filter_policy: bool = True
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True
    min_sentences: int | None = Field(3, ge=0)


class FineWebConfig(StrictModel):
    """FineWeb's own filters: Penedo et al. 2024, "The FineWeb Datasets" (https://arxiv.org/abs/2406.17557),
    defaults of DataTrove's ``FineWebQualityFilter``: at least 12 % of lines end in terminal punctuation
    (``line_punct_exclude_zero`` exempts documents where none does), at most 67 % of lines are 30 characters
    or shorter, at most 1 % of the characters (newlines excluded) are in duplicated lines, at most 0.3
    newlines per word.
    """

    min_line_punct_ratio: float | None = Field(0.12, ge=0)
    line_punct_exclude_zero: bool = False
    max_short_line_ratio: float | None = Field(0.67, ge=0)
    short_line_chars: int = Field(30, ge=0)
    max_char_dup_ratio: float | None = Field(0.01, ge=0)
    max_newline_word_ratio: float | None = Field(0.3, ge=0)


# -- C4's line pass ------------------------------------------------------------------------------------------

_CITATION = re.compile(r"\[\d*+\]|\[edit\]|\[citation needed\]")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


@dataclass
class C4Lines:
    kept: list[str]
    sentences: int = 0
    lorem_ipsum: bool = False
    curly_bracket: bool = False
    dropped: dict[str, int] = field(default_factory=dict)  # lines dropped, by the filter that dropped them


def _has_policy(lower: str) -> bool:
    return ("cookie" in lower or "terms of use" in lower or "privacy policy" in lower) and any(
        p in lower for p in _POLICY
    )


def c4_lines(stats: TextStats, cfg: C4Config) -> C4Lines:
    """C4's line filters over the document's lines (cached on ``stats``).

    The per-line measures come from :func:`~thresher.curate.filters.text_kernels.scan_lines` (a line whose citation marks
    are removed is measured again). A phrase check lowercases a line only if the whole text (citation marks
    removed) may contain the phrase, every policy phrase containing "cookie", "terms of use" or "privacy
    policy": a line's lowercase is part of the text's, and ``str.lower`` makes ASCII letters only of ASCII
    letters and of the Kelvin sign (U+212A -> ``k``; ``İ`` -> ``i`` + U+0307, in no phrase), so the ASCII
    lowercase of the text's UTF-8 bytes holds every phrase that a line's lowercase holds.
    """
    cached = stats.__dict__.get("_c4")
    if cached is not None:
        return cached
    out = C4Lines([])
    spaced, text = stats.spaced, stats.text
    max_word = cfg.max_word_length if spaced else None
    min_words = cfg.min_words_per_line if spaced else None
    citations = cfg.remove_citations and "[" in text
    lower_text = (_CITATION.sub("", text) if citations else text).encode("utf-8", "surrogatepass").lower()
    kelvin = "\u212a" in text
    lorem = kelvin or b"lorem ipsum" in lower_text
    javascript = cfg.filter_javascript and (kelvin or b"javascript" in lower_text)
    policy = cfg.filter_policy and (
        kelvin or b"cookie" in lower_text or b"terms of use" in lower_text or b"privacy policy" in lower_text
    )
    ls = stats.line_stats
    long_word = no_end = dots = few_words = javascript_lines = policy_lines = 0  # lines dropped, by filter
    for line, (_, _, tokens, longest, flags, ends, terminals) in zip(ls.lines, ls.rows):
        if max_word is not None and longest > max_word:
            long_word += 1
            continue
        if citations and flags & L_BRACKET:
            cleaned = _CITATION.sub("", line)
            if cleaned != line:
                line = cleaned
                _, _, tokens, _, flags, ends, terminals = one_line_stats(line)
        if cfg.filter_no_terminal_punct and (not flags & L_C4_END or flags & L_DOTS):
            if flags & L_C4_END:
                dots += 1
            else:
                no_end += 1
            continue
        if min_words and tokens < min_words:
            few_words += 1
            continue
        if lorem or javascript or policy:
            lower = line.lower()
            if lorem and "lorem ipsum" in lower:
                out.lorem_ipsum = True
            if javascript and "javascript" in lower:
                javascript_lines += 1
                continue
            if flags & L_CURLY:
                out.curly_bracket = True
            if policy and _has_policy(lower):
                policy_lines += 1
                continue
        elif flags & L_CURLY:
            out.curly_bracket = True
        out.kept.append(line)
        out.sentences += ends + 1 if spaced else max(1, terminals)
    dropped = {
        f"with a word over {max_word} characters": long_word,
        "without end punctuation": no_end,
        "ending in '...'": dots,
        f"under {min_words} words": few_words,
        "mentioning javascript": javascript_lines,
        "with a cookie or terms-of-use phrase": policy_lines,
    }
    out.dropped = {why: n for why, n in dropped.items() if n}
    stats.__dict__["_c4"] = out
    return out


# -- rules ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signal:
    name: str
    description: str
    kind: Literal["fraction", "count", "length", "flag"]


@dataclass(frozen=True)
class Rule:
    signal: str
    bound: Literal["min", "max", "flag"]
    option: str  # the threshold's field in the preset's config
    measure: Callable[[TextStats, Any], float | None]  # None: does not apply to this document
    spaced_only: bool = False  # assumes whitespace-delimited words: skipped for languages without spaces
    exempt: Callable[[float, Any], bool] | None = None
    measured_on: Callable[[TextStats, Any], str] | None = None  # what the signal was measured on, for the detail


@dataclass(frozen=True)
class Preset:
    name: str
    section: str  # config attribute holding its thresholds
    rules: tuple[Rule, ...]
    signals: tuple[Signal, ...] = field(default=())


def _mean_word_len(stats: TextStats, cfg) -> float:
    return stats.word_chars / stats.words if stats.words else 0.0


def _short_line_ratio(stats: TextStats, cfg: FineWebConfig) -> float:
    ls = stats.line_stats
    return int(np.count_nonzero(ls.lengths <= cfg.short_line_chars)) / len(ls.lines) if ls.lines else 0.0


def _c4_dropped(lines: C4Lines, total: int) -> str:
    """What C4's line filters did before sentences were counted, e.g. ``after C4's line filters dropped 12 of 12
    lines: 11 without end punctuation, 1 under 5 words``."""
    why = ", ".join(f"{n} {what}" for what, n in sorted(lines.dropped.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"after C4's line filters dropped {total - len(lines.kept)} of {total} lines" + (f": {why}" if why else "")


def _top(n):
    return lambda s, c: s.top_ngrams[n] / s.chars


def _dup(n):
    return lambda s, c: s.dup_ngrams[n] / s.chars


GOPHER_REPETITION = Preset(
    "gopher_repetition",
    "gopher",
    (
        Rule("dup_para_frac", "max", "max_dup_para_frac", lambda s, c: s.dup_paragraphs[0] / len(s.paragraphs)),
        Rule("dup_para_char_frac", "max", "max_dup_para_char_frac", lambda s, c: s.dup_paragraphs[1] / s.chars),
        Rule("dup_line_frac", "max", "max_dup_line_frac", lambda s, c: s.dup_lines[0] / max(len(s.lines), 1)),
        Rule("dup_line_char_frac", "max", "max_dup_line_char_frac", lambda s, c: s.dup_lines[1] / s.chars),
        *(
            Rule(f"top_{n}gram_char_frac", "max", f"max_top_{n}gram_char_frac", _top(n), spaced_only=True)
            for n in TOP_NS
        ),
        *(
            Rule(f"dup_{n}gram_char_frac", "max", f"max_dup_{n}gram_char_frac", _dup(n), spaced_only=True)
            for n in DUP_NS
        ),
    ),
    (
        Signal("dup_para_frac", "fraction of paragraphs that repeat an earlier one", "fraction"),
        Signal("dup_para_char_frac", "fraction of characters in repeated paragraphs", "fraction"),
        Signal("dup_line_frac", "fraction of lines that repeat an earlier one", "fraction"),
        Signal("dup_line_char_frac", "fraction of characters in repeated lines", "fraction"),
        *(
            Signal(f"top_{n}gram_char_frac", f"fraction of characters in the most frequent word {n}-gram", "fraction")
            for n in TOP_NS
        ),
        *(
            Signal(f"dup_{n}gram_char_frac", f"fraction of characters in repeated word {n}-grams", "fraction")
            for n in DUP_NS
        ),
    ),
)

GOPHER_QUALITY = Preset(
    "gopher_quality",
    "gopher",
    (
        Rule("words", "min", "min_words", lambda s, c: s.words, spaced_only=True),
        Rule("words", "max", "max_words", lambda s, c: s.words, spaced_only=True),
        Rule("mean_word_len", "min", "min_mean_word_len", _mean_word_len, spaced_only=True),
        Rule("mean_word_len", "max", "max_mean_word_len", _mean_word_len, spaced_only=True),
        Rule(
            "hash_word_ratio", "max", "max_hash_word_ratio", lambda s, c: s.text.count("#") / s.tokens, spaced_only=True
        ),
        Rule(
            "ellipsis_word_ratio",
            "max",
            "max_ellipsis_word_ratio",
            lambda s, c: (s.text.count("...") + s.text.count("…")) / s.tokens,
            spaced_only=True,
        ),
        Rule("bullet_line_frac", "max", "max_bullet_line_frac", lambda s, c: s.line_stats.fraction(L_BULLET)),
        Rule("ellipsis_line_frac", "max", "max_ellipsis_line_frac", lambda s, c: s.line_stats.fraction(L_ELLIPSIS)),
        Rule(
            "alpha_word_frac",
            "min",
            "min_alpha_word_frac",
            lambda s, c: 1 - s.letterless_tokens / s.tokens,
            spaced_only=True,
        ),
        Rule("stop_words", "min", "min_stop_words", lambda s, c: s.stop_words_found, spaced_only=True),
    ),
    (
        Signal("words", "words (whitespace tokens with a non-punctuation character)", "count"),
        Signal("mean_word_len", "mean word length in characters, punctuation stripped", "length"),
        Signal("hash_word_ratio", "'#' characters per whitespace token", "fraction"),
        Signal("ellipsis_word_ratio", "ellipses ('...' or '…') per whitespace token", "fraction"),
        Signal("bullet_line_frac", "fraction of lines starting with a bullet", "fraction"),
        Signal("ellipsis_line_frac", "fraction of lines ending with an ellipsis", "fraction"),
        Signal("alpha_word_frac", "fraction of whitespace tokens with at least one letter", "fraction"),
        Signal("stop_words", "distinct stop words of the document's language", "count"),
    ),
)

C4 = Preset(
    "c4",
    "c4",
    (
        Rule("c4_lorem_ipsum", "flag", "filter_lorem_ipsum", lambda s, c: float(c4_lines(s, c).lorem_ipsum)),
        Rule("c4_curly_bracket", "flag", "filter_curly_bracket", lambda s, c: float(c4_lines(s, c).curly_bracket)),
        Rule(
            "c4_sentences",
            "min",
            "min_sentences",
            lambda s, c: c4_lines(s, c).sentences,
            measured_on=lambda s, c: _c4_dropped(c4_lines(s, c), len(s.lines)),
        ),
    ),
    (
        Signal("c4_lorem_ipsum", "1 if a kept line contains 'lorem ipsum'", "flag"),
        Signal("c4_curly_bracket", "1 if a kept line contains '{'", "flag"),
        Signal("c4_sentences", "sentences in the lines C4's line filters keep", "count"),
    ),
)

FINEWEB = Preset(
    "fineweb",
    "fineweb",
    (
        Rule(
            "line_punct_ratio",
            "min",
            "min_line_punct_ratio",
            lambda s, c: s.line_stats.fraction(L_TERMINAL),
            exempt=lambda v, c: v == 0 and c.line_punct_exclude_zero,
        ),
        Rule("short_line_ratio", "max", "max_short_line_ratio", _short_line_ratio, spaced_only=True),
        Rule(
            "char_dup_ratio",
            "max",
            "max_char_dup_ratio",
            lambda s, c: s.dup_lines[1] / max(s.chars - s.text.count("\n"), 1),
        ),
        Rule(
            "newline_word_ratio",
            "max",
            "max_newline_word_ratio",
            lambda s, c: s.text.count("\n") / s.tokens,
            spaced_only=True,
        ),
    ),
    (
        Signal("line_punct_ratio", "fraction of lines ending in terminal punctuation", "fraction"),
        Signal("short_line_ratio", "fraction of lines of at most short_line_chars characters", "fraction"),
        Signal("char_dup_ratio", "fraction of characters (newlines excluded) in repeated lines", "fraction"),
        Signal("newline_word_ratio", "newlines per whitespace token", "fraction"),
    ),
)

PRESETS = {p.name: p for p in (GOPHER_REPETITION, GOPHER_QUALITY, C4, FINEWEB)}
ALIASES = {"gopher": ("gopher_repetition", "gopher_quality")}
SIGNALS = {s.name: s for p in PRESETS.values() for s in p.signals}


def expand(names: list[str]) -> list[Preset]:
    """Preset names (``gopher`` standing for its two parts) to presets, in order, each once."""
    out: list[Preset] = []
    for name in names:
        for part in ALIASES.get(name, (name,)):
            if PRESETS[part] not in out:
                out.append(PRESETS[part])
    return out


# -- evaluation ----------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """The outcome for one document."""

    reason: str | None = None
    detail: str | None = None
    signals: dict[str, float] = field(default_factory=dict)
    values: list[float] = field(default_factory=list)  # per rule of ``Evaluator.rules``: its signal, NaN if unmeasured
    failed: list[int] = field(default_factory=list)  # the rules of ``Evaluator.rules`` it fails (measured ones)
    text: str | None = None  # the text after C4's line removal, when it changed
    lines_removed: int = 0
    word_rules_skipped: bool = False
    stop_words_skipped: bool = False


@dataclass(frozen=True)
class EnabledRule:
    """A rule with a threshold in the run's config: ``reason`` its config key (``gopher.min_words``)."""

    reason: str
    rule: Rule
    threshold: Any


def _fails(rule: Rule, value: float, threshold, cfg) -> bool:
    if rule.exempt is not None and rule.exempt(value, cfg):
        return False
    if rule.bound == "min":
        return value < threshold
    if rule.bound == "max":
        return value > threshold
    return value > 0


def _detail(rule: Rule, value: float, threshold, lang: str, measured_on: str | None = None) -> str:
    where = f" {measured_on}" if measured_on else ""
    if rule.bound == "flag":
        return f"{rule.signal}=1{where} (lang={lang})"
    op = "<" if rule.bound == "min" else ">"
    return f"{rule.signal}={value:.4g} {op} {threshold:g}{where} (lang={lang})"


def enabled_rules(presets: list[Preset], configs: dict[str, Any]) -> list[EnabledRule]:
    """The rules of ``presets`` with a threshold in ``configs`` (section -> config), in the order they run."""
    out = []
    for preset in presets:
        for rule in preset.rules:
            threshold = getattr(configs[preset.section], rule.option)
            if threshold is not None and threshold is not False:
                out.append(EnabledRule(f"{preset.section}.{rule.option}", rule, threshold))
    return out


EMPTY = "quality.empty"  # the reason of a document without non-whitespace characters (no rule measured)


class Evaluator:
    """The presets' rules with their thresholds read from ``configs`` (section -> config) once, judging documents
    one by one: the first failure, and the ``wanted`` signals' values.

    With ``every_rule``, every enabled rule (:attr:`rules`) is measured and checked on every document, and the
    verdict lists all it fails; otherwise rules after the first failure run only for the signals wanted. A C4
    preset with ``remove_lines`` that the document passes replaces its text, and the presets after it see the new
    text.
    """

    def __init__(
        self, presets: list[Preset], configs: dict[str, Any], wanted: frozenset[str], every_rule: bool = False
    ):
        self.plan = []  # per preset: (preset, config, checks: rule, threshold, index in rules or -1, wanted, reason)
        self.rules = enabled_rules(presets, configs)
        index = {r.reason: i for i, r in enumerate(self.rules)}
        for preset in presets:
            cfg = configs[preset.section]
            checks = []
            for rule in preset.rules:
                reason = f"{preset.section}.{rule.option}"
                checks.append((rule, getattr(cfg, rule.option), index.get(reason, -1), rule.signal in wanted, reason))
            self.plan.append((preset, cfg, checks))
        self.every_rule = every_rule
        self.gopher = configs.get("gopher")
        self.uses_stops = any(p.name == GOPHER_QUALITY.name for p in presets)

    def __call__(self, text: str, lang: str) -> Verdict:
        verdict = Verdict(values=[np.nan] * len(self.rules))
        if not text or text.isspace():
            verdict.reason, verdict.detail = EMPTY, "no non-whitespace characters"
            return verdict
        stops = (self.gopher.stop_words.get(lang) or stop_words(lang)) if self.uses_stops else None
        stats = TextStats(text, lang, stops)
        every = self.every_rule
        for preset, cfg, checks in self.plan:
            if preset.name == C4.name and not stats.spaced:  # its words-per-line and word-length line filters
                verdict.word_rules_skipped = True
            for rule, threshold, index, wanted, reason in checks:
                if not wanted and (index < 0 or (verdict.reason and not every)):
                    continue
                if rule.spaced_only and not stats.spaced:
                    verdict.word_rules_skipped = True
                    continue
                value = rule.measure(stats, cfg)
                if value is None:  # only the stop-word rule: no list for the language
                    verdict.stop_words_skipped = True
                    continue
                if wanted:
                    verdict.signals[rule.signal] = value
                if index < 0 or (verdict.reason and not every):
                    continue
                verdict.values[index] = value
                if _fails(rule, value, threshold, cfg):
                    verdict.failed.append(index)
                    if verdict.reason is None:
                        verdict.reason = reason
                        verdict.detail = _detail(
                            rule, value, threshold, lang, rule.measured_on(stats, cfg) if rule.measured_on else None
                        )
            if preset.name == C4.name and cfg.remove_lines and verdict.reason is None:
                kept = c4_lines(stats, cfg).kept
                new_text = "\n".join(kept)
                if new_text != stats.text:
                    verdict.text = new_text
                    verdict.lines_removed = len(stats.lines) - len(kept)
                    stats = TextStats(new_text, lang, stops)
        return verdict
