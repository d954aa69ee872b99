"""Checkpoints that overlap training.

At a checkpoint step the engine's state is copied to host memory (:class:`HostCopy`: on a GPU on a side stream,
which the next optimizer step waits for; FSDP2 through ``torch.distributed.checkpoint.async_save``'s staging), and
the worker reports it to Ray Train with ``checkpoint_upload_mode=ASYNC``. Ray Train's one checkpoint thread per
worker then writes the copy (:meth:`Snapshot.write`) into a staging folder and moves it into the run's checkpoint
folder (a local ``storage_path``), or uploads it (any other). The training loop waits for the copy, the report and a
previous checkpoint still being written; a write that fails fails the run.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

STAGING_PREFIX = ".staging-"


def map_tensors(tree: Any, fn) -> Any:
    """``tree`` (dicts, lists and tuples, nested) with ``fn`` applied to every tensor; other values are kept."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        out = copy.copy(tree)  # keeps the mapping's type (OrderedDict, defaultdict)
        for key, value in tree.items():
            out[key] = map_tensors(value, fn)
        return out
    if isinstance(tree, list):
        return [map_tensors(v, fn) for v in tree]
    if isinstance(tree, tuple) and any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in tree):
        items = [map_tensors(v, fn) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return tree


class HostCopy:
    """A copy of ``tree``'s tensors in host memory. On a GPU the copies run on a side stream: :meth:`before_update`
    makes the training stream wait for them before the tensors change, :meth:`result` waits for them on the host."""

    def __init__(self, tree: Any, device: torch.device):
        self.event = None
        if device.type != "cuda":
            self.tree = map_tensors(tree, lambda t: t.detach().clone())
            return
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))

        def to_host(t: torch.Tensor) -> torch.Tensor:
            if not t.is_cuda:
                return t.detach().clone()
            t.record_stream(stream)  # the allocator keeps a temporary's memory until the copy is done
            return t.detach().to("cpu", non_blocking=True)  # into pinned memory

        with torch.cuda.stream(stream):
            self.tree = map_tensors(tree, to_host)
        self.event = torch.cuda.Event()
        self.event.record(stream)

    def before_update(self) -> None:
        if self.event is not None:
            torch.cuda.current_stream().wait_event(self.event)

    def result(self) -> Any:
        if self.event is not None:
            self.event.synchronize()
        return self.tree


@dataclass
class Snapshot:
    """What one rank writes of a checkpoint: objects to ``torch.save`` (path -> :class:`HostCopy`) and writes already
    under way (futures, e.g. ``torch.distributed.checkpoint.async_save``'s)."""

    files: dict[str, HostCopy] = field(default_factory=dict)
    futures: list = field(default_factory=list)

    def before_update(self) -> None:
        """Called before the optimizer changes the copied tensors."""
        for copied in self.files.values():
            copied.before_update()

    def write(self) -> None:
        for path, copied in self.files.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.save(copied.result(), path)
        for future in self.futures:
            future.result()
        self.files, self.futures = {}, []  # the host memory goes back


def folder_bytes(folder: str) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def move_into(source: str, dest: str) -> None:
    """Move ``source``'s files into ``dest``, merging folders (ranks write parts of the same subfolders)."""
    for entry in os.scandir(source):
        target = os.path.join(dest, entry.name)
        if entry.is_dir(follow_symlinks=False):
            os.makedirs(target, exist_ok=True)
            move_into(entry.path, target)
        else:
            os.replace(entry.path, target)
    os.rmdir(source)


def local_experiment_folder(storage) -> str | None:
    """The run's checkpoint folder when it is on this machine's filesystem (checkpoints are staged beside it and
    moved in), else None (staged in a temporary folder and uploaded)."""
    import pyarrow.fs

    path = storage.experiment_fs_path
    if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem) and os.path.isdir(path):
        return path
    return None


def remove_staging(run_folder: str) -> None:
    """Remove what a stopped run left staged in ``run_folder`` (call it while no worker runs)."""
    if os.path.isdir(run_folder):
        for entry in os.scandir(run_folder):
            if entry.name.startswith(STAGING_PREFIX) and entry.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)


class Checkpointer:
    """One worker's checkpoints: :meth:`save` snapshots the engine and reports it to Ray Train, whose checkpoint
    thread writes it; one checkpoint is written at a time. Counts what it cost: ``blocked_seconds`` (the training
    loop's wait), ``write_seconds`` (the background writes and moves or uploads) and ``bytes`` (this rank's files)."""

    def __init__(self, engine, rank: int):
        self.engine, self.rank = engine, rank
        self.writes = rank == 0 or engine.sharded  # the ranks that write part of a checkpoint
        self.done: threading.Event | None = None
        self.count, self.blocked_seconds, self.write_seconds, self.bytes = 0, 0.0, 0.0, 0

    def save(self, state, metrics: dict) -> None:
        import ray.train

        at = time.perf_counter()
        self.wait()
        name = f"step-{state.step:08d}"
        if not self.writes:  # a DDP rank beside rank 0: it reports, rank 0 writes
            ray.train.report(
                metrics,
                checkpoint=None,
                checkpoint_dir_name=name,
                checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
            )
            self.count += 1
            self.blocked_seconds += time.perf_counter() - at
            return
        storage = ray.train.get_context().get_storage()
        local = local_experiment_folder(storage)
        folder = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{name}-{self.rank}-", dir=local)
        snapshot = self.engine.snapshot(folder, self.rank)
        self.engine.pending = snapshot
        if self.rank == 0:
            state.save(folder)
        done = self.done = threading.Event()  # its own: Ray Train calls write again when an upload fails (3 tries)

        def write(checkpoint, dir_name: str):
            try:
                started = time.perf_counter()
                snapshot.write()
                self.bytes += folder_bytes(folder)
                if local is None:
                    persisted = storage.persist_current_checkpoint(checkpoint, dir_name)
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    dest = storage.build_checkpoint_path_from_name(dir_name)
                    os.makedirs(dest, exist_ok=True)
                    move_into(folder, dest)
                    persisted = ray.train.Checkpoint(dest, filesystem=storage.storage_filesystem)
                self.write_seconds += time.perf_counter() - started
                return persisted
            finally:
                done.set()

        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(folder),
            checkpoint_dir_name=name,
            checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
            checkpoint_upload_fn=write,
            delete_local_checkpoint_after_upload=False,
        )
        self.count += 1
        self.blocked_seconds += time.perf_counter() - at

    def wait(self) -> None:
        """Wait until the checkpoint being written is written (a failed write fails the run through Ray Train)."""
        if self.done is not None:
            self.done.wait()
            self.done = None
