"""``labels``: agreement between annotators and one consensus label per item; uncertain items go to review.

Annotations come from a list column (``annotations_field``, e.g. SNLI's ``annotator_labels``; with
``annotators_field``, a parallel list of annotator ids) or from several columns, one per annotator
(``annotation_fields``; the column names identify the annotators), or from long format, one row per annotation
(``item_field``, ``label_field``, optional ``annotator_field``): the key rows are grouped by item
(``KeyRows.map_groups``) into one per item, the item's first row (lowest key) is the record kept, with ``label_annotations`` (JSON
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
* consensus (:mod:`thresher.curate.labels.consensus`): ``majority`` (confidence: the top class's share of the votes)
  or ``dawid_skene`` (:mod:`thresher.curate.labels.dawid_skene`; confidence: the posterior of the chosen class);
* each record gets ``label`` (null on a tie or without annotations), ``label_confidence``, ``label_agreement``
  (share of agreeing annotation pairs) and ``label_status``: ``consensus``, ``tie``, ``low_confidence`` (below
  ``min_confidence``) or ``no_annotations``. Every status but ``consensus`` goes to the ``review_split``
  (``data/review/``); the others keep the split an earlier ``split`` stage gave them (a ``split`` after ``labels``
  would reassign every record, review included, so put ``labels`` after ``split``).

``assist`` proposes labels for the records without annotations (:mod:`thresher.curate.labels.assist`):
``label_status`` ``proposed`` (split kept) or ``proposal_low_confidence`` (review split), ``label_confidence`` the
calibrated probability.

The summary lands in the manifest's ``metrics.labels`` and the report's ``labels`` section;
``python -m thresher.curate.labels.export RUN`` writes the review queue for annotation tools (``export_review: true``: the
run writes it to ``<output>/review_queue/`` before it is committed).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from thresher.core.storage import join
from thresher.curate.labels import (
    agreement,
    assist,
    consensus,
    is_number,
    key_rows,
    long_format,
    noise,
    ordered_classes,
)
from thresher.curate.labels import dawid_skene as ds_em
from thresher.curate.labels.assist import FEATURES, TEMPERATURES
from thresher.curate.labels.consensus import ACCEPTED, AGREEMENT, CONFIDENCE, LABEL, STATUS, STATUSES
from thresher.curate.labels.export import write_review_queue
from thresher.curate.labels.key_rows import RATERS, VALUES
from thresher.curate.labels.long_format import ANNOTATIONS, ITEM
from thresher.curate.run_folder import DATA, REVIEW
from thresher.curate.stage import SPLIT, GlobalStage, StageConfig


class AssistConfig(StageConfig):
    text_fields: list[str] | None = Field(None, description="fields the features are computed from (default: the text)")
    dims: int = Field(512, ge=8, le=4096, description="hashed feature dimensions (floats per key row)")
    folds: int = Field(
        5, ge=2, description=("cross-validation folds: each record is scored by a model that did not train on it")
    )
    regularization: float = Field(10.0, gt=0, description="inverse L2 strength of the logistic regressions")
    max_train_rows: int = Field(200_000, ge=10, description="consensus rows sampled (by key hash) for training")
    min_confidence: float = Field(0.8, ge=0, le=1, description="proposals below go to review")
    seed: int = Field(0, ge=0, description="seed of the training sample and folds")


class LabelsConfig(StageConfig):
    annotations_field: str | None = Field(None, description="list column of labels, one per annotation")
    annotators_field: str | None = Field(
        None, description=("list column of annotator ids, parallel to annotations_field")
    )
    annotation_fields: list[str] = Field(default_factory=list, description="one column per annotator")
    item_field: str | None = Field(None, description="long format: one row per annotation, grouped by this field")
    label_field: str = Field("label", description="long format: the annotation's label")
    annotator_field: str | None = Field(None, description="long format: the annotator's id")
    classes: list[str] | None = Field(None, description="the label set, in order (default: every label seen)")
    missing: list[str] = Field(default_factory=lambda: ["", "-"], description="values that are not annotations")
    consensus: Literal["majority", "dawid_skene"] = Field("majority", description="how the consensus label is chosen")
    min_confidence: float = Field(0.6, ge=0, le=1, description="items below go to review")
    review_split: str = Field(
        "review",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description=("the split of every record whose status is not consensus"),
    )
    max_iter: int = Field(200, ge=1, description="Dawid-Skene EM iterations at most")
    tol: float = Field(1e-7, gt=0, description="Dawid-Skene: stop when the log-likelihood improves less (relative)")
    assist: AssistConfig | None = Field(None, description="propose labels for records without annotations")
    export_review: bool = Field(
        False,
        description="write the review queue to <output>/review_queue/ (JSONL, CSV, "
        "Label Studio) before the run is committed",
    )

    @model_validator(mode="after")
    def _one_input(self):
        if bool(self.annotations_field) + bool(self.annotation_fields) + bool(self.item_field) != 1:
            raise ValueError(
                "give annotations_field (a list column), annotation_fields (one column per annotator) "
                "or item_field (long format: one row per annotation)"
            )
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
    report_sections = ("labels",)

    def _consensus_columns(self) -> dict[str, str]:
        return {
            LABEL: "consensus label (null: tie or no annotations)",
            CONFIDENCE: f"confidence of the {self.config.consensus} consensus",
            AGREEMENT: "share of agreeing annotation pairs of the item",
            STATUS: "consensus | tie | low_confidence | no_annotations | proposed | proposal_low_confidence "
            "(all but consensus and proposed: review split)",
        }

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
            write_review_queue([f for f in files if f.startswith(prefix)], self.ctx.storage, join(run_uri, REVIEW))

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
            return long_format.long_keys(batch, c.item_field, c.label_field, c.annotator_field)
        if c.annotations_field:
            out = {VALUES: key_rows.string_lists(batch, c.annotations_field)}
            if c.annotators_field:
                out[RATERS] = key_rows.string_lists(batch, c.annotators_field)
            return out
        columns = [
            batch[f].cast(pa.string()).to_pylist() if f in batch.column_names else [None] * batch.num_rows
            for f in c.annotation_fields
        ]
        values, raters = [], []
        for row in zip(*columns):
            values.append([v for v in row if v is not None])
            raters.append([f for f, v in zip(c.annotation_fields, row) if v is not None])
        return {VALUES: pa.array(values, pa.list_(pa.string())), RATERS: pa.array(raters, pa.list_(pa.string()))}

    # -- decisions -----------------------------------------------------------------------------------------

    def decide(self, ds):
        c = self.config
        tasks = ds.tasks()
        if c.item_field:
            ds = ds.map_groups(ITEM, long_format.collapse_item)
        refs = ds.blocks()
        found = tasks.get([tasks.run(key_rows.vocabulary, ref, c.missing) for ref in refs])
        classes = c.classes or ordered_classes(set().union(*(f[0] for f in found)))
        raters = sorted(set().union(*(f[1] for f in found))) if c.identified else None
        refs = [tasks.run(key_rows.encode, ref, classes, raters, c.missing, self.name) for ref in refs]
        n_classes, n_raters = len(classes), len(raters) if raters else 1
        params, fit = None, None
        if c.consensus == "dawid_skene":

            def statistics(p):
                parts = tasks.get([tasks.run(consensus.em_statistics, ref, n_classes, n_raters, p) for ref in refs])
                return {k: sum(part[k] for part in parts) for k in parts[0]}

            params, fit = ds_em.fit(statistics, c.max_iter, c.tol)
        decided = [
            tasks.run(
                consensus.assign,
                ref,
                classes,
                n_raters,
                c.identified,
                params,
                c.min_confidence,
                c.review_split,
                c.assist is not None,
                returns=2,
            )
            for ref in refs
        ]
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
            tables = [tasks.run(long_format.expand_items, t, self.name, self.decision_columns()) for t in tables]
        return tasks.rows(tables)

    def _assist(self, tasks, tables: list, classes: list[str], counts: dict) -> tuple[list, dict]:
        """Proposals for the records without annotations (:mod:`thresher.curate.labels.assist`) from logistic
        regressions on hashed text features, trained on a sample of the consensus records: each record is scored by the
        fold model that did not train on it, so the consensus records' scores are out of fold; a temperature fitted
        on them (least log loss over ``TEMPERATURES``) calibrates the proposals' confidence. Updates ``counts``."""
        a, C = self.config.assist, len(classes)
        labelled = int(counts["status"][0])
        if C < 2 or labelled < a.folds:
            model, temperature, calib = None, None, np.zeros(2 + len(TEMPERATURES))
        else:
            fraction = min(1.0, a.max_train_rows / labelled)
            model = tasks.run(
                noise.fit_samples,
                a.folds,
                C,
                a.regularization,
                *[tasks.run(assist.training_sample, t, classes, fraction, a.folds, a.seed) for t in tables],
            )
            calib = np.sum(
                tasks.get([tasks.run(assist.calibration, t, model, classes, a.folds, a.seed) for t in tables]), axis=0
            )
            temperature = float(TEMPERATURES[np.argmin(calib[2:])])
        out = [
            tasks.run(
                assist.propose,
                t,
                model,
                temperature,
                classes,
                a.folds,
                a.seed,
                a.min_confidence,
                self.config.review_split,
                returns=2,
            )
            for t in tables
        ]
        moved = np.sum(tasks.get([m for _, m in out]), axis=0)
        counts["status"] = counts["status"] + np.array([0, 0, 0, -moved.sum(), moved[0], moved[1]])
        metrics = {
            "min_confidence": a.min_confidence,
            "proposed": int(moved[0]),
            "proposal_low_confidence": int(moved[1]),
            "temperature": temperature,
            "train_rows": labelled if model is None else int(tasks.get(model)[2]),
            "out_of_fold_accuracy": round(calib[1] / calib[0], 6) if calib[0] else None,
        }
        if model is None:
            metrics["skipped"] = "fewer than two classes or fewer consensus records than folds"
        return [t for t, _ in out], metrics

    def _summary(self, counts: dict, classes: list[str], raters: list[str] | None, params, fit) -> dict:
        c = self.config
        numeric = all(is_number(x) for x in classes)
        out = agreement.summarize(counts, classes, raters, numeric)
        matches, annotations = counts["consensus_matches"], counts["consensus_annotations"]
        out["consensus"] = {
            "method": c.consensus,
            "min_confidence": c.min_confidence,
            "review_split": c.review_split,
            "review_queue": int(counts["status"].sum() - counts["status"][list(ACCEPTED)].sum()),
            "status": dict(zip(STATUSES, counts["status"].tolist())),
            "labels": dict(zip(classes, counts["labels"].tolist())),
            "annotations_matching_consensus": agreement.rounded(matches.sum() / annotations.sum())
            if annotations.sum()
            else None,
        }
        if raters is not None:
            out["consensus"]["annotator_match_rate"] = {
                name: agreement.rounded(m / n) if n else None for name, m, n in zip(raters, matches, annotations)
            }
        if params is not None:
            out["dawid_skene"] = {
                **fit,
                "prior": dict(zip(classes, np.round(params.prior, 6).tolist())),
                "annotators": ds_em.reliability(params, raters or ["(all annotators)"], classes),
            }
        return out
