"""Stages against reference runs (``against``): a stage with an index of a run's kept records
(:class:`IndexedStage`: a dedup stage's keys, split's groups), and a dedup stage whose key rows are joined by the key
rows of earlier finished runs' kept records, which always win (:class:`ReferenceDedup`).

A reference contributes its index (``thresher.curate.run_folder``: ``index/<stage>/<keys>/``, its parts named by
``complete.json``): per kept record its id, ``_key`` (``part << 32 | row``) and the key columns the stage's ``keys``
computes from it (:meth:`ReferenceDedup.index_table`), never its text. In ``decide`` each index part becomes a
block of key rows with a reference key (``thresher.curate.stage.reference_keys``: negative, a keep key that sorts
first), so the stage's grouping, components and survivor choice run unchanged over both; the reference rows are
dropped before the decisions are returned (:meth:`ReferenceDedup.without_references`), having counted the records
each one removed.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.curate.dedup.removal import REFERENCE
from thresher.curate.run_folder import RunFolder
from thresher.curate.stage import ID, KEY, GlobalStage, reference_keys

STORED = "_key"  # an index row's part << 32 | row
INDEX_LAYOUT = 2  # 2: parts in a folder per build, named by complete.json


class IndexedStage(GlobalStage):
    """A stage with ``against`` (a list of run URIs) among its options, reading the reference runs' index
    (``index/<stage>/<keys>/``), which is computed from their kept records' ``index_columns`` (never their text
    unless the keys are computed from it)."""

    def index_options(self) -> dict:
        """The options the key columns depend on (an index is reused only for the same ones)."""
        raise NotImplementedError

    def index_keys(self) -> str:
        """The digest naming this stage's index folder (``index/<stage>/<keys>``; ``layout``: of the index's files)."""
        options = json.dumps({"stage": type(self).name, "layout": INDEX_LAYOUT, **self.index_options()}, sort_keys=True)
        return hashlib.sha256(options.encode()).hexdigest()[:16]

    def index_columns(self) -> list[str]:
        """The text columns the keys are computed from."""
        return list(getattr(self.config, "fields", None) or [self.text])

    def index_table(self, records: pa.Table, part: int) -> pa.Table:
        """An index part: ``id``, ``_key`` and the key columns of ``records`` (a data file's kept records, with
        ``_split``: the split of the file, null for ``data/`` itself)."""
        raise NotImplementedError


class ReferenceDedup(IndexedStage):
    """A dedup stage with ``against``: reference key rows join its own. Its own index is written at commit from
    the key rows it staged (``thresher.curate.reference_index``), and built from a run's data files only for a run that
    has none."""

    def index_key_columns(self) -> list[str]:
        """The key columns (of :meth:`keys`) an index part keeps."""
        raise NotImplementedError

    def index_table(self, records: pa.Table, part: int) -> pa.Table:
        return self.index_from_keys(pa.table({ID: records[ID], **self.keys(records)}), part)

    def index_from_keys(self, keys: pa.Table, part: int) -> pa.Table:
        """An index part from key rows (``id`` and the :meth:`index_key_columns`): ``id``, ``_key`` and those."""
        stored = (np.int64(part) << 32) | np.arange(keys.num_rows, dtype=np.int64)
        return pa.table(
            {ID: keys[ID].cast(pa.string()), STORED: pa.array(stored), **{c: keys[c] for c in self.index_key_columns()}}
        )

    def with_references(self, ds, extra: tuple[str, ...] = ()):
        """``(key rows and reference rows, reference rows with ``extra`` index columns)`` (the second None
        without references); the reference rows have the key rows' columns (null where the index has none)."""
        against = self.config.against
        if not against:
            return ds, None
        items = []
        for position, uri in enumerate(against):
            parts = RunFolder(uri, self.ctx.storage).index_parts(type(self).name, self.index_keys())
            if parts is None:
                raise RuntimeError(f"{self.name}: {uri} has no complete index for these options")
            items += [(position, part) for part in parts]
        if not items:
            return ds, None
        schema = ds.schema()
        full = ds.map_items(_reference_rows, items, self.ctx.storage, schema, list(extra))
        rows = full.select_columns(schema.names) if extra else full
        return ds.concat(rows), full

    def without_references(self, out):
        """The decided key rows less the reference rows and ``REFERENCE``; adds ``metrics["removed_by_reference"]``
        (records removed per reference run)."""
        against = self.config.against
        if not against:
            return out
        removed = [0] * len(against)
        for part in out.pandas_parts(_removed_by_reference):
            for position, n in zip(part["reference"], part["rows"]):
                removed[int(position)] += int(n)
        self.metrics = {**getattr(self, "metrics", {}), "removed_by_reference": dict(zip(against, removed))}
        return out.map_blocks(_records_only)


def _reference_rows(item: tuple[int, str], storage, schema: pa.Schema, extra: list[str]) -> pa.Table:
    """The key rows (``schema``, then ``extra``) of one index part of reference number ``item[0]``."""
    position, uri = item
    fs, path = storage.resolve(uri)
    index = pq.read_table(path, filesystem=fs)
    n = index.num_rows
    columns = {}
    for field in list(schema) + [index.schema.field(c) for c in extra]:
        if field.name == KEY:
            columns[KEY] = pa.array(reference_keys(position, index[STORED].to_numpy()), field.type)
        elif field.name in index.column_names:
            columns[field.name] = index[field.name].cast(field.type)
        else:
            columns[field.name] = pa.nulls(n, field.type)
    return pa.table(columns, schema=pa.schema(list(schema) + [index.schema.field(c) for c in extra]))


def _removed_by_reference(frame):
    import pandas as pd

    if REFERENCE not in frame.columns:
        return pd.DataFrame({"reference": [], "rows": []})
    counts = frame[REFERENCE].dropna().astype("int64").value_counts()
    return pd.DataFrame({"reference": counts.index.to_numpy(), "rows": counts.to_numpy()})


def _records_only(batch: pa.Table) -> pa.Table:
    batch = batch.filter(pc.greater_equal(batch[KEY], 0))
    return batch.drop_columns([REFERENCE]) if REFERENCE in batch.column_names else batch
