"""Grouping keys shared by ``thresher eval``'s slices and the dataset report's representation: a field's value as a
group name, or the year of a date field (``year(FIELD)``).

A value becomes its string (booleans ``true``/``false``); null and empty strings are the group ``MISSING``. The year
of a date: a date or datetime value's ``year``, an ISO 8601 string's leading four digits (``2021-05-03``,
``2021``), an integer between 1000 and 9999 as it is; anything else is ``MISSING``.
"""

from __future__ import annotations

import re
from typing import Any

MISSING = "(missing)"
YEAR = re.compile(r"^year\((?P<field>[^()]+)\)$")
ISO_YEAR = re.compile(r"^\s*(\d{4})(?:$|[-T/ ])")


def year_field(spec: str) -> str | None:
    """The date field of ``year(FIELD)``; None for any other spec."""
    m = YEAR.match(spec)
    return m.group("field") if m else None


def group_name(value: Any) -> str:
    """A field's value as a group's name."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def year_of(value: Any) -> str:
    """The year of a date value, as a group's name (``MISSING`` when it has none)."""
    if value is None or isinstance(value, bool):
        return MISSING
    if hasattr(value, "year") and isinstance(value.year, int):
        return str(value.year)
    if isinstance(value, int):
        return str(value) if 1000 <= value <= 9999 else MISSING
    if isinstance(value, str):
        m = ISO_YEAR.match(value)
        return m.group(1) if m else MISSING
    return MISSING
