"""The stage contract.

A stage is one file in ``curate/stages/`` holding a config model and a class:

* ``MapStage``: a function over a pandas batch of the records still alive. It returns the same rows
  (same index) with columns changed or added; rows to drop get a reason with :func:`reject`. Map stages run
  fused into the tasks that read (or apply decisions to) the records; ``setup()`` runs once per worker process.
  Stages whose model should live on a fixed pool of replicas (``stateful = True``: large or GPU models) run on
  an actor pool instead.
* ``GlobalStage``: a decision that needs every record (dedup, group-aware split). It never sees the records:
  ``keys`` turns a batch of live records into compact key columns (hashes, band keys, signatures, group
  values) on the map side, where the records are; ``decide`` transforms the key rows (``KEY``, ``id``, the
  rejection columns, each global stage's key columns and earlier global stages' decisions) into the same rows
  with this stage's decisions: the rejection columns set for the rows it removes, and ``decision_columns``
  (e.g. ``dup_cluster``, ``_split``). It moves the key rows only through the methods of
  ``thresher.curate.execution.rows.KeyRows``, held on Ray or in one process; it never imports Ray. The runner routes the decisions back to the staged
  records (``thresher.curate.runner``).

* ``GeneratorStage``: a map stage that may add records (augmentation, rebalancing copies). ``process`` returns
  the rows it received, then the new ones, each with the internal key :meth:`GeneratorStage.new_keys` gives it.

Generated keys. A read row's key is ``read task << 32 | position`` with position < 2**31. A generated row keeps its
source's read task (so the apply groups route it with its source) and has bit 31 of the position set; the rest is
``root << code_bits | code``: ``root`` is the position of the read row at the start of its provenance chain and
``code`` a mixed-radix number with one digit per generator stage of the pipeline (0: not a copy made by that stage,
``1..max_copies``: the copy's index there). A generated row's key is therefore a function of its source's key and
copy index alone (the same on every run and any batching), unique, and sorts after the read rows of its task. The
runner sizes the code (:class:`KeySpace`); a read task with too many rows for the remaining bits fails the run.

Reference keys. The key rows a dedup stage reads from a reference run's index (``against``) join its key rows with
negative keys, ``-1 - (reference << 52 | part << 32 | row)`` (:func:`reference_keys`): the reference's position in
``against``, the index part and the row in it; they never reach the records.

Stages never start or configure a cluster, nor import Ray: the execution layer (``thresher.curate.execution``) runs
them.

What a stage contributes beyond its records is declared on its class, and the shared modules render it without naming
any stage: ``report_sections`` (the report sections that detail it: a section reads the stages that declare it, never
a stage's name), ``gates`` (the run gates that count it, e.g. ``max_duplicate_rate``), :meth:`Stage.card` (what the
dataset card says of it: :class:`StageCard`), :meth:`Stage.splits` and :meth:`Stage.label_fields`.

Beside its records a batch carries side columns, one channel of kinds (:data:`SIDE_KINDS`) named by
:func:`side_column` and read back by :func:`side_of`, never written or staged: a stage's ``metric`` (numbers per row,
summed into the manifest's ``metrics.<stage>``: :meth:`Stage.add_metric`), its ``summary`` of a batch for a report
section it declares (JSON on one row, null on the others: :meth:`Stage.add_summary`; the writer merges the summaries
into the part's report statistics with that section's ``merge``), the ``seconds`` a task spent in a stage or reading
(on a batch's first row, summed into the manifest's ``timing``), and the rows a map stage ``seen`` live and those it
``generated`` (counted once).
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from thresher.core.config import StrictModel
from thresher.core.storage import Storage

REJECT_STAGE = "_reject_stage"
REJECT_REASON = "_reject_reason"
REJECT_DETAIL = "_reject_detail"
SPLIT = "_split"
ID = "id"  # the readers' id column (the user's id, kept unchanged; not necessarily unique)
KEY = "_key"  # internal unique key of a record: read task index << 32 | position in the read task (never written)
REPORT_PREFIX = "_report."  # columns the report sections read and that are never written (e.g. an excerpt of a source)
SideKind = Literal["metric", "summary", "seconds", "seen", "generated"]
SIDE_KINDS: dict[SideKind, str] = {  # kind -> the prefix of its columns
    "metric": "_metric.",  # metric.<stage>.<name>: a number per row, summed
    "summary": "_summary.",  # summary.<section>: a stage's summary of a batch (JSON) on one row
    "seconds": "_seconds.",  # seconds.<stage>: seconds a task spent in the stage, on a batch's first row
    "seen": "_seen.",  # seen.<stage>: 1 where the row was live when it entered the map stage
    "generated": "_generated.",  # generated.<stage>: 1 on the rows the stage generated
}
SIDE_PREFIXES = tuple(SIDE_KINDS.values())


def side_column(kind: SideKind, name: str) -> str:
    """The side column of ``kind`` named ``name`` (module docstring)."""
    return SIDE_KINDS[kind] + name


def side_of(column: str) -> tuple[SideKind, str] | None:
    """``(kind, name)`` of a side column, None for any other column."""
    if column.startswith(SIDE_PREFIXES):
        for kind, prefix in SIDE_KINDS.items():
            if column.startswith(prefix):
                return kind, column[len(prefix) :]
    return None


INTERNAL_COLUMNS = (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL, SPLIT)
TASK_SHIFT = 32
GENERATED_BIT = 1 << 31
POSITION_BITS = 31


def task_of(keys) -> np.ndarray:
    """The read task index of internal keys."""
    return np.asarray(keys, dtype=np.int64) >> TASK_SHIFT


REFERENCE_SHIFT = 52


def reference_keys(reference: int, stored) -> np.ndarray:
    """Internal keys of a reference's index rows (module docstring); ``stored``: ``part << 32 | row``."""
    return -1 - ((np.int64(reference) << REFERENCE_SHIFT) | np.asarray(stored, dtype=np.int64))


