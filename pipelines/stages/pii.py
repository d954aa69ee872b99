"""``pii``: find e-mail addresses, phone numbers, IPv4/IPv6 addresses, US SSNs, payment cards and IBANs, and
redact (``[EMAIL]``), mask (``****``) or hash (``[EMAIL:3f2a...]``, salted) them.

Linear-time regex scanners (see ``candidates``) find candidates; validators drop false positives:
cards must pass the Luhn check and carry a known issuer prefix, IBANs the ISO 13616 mod-97 check, SSNs the
SSA's never-issued ranges, IPs the ``ipaddress`` parser, phone numbers 7-15 digits with a separator or a +.
Dates (``2024-01-15``, ``15.01.2024``, ``01/15/2024``), year ranges (``1990-2000``) and version numbers after a
version cue (``v1.2.3.4``, ``version 10.0.0.1``) are never phone numbers or IP addresses: no candidate overlaps one.
Counts per type land in the manifest (``metrics.pii``).

``mode: hash`` takes its salt from the environment variable named by ``salt_env`` (read on the driver when the
stage is built, and carried to the workers with the stage object): it is never in the config, so never in the
manifest, report or dataset card.

``fields`` lists the record fields to scrub (default: the text field; chat messages: each content, see
:mod:`pipelines.fields`); ``fields: all`` scrubs every text column but the id.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from pipelines.fields import TextFieldsConfig, assign, reject_missing, unpack
from pipelines.stage import METRIC_PREFIX, MapStage

TYPES = ("email", "iban", "credit_card", "ssn", "ipv6", "ipv4", "phone")
SALT_ENV = "THRESHER_PII_SALT"
TOKENS = {"email": "EMAIL", "iban": "IBAN", "credit_card": "CREDIT_CARD", "ssn": "SSN", "ipv6": "IP_ADDRESS",
          "ipv4": "IP_ADDRESS", "phone": "PHONE"}

# Linear time in Python's engine: every quantifier is bounded or possessive (no backtracking into it), and a
# match may start only where its lookbehind allows (the start of a token), so a run of characters is scanned
# once, not once per position. Each scanner starts with a character class, which lets the engine skip ahead
# in C to the next possible start; numeric types are only tried inside spans of digits and separators.
# tests/test_text_stages.py checks 1 MB of adversarial input per pattern shape in under a second.
_EMAIL = re.compile(r"[A-Za-z0-9](?<![A-Za-z0-9._%+-].)[A-Za-z0-9._%+-]{0,63}+@[A-Za-z0-9-]{1,63}+(?:\.[A-Za-z0-9-]{1,63}+){1,8}+")
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}+(?: ?[A-Z0-9]{1,4})?+(?![A-Za-z0-9])")
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}+:")
_IPV6 = re.compile(
    r"(?:[0-9A-Fa-f](?<![\w:.].)[0-9A-Fa-f]{0,3}+:(?:[0-9A-Fa-f]{0,4}+:){1,6}+[0-9A-Fa-f]{0,4}+"
    r"|:(?<![\w:.].):(?:[0-9A-Fa-f]{1,4}+:){0,6}+[0-9A-Fa-f]{1,4}+)(?:%[0-9A-Za-z]{1,16}+)?+(?![\w:])"
)
_NUMERIC_SPAN = re.compile(r"[+(\d][\d .()/+-]*+")
_NUMERIC = re.compile(
    r"(?P<credit_card>(?<![\d-])(?<![A-Z]{2}\d{2} )\d(?:[ -]?+\d){12,18}+(?!\d))"
    r"|(?P<ssn>(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-]))"
    r"|(?P<ipv4>(?<![\d.])(?:\d{1,3}+\.){3}\d{1,3}+(?!\d|\.\d))"
    r"|(?P<phone>(?<![\w+(])(?:\+\d{1,3}+[ .-]?+)?+(?:\(\d{1,4}+\)[ .-]?+)?+\d{2,4}+(?:[ .-]\d{2,4}+){1,4}+(?!\w))"
)
# Not PII: numbers shaped like phone numbers or IPs. Tried only inside numeric spans, each of bounded length.
_YEAR = r"(?:1[6-9]|20)\d\d"
_DAY, _MONTH = r"(?:3[01]|[12]\d|0?[1-9])", r"(?:1[0-2]|0?[1-9])"
_NOT_PII = re.compile(
    rf"(?<![\d.])(?:{_YEAR}(?P<iso>[-./]){_MONTH}(?P=iso){_DAY}"  # 2024-01-15, 2024.01.15, 2024/01/15
    rf"|{_DAY}(?P<dmy>[-./]){_DAY}(?P=dmy){_YEAR}"  # 15.01.2024, 01/15/2024, 15-01-2024
    rf"|(?P<from>{_YEAR})[-/](?P<to>{_YEAR}))(?!\d)"  # 1990-2000 (a year range: the second year is later)
)
_VERSION_CUE = re.compile(r"(?i:(?<![a-z])v|\b(?:version|ver|release|rev|revision|build|firmware)\.?:? ?)\Z")
_VERSION = re.compile(r"\d{1,9}+(?:\.\d{1,9}+)++")
PRIORITY = {t: i for i, t in enumerate(TYPES)}


def _not_pii(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of ``text[start:end]`` (a numeric span) that are dates, year ranges or versions, in order."""
    spans = []
    version = _VERSION.match(text, start, end)
    if version and _VERSION_CUE.search(text, max(0, start - 12), start):
        spans.append(version.span())
    for m in _NOT_PII.finditer(text, version.end() if spans else start, end):
        if m["from"] is None or int(m["to"]) > int(m["from"]):
            spans.append(m.span())
    return spans


