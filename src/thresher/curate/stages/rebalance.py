"""``rebalance``: class (or source) counts brought to targets, by deterministic undersampling and oversampling.

``field`` names the class of a record (a label, or a source for mixing weights); records whose value is null or
empty, and, when ``_split`` is set, records outside ``splits`` (default ``[train]``; ``[]``: all), are left as
they are. Targets per class (``target``):

* ``uniform``: every class the size of the largest (``method: oversample``), of the smallest (``undersample``), or
  of the mean (``both``);
* ``{ratios: {a: 0.7, b: 0.3}}``: the listed classes in these proportions (mixing weights; normalized), with the
  fewest added records (oversample), fewest removed (undersample) or their total unchanged (both);
* ``{counts: {a: 1000, b: 500}}``: explicit sizes.

Classes a ratio or count does not list are left as they are. ``oversample`` never shrinks a class, ``undersample``
never grows one. Undersampling keeps the records of a class with the smallest ``xxh64(id, seed)`` (ties by internal
key) and rejects the others (reason ``undersampled``); oversampling gives every record of the class
``(target - n) // n`` copies and one more to the ``(target - n) % n`` records with the smallest hashes, so the
counts are exact (at most ``max_copies`` per record: ``manifest.metrics.rebalance.capped`` counts the shortfall).
Copies are generated records (``<id>~rebalance<j>``, ``augmented_from``, ``augmentation``), duplicates of their
source (``oversample_with: duplicate``) or made by a model-free augmentation method (``eda``, ``typos``,
``shuffle``: a record the method cannot change is duplicated); before ``split`` they go to their source's split.

The stage is global: it decides on the key rows (``field``, ``id``, key); the copies are made right after the
decisions are applied, on the records. The driver holds the per-class counts and small summaries only. A class's cut
(the (hash, key) at its rank) is found on the workers by radix selection: each round counts, per block, the next 9
bits of (hash, key) of the class's remaining candidates, a tree of Ray tasks sums the counts (512 per class), and
the driver keeps the candidates of the digit holding the rank, until at most ``execution.broadcast_limit_rows`` /
classes remain (a round or two on large data, none on small); one task then picks the cuts among them.
``manifest.metrics.rebalance`` holds the counts before and after per class (the report's class balance section).
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, field_validator, model_validator

from thresher.core.config import StrictModel
from thresher.curate.augment import rng
from thresher.curate.augment.config import AUGMENTATION, AUGMENTED_FROM
from thresher.curate.augment.eda import OPERATIONS, eda
from thresher.curate.augment.noise import shuffle_sentences, typos
from thresher.curate.augment.synonyms import thesaurus_path
from thresher.curate.fields import unpack
from thresher.curate.stage import (
    ID,
    KEY,
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    REPORT_PREFIX,
    SPLIT,
    GeneratorStage,
    GlobalStage,
    StageConfig,
)
from thresher.curate.stages.split import largest_remainder

CLASS, HASH = "_rebalance_class", "_rebalance_hash"
COPIES = REPORT_PREFIX + "rebalance_copies"  # routed to the records, read by the copier, never written
DIGIT_BITS = 9  # bits of (hash, key) one selection round fixes: 7 digits per 63-bit word
DIGITS = 14
FANOUT = 32  # count arrays summed per task


class Ratios(StrictModel):
    ratios: dict[str, float] = Field(min_length=1, description="class -> share (normalized)")

    @field_validator("ratios")
    @classmethod
    def _positive(cls, v):
        bad = [k for k, r in v.items() if not r > 0]
        if bad:
            raise ValueError(f"ratios of {', '.join(bad)} must be > 0")
        return v


class Counts(StrictModel):
    counts: dict[str, int] = Field(min_length=1, description="class -> records")

    @field_validator("counts")
    @classmethod
    def _non_negative(cls, v):
        bad = [k for k, n in v.items() if n < 0]
        if bad:
            raise ValueError(f"counts of {', '.join(bad)} must be >= 0")
        return v


class RebalanceConfig(StageConfig):
    field: str = Field("label", description="the class (or source) of a record")
    target: Literal["uniform"] | Ratios | Counts = Field(
        "uniform", description=("uniform, {ratios: {...}} or {counts: {...}}")
    )
    method: Literal["oversample", "undersample", "both"] = Field(
        "oversample", description=("add copies to small classes, remove records from large ones, or both")
    )
    oversample_with: Literal["duplicate", "eda", "typos", "shuffle"] = Field(
        "duplicate", description=("how copies are made: duplicates, or a model-free augment method")
    )
    fields: list[str] | None = Field(None, min_length=1, description="fields the augmentation changes; default text")
    max_copies: int = Field(15, ge=1, le=255, description="copies of one record at most")
    splits: list[str] = Field(["train"], description="with _split set: splits rebalanced; []: every record")
    seed: int = Field(0, ge=0, lt=1 << 64, description="seed of the id hashes that choose the records kept and copied")

    @model_validator(mode="after")
    def _directions(self):
        if self.oversample_with != "duplicate" and self.method == "undersample":
            raise ValueError("oversample_with needs method oversample or both")
        return self


def targets(counts: dict[str, int], cfg: RebalanceConfig) -> dict[str, int]:
    """The size each class is brought to (classes left alone are absent)."""
    grow, shrink = cfg.method in ("oversample", "both"), cfg.method in ("undersample", "both")
    if cfg.target == "uniform":
        if not counts:
            return {}
        goal = {
            "oversample": max(counts.values()),
            "undersample": min(counts.values()),
            "both": round(sum(counts.values()) / len(counts)),
        }[cfg.method]
        wanted = dict.fromkeys(counts, goal)
    elif isinstance(cfg.target, Counts):
        wanted = {c: n for c, n in cfg.target.counts.items() if c in counts}
    else:
        listed = {c: r for c, r in cfg.target.ratios.items() if c in counts}
        total_ratio = sum(listed.values())
        shares = {c: r / total_ratio for c, r in listed.items()}
        if cfg.method == "both":
            total = sum(counts[c] for c in shares)
        elif cfg.method == "oversample":
            total = max((counts[c] / s for c, s in shares.items()), default=0)
        else:
            total = min((counts[c] / s for c, s in shares.items()), default=0)
        sizes = largest_remainder(int(round(total)), list(shares.values())) if shares else []
        wanted = dict(zip(shares, sizes))
    out = {}
    for c, t in wanted.items():
        t = max(t, counts[c]) if not shrink else t
        t = min(t, counts[c]) if not grow else t
        out[c] = t
    return out


class Rebalance(GlobalStage):
    name = "rebalance"
    Config = RebalanceConfig
    report_sections = ("rebalance",)

    @classmethod
    def label_fields(cls, options: dict) -> list[str]:
        return [options.get("field", "label")]

    def __init__(self, config: RebalanceConfig, ctx):
        super().__init__(config, ctx)
        if config.method != "undersample" and config.oversample_with == "eda":  # synonyms: an extra, checked now
            thesaurus_path(f"stages.{len(ctx.previous_stages)}.rebalance.oversample_with")
        self.copier = Copies(config, ctx) if config.method != "undersample" else None
        self.metrics: dict = {}

    def expander(self):
        return self.copier

    def keys(self, batch: pa.Table) -> dict:
        return {c: batch[c].cast(pa.string()) for c in (self.config.field, SPLIT) if c in batch.column_names}

    def decision_columns(self) -> list[str]:
        return [COPIES] if self.copier else []

    def decision_types(self) -> dict:
        return {COPIES: pa.int32()}

    def _classes(self, batch: pd.DataFrame) -> pd.DataFrame:
        """CLASS: the record's class where it is rebalanced (else None); HASH: its seeded id hash."""
        field = self.config.field
        labels = batch[field] if field in batch.columns else pd.Series(None, index=batch.index, dtype=object)
        classes = labels.astype(object).where(labels.notna() & (labels.astype(str) != ""), None)
        if SPLIT in batch.columns and self.config.splits:
            classes = classes.where(batch[SPLIT].isin(self.config.splits), None)
        classes = classes.where(batch[REJECT_STAGE].isna(), None)
        batch[CLASS] = classes.map(lambda c: None if c is None else str(c))
        batch[HASH] = np.array(
            [xxhash.xxh64_intdigest(str(i).encode(), self.config.seed) >> 1 for i in batch[ID]], dtype=np.int64
        )
        return batch

    def decide(self, ds):
        tasks, ds = ds.tasks(), ds.map_pandas(self._classes)
        counts: dict[str, int] = {}
        for part in tasks.get(ds.map_blocks(_count, columns=[CLASS]).blocks()):
            if part.num_rows:  # (an empty dataset comes back as it is)
                for c, n in zip(part["c"].to_pylist(), part["n"].to_pylist()):
                    counts[c] = counts.get(c, 0) + n
        goal = targets(counts, self.config)
        cut_at = {}  # class -> rank where the cut falls: keep the first t (under), one more copy below r (over)
        for c, t in goal.items():
            n = counts[c]
            if t < n:
                cut_at[c] = t
            elif t > n and n:
                cut_at[c] = (t - n) % n
        thresholds = self._thresholds(tasks, ds, {c: k for c, k in cut_at.items() if k}, counts)
        plan = {c: (counts[c], t) for c, t in goal.items() if t != counts[c]}
        after = dict(counts)
        capped = 0
        for c, (n, t) in plan.items():
            if t > n and not n:
                continue
            most = n * (1 + self.config.max_copies)
            after[c] = min(t, most)
            capped += max(0, t - most)
        self.metrics = {
            "field": self.config.field,
            "method": self.config.method,
            "before": counts,
            "targets": goal,
            "after": after,
            "capped": capped,
        }
        return ds.map_pandas(self._apply, plan, thresholds)

    def _thresholds(self, tasks, ds, ranks: dict[str, int], counts: dict[str, int]) -> dict[str, tuple[int, int]]:
        """Per class, the (hash, key) of the record at rank ``ranks[class]`` (0-based) in (hash, key) order, by radix
        selection (module docstring)."""
        if not ranks:
            return {}
        classes = list(ranks)
        bound = self.ctx.broadcast_limit_rows // len(classes)
        prefixes = np.zeros((len(classes), 3), np.int64)  # per class: hash bits, key bits, digits fixed
        rank = np.array([ranks[c] for c in classes], np.int64)  # among the candidates
        left = np.array([counts[c] for c in classes], np.int64)  # candidates
        refs = ds.blocks()
        while len(wide := np.flatnonzero((left > bound) & (prefixes[:, 2] < DIGITS))):
            histograms = _summed(
                tasks, [tasks.run(_histogram, ref, [classes[i] for i in wide], prefixes[wide]) for ref in refs]
            )
            for i, histogram in zip(wide, histograms):
                below = np.cumsum(histogram)
                digit = int(np.searchsorted(below, rank[i], side="right"))
                rank[i] -= below[digit - 1] if digit else 0
                left[i] = histogram[digit]
                word = 0 if prefixes[i, 2] < DIGITS // 2 else 1
                prefixes[i, word] = prefixes[i, word] << DIGIT_BITS | digit
                prefixes[i, 2] += 1
        candidates = ds.map_blocks(_candidates, classes, prefixes, columns=[CLASS, HASH, KEY])
        cuts = pa.concat_tables(tasks.get(candidates.in_one_task(_pick, classes, rank).blocks()))
        return {c: (h, k) for c, h, k in zip(*(cuts[col].to_pylist() for col in (CLASS, HASH, KEY)))}

    def _apply(self, batch: pd.DataFrame, plan: dict, thresholds: dict) -> pd.DataFrame:
        copies = np.zeros(len(batch), np.int32)
        for col in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL):
            batch[col] = batch[col].astype(object).where(batch[col].notna(), None)
        classes = batch[CLASS].astype(object).where(batch[CLASS].notna(), None).to_numpy()
        hashes, keys = batch[HASH].to_numpy(), batch[KEY].to_numpy()
        for c, (n, t) in plan.items():
            rows = classes == c
            if not rows.any():
                continue
            below = np.zeros(len(batch), bool)
            if c in thresholds:
                h, k = thresholds[c]
                below = (hashes < h) | ((hashes == h) & (keys < k))
            if t < n:
                drop = np.flatnonzero(rows & ~below)
                batch.loc[batch.index[drop], [REJECT_STAGE, REJECT_REASON, REJECT_DETAIL]] = [
                    "rebalance",
                    "undersampled",
                    f"{self.config.field}={c}: {n} -> {t}",
                ]
            elif n:
                extra = (t - n) // n + below.astype(np.int32)
                copies[rows] = np.minimum(extra[rows], self.config.max_copies)
        if self.copier:
            batch[COPIES] = copies
        return batch.drop(columns=[CLASS, HASH])


