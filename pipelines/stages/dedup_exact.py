"""``dedup_exact``: keep one record per identical (normalized) text; the others are rejected with the kept id.

A global stage: on the map side every live record gets, as its key row, a 128-bit xxhash (XXH3) of its
normalized text and a keep key (``pipelines.dedup.removal``); a hash shuffle of the ``(hash, key)`` pairs brings
each hash group into one partition, where the lowest keep key (``keep``: ``lowest_id`` or ``longest``) is the
survivor; the key rows then learn their survivor (``pipelines.dedup.removal.apply_roots``) and the others are
rejected (``exact_duplicate``, detail: the kept id). Text never leaves the map side; nothing is collected on
the driver.

Normalization, in this order: Unicode NFKC (``unicode_nfkc``), lowercase, punctuation, symbols and digits
replaced by spaces (``strip_punctuation_digits``), whitespace runs collapsed and trimmed
(``collapse_whitespace``).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field

from pipelines.dedup.datasets import by_group, map_blocks, partitions_for
from pipelines.dedup.removal import (KEY, ROOT_SCHEMA, KeepRule, apply_roots, mark_removed, text_lengths,
                                     with_keep_keys)
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

    def keys(self, batch: pa.Table) -> dict:
        """Map side: text hash (16 bytes) and length of each live record."""
        texts = self.normalized(batch[self.text])
        digests = [None if t is None else xxhash.xxh3_128_digest(t) for t in texts.cast(pa.binary()).to_pylist()]
        return {HASH: pa.array(digests, pa.binary(16)), **text_lengths(batch, self.text)}

    def decide(self, ds):
        """Only ``(hash, key)`` rows are shuffled; the key rows get their group's survivor."""
        ds = map_blocks(ds, with_keep_keys, self.config.keep)
        partitions = self.config.partitions or partitions_for(ds.count())
        limit = self.ctx.broadcast_limit_rows
        roots = by_group(ds, [HASH], group_roots, columns=[HASH, KEY], partitions=partitions, rows=ds.count(),
                         limit_rows=limit)
        return apply_roots(ds, roots, self.mark, partitions, limit)

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
