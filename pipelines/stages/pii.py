"""``pii``: find e-mail addresses, phone numbers, IPv4/IPv6 addresses, US SSNs, payment cards and IBANs, and
redact (``[EMAIL]``), mask (``****``) or hash (``[EMAIL:3f2a...]``, salted) them.

One regex pass per document (linear time on any input, see ``_PATTERN``) finds candidates; validators drop false positives:
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

# Alternatives are tried leftmost-first, so more specific types come first. Linear time in Python's engine:
# every quantifier is bounded and possessive (no backtracking into it), and each alternative may start only
# where its lookbehind allows (the start of a token), so a run of characters is scanned once, not once per
# position. tests/test_text_stages.py checks 1 MB of adversarial input per pattern shape in under a second.
_PATTERN = re.compile(
    r"(?P<email>(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}+@[A-Za-z0-9-]{1,63}+(?:\.[A-Za-z0-9-]{1,63}+){1,8}+)"
    r"|(?P<iban>(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}+(?: ?[A-Z0-9]{1,4})?+(?![A-Za-z0-9]))"
    r"|(?P<credit_card>(?<![\d-])\d(?:[ -]?+\d){12,18}+(?!\d))"
    r"|(?P<ssn>(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-]))"
    r"|(?P<ipv6>(?<![\w:.])(?:[0-9A-Fa-f]{1,4}+:(?:[0-9A-Fa-f]{0,4}+:){1,6}+[0-9A-Fa-f]{0,4}+|::(?:[0-9A-Fa-f]{1,4}+:){0,6}+[0-9A-Fa-f]{1,4}+)"
    r"(?:%[0-9A-Za-z]{1,16}+)?+(?![\w:]))"
    r"|(?P<ipv4>(?<![\d.])(?:\d{1,3}+\.){3}\d{1,3}+(?!\d|\.\d))"
    r"|(?P<phone>(?<![\w+(])(?:\+\d{1,3}+[ .-]?+)?+(?:\(\d{1,4}+\)[ .-]?+)?+\d{2,4}+(?:[ .-]\d{2,4}+){1,4}+(?!\w))"
)
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
    if kind in ("ipv4", "ipv6"):
        if kind == "ipv6" and (value.count(":") < 2 or not any(c.isalnum() for c in value.split("%")[0])):
            return False
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
        pieces, last = [], 0
        for m in _PATTERN.finditer(text):
            kind = m.lastgroup
            value = m.group(0)
            if kind not in self.enabled or not _valid(kind, value):
                continue
            counts[kind] = counts.get(kind, 0) + 1
            pieces += (text[last:m.start()], self._replacement(kind, value))
            last = m.end()
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
