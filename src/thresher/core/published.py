"""What the published files (the dataset card, the report) may say of where things are: local paths are named
relative to the folder holding the input they belong to, never with the machine's absolute path; remote URIs
(``s3://``) stay as they are."""

from __future__ import annotations

import posixpath

GLOB = frozenset("*?[")


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _base(path: str) -> str:
    """The folder a local input is named from: the parent of its last part before any glob."""
    parts = path.removeprefix("file://").rstrip("/").split("/")
    fixed = next((i for i, p in enumerate(parts) if GLOB & set(p)), len(parts))
    return "/".join(parts[: max(fixed - 1, 0)]) or "/"


def input_name(path: str) -> str:
    """An input path as published: ``/data/raw/`` -> ``raw``, ``/data/raw/*.jsonl`` -> ``raw/*.jsonl``."""
    if not _is_local(path):
        return path
    local = path.removeprefix("file://").rstrip("/")
    return posixpath.relpath(local, _base(path)) if local.startswith("/") else local


def file_name(uri: str, inputs: list[str]) -> str:
    """A file read from one of ``inputs`` as published: relative to the folder that input is named from."""
    if not _is_local(uri):
        return uri
    local = uri.removeprefix("file://")
    for path in inputs:
        base = _base(path).rstrip("/") + "/"
        if _is_local(path) and local.startswith(base):
            return local[len(base) :]
    return posixpath.basename(local)


def run_name(output: str) -> str:
    """The run folder's name (its last part)."""
    return posixpath.basename(output.rstrip("/")) or output
