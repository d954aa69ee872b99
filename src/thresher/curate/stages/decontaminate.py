"""``decontaminate``: drop (or flag) records that share a long word n-gram with an evaluation set.

References are files (local or ``s3://``; files, folders or globs) of JSONL (also compressed, or one JSON array)
or Parquet records, and the ``split`` (default ``test``) of earlier finished runs named in ``against`` (their
``data/<split>/`` files; a release is then checked against the test sets of the releases before it); the text of
each reference item is taken from ``reference_fields`` (default: the names in ``fields``; for a run, its text
field), each field on its own. Text is compared as lowercased ``\\w+`` words (punctuation and spacing do not
matter). A record is contaminated when one of the texts of its ``fields`` (default: the text field; chat
messages: each content, see :mod:`thresher.curate.fields`) contains a word n-gram (``ngram``, default 13, as in GPT-3
and the LM evaluation harness) of any reference item. A reference field shorter than ``ngram`` words counts as
one n-gram of its own length (the whole of it must occur in a record), as is common practice; one shorter than
``min_words`` is skipped (``"yes"`` or ``"42"`` is no evidence). A record text shorter than ``ngram`` words is
caught only through such short references.

The reference set is built once, on the driver when the stage is created (a missing or unreadable reference is
a config error, exit 2): the 64-bit hash of every distinct n-gram in a sorted numpy array, with the index of the
first item holding it (12 bytes per n-gram; GSM8K's 1,319 test questions make about 50,000). It is broadcast,
not copied per task: a pass over the records is one Ray Data map operator whose function (and the arrays it
holds) is put in the object store once, and every worker of a node reads the arrays zero-copy from that node's
shared memory. A set of more than ``shard_ngrams`` n-grams (default 50 million, 600 MB) is cut into hash
ranges of at most that many, checked in one pass each with the dataset materialized between passes, so a node
holds one shard at a time (a record's hits add up over the passes). This is a global stage for that reason,
so a run with it is not resumed part-way.

``mode: drop`` rejects with reason ``contaminated`` and a detail naming the reference file and item (index in
the file, and its id when the item has ``reference_id_field``); ``mode: flag`` keeps every record and adds the
bool column ``contaminated``. A ``fields`` column the records do not have rejects every record with reason
``missing_field``. Counts go to the manifest (``metrics.decontaminate``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from itertools import chain
from typing import Literal

import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq
from pydantic import Field, field_validator, model_validator

from thresher.core.config import ConfigError
from thresher.curate.fields import TextFieldsConfig, flat_texts, reject_missing
from thresher.curate.readers import infer_format
from thresher.curate.run_folder import DATA, RunFolder
from thresher.curate.stage import MapStage, reject

_WORD = re.compile(r"\w+")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


class DecontaminateConfig(TextFieldsConfig):
    references: list[str] = Field([], description=("evaluation files: JSONL (.gz/.zst/...), JSON array, Parquet"))
    against: list[str] = Field(
        [], description="finished runs (URIs) whose split named by split is an evaluation set too"
    )
    split: str = Field("test", description="the split of the against runs that is checked against")
    fields: list[str] | None = Field(
        None,
        min_length=1,
        description=(
            "record fields to check, each text on its own (chat messages: each content); default: the input's text field"
        ),
    )
    reference_fields: list[str] | None = Field(
        None, min_length=1, description=("reference fields to take text from; default: the names in fields")
    )
    ngram: int = Field(
        13, ge=1, description=("words per n-gram shared with a reference item that make a record contaminated")
    )
    min_words: int = Field(5, ge=1, description="reference fields with fewer words are skipped")
    mode: Literal["drop", "flag"] = Field(
        "drop", description=("reject contaminated records, or keep all and add the bool column contaminated")
    )
    reference_id_field: str = Field("id", description="the reference items' id field, named in the detail when present")
    shard_ngrams: int = Field(50_000_000, ge=1, description="reference n-grams per broadcast shard (pass)")

    @field_validator("references", "reference_fields", mode="before")
    @classmethod
    def _one(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _some_reference(self):
        if not self.references and not self.against:
            raise ValueError("give references (files) or against (runs)")
        return self


def words(text: str) -> list[str]:
    """Normalized words: lowercased ``\\w+`` runs."""
    return _WORD.findall(text.lower())


def word_hashes(tokens: list[str]) -> np.ndarray:
    return pd.util.hash_array(np.asarray(tokens, dtype=object)) if tokens else np.zeros(0, np.uint64)


def window_hashes(hashes: np.ndarray, length: int) -> np.ndarray:
    """A 64-bit hash of every run of ``length`` consecutive words (polynomial over the word hashes, then mixed)."""
    m = len(hashes) - length + 1
    if m <= 0:
        return np.zeros(0, np.uint64)
    h = np.zeros(m, np.uint64)
    for j in range(length):
        h = h * _MULTIPLIER + hashes[j : j + m]
    h ^= np.uint64(length)
    h ^= h >> np.uint64(30)  # splitmix64 finalizer
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@dataclass
class Shard:
    """Reference n-grams of one hash range: per n-gram length, sorted hashes and the first item holding each."""

    hashes: dict[int, np.ndarray] = field(default_factory=dict)
    items: dict[int, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(h) for h in self.hashes.values())

    def matches(self, texts: list) -> tuple[np.ndarray, np.ndarray]:
        """Per text: the number of this shard's n-grams it contains, and the first item matched (-1: none)."""
        tokens = [words(t) if isinstance(t, str) else [] for t in texts]
        doc = np.repeat(np.arange(len(texts)), [len(t) for t in tokens])
        hashes = word_hashes(list(chain.from_iterable(tokens)))
        counts = np.zeros(len(texts), np.int64)
        first_item = np.full(len(texts), -1, np.int64)
        for length, ref in self.hashes.items():
            windows = window_hashes(hashes, length)
            if not len(windows) or not len(ref):
                continue
            within = doc[: len(windows)] == doc[length - 1 :]  # the window lies inside one text
            at = np.minimum(np.searchsorted(ref, windows), len(ref) - 1)
            hit = within & (ref[at] == windows)
            counts += np.bincount(doc[: len(windows)][hit], minlength=len(texts))
            hit_docs, first = np.unique(doc[: len(windows)][hit], return_index=True)
            unset = first_item[hit_docs] < 0
            first_item[hit_docs[unset]] = self.items[length][at[hit][first[unset]]]
        return counts, first_item


