"""``dedup_exact``: keep one record per identical (normalized) text; the others are rejected with the kept id.

Distributed (a global stage): every live record gets a 128-bit xxhash (XXH3) of its normalized text and a
keep key (``pipelines.dedup.removal``); a hash shuffle of the ``(hash, key)`` pairs (not the records) brings
each hash group into one partition, where the lowest keep key (``keep``: ``lowest_id`` or ``longest``) is the
survivor; the records then learn their survivor in place (``pipelines.dedup.removal.apply_roots``) and the
others are rejected (``exact_duplicate``, detail: the kept id). Records rejected by earlier stages take no
part and pass through. Nothing is collected on the driver.

Normalization, in this order: Unicode NFKC (``unicode_nfkc``), lowercase, punctuation, symbols and digits
replaced by spaces (``strip_punctuation_digits``), whitespace runs collapsed and trimmed
(``collapse_whitespace``).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field

from pipelines.dedup.datasets import ARROW, materialize, partitions_for
from pipelines.dedup.removal import (ID, KEY, ROOT_SCHEMA, KeepRule, apply_roots, keep_keys, keyed, live_mask,
                                     mark_removed)
from pipelines.stage import GlobalStage, StageConfig

HASH = "_dedup_hash"


class DedupExactConfig(StageConfig):
    lowercase: bool = True
    collapse_whitespace: bool = True
    strip_punctuation_digits: bool = False
    unicode_nfkc: bool = False
    keep: KeepRule = "lowest_id"
    partitions: int | None = Field(None, ge=1, description="shuffle partitions (default: one per 4 M shuffled rows, at least 2)")


class DedupExact(GlobalStage):
    name = "dedup_exact"
    Config = DedupExactConfig

    def normalized(self, texts: pa.ChunkedArray) -> pa.ChunkedArray:
        c = self.config
        texts = texts.cast(pa.string())
        if c.unicode_nfkc:
            texts = pc.utf8_normalize(texts, "NFKC")
        if c.lowercase:
            texts = pc.utf8_lower(texts)
        if c.strip_punctuation_digits:
            texts = pc.replace_substring_regex(texts, r"[\pP\pS\pN_]+", " ")
        if c.collapse_whitespace:
            texts = pc.utf8_trim_whitespace(pc.replace_substring_regex(texts, r"\s+", " "))
        return texts

    def hashes(self, batch: pa.Table) -> pa.Table:
        """Map step: text hash (16 bytes) and keep key of the live records (null for the others)."""
        live = live_mask(batch)
        texts = self.normalized(pc.if_else(live, batch[self.text].cast(pa.string()), pa.scalar(None, pa.string())))
        digests = [None if t is None else xxhash.xxh3_128_digest(t) for t in texts.cast(pa.binary()).to_pylist()]
        key = keep_keys(batch[ID], batch[self.text], self.config.keep)
        return (batch.append_column(HASH, pa.array(digests, pa.binary(16)))
                .append_column(KEY, pc.if_else(live, key, pa.scalar(None, pa.string()))))

    def apply(self, ds):
        """Only ``(hash, key)`` rows are shuffled; the records stay in place and get their group's survivor."""
        ds = materialize(ds.map_batches(self.hashes, **ARROW))
        partitions = self.config.partitions or partitions_for(ds.count())
        pairs = ds.select_columns([HASH, KEY]).map_batches(keyed, **ARROW)
        roots = pairs.repartition(partitions, keys=[HASH]).map_batches(group_roots, batch_size=None, **ARROW)
        return apply_roots(ds, roots, self.mark, [HASH], partitions)

    def mark(self, batch: pa.Table, root) -> pa.Table:
        return mark_removed(batch.drop_columns([HASH]), root, self.config.keep, self.name, "exact_duplicate")


def group_roots(pairs: pa.Table) -> pa.Table:
    """``(node, root)`` for every key of a hash group (a whole hash partition) but the group's lowest, ``root``."""
    if pairs.num_rows == 0:
        return ROOT_SCHEMA.empty_table()
    lowest = pairs.group_by(HASH).aggregate([(KEY, "min")])
    pairs = pairs.join(lowest, HASH, join_type="inner")
    pairs = pairs.filter(pc.not_equal(pairs[KEY], pairs[f"{KEY}_min"]))
    return pa.table({"node": pairs[KEY], "root": pairs[f"{KEY}_min"]}).cast(ROOT_SCHEMA)
