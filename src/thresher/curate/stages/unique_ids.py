"""``unique_ids``: find records whose id repeats (ids are the user's and need not be unique; processing uses the
internal key). Added by the runner before the first global stage (``input.unique_ids``): ``keep`` counts the
records whose id was seen before (``metrics.unique_ids.repeated``) and keeps them; ``reject`` rejects every
occurrence after the first (in input order: lowest internal key) with reason ``duplicate_id``, detail the
first one's internal key. A global stage on key rows (``decide``).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field

from thresher.curate.execution.worker import fetched, partitions_for
from thresher.curate.stage import (
    ID,
    KEY,
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    GlobalStage,
    StageCard,
    StageConfig,
)

ID_HASH = "_id_hash"
FIRST = "_id_first"
FIRSTS = pa.schema([(KEY, pa.int64()), (FIRST, pa.int64())])


class UniqueIdsConfig(StageConfig):
    reject: bool = Field(
        False, description=("reject every occurrence of an id after the first (set by input.unique_ids: reject)")
    )


class UniqueIds(GlobalStage):
    name = "unique_ids"
    decides_locally = True
    Config = UniqueIdsConfig

    @classmethod
    def card(cls, options: dict, config: dict) -> StageCard:
        """Its option is the input's ``unique_ids``."""
        return StageCard(options={"input.unique_ids": config.get("input", {}).get("unique_ids", "keep")})

    def decide(self, ds):
        """The key rows themselves (no copy) unless repeats are rejected. Up to the broadcast limit the ids are
        grouped in one task; beyond, ``(id hash, key)`` pairs are shuffled by id hash."""
        partitions = partitions_for(ds.count())
        if ds.count() <= self.ctx.broadcast_limit_rows:
            firsts = ds.in_one_task(_later_occurrences, columns=[ID, KEY])
        else:
            pairs = ds.map_blocks(_id_hashes, columns=[ID, KEY])
            firsts = pairs.by_group(
                [ID_HASH],
                _later_occurrences,
                partitions=partitions,
                rows=ds.count(),
                limit_rows=self.ctx.broadcast_limit_rows,
            )
        self.metrics = {"repeated": firsts.count()}
        if not self.config.reject or not firsts.count():
            return ds
        refs = firsts.broadcast(self.ctx.broadcast_limit_rows)
        if refs is not None:
            return ds.map_blocks(_mark_broadcast, refs)
        return ds.join(firsts, "left_outer", partitions, [KEY]).map_blocks(_mark)


def _id_hashes(batch: pa.Table) -> pa.Table:
    """``(ID_HASH, KEY)`` of each key row."""
    ids = pc.fill_null(batch[ID].cast(pa.string()), "").cast(pa.binary()).to_pylist()
    return pa.table({ID_HASH: pa.array([xxhash.xxh3_128_digest(i) for i in ids], pa.binary(16)), KEY: batch[KEY]})


def _later_occurrences(pairs: pa.Table) -> pa.Table:
    """``(KEY, FIRST)`` for every record whose id (or id hash: the other column) was seen at a lower key, from
    pairs that hold every record of their ids (a whole hash partition)."""
    none = FIRSTS.empty_table()
    if pairs.num_rows == 0:
        return none
    group = next(c for c in pairs.column_names if c != KEY)
    if group == ID:
        pairs = pairs.set_column(pairs.column_names.index(ID), ID, pc.fill_null(pairs[ID].cast(pa.string()), ""))
    if pc.count_distinct(pairs[group]).as_py() == pairs.num_rows:  # the usual case: no id repeats
        return none
    lowest = pairs.group_by(group).aggregate([(KEY, "min")])
    pairs = pairs.join(lowest, group, join_type="inner")
    later = pairs.filter(pc.not_equal(pairs[KEY], pairs[f"{KEY}_min"]))
    return pa.table({KEY: later[KEY], FIRST: later[f"{KEY}_min"]})


def _mark_broadcast(batch: pa.Table, refs: list) -> pa.Table:
    firsts = fetched(refs, FIRSTS)
    at = pc.index_in(batch[KEY], value_set=firsts[KEY].chunk(0))
    return _mark(batch.append_column(FIRST, firsts[FIRST].chunk(0).take(at)))


def _mark(batch: pa.Table) -> pa.Table:
    repeated = pc.is_valid(batch[FIRST])
    values = {
        REJECT_STAGE: pa.scalar(UniqueIds.name),
        REJECT_REASON: pa.scalar("duplicate_id"),
        REJECT_DETAIL: pc.binary_join_element_wise(
            "first occurrence: internal key ", batch[FIRST].cast(pa.string()), ""
        ),
    }
    for col, value in values.items():
        i = batch.column_names.index(col)
        batch = batch.set_column(i, col, pc.if_else(repeated, value, batch[col].cast(pa.string())))
    return batch.drop_columns([FIRST])