def candidates(text: str):
    """(start, end, type) of every PII-shaped span, before validation."""
    if "@" in text:
        yield from ((m.start(), m.end(), "email") for m in _EMAIL.finditer(text))
    yield from ((m.start(), m.end(), "iban") for m in _IBAN.finditer(text))
    if _IPV6_HINT.search(text):
        yield from ((m.start(), m.end(), "ipv6") for m in _IPV6.finditer(text))
    for span in _NUMERIC_SPAN.finditer(text):
        start, end = span.span()
        if end - start < 7:
            continue
        # numeric types are looked for between dates and versions only; at the span's end, the lookaheads see
        # the character after it
        for lo, hi in _gaps(start, end, _not_pii(text, start, end)):
            if hi - lo >= 7:
                for m in _NUMERIC.finditer(text, lo, hi + (hi == end)):
                    if m.lastgroup != "phone" or not _arithmetic(text, m.start(), m.end()):
                        yield m.start(), m.end(), m.lastgroup


_OPERATOR_AFTER = re.compile(r" {0,3}+[=*/×÷]")
_OPERATOR_BEFORE = re.compile(r"(?:[*/×÷]|<<) {0,3}+\Z")


def _arithmetic(text: str, start: int, end: int) -> bool:
    """A phone-shaped number that is a calculation (``1000-220=780``, ``<<5000-3000``): an operator follows or
    precedes it."""
    return bool(_OPERATOR_AFTER.match(text, end) or _OPERATOR_BEFORE.search(text, max(0, start - 4), start))


def _gaps(start: int, end: int, spans: list[tuple[int, int]]):
    """The parts of ``start..end`` outside ``spans`` (sorted, disjoint)."""
    for lo, hi in spans:
        yield start, lo
        start = hi
    yield start, end


_CARD_PREFIXES = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|6011|65|64[4-9]|62|35|50|5[6-9]|6[0-9])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    s = value.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def ssn_ok(value: str) -> bool:
    area, group, serial = value.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _valid(kind: str, value: str) -> bool:
    if kind == "credit_card":
        digits = value.replace(" ", "").replace("-", "")
        return 13 <= len(digits) <= 19 and bool(_CARD_PREFIXES.search(digits)) and luhn_ok(digits)
    if kind == "email":
        tld = value.rsplit(".", 1)[1]
        return 2 <= len(tld) <= 24 and tld.isalpha()
    if kind == "iban":
        return iban_ok(value)
    if kind == "ssn":
        return ssn_ok(value)
    if kind == "ipv4":
        return all(len(o) == 1 or (o[0] != "0" and int(o) <= 255) for o in value.split("."))
    if kind == "ipv6":
        try:
            ipaddress.ip_address(value)
            return True
        except ValueError:
            return False
    if kind == "phone":
        digits = sum(c.isdigit() for c in value)
        return 7 <= digits <= 15 and (value.startswith(("+", "(")) or any(c in value for c in " .-"))
    return True


