"""``filter``: data contracts: keep the records whose fields satisfy every predicate.

``predicates`` is a list, checked in order; each is one mapping:

* ``{field: year, min: 2015, max: 2024}``: a number range (bounds included). Bounds written as dates (``"2020-01-01"``,
  a YAML date, ``"2020-01-01T12:00:00Z"``) make it a date range: values are read as ISO 8601 dates or times (no
  zone: UTC); a date without a time as ``max`` covers that whole day.
* ``{field: license, allow: [cc-by, cc0]}``, ``{field: source, deny: [spamsite]}``: the value compared as text,
  ignoring case and surrounding spaces.
* ``{field: url, domain_allow: [...]}``, ``domain_deny``: the host of a URL, or of a bare host such as
  ``en.wikipedia.org`` (so a ``domain`` field works too); a listed domain covers its subdomains.
* ``{field: title, regex: "^[A-Z]"}``: the value contains a match of the RE2 pattern (linear time).
* ``{required: [title, text]}``: each field present and not blank.

One predicate may combine tests on its field. A record fails with reason ``filter:<field>.<test>`` (``min``,
``max``, ``allow``, ``deny``, ``domain_allow``, ``domain_deny``, ``regex``, ``required``) of the first test it
fails, and the value in the detail. A null or blank value fails as ``filter:<field>.missing``, except where the
predicate only denies (``deny``, ``domain_deny``), or says ``missing: keep``; a value a range or domain test cannot
read fails as ``filter:<field>.invalid``. A field that is not a column of the records (a typo) rejects them all
as ``missing_field``. Values are what the readers keep: text (other JSON values as their JSON text).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

import pandas as pd
import re2
from pydantic import Field, field_validator, model_validator

from thresher.core.config import StrictModel
from thresher.core.patterns import compile_re2
from thresher.curate.fields import reject_missing
from thresher.curate.stage import MapStage, StageConfig, reject

DETAIL_CHARS = 200
TESTS = ("min", "max", "allow", "deny", "domain_allow", "domain_deny", "regex")


class Predicate(StrictModel):
    field: str | None = Field(None, description="the field the tests apply to")
    min: float | datetime | date | None = Field(None, description="smallest number or date kept")
    max: float | datetime | date | None = Field(None, description="largest number or date kept")
    allow: list[str] | None = Field(None, min_length=1, description="values kept (ignoring case)")
    deny: list[str] | None = Field(None, min_length=1, description="values dropped (ignoring case)")
    domain_allow: list[str] | None = Field(None, min_length=1, description="hosts kept, with their subdomains")
    domain_deny: list[str] | None = Field(None, min_length=1, description="hosts dropped, with their subdomains")
    regex: str | None = Field(None, description="an RE2 pattern the value must contain a match of")
    required: list[str] | None = Field(None, min_length=1, description="fields that must be present and not blank")
    missing: Literal["reject", "keep"] = Field("reject", description="records where the field is null or blank")

    @field_validator("min", "max", mode="before")
    @classmethod
    def _bound(cls, v):
        """A finite number, a date (a day) or a datetime; strings are read as a number, else as an ISO date or time."""
        if isinstance(v, str):
            v = _number_or_date(v)
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{v} is not a finite number")
        return v

    @field_validator("allow", "deny", mode="before")
    @classmethod
    def _as_text(cls, v):
        return [str(x) for x in v] if isinstance(v, list) else v

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v):
        if v is not None:
            try:
                compile_re2(v)
            except ValueError as e:
                raise ValueError(f"not an RE2 pattern: {e}") from None
        return v

    @model_validator(mode="after")
    def _shape(self):
        tests = [t for t in TESTS if getattr(self, t) is not None]
        if self.required is not None:
            if self.model_fields_set - {"required"}:
                raise ValueError("a required predicate has no other key: {required: [field, ...]}")
            return self
        if self.field is None or not tests:
            raise ValueError(
                f"a predicate is {{field: NAME, <test>: ...}} with a test among {', '.join(TESTS)}, "
                "or {required: [NAME, ...]}"
            )
        bounds = [b for b in (self.min, self.max) if b is not None]
        if len({isinstance(b, date) for b in bounds}) > 1:
            raise ValueError("min and max: both numbers or both dates")
        if len(bounds) == 2 and _instant(self.min, upper=False) > _instant(self.max, upper=False):
            raise ValueError("min is greater than max")
        return self

    @property
    def fields(self) -> list[str]:
        return self.required or [self.field]

    @property
    def deny_only(self) -> bool:
        return all(t in ("deny", "domain_deny") for t in TESTS if getattr(self, t) is not None)


def _number_or_date(text: str) -> float | date:
    """A bound written as text: a number, else an ISO 8601 date or time."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a number nor an ISO 8601 date") from None


