"""``normalize``: repair mojibake (ftfy), Unicode normal form, control characters, whitespace, optional HTML to text.

Every text of the ``fields`` (default: the text field; chat messages: each content, see :mod:`thresher.curate.fields`)
is normalized. A record is rejected (``empty_after_normalize``, the detail names the field) when a text that was
not blank becomes empty.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

import ftfy
import pandas as pd
from pydantic import Field

from thresher.curate.fields import TextFieldsConfig, assign, reject_missing, unpack
from thresher.curate.stage import MapStage, reject

# C0/C1 controls and other invisible format characters to delete; \t and \n are kept, \r and form
# feeds become newlines, the Unicode line/paragraph separators too.
_CONTROL = {
    **{c: None for c in list(range(0x00, 0x20)) + list(range(0x7F, 0xA0))},
    0x09: 0x09,
    0x0A: 0x0A,
    0x0D: 0x0A,
    0x0B: 0x0A,
    0x0C: 0x0A,
    0x2028: 0x0A,
    0x2029: 0x0A,
    0x200B: None,
    0xFEFF: None,
    0x00AD: None,
}
# Single-character-class repetitions: linear in Python's engine, and faster than RE2 when matches are many.
_OTHER_SPACES = "\t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"  # spaces that become " " (a class's body)
_SPACES = re.compile(f"[ {_OTHER_SPACES}]{{2,}}|[{_OTHER_SPACES}]")
_RUN_OF_SPACES = re.compile(" {2,}")
_WIDE_SPACE = re.compile(f"[{_OTHER_SPACES}]")  # what _SPACES changes besides "  "
_CONTROL_HINT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b\u2028\u2029\ufeff]")
_BLANK_LINES = re.compile("\n{3,}")


# The whole document as one segment: ftfy.fix_text's per-line loop is slow on documents of many short lines.
_FTFY = ftfy.TextFixerConfig(
    normalization=None, uncurl_quotes=False, fix_line_breaks=True, max_decode_length=1 << 30, explain=False
)


# UTF-8 read as Windows-1252 or Latin-1: a lead byte (Â..ô) followed by what a continuation byte becomes.
# Text without such a pair has no mojibake for ftfy to fix, and skips it (ftfy is the slowest step).
_MOJIBAKE_HINT = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201a\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
)


class NormalizeConfig(TextFieldsConfig):
    fix_mojibake: bool = Field(
        True, description=("repair mojibake with ftfy, only in texts where UTF-8-read-as-cp1252 pairs appear")
    )
    unicode_form: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normal form")
    html_to_text: bool = Field(
        False, description=("convert HTML to its visible text first (lexbor), block elements on lines")
    )
    strip_control: bool = Field(
        True,
        description=(
            "delete control and zero-width characters (tabs and newlines kept; \\r, form feeds and line "
            "separators become newlines)"
        ),
    )
    collapse_whitespace: bool = Field(
        True, description=("runs of spaces become one, lines are trimmed, 3 or more newlines become 2")
    )


def html_to_text(html: str) -> str:
    """Visible text of an HTML document, block elements on their own lines."""
    from selectolax.lexbor import LexborHTMLParser as HTMLParser

    tree = HTMLParser(html)
    for node in tree.css("script, style, noscript, template, head"):
        node.decompose()
    root = tree.body or tree.root
    return root.text(separator="\n", strip=True) if root is not None else ""


class Normalize(MapStage):
    name = "normalize"
    Config = NormalizeConfig

    def normalize(self, text: str) -> str:
        """``text`` normalized. A step is skipped where a quick check shows it cannot change the text (ASCII text
        has no mojibake and is in every normal form; no double or special space, nothing to collapse): the result
        is the same, at a fraction of the regular expressions' cost."""
        c = self.config
        if c.html_to_text:
            text = html_to_text(text)
        ascii_only = text.isascii()
        if c.fix_mojibake and not ascii_only and _MOJIBAKE_HINT.search(text):
            text = ftfy.fix_and_explain(text, _FTFY).text
            ascii_only = text.isascii()
        if c.unicode_form != "none" and not ascii_only:
            text = unicodedata.normalize(c.unicode_form, text)
        if c.strip_control:
            if _CONTROL_HINT.search(text):
                text = text.replace("\r\n", "\n").translate(_CONTROL)
        if c.collapse_whitespace:
            if _WIDE_SPACE.search(text):
                text = _SPACES.sub(" ", text)
            elif "  " in text:
                text = _RUN_OF_SPACES.sub(" ", text)  # the same as _SPACES there, twice as fast
            if " \n" in text or "\n " in text:
                text = "\n".join(line.strip(" ") for line in text.split("\n"))
            if "\n\n\n" in text:
                text = _BLANK_LINES.sub("\n\n", text)
            text = text.strip()
        return text

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        fields = self.config.field_names(batch, self.text)
        if reject_missing(batch, fields):
            return batch
        for name in fields:
            values, emptied = [], []
            for value in batch[name]:
                texts, pack = unpack(value)
                new = [self.normalize(t) for t in texts]
                values.append(pack(new))
                emptied.append(any(not n and t.strip() for t, n in zip(texts, new)))
            assign(batch, name, values)
            reject(batch, emptied, "empty_after_normalize", f"field {name}")
        return batch