def reference_of(keys) -> np.ndarray:
    """The reference (position in ``against``) of reference keys."""
    return (-1 - np.asarray(keys, dtype=np.int64)) >> REFERENCE_SHIFT


REGISTRY: dict[str, type[Stage]] = {}


def load_stages() -> None:
    """Import every module in ``thresher/curate/stages`` so that each stage registers itself."""
    import thresher.curate.stages as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{mod.name}")


def stage_class(run_name: str) -> type[Stage] | None:
    """The registered class of a stage by its name in a run (a map stage used again is ``<name>-2``, ...)."""
    return REGISTRY.get(run_name) or REGISTRY.get(run_name.rsplit("-", 1)[0])


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


@dataclass(frozen=True)
class CardSection:
    """A section of the dataset card: ``## title``, a paragraph of Markdown and an optional table (``header``, one
    list of cells per row); the card's sections come in ``order``."""

    title: str
    text: str
    header: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    order: int = 100


@dataclass(frozen=True)
class StageCard:
    """What the dataset card says of one stage of a run (:meth:`Stage.card`)."""

    languages: tuple[str, ...] = ()  # the languages of the kept records (front matter ``language``)
    # the Hub's task categories, task ids and tags of the output (front matter); None: a language-modeling corpus
    tasks: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None = None
    options: dict[str, Any] | None = None  # shown in the processing table; None: the options not at their defaults
    hidden_options: tuple[str, ...] = ()  # options left out of the processing table (shown in a section instead)
    options_note: str = ""  # after the options in the processing table, e.g. " (thresholds below)"
    sections: tuple[CardSection, ...] = ()


class Stage:
    """Common base: registration by ``name``, the config model, resource declaration and what the stage contributes
    to the report, the gates and the card (module docstring)."""

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig
    num_cpus: ClassVar[float] = 1.0
    num_gpus: ClassVar[float] = 0.0
    report_sections: ClassVar[tuple[str, ...]] = ()  # names of the report sections that detail this stage
    gates: ClassVar[tuple[str, ...]] = ()  # the run gates (``GatesConfig`` keys) that count this stage

    @classmethod
    def card(cls, options: dict[str, Any], config: dict[str, Any]) -> StageCard:
        """What the dataset card says of this stage, from its options and the run's config (both as in the
        manifest's ``config``)."""
        return StageCard()

    @classmethod
    def splits(cls, options: dict[str, Any]) -> list[str]:
        """The splits this stage makes, in order (how the report and the card list them), from its options."""
        return []

    @classmethod
    def label_fields(cls, options: dict[str, Any]) -> list[str]:
        """The fields this stage treats as class labels (the report's label balance), from its options; for a stage
        that makes splits, the field they are stratified by."""
        return []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            REGISTRY[cls.name] = cls

    def __init__(self, config: StageConfig, ctx: StageContext):
        self.config = config
        self.ctx = ctx

    def add_metric(self, batch: pd.DataFrame, name: str, values: Any) -> None:
        """Per-row numbers (``values``: integers, or one for every row) summed into the manifest's
        ``metrics.<stage>.<name>``; never written with the records."""
        batch[side_column("metric", f"{self.name}.{name}")] = values

    def add_summary(self, batch: pd.DataFrame, summary: str) -> None:
        """This stage's summary of ``batch`` (JSON) for the first report section it declares, merged there with
        the section's ``merge``; never written with the records."""
        batch[side_column("summary", self.report_sections[0])] = [summary] + [None] * (len(batch) - 1)

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
        """Load models or other state; called once per worker process (or actor) before the first batch."""

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError


