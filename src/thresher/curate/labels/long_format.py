"""Long format (one row per annotation): one key row per annotation, collapsed to one per item and expanded back."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.labels.key_rows import RATERS, VALUES
from thresher.curate.stage import ID, KEY, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE

ITEM, MERGED = "_labels_item", "_labels_merged"  # key rows: the item, the keys of its other rows
ANNOTATIONS = "label_annotations"


def long_keys(batch: pa.Table, item_field: str, label_field: str, annotator_field: str | None) -> dict:
    """Per row its item (a row without one is its own item: ``\0`` and its key) and its annotation as a list of one."""

    def column(name):
        if name not in batch.column_names:
            return pa.nulls(batch.num_rows, pa.string())
        return batch[name].cast(pa.string())

    keys = pc.cast(batch[KEY], pa.string())
    item = pc.if_else(pc.is_valid(column(item_field)), column(item_field), pc.binary_join_element_wise("\0", keys, ""))
    labels = column(label_field).to_pylist()
    out = {ITEM: item, VALUES: pa.array([[] if v is None else [v] for v in labels], pa.list_(pa.string()))}
    if annotator_field:
        out[RATERS] = pa.array(
            [[] if v is None else [a] for v, a in zip(labels, column(annotator_field).to_pylist())],
            pa.list_(pa.string()),
        )
    return out


def collapse_item(group: pa.Table) -> pa.Table:
    """One key row for an item's rows: its first row (lowest key) with every row's annotations in key order and the
    other rows' keys (``MERGED``)."""
    group = group.take(pc.sort_indices(group[KEY]))
    first = group.slice(0, 1)
    values = pc.list_flatten(group[VALUES]).to_pylist()
    raters = pc.list_flatten(group[RATERS]).to_pylist() if RATERS in group.column_names else [None] * len(values)
    first = first.set_column(first.column_names.index(VALUES), VALUES, pa.array([values], pa.list_(pa.string())))
    if RATERS in group.column_names:
        first = first.set_column(first.column_names.index(RATERS), RATERS, pa.array([raters], pa.list_(pa.string())))
    return first.append_column(MERGED, pa.array([group[KEY].to_pylist()[1:]], pa.list_(pa.int64()))).append_column(
        ANNOTATIONS, pa.array([orjson.dumps(list(map(list, zip(raters, values)))).decode()])
    )


def expand_items(table: pa.Table, stage: str, decision_columns: list[str]) -> pa.Table:
    """The decided items with ``label_annotations`` (the kept row's label and annotator fields null), followed by
    the key rows of the items' other rows, rejected as ``annotation_merged`` (detail: the kept record's id)."""
    merged = table[MERGED].combine_chunks()
    parents = pc.list_parent_indices(merged).to_numpy()
    kept_ids = table[ID].cast(pa.string()).take(pa.array(parents, pa.int64()))
    rows = {
        KEY: pc.list_flatten(merged),
        ID: pa.nulls(len(parents), pa.string()),
        REJECT_STAGE: pa.array([stage] * len(parents), pa.string()),
        REJECT_REASON: pa.array(["annotation_merged"] * len(parents), pa.string()),
        REJECT_DETAIL: kept_ids,
    }
    table = table.drop_columns([c for c in (MERGED, ITEM) if c in table.column_names])
    for col in decision_columns:
        if col not in table.column_names:
            table = table.append_column(col, pa.nulls(table.num_rows, pa.string()))
    rejected = pa.table(
        {f.name: rows[f.name].cast(f.type) if f.name in rows else pa.nulls(len(parents), f.type) for f in table.schema}
    )
    return pa.concat_tables([table, rejected])
