"""``curriculum``: a ``difficulty`` score per record, and the ordered splits' files written from easy to hard.

Signals (``signals``: name -> weight; a signal left out is not computed):

* ``length``: log(1 + words);
* ``readability``: Flesch-Kincaid grade level (words per sentence, syllables per word; syllables are vowel
  groups, so it is meant for languages written in the Latin alphabet);
* ``rare_words``: share of the record's distinct words that are rare in the corpus: found in fewer than
  ``max(2, rare_doc_fraction x records)`` records (so a word of one record is always rare). Words are hashed
  into ``2**20`` buckets (collisions make a few rare words look common); a record with more than ``max_words``
  distinct words is judged, and counted, on the ``max_words`` with the smallest hashes (a deterministic sample).

``difficulty`` is the weighted mean of the signals' z-scores over the live records (higher: harder). The signals
are rounded to 1e-4 and summed as integers, so the means, deviations and scores do not depend on how the key rows
are cut into blocks.

A global stage: the map side sends the signals (and the word-bucket sample) as key rows; ``decide`` counts the
buckets' document frequencies and the signals' sums per block, merges them on the driver, and scores the blocks
where they are. Order: the final files of ``data/<split>`` for the splits in ``order_splits`` (and of ``data/``,
records without a split) hold their rows by ascending difficulty, ties by internal key (``compact``); a file
is a range of read tasks, so the order holds within each file, not across files: ``thresher train``'s
``data.order: curriculum`` orders the whole split.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, field_validator

from thresher.curate.run_folder import DATA
from thresher.curate.stage import REJECT_STAGE, GlobalStage, StageConfig

SIGNALS = ("length", "readability", "rare_words")
DIFFICULTY = "difficulty"
PREFIX = "_curriculum."  # key columns: _curriculum.<signal>, _curriculum.words
WORDS = PREFIX + "words"
BUCKETS = 1 << 20
SCALE = 10_000  # signals are rounded to 1/SCALE and summed as integers
WORD = re.compile(r"\w+(?:['’]\w+)*")
SENTENCE_END = re.compile(r"[.!?](?:\s|$)")  # a run's last mark: linear (``[.!?]+`` backtracked quadratically)
VOWEL_GROUP = re.compile(r"[aeiouyàâäéèêëîïôöûüù]+", re.IGNORECASE)


class CurriculumConfig(StageConfig):
    signals: dict[str, float] = Field(
        default_factory=lambda: {"length": 1.0, "readability": 1.0, "rare_words": 1.0},
        description="signal -> weight (length, readability, rare_words)",
    )
    fields: list[str] | None = Field(None, description="text fields scored, joined (default: the text field)")
    order_splits: list[str] = Field(
        default_factory=lambda: ["train"], description="splits whose files are written from easy to hard"
    )
    rare_doc_fraction: float = Field(0.001, gt=0, lt=1, description="rare: in fewer than this share of records")
    max_words: int = Field(512, ge=1, description="distinct words sampled per record for rare_words")

    @field_validator("signals")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(SIGNALS))
        if unknown:
            raise ValueError(f"unknown signal(s) {', '.join(unknown)}; known: {', '.join(SIGNALS)}")
        if not v or any(w < 0 for w in v.values()) or not sum(v.values()):
            raise ValueError("give at least one signal with a positive weight (weights >= 0)")
        return v


class Curriculum(GlobalStage):
    name = "curriculum"
    Config = CurriculumConfig

    def added_columns(self) -> dict[str, str]:
        used = ", ".join(f"{s} x {w:g}" for s, w in self.config.signals.items())
        return {DIFFICULTY: f"weighted mean of z-scored difficulty signals ({used}); higher is harder"}

    def decision_types(self) -> dict[str, pa.DataType]:
        return {DIFFICULTY: pa.float64()}

    def sort_destinations(self) -> dict[str, str]:
        return {DATA: DIFFICULTY, **{f"{DATA}/{s}": DIFFICULTY for s in self.config.order_splits}}

    def keys(self, batch: pa.Table) -> dict:
        fields = self.config.fields or [self.text]
        columns = [
            batch[f].cast(pa.string()).to_pylist() if f in batch.column_names else [None] * batch.num_rows
            for f in fields
        ]
        texts = ["\n\n".join(v for v in row if v) for row in zip(*columns)]
        signals = self.config.signals
        out = {}
        if "length" in signals or "readability" in signals:
            measured = np.array([text_measures(t) for t in texts], np.float64).reshape(len(texts), 2)
            if "length" in signals:
                out[PREFIX + "length"] = pa.array(measured[:, 0])
            if "readability" in signals:
                out[PREFIX + "readability"] = pa.array(measured[:, 1])
        if "rare_words" in signals:
            out[WORDS] = pa.array([word_buckets(t, self.config.max_words) for t in texts], pa.list_(pa.uint32()))
        return out

    def decide(self, ds):
        c = self.config
        tasks = ds.tasks()
        refs = ds.blocks()
        if "rare_words" in c.signals:
            df, records = np.zeros(BUCKETS, np.int64), 0
            for part in [tasks.run(_document_frequencies, ref) for ref in refs]:  # summed one block's counts at a time
                counts, n = tasks.get(part)
                df, records = df + counts, records + n
            below = max(2.0, c.rare_doc_fraction * records)
            df = tasks.put(df)
            refs = [tasks.run(_rare_words, ref, df, below) for ref in refs]
        per_block = tasks.get([tasks.run(_signal_sums, ref, list(c.signals)) for ref in refs])
        moments = {s: _moments(*_merge([block[i] for block in per_block])) for i, s in enumerate(c.signals)}
        self.metrics = {
            "signals": {s: {"weight": w, "mean": moments[s][0], "std": moments[s][1]} for s, w in c.signals.items()}
        }
        return tasks.rows([tasks.run(_score, ref, moments, c.signals) for ref in refs])


# -- measures ------------------------------------------------------------------------------------------------


def text_measures(text: str | None) -> tuple[float, float]:
    """(log(1 + words), Flesch-Kincaid grade level; 0 without words)."""
    words = WORD.findall(text or "")
    if not words:
        return 0.0, 0.0
    sentences = max(1, len(SENTENCE_END.findall(text)))
    syllables = sum(max(1, len(VOWEL_GROUP.findall(w))) for w in words)
    grade = 0.39 * len(words) / sentences + 11.8 * syllables / len(words) - 15.59
    return float(np.log1p(len(words))), grade


def word_buckets(text: str | None, max_words: int) -> list[int]:
    """The hash buckets of the record's distinct lower-cased words (the ``max_words`` smallest hashes)."""
    hashes = sorted({xxhash.xxh64_intdigest(w.encode()) for w in WORD.findall((text or "").lower())})[:max_words]
    return [h % BUCKETS for h in hashes]


