"""``dedup_exact``: keep one record per identical (normalized) text; the others are rejected, naming the kept one.

A global stage: on the map side every live record gets, as its key row, a 128-bit xxhash (XXH3) of its
normalized text and a keep key (``thresher.curate.dedup.removal``); a hash shuffle of the ``(hash, key)`` pairs brings
each hash group into one partition, where the lowest keep key (``keep``: ``lowest_id`` or ``longest``) is the
survivor; the key rows then learn their survivor (``thresher.curate.dedup.removal.apply_roots``) and the others are
rejected (``exact_duplicate``, detail ``duplicate of kept record <id>``). Every record it sees gets ``dup_cluster``:
the id of the record kept for its group (its own when it has no duplicate), rejected ones too. Text never leaves
the map side; nothing is collected on the driver.

``fields`` hashes several fields together instead of the text field alone: a record's identity is then all of
them (e.g. ``[messages, chosen, rejected]`` for preference pairs, so that a prompt's distinct pairs all stay and
only repeated pairs go); a field holding a chat conversation counts by its messages' contents.

``against`` names earlier finished runs: a record identical to a kept record of one of them is rejected
(``duplicate_of_reference``, detail ``duplicate of record <id> of <run>``); the references contribute their index
of hashes, never their texts (``thresher.curate.dedup.against_runs``).

Normalization of each field, in this order: Unicode NFKC (``unicode_nfkc``), lowercase, punctuation, symbols and
digits replaced by spaces (``strip_punctuation_digits``), whitespace runs collapsed and trimmed
(``collapse_whitespace``).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field

from thresher.curate.dedup.against_runs import ReferenceDedup
from thresher.curate.dedup.removal import (
    KEY,
    ROOT_SCHEMA,
    KeepRule,
    apply_roots,
    mark_removed,
    text_lengths,
    with_keep_keys,
)
from thresher.curate.execution.worker import partitions_for
from thresher.curate.fields import texts
from thresher.curate.stage import StageConfig

HASH = "_dedup_hash"
CLUSTER = "dup_cluster"
SEPARATOR, FIELD_SEPARATOR = "\x1e", "\x1f"  # between a conversation's messages, between fields


class DedupExactConfig(StageConfig):
    lowercase: bool = Field(True, description="compare texts lowercased")
    collapse_whitespace: bool = Field(True, description="compare texts with whitespace runs collapsed and trimmed")
    strip_punctuation_digits: bool = Field(
        False, description=("punctuation, symbols and digits replaced by spaces before comparing")
    )
    unicode_nfkc: bool = Field(False, description="compare texts in Unicode NFKC")
    keep: KeepRule = Field(
        "lowest_id",
        description=(
            "which record of a group survives: the lowest id, or the longest text (ties: id, then input order)"
        ),
    )
    fields: list[str] | None = Field(None, min_length=1, description="fields hashed together (default: the text field)")
    partitions: int | None = Field(
        None, ge=1, description=("shuffle partitions (default: one per 4 M shuffled rows, at least 2)")
    )
    against: list[str] = Field(
        [], description=("finished runs (URIs) whose kept records win: a record identical to one of them is removed")
    )


class DedupExact(ReferenceDedup):
    name = "dedup_exact"
    decides_locally = True
    Config = DedupExactConfig
    report_sections = ("duplicates",)
    gates = ("max_duplicate_rate",)

    def added_columns(self) -> dict[str, str]:
        return {CLUSTER: "id of the record kept for this record's exact-duplicate group (its own id if none)"}

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
        """Map side: hash (16 bytes) of the normalized text (or ``fields``) of each live record and (to keep the
        longest) its length."""
        if self.config.fields is None:
            values = self.normalized(batch[self.text]).cast(pa.binary()).to_pylist()
        else:
            columns = [self.field_values(batch, f) for f in self.config.fields]
            values = [
                None if all(v is None for v in row) else FIELD_SEPARATOR.join(v or "" for v in row).encode()
                for row in zip(*columns)
            ]
        digests = [None if v is None else xxhash.xxh3_128_digest(v) for v in values]
        lengths = text_lengths(batch, self.text) if self.config.keep == "longest" else {}
        return {HASH: pa.array(digests, pa.binary(16)), **lengths}

    def field_values(self, batch: pa.Table, field: str) -> list[str | None]:
        """Per record, the normalized texts of ``field`` (a chat conversation's message contents), joined."""
        if field not in batch.column_names:
            raise ValueError(
                f"dedup_exact: no field {field!r} in the records (columns: {', '.join(batch.column_names)})"
            )
        joined = [None if v is None else SEPARATOR.join(texts(v)) for v in batch[field].to_pylist()]
        return self.normalized(pa.chunked_array([pa.array(joined, pa.string())])).to_pylist()

    def index_key_columns(self) -> list[str]:
        return [HASH]

    def index_options(self) -> dict:
        c = self.config
        return {
            "lowercase": c.lowercase,
            "collapse_whitespace": c.collapse_whitespace,
            "fields": c.fields,
            "strip_punctuation_digits": c.strip_punctuation_digits,
            "unicode_nfkc": c.unicode_nfkc,
        }

    def decide(self, ds):
        """Only ``(hash, key)`` rows are shuffled; the key rows get their group's survivor."""
        ds, _ = self.with_references(ds)
        ds = ds.map_blocks(with_keep_keys, self.config.keep)
        partitions = self.config.partitions or partitions_for(ds.count())
        limit = self.ctx.broadcast_limit_rows
        roots = ds.by_group(
            [HASH], group_roots, columns=[HASH, KEY], partitions=partitions, rows=ds.count(), limit_rows=limit
        )
        return self.without_references(apply_roots(ds, roots, self.mark, partitions, limit))

    def mark(self, batch: pa.Table, root) -> pa.Table:
        return mark_removed(
            batch.drop_columns([HASH]),
            root,
            self.config.keep,
            self.name,
            "exact_duplicate",
            CLUSTER,
            references=self.config.against,
        )


def group_roots(pairs: pa.Table) -> pa.Table:
    """``(node, root)`` for every key of a hash group (a whole hash partition) but the group's lowest, ``root``."""
    if pairs.num_rows == 0:
        return ROOT_SCHEMA.empty_table()
    lowest = pairs.group_by(HASH).aggregate([(KEY, "min")])
    pairs = pairs.join(lowest, HASH, join_type="inner")
    pairs = pairs.filter(pc.not_equal(pairs[KEY], pairs[f"{KEY}_min"]))
    return pa.table({"node": pairs[KEY], "root": pairs[f"{KEY}_min"]}).cast(ROOT_SCHEMA)
