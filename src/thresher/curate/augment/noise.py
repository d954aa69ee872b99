"""Character noise (keyboard typos) and sentence shuffling.

Typos: each letter is, with probability ``rate``, replaced by a neighbouring key of a QWERTY keyboard, deleted,
doubled, or swapped with the next letter (one of the four, uniformly); case is kept. Sentence shuffling: the text's
sentences (cut after ``.``, ``!`` or ``?`` followed by white space) in a random order other than the original;
a text of one sentence cannot be shuffled.
"""

from __future__ import annotations

import random
import re

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _key in enumerate(_row):
        near = [_row[i] for i in (_c - 1, _c + 1) if 0 <= i < len(_row)]
        near += [
            _ROWS[r][i]
            for r in (_r - 1, _r + 1)
            if 0 <= r < len(_ROWS)
            for i in (_c - 1, _c, _c + 1)
            if 0 <= i < len(_ROWS[r])
        ]
        NEIGHBOURS[_key] = "".join(near)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def typos(text: str, rate: float, rnd: random.Random) -> str:
    chars, out, i = list(text), [], 0
    while i < len(chars):
        ch = chars[i]
        lower = ch.lower()
        if lower not in NEIGHBOURS or rnd.random() >= rate:
            out.append(ch)
            i += 1
            continue
        kind = rnd.randrange(4)
        if kind == 0:
            key = rnd.choice(NEIGHBOURS[lower])
            out.append(key.upper() if ch.isupper() else key)
        elif kind == 2:
            out += [ch, ch]
        elif kind == 3 and i + 1 < len(chars):
            out += [chars[i + 1], ch]
            i += 1
        elif kind == 3:
            out.append(ch)
        i += 1
    return "".join(out)


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def shuffle_sentences(text: str, rnd: random.Random) -> str | None:
    """The sentences in another order, or None when there is only one (or all are equal)."""
    parts = sentences(text)
    if len(set(parts)) < 2:
        return None
    order = list(range(len(parts)))
    while order == sorted(order):
        rnd.shuffle(order)
    return " ".join(parts[i] for i in order)
