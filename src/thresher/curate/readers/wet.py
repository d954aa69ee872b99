"""WARC/WET files (Common Crawl's extracted text)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from thresher.curate.readers.common import Batcher, LostBytes, ReaderSpec, ReadTask, damaged, uri_key
from thresher.curate.readers.streams import Counted, compression, decompressing

WET_FIELDS = {
    b"warc-target-uri": "url",
    b"warc-date": "warc_date",
    b"warc-record-id": "warc_record_id",
    b"warc-identified-content-language": "warc_languages",
}


def read_wet(task: ReadTask, spec: ReaderSpec, lost: LostBytes) -> Iterator[pa.Table]:
    """WARC/WET records of type ``conversion`` (extracted text); other record types are skipped. A damaged record
    ends the file and loses the bytes from its start (in a compressed file: the decompressed bytes of it read, a
    partly read header line not counted, plus the stored bytes the decompressor had not taken); an invalid UTF-8
    body loses its bytes."""
    uri = task.uris[0]
    key = uri_key(uri)
    b = Batcher(spec)
    fs, path = spec.storage.resolve(uri)
    raw = fs.open_input_stream(path, compression=None)
    compressed = compression(uri) is not None
    stored = Counted(raw) if compressed else raw
    pos = 0
    with decompressing(stored, uri) as f, raw:
        while True:
            start = pos
            try:
                line = f.readline()
                if not line:
                    break
                pos += len(line)
                if not line.startswith(b"WARC/"):
                    continue
                headers: dict[bytes, bytes] = {}
                while (h := f.readline()) not in (b"\r\n", b"\n", b""):
                    pos += len(h)
                    name, _, value = h.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                pos += len(h)
                length = int(headers.get(b"content-length", b"0"))
                body = bytearray()  # read a block at a time: a damaged stream leaves what it gave here
                while len(body) < length and (block := f.read1(length - len(body))):
                    body += block
                    pos += len(block)
                if len(body) < length:
                    raise EOFError(f"record at {start} truncated ({len(body)} of {length} bytes)")
            except Exception as e:
                if not damaged(e):
                    raise
                b.add(f"{key}-{pos}-unreadable", None, {}, "unreadable_file", f"{uri} from offset {pos}: {e}")
                untaken = task.sizes[0] - (stored.taken if compressed else pos)
                lost.add(uri, untaken + pos - start)
                break
            if headers.get(b"warc-type") != b"conversion":
                continue
            fields = {name: headers[h].decode("utf-8", "replace") for h, name in WET_FIELDS.items() if h in headers}
            rid = fields.get("warc_record_id", "").strip("<>") or f"{key}-{start}"
            try:
                b.add(rid, body.decode("utf-8"), fields)
            except UnicodeDecodeError as e:
                b.add(rid, None, fields, "invalid_utf8", str(e))
                lost.add(uri, len(body))
            if b.full():
                yield b.flush()
    if (t := b.flush()) is not None:
        yield t
