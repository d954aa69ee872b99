"""Lineage: which curated data (a thresher run's manifest digests and config hash) a model or an evaluation read."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from thresher.core.storage import MANIFEST, Storage, join, run_root


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the config as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def data_lineage(uri: str, storage: Storage) -> dict[str, Any]:
    """The data at ``uri``: its path and, when it is a thresher run's ``data/`` (or ``data/<split>/``), the run's
    folder, manifest digests and curation config hash; those are None for any other data."""
    root = run_root(uri)
    manifest_uri = join(root, MANIFEST) if root is not None else None
    if manifest_uri is None or not storage.exists(manifest_uri):
        return {"path": uri, "run": None, "digests": None, "config_hash": None}
    manifest = json.loads(storage.read_bytes(manifest_uri))
    return {
        "path": uri,
        "run": root,
        "digests": manifest.get("digests"),
        "config_hash": config_hash(manifest.get("config") or {}),
    }
