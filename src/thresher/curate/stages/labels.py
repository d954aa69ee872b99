"""``labels``: agreement between annotators and one consensus label per item; uncertain items go to review.

Annotations come from a list column (``annotations_field``, e.g. SNLI's ``annotator_labels``; with
``annotators_field``, a parallel list of annotator ids) or from several columns, one per annotator
(``annotation_fields``; the column names identify the annotators), or from long format, one row per annotation
(``item_field``, ``label_field``, optional ``annotator_field``): the key rows are grouped by item (a Ray Data
groupby) into one per item, the item's first row (lowest key) is the record kept, with ``label_annotations`` (JSON
``[[annotator, label], ...]`` in key order) in place of its annotator and label fields, and the item's other rows
are rejected (``annotation_merged``, detail: the kept record's id). Values in ``missing`` (and nulls) are not
annotations.

A global stage: the map side sends each item's annotation vector (labels and annotator ids, no text) as its key
row. ``decide`` encodes them as small integers (classes and annotators are found in one pass unless ``classes`` is
given; a label outside ``classes`` rejects the record, reason ``unknown_label``), then works on the blocks of key
rows where they are (Ray tasks over the block references; only counts and parameters travel):

* agreement (:mod:`thresher.curate.labels.agreement`): fixed-size counts per block, merged on the driver: Fleiss' kappa,
  Krippendorff's alpha (nominal; ordinal and interval when every class is a number), percent agreement, per-class
  and per-item agreement, Cohen's kappa for every annotator pair when annotators are identified;
* consensus: ``majority`` (confidence: the top class's share of the votes) or ``dawid_skene``
  (:mod:`thresher.curate.labels.dawid_skene`; confidence: the posterior of the chosen class);
* each record gets ``label`` (null on a tie or without annotations), ``label_confidence``, ``label_agreement``
  (share of agreeing annotation pairs) and ``label_status``: ``consensus``, ``tie``, ``low_confidence`` (below
  ``min_confidence``) or ``no_annotations``. Every status but ``consensus`` goes to the ``review_split``
  (``data/review/``); the others keep the split an earlier ``split`` stage gave them (a ``split`` after ``labels``
  would reassign every record, review included, so put ``labels`` after ``split``).

``assist`` proposes labels for the records without annotations (:meth:`Labels._assist`): ``label_status``
``proposed`` (split kept) or ``proposal_low_confidence`` (review split), ``label_confidence`` the calibrated
probability.

The summary lands in the manifest's ``metrics.labels`` and the report's ``labels`` section;
``python -m thresher.curate.labels.export RUN`` writes the review queue for annotation tools (``export_review: true``: the
run writes it to ``<output>/review_queue/`` before it is committed).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from thresher.core.storage import join
from thresher.curate.execution.datasets import map_groups
from thresher.curate.execution.tasks import tasks_for
from thresher.curate.labels import agreement, is_number, noise, ordered_classes
from thresher.curate.labels import dawid_skene as ds_em
from thresher.curate.labels.agreement import Annotations
from thresher.curate.labels.export import write_review_queue
from thresher.curate.run_folder import DATA, REVIEW
from thresher.curate.stage import ID, KEY, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, SPLIT, GlobalStage, StageConfig

VALUES = "_labels_values"  # key rows: the annotations (strings), then their class codes
RATERS = "_labels_raters"  # key rows: the annotator ids (strings), then their codes
LABEL, CONFIDENCE, AGREEMENT, STATUS = "label", "label_confidence", "label_agreement", "label_status"
STATUSES = ("consensus", "tie", "low_confidence", "no_annotations", "proposed", "proposal_low_confidence")
ACCEPTED = (0, 4)  # consensus and proposed: the others go to review
FEATURES, PRIOR_SPLIT = "_labels_features", "_labels_prior_split"  # assist: key-row features, the split before review
TEMPERATURES = np.exp(np.linspace(np.log(0.1), np.log(10.0), 81))  # assist: calibration grid
ITEM, MERGED, MERGED_INTO = "_labels_item", "_labels_merged", "_labels_merged_into"  # long format key rows
ANNOTATIONS = "label_annotations"
TIE_TOLERANCE = 1e-9


class AssistConfig(StageConfig):
    text_fields: list[str] | None = Field(None, description="fields the features are computed from (default: the text)")
    dims: int = Field(512, ge=8, le=4096, description="hashed feature dimensions (floats per key row)")
    folds: int = Field(5, ge=2, description=(
        "cross-validation folds: each record is scored by a model that did not train on it"))
    regularization: float = Field(10.0, gt=0, description="inverse L2 strength of the logistic regressions")
    max_train_rows: int = Field(200_000, ge=10, description="consensus rows sampled (by key hash) for training")
    min_confidence: float = Field(0.8, ge=0, le=1, description="proposals below go to review")
    seed: int = Field(0, ge=0, description="seed of the training sample and folds")


class LabelsConfig(StageConfig):
    annotations_field: str | None = Field(None, description="list column of labels, one per annotation")
    annotators_field: str | None = Field(None, description=(
        "list column of annotator ids, parallel to annotations_field"))
    annotation_fields: list[str] = Field(default_factory=list, description="one column per annotator")
    item_field: str | None = Field(None, description="long format: one row per annotation, grouped by this field")
    label_field: str = Field("label", description="long format: the annotation's label")
    annotator_field: str | None = Field(None, description="long format: the annotator's id")
    classes: list[str] | None = Field(None, description="the label set, in order (default: every label seen)")
    missing: list[str] = Field(default_factory=lambda: ["", "-"], description="values that are not annotations")
    consensus: Literal["majority", "dawid_skene"] = Field("majority", description="how the consensus label is chosen")
    min_confidence: float = Field(0.6, ge=0, le=1, description="items below go to review")
    review_split: str = Field("review", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description=(
        "the split of every record whose status is not consensus"))
    max_iter: int = Field(200, ge=1, description="Dawid-Skene EM iterations at most")
    tol: float = Field(1e-7, gt=0, description="Dawid-Skene: stop when the log-likelihood improves less (relative)")
    assist: AssistConfig | None = Field(None, description="propose labels for records without annotations")
    export_review: bool = Field(False, description="write the review queue to <output>/review_queue/ (JSONL, CSV, "
                                                   "Label Studio) before the run is committed")

    @model_validator(mode="after")
    def _one_input(self):
        if bool(self.annotations_field) + bool(self.annotation_fields) + bool(self.item_field) != 1:
            raise ValueError("give annotations_field (a list column), annotation_fields (one column per annotator) "
                             "or item_field (long format: one row per annotation)")
        if self.annotator_field and not self.item_field:
            raise ValueError("annotator_field goes with item_field")
        if self.annotators_field and not self.annotations_field:
            raise ValueError("annotators_field goes with annotations_field")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("classes: repeated class")
        return self

    @property
    def identified(self) -> bool:
        return bool(self.annotators_field or self.annotation_fields or self.annotator_field)


class Labels(GlobalStage):
    name = "labels"
    Config = LabelsConfig

    def _consensus_columns(self) -> dict[str, str]:
        return {LABEL: "consensus label (null: tie or no annotations)",
                CONFIDENCE: f"confidence of the {self.config.consensus} consensus",
                AGREEMENT: "share of agreeing annotation pairs of the item",
                STATUS: "consensus | tie | low_confidence | no_annotations | proposed | proposal_low_confidence "
                        "(all but consensus and proposed: review split)"}

    def added_columns(self) -> dict[str, str]:
        out = self._consensus_columns()
        if self.config.item_field:
            out[ANNOTATIONS] = "long format: the item's annotations, JSON [[annotator, label], ...] in input order"
        return out

    def decision_columns(self) -> list[str]:
        c = self.config
        replaced = [f for f in (c.label_field, c.annotator_field) if c.item_field and f and f != LABEL]
        return [SPLIT, *self.added_columns(), *replaced]

    def decision_types(self) -> dict[str, pa.DataType]:
        return {CONFIDENCE: pa.float64(), AGREEMENT: pa.float64()}

    def after_publish(self, run_uri: str, files: list[str]) -> None:
        """``export_review``: the review split's final files exported for annotation tools."""
        if self.config.export_review:
            prefix = join(run_uri, DATA, self.config.review_split) + "/"
            write_review_queue([f for f in files if f.startswith(prefix)], self.ctx.storage,
                               join(run_uri, REVIEW))

    # -- map side ----------------------------------------------------------------------------------------

    def keys(self, batch: pa.Table) -> dict:
        """The item's annotations (and annotator ids) as lists of strings; long format: the row's annotation as a
        list of one and its item; with ``assist``, the record's hashed text features."""
        out = self._annotation_keys(batch)
        if self.config.assist:
            a = self.config.assist
            out[FEATURES] = noise.text_features(batch, a.text_fields or [self.text], a.dims)
        return out

    def _annotation_keys(self, batch: pa.Table) -> dict:
        c = self.config
        if c.item_field:
            return _long_keys(batch, c.item_field, c.label_field, c.annotator_field)
        if c.annotations_field:
            out = {VALUES: _string_lists(batch, c.annotations_field)}
            if c.annotators_field:
                out[RATERS] = _string_lists(batch, c.annotators_field)
            return out
        columns = [batch[f].cast(pa.string()).to_pylist() if f in batch.column_names else [None] * batch.num_rows
                   for f in c.annotation_fields]
        values, raters = [], []
        for row in zip(*columns):
            values.append([v for v in row if v is not None])
            raters.append([f for f, v in zip(c.annotation_fields, row) if v is not None])
        return {VALUES: pa.array(values, pa.list_(pa.string())), RATERS: pa.array(raters, pa.list_(pa.string()))}

    # -- decisions -----------------------------------------------------------------------------------------

    def decide(self, ds):
        c = self.config
        tasks = tasks_for(ds)
        if c.item_field:
            ds = map_groups(ds, ITEM, _collapse_item)
        refs = tasks.blocks(ds)
        found = tasks.get([tasks.run(_vocabulary, ref, c.missing) for ref in refs])
        classes = c.classes or ordered_classes(set().union(*(f[0] for f in found)))
        raters = sorted(set().union(*(f[1] for f in found))) if c.identified else None
        refs = [tasks.run(_encode, ref, classes, raters, c.missing, self.name) for ref in refs]
        n_classes, n_raters = len(classes), len(raters) if raters else 1
        params, fit = None, None
        if c.consensus == "dawid_skene":
            def statistics(p):
                parts = tasks.get([tasks.run(_em_statistics, ref, n_classes, n_raters, p) for ref in refs])
                return {k: sum(part[k] for part in parts) for k in parts[0]}
            params, fit = ds_em.fit(statistics, c.max_iter, c.tol)
        decided = [tasks.run(_assign, ref, classes, n_raters, c.identified, params, c.min_confidence, c.review_split,
                             c.assist is not None, returns=2) for ref in refs]
        counts = None
        for part in tasks.get([s for _, s in decided]):
            counts = agreement.merge(counts, part)
        tables = [t for t, _ in decided]
        assisted = self._assist(tasks, tables, classes, counts) if c.assist else None
        if assisted:
            tables, assist_metrics = assisted
        self.metrics = self._summary(counts, classes, raters, params, fit)
        if assisted:
            self.metrics["assist"] = assist_metrics
        if c.item_field:
            tables = [tasks.run(_expand_items, t, self.name, self.decision_columns()) for t in tables]
        return tasks.dataset(tables)

    def _assist(self, tasks, tables: list, classes: list[str], counts: dict) -> tuple[list, dict]:
        """Proposals for the records without annotations from logistic regressions on hashed text features
        (:mod:`thresher.curate.labels.noise`), trained on a sample of the consensus records: each record is scored by the
        fold model that did not train on it, so the consensus records' scores are out of fold; a temperature fitted
        on them (least log loss over ``TEMPERATURES``) calibrates the proposals' confidence. Updates ``counts``."""
        a, C = self.config.assist, len(classes)
        labelled = int(counts["status"][0])
        if C < 2 or labelled < a.folds:
            model, temperature, calib = None, None, np.zeros(2 + len(TEMPERATURES))
        else:
            fraction = min(1.0, a.max_train_rows / labelled)
            model = tasks.run(noise.fit_samples, a.folds, C, a.regularization,
                              *[tasks.run(_assist_sample, t, classes, fraction, a.folds, a.seed) for t in tables])
            calib = np.sum(tasks.get([tasks.run(_assist_calibration, t, model, classes, a.folds, a.seed)
                                      for t in tables]), axis=0)
            temperature = float(TEMPERATURES[np.argmin(calib[2:])])
        out = [tasks.run(_propose, t, model, temperature, classes, a.folds, a.seed, a.min_confidence,
                         self.config.review_split, returns=2) for t in tables]
        moved = np.sum(tasks.get([m for _, m in out]), axis=0)
        counts["status"] = counts["status"] + np.array([0, 0, 0, -moved.sum(), moved[0], moved[1]])
        metrics = {"min_confidence": a.min_confidence, "proposed": int(moved[0]), "proposal_low_confidence": int(moved[1]),
                   "temperature": temperature, "train_rows": labelled if model is None else int(tasks.get(model)[2]),
                   "out_of_fold_accuracy": round(calib[1] / calib[0], 6) if calib[0] else None}
        if model is None:
            metrics["skipped"] = "fewer than two classes or fewer consensus records than folds"
        return [t for t, _ in out], metrics

    def _summary(self, counts: dict, classes: list[str], raters: list[str] | None, params, fit) -> dict:
        c = self.config
        numeric = all(is_number(x) for x in classes)
        out = agreement.summarize(counts, classes, raters, numeric)
        matches, annotations = counts["consensus_matches"], counts["consensus_annotations"]
        out["consensus"] = {
            "method": c.consensus, "min_confidence": c.min_confidence, "review_split": c.review_split,
            "review_queue": int(counts["status"].sum() - counts["status"][list(ACCEPTED)].sum()),
            "status": dict(zip(STATUSES, counts["status"].tolist())),
            "labels": dict(zip(classes, counts["labels"].tolist())),
            "annotations_matching_consensus": agreement.rounded(matches.sum() / annotations.sum())
            if annotations.sum() else None,
        }
        if raters is not None:
            out["consensus"]["annotator_match_rate"] = {
                name: agreement.rounded(m / n) if n else None for name, m, n in zip(raters, matches, annotations)}
        if params is not None:
            out["dawid_skene"] = {**fit, "prior": dict(zip(classes, np.round(params.prior, 6).tolist())),
                                  "annotators": ds_em.reliability(params, raters or ["(all annotators)"], classes)}
        return out


