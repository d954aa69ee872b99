"""Plain tasks over the blocks of key rows: the interface of the global stages whose decision is a few passes over
the blocks where they are (counts, sums, a model fitted on samples), with only small results travelling.

:func:`tasks_for` gives the implementation that fits the key rows: on Ray (:class:`RayTasks`), a handle is an
object reference and a task a plain Ray task of one CPU; on a ``LocalTable`` (:class:`LocalTasks`), a handle is the
value itself and a task a call in this process. A handle passed to :meth:`run` arrives as its value.
"""

from __future__ import annotations

import pyarrow as pa

from thresher.curate.execution.datasets import LocalTable, block_refs, materialize, plain_task


class RayTasks:
    """Handles are object references; tasks are plain Ray tasks."""

    def blocks(self, ds) -> list:
        """Handles to the blocks of ``ds`` that hold rows (computed first when it is not yet)."""
        return block_refs(materialize(ds))

    def run(self, fn, *args, returns: int = 1):
        """``fn(*args)`` as a task: a handle to its result (``returns`` > 1: to each of the values it returns)."""
        return plain_task(fn).options(num_returns=returns).remote(*args)

    def get(self, handles):
        """The value behind a handle (or a list of the values behind a list of handles), here."""
        import ray

        return ray.get(handles)

    def put(self, value):
        """A handle to ``value`` (a large argument passed to many tasks is sent once)."""
        import ray

        return ray.put(value)

    def dataset(self, handles: list):
        """The key rows made of the tables behind ``handles``, for the runner."""
        import ray.data

        return ray.data.from_arrow_refs(handles)


class LocalTasks:
    """Handles are the values; tasks run here, at once."""

    def blocks(self, ds: LocalTable) -> list:
        return [ds.table]

    def run(self, fn, *args, returns: int = 1):
        return fn(*args)

    def get(self, handles):
        return handles

    def put(self, value):
        return value

    def dataset(self, handles: list) -> LocalTable:
        return LocalTable(pa.concat_tables(handles, promote_options="permissive"))


def tasks_for(ds) -> RayTasks | LocalTasks:
    """The tasks that run where the key rows ``ds`` are."""
    return LocalTasks() if isinstance(ds, LocalTable) else RayTasks()
