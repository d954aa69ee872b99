"""``pii``: find e-mail addresses, phone numbers, IPv4/IPv6 addresses, US SSNs, payment cards and IBANs, and
redact (``[EMAIL]``), mask (``****``) or hash (``[EMAIL:3f2a...]``, salted) them.

Linear-time regex scanners (see ``candidates``) find candidates; validators drop false positives:
cards must pass the Luhn check and carry a known issuer prefix, IBANs the ISO 13616 mod-97 check, SSNs the
SSA's never-issued ranges, IPs the ``ipaddress`` parser, phone numbers 7-15 digits with a separator or a +.
Counts per type land in the manifest (``metrics.pii``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from typing import Literal

import pandas as pd

from pipelines.stage import METRIC_PREFIX, MapStage, StageConfig

TYPES = ("email", "iban", "credit_card", "ssn", "ipv6", "ipv4", "phone")
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
PRIORITY = {t: i for i, t in enumerate(TYPES)}


def candidates(text: str):
    """(start, end, type) of every PII-shaped span, before validation."""
    if "@" in text:
        yield from ((m.start(), m.end(), "email") for m in _EMAIL.finditer(text))
    yield from ((m.start(), m.end(), "iban") for m in _IBAN.finditer(text))
    if _IPV6_HINT.search(text):
        yield from ((m.start(), m.end(), "ipv6") for m in _IPV6.finditer(text))
    for span in _NUMERIC_SPAN.finditer(text):
        end = span.end()
        if end - span.start() >= 7:
            for m in _NUMERIC.finditer(text, span.start(), end + 1):
                yield m.start(), m.end(), m.lastgroup


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


class PiiConfig(StageConfig):
    types: list[Literal["email", "phone", "ip", "ssn", "credit_card", "iban"]] = [
        "email", "phone", "ip", "ssn", "credit_card", "iban"]
    mode: Literal["redact", "mask", "hash"] = "redact"
    salt: str = ""


class Pii(MapStage):
    name = "pii"
    Config = PiiConfig

    def __init__(self, config: PiiConfig, ctx):
        super().__init__(config, ctx)
        wanted = set(config.types)
        self.enabled = {t for t in TYPES if (t in wanted) or (t in ("ipv4", "ipv6") and "ip" in wanted)}

    def _replacement(self, kind: str, value: str) -> str:
        mode = self.config.mode
        if mode == "redact":
            return f"[{TOKENS[kind]}]"
        if mode == "mask":
            return "".join("*" if c.isalnum() else c for c in value)
        digest = hmac.new(self.config.salt.encode(), value.encode(), hashlib.sha256).hexdigest()[:12]
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
        texts, per_type = [], {t: [] for t in TYPES}
        for text in batch[self.text]:
            new, counts = self.scrub(text)
            texts.append(new)
            for t in TYPES:
                per_type[t].append(counts.get(t, 0))
        batch[self.text] = texts
        for t in TYPES:
            batch[f"{METRIC_PREFIX}pii.{t}"] = per_type[t]
        batch[f"{METRIC_PREFIX}pii.docs_with_pii"] = [int(any(per_type[t][i] for t in TYPES)) for i in range(len(texts))]
        return batch
