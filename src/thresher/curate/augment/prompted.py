"""Model-backed methods: the prompts a causal LM answers (``thresher.models.generation``), and how its answers are read.

* ``paraphrase``: the text said differently, same meaning.
* ``backtranslate``: the text translated into the ``pivot`` language, and that translation back into the source's
  language (two generations per copy).
* ``rewrite``: the text rewritten by an instruction: ``simplify``, ``formalise``, ``tone`` (with ``tone``), or any
  ``instruction`` of one's own.
* ``self_instruct`` (Wang et al., 2023, "Self-Instruct"): a new instruction/response pair written after
  ``examples`` seed pairs (the source record first, then others of its batch).

Every template is configurable (``prompt``); it is a Python format string over ``{text}`` (and ``{language}``,
``{pivot}``, ``{style}``, ``{examples}`` where they apply). Answers are stripped of surrounding white space, of a
leading "Here is ...:" line and of enclosing quotes.
"""

from __future__ import annotations

import re

LANGUAGES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "sv": "Swedish",
    "pl": "Polish",
    "ru": "Russian",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "ar": "Arabic",
    "tr": "Turkish",
    "cs": "Czech",
    "da": "Danish",
    "fi": "Finnish",
    "el": "Greek",
    "hi": "Hindi",
    "uk": "Ukrainian",
    "vi": "Vietnamese",
    "id": "Indonesian",
}
PROMPTS = {
    "paraphrase": "Paraphrase the following text. Keep its meaning and its language; reply with the paraphrase "
    "only.\n\n{text}",
    "backtranslate": "Translate the following text into {language}. Reply with the translation only.\n\n{text}",
    "rewrite": "{style} Reply with the rewritten text only.\n\n{text}",
    "self_instruct": "Here are examples of tasks, each an instruction and its response:\n\n{examples}\n\nWrite one "
    "new task that is different from all of these, in the same format: a line starting with "
    '"Instruction:", then a line starting with "Response:".',
}
STYLES = {
    "simplify": "Rewrite the following text in simpler words that a child could follow, keeping its meaning.",
    "formalise": "Rewrite the following text in a formal register, keeping its meaning.",
    "tone": "Rewrite the following text in a {tone} tone, keeping its meaning.",
}
_PREAMBLE = re.compile(r"(?i)(?:here is|here's|sure|certainly)[^\n]{0,80}:[ \t]*\n+")
_QUOTES = ('"', "'", "\u201c", "\u201d")


def language_name(code: str) -> str:
    return LANGUAGES.get(code, code)


def clean(answer: str) -> str:
    """The answer without a leading "Here is ...:" line and without quotes around all of it."""
    text = answer.strip()
    m = _PREAMBLE.match(text)
    if m:
        text = text[m.end() :].strip()
    if len(text) > 1 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def example_block(pairs: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"Instruction: {i.strip()}\nResponse: {r.strip()}" for i, r in pairs)


def parse_pair(answer: str) -> tuple[str, str] | None:
    """(instruction, response) from an answer in the self_instruct format (the "Instruction:" label may be left
    out), or None when it has no "Response:"; a further pair the model went on to write is dropped."""
    low = answer.lower()
    cut = low.find("response:")
    if cut < 0:
        return None
    start = low.find("instruction:", 0, cut)
    start = 0 if start < 0 else start + len("instruction:")
    end = low.find("instruction:", cut)
    return answer[start:cut].strip(), answer[cut + len("response:") : end if end >= 0 else len(answer)].strip()
