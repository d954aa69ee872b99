"""Plain text files, one record per file."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from thresher.curate.readers.common import Batcher, LostBytes, ReaderSpec, ReadTask, damaged, uri_key
from thresher.curate.readers.streams import open_stream


def read_text(task: ReadTask, spec: ReaderSpec, lost: LostBytes) -> Iterator[pa.Table]:
    """One record per file; a file that cannot be read or decoded loses its stored size."""
    b = Batcher(spec)
    for uri, size in zip(task.uris, task.sizes):
        rid = f"{uri_key(uri)}-0"
        try:
            with open_stream(spec.storage, uri) as f:
                data = f.read()
        except Exception as e:
            if not damaged(e):
                raise
            b.add(rid, None, {"path": uri}, "unreadable_file", f"{uri}: {e}")
            lost.add(uri, size)
            continue
        try:
            b.add(rid, data.decode("utf-8"), {"path": uri})
        except UnicodeDecodeError as e:
            b.add(rid, None, {"path": uri}, "invalid_utf8", f"{uri}: {e}")
            lost.add(uri, size)
        if b.full():
            yield b.flush()
    if (t := b.flush()) is not None:
        yield t