# -- block functions (run as Ray tasks on the key-row blocks) ------------------------------------------------


def _string_lists(batch: pa.Table, field: str) -> pa.Array:
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


def _vocabulary(table: pa.Table, missing: list[str]) -> tuple[set, set]:
    """The labels (less ``missing``) and annotator ids of a block."""
    labels = set(pc.unique(pc.list_flatten(table[VALUES])).drop_null().to_pylist()) - set(missing)
    raters = set(pc.unique(pc.list_flatten(table[RATERS])).drop_null().to_pylist()) if RATERS in table.column_names else set()
    return labels, raters


def _encode(table: pa.Table, classes: list[str], raters: list[str] | None, missing: list[str], stage: str) -> pa.Table:
    """Annotations as class codes (int16) and annotator codes (int32); unknown labels reject their record."""
    values = table[VALUES].combine_chunks()
    flat, item = pc.list_flatten(values), pc.list_parent_indices(values).to_numpy()
    codes = pc.index_in(flat, value_set=pa.array(classes, pa.string()))
    skip = pc.or_kleene(pc.is_null(flat), pc.is_in(flat, value_set=pa.array(missing, pa.string()))).to_numpy(
        zero_copy_only=False)
    known = codes.is_valid().to_numpy(zero_copy_only=False)
    if raters is not None:
        rater_values = table[RATERS].combine_chunks()
        if not pc.equal(pc.list_value_length(rater_values), pc.list_value_length(values)).fill_null(True).to_numpy(
                zero_copy_only=False).all():
            raise ValueError("labels: annotators_field and annotations_field lists differ in length")
        rater_codes = pc.index_in(pc.list_flatten(rater_values), value_set=pa.array(raters, pa.string()))
        known &= rater_codes.is_valid().to_numpy(zero_copy_only=False)
    keep = known & ~skip
    offsets = np.concatenate([[0], np.cumsum(np.bincount(item[keep], minlength=table.num_rows))]).astype(np.int32)
    table = table.set_column(table.column_names.index(VALUES), VALUES, pa.ListArray.from_arrays(
        offsets, codes.filter(pa.array(keep)).cast(pa.int16())))
    if raters is not None:
        table = table.set_column(table.column_names.index(RATERS), RATERS, pa.ListArray.from_arrays(
            offsets, rater_codes.filter(pa.array(keep)).cast(pa.int32())))
    unknown = ~known & ~skip
    if unknown.any():
        bad = np.zeros(table.num_rows, bool)
        bad[item[unknown]] = True
        first = {}
        for row, value in zip(item[unknown][::-1], flat.filter(pa.array(unknown)).to_pylist()[::-1]):
            first[row] = value
        detail = [first.get(i) for i in range(table.num_rows)]
        for col, value in ((REJECT_STAGE, stage), (REJECT_REASON, "unknown_label")):
            table = table.set_column(table.column_names.index(col), col,
                                     pc.if_else(pa.array(bad), value, table[col].cast(pa.string())))
        table = table.set_column(table.column_names.index(REJECT_DETAIL), REJECT_DETAIL,
                                 pc.if_else(pa.array(bad), pa.array(detail, pa.string()),
                                            table[REJECT_DETAIL].cast(pa.string())))
    return table


