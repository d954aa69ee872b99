"""Storage URIs (local paths, ``file://``, ``s3://``): one place builds the filesystems for pyarrow and Ray Data.
Any other scheme, and credentials in a URI, are config errors (:func:`check_uri`).

Credentials and endpoint come from the standard AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL[_S3]``, ``AWS_REGION``/``AWS_DEFAULT_REGION``)
unless a config's ``storage`` block names an endpoint or region.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pyarrow.fs as pafs
from pydantic import AfterValidator, Field

from thresher.core.config import ConfigError, StrictModel
from thresher.core.patterns import compile_re2
from thresher.core.secrets import redact_text

SCHEMES = ("file://", "s3://")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class UriError(ConfigError, ValueError):
    """A URI storage cannot use: a config error (exit 2), and a ValueError, so a config model's validator names the
    key it was given in."""


class StorageOptions(StrictModel):
    """The ``storage`` config block."""

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, a local server)")
    region: str | None = Field(None, description="the bucket's region (default: AWS_REGION)")


def check_scheme(uri: str) -> None:
    """UriError unless ``uri`` is a local path, or ``file://`` or ``s3://`` without credentials."""
    scheme = _SCHEME.match(uri)
    if scheme is None:
        return
    if scheme.group(0) not in SCHEMES:
        raise UriError(
            f"{redact_text(uri)}: storage reads and writes local paths, {' and '.join(SCHEMES)}, not {scheme.group(0)}"
        )
    if "@" in uri[scheme.end() :].split("/", 1)[0]:
        raise UriError(
            f"{redact_text(uri)}: put credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or "
            "~/.aws/credentials, not in the URI"
        )


def check_uri(uri: str) -> str:
    """``uri`` if storage can use it (:func:`check_scheme`; a glob's patterns compile), else UriError saying why."""
    check_scheme(uri)
    if any(c in uri for c in GLOB_CHARS):
        _glob_matchers(uri, uri.split("/"))
    return uri


