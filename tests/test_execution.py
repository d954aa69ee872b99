"""The execution layer's two paths give a global stage the same decisions: on SNLI key rows, ``decide`` of the stages
that run plain tasks over the blocks (curriculum, labels in both layouts, label_noise, rebalance) on a Ray dataset
of six blocks and on a ``LocalTable`` in this process (``thresher.curate.execution.tasks``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.samples import jsonl
from thresher.curate.execution.datasets import LocalTable, fetched
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
    import ray
    import ray.data

    if local:
        out = stage.decide(LocalTable(keys)).table
    else:
        blocks = [keys.slice(start, BLOCK) for start in range(0, keys.num_rows, BLOCK)]
        out = pa.concat_tables(ray.get(stage.decide(ray.data.from_arrow(blocks)).materialize().to_arrow_refs()))
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
