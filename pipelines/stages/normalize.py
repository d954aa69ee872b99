"""``normalize``: repair mojibake (ftfy), Unicode normal form, control characters, whitespace, optional HTML to text."""

from __future__ import annotations

import unicodedata
from typing import Literal

import ftfy
import pandas as pd
import re2

from pipelines.stage import MapStage, StageConfig, reject

# C0/C1 controls and other invisible format characters to delete; \t and \n are kept, \r and form
# feeds become newlines, the Unicode line/paragraph separators too.
_CONTROL = {**{c: None for c in list(range(0x00, 0x20)) + list(range(0x7F, 0xA0))},
            0x09: 0x09, 0x0A: 0x0A, 0x0D: 0x0A, 0x0B: 0x0A, 0x0C: 0x0A, 0x2028: 0x0A, 0x2029: 0x0A,
            0x200B: None, 0xFEFF: None, 0x00AD: None}
_SPACES = re2.compile(r"[ \t\x{00A0}\x{1680}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}]+")
_TRAILING = re2.compile(r"(?m)[ \t]+$")
_BLANK_LINES = re2.compile(r"\n{3,}")


class NormalizeConfig(StageConfig):
    fix_mojibake: bool = True
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFC"
    html_to_text: bool = False
    strip_control: bool = True
    collapse_whitespace: bool = True


def html_to_text(html: str) -> str:
    """Visible text of an HTML document, block elements on their own lines."""
    from selectolax.parser import HTMLParser

    tree = HTMLParser(html)
    for node in tree.css("script, style, noscript, template, head"):
        node.decompose()
    root = tree.body or tree.root
    return root.text(separator="\n", strip=True) if root is not None else ""


class Normalize(MapStage):
    name = "normalize"
    Config = NormalizeConfig

    def normalize(self, text: str) -> str:
        c = self.config
        if c.html_to_text:
            text = html_to_text(text)
        if c.fix_mojibake:
            text = ftfy.fix_text(text, normalization=None, uncurl_quotes=False, fix_line_breaks=True)
        if c.unicode_form != "none":
            text = unicodedata.normalize(c.unicode_form, text)
        if c.strip_control:
            text = text.replace("\r\n", "\n").translate(_CONTROL)
        if c.collapse_whitespace:
            text = _BLANK_LINES.sub("\n\n", _TRAILING.sub("", _SPACES.sub(" ", text))).strip()
        return text

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch[self.text] = [self.normalize(t) for t in batch[self.text]]
        reject(batch, batch[self.text].str.len() == 0, "empty_after_normalize")
        return batch
