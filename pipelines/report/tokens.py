"""Whitespace token counts on UTF-8 bytes, compiled (numba): imported by ``dataset.whitespace_tokens`` when it
first runs, so only processes that count tokens load numba."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def token_counts(data: np.ndarray, offsets: np.ndarray, word_byte: np.ndarray, out: np.ndarray) -> None:
    """``out[i]``: the runs of bytes with ``word_byte`` set in ``data[offsets[i]:offsets[i + 1]]``."""
    for i in range(len(offsets) - 1):
        n = 0
        inside = False
        for j in range(offsets[i], offsets[i + 1]):
            word = word_byte[data[j]]
            if word and not inside:
                n += 1
            inside = word
        out[i] = n
