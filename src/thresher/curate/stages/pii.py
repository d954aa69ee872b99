"""``pii``: find e-mail addresses, phone numbers, IPv4/IPv6 addresses, US SSNs, payment cards and IBANs, and
redact (``[EMAIL]``), mask (``****``) or hash (``[EMAIL:3f2a...]``, salted) them.

Linear-time regex scanners (see ``candidates``) find candidates; validators drop false positives:
cards must pass the Luhn check and carry a known issuer prefix, IBANs the ISO 13616 mod-97 check, SSNs the
SSA's never-issued ranges, IPs the ``ipaddress`` parser, e-mail addresses a top-level domain that is not an image
extension (``logo@2x.png``). A phone number must be a valid or possible number for libphonenumber
(``phonenumbers``) and be international (``+44 20 7946 0958``), NANP-shaped (``(415) 555-0132``,
``415-555-0132``), a national number with its trunk 0 grouped as its region writes it (``020 7946 0958``,
``06 12 34 56 78``, ``03-1234-5678``, ``030/1234567``), or next to a phone word (``call``, ``tel``, ``fax``,
``Telefon``, ``☎``, ...) or right after a contact label (``Sales:``, ``front desk``, ``Kundenservice``; not for
figures such as ``Sales: 123 456 789``); a number glued to
an operator, another number, a currency or an id label (``4*30=120``, ``15,000-2,000``, ``$1,000-2,000``,
``ISBN``, ``Order #``) is never one. Dates (``2024-01-15``, ``15.01.2024``, ``01/15/2024``), year ranges
(``1990-2000``) and version numbers after a version cue (``v1.2.3.4``, ``version 10.0.0.1``) are never phone
numbers or IP addresses: no candidate overlaps one.
Counts per type land in the manifest (``metrics.pii``).

``mode: hash`` takes its salt from the environment variable named by ``salt_env`` (read on the driver when the
stage is built, and carried to the workers with the stage object): it is never in the config, so never in the
manifest, report or dataset card.

``fields`` lists the record fields to scrub (default: the text field; chat messages: each content, see
:mod:`thresher.curate.fields`); ``fields: all`` scrubs every text column but the id.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os
import re
from typing import Literal

import numpy as np
import pandas as pd
import phonenumbers
from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from thresher.curate.fields import TextFieldsConfig, assign, reject_missing, unpack
from thresher.curate.stage import CardSection, MapStage, StageCard

TYPES = ("email", "iban", "credit_card", "ssn", "ipv6", "ipv4", "phone")
SALT_ENV = "THRESHER_PII_SALT"
TOKENS = {
    "email": "EMAIL",
    "iban": "IBAN",
    "credit_card": "CREDIT_CARD",
    "ssn": "SSN",
    "ipv6": "IP_ADDRESS",
    "ipv4": "IP_ADDRESS",
    "phone": "PHONE",
}

# Linear time in Python's engine: every quantifier is bounded or possessive (no backtracking into it), and a
# match may start only where its lookbehind allows (the start of a token), so a run of characters is scanned
# once, not once per position. Each scanner starts with a character class, which lets the engine skip ahead
# in C to the next possible start; numeric types are only tried inside spans of digits and separators.
# tests/test_text_stages.py checks 1 MB of adversarial input per pattern shape in under a second.
_EMAIL = re.compile(
    r"[A-Za-z0-9](?<![A-Za-z0-9._%+-].)[A-Za-z0-9._%+-]{0,63}+@[A-Za-z0-9-]{1,63}+(?:\.[A-Za-z0-9-]{1,63}+){1,8}+"
)
_IBAN = re.compile(
    r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}+(?: ?[A-Z0-9]{1,4}+(?![A-Za-z0-9]))?+(?![A-Za-z0-9])"
)
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
    r"|(?P<phone>(?<![\w+(])(?:\+\d{1,3}+[ .-]?+(?:\(\d{1,5}+\)[ .-]?+)?+\d{1,5}+"  # +44 (0)20, +33 1
    r"|(?:1[ .-])?+(?:\(\d{1,5}+\)[ .-]?+)?+\d{2,5}+)"  # 1-800, (415) 555, 030
    r"(?:/\d{3,8}+(?:[ .-]\d{2,8}+){0,4}+|(?:[ .-]\d{2,8}+){1,5}+)(?!\w))"
)
_NOT_PHONE_NUMERIC = re.compile(_NUMERIC.pattern.rsplit("|(?P<phone>", 1)[0])
# Not PII: numbers shaped like phone numbers or IPs. Tried only inside numeric spans, each of bounded length.
_YEAR = r"(?:1[6-9]|20)\d\d"
_DAY, _MONTH = r"(?:3[01]|[12]\d|0?[1-9])", r"(?:1[0-2]|0?[1-9])"
_NOT_PII = re.compile(
    rf"(?<![\d.-])(?:{_YEAR}(?P<iso>[-./]){_MONTH}(?P=iso){_DAY}"  # 2024-01-15, 2024.01.15, 2024/01/15
    rf"|{_DAY}(?P<dmy>[-./]){_DAY}(?P=dmy){_YEAR}"  # 15.01.2024, 01/15/2024, 15-01-2024
    rf"|(?P<from>{_YEAR})[-/](?P<to>{_YEAR}))(?!-?\d)"  # 1990-2000 (a year range: the second year is later)
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
    """(start, end, type) of every PII-shaped span; phone numbers come validated (they need the context)."""
    if "@" in text:
        yield from ((m.start(), m.end(), "email") for m in _EMAIL.finditer(text))
    for m in _IBAN.finditer(text):
        yield m.start(), m.end(), "iban"
        last = m[0].rsplit(" ", 1)[-1]
        if last.isalpha() and len(last) < 4 and not iban_ok(m[0]):  # the next word: "ES55...28 I'm", "... VPA was"
            yield m.start(), m.end() - len(last) - 1, "iban"
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
                    found = [m]
                    if m.lastgroup == "phone":
                        phones = list(_phones(text, m.start(), m.end(), (start, end)))
                        yield from ((s, e, "phone") for s, e in phones)
                        # not a phone number: another type may start inside it ("$18 172.248.239.215")
                        found = (
                            []
                            if phones or not ("." in m[0] or "-" in m[0] or len(m[0]) > 12)
                            else (_NOT_PHONE_NUMERIC.finditer(text, m.start() + 1, min(m.end() + 1, hi + (hi == end))))
                        )
                    for n in found:
                        if n.lastgroup != "credit_card" or not _not_a_card(text, n.start()):
                            yield n.start(), n.end(), n.lastgroup


def _not_a_card(text: str, start: int) -> bool:
    """After an id label (EAN 4006381333931, IMEI 356938035643809) or inside an IBAN (ES51 5265 3444 4488 ...)."""
    return bool(
        _CARD_ID_LABEL.search(text, max(0, start - 24), start) or _IN_IBAN.search(text, max(0, start - 45), start)
    )


def _gaps(start: int, end: int, spans: list[tuple[int, int]]):
    """The parts of ``start..end`` outside ``spans`` (sorted, disjoint)."""
    for lo, hi in spans:
        yield start, lo
        start = hi
    yield start, end


# Phone numbers. A candidate is a phone number when libphonenumber takes it (valid; with a phone word or contact
# label nearby, possible for the US or valid for one of _REGIONS) and it is international (+...), NANP-shaped, a
# trunk area code in parentheses, a trunk-prefixed national number grouped as one of _REGIONS dials it, or has a
# phone word or contact label nearby. Every window below is bounded, so each check is constant time.
_REGIONS = ("GB", "DE", "FR", "IT", "ES", "NL", "BE", "CH", "AT", "IN", "AU", "BR", "MX", "JP", "CN", "RU")
_CUE_WORDS = frozenset(
    "call calls called calling phone phones telephone tel tlf fax mobile mob cell cellphone contact contacts "
    "contacted dial ring reach reached sms whatsapp viber hotline helpline voicemail message toll handy mobil "
    "ruf rufen rufnummer téléphone tél portable joindre teléfono móvil movil celular telefone ligue cellulare "
    "telefoon bel bellen mobiel".split()
)
_CUE_STEMS = ("telefon", "anruf", "erreich", "appel", "llam", "llám", "chiam", "тел", "звон")
_CUE_SIGNS = ("☎", "📞", "📱", "✆", "电话", "電話", "手机", "携帯")
_WORD = re.compile(r"[^\W\d_]+")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?\s+(?=[^\W\d_])")  # "Call Ann. The city has 14 233 048 ..."
_EMAIL_NEAR = re.compile(r"\w@[\w-]")  # an e-mail address: "at 262-3773 or vdwarren@education.wisc.edu"
_LABEL_CUE = re.compile(r"(?<![\w.])(?i:ph|t|m|f)[.:] {0,3}\Z")  # T: 020 7946 0958, M. 07911 123456
# a contact label right before the number: "Sales: 0173 6544872", "front desk 03-4960-1270"
_CONTACT_LABEL = re.compile(
    r"(?<!\w)(?i:customer (?:service|care|support)|front desk|reception|sales|reservations?|bookings?|office"
    r"|enquir(?:y|ies)|inquir(?:y|ies)|help ?desk|service desk|support|switchboard|info(?:rmation)? line"
    r"|kundenservice|kundendienst|zentrale|vertrieb|empfang|auskunft|reservierung(?:en)?|buchung(?:en)?"
    r"|service client|accueil|renseignements|r[ée]servations?|atenci[óo]n al cliente|reservas|ventas"
    r"|recepci[óo]n|centralino|prenotazion[ei]|assistenza clienti|vendite|klantenservice|receptie|reserveringen"
    r"|verkoop)(?: (?:at|on|unter|au|al|op))?(?: ?[:–—-])? {0,3}\Z"
)
_NANP = re.compile(r"(?:1[ .-])?(?:\(\d{3}\)[ .-]?\d{3}[ .-]|\d{3}-\d{3}-|\d{3}\.\d{3}\.)\d{4}")
_NANP_DIGITS = re.compile(r"1?[2-9]\d\d[2-9]\d{6}")  # area code and exchange start with 2-9
_TRUNK_AREA = re.compile(r"\(0\d{1,4}\)[ .-]?\d")  # (02) 9876 5432, (030) 1234567
# a trunk prefix (0) and separated groups: 020 7946 0958, 06 12 34 56 78, 03-1234-5678, 030/1234567
_NATIONAL = re.compile(r"0[1-9]\d{0,3}(?:([ .-])\d{2,8}(?:\1\d{2,8}){0,3}|/\d{3,8}(?:[ -]\d{2,8}){0,2})")
_PREFIX = re.compile(r"(?:\+\d{1,3}[ .-]?|1[ .-])?(?:\(\d{1,5}\)[ .-]?)?")
_SHAPE_HINT = re.compile(r"[+(]|\d{3}([-.])\d{3}\1\d{4}")
# glued to another number, after an operator, a currency or an id label: arithmetic, prices, ids, ISBNs
_NOT_PHONE_BEFORE = re.compile(
    r"(?:\d[,.\-–—/:]|[*×÷<>^] {0,3}|[\d)\]] {0,3}[=+\-−–] {0,3}|\d ?[x×] {0,3}"
    r"|(?:[$€£¥₹#]|\b(?:USD|EUR|GBP|INR|Rs\.?))\s{0,2})\Z"
)
_ID_WORDS = frozenset(
    "isbn issn doi order invoice ref sku item model serial ticket case tracking patent zip postcode "
    "id art part no nr acct account".split()
)
_ID_LABEL = re.compile(
    r"(?i:\b(?:isbn(?:-1[03])?|issn|doi|order|invoice|ref|sku|item|model|serial|ticket|case|tracking|patent"
    r"|zip|postcode|id|art|part|no|nr|acct|account)\b\W{0,4}(?:(?:no|nr|num)\b\.?|number|#)?\W{0,3})\Z"
)
_IN_IBAN = re.compile(r"\b[A-Z]{2}\d\d(?: [A-Z0-9]{4}){0,7} \Z")  # ES51 5265 |3444 4488 3560 3761 (bad check digits)
_CARD_ID_LABEL = re.compile(
    r"(?i:\b(?:ean|gtin|upc|isbn(?:-1[03])?|barcode|imei|order|invoice|tracking|sku|serial)\b\W{0,4}"
    r"(?:(?:no|nr|num)\b\.?|number|#)?\W{0,3})\Z"
)
_NOT_PHONE_AFTER = re.compile(
    r"[,.\-–—/:]\d| {0,3}[=*×÷<>^]| {0,3}[+\-−–/] {0,3}\(?\d[\d.,]{0,12}+ {0,3}[=)]| ?[x×] ?\d"
    r"|\s{0,2}(?:[%‰°$€£¥₹]|(?i:usd|eur|gbp|dollars?|euros?|pounds?|cents?|percent)\b)"
)


def _has_cue(window: str) -> bool:
    if "@" in window and _EMAIL_NEAR.search(window) or not window.isascii() and any(s in window for s in _CUE_SIGNS):
        return True
    if not _WORD.search(window):
        return False
    words = _WORD.findall(window.lower())
    return any(
        w in _CUE_WORDS or w.startswith(_CUE_STEMS) or w == "text" and words[i + 1 : i + 2] in (["me"], ["us"])
        for i, w in enumerate(words)
    )


def _cue(text: str, start: int, end: int, span: tuple[int, int]) -> str:
    """``word``: a phone word in the 40 characters before the candidate, not before the end of a sentence (or in
    the 16 after: ``555-0132 (mobile)``); ``label``: a contact label right before it (``Sales: ...``); else ``""``.
    ``span``: the numeric span around it, which holds no words."""
    lo, hi = span
    before = text[max(0, start - 40) : lo] if lo > start - 40 else ""
    after = text[hi : end + 16] if hi < end + 16 else ""
    if (
        _has_cue(_SENTENCE_END.split(before)[-1])
        or _has_cue(_SENTENCE_END.split(after, 1)[0])
        or lo == start
        and _LABEL_CUE.search(before, len(before) - 6)
    ):
        return "word"
    return "label" if lo == start and _CONTACT_LABEL.search(before) else ""


@functools.lru_cache(maxsize=4096)
def _parse(value: str, region: str | None):
    try:
        return phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None


@functools.lru_cache(maxsize=4096)
def _valid_number(value: str, region: str | None) -> bool:
    number = _parse(value, region)
    return number is not None and phonenumbers.is_valid_number(number)


@functools.lru_cache(maxsize=4096)
def _possible_number(value: str, region: str | None) -> bool:
    number = _parse(value, region)
    return number is not None and phonenumbers.is_possible_number(number)


def _phone_ok(text: str, start: int, end: int, span: tuple[int, int], pieces: bool = False) -> bool:
    """Is ``text[start:end]`` (in the numeric ``span``) a phone number? ``pieces``: a part of a longer run, taken on
    its shape alone."""
    value = text[start:end]
    if not 7 <= sum(map(str.isdigit, value)) <= 15:
        return False
    plus, nanp, trunk = value[0] == "+", _NANP.fullmatch(value), _TRUNK_AREA.match(value)
    national = not (plus or nanp or trunk) and _NATIONAL.fullmatch(value)
    cue = None if plus or nanp or trunk or national else "" if pieces else _cue(text, start, end, span)
    if cue == "" or pieces and nanp and not _NANP_DIGITS.fullmatch(re.sub(r"\D", "", value)):
        return False  # neither a phone shape nor a phone word; not a NANP number
    body = value[_PREFIX.match(value).end() :]
    groups = re.findall(r"\d+", body)
    if (
        body.count(".") == 1
        or ("." in body and re.search(r"\d[ /-]\d", body))  # a decimal: 2001.1970, 100-50.75
        or re.fullmatch(r"\d{5}-\d{4}", value)  # ZIP+4
        or re.fullmatch(r"\d{1,2}([ .])\d{3}(?:\1\d{3})+", value)  # thousands: "call it 14 400 000"
        or len(groups) > 1
        and all(len(g) == 4 and 1600 <= int(g) <= 2099 for g in groups)
    ):  # years
        return False
    if _NOT_PHONE_BEFORE.search(text, max(0, start - 10), start) or _NOT_PHONE_AFTER.match(text, end):
        return False
    before = text[max(0, start - 24) : start]
    label = ("#" in before or not _ID_WORDS.isdisjoint(_WORD.findall(before.lower()))) and _ID_LABEL.search(before)
    if label and not _has_cue(before[: label.start()]) or _IN_IBAN.search(text, max(0, start - 45), start):
        return False
    if (
        plus
        and _valid_number(value, None)
        or nanp
        and _NANP_DIGITS.fullmatch(re.sub(r"\D", "", value))
        and _valid_number(value, "US")
        or trunk
        and any(_valid_number(value, region) for region in _REGIONS)  # (030) 1234567
        or national
        and not _figures(value, groups)
        and _grouped_as_dialled(value)
    ):
        return True  # a phone shape and a valid number
    if cue is None:  # a phone shape: with a phone word, a possible number is enough
        cue = "" if pieces else _cue(text, start, end, span)
    if cue == "label" and _figures(value, groups):
        return False  # "Sales: 123 456 789" is a figure; a phone word would still make it a number to call
    if not cue:
        return False
    if plus:
        return _possible_number(value, None)
    return _possible_number(value, "US") or any(_valid_number(value, region) for region in _REGIONS)


def _figures(value: str, groups: list[str]) -> bool:
    """Numbers, not a number to call, unless a phone word says so: thousands (``123 456 789``) or a rising list
    of two-digit numbers up to 70 (a lottery draw: ``04 12 23 34 45``; not ``06 12 34 56 78``)."""
    return bool(re.fullmatch(r"[1-9]\d{0,2}(?:([ .,])\d{3})(?:\1\d{3})*+", value)) or (
        len(groups) >= 5 and all(len(g) == 2 for g in groups) and groups == sorted(set(groups)) and groups[-1] <= "70"
    )


@functools.lru_cache(maxsize=4096)
def _grouped_as_dialled(value: str) -> bool:
    """A valid number for one of _REGIONS, its digits grouped as that region writes it (``020 7946 0958``, not
    ``0207 94 60958``): the grouping is what tells a national number from a count or an id."""
    groups = re.findall(r"\d+", value)
    for region in _REGIONS:
        if _valid_number(value, region):
            written = phonenumbers.format_number(_parse(value, region), phonenumbers.PhoneNumberFormat.NATIONAL)
            if re.findall(r"\d+", written) == groups:
                return True
    return False


def _phones(text: str, start: int, end: int, span: tuple[int, int]):
    """(start, end) of the phone numbers in a phone-shaped run: the whole run, or else runs of its
    space-separated pieces (``2019 555-123-4567``, ``555-123-4567 555-987-6543``), leftmost and longest first."""
    if _phone_ok(text, start, end, span):
        yield start, end
        return
    if not _SHAPE_HINT.search(text, start, end):
        return
    pieces = [m.span() for m in re.finditer(r"\S+", text[start:end])]
    i = 0
    while i < len(pieces):
        for j in range(len(pieces) - 1, i - 1, -1):
            lo, hi = start + pieces[i][0], start + pieces[j][1]
            if (lo, hi) != (start, end) and _phone_ok(text, lo, hi, span, pieces=True):
                yield lo, hi
                i = j
                break
        i += 1


_FILE_EXTENSIONS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "bmp", "ico", "tif", "tiff"}  # logo@2x.png
_CARD_PREFIXES = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|6011|65|64[4-9]|62|35|50|5[6-9]|6[0-9])")


def _card_layout_ok(value: str) -> bool:
    """Ungrouped, or grouped as cards print: 4-4-4-4 (the last group 1-4 digits, up to 5 groups), 4-6-5, 4-6-4;
    one kind of separator. Not 411-3449806-8214013 (an order number)."""
    groups = re.split(r"[ -]", value)
    if len(groups) == 1:
        return True
    lengths = [len(g) for g in groups]
    return ("-" not in value or " " not in value) and (
        lengths[:-1] == [4] * (len(groups) - 1) and 1 <= lengths[-1] <= 4 or lengths in ([4, 6, 5], [4, 6, 4])
    )


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
        return (
            13 <= len(digits) <= 19
            and _card_layout_ok(value)
            and bool(_CARD_PREFIXES.search(digits))
            and luhn_ok(digits)
        )
    if kind == "email":
        tld = value.rsplit(".", 1)[1]
        return 2 <= len(tld) <= 24 and tld.isalpha() and tld.lower() not in _FILE_EXTENSIONS
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
    return True  # phone: candidates() validated it


class PiiConfig(TextFieldsConfig):
    fields: list[str] | Literal["all"] | None = Field(
        None,
        min_length=1,
        description=(
            "record fields to scrub (chat messages: their contents), or all: every text column but the id; "
            "default: the input's text field"
        ),
    )
    types: list[Literal["email", "phone", "ip", "ssn", "credit_card", "iban"]] = Field(
        ["email", "phone", "ip", "ssn", "credit_card", "iban"], description="the kinds of PII to find"
    )
    mode: Literal["redact", "mask", "hash"] = Field(
        "redact",
        description=("replace each find by its type ([EMAIL]), by asterisks, or by its type and a salted hash"),
    )
    salt_env: str = Field(
        SALT_ENV, min_length=1, validate_default=True, description="hash: the environment variable holding the salt"
    )
    salt: None = Field(None, exclude=True, description="refused: a salt is never written in a config")

    @field_validator("salt", mode="before")
    @classmethod
    def _no_salt_in_config(cls, value):
        raise PydanticCustomError(
            "salt_in_config",
            "a salt is never written in the config (it would land in the "
            "manifest): set it in the environment variable named by salt_env "
            f"(default {SALT_ENV})",
        )

    @field_validator("salt_env")
    @classmethod
    def _salt_is_set(cls, name: str, info: ValidationInfo) -> str:
        if info.data.get("mode") == "hash" and not os.environ.get(name):
            raise PydanticCustomError(
                "salt_missing",
                "mode hash takes its salt from the environment variable {name}, which is not set (or empty)",
                {"name": name},
            )
        return name


class Pii(MapStage):
    name = "pii"
    Config = PiiConfig
    report_sections = ("pii",)

    @classmethod
    def card(cls, options: dict, config: dict) -> StageCard:
        """What it replaced personal data by, in a section of its own."""
        types = options.get("types", [])
        kinds = [k for k in TOKENS if k in types or (k in ("ipv4", "ipv6") and "ip" in types)]
        tokens = list(dict.fromkeys(f"[{TOKENS[k]}]" for k in kinds))
        fields = options.get("fields") or "the text field"
        mode = options.get("mode", "redact")
        if mode == "mask":
            note = f"The `{cls.name}` stage replaced personal data ({', '.join(types)}) in {fields} by asterisks."
        else:
            if mode == "hash":
                tokens = [t[:-1] + ":<12 hex digits>]" for t in tokens]
            note = (
                f"The `{cls.name}` stage replaced personal data in {fields} by placeholders: "
                + ", ".join(f"`{t}`" for t in tokens)
                + (" (a salted hash of the value after the colon)." if mode == "hash" else ".")
            )
        return StageCard(sections=(CardSection("Personal data", note, order=20),))

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
        found = sorted(
            (start, PRIORITY[kind], end, kind)
            for start, end, kind in candidates(text)
            if kind in self.enabled and _valid(kind, text[start:end])
        )
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
            self.add_metric(batch, t, per_type[t])
        self.add_metric(batch, "docs_with_pii", (sum(per_type.values()) > 0).astype(np.int64))
        return batch
