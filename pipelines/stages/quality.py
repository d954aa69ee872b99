"""``quality``: the published heuristic filters as presets: Gopher quality and repetition, C4, FineWeb.

``presets`` lists them in the order they run: ``gopher`` (= ``gopher_repetition`` then ``gopher_quality``, the
order of FineWeb's pipeline), ``gopher_quality``, ``gopher_repetition``, ``c4``, ``fineweb``. Thresholds live in
one section per family (``gopher``, ``c4``, ``fineweb``), each documented with its source and defaults in
:mod:`pipelines.filters.presets`; any of them can be overridden, or set to ``null`` to disable a rule.

A document is rejected by the first rule it fails: reason ``<preset>.<option>`` (``gopher_quality.min_words``,
``gopher_repetition.max_dup_line_frac``, ``c4.lorem_ipsum``), detail ``<signal>=<value> <op> <threshold>``.

* ``annotate_only: true`` drops nothing: every signal of the presets becomes a float column ``q_<signal>``, and
  ``q_reason`` holds the reason the document would have been rejected for (null if it passes).
* ``signals`` adds ``q_<signal>`` columns while filtering: ``true`` for all, or a list of signal names. Off by
  default: ~30 float columns per record are worth asking for. Rejected records carry them too, so the report
  can compare kept and rejected distributions.
* C4's line filters edit the text only with ``c4: {remove_lines: true}``; otherwise the text is untouched and
  C4's document rules are decided on the lines C4 would keep.

Per language: the document's ``lang`` (from ``langid``; ``default_lang`` when that column is absent, or is
``und``) picks the stop-word list, and for languages written without spaces the word-based rules (and FineWeb's
short-line rule) are skipped and counted (see :mod:`pipelines.filters.presets`). ``manifest.metrics.quality``
counts the documents whose word rules (``word_rules_skipped``) or stop-word rule (``stop_words_skipped``, no list
for the language) were skipped, and with ``remove_lines`` the lines removed (``c4_lines_removed``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from pipelines.filters.languages import UNKNOWN, normalize_code
from pipelines.filters.presets import SIGNALS, C4Config, Evaluator, FineWebConfig, GopherConfig, expand
from pipelines.stage import METRIC_PREFIX, MapStage, StageConfig, reject

PresetName = Literal["gopher", "gopher_quality", "gopher_repetition", "c4", "fineweb"]
SIGNAL_PREFIX = "q_"


class QualityConfig(StageConfig):
    presets: list[PresetName] = Field(["gopher", "c4", "fineweb"], min_length=1)
    gopher: GopherConfig = GopherConfig()
    c4: C4Config = C4Config()
    fineweb: FineWebConfig = FineWebConfig()
    annotate_only: bool = False
    signals: bool | list[str] = Field(False, description="q_<signal> columns: true for all, or a list of names")
    default_lang: str = "en"

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
                raise ValueError(f"signals: {', '.join(unknown)} not measured by presets {self.presets} "
                                 f"(available: {', '.join(sorted(available))})")
        return self


class Quality(MapStage):
    name = "quality"
    Config = QualityConfig

    def __init__(self, config: QualityConfig, ctx):
        super().__init__(config, ctx)
        self.sections = {"gopher": config.gopher, "c4": config.c4, "fineweb": config.fineweb}
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
        default = self.config.default_lang
        if "lang" in batch.columns:
            langs = [default if (not isinstance(l, str) or l == UNKNOWN) else l for l in batch["lang"]]
        else:
            langs = [default] * len(batch)
        if self.evaluator is None:  # built in the worker, with the worker's own rule objects
            self.evaluator = Evaluator(expand(self.config.presets), self.sections, frozenset(self.wanted))
        evaluate = self.evaluator
        verdicts = [evaluate(t if isinstance(t, str) else "", lang) for t, lang in zip(batch[self.text], langs)]

        for name in self.wanted:
            batch[SIGNAL_PREFIX + name] = np.array([v.signals.get(name, np.nan) for v in verdicts], np.float64)
        metric = METRIC_PREFIX + "quality."
        batch[metric + "word_rules_skipped"] = [int(v.word_rules_skipped) for v in verdicts]
        batch[metric + "stop_words_skipped"] = [int(v.stop_words_skipped) for v in verdicts]
        if self.config.c4.remove_lines and "c4" in self.config.presets:
            batch[self.text] = [v.text if v.text is not None else t for v, t in zip(verdicts, batch[self.text])]
            batch[metric + "c4_lines_removed"] = [v.lines_removed for v in verdicts]

        reasons = pd.Series([v.reason for v in verdicts], index=batch.index, dtype=object)
        if self.config.annotate_only:
            batch[SIGNAL_PREFIX + "reason"] = reasons
        else:
            details = pd.Series([v.detail for v in verdicts], index=batch.index, dtype=object)
            reject(batch, reasons.notna(), reasons, details)
        return batch
