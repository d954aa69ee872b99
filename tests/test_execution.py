"""The execution layer's two paths give a global stage the same decisions: on SNLI key rows, ``decide`` of the stages
that run plain tasks over the blocks (curriculum, labels in both layouts, label_noise, rebalance) on a Ray dataset
of six blocks and on ``LocalRows`` in this process (``thresher.curate.execution.rows``); and each operation of the
``KeyRows`` interface (mapping, gathering, grouping by key with plain tasks, joins) gives the same rows on both."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.samples import jsonl
from thresher.curate.execution.rows import LocalRows, RayRows
from thresher.curate.execution.worker import fetched
from thresher.curate.stage import ID, KEY, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, StageContext
from thresher.curate.stages.curriculum import Curriculum, CurriculumConfig
from thresher.curate.stages.label_noise import LabelNoise, LabelNoiseConfig
from thresher.curate.stages.labels import Labels, LabelsConfig
from thresher.curate.stages.rebalance import Rebalance, RebalanceConfig

N = 300
BLOCK = 50


def records(long: bool) -> pa.Table:
    items = [r for r in jsonl("examples/data/snli_dev_sample.jsonl") if r["gold_label"] != "-"][: N // 5 if long else N]
    rows = [
        {"id": r["pairID"], "text": r["sentence2"], "label": r["gold_label"], "votes": r["annotator_labels"]}
        for r in items
    ]
    if long:  # one row per annotation
        rows = [
            {"id": f"{r['id']}/{i}", "text": r["text"], "item": r["id"], "label": vote, "annotator": f"a{i}"}
            for r in rows
            for i, vote in enumerate(r["votes"])
        ]
    table = pa.Table.from_pylist(rows)
    n = table.num_rows
    keys = (np.arange(n) % BLOCK) + (np.arange(n) // BLOCK << 32)
    return table.append_column(KEY, pa.array(keys, pa.int64())).append_column(REJECT_STAGE, pa.nulls(n, pa.string()))


def key_rows(stage, batch: pa.Table) -> pa.Table:
    n = batch.num_rows
    rows = {
        KEY: batch[KEY],
        ID: batch["id"],
        **{c: pa.nulls(n, pa.string()) for c in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)},
    }
    return pa.table({**rows, **stage.keys(batch)})


def decided(stage, keys, local: bool) -> tuple[pd.DataFrame, dict]:

    import ray.data

    if local:
        out = stage.decide(LocalRows(keys)).to_table()
    else:
        blocks = [keys.slice(start, BLOCK) for start in range(0, keys.num_rows, BLOCK)]
        out = stage.decide(RayRows(ray.data.from_arrow(blocks))).to_table()
    return out.to_pandas().sort_values(KEY, ignore_index=True), stage.metrics


def rounded(value):
    """Metrics with their floats to 9 significant digits (sums of floats depend on how the rows are cut in blocks)."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [rounded(v) for v in value]
    return float(f"{value:.9g}") if isinstance(value, (float, np.floating)) else value


STAGES = {
    "curriculum": (Curriculum, CurriculumConfig(rare_doc_fraction=0.01), False),
    "labels": (Labels, LabelsConfig(annotations_field="votes", consensus="dawid_skene", assist={"dims": 64}), False),
    "labels_long": (Labels, LabelsConfig(item_field="item", annotator_field="annotator"), True),
    "label_noise": (LabelNoise, LabelNoiseConfig(dims=64, action="review"), False),
    "rebalance": (
        Rebalance,
        RebalanceConfig(field="label", target={"counts": {"entailment": 150, "neutral": 70}}, method="both", splits=[]),
        False,
    ),
}


