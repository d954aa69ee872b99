"""Which record of a duplicate group survives, and marking the others as rejected.

Every live record gets a keep key: a string that sorts lowest for the record to keep. ``lowest_id`` keeps the
record with the (lexicographically) lowest id; ``longest`` the one with the most characters, then the lowest
id; records with the same id (ids may repeat) are ordered by their internal key (read task, position). The key
is a fixed-width length prefix (``longest``), the id, ``\\x01`` and the internal key in 16 hex digits, so it is
unique, the kept id is read back from any key, and a group's survivor is its minimum key: a rule that depends on
nothing but the group's members (not their order, blocks or the number of CPUs).

A reference run's key rows (negative internal keys, ``thresher.curate.stage.reference_keys``) take keep keys that
sort before every record's: ``\x00``, the reference's position in 4 digits, the id, ``\x01`` and the internal key,
so a group with a reference record keeps it (the lowest reference, then id) and its new records are rejected as
``duplicate_of_reference``.

A dedup stage ends with the *roots* of its groups: rows ``(node, root)``, the key of every record that is not
its group's survivor and the key of that survivor. :func:`apply_roots` brings each key row its root: the roots
go to every map task when they are few (``KeyRows.broadcast``: no shuffle), else the key rows
(never the records) are joined with them on the keep key.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.execution.rows import KeyRows
from thresher.curate.execution.worker import fetched
from thresher.curate.stage import ID, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, reference_of
from thresher.curate.stage import KEY as INTERNAL_KEY

log = logging.getLogger(__name__)
KEY = "_dedup_key"
LENGTH = "_text_length"
_SUFFIX = 17  # \x01 + 16 hex digits of the internal key
KeepRule = Literal["lowest_id", "longest"]
_LENGTH_WIDTH = 13
_LENGTH_BASE = 10**_LENGTH_WIDTH - 1
ROOT_SCHEMA = pa.schema([("node", pa.string()), ("root", pa.string())])
REFERENCE = "_dedup_reference"  # on rows a reference's record removed: the reference's position in ``against``
REFERENCE_REASON = "duplicate_of_reference"
_REFERENCE_MARK = "\x00"
_REFERENCE_PREFIX = 5  # \x00 + 4 digits of the reference's position


def live_mask(batch: pa.Table) -> pa.ChunkedArray:
    """Records no earlier stage rejected."""
    return pc.is_null(batch[REJECT_STAGE])


def text_lengths(batch: pa.Table, text: str) -> dict:
    """Map side: the key column ``keep_keys`` needs for ``longest``."""
    return {LENGTH: pc.fill_null(pc.utf8_length(batch[text].cast(pa.string())), 0).cast(pa.int64())}


def with_keep_keys(batch: pa.Table, keep: KeepRule) -> pa.Table:
    """Key rows with their keep key (``KEY``), computed from ``id``, the internal key and ``LENGTH``."""
    return batch.append_column(KEY, keep_keys(batch, keep))


def keep_keys(batch: pa.Table, keep: KeepRule) -> pa.Array:
    """The keep key of every row of ``batch`` (columns ``id``, the internal key and, for ``longest``, ``LENGTH``)."""
    internal = batch[INTERNAL_KEY].to_numpy(zero_copy_only=False)
    suffix = _hex16(internal.astype(np.uint64))
    ids = pc.fill_null(batch[ID].cast(pa.string()), "")
    own = ids
    if keep == "longest":
        lengths = pc.fill_null(batch[LENGTH], 0).to_numpy(zero_copy_only=False)
        prefix = pa.array(np.char.zfill((_LENGTH_BASE - lengths.astype(np.int64)).astype(str), _LENGTH_WIDTH))
        own = pc.binary_join_element_wise(prefix, ids, "")
    referenced = internal < 0
    if referenced.any():
        marks = [f"{_REFERENCE_MARK}{r:04d}" for r in np.maximum(reference_of(internal), 0).tolist()]
        own = pc.if_else(pa.array(referenced), pc.binary_join_element_wise(pa.array(marks), ids, ""), own)
    return pc.binary_join_element_wise(own, suffix, "\x01")


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def _hex16(values: np.ndarray) -> pa.StringArray:
    """Each uint64 as 16 lowercase hex digits."""
    octets = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    digits = np.empty((len(values), 16), np.uint8)
    digits[:, 0::2] = _HEX[octets >> 4]
    digits[:, 1::2] = _HEX[octets & 15]
    offsets = np.arange(0, 16 * len(values) + 1, 16, dtype=np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(digits))


def kept_ids(keys: pa.ChunkedArray | pa.Array, keep: KeepRule):
    """The record id inside keep keys."""
    return pc.utf8_slice_codeunits(keys, _LENGTH_WIDTH if keep == "longest" else 0, -_SUFFIX)


def _string_rejections(batch: pa.Table) -> pa.Table:
    for col in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL):
        batch = batch.set_column(batch.column_names.index(col), col, batch[col].cast(pa.string()))
    return batch


KEPT_DETAIL = "duplicate of kept record "  # a duplicate's reject detail, before the kept record's id


def mark_removed(
    batch: pa.Table,
    winner: pa.ChunkedArray | pa.Array,
    keep: KeepRule,
    stage: str,
    reason: str,
    cluster: str | None = None,
    remove: bool = True,
    references: list[str] = (),
) -> pa.Table:
    """Reject live records whose key is not their group's ``winner`` key (null: no group), with detail
    ``duplicate of kept record <id>``, or, where the winner is a record of a reference run (``references``: their
    URIs), reason ``duplicate_of_reference``, detail ``duplicate of record <id> of <run>`` and ``REFERENCE`` (the
    reference's position) set; with ``cluster``, every live record gets that column: its group's kept id, else its
    own id."""
    keys = batch[KEY]
    winner = pc.coalesce(winner, keys)
    live = pc.and_(live_mask(batch), pc.is_valid(keys))
    loser = (
        pc.fill_null(pc.and_(live, pc.not_equal(keys, winner)), False) if remove else pa.repeat(False, batch.num_rows)
    )
    kept = kept_ids(winner, keep)
    batch = _string_rejections(batch)
    detail = pc.binary_join_element_wise(KEPT_DETAIL, kept.cast(pa.string()), "")
    reasons = pa.scalar(reason)
    if references:
        winner = winner.cast(pa.string())  # (a join may have made it a large string)
        by_reference = pc.fill_null(pc.starts_with(winner, _REFERENCE_MARK), False)
        position = pc.cast(
            pc.if_else(by_reference, pc.utf8_slice_codeunits(winner, 1, _REFERENCE_PREFIX), "0"), pa.int64()
        )
        reference_id = pc.utf8_slice_codeunits(winner, _REFERENCE_PREFIX, -_SUFFIX)
        kept = pc.if_else(by_reference, reference_id, kept)
        runs = pa.array(list(references), pa.string()).take(position)
        detail = pc.if_else(
            by_reference, pc.binary_join_element_wise("duplicate of record ", reference_id, " of ", runs, ""), detail
        )
        reasons = pc.if_else(by_reference, REFERENCE_REASON, reason)
        batch = batch.append_column(
            REFERENCE, pc.if_else(pc.and_(loser, by_reference), position, pa.scalar(None, pa.int64()))
        )
    for col, value in ((REJECT_STAGE, pa.scalar(stage)), (REJECT_REASON, reasons), (REJECT_DETAIL, detail)):
        batch = batch.set_column(batch.column_names.index(col), col, pc.if_else(loser, value, batch[col]))
    if cluster:
        if cluster in batch.column_names:  # clusters of an earlier dedup_fuzzy: this one's replace them
            batch = batch.drop_columns([cluster])
        batch = batch.append_column(cluster, pc.if_else(live, kept, pa.scalar(None, pa.string())))
    return batch.drop_columns([KEY])


def survivors(components: KeyRows, keys: KeyRows, partitions: int, limit_rows: int) -> KeyRows:
    """``(node, root)`` in keep keys from components over internal keys: every member of a component but its
    survivor (the member whose keep key is lowest), with the survivor's keep key. ``components``: ``(node, root)``
    internal keys of every non-root member; ``keys``: key rows with the internal and the keep key. The
    members' keep keys are taken by a semi-join (components broadcast up to ``limit_rows``, else joined)."""
    n = components.count()
    refs = components.broadcast(limit_rows)
    if refs is not None:
        members = keys.map_blocks(_members_broadcast, refs, columns=[INTERNAL_KEY, KEY])
    else:
        both = components.map_blocks(_with_roots)
        members = keys.select_columns([INTERNAL_KEY, KEY]).join(both, "inner", partitions, [INTERNAL_KEY], ["node"])
        members = members.select_columns(["root", KEY])
    return members.by_group(["root"], _losers, partitions=partitions, rows=2 * n, limit_rows=limit_rows)


def _with_roots(components: pa.Table) -> pa.Table:
    """Each member with its root, the roots included (as members of their own component)."""
    roots = pc.unique(components["root"])
    return pa.table(
        {
            "node": pa.concat_arrays([components["node"].combine_chunks(), roots]),
            "root": pa.concat_arrays([components["root"].combine_chunks(), roots]),
        }
    )


def _members_broadcast(batch: pa.Table, refs: list) -> pa.Table:
    comps = fetched(refs, pa.schema([("node", pa.int64()), ("root", pa.int64())]))
    nodes, roots = comps["node"].chunk(0), comps["root"].chunk(0)
    internal = batch[INTERNAL_KEY]
    root = pc.coalesce(
        roots.take(pc.index_in(internal, value_set=nodes)),
        pc.if_else(pc.is_in(internal, value_set=roots), internal, pa.scalar(None, pa.int64())),
    )
    found = pc.is_valid(root)
    return pa.table({"root": root.filter(found), KEY: batch[KEY].filter(found)})


def _losers(members: pa.Table) -> pa.Table:
    """``(node, root)``: each member's keep key and its component's lowest (a whole partition by root)."""
    if members.num_rows == 0:
        return ROOT_SCHEMA.empty_table()
    members = members.group_by(["root", KEY]).aggregate([])
    lowest = members.group_by("root").aggregate([(KEY, "min")])
    members = members.join(lowest, "root", join_type="inner")
    members = members.filter(pc.not_equal(members[KEY], members[f"{KEY}_min"]))
    return pa.table({"node": members[KEY], "root": members[f"{KEY}_min"]}).cast(ROOT_SCHEMA)


def apply_roots(ds: KeyRows, roots: KeyRows, mark, partitions: int, limit_rows: int, drop: list[str] = ()) -> KeyRows:
    """``ds`` (live key rows, less the columns ``drop``) with every batch passed to ``mark(batch, root)``: ``root``
    the root key of each row (null for rows that are no group's non-survivor). The roots are broadcast up to
    ``limit_rows``, else joined with the key rows."""
    refs = roots.broadcast(limit_rows)
    log.info(
        "removal: %d records to link to a survivor (%s)", roots.count(), "broadcast" if refs is not None else "join"
    )
    if refs is not None:
        return ds.map_blocks(_mark_broadcast, refs, mark, list(drop))
    joined = (ds.drop_columns(list(drop)) if drop else ds).join(roots, "left_outer", partitions, [KEY], ["node"])
    return joined.map_blocks(_mark_joined, mark)


def _mark_broadcast(batch: pa.Table, refs: list, mark, drop: list[str]) -> pa.Table:
    roots = fetched(refs, ROOT_SCHEMA)
    batch = batch.drop_columns(drop)
    return mark(batch, roots["root"].chunk(0).take(pc.index_in(batch[KEY], value_set=roots["node"].chunk(0))))


def _mark_joined(batch: pa.Table, mark) -> pa.Table:
    root = batch["root"]  # (the join keeps the left key only; "node" is dropped where present)
    return mark(batch.drop_columns([c for c in ("node", "root") if c in batch.column_names]), root)
