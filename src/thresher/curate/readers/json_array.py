"""A ``.json`` file whose content is one JSON array (as Hugging Face and LLaMA-Factory data sets ship), read whole,
each element a record."""

from __future__ import annotations

import codecs
from collections.abc import Iterator

import pyarrow as pa

from thresher.core.json_values import json_text, load_json
from thresher.core.storage import Storage
from thresher.curate.readers.common import Batcher, LostBytes, ReaderSpec, ReadTask, damaged, uri_key
from thresher.curate.readers.jsonl import add_json_line
from thresher.curate.readers.streams import open_stream

JSON_ARRAY = "json_array"  # a .json file holding one array of records (detected, not configured)


def load_json_array(storage: Storage, uri: str) -> list:
    with open_stream(storage, uri) as f:
        records = load_json(f.read().removeprefix(codecs.BOM_UTF8))
    if not isinstance(records, list):
        raise ValueError(f"{uri} is not a JSON array")
    return records


def read_json_array(task: ReadTask, spec: ReaderSpec, lost: LostBytes) -> Iterator[pa.Table]:
    """A whole file holding one JSON array; element i is the record at offset i."""
    uri = task.uris[0]
    key = uri_key(uri)
    b = Batcher(spec)
    try:
        records = load_json_array(spec.storage, uri)
    except Exception as e:
        if not damaged(e):
            raise
        b.add(f"{key}-unreadable", None, {}, "unreadable_file", f"{uri}: {e}")
        lost.add(uri, task.sizes[0])
        records = []
    for i, rec in enumerate(records):
        if add_json_line(b, spec, key, i, element := json_text(rec).encode()):
            lost.add(uri, len(element))
        if b.full():
            yield b.flush()
    if (t := b.flush()) is not None:
        yield t
