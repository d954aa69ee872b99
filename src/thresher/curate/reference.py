"""Reference runs of a run's stages (``against``): checked before any work, their indexes built where missing,
and this run's own index written at commit (``thresher.curate.dedup.reference``).

An index part is computed from one data file of the run (its id and the columns the stage's keys are computed
from), by one Ray task; the folder's ``complete.json`` comes last, so an interrupted build is redone by the next run
that needs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.core.config import ConfigError
from thresher.core.storage import MANIFEST, Storage, join
from thresher.curate.dedup.reference import IndexedStage
from thresher.curate.execution.datasets import each_in_a_task
from thresher.curate.run_folder import DATA, INDEX_COMPLETE, RunFolder
from thresher.curate.stage import ID, SPLIT

log = logging.getLogger(__name__)


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
    kind, keys = type(stage).name, stage.index_keys()
    stage = type(stage)(stage.config, dataclasses.replace(stage.ctx, text_field=text_field))
    files = sorted((uri, dest.partition("/")[2] or None) for dest, uris in folder.final_files().items()
                   if dest.split("/")[0] == DATA for uri in uris)
    folder.storage.delete(folder.index_dir(kind, keys))
    rows = each_in_a_task(_index_part, [(i, uri, split, folder.index_part(kind, keys, i))
                                        for i, (uri, split) in enumerate(files)], stage, folder.storage)
    folder.storage.write_bytes(join(folder.index_dir(kind, keys), INDEX_COMPLETE),
                               json.dumps({"parts": len(files), "rows": sum(rows),
                                           "options": stage.index_options()}).encode())


def write_own_indexes(stages, folder: RunFolder, text_field: str) -> None:
    """This run's index for each of its stages that can be a reference (at commit, into the folder its final files
    are in)."""
    for stage in stages:
        if isinstance(stage, IndexedStage):
            write_index(folder, stage, text_field)


def _index_part(item: tuple[int, str, str | None, str], stage: IndexedStage, storage: Storage) -> int:
    part, data_uri, split, index_uri = item
    fs, path = storage.resolve(data_uri)
    names = pq.read_schema(path, filesystem=fs).names
    records = pq.read_table(path, filesystem=fs, columns=[c for c in [ID, *stage.index_columns()] if c in names])
    records = records.append_column(SPLIT, pa.array([split] * records.num_rows, pa.string()))
    table = stage.index_table(records, part)
    out_fs, out_path = storage.resolve(index_uri)
    out_fs.create_dir(out_path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, out_path, filesystem=out_fs)
    return table.num_rows
