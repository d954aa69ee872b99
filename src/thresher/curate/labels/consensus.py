"""One consensus label per item, computed on a block of encoded key rows (:mod:`thresher.curate.labels.key_rows`):
the decision columns, the block's agreement counts and its Dawid-Skene statistics."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.curate.labels import agreement
from thresher.curate.labels import dawid_skene as ds_em
from thresher.curate.labels.agreement import Annotations
from thresher.curate.labels.key_rows import RATERS, VALUES
from thresher.curate.stage import REJECT_STAGE, SPLIT

LABEL, CONFIDENCE, AGREEMENT, STATUS = "label", "label_confidence", "label_agreement", "label_status"
STATUSES = ("consensus", "tie", "low_confidence", "no_annotations", "proposed", "proposal_low_confidence")
ACCEPTED = (0, 4)  # consensus and proposed: the others go to review
PRIOR_SPLIT = "_labels_prior_split"  # assist: the split before review
TIE_TOLERANCE = 1e-9


def _annotations(table: pa.Table, live: np.ndarray | None = None) -> Annotations:
    """The block's annotations in long form (rows not ``live`` contribute none)."""
    values = table[VALUES].combine_chunks()
    item = pc.list_parent_indices(values).to_numpy()
    label = pc.list_flatten(values).to_numpy().astype(np.int64)
    rater = (
        pc.list_flatten(table[RATERS].combine_chunks()).to_numpy().astype(np.int64)
        if RATERS in table.column_names
        else np.zeros(len(item), np.int64)
    )
    if live is not None:
        keep = live[item]
        item, label, rater = item[keep], label[keep], rater[keep]
    return Annotations(table.num_rows, item, label, rater)


def _live(table: pa.Table) -> np.ndarray:
    return pc.is_null(table[REJECT_STAGE]).to_numpy(zero_copy_only=False)


def em_statistics(table: pa.Table, n_classes: int, n_raters: int, params) -> dict:
    return ds_em.block_statistics(_annotations(table, _live(table)), n_classes, n_raters, params)


def assign(
    table: pa.Table,
    classes: list[str],
    n_raters: int,
    identified: bool,
    params,
    min_confidence: float,
    review_split: str,
    keep_prior_split: bool = False,
) -> tuple[pa.Table, dict]:
    """The block's decisions (the key rows with the consensus columns and ``_split``; with ``keep_prior_split``
    also the split before review, ``PRIOR_SPLIT``) and its counts."""
    live = _live(table)
    a = _annotations(table, live)
    C = len(classes)
    counts = agreement.item_counts(a, C)
    post = ds_em.posteriors(a, C, params)
    order = np.sort(post, axis=1)
    confidence = order[:, -1]
    tie = C > 1 and (order[:, -1] - order[:, -2] <= TIE_TOLERANCE)
    best = post.argmax(1)
    annotated = counts.sum(1) > 0
    status = np.where(~annotated, 3, np.where(tie, 1, np.where(confidence < min_confidence, 2, 0)))
    status[~live] = -1
    label = np.where((status == 0) | (status == 2), best, -1)
    stats = agreement.block_counts(a, C, n_raters, identified)
    stats["status"] = np.bincount(status[live], minlength=len(STATUSES))
    stats["labels"] = np.bincount(label[status == 0], minlength=C)
    consensus = label[a.item]
    judged = consensus >= 0
    stats["consensus_annotations"] = np.bincount(a.rater[judged], minlength=n_raters)
    stats["consensus_matches"] = np.bincount(
        a.rater[judged], weights=(a.label[judged] == consensus[judged]).astype(float), minlength=n_raters
    )
    review = live & (status != 0)
    split = table[SPLIT].cast(pa.string()) if SPLIT in table.column_names else pa.nulls(table.num_rows, pa.string())
    decisions = {
        SPLIT: pc.if_else(pa.array(review), review_split, split),
        LABEL: pa.array(np.asarray(classes + [None], dtype=object)[label], pa.string()),
        CONFIDENCE: pa.array(np.where(annotated & live, confidence, np.nan), pa.float64(), from_pandas=True),
        AGREEMENT: pa.array(np.where(live, agreement.item_agreement(counts), np.nan), pa.float64(), from_pandas=True),
        STATUS: pa.array(np.asarray(STATUSES + (None,), dtype=object)[status], pa.string()),
    }
    table = table.drop_columns([col for col in (VALUES, RATERS, *decisions) if col in table.column_names])
    for name, column in decisions.items():
        table = table.append_column(name, column)
    if keep_prior_split:
        table = table.append_column(PRIOR_SPLIT, split)
    return table, stats
