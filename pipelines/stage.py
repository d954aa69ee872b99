"""The stage contract.

A stage is one file in ``pipelines/stages/`` holding a config model and a class:

* ``MapStage``: a function over a pandas batch of the records still alive. It returns the same rows
  (same index) with columns changed or added; rows to drop get a reason with :func:`reject`. Stages
  that load a model once (``stateful = True``) run on an actor pool; the others as tasks.
* ``GlobalStage``: a decision that needs every record (dedup, group-aware split). It never sees the records:
  ``keys`` turns a batch of live records into compact key columns (hashes, band keys, signatures, group
  values) on the map side, where the records are; ``decide`` transforms the Ray Data ``Dataset`` of key rows
  (``KEY``, ``id``, the rejection columns, each global stage's key columns and earlier global stages'
  decisions) into the same rows with this stage's decisions: the rejection columns set for the rows it
  removes, and ``decision_columns`` (e.g. ``dup_cluster``, ``_split``). The runner routes the decisions back
  to the staged records (``pipelines.runner``).

Stages never start or configure a cluster: only the runner knows Ray.
Numeric columns named ``_metric.<name>`` are summed into the manifest's ``metrics.<stage>`` and are not
written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd

from cluster.config import StrictModel
from cluster.storage import Storage

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

REJECT_STAGE = "_reject_stage"
REJECT_REASON = "_reject_reason"
REJECT_DETAIL = "_reject_detail"
SPLIT = "_split"
ID = "id"  # the readers' id column (the user's id, kept unchanged; not necessarily unique)
KEY = "_key"  # internal unique key of a record: read task index << 32 | position in the read task (never written)
SEEN_PREFIX = "_seen."  # _seen.<stage>: 1 where the row was live when it entered the map stage (counted, never written)
METRIC_PREFIX = "_metric."
INTERNAL_COLUMNS = (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL, SPLIT)
TASK_SHIFT = 32


def task_of(keys) -> "np.ndarray":
    """The read task index of internal keys."""
    return np.asarray(keys, dtype=np.int64) >> TASK_SHIFT

REGISTRY: dict[str, type["Stage"]] = {}


class StageConfig(StrictModel):
    """Base for stage options; unknown keys are config errors."""


@dataclass(frozen=True)
class StageContext:
    """What a stage knows about the run: field names, storage, its position in the pipeline."""

    text_field: str = "text"
    id_field: str = "id"
    storage: Storage = Storage()
    previous_stages: tuple[str, ...] = ()
    broadcast_limit_rows: int = 2_000_000  # execution.broadcast_limit_rows: 0 forces the partitioned paths


class Stage:
    """Common base: registration by ``name``, the config model and resource declaration."""

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig
    num_cpus: ClassVar[float] = 1.0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            REGISTRY[cls.name] = cls

    def __init__(self, config: StageConfig, ctx: StageContext):
        self.config = config
        self.ctx = ctx

    @property
    def text(self) -> str:
        return self.ctx.text_field

    def added_columns(self) -> dict[str, str]:
        """Columns this stage adds to kept records, name -> description (for the dataset card)."""
        return {}

    def fingerprint(self) -> str | None:
        """What the stage's output depends on besides its config (e.g. a secret from the environment), as an
        opaque digest: a run resumes only into output made with the same fingerprints."""
        return None

    def sort_destinations(self) -> dict[str, str]:
        """Destinations (``data``, ``data/<split>``) whose final files hold their rows ordered by a column of this
        stage (ascending, nulls last, ties by internal key) rather than by key alone."""
        return {}

    def after_publish(self, run_uri: str, files: list[str]) -> None:
        """Called on the driver once the final files (``files``) are written, before the run is committed (e.g. to
        export some of them); an exception fails the run."""


class MapStage(Stage):
    stateful: ClassVar[bool] = False
    batch_size: ClassVar[int | None] = None  # rows per batch; None: execution.batch_size

    def setup(self) -> None:
        """Load models or other state; called once per worker before the first batch."""

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError


class GlobalStage(Stage):
    def keys(self, batch: "pa.Table") -> dict[str, "pa.Array | pa.ChunkedArray"]:
        """Map side: this stage's key columns for a batch of live records (same rows, same order)."""
        return {}

    def decide(self, keys: "ray.data.Dataset") -> "ray.data.Dataset":
        """The key rows with this stage's decisions (rejection columns, ``decision_columns``)."""
        raise NotImplementedError

    def decision_columns(self) -> list[str]:
        """Columns ``decide`` adds that the records receive."""
        return list(self.added_columns())

    def decision_types(self) -> dict[str, "pa.DataType"]:
        """Types of the decision columns that are not strings (the others are routed as strings)."""
        return {}


def reject(batch: pd.DataFrame, mask, reason: str | pd.Series, detail: str | pd.Series | None = None) -> None:
    """Mark rows where ``mask`` holds as rejected with ``reason`` (and an optional detail), in place.

    A row already rejected in this batch keeps its first reason.
    """
    mask = pd.Series(mask, index=batch.index).fillna(False).astype(bool) & batch[REJECT_REASON].isna()
    if not mask.any():
        return
    for col in (REJECT_REASON, REJECT_DETAIL):
        batch[col] = _nullable_object(batch[col])
    batch.loc[mask, REJECT_REASON] = reason[mask] if isinstance(reason, pd.Series) else reason
    if detail is not None:
        batch.loc[mask, REJECT_DETAIL] = detail[mask].astype(str) if isinstance(detail, pd.Series) else detail


def _nullable_object(col: pd.Series) -> pd.Series:
    """An object column with None for missing values (pandas' str dtype has NaN, which Arrow reads as a float)."""
    return col.astype(object).where(col.notna(), None)


def active(batch: pd.DataFrame) -> pd.Series:
    """Rows not rejected by any earlier stage."""
    return batch[REJECT_STAGE].isna()


def run_map_stage(stage: MapStage, batch: pd.DataFrame) -> pd.DataFrame:
    """Apply ``stage`` to the live rows of ``batch``; rejected rows pass through, row order is kept."""
    alive = active(batch)
    seen = SEEN_PREFIX + stage.name
    if not alive.any():
        return batch.assign(**{seen: np.zeros(len(batch), np.int8)})
    sub = batch if alive.all() else batch[alive]
    out = stage.process(sub.copy())
    if len(out) != len(sub):
        raise RuntimeError(f"stage {stage.name} returned {len(out)} rows for {len(sub)}: stages must not drop rows")
    out.index = sub.index
    newly = out[REJECT_REASON].notna() & out[REJECT_STAGE].isna()
    if newly.any():
        out[REJECT_STAGE] = _nullable_object(out[REJECT_STAGE])
        out.loc[newly, REJECT_STAGE] = stage.name
    if sub is not batch:
        out = _merge_rows(batch, out, np.flatnonzero(alive.to_numpy()))
    out[seen] = alive.to_numpy().astype(np.int8)
    return out


def _merge_rows(batch: pd.DataFrame, out: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """``batch`` with the rows at positions ``rows`` replaced by ``out`` (columns out lacks become null there)."""
    merged = {}
    for col in list(batch.columns) + [c for c in out.columns if c not in batch.columns]:
        if col in batch.columns:
            values = batch[col].to_numpy(dtype=object, na_value=None).copy()
        else:
            values = np.full(len(batch), None, dtype=object)
        values[rows] = out[col].to_numpy(dtype=object, na_value=None) if col in out.columns else None
        merged[col] = values
    return pd.DataFrame(merged, index=batch.index)
