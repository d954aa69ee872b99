"""Batches of records as a map stage receives them from the runner, and a stage that records how it received them
(:class:`TextDtype`)."""

from __future__ import annotations

import pandas as pd

from thresher.curate.stage import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, MapStage


def batch(texts: list[str]) -> pd.DataFrame:
    """Live records with ids ``0..n-1`` and ``texts`` in ``text``, none rejected yet."""
    n = len(texts)
    return pd.DataFrame(
        {
            "id": [str(i) for i in range(n)],
            "text": texts,
            REJECT_STAGE: [None] * n,
            REJECT_REASON: [None] * n,
            REJECT_DETAIL: [None] * n,
        }
    )


class TextDtype(MapStage):
    """A test stage: sets ``text_dtype`` to the pandas dtype of the ``text`` column as the stage received it."""

    name = "test_text_dtype"

    def process(self, batch):
        batch["text_dtype"] = str(batch["text"].dtype)
        return batch
