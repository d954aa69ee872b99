"""Augmentation methods of the ``augment`` stage (``thresher.curate.stages.augment``) and of rebalance's oversampling.

Model-free methods (:mod:`.eda`, :mod:`.noise`) are functions of a text and a ``random.Random`` seeded from the run's
seed, the record's id, the method and the copy index (:func:`rng`), so a record's copies are the same on every run.
Model-backed methods (:mod:`.prompted`) render prompts that a causal LM answers through ``thresher.models.generation``.
:mod:`.similarity` holds the measures the validation of generated records uses.
"""

from __future__ import annotations

import random

import xxhash


def rng(seed: int, *parts: object) -> random.Random:
    """A random generator that depends on ``seed`` and ``parts`` only (e.g. method, record id, copy index)."""
    return random.Random(xxhash.xxh64_intdigest("\x1f".join(map(str, parts)).encode(), seed))