@dataclass(frozen=True)
class KeySpace:
    """The generated-key layout of a pipeline (module docstring): one digit per generator stage."""

    radices: tuple[int, ...] = ()  # max_copies + 1 per generator stage, in pipeline order

    @property
    def code_bits(self) -> int:
        return max(1, int(np.prod(self.radices, dtype=np.int64)) - 1).bit_length() if self.radices else 0

    def weight(self, ordinal: int) -> int:
        return int(np.prod(self.radices[:ordinal], dtype=np.int64))


class GeneratorStage(MapStage):
    """A map stage that returns its input rows followed by new rows (keys from :meth:`new_keys`)."""

    def max_copies(self) -> int:
        """The most rows this stage generates from one source row."""
        raise NotImplementedError

    def bind_keys(self, space: KeySpace, ordinal: int) -> None:
        """Called by the runner: this stage is generator number ``ordinal`` of ``space``."""
        self._keys = (space, ordinal)

    def new_keys(self, source_keys, copies) -> np.ndarray:
        """Keys of the copies number ``copies`` (0-based, < ``max_copies``; one, or one per row) of the rows with
        ``source_keys``."""
        space, ordinal = getattr(self, "_keys", None) or (KeySpace((self.max_copies() + 1,)), 0)
        copies = np.asarray(copies, dtype=np.int64)
        if ((copies < 0) | (copies >= space.radices[ordinal] - 1)).any():
            raise RuntimeError(f"stage {self.name}: a copy index beyond its max_copies {space.radices[ordinal] - 1}")
        keys = np.asarray(source_keys, dtype=np.int64)
        bits, weight = space.code_bits, space.weight(ordinal)
        position = keys & ((1 << TASK_SHIFT) - 1)
        generated = (position & GENERATED_BIT) != 0
        slot = position & (GENERATED_BIT - 1)
        root = np.where(generated, slot >> bits, slot)
        code = np.where(generated, slot & ((1 << bits) - 1), 0)
        if (code // weight % space.radices[ordinal]).any():
            raise RuntimeError(f"stage {self.name}: a row this stage generated cannot be its source again")
        if len(root) and int(root.max()) >= 1 << (POSITION_BITS - bits):
            raise RuntimeError(
                f"stage {self.name}: a read task holds more than {1 << (POSITION_BITS - bits):,} "
                "records, too many to number their generated copies; lower input.block_bytes or split "
                "the input files"
            )
        return (keys >> TASK_SHIFT << TASK_SHIFT) | GENERATED_BIT | (root << bits) | (code + (copies + 1) * weight)


class GlobalStage(Stage):
    # set by the runner before ``decide``: the staged key files (``thresher.curate.execution.rows.StagedKeys``)
    staged_keys = None
    # True: ``decide`` also decides on ``LocalRows`` (the runner then runs the segment's stages in one task when
    # its key rows are few enough)
    decides_locally = False

    def keys(self, batch: pa.Table) -> dict[str, pa.Array | pa.ChunkedArray]:
        """Map side: this stage's key columns for a batch of live records (same rows, same order)."""
        return {}

    def staged_columns(self) -> list[str]:
        """Key columns written to the staged key files but left out of the key rows ``decide`` receives (heavy
        values it needs for a few rows only: it reads them from ``staged_keys``)."""
        return []

    def decide(self, keys):
        """The key rows (``thresher.curate.execution.rows.KeyRows``, on Ray or in one process) with this stage's
        decisions (rejection columns, ``decision_columns``), through the methods of ``KeyRows`` only."""
        raise NotImplementedError

    def decision_columns(self) -> list[str]:
        """Columns ``decide`` adds that the records receive."""
        return list(self.added_columns())

    def decision_types(self) -> dict[str, pa.DataType]:
        """Types of the decision columns that are not strings (the others are routed as strings)."""
        return {}

    def expander(self) -> GeneratorStage | None:
        """A generator run on the records right after the decisions are applied (e.g. rebalance's copies), under
        this stage's name; None when there is none."""
        return None


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


COUNTED_ONCE = ("seen", "generated", "metric")  # side kinds a generator's copies must not count again


def run_map_stage(stage: MapStage, batch: pd.DataFrame) -> pd.DataFrame:
    """Apply ``stage`` to the live rows of ``batch``; rejected rows pass through, row order is kept. A
    ``GeneratorStage``'s new rows follow (marked ``_generated.<stage>``). The seconds it took go on the first row
    of ``_seconds.<stage>``."""
    started = time.perf_counter()
    out = _run_map_stage(stage, batch)
    seconds = np.zeros(len(out))
    if len(out):
        seconds[0] = time.perf_counter() - started
    out[side_column("seconds", stage.name)] = seconds
    return out


def _run_map_stage(stage: MapStage, batch: pd.DataFrame) -> pd.DataFrame:
    alive = active(batch)
    seen = side_column("seen", stage.name)
    if not alive.any():
        return batch.assign(**{seen: np.zeros(len(batch), np.int8)})
    sub = batch if alive.all() else batch[alive]
    out = stage.process(sub.copy())
    if len(out) != len(sub) and not (isinstance(stage, GeneratorStage) and len(out) > len(sub)):
        raise RuntimeError(f"stage {stage.name} returned {len(out)} rows for {len(sub)}: stages must not drop rows")
    new = out.iloc[len(sub) :]
    out = out.iloc[: len(sub)]
    out.index = sub.index
    newly = out[REJECT_REASON].notna() & out[REJECT_STAGE].isna()
    if newly.any():
        out[REJECT_STAGE] = _nullable_object(out[REJECT_STAGE])
        out.loc[newly, REJECT_STAGE] = stage.name
    if sub is not batch:
        out = _merge_rows(batch, out, np.flatnonzero(alive.to_numpy()))
    out[seen] = alive.to_numpy().astype(np.int8)
    if isinstance(stage, GeneratorStage):
        out[side_column("generated", stage.name)] = np.zeros(len(out), np.int8)
        if len(new):
            own = side_column("metric", stage.name + ".")
            sides = {c: side_of(c) for c in new.columns}
            copied = [  # counted where their rows were: not again on the copies
                c for c, side in sides.items() if side and side[0] in COUNTED_ONCE and not c.startswith(own)
            ]
            summaries = [
                c for c, side in sides.items() if side and side[0] == "summary" and side[1] not in stage.report_sections
            ]
            new = new.assign(
                **{c: np.zeros(len(new), np.int64) for c in copied},
                **{c: np.zeros(len(new)) for c, side in sides.items() if side and side[0] == "seconds"},
                **{c: None for c in summaries},
            )
            new = new.assign(
                **{
                    REJECT_STAGE: np.where(new[REJECT_REASON].notna(), stage.name, None),
                    seen: np.zeros(len(new), np.int8),
                    side_column("generated", stage.name): np.ones(len(new), np.int8),
                }
            )
            out = pd.concat([out, new.set_axis(range(len(out), len(out) + len(new)))], ignore_index=True)
            for col in out.columns:  # concat filled gaps with NaN: None, as Arrow reads text columns
                if out[col].dtype == object:
                    out[col] = _nullable_object(out[col])
            metrics = [c for c in out.columns if (side := side_of(c)) and side[0] != "summary"]
            out[metrics] = out[metrics].fillna(0)
    return out


def _merge_rows(batch: pd.DataFrame, out: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """``batch`` with the rows at positions ``rows`` replaced by ``out`` (columns out lacks become null there)."""
    merged = {}
    for col in list(batch.columns) + [c for c in out.columns if c not in batch.columns]:
        if col in out.columns and isinstance(out[col].dtype, pd.ArrowDtype):
            merged[col] = _merge_arrow(batch.get(col), out[col], rows, len(batch))
            continue
        if col in batch.columns:
            values = batch[col].to_numpy(dtype=object, na_value=None).copy()
        else:
            values = np.full(len(batch), None, dtype=object)
        values[rows] = out[col].to_numpy(dtype=object, na_value=None) if col in out.columns else None
        merged[col] = values
    return pd.DataFrame(merged, index=batch.index)


def _merge_arrow(before: pd.Series | None, after: pd.Series, rows: np.ndarray, n: int) -> pd.arrays.ArrowExtensionArray:
    """An Arrow-backed column (a vector column: fixed-size lists) merged in Arrow, so that it stays one Arrow type
    rather than becoming Python objects: ``after`` at ``rows``, ``before`` (or null) elsewhere."""
    values = pa.chunked_array(pa.array(after.array)).combine_chunks()
    base = (
        pa.chunked_array(pa.array(before.array)).combine_chunks()
        if before is not None and before.dtype == after.dtype
        else pa.nulls(n, values.type)
    )
    take = np.arange(n)
    take[rows] = n + np.arange(len(rows))
    return pd.arrays.ArrowExtensionArray(pa.concat_arrays([base, values]).take(pa.array(take)))