@pytest.mark.parametrize("name", list(STAGES))
def test_ray_and_one_process_decide_the_same(ray_local, name):
    kind, config, long = STAGES[name]
    batch = records(long)
    if name == "labels":  # a few records without annotations, for assist to propose labels
        votes = batch["votes"].to_pylist()
        batch = batch.set_column(
            batch.column_names.index("votes"),
            "votes",
            pa.array([[] if i % 10 == 0 else v for i, v in enumerate(votes)]),
        )
    keys = key_rows(kind(config, StageContext()), batch)
    on_ray, ray_metrics = decided(kind(config, StageContext()), keys, local=False)
    here, metrics = decided(kind(config, StageContext()), keys, local=True)
    assert len(on_ray) == keys.num_rows and list(here.columns) == list(on_ray.columns)
    pd.testing.assert_frame_equal(here, on_ray, check_exact=False, rtol=1e-9)
    assert rounded(metrics) == rounded(ray_metrics)


def test_broadcasts_of_no_blocks_are_each_their_own_empty_table():
    """A broadcast of an empty result has no blocks: it is read as an empty table of the schema asked for, not as
    another empty broadcast's table kept in the worker (a release run with no duplicates failed on that)."""
    first = fetched([], pa.schema([("node", pa.int64()), ("root", pa.int64())]))
    second = fetched([], pa.schema([("_key", pa.int64()), ("place", pa.string())]))
    assert first.num_rows == second.num_rows == 0
    assert second.schema.names == ["_key", "place"]


# -- the interface's operations, the same assertions on both implementations --------------------------------------

ROWS = pa.table(
    {
        KEY: pa.array(np.arange(40), pa.int64()),
        "k": pa.array([f"g{i % 7}" for i in range(40)], pa.string()),
        "n": pa.array(np.arange(40) % 5, pa.int64()),
    }
)


def held(kind: str, table: pa.Table, blocks: int = 4):
    """``table`` as key rows of ``kind``: ``LocalRows``, or ``RayRows`` of ``blocks`` blocks."""
    if kind == "local":
        return LocalRows(table)
    import ray.data

    size = max(1, -(-table.num_rows // blocks))
    parts = [table.slice(lo, size) for lo in range(0, table.num_rows, size)] or [table]
    return RayRows(ray.data.from_arrow(parts))


def by_key(table: pa.Table) -> list[dict]:
    return table.sort_by([(c, "ascending") for c in table.column_names]).to_pylist()


def _calls(table: pa.Table) -> pa.Table:
    """One row per key value of a call, all naming that call (its first key: calls see disjoint keys)."""
    keys = sorted(set(table["k"].to_pylist()))
    call = keys[0] if keys else ""
    rows = {k: sum(1 for v in table["k"].to_pylist() if v == k) for k in keys}
    return pa.table(
        {
            "k": pa.array(keys, pa.string()),
            "call": [call] * len(keys),
            "rows": pa.array(list(rows.values()), pa.int64()),
        }
    )


def _doubled(table: pa.Table, factor: int) -> pa.Table:
    return table.set_column(table.column_names.index("n"), "n", pc.multiply(table["n"], factor))


def _frame_doubled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(n=frame["n"] * 2)


def _frame_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"rows": [len(frame)]})


def _num_rows(table: pa.Table) -> int:
    return table.num_rows


def _item_rows(item: int) -> pa.Table:
    return ROWS.slice(item * 10, 10)


@pytest.fixture(params=["local", "ray"])
def kind(request):
    if request.param == "ray":
        request.getfixturevalue("ray_local")
    return request.param


def test_rows_count_map_and_gather_the_same_in_both(kind):
    rows = held(kind, ROWS)
    assert rows.count() == 40 and rows.schema() == ROWS.schema and rows.size_bytes() > 0
    assert by_key(rows.map_blocks(_doubled, 3).to_table()) == by_key(_doubled(ROWS, 3))
    assert by_key(rows.map_pandas(_frame_doubled).to_table()) == by_key(_doubled(ROWS, 2))
    assert sum(int(p["rows"].sum()) for p in rows.pandas_parts(_frame_rows)) == 40
    assert rows.in_one_task(_calls, columns=["k"]).count() == 7
    assert by_key(rows.select_columns(["k"]).to_table()) == by_key(ROWS.select(["k"]))
    assert rows.drop_columns(["n"]).rename_columns({"k": "group"}).schema().names == [KEY, "group"]
    assert by_key(rows.concat(rows.map_items(_item_rows, [0, 1])).to_table()) == by_key(
        pa.concat_tables([ROWS, ROWS.slice(0, 20)])
    )
    assert rows.from_table(ROWS.slice(0, 0)).count() == 0
    assert rows.same_rows_as(rows) and not rows.same_rows_as(rows.map_blocks(_doubled, 1))
    refs = rows.broadcast(100)
    assert refs is not None and fetched(refs, ROWS.schema).num_rows == 40
    tasks = rows.tasks()
    assert sum(tasks.get([tasks.run(_num_rows, b) for b in rows.blocks()])) == 40