StorageUri = Annotated[str, AfterValidator(check_uri)]  # a config's storage URI, checked where it is given


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI."""
    if is_s3(uri) or uri.startswith("file://"):
        return uri.rstrip("/") + "/" + "/".join(p.strip("/") for p in parts)
    return os.path.join(uri, *parts)


@dataclass(frozen=True)
class Storage:
    """Resolves URIs to (filesystem, path) pairs; picklable, so Ray tasks carry it."""

    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def from_options(cls, options: StorageOptions | None) -> Storage:
        env = os.environ
        endpoint = (options and options.endpoint_url) or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        region = (options and options.region) or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        return cls(endpoint_url=endpoint or None, region=region or None)

    def s3_filesystem(self) -> pafs.S3FileSystem:
        kwargs: dict[str, Any] = {"region": self.region or "us-east-1"}
        if self.endpoint_url:
            scheme, _, host = self.endpoint_url.partition("://")
            kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
        return pafs.S3FileSystem(**kwargs)

    def resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """The pyarrow filesystem and the filesystem-relative path of ``uri``."""
        check_scheme(uri)
        if is_s3(uri):
            return self.s3_filesystem(), uri[len("s3://") :].rstrip("/")
        if uri.startswith("file://"):
            uri = uri[len("file://") :]
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().absolute())

    # -- small helpers used by the runner and readers ------------------------------------------

    def expand(self, uri: str) -> list[tuple[str, int]]:
        """Files under a file, folder or glob URI (:func:`glob_files`) as (uri, size), sorted; hidden files
        (``.`` or ``_`` names) skipped."""
        fs, path = self.resolve(uri)
        prefix = "s3://" if is_s3(uri) else ""
        if any(c in path for c in GLOB_CHARS):
            files = glob_files(fs, path)
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.File:
                files = [info]
            elif info.type == pafs.FileType.Directory:
                infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
                files = [i for i in infos if i.type == pafs.FileType.File]
            else:
                files = []
        files = [f for f in files if not any(p.startswith((".", "_")) for p in f.path.split("/")[-1:])]
        return sorted((prefix + f.path, f.size) for f in files)

    def exists(self, uri: str) -> bool:
        fs, path = self.resolve(uri)
        found: bool = fs.get_file_info(path).type != pafs.FileType.NotFound
        return found

    def read_bytes(self, uri: str) -> bytes:
        fs, path = self.resolve(uri)
        with fs.open_input_stream(path) as f:
            data: bytes = f.read()
        return data

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write the file whole: on a local disk under a temporary hidden name, then renamed over ``uri`` (a crash
        leaves the previous file or none, never a part of one); an S3 put is all or nothing already."""
        fs, path = self.resolve(uri)
        folder = posixpath.dirname(path)
        fs.create_dir(folder, recursive=True)
        if not isinstance(fs, pafs.LocalFileSystem):
            with fs.open_output_stream(path) as f:
                f.write(data)
            return
        scratch = f"{folder}/.{posixpath.basename(path)}.{os.getpid()}-{threading.get_ident()}.tmp"
        try:
            with fs.open_output_stream(scratch) as f:
                f.write(data)
            fs.move(scratch, path)
        except BaseException:
            if fs.get_file_info(scratch).type != pafs.FileType.NotFound:
                fs.delete_file(scratch)
            raise

    def delete(self, uri: str) -> None:
        """Remove a file or a folder tree if present."""
        fs, path = self.resolve(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)

    def move(self, source: str, target: str) -> None:
        """Move a file or folder tree to ``target`` (which must not exist): a rename on a local disk; on S3 each
        object is copied (server side, in parallel), then the source removed."""
        fs, src = self.resolve(source)
        _, dst = self.resolve(target)
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(posixpath.dirname(dst), recursive=True)
            fs.move(src, dst)
            return
        info = fs.get_file_info(src)
        files = (
            [info]
            if info.type == pafs.FileType.File
            else [f for f in fs.get_file_info(pafs.FileSelector(src, recursive=True)) if f.type == pafs.FileType.File]
        )
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda f: fs.copy_file(f.path, dst + f.path[len(src) :]), files))
        self.delete(source)

    def check_writable(self, uri: str) -> None:
        """Create and remove a probe file under ``uri``; raises OSError when that is not possible. Local folders made
        for the probe go with it: a run that fails before it writes leaves no empty output folder."""
        fs, path = self.resolve(uri)
        local = isinstance(fs, pafs.LocalFileSystem)
        made = [p for p in [Path(path), *Path(path).parents] if not p.exists()] if local else []
        probe = join(uri, ".thresher-write-probe")
        self.write_bytes(probe, b"")
        self.delete(probe)
        for folder in made:  # innermost first
            try:
                folder.rmdir()
            except OSError:  # something else wrote there meanwhile
                break


GLOB_CHARS = "*?["
HIDDEN = (".", "_")  # names a wildcard does not match (a pattern that starts with the same character does)


