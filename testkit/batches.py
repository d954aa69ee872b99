"""Batches of records as a map stage receives them from the runner."""

from __future__ import annotations

import pandas as pd

from thresher.curate.stage import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE


def batch(texts: list[str]) -> pd.DataFrame:
    """Live records with ids ``0..n-1`` and ``texts`` in ``text``, none rejected yet."""
    n = len(texts)
    return pd.DataFrame({"id": [str(i) for i in range(n)], "text": texts, REJECT_STAGE: [None] * n,
                         REJECT_REASON: [None] * n, REJECT_DETAIL: [None] * n})