def _annotations(table: pa.Table, live: np.ndarray | None = None) -> Annotations:
    """The block's annotations in long form (rows not ``live`` contribute none)."""
    values = table[VALUES].combine_chunks()
    item = pc.list_parent_indices(values).to_numpy()
    label = pc.list_flatten(values).to_numpy().astype(np.int64)
    rater = (pc.list_flatten(table[RATERS].combine_chunks()).to_numpy().astype(np.int64) if RATERS in table.column_names
             else np.zeros(len(item), np.int64))
    if live is not None:
        keep = live[item]
        item, label, rater = item[keep], label[keep], rater[keep]
    return Annotations(table.num_rows, item, label, rater)


def _live(table: pa.Table) -> np.ndarray:
    return pc.is_null(table[REJECT_STAGE]).to_numpy(zero_copy_only=False)


def _em_statistics(table: pa.Table, n_classes: int, n_raters: int, params) -> dict:
    return ds_em.block_statistics(_annotations(table, _live(table)), n_classes, n_raters, params)


def _assign(table: pa.Table, classes: list[str], n_raters: int, identified: bool, params, min_confidence: float,
            review_split: str, keep_prior_split: bool = False) -> tuple[pa.Table, dict]:
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
    stats["consensus_matches"] = np.bincount(a.rater[judged], weights=(a.label[judged] == consensus[judged]).astype(float),
                                             minlength=n_raters)
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


