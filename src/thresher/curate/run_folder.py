"""The run folder: every name a run writes, from staging to commit, and how a run is prepared, resumed, committed
and loaded.

```
<output>/data/[<split>/]part-NNNNN.parquet    kept records (compacted to output.target_file_mb)
<output>/rejects/part-NNNNN.parquet           removed records with stage, reason, detail
<output>/report.json, report.html, README.md  report and dataset card
<output>/review_queue/                        labels' export_review: the review split for annotation tools
<output>/index/<stage>/<keys>/B/part-NNNNN.parquet  the reference index: key rows of the kept records for a
                                              later run's ``against`` (dedup keys, split groups; one part per staged
                                              key file or data file; ``<keys>``: digest of the options the keys
                                              depend on; ``B``: the build that wrote it); ``complete.json``, written
                                              last, names the parts of one build
<output>/manifest.json                        written last: the run is complete
<output>/_progress/run.json                   what this run computes (config + planned reads hash)
<output>/_progress/read-T.json                rows read by read task T
<output>/_progress/write-sS-LO-HI-W.json      counts, sizes and report statistics of one written part
<output>/_staging/out/<dest>/sS-LO-HI-W.arrow     output rows before compaction (dest: rejects, data, data/<split>)
<output>/_staging/live/sS/LO-HI-W.arrow       live records waiting for the decisions of segment S + 1
<output>/_staging/keys/sS/LO-HI-W.arrow       their key rows
<output>/_staging/decisions/sS/g-NNNNN.arrow  decisions for the records of apply group NNNNN
<output>/_staging/final/                      the final files while a completed run still holds the names above
<output>/_gate_failed/                        a re-run that failed its gates beside a succeeded run: its data,
                                              rejects, reports and manifest, laid out as above (the next commit
                                              removes it)
```
A part covers the read tasks LO..HI (segment 0: one read task; later segments: an apply group) and is numbered W
by the internal key of its first row (a retried or rerun task rewrites the same names). ``_progress`` and
``_staging`` are removed at commit.

A new run keeps a completed run's dataset readable until it commits: it writes its final files under
``_staging/final`` and swaps them in at commit (the old manifest goes first, the new one comes last), so a re-run
that fails leaves the previous dataset, manifest and reports as they were (:meth:`RunFolder.publishing`); so does
a re-run that fails its gates where a succeeded run is: it commits to ``_gate_failed`` (:meth:`RunFolder.set_aside`).

Staged files are Arrow IPC files, read back once or a few times by the run itself: uncompressed on local disks
(memory-mapped on reading, so a task touches only the columns it reads) and LZ4-compressed on S3. A staged
table with internal keys records its smallest and largest key in its schema's metadata.

A run replaces what its output folder holds under those names, so :func:`check_output` refuses, before anything
is written or deleted, an output that is, contains or lies inside an input, and an existing non-empty folder
that is not a thresher run (none of ``manifest.json``, ``_progress/``, ``_staging/``).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import posixpath
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from thresher.core.config import ConfigError
from thresher.core.storage import MANIFEST, PROGRESS, STAGING, Storage, is_s3, join
from thresher.curate.stage import KEY

log = logging.getLogger(__name__)

REJECTS = "rejects"
DATA = "data"
REVIEW = "review_queue"
INDEX = "index"
INDEX_COMPLETE = "complete.json"
RUN_FILES = ("report.json", "report.html", "README.md")
GATE_FAILED_RUN = "_gate_failed"  # a run that failed its gates, set beside the succeeded dataset it left in place
PUBLISHED = (DATA, REJECTS, REVIEW, INDEX)  # the folders a run publishes
# names of files a run writes, to tell whether an input glob would read them
RUN_SAMPLE_FILES = (
    *RUN_FILES,
    MANIFEST,
    f"{DATA}/part-00000.parquet",
    f"{DATA}/train/part-00000.parquet",
    f"{REJECTS}/part-00000.parquet",
)
_PART = re.compile(r"s(\d+)-(\d+)-(\d+)-(\d+)")
_RANGE = re.compile(r"(\d+)-(\d+)-(\d+)\.arrow$")
_KEY_RANGE = b"thresher.key_range"
LAYOUT = 3  # version of the staging layout and markers: a run resumes only from files of the same layout


@dataclass(frozen=True)
class Part:
    """A staged file: its URI, the segment that wrote it, the read tasks it covers, its size."""

    uri: str
    seg: int
    lo: int
    hi: int
    size: int = 0


@dataclass(frozen=True)
class RunFolder:
    root: str
    storage: Storage

    def uri(self, *parts: str) -> str:
        return join(self.root, *parts)

    # -- names -------------------------------------------------------------------------------------

    def read_marker(self, task: int) -> str:
        return self.uri(PROGRESS, f"read-{task:06d}.json")

    def write_marker(self, seg: int, lo: int, hi: int, w: int) -> str:
        return self.uri(PROGRESS, f"write-s{seg}-{lo:06d}-{hi:06d}-{w:05d}.json")

    def out_part(self, dest: str, seg: int, lo: int, hi: int, w: int) -> str:
        return self.uri(STAGING, "out", dest, f"s{seg}-{lo:06d}-{hi:06d}-{w:05d}.arrow")

    def live_part(self, seg: int, lo: int, hi: int, w: int) -> str:
        return self.uri(STAGING, "live", f"s{seg}", f"{lo:06d}-{hi:06d}-{w:05d}.arrow")

    def keys_part(self, seg: int, lo: int, hi: int, w: int) -> str:
        return self.uri(STAGING, "keys", f"s{seg}", f"{lo:06d}-{hi:06d}-{w:05d}.arrow")

    def keys_dir(self, seg: int) -> str:
        return self.uri(STAGING, "keys", f"s{seg}")

    def decisions(self, seg: int, group: int) -> str:
        return self.uri(STAGING, "decisions", f"s{seg}", f"g-{group:05d}.arrow")

    def final_part(self, dest: str, index: int) -> str:
        return self.uri(dest, f"part-{index:05d}.parquet")

    def index_dir(self, stage: str, keys: str) -> str:
        """The reference index of ``stage`` (a stage kind) for keys made with options of digest ``keys``."""
        return self.uri(INDEX, stage, keys)

    def index_part(self, stage: str, keys: str, build: str, index: int) -> str:
        """Part ``index`` of an index written by build ``build`` (builds never share files: two runs building the
        same older run's index at once each write their own, and ``complete.json`` names one whole build)."""
        return join(self.index_dir(stage, keys), build, f"part-{index:05d}.parquet")

    def index_parts(self, stage: str, keys: str) -> list[str] | None:
        """The parts of a complete reference index (those its ``complete.json`` names), in order; None when there
        is none (or it is incomplete)."""
        folder = self.index_dir(stage, keys)
        complete = join(folder, INDEX_COMPLETE)
        if not self.storage.exists(complete):
            return None
        return [join(folder, part) for part in json.loads(self.storage.read_bytes(complete))["parts"]]

    # -- listing -----------------------------------------------------------------------------------

    def _list(self, uri: str) -> list[tuple[str, int]]:
        return self.storage.expand(uri) if self.storage.exists(uri) else []

    def _under(self, uri: str) -> list[tuple[str, str, int]]:
        """Files under ``uri`` as (uri, path relative to ``uri``, size)."""
        base = self.storage.resolve(uri)[1].rstrip("/") + "/"
        return [(u, u.removeprefix("s3://")[len(base) :], size) for u, size in self._list(uri)]

    def live_parts(self, seg: int) -> list[Part]:
        return [_part(uri, size, seg) for uri, size in self._list(self.uri(STAGING, "live", f"s{seg}"))]

    def keys_parts(self, seg: int) -> list[tuple[str, int]]:
        """The key-row files staged by segment ``seg``, with their sizes."""
        return self._list(self.keys_dir(seg))

    def key_parts(self, seg: int) -> list[Part]:
        """:meth:`keys_parts` with the read tasks each covers."""
        return [_part(uri, size, seg) for uri, size in self.keys_parts(seg)]

    def out_parts(self) -> dict[str, list[Part]]:
        """Staged output files by destination (``rejects``, ``data``, ``data/<split>``)."""
        found: dict[str, list[Part]] = {}
        for uri, rel, size in self._under(self.uri(STAGING, "out")):
            dest, name = rel.rsplit("/", 1)
            m = _PART.match(name)
            if not m:
                continue
            found.setdefault(dest, []).append(Part(uri, int(m[1]), int(m[2]), int(m[3]), size))
        return found

    def markers(self) -> list[str]:
        return [uri for uri, _ in self._list(self.uri(PROGRESS)) if uri.rsplit("/", 1)[-1].startswith("write-")]

    def read_markers(self) -> dict[int, str]:
        """The read markers by read task."""
        return {
            int(uri.rsplit("-", 1)[-1].removesuffix(".json")): uri
            for uri, _ in self._list(self.uri(PROGRESS))
            if uri.rsplit("/", 1)[-1].startswith("read-")
        }

    def read_results(self, resuming: bool = False) -> dict[int, dict]:
        """Per read task its marker (read in parallel): ``rows`` read, input ``bytes`` covered and the bytes lost
        to damage per file (``damaged``). A marker that does not parse (cut short by a crash) fails the count, or,
        ``resuming``, leaves its task out: it is unfinished."""
        markers = self.read_markers()
        with ThreadPoolExecutor(16) as pool:
            found = list(pool.map(self._marker, markers.values()))
        broken = [uri for uri, m in zip(markers.values(), found) if m is None]
        if broken and not resuming:
            raise RuntimeError(f"read markers that do not parse: {broken[:3]}")
        return {task: m for task, m in zip(markers, found) if m is not None}

    def read_rows(self, resuming: bool = False) -> dict[int, int]:
        """Rows read per read task, from the read markers (:meth:`read_results`)."""
        return {task: m["rows"] for task, m in self.read_results(resuming).items()}

    def _marker(self, uri: str) -> dict | None:
        """A marker's content; None when it does not parse."""
        try:
            return json.loads(self.storage.read_bytes(uri))
        except ValueError:
            log.warning("%s does not parse (cut short by a crash?): its task is redone", uri)
            return None

    # -- lifecycle ---------------------------------------------------------------------------------

    def prepare(self, key: str) -> set[int]:
        """Make the folder ready for the run ``key`` and return the read tasks an interrupted attempt finished.

        A read task is finished when its segment-0 parts (outputs, staged live records) add up to the rows it read.
        Reuse needs the same config and inputs (``key``) and the same ``LAYOUT``. Files of unfinished read tasks
        and everything after segment 0 (decisions, later segments) are deleted; another run's markers and staged
        files are wiped. A completed run's dataset stays until this run commits (module docstring).
        """
        marker = self.uri(PROGRESS, "run.json")
        if self.storage.exists(marker) and self._marker(marker) == {"key": key, "layout": LAYOUT}:
            done = self._finished_read_tasks()
            self._drop_unfinished(done)
            log.info("resuming: %d read tasks were already written", len(done))
            return done
        self.storage.delete(self.uri(PROGRESS))
        self.storage.delete(self.uri(STAGING))
        self.storage.write_bytes(marker, json.dumps({"key": key, "layout": LAYOUT}).encode())
        return set()

    def _finished_read_tasks(self) -> set[int]:
        read = self.read_rows(resuming=True)
        written: dict[int, int] = {}
        uris = [u for u in self.markers() if _PART.search(u.rsplit("/", 1)[-1])[1] == "0"]
        broken: set[int] = set()
        with ThreadPoolExecutor(16) as pool:
            for uri, stats in zip(uris, pool.map(self._marker, uris)):
                task = int(_PART.search(uri.rsplit("/", 1)[-1])[2])
                if stats is None:
                    broken.add(task)
                    continue
                written[task] = (
                    written.get(task, 0)
                    + sum(stats["rows"].values())
                    + stats["staged"]
                    - sum(stats.get("generated", {}).values())
                )
        return {t for t, n in read.items() if written.get(t) == n and t not in broken}

    def _drop_unfinished(self, done: set[int]) -> None:
        def unfinished(uri: str) -> bool:
            folder, name = uri.rsplit("/", 2)[-2:]
            m = _PART.search(name)
            if m:
                return m[1] != "0" or int(m[2]) not in done
            m = _RANGE.search(name)  # live/keys parts: the segment is the folder's name
            return folder != "s0" or int(m[1]) not in done

        for sub in ("out", "live", "keys"):
            for uri, _ in self._list(self.uri(STAGING, sub)):
                if unfinished(uri):
                    self.storage.delete(uri)
        self.storage.delete(self.uri(STAGING, "decisions"))
        for uri in self.markers():
            if unfinished(uri):
                self.storage.delete(uri)
        for task, uri in self.read_markers().items():
            if task not in done:
                self.storage.delete(uri)

    def publishing(self) -> RunFolder:
        """The folder this run writes its final files to: ``_staging/final`` while a completed run's manifest is
        here (:meth:`commit` swaps them in), else this folder, cleared of what an unfinished run left."""
        staged = RunFolder(self.uri(STAGING, "final"), self.storage)
        self.storage.delete(staged.root)
        if self.storage.exists(self.uri(MANIFEST)):
            return staged
        self._remove_published()
        return self

    def relative(self, uri: str) -> str:
        """``uri``'s path below this folder."""
        root = self.root.rstrip("/") + "/"
        if not uri.startswith(root):
            raise ValueError(f"{uri} is not inside {self.root}")
        return uri[len(root) :]

    def _remove_published(self) -> None:
        """Remove a run's published files, the manifest first, so a half-removed run never looks complete."""
        self.storage.delete(self.uri(MANIFEST))
        for name in RUN_FILES + PUBLISHED:
            self.storage.delete(self.uri(name))

    def commit(
        self,
        published: RunFolder,
        manifest: dict,
        report: dict,
        html: str,
        card: str,
        finish: Callable[[dict], None] | None = None,
    ) -> None:
        """Put the final files written to ``published`` (:meth:`publishing`) in place, replacing the previous run's
        (and a run set aside beside it: :meth:`set_aside`), write the run's files, the manifest last (``finish``
        completes it just before), and remove ``_progress``; :meth:`remove_staging` follows."""
        self.storage.delete(self.uri(GATE_FAILED_RUN))
        if published.root != self.root:
            self._remove_published()
            for name in PUBLISHED:
                if self.storage.exists(published.uri(name)):
                    self.storage.move(published.uri(name), self.uri(name))
        self.storage.write_bytes(self.uri("report.json"), json.dumps(report, indent=2, default=str).encode())
        self.storage.write_bytes(self.uri("report.html"), html.encode())
        self.storage.write_bytes(self.uri("README.md"), card.encode())
        if finish is not None:
            finish(manifest)
        self.storage.write_bytes(self.uri(MANIFEST), json.dumps(manifest, indent=2, default=str).encode())
        self.storage.delete(self.uri(PROGRESS))

    def holds_succeeded_run(self) -> bool:
        """Whether a committed run whose gates held (``status: succeeded``) is here."""
        uri = self.uri(MANIFEST)
        return self.storage.exists(uri) and json.loads(self.storage.read_bytes(uri)).get("status") == "succeeded"

    def set_aside(self) -> RunFolder:
        """The empty folder ``_gate_failed`` where a run that failed its gates commits (:meth:`commit`) when a
        succeeded run is here: the dataset a re-run leaves in place; this folder's ``_progress`` is removed."""
        aside = RunFolder(self.uri(GATE_FAILED_RUN), self.storage)
        self.storage.delete(aside.root)
        self.storage.delete(self.uri(PROGRESS))
        return aside

    def remove_staging(self) -> None:
        """Remove ``_staging`` (a committed run's; a run that finds it beside a manifest removes it too)."""
        self.storage.delete(self.uri(STAGING))

    def final_files(self) -> dict[str, list[str]]:
        """The committed Parquet files by destination."""
        out: dict[str, list[str]] = {}
        for dest in (DATA, REJECTS):
            for uri, rel, _ in self._under(self.uri(dest)):
                sub = rel.rsplit("/", 1)
                out.setdefault(dest if len(sub) == 1 else f"{dest}/{sub[0]}", []).append(uri)
        return out

    def final_rows(self) -> dict[str, int]:
        """Rows per destination of the committed Parquet files, from their footers (read in parallel): what users
        will read, counted apart from the counts that decided it."""
        import pyarrow.parquet as pq

        def rows(uri: str) -> int:
            fs, path = self.storage.resolve(uri)
            with fs.open_input_file(path) as f:
                return pq.ParquetFile(f).metadata.num_rows

        files = [(dest, uri) for dest, uris in self.final_files().items() for uri in uris]
        with ThreadPoolExecutor(16) as pool:
            counts = list(pool.map(rows, [uri for _, uri in files]))
        out: dict[str, int] = {}
        for (dest, _), n in zip(files, counts):
            out[dest] = out.get(dest, 0) + n
        return out

    def load_manifest(self) -> dict[str, Any]:
        """The manifest of a finished run; a run without one is incomplete and refused."""
        uri = self.uri(MANIFEST)
        if not self.storage.exists(uri):
            raise ConfigError(f"{self.root}: no {MANIFEST}: the run did not complete (or is not a thresher run)")
        return json.loads(self.storage.read_bytes(uri))


# -- staged files ------------------------------------------------------------------------------------------


def write_staged(storage: Storage, uri: str, table: pa.Table) -> None:
    """Write a staged table (module docstring: Arrow IPC, its key range in the schema's metadata)."""
    fs, path = storage.resolve(uri)
    fs.create_dir(posixpath.dirname(path), recursive=True)
    if KEY in table.column_names and table.num_rows:
        keys = pc.min_max(table[KEY])
        value = f"{keys['min'].as_py()},{keys['max'].as_py()}".encode()
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _KEY_RANGE: value})
    options = pa.ipc.IpcWriteOptions(compression="lz4" if is_s3(uri) else None)
    # a local file is written aside (hidden: listings skip it) and renamed into place, so a reader that maps the
    # previous version (a retried task rewrites its names) keeps reading that
    folder, name = posixpath.split(path)
    target = path if is_s3(uri) else f"{folder}/.{name}.{os.getpid()}-{threading.get_ident()}"
    with fs.open_output_stream(target) as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    if target != path:
        fs.move(target, path)


