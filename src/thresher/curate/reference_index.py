"""Reference runs of a run's stages (``against``): checked before any work, their indexes built where missing,
and this run's own index written at commit (``thresher.curate.dedup.against_runs``).

At commit, a dedup stage's index part is one file of the key rows it staged, less the records that are not in the
final data (their internal keys are read from the staged output files of the same read tasks): no text is read
again and no key computed twice, and the keys are those of the records as the stage saw them. Split's, and the index
of a run that has none, are computed from the data files (one part per file: the id and the columns the keys are
computed from). One Ray task per part; the folder's ``complete.json`` comes last, so an interrupted build is redone
by the next run that needs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.core.config import ConfigError
from thresher.core.storage import MANIFEST, Storage, join
from thresher.curate.dedup.against_runs import STORED, IndexedStage, ReferenceDedup
from thresher.curate.execution.tasks import each_in_a_task
from thresher.curate.run_folder import DATA, INDEX_COMPLETE, RunFolder, read_staged
from thresher.curate.stage import ID, KEY, SPLIT, task_of

log = logging.getLogger(__name__)
BATCH_ROWS = 8192  # records of a data file indexed at a time


def check_references(cfg, storage: Storage) -> list[dict]:
    """Per reference of each stage: ``{stage, run, manifest_sha256}``. A reference that is not a finished run
    (no manifest, or a status other than ``succeeded``) is a ConfigError naming the stage's ``against`` key."""
    found = []
    for i, (spec, name) in enumerate(zip(cfg.stages, cfg.stage_names())):
        for uri in getattr(spec.config, "against", None) or []:
            key = f"stages.{i}.{spec.name}.against"
            manifest_uri = RunFolder(uri, storage).uri(MANIFEST)
            try:
                raw = storage.read_bytes(manifest_uri) if storage.exists(manifest_uri) else None
            except OSError as e:
                raise ConfigError(f"{key}: cannot read {manifest_uri}: {e}") from None
            if raw is None:
                raise ConfigError(f"{key}: {uri} is not a finished run (no {MANIFEST})")
            status = json.loads(raw).get("status")
            if status != "succeeded":
                raise ConfigError(f"{key}: {uri} is not a finished run (status {status!r})")
            found.append({"stage": name, "run": uri, "manifest_sha256": hashlib.sha256(raw).hexdigest()})
    return found


def build_missing_indexes(stages, storage: Storage) -> None:
    """Build the index of every reference that lacks one for its stage's options, from its data files (on Ray)."""
    for stage in stages:
        if not isinstance(stage, IndexedStage):
            continue
        for uri in stage.config.against:
            folder = RunFolder(uri, storage)
            if folder.index_parts(type(stage).name, stage.index_keys()) is None:
                log.info("%s: building the %s index of %s", stage.name, type(stage).name, uri)
                text_field = folder.load_manifest()["config"]["input"]["text_field"]
                write_index(folder, stage, text_field)


def write_index(folder: RunFolder, stage: IndexedStage, text_field: str) -> None:
    """Write ``stage``'s index of the kept records of ``folder`` (its data files, whose text field is
    ``text_field``): one part per data file, one Ray task each, then ``complete.json``."""
    stage = type(stage)(stage.config, dataclasses.replace(stage.ctx, text_field=text_field))
    files = sorted(
        (uri, dest.partition("/")[2] or None)
        for dest, uris in folder.final_files().items()
        if dest.split("/")[0] == DATA
        for uri in uris
    )
    _write_parts(folder, stage, _index_part, [(uri, split) for uri, split in files])


def write_own_indexes(
    stages: list[tuple[int, IndexedStage]], run: RunFolder, published: RunFolder, text_field: str
) -> None:
    """At commit, this run's index for each of its stages that can be a reference (``(segment, stage)``), into
    ``published`` (the folder its final files are in); ``run``: the run's folder, with its staged files."""
    kept = [p for dest, parts in run.out_parts().items() if dest.split("/")[0] == DATA for p in parts]
    for seg, stage in stages:
        if isinstance(stage, ReferenceDedup):
            items = [
                (keys.uri, [p.uri for p in kept if p.lo <= keys.hi and p.hi >= keys.lo], keys.lo, keys.hi)
                for keys in sorted(run.key_parts(seg - 1), key=lambda p: p.uri)
            ]
            _write_parts(published, stage, _index_part_from_keys, items)
        elif isinstance(stage, IndexedStage):
            write_index(published, stage, text_field)


def _write_parts(folder: RunFolder, stage: IndexedStage, part_fn, items: list[tuple]) -> None:
    """``stage``'s index in ``folder``: part ``i`` written by ``part_fn((i, *items[i], part uri), stage, storage)``
    (one Ray task each) into a folder of this build's own, then ``complete.json`` naming its parts."""
    kind, keys, build = type(stage).name, stage.index_keys(), uuid.uuid4().hex[:12]
    parts = [folder.index_part(kind, keys, build, i) for i in range(len(items))]
    rows = each_in_a_task(
        part_fn, [(i, *item, part) for i, (item, part) in enumerate(zip(items, parts))], stage, folder.storage
    )
    root = folder.index_dir(kind, keys)
    folder.storage.write_bytes(
        join(root, INDEX_COMPLETE),
        json.dumps(
            {"parts": [p[len(root) + 1 :] for p in parts], "rows": sum(rows), "options": stage.index_options()}
        ).encode(),
    )


def _index_part(item: tuple[int, str, str | None, str], stage: IndexedStage, storage: Storage) -> int:
    """Index part ``item[0]`` from data file ``item[1]`` (of split ``item[2]``), ``BATCH_ROWS`` records at a time (a
    data file can hold hundreds of MB of text)."""
    part, data_uri, split, index_uri = item
    fs, path = storage.resolve(data_uri)
    with fs.open_input_file(path) as f:
        data = pq.ParquetFile(f)
        columns = [c for c in [ID, *stage.index_columns()] if c in data.schema_arrow.names]
        tables, first = [], 0
        for batch in data.iter_batches(BATCH_ROWS, columns=columns):
            records = pa.Table.from_batches([batch])
            records = records.append_column(SPLIT, pa.array([split] * records.num_rows, pa.string()))
            table = stage.index_table(records, part)
            tables.append(
                table.set_column(
                    table.schema.get_field_index(STORED), STORED, pc.add(table[STORED], pa.scalar(first, pa.int64()))
                )
            )
            first += records.num_rows
        if not tables:
            empty = data.schema_arrow.empty_table().select(columns)
            tables.append(stage.index_table(empty.append_column(SPLIT, pa.array([], pa.string())), part))
    return _write_part(pa.concat_tables(tables), index_uri, storage)


def _index_part_from_keys(item: tuple, stage: ReferenceDedup, storage: Storage) -> int:
    """Index part ``item[0]``: the key rows of staged key file ``item[1]`` whose records are among those of the
    staged data files ``item[2]`` (from read tasks ``item[3]..item[4]``)."""
    part, keys_uri, data_uris, lo, hi, index_uri = item
    kept = [read_staged(storage, uri, [KEY])[KEY].to_numpy() for uri in data_uris]
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    tasks = task_of(kept)
    kept = kept[(tasks >= lo) & (tasks <= hi)]
    rows = read_staged(storage, keys_uri, [KEY, ID, *stage.index_key_columns()])
    rows = rows.filter(pc.is_in(rows[KEY], value_set=pa.array(kept, pa.int64())))
    return _write_part(stage.index_from_keys(rows, part), index_uri, storage)


def _write_part(table: pa.Table, uri: str, storage: Storage) -> int:
    fs, path = storage.resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs)
    return table.num_rows