# -- long format: one key row per annotation, collapsed to one per item and expanded back -------------------------


def _long_keys(batch: pa.Table, item_field: str, label_field: str, annotator_field: str | None) -> dict:
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
        out[RATERS] = pa.array([[] if v is None else [a] for v, a in zip(labels, column(annotator_field).to_pylist())],
                               pa.list_(pa.string()))
    return out


def _collapse_item(group: pa.Table) -> pa.Table:
    """One key row for an item's rows: its first row (lowest key) with every row's annotations in key order and the
    other rows' keys (``MERGED``)."""
    group = group.take(pc.sort_indices(group[KEY]))
    first = group.slice(0, 1)
    values = pc.list_flatten(group[VALUES]).to_pylist()
    raters = pc.list_flatten(group[RATERS]).to_pylist() if RATERS in group.column_names else [None] * len(values)
    first = first.set_column(first.column_names.index(VALUES), VALUES, pa.array([values], pa.list_(pa.string())))
    if RATERS in group.column_names:
        first = first.set_column(first.column_names.index(RATERS), RATERS, pa.array([raters], pa.list_(pa.string())))
    return (first.append_column(MERGED, pa.array([group[KEY].to_pylist()[1:]], pa.list_(pa.int64())))
                 .append_column(ANNOTATIONS, pa.array([orjson.dumps(list(map(list, zip(raters, values)))).decode()])))


