"""Plain Ray tasks outside the key rows (``thresher.curate.execution.rows``): the cluster's resources, the retry
policy of the tasks that read and write the data, and the plain tasks of the plan and commit phases:
:func:`each_in_a_task` (small results gathered), :func:`reduce_tree` (statistics merged by a tree of tasks) and
:func:`as_completed` (one task per item, results as they come)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from thresher.curate.execution.worker import plain_task

T = TypeVar("T")


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


def each_in_a_task(fn: Callable[..., Any], items: list[Any], *args: Any) -> list[Any]:
    """``[fn(item, *args) for item in items]``, one plain Ray task each, the (small) results gathered here."""
    import ray

    task = plain_task(fn).options(name=getattr(fn, "__qualname__", "items"))
    results: list[Any] = ray.get([task.remote(item, *args) for item in items])
    return results


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
