"""Word n-gram Jaccard similarity and the normalized form used to find exact duplicates among generated records."""

from __future__ import annotations

import re

import xxhash

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int) -> frozenset:
    """The set of word n-grams of ``text`` (lowercased ``\\w+`` runs); a text shorter than ``n`` words is one n-gram."""
    w = words(text)
    if len(w) < n:
        return frozenset([tuple(w)]) if w else frozenset()
    return frozenset(tuple(w[i : i + n]) for i in range(len(w) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def exact_key(text: str) -> int:
    """Hash of the text lowercased with runs of white space collapsed: equal keys are exact duplicates."""
    return xxhash.xxh64_intdigest(_SPACE.sub(" ", text.strip().lower()).encode())