def _count(block: pa.Table) -> pa.Table:
    """Records per class in ``block``: columns ``c`` and ``n``."""
    counted = pc.value_counts(pc.drop_null(block[CLASS].cast(pa.string())))
    return pa.table({"c": counted.field("values"), "n": counted.field("counts")})


def _summed(tasks, refs: list) -> np.ndarray:
    """The sum of the arrays behind ``refs``, added up by a tree of tasks."""
    while len(refs) > 1:
        refs = [tasks.run(_sum, *refs[i : i + FANOUT]) for i in range(0, len(refs), FANOUT)]
    return tasks.get(refs[0])


def _sum(*arrays: np.ndarray) -> np.ndarray:
    return np.sum(arrays, axis=0)


def _shifts(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The right shifts of hash and key that leave their first ``digits`` digits (of 7 each, hash first)."""
    half = DIGITS // 2
    return 63 - DIGIT_BITS * np.minimum(digits, half), 63 - DIGIT_BITS * np.clip(digits - half, 0, half)


def _matching(block: pa.Table, classes: list[str], prefixes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``block`` that are candidates of one of ``classes`` (their ``prefixes``), and that class's
    index."""
    which = pc.index_in(block[CLASS].cast(pa.string()), value_set=pa.array(classes, pa.string()))
    which = pc.fill_null(which, -1).to_numpy()
    rows = np.flatnonzero(which >= 0)
    which = which[rows]
    hashes, keys = block[HASH].to_numpy()[rows], block[KEY].to_numpy()[rows]
    hash_shift, key_shift = _shifts(prefixes[which, 2])
    match = ((hashes >> hash_shift) == prefixes[which, 0]) & ((keys >> key_shift) == prefixes[which, 1])
    return rows[match], which[match]


def _histogram(block: pa.Table, classes: list[str], prefixes: np.ndarray) -> np.ndarray:
    """Per class, its candidates in ``block`` counted by their next digit: ``(classes, 2**DIGIT_BITS)``."""
    rows, which = _matching(block, classes, prefixes)
    fixed = prefixes[which, 2]
    hash_shift, key_shift = _shifts(fixed + 1)
    hashes, keys = block[HASH].to_numpy()[rows], block[KEY].to_numpy()[rows]
    digits = np.where(fixed < DIGITS // 2, hashes >> hash_shift, keys >> key_shift) & ((1 << DIGIT_BITS) - 1)
    size = 1 << DIGIT_BITS
    return np.bincount(which * size + digits, minlength=len(classes) * size).reshape(len(classes), size)


def _candidates(block: pa.Table, classes: list[str], prefixes: np.ndarray) -> pa.Table:
    rows, _ = _matching(block, classes, prefixes)
    return pa.table(
        {CLASS: block[CLASS].cast(pa.string()).take(rows), HASH: block[HASH].take(rows), KEY: block[KEY].take(rows)}
    )


def _pick(candidates: pa.Table, classes: list[str], ranks: np.ndarray) -> pa.Table:
    """Per class, the (hash, key) at its rank among its candidates."""
    which = pc.index_in(candidates[CLASS], value_set=pa.array(classes, pa.string())).to_numpy()
    hashes, keys = candidates[HASH].to_numpy(), candidates[KEY].to_numpy()
    order = np.lexsort((keys, hashes, which))
    chosen = order[np.searchsorted(which[order], np.arange(len(classes))) + ranks]
    return pa.table({CLASS: pa.array(classes, pa.string()), HASH: hashes[chosen], KEY: keys[chosen]})


class Copies(GeneratorStage):
    """Rebalance's copies: ``COPIES`` of each record, made right after the decisions are applied."""

    def __init__(self, config: RebalanceConfig, ctx):
        super().__init__(config, ctx)
        self.name = Rebalance.name

    def max_copies(self) -> int:
        return self.config.max_copies

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        wanted = batch.pop(COPIES).fillna(0).astype(int).to_numpy() if COPIES in batch.columns else None
        for col in (AUGMENTED_FROM, AUGMENTATION):
            if col not in batch.columns:
                batch[col] = pd.Series(None, index=batch.index, dtype=object)
        if wanted is None or not wanted.any():
            return batch
        rows = np.repeat(np.arange(len(batch)), wanted)
        copy = np.concatenate([np.arange(k) for k in wanted if k])
        new = batch.iloc[rows].reset_index(drop=True)
        method, fields = self.config.oversample_with, self.config.fields or [self.text]
        params = []
        for i, (rid, j) in enumerate(zip(new[ID], copy)):
            made = "duplicate"
            if method != "duplicate":
                rnd = rng(self.config.seed, "rebalance", rid, j)
                for f in fields:
                    if f in new.columns:
                        value = _augmented(new[f].iat[i], method, rnd, j)
                        if value is not None:
                            new.iat[i, new.columns.get_loc(f)] = value
                            made = method
            params.append(
                json.dumps(
                    {
                        "method": made,
                        "copy": int(j),
                        "seed": self.config.seed,
                        "rebalance": True,
                        **({"splits": self.config.splits} if SPLIT not in new.columns else {}),
                    },
                    sort_keys=True,
                )
            )
        new[AUGMENTED_FROM] = new[ID].astype(object)
        new[ID] = [f"{i}~rebalance{j}" for i, j in zip(new[ID], copy)]
        new[KEY] = self.new_keys(new[KEY].to_numpy(), copy)
        new[AUGMENTATION] = params
        return pd.concat([batch, new], ignore_index=True)


def _augmented(value, method: str, rnd, copy: int):
    """The field value changed by a model-free method, or None when it cannot be changed."""
    texts, pack = unpack(value)
    if not texts:
        return None
    if method == "eda":
        out = [eda(t, OPERATIONS[copy % len(OPERATIONS)], 0.1, rnd) for t in texts]
    elif method == "typos":
        out = [typos(t, 0.03, rnd) for t in texts]
    else:
        out = [shuffle_sentences(t, rnd) or t for t in texts]
    return None if out == texts else pack(out)
