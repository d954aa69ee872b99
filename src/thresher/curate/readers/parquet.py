"""Parquet files, row group by row group."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.curate.readers.common import Batcher, LostBytes, ReaderSpec, ReadTask, damaged, record_id, uri_key


def read_parquet(task: ReadTask, spec: ReaderSpec, lost: LostBytes) -> Iterator[pa.Table]:
    """Row group by row group; a file whose footer cannot be read loses its size, a corrupt row group its
    compressed size."""
    uri = task.uris[0]
    key = uri_key(uri)
    fs, path = spec.storage.resolve(uri)
    b = Batcher(spec)
    try:
        pf = pq.ParquetFile(fs.open_input_file(path))
    except Exception as e:
        if not damaged(e):
            raise
        b.add(f"{key}-unreadable", None, {}, "unreadable_file", f"{uri}: {e}")
        lost.add(uri, task.sizes[0])
        yield b.flush()
        return
    row = 0
    for rg in range(pf.num_row_groups):
        try:
            records = pf.read_row_group(rg).to_pylist()
        except Exception as e:
            if not damaged(e):
                raise
            b.add(f"{key}-rg{rg}-unreadable", None, {}, "unreadable_file", f"{uri} row group {rg}: {e}")
            group = pf.metadata.row_group(rg)
            lost.add(uri, sum(group.column(c).total_compressed_size for c in range(group.num_columns)))
            continue
        for rec in records:
            fields = spec.record_fields(rec)
            rid = record_id(spec, rec, f"{key}-{row}")
            row += 1
            text = rec.get(spec.text_field)
            if text is None:
                b.add(rid, None, fields, "missing_text", f"no field {spec.text_field!r}")
            elif not isinstance(text, str):
                b.add(rid, None, fields, "non_string_text", f"{spec.text_field} is {type(text).__name__}")
            else:
                b.add(rid, text, fields)
            if b.full():
                yield b.flush()
    if (t := b.flush()) is not None:
        yield t
