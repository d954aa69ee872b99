"""EDA (Wei & Zou, 2019, "EDA: Easy Data Augmentation Techniques for Boosting Performance on Text Classification
Tasks"): synonym replacement, random insertion, random swap and random deletion, on whitespace-separated words.

As in the paper, with ``alpha`` and a text of ``l`` words, replacement, insertion and swap change
``max(1, round(alpha * l))`` words, and deletion drops each word with probability ``alpha``; each generated copy
applies one operation, copy ``j`` the ``(h + j) % len(operations)``-th where ``h`` is drawn from the record's random
generator. Unlike the paper's reference code the text is not lowercased nor stripped of punctuation: a word keeps
its leading and trailing punctuation and its capitalization when replaced. Synonyms: :mod:`.synonyms` (English;
words of other languages rarely have any, so replacement and insertion then change nothing and the copy is not
made). Stop words (``src/thresher/curate/filters/stopwords/en.txt``) are never replaced.
"""

from __future__ import annotations

import random
import re

from thresher.curate.augment.synonyms import synonyms
from thresher.curate.filters.text import stop_words

OPERATIONS = ("synonym", "insert", "swap", "delete")
_CORE = re.compile(r"([^A-Za-z]*)([A-Za-z]+)([^A-Za-z]*)")  # punctuation, a plain word, punctuation
_STOPS = stop_words("en") or frozenset()


def _parts(token: str) -> tuple[str, str, str] | None:
    m = _CORE.fullmatch(token)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def _cased(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word.capitalize() if like[0].isupper() else word


def _candidates(tokens: list[str]) -> list[tuple[int, tuple[str, ...]]]:
    """Positions of replaceable words with their synonyms."""
    out = []
    for i, token in enumerate(tokens):
        parts = _parts(token)
        if parts and parts[1].lower() not in _STOPS:
            syns = synonyms(parts[1].lower())
            if syns:
                out.append((i, syns))
    return out


def synonym_replacement(tokens: list[str], n: int, rnd: random.Random) -> list[str]:
    tokens = list(tokens)
    candidates = _candidates(tokens)
    rnd.shuffle(candidates)
    for i, syns in candidates[:n]:
        pre, word, post = _parts(tokens[i])
        tokens[i] = pre + _cased(rnd.choice(syns), word) + post
    return tokens


def random_insertion(tokens: list[str], n: int, rnd: random.Random) -> list[str]:
    tokens = list(tokens)
    candidates = _candidates(tokens)
    for _ in range(n if candidates else 0):
        _, syns = rnd.choice(candidates)
        tokens.insert(rnd.randrange(len(tokens) + 1), rnd.choice(syns))
    return tokens


def random_swap(tokens: list[str], n: int, rnd: random.Random) -> list[str]:
    tokens = list(tokens)
    for _ in range(n if len(tokens) > 1 else 0):
        i, j = rnd.sample(range(len(tokens)), 2)
        tokens[i], tokens[j] = tokens[j], tokens[i]
    return tokens


def random_deletion(tokens: list[str], p: float, rnd: random.Random) -> list[str]:
    if len(tokens) <= 1:
        return list(tokens)
    kept = [t for t in tokens if rnd.random() >= p]
    return kept or [rnd.choice(tokens)]


def eda(text: str, operation: str, alpha: float, rnd: random.Random) -> str:
    """``text`` with one EDA operation applied (the text itself when the operation can change nothing)."""
    lines = text.split("\n")  # keep the line structure; operate on the words of each line
    out = []
    for line in lines:
        tokens = line.split()
        if not tokens:
            out.append(line)
            continue
        n = max(1, round(alpha * len(tokens)))
        if operation == "synonym":
            tokens = synonym_replacement(tokens, n, rnd)
        elif operation == "insert":
            tokens = random_insertion(tokens, n, rnd)
        elif operation == "swap":
            tokens = random_swap(tokens, n, rnd)
        else:
            tokens = random_deletion(tokens, alpha, rnd)
        out.append(" ".join(tokens))
    return "\n".join(out)
