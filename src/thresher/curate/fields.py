"""The record fields a text stage acts on: ``fields`` of normalize, pii, langid, quality and decontaminate.

A field's value holds text when it is a string, or a chat conversation: a list of ``{role, content}`` messages
(ShareGPT's ``{from, value}`` too), as a list or as the JSON text the readers keep non-string values as. A
conversation's texts are its messages' contents; an edit replaces them and keeps the rest of each message and
the value's form (list or JSON text). Other values (null, numbers) hold no text: a record where a listed field is
null has nothing to do there. A listed field that is not a column of the records (a typo: the readers give every
batch the same columns) rejects every record with reason ``missing_field``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson
import pandas as pd
from pydantic import Field, field_validator

from thresher.core.json_values import json_text, load_json
from thresher.curate.stage import ID, StageConfig, reject

ALL = "all"  # pii's fields: every text column
JOIN = "\n\n"  # between the texts of one record, where a stage decides on them together


class TextFieldsConfig(StageConfig):
    """Base of the text stages' options: ``fields``, a list of names or one name."""

    fields: list[str] | None = Field(
        None,
        min_length=1,
        description=(
            "record fields to act on (a field holding chat messages: their contents); default: the input's text field"
        ),
    )

    @field_validator("fields", mode="before")
    @classmethod
    def _fields_as_list(cls, v):
        return [v] if isinstance(v, str) and v != ALL else v

    def field_names(self, batch: pd.DataFrame, text_field: str) -> list[str]:
        """The fields to act on in ``batch``: ``all`` is every text column but the id and internal ones."""
        if self.fields == ALL:
            return [
                c for c in batch.columns if c != ID and not c.startswith("_") and pd.api.types.is_string_dtype(batch[c])
            ]
        return self.fields or [text_field]


def reject_missing(batch: pd.DataFrame, names: list[str]) -> bool:
    """Reject every record with ``missing_field`` when a field in ``names`` is not a column; True if so."""
    missing = [f for f in dict.fromkeys(names) if f not in batch.columns]
    if missing:
        columns = ", ".join(c for c in batch.columns if not c.startswith("_"))
        reject(
            batch, np.ones(len(batch), bool), "missing_field", f"no field {missing} in the records (columns: {columns})"
        )
    return bool(missing)


def _content_key(message: dict) -> str:
    return "content" if "content" in message else "value"


def conversation(value) -> list[dict] | None:
    """The messages of a chat conversation (a list, or its JSON text), or None when ``value`` is not one."""
    if isinstance(value, str):
        if not (value.startswith("[") and value.endswith("]")):
            return None
        try:
            value = load_json(value)
        except orjson.JSONDecodeError:
            return None
    elif isinstance(value, (tuple, np.ndarray)):  # an Arrow list column reads as an array
        value = list(value)
    if (
        isinstance(value, list)
        and value
        and all(isinstance(m, dict) and isinstance(m.get(_content_key(m)), str) for m in value)
    ):
        return value
    return None


def _same(texts: list[str]):
    return texts[0]


def unpack(value) -> tuple[list[str], Callable[[list[str]], object]]:
    """The texts of a field value, and a function that puts edited texts (same number, same order) back."""
    messages = conversation(value)
    if messages is None:
        return ([value], _same) if isinstance(value, str) else ([], lambda texts: value)

    def pack(texts: list[str]):
        if texts == [m[_content_key(m)] for m in messages]:
            return value
        edited = [{**m, _content_key(m): t} for m, t in zip(messages, texts)]
        return json_text(edited) if isinstance(value, str) else edited

    return [m[_content_key(m)] for m in messages], pack


def assign(batch: pd.DataFrame, name: str, values: list) -> None:
    """Set column ``name`` to ``values``, keeping a text column's dtype (so a column of nulls stays text); any other
    column (an Arrow-backed one too: Python strings are what the next stages read fastest) as Python objects, a
    missing value as None (``pd.NA``, which an Arrow-backed column yields for a null, is no value Ray Data converts
    back to Arrow: it would store the column as pickled objects)."""
    dtype = batch[name].dtype
    if isinstance(dtype, pd.StringDtype):
        batch[name] = pd.Series(values, index=batch.index, dtype=dtype)
    else:
        batch[name] = pd.Series([None if v is pd.NA else v for v in values], index=batch.index, dtype=object)


def texts(value) -> list[str]:
    """The texts of a field value (see ``unpack``)."""
    return unpack(value)[0]


def joined(batch: pd.DataFrame, names: list[str]) -> list[str]:
    """Per record, all its texts in the fields ``names`` joined by a blank line (what langid and quality judge)."""
    if len(names) == 1:
        return [JOIN.join(texts(v)) for v in batch[names[0]]]
    columns = [batch[n].tolist() for n in names]
    return [JOIN.join(t for v in row for t in texts(v)) for row in zip(*columns)]


def flat_texts(batch: pd.DataFrame, names: list[str]) -> tuple[list[str], np.ndarray]:
    """Every text of the fields ``names``, one list, with the position of the record each is from."""
    out, rows = [], []
    for name in names:
        for i, v in enumerate(batch[name]):
            t = texts(v)
            out += t
            rows += [i] * len(t)
    return out, np.asarray(rows, np.int64)