def _expand_items(table: pa.Table, stage: str, decision_columns: list[str]) -> pa.Table:
    """The decided items with ``label_annotations`` (the kept row's label and annotator fields null), followed by
    the key rows of the items' other rows, rejected as ``annotation_merged`` (detail: the kept record's id)."""
    merged = table[MERGED].combine_chunks()
    parents = pc.list_parent_indices(merged).to_numpy()
    kept_ids = table[ID].cast(pa.string()).take(pa.array(parents, pa.int64()))
    rows = {KEY: pc.list_flatten(merged), ID: pa.nulls(len(parents), pa.string()),
            REJECT_STAGE: pa.array([stage] * len(parents), pa.string()),
            REJECT_REASON: pa.array(["annotation_merged"] * len(parents), pa.string()), REJECT_DETAIL: kept_ids}
    table = table.drop_columns([c for c in (MERGED, ITEM) if c in table.column_names])
    for col in decision_columns:
        if col not in table.column_names:
            table = table.append_column(col, pa.nulls(table.num_rows, pa.string()))
    rejected = pa.table({f.name: rows[f.name].cast(f.type) if f.name in rows else pa.nulls(len(parents), f.type)
                         for f in table.schema})
    return pa.concat_tables([table, rejected])


# -- assist: proposals for the records without annotations ---------------------------------------------------------