def _open_staged(storage: Storage, uri: str, columns: list[str] | None = None, exclude: tuple[str, ...] = ()):
    fs, path = storage.resolve(uri)
    if is_s3(uri):
        source = fs.open_input_file(path)
        if columns is not None or exclude:  # only the columns' buffers are fetched
            names = pa.ipc.open_file(source).schema.names
            wanted = [c for c in (names if columns is None else columns) if c in names and c not in exclude]
            options = pa.ipc.IpcReadOptions(included_fields=[names.index(c) for c in wanted])
            return pa.ipc.open_file(source, options=options)
        return pa.ipc.open_file(source)
    return pa.ipc.open_file(pa.memory_map(path))


def read_staged(
    storage: Storage, uri: str, columns: list[str] | None = None, exclude: tuple[str, ...] = ()
) -> pa.Table:
    """A staged table, or its ``columns`` (those it has), less ``exclude``."""
    table = _open_staged(storage, uri, columns, exclude).read_all()
    names = table.column_names if columns is None else columns
    return table.select([c for c in names if c in table.column_names and c not in exclude])


def read_files(
    uris: list[str], storage: Storage, columns: list[str] | None = None, exclude: tuple[str, ...] = ()
) -> pa.Table:
    """Staged files as one table: all their columns, or ``columns``, less ``exclude``."""
    tables = [read_staged(storage, uri, columns, exclude) for uri in uris]
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def staged_rows(storage: Storage, uri: str) -> int:
    """The rows of a staged table (its batches' headers only)."""
    reader = _open_staged(storage, uri)
    if hasattr(reader, "count_rows"):  # newer pyarrow; the machine of bench/scale_run.sh has none
        return reader.count_rows()
    return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def staged_schema(storage: Storage, uri: str) -> pa.Schema:
    return _open_staged(storage, uri).schema


