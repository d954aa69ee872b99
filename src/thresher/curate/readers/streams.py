"""Compressed files (gzip, zstd, bzip2, xz by extension) as binary streams of their decompressed bytes."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma

import zstandard

from thresher.core.storage import Storage

COMPRESSED = (".gz", ".zst", ".zstd", ".bz2", ".xz")


def compression(uri: str) -> str | None:
    for ext in COMPRESSED:
        if uri.lower().endswith(ext):
            return ext
    return None


def open_stream(storage: Storage, uri: str):
    """A decompressing binary stream over the whole file."""
    fs, path = storage.resolve(uri)
    return decompressing(fs.open_input_stream(path, compression=None), uri)


def decompressing(raw, uri: str):
    """A binary stream of ``raw``'s bytes, decompressed as ``uri``'s extension says."""
    comp = compression(uri)
    if comp == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if comp in (".zst", ".zstd"):
        return io.BufferedReader(_ZstdStream(raw), buffer_size=1 << 20)
    if comp == ".bz2":
        return bz2.BZ2File(raw)
    if comp == ".xz":
        return lzma.LZMAFile(raw)
    return io.BufferedReader(raw, buffer_size=1 << 20)


class Counted:
    """A stored (compressed) stream that counts the bytes a decompressor took from it."""

    def __init__(self, raw):
        self.raw, self.taken = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.taken += len(data)
        return data

    def close(self) -> None:
        self.raw.close()


class _ZstdStream(io.RawIOBase):
    """Decompresses a stream of concatenated zstd frames; one that ends inside a frame (a truncated file) raises
    EOFError, where zstandard's own stream reader would just end."""

    def __init__(self, raw):
        self.raw, self.frame = raw, zstandard.ZstdDecompressor().decompressobj()
        self.in_frame, self.pending, self.offset = False, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.offset >= len(self.pending):
            chunk = self.raw.read(1 << 20)
            if not chunk:
                if self.in_frame:
                    raise EOFError("compressed data ends inside a zstd frame (truncated file)")
                return 0
            self.pending, self.offset = self._decompress(chunk), 0
        n = min(len(buffer), len(self.pending) - self.offset)
        buffer[:n] = self.pending[self.offset : self.offset + n]
        self.offset += n
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            self.in_frame = True
            out.append(self.frame.decompress(data))
            data = b""
            if self.frame.eof:
                data, self.in_frame = self.frame.unused_data, False
                self.frame = zstandard.ZstdDecompressor().decompressobj()
        return b"".join(out)

    def close(self) -> None:
        self.raw.close()
        super().close()
