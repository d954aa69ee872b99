"""``dedup_exact``: keep one record per identical (normalized) text; the others are rejected with the kept id.

Distributed: every live record gets a 128-bit xxhash of its normalized text; a hash shuffle brings all
records of a hash into one partition, which keeps the record chosen by ``keep`` and marks the others.
Nothing is collected on the driver.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

import pandas as pd
import xxhash
from pydantic import Field

from pipelines.stage import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, GlobalStage, StageConfig, active

KEY = "_dedup_key"
HASH = "_dedup_hash"
SEP = "\x1f"
_PUNCT_DIGITS = re.compile(r"[\W\d_]+")
_SPACE = re.compile(r"\s+")


class DedupExactConfig(StageConfig):
    lowercase: bool = True
    collapse_whitespace: bool = True
    strip_punctuation_digits: bool = False
    unicode_nfkc: bool = False
    keep: Literal["lowest_id", "longest"] = Field("lowest_id", description="which record of a group survives")
    partitions: int | None = Field(None, ge=1, description="shuffle partitions (default: the number of blocks)")


def keep_key(ids: pd.Series, lengths: pd.Series, keep: str) -> pd.Series:
    """A string that sorts lowest for the record to keep; the id follows the last separator."""
    if keep == "longest":
        return (10**12 - lengths).astype(int).map("{:013d}".format) + SEP + ids
    return ids.astype(str)


def kept_id(key: str) -> str:
    return key.rsplit(SEP, 1)[-1]


def mark_duplicates(batch: pd.DataFrame, stage: str, reason: str, winner: pd.Series, cluster: str | None) -> pd.DataFrame:
    """Reject live rows whose key differs from their group's winning key (detail: the kept id)."""
    live = (batch[REJECT_STAGE].isna() & batch[KEY].notna() & winner.notna()).astype(bool)
    loser = (live & (batch[KEY] != winner)).astype(bool)
    for col in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL):
        batch[col] = batch[col].astype(object).where(batch[col].notna(), None)
    batch.loc[loser, REJECT_STAGE] = stage
    batch.loc[loser, REJECT_REASON] = reason
    batch.loc[loser, REJECT_DETAIL] = winner[loser].map(kept_id)
    if cluster:
        own = batch["id"].astype(object)
        keep_cluster = (batch[REJECT_STAGE].isna() | loser).to_numpy()
        batch[cluster] = [(kept_id(w) if ok else i) if kc else None
                          for w, ok, i, kc in zip(winner, live.to_numpy(), own, keep_cluster)]
    return batch


class DedupExact(GlobalStage):
    name = "dedup_exact"
    Config = DedupExactConfig

    def normalized(self, text: str) -> str:
        c = self.config
        if c.unicode_nfkc:
            text = unicodedata.normalize("NFKC", text)
        if c.lowercase:
            text = text.lower()
        if c.strip_punctuation_digits:
            text = _PUNCT_DIGITS.sub(" ", text)
        if c.collapse_whitespace:
            text = _SPACE.sub(" ", text).strip()
        return text

    def _hash(self, batch: pd.DataFrame) -> pd.DataFrame:
        live = active(batch)
        texts = batch[self.text].where(live, None)
        batch[HASH] = [xxhash.xxh3_128_hexdigest(self.normalized(t).encode()) if isinstance(t, str) else None for t in texts]
        batch[KEY] = keep_key(batch["id"], batch[self.text].str.len().fillna(0), self.config.keep).where(live, None)
        return batch

    def apply(self, ds):
        """One hash shuffle: all records of a hash land in one partition, which picks the winner and marks."""
        ds = ds.map_batches(self._hash, batch_format="pandas").materialize()
        partitions = self.config.partitions or max(2, ds.num_blocks())
        return ds.repartition(partitions, keys=[HASH]).map_batches(self._mark, batch_format="pandas", batch_size=None)

    def _mark(self, batch: pd.DataFrame) -> pd.DataFrame:
        winner = batch.groupby(HASH)[KEY].transform("min")
        batch = mark_duplicates(batch, self.name, "exact_duplicate", winner, None)
        return batch.drop(columns=[HASH, KEY])
