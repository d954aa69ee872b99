"""``quality``: the published heuristic filters as presets: Gopher quality and repetition, C4, FineWeb.

``presets`` lists them in the order they run: ``gopher`` (= ``gopher_repetition`` then ``gopher_quality``, the
order of FineWeb's pipeline), ``gopher_quality``, ``gopher_repetition``, ``c4``, ``fineweb``. Thresholds live in
one section per family (``gopher``, ``c4``, ``fineweb``), each documented with its source and defaults in
:mod:`thresher.curate.filters.presets`; any of them can be overridden, or set to ``null`` to disable a rule.

A document is rejected by the first rule it fails: reason ``<section>.<option>``, the config key of its threshold
(``gopher.min_words``, ``gopher.max_dup_line_frac``, ``c4.filter_lorem_ipsum``), detail ``<signal>=<value> <op>
<threshold>`` (``c4.min_sentences`` adds how many lines C4's line filters dropped before the sentences were counted,
and why: ``c4_sentences=0 < 3 after C4's line filters dropped 12 of 12 lines: 11 without end punctuation, 1 under
5 words (lang=en)``).

The report's quality section (``rule_stats``, on by default; no column is added to the output) shows per rule its
threshold, the documents it rejects first, fails at all and fails alone, histograms of its signal over the
documents the stage kept and rejected, what a threshold one histogram bin looser or tighter would keep, the
combinations of rules failed together and up to 5 rejected texts (see :mod:`thresher.curate.filters.rule_stats`).
For that every rule is checked on every document, rejected ones too, which costs the rules after a document's
first failure (measured in one process: +5-10 % of the stage's time on C4 text where 13 % of the documents fail,
+30-40 % where 56 % fail); ``rule_stats: false`` stops at the first failure, and the report then shows the
rejections by first failing rule only.

* ``annotate_only: true`` drops nothing: every signal of the presets becomes a float column ``q_<signal>``, and
  ``q_reason`` holds the reason the document would have been rejected for (null if it passes).
* ``signals`` adds ``q_<signal>`` columns while filtering: ``true`` for all, or a list of signal names. Off by
  default: ~30 float columns per record are worth asking for. Rejected records carry them too.
* C4's line filters edit the text only with ``c4: {remove_lines: true}``; otherwise the text is untouched and
  C4's document rules are decided on the lines C4 would keep.

What is judged: the texts of ``fields`` (default: the text field; chat messages: their contents, see
:mod:`thresher.curate.fields`) joined by blank lines, as one document per record. ``c4: {remove_lines: true}`` needs one
field, and edits it where it holds one text (a string, a one-message conversation); longer conversations are
judged but not edited.

Per language: the document's ``lang`` (from ``langid``; ``default_lang`` when that column is absent, or is
``und``) picks the stop-word list, and for languages written without spaces the word-based rules (and FineWeb's
short-line rule) are skipped and counted (see :mod:`thresher.curate.filters.presets`). ``manifest.metrics.quality``
counts the documents whose word rules (``word_rules_skipped``) or stop-word rule (``stop_words_skipped``, no list
for the language) were skipped, and with ``remove_lines`` the lines removed (``c4_lines_removed``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import orjson
import pandas as pd
from pydantic import Field, field_validator, model_validator

from thresher.core.config import StrictModel
from thresher.curate.fields import TextFieldsConfig, assign, joined, reject_missing, unpack
from thresher.curate.filters.languages import UNKNOWN, normalize_code
from thresher.curate.filters.presets import SIGNALS, C4Config, Evaluator, FineWebConfig, GopherConfig, expand
from thresher.curate.filters.rule_stats import batch_summary
from thresher.curate.stage import CardSection, MapStage, StageCard, reject

PresetName = Literal["gopher", "gopher_quality", "gopher_repetition", "c4", "fineweb"]
SIGNAL_PREFIX = "q_"


class QualityConfig(TextFieldsConfig):
    fields: list[str] | None = Field(
        None,
        min_length=1,
        description=(
            "record fields whose texts, joined by blank lines, are judged as one document (chat messages: their "
            "contents); default: the input's text field"
        ),
    )
    presets: list[PresetName] = Field(
        ["gopher", "c4", "fineweb"], min_length=1, description=("the rule sets, in the order they run")
    )
    gopher: GopherConfig = Field(GopherConfig(), description="thresholds of gopher_quality and gopher_repetition")
    c4: C4Config = Field(C4Config(), description="thresholds and switches of c4")
    fineweb: FineWebConfig = Field(FineWebConfig(), description="thresholds of fineweb")
    annotate_only: bool = Field(False, description="reject nothing: every signal as a q_<signal> column and q_reason")
    rule_stats: bool = Field(
        True,
        description=(
            "the report's statistics per rule (every rule checked on every document, rejected ones too); false: a "
            "document's rules stop at its first failure"
        ),
    )
    signals: bool | list[str] = Field(False, description="q_<signal> columns: true for all, or a list of names")
    default_lang: str = Field("en", description="the language of records without lang (or und): picks the stop words")

    @field_validator("default_lang", mode="after")
    @classmethod
    def _lang(cls, v):
        return normalize_code(v)

    @model_validator(mode="after")
    def _known_signals(self):
        if isinstance(self.signals, list):
            available = {s.name for p in expand(self.presets) for s in p.signals}
            unknown = [s for s in self.signals if s not in available]
            if unknown:
                raise ValueError(
                    f"signals: {', '.join(unknown)} not measured by presets {self.presets} "
                    f"(available: {', '.join(sorted(available))})"
                )
        if self.c4.remove_lines and "c4" in self.presets and self.fields and len(self.fields) > 1:
            raise ValueError("c4.remove_lines edits one field: list one in fields")
        return self

    def sections(self) -> dict[str, StrictModel]:
        """The threshold sections by name (what the presets' ``section`` names)."""
        return {"gopher": self.gopher, "c4": self.c4, "fineweb": self.fineweb}


class Quality(MapStage):
    name = "quality"
    Config = QualityConfig
    report_sections = ("quality",)

    @classmethod
    def card(cls, options: dict, config: dict) -> StageCard:
        """The thresholds of its rules, in a section of their own."""
        return StageCard(
            hidden_options=("gopher", "c4", "fineweb"),
            options_note=" (thresholds below)",
            sections=(
                CardSection(
                    "Quality thresholds",
                    "A document is rejected by the first rule it fails; the reason is the rule's config key (under "
                    f"`{cls.name}`).",
                    ("rule (config key)", "signal", "kept when"),
                    tuple(_thresholds(options)),
                    order=10,
                ),
            ),
        )

    def __init__(self, config: QualityConfig, ctx):
        super().__init__(config, ctx)
        measured = [s.name for p in expand(config.presets) for s in p.signals]
        if isinstance(config.signals, list):
            self.wanted = tuple(s for s in measured if s in config.signals)
        else:
            self.wanted = tuple(measured) if (config.signals or config.annotate_only) else ()
        self.evaluator: Evaluator | None = None

    def added_columns(self) -> dict[str, str]:
        cols = {SIGNAL_PREFIX + s: SIGNALS[s].description for s in self.wanted}
        if self.config.annotate_only:
            cols[SIGNAL_PREFIX + "reason"] = "the quality rule this record fails (annotate_only: it was kept)"
        return cols

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        fields = self.config.field_names(batch, self.text)
        if reject_missing(batch, fields):
            return batch
        default = self.config.default_lang
        if "lang" in batch.columns:
            langs = [default if (not isinstance(l, str) or l == UNKNOWN) else l for l in batch["lang"]]
        else:
            langs = [default] * len(batch)
        if self.evaluator is None:  # built in the worker, with the worker's own rule objects
            self.evaluator = Evaluator(
                expand(self.config.presets),
                self.config.sections(),
                frozenset(self.wanted),
                every_rule=self.config.rule_stats,
            )
        evaluate = self.evaluator
        texts = joined(batch, fields)
        verdicts = [evaluate(t, lang) for t, lang in zip(texts, langs)]
        if self.config.rule_stats:
            summary = orjson.dumps({"rule_stats": batch_summary(evaluate.rules, verdicts, texts)}).decode()
            self.add_summary(batch, summary)

        for name in self.wanted:
            batch[SIGNAL_PREFIX + name] = np.array([v.signals.get(name, np.nan) for v in verdicts], np.float64)
        self.add_metric(batch, "word_rules_skipped", [int(v.word_rules_skipped) for v in verdicts])
        self.add_metric(batch, "stop_words_skipped", [int(v.stop_words_skipped) for v in verdicts])
        if self.config.c4.remove_lines and "c4" in self.config.presets:
            (name,) = fields
            assign(batch, name, [_with_lines_removed(value, v.text) for v, value in zip(verdicts, batch[name])])
            self.add_metric(batch, "c4_lines_removed", [v.lines_removed for v in verdicts])

        reasons = pd.Series([v.reason for v in verdicts], index=batch.index, dtype=object)
        if self.config.annotate_only:
            batch[SIGNAL_PREFIX + "reason"] = reasons
        else:
            details = pd.Series([v.detail for v in verdicts], index=batch.index, dtype=object)
            reject(batch, reasons.notna(), reasons, details)
        return batch


def _with_lines_removed(value, text: str | None):
    """The field value with its one text replaced by C4's kept lines (a value of several texts: unchanged)."""
    texts, pack = unpack(value)
    return pack([text]) if text is not None and len(texts) == 1 else value


def _thresholds(options: dict) -> list[tuple[str, str, str]]:
    """The rules in the order they run: reason (= config key), signal, threshold or off."""
    rows = []
    for preset in expand(options.get("presets", [])):
        section = options.get(preset.section, {})
        for rule in preset.rules:
            value = section.get(rule.option)
            shown = (
                "off"
                if value is None or value is False
                else ("on" if value is True else f"{'>=' if rule.bound == 'min' else '<='} {value:g}")
            )
            rows.append((f"`{preset.section}.{rule.option}`", f"`{rule.signal}`", shown))
    return rows
