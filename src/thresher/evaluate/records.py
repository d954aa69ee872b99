"""The records an evaluation reads: Parquet (a thresher run's split, or any Parquet) or JSON Lines, in data order.

JSON Lines are read by the driver, line by line, so that no line is lost to a reader that takes a file whole or not
at all: a line that is not a JSON object (malformed JSON, invalid UTF-8, another JSON value) becomes a record holding
only its reason (``READ_REASON``) and where it was (``READ_DETAIL``), which the generation sets aside with the
records it cannot evaluate (:func:`thresher.evaluate.generate.unusable`). A field whose values are not all of one
type (an answer given as a number in some records, as text in others) keeps its strings and holds the JSON text of
the others. A ``.json`` file holding one JSON array gives its elements.
"""

from __future__ import annotations

import codecs
import os

import orjson
import pyarrow as pa

from thresher.core.config import ConfigError
from thresher.core.groups import year_field
from thresher.core.json_values import load_json
from thresher.core.storage import Storage, require_complete_run
from thresher.curate.readers.common import DETAIL_CHARS, field_text
from thresher.curate.readers.planning import is_json_array
from thresher.curate.readers.streams import open_stream
from thresher.evaluate.eval_config import LENGTH_BUCKET, EvalConfig
from thresher.evaluate.generate import READ_DETAIL, READ_REASON, source_columns
from thresher.train.data import record_count

JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
JSON_BLOCKS = 64  # the blocks JSON Lines records are put in (Ray Data's reader split a file into several too)


def open_records(uri: str, storage: Storage, key: str, max_rows: int | None = None):
    """The records of the Parquet (else JSON Lines) files at ``uri``, a complete thresher run's folder where it is one
    (a config error naming ``key`` otherwise), in data order: the first ``max_rows`` when given, read from the
    Parquet files that hold them (by their footers' row counts).

    Parquet files are read whole before a schema or a row limit looks at them: either, on the reading pipeline,
    cancels the read tasks still running once it has its rows, and a cancellation that races a task's reply can
    abort the driver (a Ray bug: "Tried to complete task that was not pending"); on the blocks read, the limit runs
    no task."""
    import ray.data

    files = [f for f, _ in storage.expand(uri)]
    parquet = [f for f in files if f.endswith(".parquet")]
    jsonl = [f for f in files if f.endswith(JSON_SUFFIXES)]
    if not parquet and not jsonl:
        raise ConfigError(f"{key}: no Parquet or JSONL files at {uri}")
    try:
        require_complete_run(storage, uri)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
    if not parquet:  # in blocks, for the generation's actors to share
        table = json_records(jsonl, storage, max_rows)
        step = max(1, -(-table.num_rows // JSON_BLOCKS))
        return ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)] or [table])
    if max_rows:
        parquet = leading_files(parquet, max_rows, storage)
    fs, _ = storage.resolve(parquet[0])
    ds = ray.data.read_parquet([storage.resolve(f)[1] for f in parquet], filesystem=fs)
    ds.context.execution_options.preserve_order = True
    ds = ds.materialize()
    return ds.limit(max_rows) if max_rows else ds


def leading_files(files: list[str], rows: int, storage: Storage) -> list[str]:
    """The first of the Parquet ``files`` that hold ``rows`` rows between them (all of them when they hold fewer)."""
    total = 0
    for i, file in enumerate(files):
        total += record_count([file], storage)
        if total >= rows:
            return files[: i + 1]
    return files


def json_records(files: list[str], storage: Storage, max_rows: int | None = None) -> pa.Table:
    """The records of the JSON Lines (or JSON array) ``files``, the first ``max_rows`` when given, as a table (the
    module's docstring); blank lines are not records."""
    records: list[dict] = []
    folder = os.path.commonprefix([f.rsplit("/", 1)[0] + "/" for f in files])
    folder = folder[: folder.rfind("/") + 1]  # a record's detail names its file below it: no machine's path
    for file in files:
        shown = file[len(folder) :]
        if is_json_array(storage, file):
            with open_stream(storage, file) as f:
                records += _array_records(f.read(), shown)
            continue
        with open_stream(storage, file) as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    records.append(_record(line.removeprefix(codecs.BOM_UTF8), f"{shown}:{number}"))
                if max_rows and len(records) >= max_rows:
                    break
        if max_rows and len(records) >= max_rows:
            break
    return _table(records[:max_rows] if max_rows else records)


def _record(line: bytes, where: str) -> dict:
    try:
        value = load_json(line)
    except orjson.JSONDecodeError as e:
        try:
            line.decode()
        except UnicodeDecodeError:
            return _unread("invalid_utf8", where, line)
        return _unread("malformed_json", where, line, str(e))
    if not isinstance(value, dict):
        return _unread("not_an_object", where, line)
    return value


def _array_records(data: bytes, file: str) -> list[dict]:
    try:
        values = load_json(data.removeprefix(codecs.BOM_UTF8))
    except orjson.JSONDecodeError as e:
        return [_unread("malformed_json", file, data, str(e))]
    return [v if isinstance(v, dict) else _unread("not_an_object", f"{file}[{i}]", v) for i, v in enumerate(values)]


def _unread(reason: str, where: str, value, error: str = "") -> dict:
    shown = value[: 4 * DETAIL_CHARS].decode(errors="replace") if isinstance(value, bytes) else field_text(value)
    return {READ_REASON: reason, READ_DETAIL: f"{where}: {error + ': ' if error else ''}{shown.strip()}"[:DETAIL_CHARS]}


def _table(records: list[dict]) -> pa.Table:
    """``records`` as a table: a field's values as Arrow types them, else its strings kept and the other values as
    their JSON text."""
    names = list(dict.fromkeys(k for r in records for k in r))
    columns = {}
    for name in names:
        values = [r.get(name) for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            columns[name] = pa.array([field_text(v) for v in values], pa.string())
    return pa.table(columns) if names else pa.table({READ_REASON: pa.array([], pa.string())})


def read_dataset(cfg: EvalConfig, storage: Storage):
    """A Ray Dataset of the evaluation records (Parquet or JSONL at ``data.path``), checked before any Ray work."""
    uri, columns = cfg.data.path, source_columns(cfg.data)
    if cfg.data.format == "text" and not cfg.data.reference_field:
        raise ConfigError("data.reference_field: format text needs the column holding the expected continuation")
    ds = open_records(uri, storage, "data.path", cfg.data.max_rows)
    names = ds.schema().names
    missing = [c for c in columns if c not in names]
    if missing:
        raise ConfigError(
            f"data.format: format {cfg.data.format} reads column(s) {', '.join(missing)}, which "
            f"{uri} lacks (columns: {', '.join(n for n in names if n not in (READ_REASON, READ_DETAIL))})"
        )
    for i, spec in enumerate(cfg.slices):
        field = None if spec == LENGTH_BUCKET else year_field(spec) or spec
        if field is not None and field not in names:
            raise ConfigError(f"slices.{i}: {uri} has no field {field} (columns: {', '.join(names)})")
    read = list(dict.fromkeys(columns + cfg.slice_fields()))
    read += [c for c in (cfg.data.id_field, READ_REASON, READ_DETAIL) if c in names and c not in read]
    return ds.select_columns(read)
