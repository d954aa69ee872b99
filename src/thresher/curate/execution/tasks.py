"""Plain tasks over the blocks of key rows: the interface of the global stages whose decision is a few passes over
the blocks where they are (counts, sums, a model fitted on samples), with only small results travelling.

:func:`tasks_for` gives the implementation that fits the key rows: on Ray (:class:`RayTasks`), a handle is an
object reference and a task a plain Ray task of one CPU; on a ``LocalTable`` (:class:`LocalTasks`), a handle is the
value itself and a task a call in this process. A handle passed to :meth:`run` arrives as its value.

Beside them, the plain tasks of the commit phase: :func:`reduce_tree` (statistics merged by a tree of tasks) and
:func:`as_completed` (one task per item, results as they come).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pyarrow as pa

from thresher.curate.execution.datasets import LocalTable, block_refs, materialize, plain_task

T = TypeVar("T")


class RayTasks:
    """Handles are object references; tasks are plain Ray tasks."""

    def blocks(self, ds: Any) -> list[Any]:
        """Handles to the blocks of ``ds`` that hold rows (computed first when it is not yet)."""
        return block_refs(materialize(ds))

    def run(self, fn: Callable[..., Any], *args: Any, returns: int = 1) -> Any:
        """``fn(*args)`` as a task: a handle to its result (``returns`` > 1: to each of the values it returns)."""
        return plain_task(fn).options(num_returns=returns).remote(*args)

    def get(self, handles: Any) -> Any:
        """The value behind a handle (or a list of the values behind a list of handles), here."""
        import ray

        return ray.get(handles)

    def put(self, value: Any) -> Any:
        """A handle to ``value`` (a large argument passed to many tasks is sent once)."""
        import ray

        return ray.put(value)

    def dataset(self, handles: list[Any]) -> Any:
        """The key rows made of the tables behind ``handles``, for the runner."""
        import ray.data

        return ray.data.from_arrow_refs(handles)

    def cpus(self) -> int:
        """The CPUs of the cluster (at least 1)."""
        return max(1, int(cluster_resources().get("CPU", 1)))


class LocalTasks:
    """Handles are the values; tasks run here, at once."""

    def blocks(self, ds: LocalTable) -> list[pa.Table]:
        return [ds.table]

    def run(self, fn: Callable[..., T], *args: Any, returns: int = 1) -> T:
        return fn(*args)

    def get(self, handles: T) -> T:
        return handles

    def put(self, value: T) -> T:
        return value

    def dataset(self, handles: list[pa.Table]) -> LocalTable:
        return LocalTable(pa.concat_tables(handles, promote_options="permissive"))


def tasks_for(ds: Any) -> RayTasks | LocalTasks:
    """The tasks that run where the key rows ``ds`` are."""
    return LocalTasks() if isinstance(ds, LocalTable) else RayTasks()


def cluster_resources() -> dict[str, float]:
    """The resources of the Ray cluster (``ray.cluster_resources()``: CPU, GPU, memory, custom ones)."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]  # unannotated in Ray
    return resources


def retried_io() -> dict[str, Any]:
    """Remote args of the tasks that read and write the data: an I/O error (``OSError``: a reset connection, a
    failing disk; damaged input is a reject, not an error) runs the task again like a lost worker, 3 times at most
    (as Ray Data's own Parquet reads do); then the run fails. A task's outputs are named by its position, so a task
    run again replaces what the failed attempt wrote. Segments with an actor pool read in the actors (the source's
    tasks fuse into them), where an I/O error fails the run without a retry."""
    return {"max_retries": 3, "retry_exceptions": [OSError]}


def _call(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


def _merged(merge: Callable[[list[Any]], T], *parts: Any) -> T:
    return merge(list(parts))


def reduce_tree(
    leaf: Callable[[Any], Any], chunks: list[Any], merge: Callable[[list[Any]], Any], fanin: int, empty: Any = None
) -> Any:
    """``merge`` of ``leaf(chunk)`` over ``chunks``: one plain task per chunk, merged by a tree of tasks of at most
    ``fanin`` parts each; only the root comes back here (``empty`` when there is no chunk)."""
    import ray

    leaves = plain_task(_call).options(name=getattr(leaf, "__qualname__", "leaf"))
    refs = [leaves.remote(leaf, chunk) for chunk in chunks]
    while len(refs) > 1:
        refs = [plain_task(_merged).remote(merge, *refs[i : i + fanin]) for i in range(0, len(refs), fanin)]
    return ray.get(refs[0]) if refs else empty


def as_completed(fn: Callable[..., Any], items: list[Any], *args: Any) -> Iterator[Any]:
    """``fn(item, *args)`` for each of ``items``, one task each (retried on I/O errors, :func:`retried_io`), the
    results as the tasks end."""
    import ray

    task = ray.remote(**retried_io())(fn)
    pending = [task.remote(item, *args) for item in items]
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
        yield from ray.get(done)