def _segment_regex(segment: str) -> str:
    """One path segment's pattern as a regular expression: ``*`` and ``?`` never cross a ``/``, ``[...]`` and
    ``[!...]`` as in a shell."""
    out, i = [], 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            start = i + 1 + (segment[i + 1 : i + 2] == "!")
            end = segment.find("]", start + (segment[start : start + 1] == "]"))
            if end < 0:
                out.append(re.escape(c))
            else:
                body = segment[start:end].replace("\\", "\\\\")
                out.append(f"[^/{body}]" if segment[i + 1] == "!" else f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _tail_regex(parts: list[str]) -> str:
    """The pattern of the segments below a ``**``, as a regular expression over a relative path: ``**`` matches
    zero or more folders (a last ``**``: every file below)."""
    pieces = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            pieces.append("(?:[^/]+/)*[^/]+" if last else "(?:[^/]+/)*")
        else:
            pieces.append(_segment_regex(part) + ("" if last else "/"))
    return "".join(pieces) if parts else "(?:[^/]+/)*[^/]+"


def _glob_matchers(pattern: str, parts: list[str]) -> list[Any]:
    """Per part of ``pattern``: its segment's regex or, at a ``**``, the regex of the path below, compiled by RE2
    (linear time on any name); UriError when one does not compile (``[z-a]``)."""
    try:
        return [compile_re2(_tail_regex(parts[i:]) if p == "**" else _segment_regex(p)) for i, p in enumerate(parts)]
    except ValueError as e:
        raise UriError(f"{pattern}: not a valid glob ({e})") from None


def glob_files(fs: pafs.FileSystem, pattern: str) -> list[pafs.FileInfo]:
    """The files matching ``pattern`` as a shell matches it (``*``, ``?``, ``[...]`` within one path segment;
    ``**`` as a whole segment: any depth); wildcards skip hidden names (``HIDDEN``: ``.`` as in a shell, ``_`` as
    in Spark's ``_temporary``). Folders are listed one level at a time down to the first ``**``, so no listing goes
    deeper than the pattern reaches (on S3: delimited listings of the matching prefixes only)."""
    parts = pattern.split("/")
    first = next(i for i, p in enumerate(parts) if any(c in p for c in GLOB_CHARS) or p == "**")
    return _walk(fs, "/".join(parts[:first]), parts[first:], _glob_matchers(pattern, parts[first:]))


def _walk(fs: pafs.FileSystem, folder: str, parts: list[str], matchers: list[Any]) -> list[pafs.FileInfo]:
    if parts[0] == "**":
        infos = fs.get_file_info(pafs.FileSelector(folder or ".", recursive=True, allow_not_found=True))
        skip = len(folder) + 1 if folder else 0
        return [
            i
            for i in infos
            if i.type == pafs.FileType.File
            and matchers[0].fullmatch(i.path[skip:])
            and not any(p.startswith(HIDDEN) for p in i.path[skip:].split("/"))
        ]
    out = []
    for info in fs.get_file_info(pafs.FileSelector(folder or ".", recursive=False, allow_not_found=True)):
        if not matchers[0].fullmatch(info.base_name) or (
            info.base_name.startswith(HIDDEN) and info.base_name[0] != parts[0][0]
        ):
            continue
        if len(parts) == 1:
            if info.type == pafs.FileType.File:
                out.append(info)
        elif info.type == pafs.FileType.Directory:
            out += _walk(fs, info.path, parts[1:], matchers[1:])
    return out


MANIFEST = "manifest.json"
PROGRESS = "_progress"  # a thresher run's markers, removed at commit (thresher.curate.run_folder)
STAGING = "_staging"


def run_root(data_uri: str) -> str | None:
    """The folder above a ``data/`` or ``data/<split>/`` URI (None if not one): where a thresher run keeps its
    manifest and markers."""
    parts = data_uri.rstrip("/").split("/")
    for i in (len(parts) - 1, len(parts) - 2):
        if i > 0 and parts[i] == "data":
            return "/".join(parts[:i]) or "/"
    return None


def require_complete_run(storage: Storage, data_uri: str) -> None:
    """Refuse to read the data of an unfinished thresher run (its markers and no ``manifest.json``) or of a run
    whose manifest says a gate failed. Any other Parquet (a Hugging Face dataset's ``data/``) is read as it is."""
    from thresher.core.config import ConfigError

    root = run_root(data_uri)
    if root is None:
        return
    manifest = join(root, MANIFEST)
    if storage.exists(manifest):
        run = json.loads(storage.read_bytes(manifest))
        if run.get("status") == "gate_failed":
            failed = "; ".join(
                f"{g['gate']} (measured {g['measured']}, limit {g['limit']})"
                for g in run.get("gates", [])
                if not g["ok"]
            )
            raise ConfigError(f"{data_uri}: the run at {root} failed its gates: {failed}; refusing to read it")
    elif any(storage.exists(join(root, marker)) for marker in (PROGRESS, STAGING)):
        raise ConfigError(f"{data_uri}: the run at {root} has no {MANIFEST}: it did not complete; refusing to read it")