class PiiConfig(TextFieldsConfig):
    fields: list[str] | Literal["all"] | None = Field(None, min_length=1, description=(
        "record fields to scrub (chat messages: their contents), or all: every text column but the id; "
        "default: the input's text field"))
    types: list[Literal["email", "phone", "ip", "ssn", "credit_card", "iban"]] = [
        "email", "phone", "ip", "ssn", "credit_card", "iban"]
    mode: Literal["redact", "mask", "hash"] = "redact"
    salt_env: str = Field(SALT_ENV, min_length=1, validate_default=True,
                          description="hash: the environment variable holding the salt")
    salt: None = Field(None, exclude=True, description="refused: a salt is never written in a config")

    @field_validator("salt", mode="before")
    @classmethod
    def _no_salt_in_config(cls, value):
        raise PydanticCustomError("salt_in_config", "a salt is never written in the config (it would land in the "
                                  "manifest): set it in the environment variable named by salt_env "
                                  f"(default {SALT_ENV})")

    @field_validator("salt_env")
    @classmethod
    def _salt_is_set(cls, name: str, info: ValidationInfo) -> str:
        if info.data.get("mode") == "hash" and not os.environ.get(name):
            raise PydanticCustomError("salt_missing", "mode hash takes its salt from the environment variable "
                                      "{name}, which is not set (or empty)", {"name": name})
        return name


class Pii(MapStage):
    name = "pii"
    Config = PiiConfig

    def __init__(self, config: PiiConfig, ctx):
        super().__init__(config, ctx)
        wanted = set(config.types)
        self.enabled = {t for t in TYPES if (t in wanted) or (t in ("ipv4", "ipv6") and "ip" in wanted)}
        self._salt = os.environ[config.salt_env].encode() if config.mode == "hash" else b""

    def fingerprint(self) -> str | None:
        return hmac.new(self._salt, b"thresher run key", hashlib.sha256).hexdigest() if self._salt else None

    def _replacement(self, kind: str, value: str) -> str:
        mode = self.config.mode
        if mode == "redact":
            return f"[{TOKENS[kind]}]"
        if mode == "mask":
            return "".join("*" if c.isalnum() else c for c in value)
        digest = hmac.new(self._salt, value.encode(), hashlib.sha256).hexdigest()[:12]
        return f"[{TOKENS[kind]}:{digest}]"

    def scrub(self, text: str) -> tuple[str, dict[str, int]]:
        """The text with PII replaced, and the count per type."""
        counts: dict[str, int] = {}
        found = sorted((start, PRIORITY[kind], end, kind) for start, end, kind in candidates(text)
                       if kind in self.enabled and _valid(kind, text[start:end]))
        pieces, last = [], 0
        for start, _, end, kind in found:
            if start < last:  # overlaps a match already taken (of higher priority or earlier)
                continue
            counts[kind] = counts.get(kind, 0) + 1
            pieces += (text[last:start], self._replacement(kind, text[start:end]))
            last = end
        if not pieces:
            return text, counts
        pieces.append(text[last:])
        return "".join(pieces), counts

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        fields = self.config.field_names(batch, self.text)
        if reject_missing(batch, fields):
            return batch
        per_type = {t: np.zeros(len(batch), np.int64) for t in TYPES}
        for name in fields:
            values = []
            for i, value in enumerate(batch[name]):
                texts, pack = unpack(value)
                new = []
                for text in texts:
                    scrubbed, counts = self.scrub(text)
                    new.append(scrubbed)
                    for t, n in counts.items():
                        per_type[t][i] += n
                values.append(pack(new))
            assign(batch, name, values)
        for t in TYPES:
            batch[f"{METRIC_PREFIX}pii.{t}"] = per_type[t]
        batch[f"{METRIC_PREFIX}pii.docs_with_pii"] = (sum(per_type.values()) > 0).astype(np.int64)
        return batch
