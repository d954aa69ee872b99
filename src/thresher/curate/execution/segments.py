"""The map phase on Ray: a segment's source (one task per read task or apply group) through its map stages into its
sink: one plain Ray task per source row when no stage is stateful, else a Ray Data pipeline (the stages before the
first stateful one fused with the source, the rest on an actor pool). The sources are ``thresher.curate.map``'s; the
sink (:class:`Sink`, ``thresher.curate.writer.RunSink``) is passed in; a stage's ``setup()`` runs once per worker
process."""

from __future__ import annotations

import functools
import hashlib
import itertools
import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from thresher.curate.execution.tasks import cluster_resources, retried_io
from thresher.curate.stage import MapStage, run_map_stage

if TYPE_CHECKING:
    import pandas as pd
    from ray.data import Datasink
    from ray.data._internal.execution.interfaces import TaskContext
    from ray.data.block import Block


class Sink(Protocol):
    """Where a segment's tables go: ``write_blocks`` runs in the tasks (the sink travels to them pickled)."""

    def write_blocks(self, blocks: Iterable[pa.Table]) -> None: ...


PART_ROWS = 16384  # a source's batches are written in parts of at least this many rows or PART_BYTES
PART_BYTES = 32 << 20


def run_segment(
    source: Callable[..., Iterator[pa.Table]],
    rows: list[dict[str, Any]],
    args: tuple[Any, ...],
    sink: Sink,
    stages: list[MapStage],
    batch_size: int,
    cpus: int,
    progress: TaskProgress,
) -> None:
    """``source(row, *args)`` for each of ``rows`` (one task each), through ``stages``, into ``sink``. Without a
    stateful stage: plain tasks (:func:`run_as_tasks`; ``progress`` counts them); else one Ray Data pipeline."""
    if not any(s.stateful for s in stages):
        run_as_tasks(source, rows, args, sink, cpus, progress, stages, batch_size)
        return
    import ray.data

    # the source's tasks fuse into the actor pool's actors, whose tasks take no retry args
    ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        source, fn_args=args, batch_size=1, batch_format="pandas"
    )
    ds, pool = map_stages(ds, stages, batch_size, blocks=len(rows))
    # after an actor pool that holds every CPU, the writer must not wait for one
    ds.write_datasink(_datasink_class()(sink), ray_remote_args={"num_cpus": 0}, concurrency=pool)


_SET_UP: dict[str, MapStage] = {}  # stages whose setup() ran in this worker process, by configuration
_SET_UP_KEPT = 8


def _set_up(stage: MapStage) -> MapStage:
    """``stage`` after its ``setup()``, run once per worker process and stage as built on the driver (a task's
    arguments are deserialized anew for every task, so the model a stage loads is kept here, not on the object)."""
    if getattr(stage, "_set_up", False):  # the same argument object again
        return stage
    key = hashlib.sha256(pickle.dumps(stage)).hexdigest()  # everything the stage was built with
    ready = _SET_UP.get(key)
    if ready is None:
        stage.setup()
        vars(stage)["_set_up"] = True  # an attribute MapStage does not declare
        while len(_SET_UP) >= _SET_UP_KEPT:
            _SET_UP.pop(next(iter(_SET_UP)))
        ready = _SET_UP[key] = stage
    return ready


def _batches(blocks: Iterable[pd.DataFrame], stage: MapStage, rows: int) -> Iterator[pd.DataFrame]:
    """``stage`` on each of ``blocks`` in batches of ``rows`` rows, one output frame per batch."""
    for block in blocks:
        for lo in range(0, len(block), rows):
            yield run_map_stage(stage, block.iloc[lo : lo + rows].reset_index(drop=True))


def run_map_stages(block: pd.DataFrame, stages: list[MapStage], rows: list[int]) -> Iterator[pd.DataFrame]:
    """The output frames of ``block`` (a data frame) through ``stages`` (``rows`` per batch each), a batch at a time:
    a stage's output frames go to the next stage as they are, not through Arrow (Ray Data converts the output of
    each ``map_batches`` to Arrow and the input of the next back to pandas)."""
    blocks: Iterable[pd.DataFrame] = [block]
    for stage, n in zip(stages, rows):
        blocks = _batches(blocks, stage, n)
    yield from blocks