def _consensus_codes(table: pa.Table, classes: list[str]) -> np.ndarray:
    """The class code of each consensus record (-1 for the others)."""
    codes = pc.fill_null(pc.index_in(table[LABEL], value_set=pa.array(classes, pa.string())), -1)
    consensus = pc.fill_null(pc.equal(table[STATUS], STATUSES[0]), False)
    return np.where(consensus.to_numpy(zero_copy_only=False), codes.to_numpy(zero_copy_only=False), -1)


def _scores(table: pa.Table, model, folds: int, seed: int) -> np.ndarray:
    """Class probabilities of each row from the fold model that did not train on it."""
    W, b, _ = model
    fold = noise.folds_and_draws(table[KEY].to_numpy(), folds, seed)[0]
    return noise.out_of_fold_probabilities(noise.feature_matrix(table[FEATURES]), fold, W, b)


def _tempered(p: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of probabilities: softmax(log p / T)."""
    z = np.log(np.clip(p, 1e-12, 1.0)) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _assist_sample(table: pa.Table, classes: list[str], fraction: float, folds: int, seed: int):
    y = _consensus_codes(table, classes)
    fold, draw = noise.folds_and_draws(table[KEY].to_numpy(), folds, seed)
    keep = (y >= 0) & (draw < fraction)
    return noise.feature_matrix(table[FEATURES])[keep], y[keep], fold[keep]


def _assist_calibration(table: pa.Table, model, classes: list[str], folds: int, seed: int) -> np.ndarray:
    """Over the block's consensus records: [records, out-of-fold correct, log loss at each of ``TEMPERATURES``]."""
    y = _consensus_codes(table, classes)
    known = y >= 0
    out = np.zeros(2 + len(TEMPERATURES))
    if not known.any():
        return out
    p, y = _scores(table.filter(pa.array(known)), model, folds, seed), y[known]
    out[0], out[1] = len(y), (p.argmax(1) == y).sum()
    for i, t in enumerate(TEMPERATURES):
        out[2 + i] = -np.log(np.clip(_tempered(p, t)[np.arange(len(y)), y], 1e-300, 1.0)).sum()
    return out


def _propose(table: pa.Table, model, temperature: float | None, classes: list[str], folds: int, seed: int,
             min_confidence: float, review_split: str) -> tuple[pa.Table, np.ndarray]:
    """Records without annotations get the proposed label and its calibrated confidence: ``proposed`` (their split
    kept) or ``proposal_low_confidence`` (review split); returns the block and [proposed, low confidence]."""
    todo = pc.fill_null(pc.equal(table[STATUS], STATUSES[3]), False).to_numpy(zero_copy_only=False)
    out = table.drop_columns([FEATURES, PRIOR_SPLIT])
    if model is None or not todo.any():
        return out, np.zeros(2, np.int64)
    p = _tempered(_scores(table.filter(pa.array(todo)), model, folds, seed), temperature)
    rows = np.flatnonzero(todo)
    label = np.asarray(table[LABEL].to_pylist(), dtype=object)
    confidence = table[CONFIDENCE].to_numpy(zero_copy_only=False).astype(float)
    status = np.asarray(table[STATUS].to_pylist(), dtype=object)
    split = np.asarray(table[SPLIT].to_pylist(), dtype=object)
    sure = p.max(1) >= min_confidence
    label[rows] = np.asarray(classes, dtype=object)[p.argmax(1)]
    confidence[rows] = p.max(1)
    status[rows] = np.where(sure, STATUSES[4], STATUSES[5])
    split[rows] = np.where(sure, np.asarray(table[PRIOR_SPLIT].to_pylist(), dtype=object)[rows], review_split)
    for name, values, kind in ((LABEL, label, pa.string()), (CONFIDENCE, confidence, pa.float64()),
                               (STATUS, status, pa.string()), (SPLIT, split, pa.string())):
        out = out.set_column(out.column_names.index(name), name, pa.array(values, kind, from_pandas=True))
    return out, np.array([sure.sum(), (~sure).sum()], np.int64)
