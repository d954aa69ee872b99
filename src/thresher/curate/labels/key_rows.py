"""The annotation key rows of the ``labels`` stage: each item's annotations (``VALUES``) and annotator ids
(``RATERS``) as lists of strings from the records, then, per block, as small integer codes."""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.stage import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE

VALUES = "_labels_values"  # key rows: the annotations (strings), then their class codes
RATERS = "_labels_raters"  # key rows: the annotator ids (strings), then their codes


def string_lists(batch: pa.Table, field: str) -> pa.Array:
    """A list column as lists of strings; the readers keep nested JSON values as JSON text, which is parsed."""
    if field not in batch.column_names:
        return pa.array([[]] * batch.num_rows, pa.list_(pa.string()))
    col = batch[field]
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        return col.cast(pa.list_(pa.string())).combine_chunks()
    lists = []
    for text in col.cast(pa.string()).to_pylist():
        value = orjson.loads(text) if text else []
        if not isinstance(value, list):
            raise ValueError(f"labels: {field} must hold lists, got {text[:80]!r}")
        lists.append([None if v is None else v if isinstance(v, str) else orjson.dumps(v).decode() for v in value])
    return pa.array(lists, pa.list_(pa.string()))


def vocabulary(table: pa.Table, missing: list[str]) -> tuple[set, set]:
    """The labels (less ``missing``) and annotator ids of a block."""
    labels = set(pc.unique(pc.list_flatten(table[VALUES])).drop_null().to_pylist()) - set(missing)
    raters = (
        set(pc.unique(pc.list_flatten(table[RATERS])).drop_null().to_pylist())
        if RATERS in table.column_names
        else set()
    )
    return labels, raters


def encode(table: pa.Table, classes: list[str], raters: list[str] | None, missing: list[str], stage: str) -> pa.Table:
    """Annotations as class codes (int16) and annotator codes (int32); unknown labels reject their record."""
    values = table[VALUES].combine_chunks()
    flat, item = pc.list_flatten(values), pc.list_parent_indices(values).to_numpy()
    codes = pc.index_in(flat, value_set=pa.array(classes, pa.string()))
    skip = pc.or_kleene(pc.is_null(flat), pc.is_in(flat, value_set=pa.array(missing, pa.string()))).to_numpy(
        zero_copy_only=False
    )
    known = codes.is_valid().to_numpy(zero_copy_only=False)
    if raters is not None:
        rater_values = table[RATERS].combine_chunks()
        if (
            not pc.equal(pc.list_value_length(rater_values), pc.list_value_length(values))
            .fill_null(True)
            .to_numpy(zero_copy_only=False)
            .all()
        ):
            raise ValueError("labels: annotators_field and annotations_field lists differ in length")
        rater_codes = pc.index_in(pc.list_flatten(rater_values), value_set=pa.array(raters, pa.string()))
        known &= rater_codes.is_valid().to_numpy(zero_copy_only=False)
    keep = known & ~skip
    offsets = np.concatenate([[0], np.cumsum(np.bincount(item[keep], minlength=table.num_rows))]).astype(np.int32)
    table = table.set_column(
        table.column_names.index(VALUES),
        VALUES,
        pa.ListArray.from_arrays(offsets, codes.filter(pa.array(keep)).cast(pa.int16())),
    )
    if raters is not None:
        table = table.set_column(
            table.column_names.index(RATERS),
            RATERS,
            pa.ListArray.from_arrays(offsets, rater_codes.filter(pa.array(keep)).cast(pa.int32())),
        )
    unknown = ~known & ~skip
    if unknown.any():
        bad = np.zeros(table.num_rows, bool)
        bad[item[unknown]] = True
        first = {}
        for row, value in zip(item[unknown][::-1], flat.filter(pa.array(unknown)).to_pylist()[::-1]):
            first[row] = value
        detail = [first.get(i) for i in range(table.num_rows)]
        for col, value in ((REJECT_STAGE, stage), (REJECT_REASON, "unknown_label")):
            table = table.set_column(
                table.column_names.index(col), col, pc.if_else(pa.array(bad), value, table[col].cast(pa.string()))
            )
        table = table.set_column(
            table.column_names.index(REJECT_DETAIL),
            REJECT_DETAIL,
            pc.if_else(pa.array(bad), pa.array(detail, pa.string()), table[REJECT_DETAIL].cast(pa.string())),
        )
    return table
