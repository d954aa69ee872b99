"""Real faults for tests: SIGKILL a Ray Train worker process (or call any action) once Ray Train's controller has
registered a given checkpoint, as a crash or a lost machine would do mid-run; a curation stage that takes a row
out of a final file once it is written (:class:`DropsAWrittenRow`), as a faulty disk or writer would."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from thresher.core.storage import Storage, join
from thresher.curate.stage import MapStage

SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of the registered checkpoints


def latest_checkpoint(run_dir: str) -> str | None:
    """The latest checkpoint Ray Train's controller registered in ``run_dir`` (``<storage_path>/<name>``, local or
    s3://); raises while there is none (or the snapshot is being written)."""
    snapshot = json.loads(Storage.from_options(None).read_bytes(join(run_dir, SNAPSHOT)))
    return (snapshot.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name")


def train_worker_pids() -> list[int]:
    """The Ray Train worker processes of the Ray this process started (its descendants; the process title names
    the actor class). Other Ray instances on the machine are left alone."""
    import psutil

    pids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any("RayTrainWorker" in part for part in p.cmdline()):
                pids.append(p.pid)
        except psutil.Error:
            pass
    return sorted(pids)


def kill_a_train_worker() -> str:
    pids = train_worker_pids()
    if not pids:
        raise RuntimeError("no Ray Train worker process to kill")
    os.kill(pids[-1], signal.SIGKILL)
    return f"killed Ray Train worker pid {pids[-1]}"


class AfterCheckpoint(threading.Thread):
    """In the background: once ``checkpoint`` (e.g. ``step-00000002``) is the latest registered in ``run_dir``,
    run ``action`` (default: SIGKILL one Ray Train worker) once; ``done`` is what it returned."""

    def __init__(
        self,
        run_dir: str | Path,
        checkpoint: str,
        action: Callable[[], str] = kill_a_train_worker,
        timeout: float = 900,
    ):
        super().__init__(daemon=True)
        self.run_dir, self.checkpoint, self.action, self.timeout = str(run_dir), checkpoint, action, timeout
        self.done: str | None = None
        self.error: BaseException | None = None
        self.seen: list[str] = []  # the latest checkpoints seen, in order
        self.last_read_error: Exception | None = None
        self.start()

    def run(self) -> None:
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            try:
                latest = latest_checkpoint(self.run_dir)
            except Exception as e:  # no snapshot yet
                self.last_read_error = e
                latest = None
            if latest and latest not in self.seen:
                self.seen.append(latest)
            if latest == self.checkpoint:
                try:
                    self.done = self.action()
                except BaseException as e:  # reported by result()
                    self.error = e
                return
            time.sleep(0.02)

    def result(self) -> str:
        """What the action returned; raises if it failed or never ran."""
        self.join(timeout=5)
        if self.error:
            raise self.error
        if self.done is None:
            raise AssertionError(
                f"checkpoint {self.checkpoint} was never the latest in {self.run_dir} (seen: "
                f"{self.seen}; last read error: {self.last_read_error!r})"
            )
        return self.done


class DropsAWrittenRow(MapStage):
    """``test_drops_a_written_row``: keeps every record, then removes the last row of the first data file once the
    final files are written (``after_publish``): a loss the counts taken before cannot see."""

    name = "test_drops_a_written_row"

    def process(self, batch):
        return batch

    def after_publish(self, run_uri: str, files: list[str]) -> None:
        import pyarrow.parquet as pq

        victim = next(f for f in sorted(files) if "/data/" in f)
        table = pq.read_table(victim)
        pq.write_table(table.slice(0, table.num_rows - 1), victim)
