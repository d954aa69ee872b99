"""The review queue of a finished run, for annotation tools: JSONL, CSV and Label Studio task JSON.

The records of ``data/<review split>/`` (every field, plus ``rank`` and ``uncertainty`` = 1 - label_confidence,
1 without annotations) ordered from the most uncertain: uncertainty descending, then share of agreeing annotation
pairs ascending, then id, written to ``review_queue.jsonl``, ``review_queue.csv`` and
``review_queue.label_studio.json``. A review queue is sized for people (thousands of items), so the export loads
the review split in this process and sorts it there; nothing runs on Ray.

Label Studio tasks: ``{"data": {record fields}, "predictions": [{"model_version", "score", "result": [a choices
result with the consensus label]}]}`` (no prediction where there is no label); ``from_name``/``to_name`` name the
choices and text tags of the labeling config.

    python -m thresher.curate.labels.export RUN_URI [--output URI] [--format jsonl --format csv ...]

``labels: {export_review: true}`` writes the same files to ``<run>/review_queue/`` during the run, before it is
committed (:func:`write_review_queue` on the run's final files).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.core.storage import Storage, join
from thresher.curate.run_folder import DATA, REVIEW, RunFolder

FORMATS = ("jsonl", "csv", "label_studio")
FILES = {"jsonl": "review_queue.jsonl", "csv": "review_queue.csv", "label_studio": "review_queue.label_studio.json"}
UNCERTAINTY = "uncertainty"
AGREEMENT_KEY = "_agreement"


def _with_sort_keys(table: pa.Table) -> pa.Table:
    """``uncertainty`` and the agreement to sort by (no agreement: 0, first among equals)."""
    confidence = pc.fill_null(table["label_confidence"].cast(pa.float64()), 0.0)
    return table.append_column(UNCERTAINTY, pc.subtract(1.0, confidence)).append_column(
        AGREEMENT_KEY, pc.fill_null(table["label_agreement"].cast(pa.float64()), 0.0)
    )


def export_review_queue(
    run_uri: str,
    storage: Storage,
    output: str | None = None,
    formats: tuple[str, ...] = FORMATS,
    from_name: str = "label",
    to_name: str = "text",
) -> dict:
    """Write the review queue of the finished run ``run_uri`` (to ``output``, default ``<run>/review_queue``);
    returns ``{"items": n, "files": [...]}``."""
    folder = RunFolder(run_uri, storage)
    labels = folder.load_manifest().get("metrics", {}).get("labels")
    if not labels:
        raise ValueError(f"{run_uri}: the run has no labels stage")
    uris = folder.final_files().get(f"{DATA}/{labels['consensus']['review_split']}", [])
    return write_review_queue(uris, storage, output or join(run_uri, REVIEW), formats, from_name, to_name)


def write_review_queue(
    uris: list[str],
    storage: Storage,
    output: str,
    formats: tuple[str, ...] = FORMATS,
    from_name: str = "label",
    to_name: str = "text",
) -> dict:
    """Write the review queue held by the Parquet files ``uris`` (a review split) to the folder ``output``."""
    tables = [_with_sort_keys(pq.read_table(path, filesystem=fs)) for fs, path in map(storage.resolve, uris)]
    rows = []
    if tables:
        queue = pa.concat_tables(tables, promote_options="permissive").sort_by(
            [(UNCERTAINTY, "descending"), (AGREEMENT_KEY, "ascending"), ("id", "ascending")]
        )
        for rank, row in enumerate(queue.drop_columns([AGREEMENT_KEY]).to_pylist(), 1):
            rows.append({"rank": rank, "id": row.pop("id"), UNCERTAINTY: round(row.pop(UNCERTAINTY), 6), **row})
    for fmt in formats:
        fs, path = storage.resolve(join(output, FILES[fmt]))
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as stream:
            writer = _Writer(fmt, stream, from_name, to_name)
            for row in rows:
                writer.add(row)
            writer.finish()
    return {"items": len(rows), "files": [join(output, FILES[fmt]) for fmt in formats]}


class _Writer:
    """One format, written to its stream row by row."""

    def __init__(self, fmt: str, stream, from_name: str, to_name: str):
        self.fmt, self.stream, self.from_name, self.to_name = fmt, stream, from_name, to_name
        self.csv_columns: list[str] | None = None
        self.first = True
        if fmt == "label_studio":
            self._write("[")

    def _write(self, text: str) -> None:
        self.stream.write(text.encode())

    def add(self, row: dict) -> None:
        if self.fmt == "jsonl":
            self._write(json.dumps(row, ensure_ascii=False, default=_plain) + "\n")
        elif self.fmt == "csv":
            line = io.StringIO()
            writer = csv.writer(line)
            if self.csv_columns is None:
                self.csv_columns = list(row)
                writer.writerow(self.csv_columns)
            writer.writerow(
                [
                    json.dumps(v, default=_plain) if isinstance(v, (list, dict)) else v
                    for v in (row.get(c) for c in self.csv_columns)
                ]
            )
            self._write(line.getvalue())
        else:
            task = {"data": row}
            if row.get("label") is not None:
                task["predictions"] = [
                    {
                        "model_version": "thresher-labels",
                        "score": row.get("label_confidence"),
                        "result": [
                            {
                                "from_name": self.from_name,
                                "to_name": self.to_name,
                                "type": "choices",
                                "value": {"choices": [row["label"]]},
                            }
                        ],
                    }
                ]
            self._write(("" if self.first else ",\n") + json.dumps(task, ensure_ascii=False, default=_plain))
            self.first = False

    def finish(self) -> None:
        if self.fmt == "label_studio":
            self._write("]\n")


def _plain(value):
    return value.item() if isinstance(value, np.generic) else str(value)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thresher.curate.labels.export", description=__doc__.splitlines()[0])
    p.add_argument("run_uri")
    p.add_argument("--output", help="folder for the files (default: RUN_URI/review_queue)")
    p.add_argument("--format", action="append", choices=FORMATS, help="default: all")
    p.add_argument("--from-name", default="label", help="Label Studio: name of the choices tag")
    p.add_argument("--to-name", default="text", help="Label Studio: name of the text tag")
    args = p.parse_args(argv)
    result = export_review_queue(
        args.run_uri,
        Storage.from_options(None),
        args.output,
        tuple(args.format or FORMATS),
        args.from_name,
        args.to_name,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
