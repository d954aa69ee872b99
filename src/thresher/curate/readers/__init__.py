"""Readers, one module per format: plan read tasks over files (and byte ranges of large files) and turn each into Arrow batches.

A ``.json`` file whose content is one JSON array (as Hugging Face and LLaMA-Factory data sets ship) is read
whole, each element a record; other ``.json`` files are JSON Lines. A text field holding a chat conversation (a
list of ``{role, content}`` or ``{from, value}`` messages) is kept as its JSON text, as other non-string fields
are (``thresher.curate.fields`` reads it as a conversation).

Every record read becomes a row, including the ones that cannot be used: malformed JSON, invalid UTF-8,
a missing or non-string text field, an empty or too long document, or the unreadable remainder of a
truncated compressed file all become rows already rejected by the ``read`` stage, with the reason and
(truncated) raw input in ``detail``. Ids come from ``id_field`` when the record has one, otherwise they
are derived from the source URI and the record's byte offset (or row index), so they are stable.

Every field of every record is kept (non-string values as their JSON text), including fields that first appear
late in a file or in a file the planner did not sample: the sample only orders the columns and types the fast
path. A field named like a column of thresher's own is kept as ``record_<name>`` (``common.field_column``), an id
field's value that gives no id as a field, and a rejected non-string text as its JSON text. With ``input.fields`` only the fields listed are kept, and the records holding others are counted per
field in the manifest (``metrics.read["undeclared.<field>"]``).

Each read task measures the bytes it lost to damage, per file (``LostBytes``): a malformed, invalid UTF-8 or
non-object line its bytes with the line end (an array element its compact JSON text); a damaged range of an
uncompressed file from the offset of the chunk it lost to the range's end; a damaged compressed stream the stored
bytes the decompressor had not taken when the error surfaced, plus the decompressed bytes of the unfinished line it
had given (a truncated file loses only those: every stored byte was taken). The decompressor reads ahead by its
input buffer (8 KiB for gzip, bzip2 and xz on Python 3.11, 128 KiB for gzip from 3.12, 1 MiB for zstd): up to that
much more is lost than counted. A text file, a JSON array or a Parquet file that cannot be read loses its stored
size, a corrupt Parquet row group its compressed size in the footer. A line of a compressed file counts its
decompressed bytes against the file's stored ones: there the byte fraction overstates the loss by about the
compression ratio.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from thresher.curate.readers.common import READ_STAGE, LostBytes, ReaderSpec, ReadTask
from thresher.curate.readers.json_array import JSON_ARRAY, read_json_array
from thresher.curate.readers.jsonl import read_jsonl
from thresher.curate.readers.parquet import read_parquet
from thresher.curate.readers.planning import ReadError, infer_format, plan
from thresher.curate.readers.text import read_text
from thresher.curate.readers.wet import read_wet

__all__ = [
    "READ_STAGE",
    "READERS",
    "LostBytes",
    "ReadError",
    "ReadTask",
    "ReaderSpec",
    "infer_format",
    "plan",
    "read_task",
]

READERS = {
    "jsonl": read_jsonl,
    JSON_ARRAY: read_json_array,
    "text": read_text,
    "parquet": read_parquet,
    "wet": read_wet,
}


def read_task(task: ReadTask, spec: ReaderSpec, lost: LostBytes) -> Iterator[pa.Table]:
    """Arrow batches for one read task; every record read appears in exactly one row, and ``lost`` gets the bytes
    lost to damage."""
    yield from READERS[task.format](task, spec, lost)