@pytest.mark.parametrize("columns", [None, ["k"]])
def test_grouping_puts_every_row_of_a_key_in_one_call(kind, columns):
    rows = held(kind, ROWS, blocks=5)
    for out in (
        rows.grouped(["k"], _calls, partitions=3, columns=columns),
        rows.by_group(["k"], _calls, partitions=3, rows=40, limit_rows=0, columns=columns),
        rows.by_group(["k"], _calls, partitions=3, rows=40, limit_rows=40, columns=columns),
    ):
        calls = out.to_table().to_pylist()
        assert sorted(c["k"] for c in calls) == [f"g{i}" for i in range(7)]  # each key in one call only
        assert sum(c["rows"] for c in calls) == 40
    groups = rows.map_groups("k", _calls).to_table().to_pylist()
    assert sorted((g["k"], g["call"], g["rows"]) for g in groups) == [
        (f"g{i}", f"g{i}", 6 if i < 5 else 5) for i in range(7)
    ]


def test_grouping_no_rows_calls_once_on_an_empty_table(kind):
    out = held(kind, ROWS.slice(0, 0)).grouped(["k"], _calls, partitions=3)
    assert out.count() == 0 and out.schema().names == ["k", "call", "rows"]


def test_joins_keep_the_left_rows_and_take_unjoinable_columns(kind):
    right = pa.table({"node": [f"g{i}" for i in range(3)], "v": pa.array([[i, i] for i in range(3)])})
    rows = held(kind, ROWS)
    for how, n in (("inner", 18), ("left_outer", 40)):
        out = rows.join(held(kind, right, blocks=2), how, 3, ["k"], ["node"]).to_table()
        assert out.column_names == [KEY, "k", "n", "v"] and out.num_rows == n
        assert all(r["v"] == ([int(r["k"][1:])] * 2 if r["k"] < "g3" else None) for r in out.to_pylist())


def test_the_shuffle_splits_blocks_without_columns_and_hashes_integer_widths_alike():
    from thresher.curate.execution.shuffle import concat_apply, partition_of, split_by_key

    assert [t.num_columns for t in split_by_key(pa.table({}), ["k"], 3, None)] == [0, 0, 0]
    parts = split_by_key(ROWS, ["k"], 3, None)
    assert sum(p.num_rows for p in parts) == 40 and all(len(set(p["k"].to_pylist())) >= 1 for p in parts)
    assert concat_apply(_calls, (), ROWS.schema, pa.table({}), *parts).num_rows == 7
    as_int32 = pa.table({"k": pa.array([1, 2, 3], pa.int32())})
    assert (
        partition_of(as_int32, ["k"], 5).tolist()
        == partition_of(as_int32.cast(pa.schema([("k", pa.int64())])), ["k"], 5).tolist()
    )


@pytest.mark.slow  # Ray Data's shuffle starts its aggregator actors (seconds)
def test_grouping_beyond_the_task_limit_runs_ray_datas_shuffle(ray_local, monkeypatch):
    from thresher.curate.execution import rows as rows_module

    monkeypatch.setattr(rows_module, "MAX_TASK_REFS", 0)
    calls = held("ray", ROWS).grouped(["k"], _calls, partitions=3).to_table().to_pylist()
    assert sorted(c["k"] for c in calls) == [f"g{i}" for i in range(7)]