class FilterConfig(StageConfig):
    predicates: list[Predicate] = Field(min_length=1, description="checked in order; a record must pass them all")


def _instant(bound, upper: bool):
    """A bound as a number or a UTC timestamp; a day as ``max`` ends at the next midnight (exclusive)."""
    if isinstance(bound, float):
        return bound
    if not isinstance(bound, datetime):
        bound = datetime(bound.year, bound.month, bound.day) + (timedelta(days=1) if upper else timedelta())
    return pd.Timestamp(bound if bound.tzinfo else bound.replace(tzinfo=UTC)).tz_convert("UTC")


def host(value: str) -> str | None:
    """The host of a URL, or of a bare host (``example.com/path``); None when there is none."""
    try:
        h = urlsplit(value if "://" in value else "//" + value).hostname
    except ValueError:
        return None
    return h.rstrip(".") or None if h else None


def _in_domains(h: str, domains: frozenset[str]) -> bool:
    parts = h.split(".")
    return any(".".join(parts[i:]) in domains for i in range(len(parts)))


class Filter(MapStage):
    name = "filter"
    Config = FilterConfig

    def __init__(self, config: FilterConfig, ctx):
        super().__init__(config, ctx)
        self.lists = [
            {
                t: frozenset(
                    v.strip().casefold().rstrip(".") if t.startswith("domain") else v.strip().casefold()
                    for v in getattr(p, t)
                )
                for t in ("allow", "deny", "domain_allow", "domain_deny")
                if getattr(p, t) is not None
            }
            for p in config.predicates
        ]

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        predicates = self.config.predicates
        if reject_missing(batch, [f for p in predicates for f in p.fields]):
            return batch
        for p, lists in zip(predicates, self.lists):
            if p.required is not None:
                for name in p.required:
                    reject(batch, _blank(batch[name]), f"filter:{name}.required", "no value")
            else:
                self.check(batch, p, lists)
        return batch

    def check(self, batch: pd.DataFrame, p: Predicate, lists: dict[str, frozenset[str]]) -> None:
        """Reject the records that fail predicate ``p`` (on a field), first test first."""
        values = batch[p.field]
        blank = _blank(values)
        reason = f"filter:{p.field}."
        if p.missing == "reject" and not p.deny_only:
            reject(batch, blank, reason + "missing", "no value")
        present = ~blank
        text = values.where(present, "").astype(str).str.strip()
        shown = p.field + "=" + text.str.slice(0, DETAIL_CHARS)

        if p.min is not None or p.max is not None:
            dated = isinstance(p.min if p.min is not None else p.max, date)
            parsed = (
                pd.to_datetime(text.where(present), errors="coerce", utc=True, format="ISO8601")
                if dated
                else pd.to_numeric(text.where(present), errors="coerce")
            )
            what = "an ISO 8601 date" if dated else "a number"
            reject(batch, present & parsed.isna(), reason + "invalid", shown + f" is not {what}")
            if p.min is not None:
                reject(
                    batch,
                    present & (parsed < _instant(p.min, upper=False)),
                    reason + "min",
                    shown + f" < {_show(p.min)}",
                )
            if p.max is not None:
                upper = _instant(p.max, upper=True)
                too_late = (parsed >= upper) if dated and not isinstance(p.max, datetime) else (parsed > upper)
                reject(batch, present & too_late, reason + "max", shown + f" > {_show(p.max)}")
        folded = text.str.casefold()
        if "allow" in lists:
            reject(batch, present & ~folded.isin(lists["allow"]), reason + "allow", shown + " not in allow")
        if "deny" in lists:
            reject(batch, present & folded.isin(lists["deny"]), reason + "deny", shown + " in deny")
        if "domain_allow" in lists or "domain_deny" in lists:
            hosts = pd.Series(
                [host(t) if ok else None for t, ok in zip(folded, present)], index=batch.index, dtype=object
            )
            reject(batch, present & hosts.isna(), reason + "invalid", shown + " has no host")
            for test, keep_listed in (("domain_allow", True), ("domain_deny", False)):
                if test in lists:
                    listed = hosts.map(lambda h, d=lists[test]: h is not None and _in_domains(h, d)).astype(bool)
                    reject(
                        batch,
                        present & hosts.notna() & (listed != keep_listed),
                        reason + test,
                        shown + (" not in " if keep_listed else " in ") + test,
                    )
        if p.regex is not None:
            pattern = re2.compile(p.regex)
            matched = pd.Series([bool(pattern.search(t)) for t in text], index=batch.index)
            reject(batch, present & ~matched, reason + "regex", shown + f" does not match {p.regex!r}")


def _blank(values: pd.Series) -> pd.Series:
    """Null values and blank text."""
    return values.isna() | (values.astype(str).str.strip() == "")


def _show(bound) -> str:
    return f"{bound:g}" if isinstance(bound, float) else bound.isoformat()