@dataclass
class Origins:
    """Where each reference item is from: its file, its index in the file and its id (for the reject detail)."""

    sources: list[str] = field(default_factory=list)
    source: list[int] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)

    def add(self, uri: str, index: int, rid) -> int:
        if not self.sources or self.sources[-1] != uri:
            self.sources.append(uri)
        self.source.append(len(self.sources) - 1)
        self.index.append(index)
        self.ids.append(None if rid is None else str(rid))
        return len(self.index) - 1

    def label(self, item: int) -> str:
        rid = self.ids[item]
        return f"{self.sources[self.source[item]]} item {self.index[item]}" + (f" (id {rid})" if rid else "")


class ReferenceSet(Shard):
    """All reference n-grams (``ngram`` words, and the lengths of short references) and the items' origins."""

    def __init__(self, ngram: int):
        super().__init__()
        self.ngram = ngram
        self.skipped = 0
        self.origins = Origins()
        self._parts: dict[int, list[tuple[np.ndarray, int]]] = {}

    def add(self, uri: str, index: int, rid, texts: list[str], min_words: int) -> None:
        item = self.origins.add(uri, index, rid)
        for text in texts:
            h = word_hashes(words(text))
            if len(h) < min_words:
                self.skipped += 1
                continue
            length = min(self.ngram, len(h))
            self._parts.setdefault(length, []).append((window_hashes(h, length), item))

    def freeze(self) -> None:
        for length, parts in self._parts.items():
            hashes = np.concatenate([h for h, _ in parts])
            items = np.concatenate([np.full(len(h), i, np.int32) for h, i in parts])
            order = np.lexsort((items, hashes))
            hashes, items = hashes[order], items[order]
            first = np.concatenate([[True], hashes[1:] != hashes[:-1]])
            self.hashes[length], self.items[length] = hashes[first], items[first]
        self._parts = {}

    def shards(self, max_ngrams: int) -> list[Shard]:
        """The n-grams cut into equal hash ranges of at most ``max_ngrams`` each (one shard when they fit)."""
        n = max(1, math.ceil(len(self) / max_ngrams))
        if n == 1:
            return [Shard(self.hashes, self.items)]
        edges = np.array([(k << 64) // n for k in range(1, n)], dtype=np.uint64)
        out = [Shard() for _ in range(n)]
        for length, hashes in self.hashes.items():
            cuts = [0, *np.searchsorted(hashes, edges).tolist(), len(hashes)]
            for shard, a, b in zip(out, cuts, cuts[1:]):
                shard.hashes[length], shard.items[length] = hashes[a:b], self.items[length][a:b]
        return out


def read_references(cfg: DecontaminateConfig, fields: list[str] | None, storage, text_field: str) -> ReferenceSet:
    """The n-grams of the reference files and runs' splits; ``fields``: ``reference_fields`` or ``fields`` (None:
    the text field, ``text_field`` for files, a run's own for its split)."""
    refs = ReferenceSet(cfg.ngram)
    sources = []
    for pattern in cfg.references:
        found = storage.expand(pattern)
        if not found:
            raise FileNotFoundError(f"no files match {pattern!r}")
        sources += [(uri, fields or [text_field]) for uri, _ in found]
    for run in cfg.against:
        folder = RunFolder(run, storage)
        files = folder.final_files().get(f"{DATA}/{cfg.split}")
        if not files:
            raise FileNotFoundError(f"{run} has no split {cfg.split!r} ({DATA}/{cfg.split}/)")
        sources += [(uri, fields or [folder.load_manifest()["config"]["input"]["text_field"]]) for uri in sorted(files)]
    for uri, names in sources:
        for index, record in enumerate(_records(uri, storage, [*names, cfg.reference_id_field])):
            if not isinstance(record, dict):
                continue
            texts = [
                v if isinstance(v, str) else orjson.dumps(v).decode()
                for v in (record.get(f) for f in names)
                if v is not None
            ]
            refs.add(uri, index, record.get(cfg.reference_id_field), texts, cfg.min_words)
    refs.freeze()
    return refs


def _records(uri: str, storage, columns: list[str]):
    fs, path = storage.resolve(uri)
    if infer_format(uri) == "parquet":
        with fs.open_input_file(path) as f:
            table = pq.read_table(f)
        yield from table.select([c for c in dict.fromkeys(columns) if c in table.column_names]).to_pylist()
        return
    with fs.open_input_stream(path, compression="detect") as f:
        data = f.read()
    if data.lstrip()[:1] == b"[":
        yield from orjson.loads(data)
        return
    for line in data.splitlines():
        if line.strip():
            yield orjson.loads(line)


class Decontaminate(MapStage):
    name = "decontaminate"
    Config = DecontaminateConfig

    def __init__(self, config: DecontaminateConfig, ctx):
        super().__init__(config, ctx)
        key = f"stages.{len(ctx.previous_stages)}.{self.name}.{'references' if config.references else 'against'}"
        fields = config.reference_fields or config.fields
        try:
            self.references = read_references(config, fields, ctx.storage, ctx.text_field)
        except (OSError, ValueError) as e:  # orjson.JSONDecodeError is a ValueError
            raise ConfigError(f"{key}: {e}") from None
        if not len(self.references):
            raise ConfigError(f"{key}: no reference text in fields {fields or [ctx.text_field]}")
        self.shards = self.references.shards(config.shard_ngrams)

    def added_columns(self) -> dict[str, str]:
        if self.config.mode == "flag":
            return {"contaminated": f"shares a {self.config.ngram}-word n-gram with an evaluation set"}
        return {}

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        c = self.config
        self.add_metric(batch, "checked", 1)
        fields = c.field_names(batch, self.text)
        if reject_missing(batch, fields):
            return batch
        texts, rows = flat_texts(batch, fields)
        hits = np.zeros(len(batch), np.int64)
        first = np.full(len(batch), -1, np.int64)
        for shard in self.shards:
            n, item = shard.matches(texts)
            np.add.at(hits, rows, n)
            matched = item >= 0
            found_rows, at = np.unique(rows[matched], return_index=True)  # each record's first matching text
            unset = first[found_rows] < 0
            first[found_rows[unset]] = item[matched][at[unset]]
        found = hits > 0
        self.add_metric(batch, "contaminated", found.astype(np.int64))
        if c.mode == "flag":
            batch["contaminated"] = found
        else:
            origins = self.references.origins
            detail = pd.Series(
                [
                    f"{n} shared {c.ngram}-gram(s); first: {origins.label(i)}" if n else None
                    for n, i in zip(hits, first)
                ],
                index=batch.index,
                dtype=object,
            )
            reject(batch, found, "contaminated", detail)
        return batch