def staged_key_range(schema: pa.Schema) -> tuple[int, int] | None:
    """The smallest and largest internal key of a staged table with rows (None without)."""
    value = (schema.metadata or {}).get(_KEY_RANGE)
    if value is None:
        return None
    lo, hi = value.decode().split(",")
    return int(lo), int(hi)


def check_output(output: str, inputs: list[str], storage: Storage) -> None:
    """Refuse (ConfigError) an output that is, contains or lies inside an input (for a glob: the folder it starts
    from, and inside it only where the glob would read the run's files), or an existing non-empty folder without
    a thresher run's markers (module docstring)."""
    out = _location(output)
    for uri in inputs:
        pattern = _location(uri)
        glob = next((i for i, p in enumerate(pattern.parts) if any(c in p for c in "*?[")), None)
        inp = pattern if glob is None else PurePosixPath(*pattern.parts[:glob])
        inside = inp in out.parents and (
            glob is None or any(fnmatch.fnmatchcase(str(out / name), str(pattern)) for name in RUN_SAMPLE_FILES)
        )
        relation = "is" if out == inp else "contains" if out in inp.parents else "lies inside" if inside else None
        if relation:
            raise ConfigError(
                f"output.path: {output} {relation} the input {uri}; a run deletes and rewrites its "
                "output folder's data/, rejects/ and reports: write it elsewhere"
            )
    fs, path = storage.resolve(output)
    try:
        kind = fs.get_file_info(path).type
        if kind == pafs.FileType.File:
            raise ConfigError(f"output.path: {output} is a file, not a folder")
        found = (
            fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)) if kind == pafs.FileType.Directory else []
        )
    except OSError as e:
        raise ConfigError(f"output.path: cannot look into {output!r}: {e}") from None
    names = sorted(i.base_name for i in found)
    if names and not {MANIFEST, PROGRESS, STAGING} & set(names):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ConfigError(
            f"output.path: {output} is a non-empty folder ({shown}) and not a thresher run (no "
            f"{MANIFEST}, {PROGRESS}/ or {STAGING}/), which a run would partly overwrite; give a new "
            "or empty folder"
        )


def _location(uri: str) -> PurePosixPath:
    """A path to compare locations by: ``s3:/bucket/key``, or the absolute local path."""
    return PurePosixPath(uri) if is_s3(uri) else PurePosixPath(Path(uri.removeprefix("file://")).expanduser().resolve())


def _part(uri: str, size: int, seg: int) -> Part:
    m = _RANGE.search(uri)
    return Part(uri, seg, int(m[1]), int(m[2]), size)
