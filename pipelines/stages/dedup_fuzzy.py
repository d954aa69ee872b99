"""``dedup_fuzzy``: MinHash-LSH near-duplicate detection with distributed connected components.

1. Signatures: MinHash of word (or character) n-grams for every live record, a whole batch per JIT call
   (``pipelines.dedup.minhash``), cut into ``bands`` x ``rows`` band keys (chosen from ``threshold`` unless given).
2. Buckets: rows ``(band key, record)`` are hash-partitioned by band key (a Ray Data shuffle), one group of
   ``band_group_size`` bands at a time so memory stays bounded; each bucket links its members to its smallest
   member (a star, O(members) edges, never all pairs).
3. Optional ``verify``: candidate pairs are kept only if the exact Jaccard similarity of their shingle sets
   reaches ``threshold`` (two joins fetch both texts).
4. Connected components on the edge dataset (``pipelines.dedup.components``: large-star/small-star rounds).
5. Removal: a join on the record key gives each record its component's root: the record kept by ``keep``
   (lowest id, or longest then lowest id). The others are rejected with the kept id in ``detail``
   (``action: remove``), or all are kept (``action: annotate``). Kept records carry ``dup_cluster``: the id of
   their component's kept record (their own id when they have no near duplicate).
Every step is deterministic (seeded permutations, min-based tie breaking), so the kept ids do not depend on
the number of CPUs, block boundaries or arrival order.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field, model_validator

from pipelines.dedup.components import connected_components
from pipelines.dedup.minhash import band_keys, optimal_bands, signatures
from pipelines.stage import GlobalStage, StageConfig, active
from pipelines.stages.dedup_exact import KEY, keep_key, kept_id, mark_duplicates

BANDS = "_dedup_bands"
_WORD_SPLIT = re.compile(r"[\s!-/:-@\[-`{-~]+")


class DedupFuzzyConfig(StageConfig):
    threshold: float = Field(0.8, gt=0, lt=1)
    ngram: int = Field(5, ge=1)
    char_ngrams: bool = False
    num_perm: int = Field(128, ge=8, le=1024)
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    seed: int = 0
    band_group_size: int = Field(16, ge=1, description="bands shuffled together; lower it to bound shuffle memory")
    verify: bool = False
    keep: Literal["lowest_id", "longest"] = "lowest_id"
    action: Literal["remove", "annotate"] = "remove"
    partitions: int | None = Field(None, ge=1, description="shuffle partitions (default: from the data size)")

    @model_validator(mode="after")
    def _bands_fit(self):
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither")
        if self.bands and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


def shingle_set(text: str, ngram: int, char_ngrams: bool) -> set:
    """The exact shingles the MinHash kernel hashes (for verification and for measuring true Jaccard)."""
    if char_ngrams:
        t = " ".join(text.lower().split())
        return {t[i:i + ngram] for i in range(max(1, len(t) - ngram + 1))}
    words = [w for w in _WORD_SPLIT.split(text.lower()) if w]
    return {" ".join(words[i:i + ngram]) for i in range(max(1, len(words) - ngram + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


class DedupFuzzy(GlobalStage):
    name = "dedup_fuzzy"
    Config = DedupFuzzyConfig

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        c = config
        self.bands, self.rows = (c.bands, c.rows) if c.bands else optimal_bands(c.threshold, c.num_perm)

    def added_columns(self) -> dict[str, str]:
        return {"dup_cluster": "id of the record kept for this record's near-duplicate cluster"}

    def _signatures(self, batch: pd.DataFrame) -> pd.DataFrame:
        c = self.config
        live = active(batch).to_numpy()
        batch[KEY] = keep_key(batch["id"], batch[self.text].str.len().fillna(0), c.keep).where(live, None)
        texts = [t if ok and isinstance(t, str) else "" for t, ok in zip(batch[self.text], live)]
        sig = signatures(texts, c.num_perm, c.ngram, c.char_ngrams, c.seed)
        keys = band_keys(sig, self.bands, self.rows).view(np.int64)
        has_shingles = (sig != np.uint32(0xFFFFFFFF)).any(axis=1) & live
        batch[BANDS] = [list(k) if ok else None for k, ok in zip(keys, has_shingles)]
        return batch

    def _bucket_rows(self, batch: pd.DataFrame, first: int, last: int) -> pd.DataFrame:
        ok = batch[BANDS].notna().to_numpy()
        keys = np.array([b[first:last] for b in batch[BANDS][ok]], dtype=np.int64).reshape(-1, last - first)
        nodes = batch[KEY][ok].to_numpy(dtype=object)
        return pd.DataFrame({"bucket": keys.ravel(), "node": np.repeat(nodes, last - first)})

    @staticmethod
    def _bucket_edges(df: pd.DataFrame) -> pd.DataFrame:
        if df.empty:
            return pd.DataFrame({"u": pd.Series(dtype=object), "v": pd.Series(dtype=object)})
        centre = df.groupby("bucket")["node"].transform("min")
        linked = (df["node"] != centre).to_numpy()
        return pd.DataFrame({"u": df["node"].to_numpy(dtype=object)[linked], "v": centre.to_numpy(dtype=object)[linked]})

    def _verify(self, edges, ds, partitions):
        texts = ds.select_columns([KEY, self.text]).filter(lambda r: r[KEY] is not None)
        left = edges.join(texts.rename_columns({KEY: "u", self.text: "_tu"}), "inner", partitions, on=("u",))
        both = left.join(texts.rename_columns({KEY: "v", self.text: "_tv"}), "inner", partitions, on=("v",))
        c = self.config

        def keep_similar(df: pd.DataFrame) -> pd.DataFrame:
            sims = [jaccard(shingle_set(a, c.ngram, c.char_ngrams), shingle_set(b, c.ngram, c.char_ngrams))
                    for a, b in zip(df["_tu"], df["_tv"])]
            return df.loc[np.asarray(sims, dtype=float) >= c.threshold, ["u", "v"]]

        return both.map_batches(keep_similar, batch_format="pandas")

    def apply(self, ds):
        import ray.data

        ds = ds.map_batches(self._signatures, batch_format="pandas").materialize()
        partitions = self.config.partitions or max(2, ds.num_blocks())
        edge_sets = []
        for first in range(0, self.bands, self.config.band_group_size):
            last = min(first + self.config.band_group_size, self.bands)
            rows = ds.select_columns([KEY, BANDS]).map_batches(self._bucket_rows, fn_args=(first, last),
                                                               batch_format="pandas")
            edge_sets.append(rows.repartition(partitions, keys=["bucket"])
                             .map_batches(self._bucket_edges, batch_format="pandas", batch_size=None).materialize())
        edges = edge_sets[0].union(*edge_sets[1:]) if len(edge_sets) > 1 else edge_sets[0]
        if self.config.verify:
            edges = self._verify(edges, ds, partitions).materialize()
        if edges.count() == 0:
            roots = ray.data.from_arrow(pa.table({"node": pa.array([], pa.string()), "root": pa.array([], pa.string())}))
        else:
            roots = connected_components(edges, partitions)
        joined = ds.drop_columns([BANDS]).join(roots, "left_outer", partitions, on=(KEY,), right_on=("node",))
        return joined.map_batches(self._mark, batch_format="pandas")

    def _mark(self, batch: pd.DataFrame) -> pd.DataFrame:
        winner = batch["root"].where(batch["root"].notna(), batch[KEY])
        if self.config.action == "annotate":
            live = active(batch) & batch[KEY].notna()
            batch["dup_cluster"] = [kept_id(w) if ok else None for w, ok in zip(winner, live.to_numpy())]
        else:
            batch = mark_duplicates(batch, self.name, "near_duplicate", winner, "dup_cluster")
        return batch.drop(columns=[KEY, "node", "root"], errors="ignore")