def _apply_stages(block: pd.DataFrame, stages: list[MapStage], rows: list[int]) -> Iterator[pd.DataFrame]:
    yield from run_map_stages(block, [_set_up(stage) for stage in stages], rows)


class _StageActor:
    """Actor-pool UDF: a stateful stage and the map stages after it, each set up (model loading) once per actor."""

    def __init__(self, stages: list[MapStage], rows: list[int]) -> None:
        self.stages, self.rows = stages, rows
        for stage in stages:
            stage.setup()

    def __call__(self, block: pd.DataFrame) -> Iterator[pd.DataFrame]:
        yield from run_map_stages(block, self.stages, self.rows)


def map_stages(ds: Any, stages: list[MapStage], batch_size: int, blocks: int | None = None) -> tuple[Any, int]:
    """``ds`` through the map stages, and the size of the actor pool (0: none).

    Each stage gets whole blocks and cuts them into batches itself: a Ray Data ``batch_size`` would make the fused
    source task wait for that many *input rows*, and the source's input rows are read tasks (apply groups), so up
    to ``batch_size`` of them would run one after the other in a single task. The stages before the first stateful
    one are fused into the source's tasks, consecutive stages of equal ``num_cpus`` in one ``map_batches``
    (:func:`run_map_stages`); that stage and every stage after it run in one fixed pool of actors (one per
    ``num_cpus`` CPUs, at most one per ``num_gpus`` GPUs, and at most one per block of ``ds``: an actor more would
    load its model for no work), so no second pool or task waits for CPUs that the actors hold."""
    from ray.data import ActorPoolStrategy

    first = next((i for i, s in enumerate(stages) if s.stateful), len(stages))
    for num_cpus, grouped in itertools.groupby(stages[:first], key=lambda s: s.num_cpus):
        group = list(grouped)
        ds = ds.map_batches(
            _apply_stages,
            fn_args=(group, [s.batch_size or batch_size for s in group]),
            batch_size=None,
            batch_format="pandas",
            num_cpus=num_cpus,
        )
    pooled = stages[first:]
    if not pooled:
        return ds, 0
    num_cpus, num_gpus = max(s.num_cpus for s in pooled), max(s.num_gpus for s in pooled)
    resources = cluster_resources()
    pool = int(resources.get("CPU", 1) // max(num_cpus, 1e-3))
    if num_gpus:
        pool = min(pool, int(resources.get("GPU", 0) // num_gpus))
    if blocks is not None:
        pool = min(pool, blocks)
    pool = max(1, pool)
    # Ray Data refuses GPU actors without a batch size: then they take the records ``batch_size`` at a time
    gpu = {"num_gpus": num_gpus, "batch_size": batch_size} if num_gpus else {"batch_size": None}
    ds = ds.map_batches(
        _StageActor,
        fn_constructor_args=(pooled, [s.batch_size or batch_size for s in pooled]),
        compute=ActorPoolStrategy(size=pool),
        batch_format="pandas",
        num_cpus=num_cpus,
        **gpu,
    )
    return ds, pool


def _source_into_sink(
    source: Callable[..., Iterator[pa.Table]],
    row: dict[str, Any],
    args: tuple[Any, ...],
    sink: Sink,
    stages: list[MapStage],
    batch_size: int,
) -> int:
    """The source's tables (one read task or apply group) through ``stages`` written into the sink; returns the
    source's rows."""
    rows = 0

    def counted() -> Iterator[pa.Table]:
        nonlocal rows
        for table in source({name: [value] for name, value in row.items()}, *args):
            rows += table.num_rows
            yield table

    tables = counted()
    if stages:
        ready, sizes = [_set_up(stage) for stage in stages], [s.batch_size or batch_size for s in stages]
        tables = (to_arrow(frame) for table in tables for frame in run_map_stages(to_pandas(table), ready, sizes))
    sink.write_blocks(_coalesced(tables))
    return rows


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as the frame a stage takes: Arrow-backed columns (``pd.ArrowDtype``), as Ray Data's pandas batches."""
    import pandas as pd

    def dtype(t: pa.DataType) -> pd.ArrowDtype | None:
        plain = isinstance(t, pa.BaseExtensionType) or pa.types.is_dictionary(t) or pa.types.is_null(t)
        return None if plain else pd.ArrowDtype(t)

    return table.to_pandas(types_mapper=dtype)


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """A stage's output frame as Arrow, as Ray Data makes a block of it: a column of nulls only (and not Arrow-backed)
    becomes Arrow's null type, which joins a later part's typed column."""
    import pandas as pd

    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, name in enumerate(frame.columns):
        column = frame[name]
        if not isinstance(column.dtype, pd.ArrowDtype) and not column.notna().any():
            table = table.set_column(i, name, pa.nulls(len(column)))
    return table


@dataclass
class TaskProgress:
    """The rows of a segment's plain tasks that ended (the driver sees them end: no progress actor needed), and
    ``total``, else the total estimated from the tasks done."""

    tasks: int
    total: int | None = None
    done: int = 0
    rows: int = 0

    def poll(self) -> tuple[int, float | None]:
        estimate = self.rows * self.tasks / self.done if self.done else None
        return self.rows, self.total if self.total is not None else estimate


def _coalesced(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Consecutive tables of one schema joined until they hold ``PART_ROWS`` rows or ``PART_BYTES``: fewer, larger
    parts (and markers) than one per reader batch, a bounded amount held at a time."""
    held: list[pa.Table] = []
    for table in tables:
        if held and table.schema != held[0].schema:
            yield pa.concat_tables(held)
            held = []
        held.append(table)
        if sum(t.num_rows for t in held) >= PART_ROWS or sum(t.nbytes for t in held) >= PART_BYTES:
            yield pa.concat_tables(held)
            held = []
    if held:
        yield pa.concat_tables(held)


@functools.cache
def _datasink_class() -> Callable[[Sink], Datasink[None]]:
    """The Ray Data datasink that writes through a :class:`Sink`, made on first use: the processes of segments
    without map stages never import Ray Data."""
    from ray.data import Datasink

    class RunDatasink(Datasink[None]):
        def __init__(self, sink: Sink) -> None:
            self.sink = sink

        @property
        def supports_distributed_writes(self) -> bool:
            return True

        def write(self, blocks: Iterable[Block], ctx: TaskContext) -> None:
            self.sink.write_blocks(blocks)

    return RunDatasink


def run_as_tasks(
    source: Callable[..., Iterator[pa.Table]],
    rows: list[dict[str, Any]],
    args: tuple[Any, ...],
    sink: Sink,
    cpus: int,
    progress: TaskProgress,
    stages: list[MapStage],
    batch_size: int,
) -> None:
    """A segment without stateful stages: one plain Ray task per source row (read task or apply group) that runs
    the source's tables through ``stages`` into the sink, at most two per CPU submitted at a time; ``progress``
    counts the tasks that ended. Ray Data would run the same fused task, at a cost per run and per worker process
    (its import, its statistics and autoscaling actors, its executor on the driver: bench/results)."""
    import ray

    from thresher.runtime import SchedulingWatch

    num_cpus = max([1.0, *(s.num_cpus for s in stages)])
    # spread over the nodes as Ray Data spreads its tasks (the input is on shared storage, not on a node)
    task = ray.remote(num_cpus=num_cpus, scheduling_strategy="SPREAD", **retried_io())(_source_into_sink)
    task = task.options(name=source.__name__)
    staged = ray.put(stages)  # once, not with every task: a stage may hold a large table
    pending: list[Any] = []
    watch = SchedulingWatch(f"{source.__name__} ({num_cpus:g} CPU each)", num_cpus)

    def wait() -> None:
        nonlocal pending
        done: list[Any] = []
        while not done:
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            if not done:
                watch.check()
        progress.rows += ray.get(done[0])
        progress.done += 1

    try:
        for row in rows:
            if len(pending) >= 2 * cpus:
                wait()
            pending.append(task.remote(source, row, args, sink, staged, batch_size))
        while pending:
            wait()
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        raise