def _quantized(values) -> np.ndarray:
    return np.rint(np.asarray(values, np.float64) * SCALE).astype(np.int64)


def _moments(n: int, total: int, squares: int) -> tuple[float | None, float | None]:
    """Mean and standard deviation from exact integer sums of quantized values."""
    if not n:
        return None, None
    variance = (squares * n - total * total) / (n * n) / SCALE**2
    return total / n / SCALE, float(np.sqrt(max(variance, 0.0)))


def _merge(parts) -> tuple[int, int, int]:
    return tuple(sum(int(p[i]) for p in parts) for i in range(3))


# -- block functions (Ray tasks on the key-row blocks) ---------------------------------------------------------


def _live(table: pa.Table) -> np.ndarray:
    return pc.is_null(table[REJECT_STAGE]).to_numpy(zero_copy_only=False)


def _document_frequencies(table: pa.Table) -> tuple[np.ndarray, int]:
    """Records per word bucket among the block's live records, and how many live records there are."""
    words = table[WORDS].combine_chunks()
    live = _live(table)
    keep = live[pc.list_parent_indices(words).to_numpy()]
    buckets = pc.list_flatten(words).to_numpy(zero_copy_only=False)[keep]
    return np.bincount(buckets, minlength=BUCKETS).astype(np.int64), int(live.sum())


def _rare_words(table: pa.Table, df: np.ndarray, below: float) -> pa.Table:
    """``_curriculum.rare_words`` (share of rare words; 0 without words) in place of the word buckets."""
    words = table[WORDS].combine_chunks()
    item = pc.list_parent_indices(words).to_numpy()
    rare = df[pc.list_flatten(words).to_numpy(zero_copy_only=False)] < below
    n = np.bincount(item, minlength=table.num_rows)
    share = np.bincount(item, weights=rare, minlength=table.num_rows) / np.maximum(n, 1)
    return table.drop_columns([WORDS]).append_column(PREFIX + "rare_words", pa.array(share))


def _signal_sums(table: pa.Table, signals: list[str]) -> list[tuple[int, int, int]]:
    """Per signal (count, sum, sum of squares) of the quantized values of the live records."""
    live = _live(table)
    out = []
    for s in signals:
        q = _quantized(table[PREFIX + s].to_numpy(zero_copy_only=False))[live]
        out.append((len(q), int(q.sum()), sum(int(v) * int(v) for v in q.tolist())))
    return out


def _score(table: pa.Table, moments: dict, weights: dict[str, float]) -> pa.Table:
    """``difficulty`` of the live records (null for the others) in place of the signal columns."""
    live = _live(table)
    total = np.zeros(table.num_rows)
    for s, w in weights.items():
        mean, std = moments[s]
        q = _quantized(table[PREFIX + s].to_numpy(zero_copy_only=False)) / SCALE
        total += w * ((q - mean) / std if std else np.zeros(table.num_rows))
    difficulty = np.where(live, total / sum(weights.values()), np.nan)
    table = table.drop_columns([c for c in table.column_names if c.startswith(PREFIX) or c == DIFFICULTY])
    return table.append_column(DIFFICULTY, pa.array(difficulty, pa.float64(), from_pandas=True))
