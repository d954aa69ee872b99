"""``format``: build the columns a fine-tuning recipe reads, from configurable source fields, and reject records
that would make invalid training examples.

* ``alpaca``: ``instruction``, ``input``, ``output`` (strings; ``input`` may be empty). Sources default to the
  text field, ``input`` (when that column exists, else empty) and ``output``. Rejected: ``empty_instruction``,
  ``empty_output``.
* ``chat``: ``messages``, a list of ``{role, content}`` with roles ``system``/``user``/``assistant``: either from a
  conversation field (``mapping: {messages: conversations}``; a list, or its JSON text, of ``{role, content}``
  or ShareGPT ``{from, value}`` items) or built from ``system``/``user``/``assistant`` sources (defaults: no
  system, the text field, ``output``; ``system_prompt`` gives a fixed system message). Valid conversations: an
  optional system message first, then user and assistant turns alternating, starting with user and ending with
  assistant, every content non-empty; others are rejected as ``invalid_chat`` with the first problem in
  ``detail``.
* ``preference``: a prompt and two responses for preference optimization (thresher train's ``method: dpo``
  and ``orpo``): ``chosen`` and ``rejected`` (strings), and the prompt as ``messages`` (chat turns: an optional
  system message, then user and assistant turns alternating, starting and ending with user) when the mapping
  gives a conversation field (``mapping: {messages: conversations}``; ShareGPT ``{from, value}`` items as for
  ``chat``), else as ``prompt`` (a string; default source: the text field). A response may be a string or a
  message (``{from, value}`` or ``{role, content}``, as LLaMA-Factory's ``chosen``/``rejected``, or its JSON
  text); defaults: the fields ``chosen`` and ``rejected``. ``prompt_id`` (16 hex digits, a hash of the prompt)
  names the records of one prompt: ``split: {group_by: prompt_id}`` keeps a prompt's pairs in one split.
  Rejected: ``invalid_preference`` with the problem in ``detail`` (an invalid prompt, an empty response, or the
  same response twice).
* ``text``: the standard pretraining record ``id``, ``text`` (default source: the text field) and ``metadata``:
  JSON text of ``{source, timestamp, domain, quality_score}`` taken from the fields named in ``metadata``. By
  default each comes from the first of its usual fields that the records have (``DEFAULT_METADATA``: e.g.
  ``timestamp``, ``created``, ``date`` or ``warc_date``), ``domain`` else from the host of ``url``; missing ones
  are null. JSON text rather than a struct keeps the Parquet schema identical in every part file (a struct field
  that is missing throughout one file would be typed null there, and readers that take the schema from the
  first file fail). ``quality_score`` names a column (e.g. a ``classify`` score) that fills
  ``metadata.quality_score`` whatever ``metadata`` says. Rejected: ``empty_text``.

A source may be a list of fields, joined by a blank line (e.g. ``instruction: [instruction, input]``). A source
field the records do not have (a mapping's typo) rejects them with reason ``missing_field`` naming it, rather
than failing the run. The records keep their original fields too; the training recipe reads exactly the columns
above. The earlier stages (normalize, pii, quality, ...) act on the pipeline's text field only; ``format``
copies the other sources as they were read.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

import numpy as np
import orjson
import pandas as pd
import xxhash
from pydantic import Field, model_validator

from thresher.curate.stage import MapStage, StageCard, StageConfig, reject

TARGETS = {
    "alpaca": ("instruction", "input", "output"),
    "chat": ("messages", "system", "user", "assistant"),
    "preference": ("prompt", "messages", "chosen", "rejected"),
    "text": ("text",),
}
METADATA_KEYS = ("source", "timestamp", "domain", "quality_score")
DEFAULT_METADATA = {
    "source": ("source",),
    "timestamp": ("timestamp", "created", "date", "warc_date", "added"),
    "domain": ("domain", "source_domain"),
    "quality_score": ("quality_score",),
}
ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant"}


# per template: the Hub's task categories and task ids, and tags (for the dataset card)
TASKS = {
    "text": (("text-generation",), ("language-modeling",), ()),
    "alpaca": (("text-generation",), (), ("instruction-tuning",)),
    "chat": (("text-generation",), ("dialogue-modeling",), ("instruction-tuning", "conversational")),
    "preference": (("text-generation",), (), ("preference", "dpo")),
}


class FormatConfig(StageConfig):
    template: Literal["alpaca", "chat", "preference", "text"] = Field(
        "text", description=("the columns to build (above)")
    )
    mapping: dict[str, str | list[str]] = Field(default_factory=dict, description="output column -> source field(s)")
    system_prompt: str | None = Field(None, description="chat: a fixed system message before every conversation")
    metadata: dict[str, str] | None = Field(None, description="text: metadata key -> source field")
    quality_score: str | None = Field(
        None,
        description=(
            "text: the column whose value becomes metadata.quality_score (e.g. a classify score, <name>_score)"
        ),
    )

    @model_validator(mode="after")
    def _known_targets(self):
        unknown = set(self.mapping) - set(TARGETS[self.template])
        if unknown:
            raise ValueError(
                f"mapping: {', '.join(sorted(unknown))} not an output of template {self.template} "
                f"(outputs: {', '.join(TARGETS[self.template])})"
            )
        if self.metadata and (self.template != "text" or set(self.metadata) - set(METADATA_KEYS)):
            raise ValueError(f"metadata: only for template text, keys among {', '.join(METADATA_KEYS)}")
        if self.quality_score and self.template != "text":
            raise ValueError("quality_score: only for template text")
        if self.template == "chat" and "messages" in self.mapping and set(self.mapping) & {"user", "assistant"}:
            raise ValueError("mapping: give messages or user/assistant, not both")
        if self.template == "preference" and {"messages", "prompt"} <= set(self.mapping):
            raise ValueError("mapping: give messages or prompt, not both")
        for one_field in ("messages", "chosen", "rejected"):
            if not isinstance(self.mapping.get(one_field, ""), str):
                raise ValueError(f"mapping.{one_field}: one field")
        return self


def check_chat(messages) -> str | None:
    """The first problem of a conversation, or None when it is valid."""
    if not isinstance(messages, list) or not messages:
        return "no messages"
    for i, m in enumerate(messages):
        if m["role"] not in ("system", "user", "assistant"):
            return f"message {i}: unknown role {m['role']!r}"
        if not m["content"].strip():
            return f"message {i} ({m['role']}): empty content"
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            return f"turn {i}: expected {expected}, got {m['role']}"
    if len(turns) < 2 or turns[-1]["role"] != "assistant":
        return "the conversation must end with an assistant reply"
    return None


def check_prompt(messages: list[dict]) -> str | None:
    """The first problem of a preference prompt (chat turns ending with a user turn), or None."""
    if not messages:
        return "no prompt messages"
    for i, m in enumerate(messages):
        if m["role"] not in ("system", "user", "assistant"):
            return f"prompt message {i}: unknown role {m['role']!r}"
        if not m["content"].strip():
            return f"prompt message {i} ({m['role']}): empty content"
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for i, m in enumerate(turns):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            return f"prompt turn {i}: expected {'user' if i % 2 == 0 else 'assistant'}, got {m['role']}"
    if not turns or turns[-1]["role"] != "user":
        return "the prompt must end with a user turn"
    return None


def as_response(value) -> str:
    """A response: a string, or the content of a message (``{from, value}``/``{role, content}``, or its JSON)."""
    message = value
    if isinstance(value, str) and value.startswith("{"):
        try:
            message = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    if isinstance(message, dict):
        content = message.get("content", message.get("value"))
        return content if isinstance(content, str) else ""
    return _text(value)


def as_messages(value) -> list[dict] | str:
    """A conversation field (list, or its JSON text) as ``[{role, content}]``; a string says what is wrong."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return "not a JSON list of messages"
    if isinstance(value, (tuple, np.ndarray)):  # an Arrow list column reads as an array
        value = list(value)
    if not isinstance(value, list):
        return "not a list of messages"
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            return f"message {i} is not an object"
        role, content = m.get("role", m.get("from")), m.get("content", m.get("value"))
        if not isinstance(role, str) or not isinstance(content, str):
            return f"message {i}: role and content must be strings"
        out.append({"role": ROLES.get(role.lower(), role), "content": content})
    return out


class Format(MapStage):
    name = "format"
    Config = FormatConfig

    @classmethod
    def card(cls, options: dict, config: dict) -> StageCard:
        """The Hub's task categories, task ids and tags of its template."""
        return StageCard(tasks=TASKS[options.get("template", "text")])

    def added_columns(self) -> dict[str, str]:
        return {
            "alpaca": {"instruction": "the task", "input": "its input (may be empty)", "output": "the answer"},
            "chat": {"messages": "the conversation: list of {role, content}"},
            "preference": {
                "messages" if "messages" in self.config.mapping else "prompt": "the prompt: chat turns ending with user"
                if "messages" in self.config.mapping
                else "the prompt",
                "chosen": "the preferred response",
                "rejected": "the other response",
                "prompt_id": "hash of the prompt: the group of its pairs",
            },
            "text": {"text": "the document", "metadata": "JSON: source, timestamp, domain, quality_score"},
        }[self.config.template]

    def source(
        self, batch: pd.DataFrame, target: str, default: str | None, missing: list[str], required: bool = True
    ) -> pd.Series:
        """The text for ``target``: its mapped field(s) (else ``default``) joined by a blank line.

        A source column the records lack is added to ``missing`` when the mapping names it or the target is
        required (the records are then rejected), else it reads as ''.
        """
        fields = self.config.mapping.get(target, default)
        fields = [fields] if isinstance(fields, str) else list(fields or [])
        if required or target in self.config.mapping:
            missing += [f for f in fields if f not in batch.columns and f not in missing]
        columns = [[_text(v) for v in batch[f]] for f in fields if f in batch.columns]
        joined = (
            ["\n\n".join(p for p in parts if p.strip()) for parts in zip(*columns)] if columns else [""] * len(batch)
        )
        return pd.Series(joined, index=batch.index, dtype=object)

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        missing: list[str] = []
        template = self.config.template
        if template == "alpaca":
            batch["instruction"] = self.source(batch, "instruction", self.text, missing)
            batch["input"] = self.source(batch, "input", "input", missing, required=False)
            batch["output"] = self.source(batch, "output", "output", missing)
            reject_missing(batch, missing)
            reject(batch, batch["instruction"].str.strip() == "", "empty_instruction")
            reject(batch, batch["output"].str.strip() == "", "empty_output")
        elif template == "chat":
            conversations = self.conversations(batch, missing)
            problems = pd.Series(
                [c if isinstance(c, str) else check_chat(c) for c in conversations], index=batch.index, dtype=object
            )
            batch["messages"] = [c if p is None and not missing else None for c, p in zip(conversations, problems)]
            reject_missing(batch, missing)
            reject(batch, problems.notna(), "invalid_chat", problems)
        elif template == "preference":
            self.preference(batch, missing)
        else:
            batch["text"] = self.source(batch, "text", self.text, missing)
            batch["metadata"] = self.metadata(batch, missing)
            reject_missing(batch, missing)
            reject(batch, batch["text"].str.strip() == "", "empty_text")
        return batch

    def preference(self, batch: pd.DataFrame, missing: list[str]) -> None:
        """``messages`` or ``prompt``, ``chosen``, ``rejected``, ``prompt_id``; invalid pairs rejected."""
        chat = "messages" in self.config.mapping
        if chat:
            field = self.config.mapping["messages"]
            if field not in batch.columns:
                missing.append(field)
            prompts = [as_messages(v) for v in batch[field]] if field in batch.columns else [""] * len(batch)
            problems = [p if isinstance(p, str) else check_prompt(p) for p in prompts]
        else:
            prompts = self.source(batch, "prompt", self.text, missing).tolist()
            problems = [None if p.strip() else "empty prompt" for p in prompts]
        responses = {}
        for side in ("chosen", "rejected"):
            field = self.config.mapping.get(side, side)
            if field not in batch.columns:
                missing.append(field)
            responses[side] = [as_response(v) for v in batch[field]] if field in batch.columns else [""] * len(batch)
        for i, (chosen, rejected) in enumerate(zip(responses["chosen"], responses["rejected"])):
            if problems[i] is None:
                problems[i] = (
                    "empty chosen response"
                    if not chosen.strip()
                    else "empty rejected response"
                    if not rejected.strip()
                    else "chosen and rejected are the same"
                    if chosen.strip() == rejected.strip()
                    else None
                )
        valid = [p is None and not missing for p in problems]
        batch["messages" if chat else "prompt"] = [p if ok else None for p, ok in zip(prompts, valid)]
        batch["chosen"], batch["rejected"] = responses["chosen"], responses["rejected"]
        batch["prompt_id"] = [xxhash.xxh64_hexdigest(orjson.dumps(p)) if ok else None for p, ok in zip(prompts, valid)]
        reject_missing(batch, missing)
        problems = pd.Series(problems, index=batch.index, dtype=object)
        reject(batch, problems.notna(), "invalid_preference", problems)

    def conversations(self, batch: pd.DataFrame, missing: list[str]) -> list:
        system = [self.config.system_prompt] * len(batch) if self.config.system_prompt else None
        if "system" in self.config.mapping:
            system = self.source(batch, "system", None, missing).tolist()
        if "messages" in self.config.mapping:
            field = self.config.mapping["messages"]
            if field not in batch.columns:
                missing.append(field)
                return ["no messages"] * len(batch)
            convs = [as_messages(v) for v in batch[field]]
        else:
            users = self.source(batch, "user", self.text, missing)
            replies = self.source(batch, "assistant", "output", missing)
            convs = [
                [{"role": "user", "content": u}, {"role": "assistant", "content": a}] for u, a in zip(users, replies)
            ]
        if system is None:
            return convs
        return [
            c
            if isinstance(c, str) or not s or (c and c[0]["role"] == "system")
            else [{"role": "system", "content": s}, *c]
            for c, s in zip(convs, system)
        ]

    def metadata(self, batch: pd.DataFrame, missing: list[str]) -> list[str]:
        if self.config.metadata:
            missing += [f for f in self.config.metadata.values() if f not in batch.columns]
            columns = {k: batch[f].tolist() for k, f in self.config.metadata.items() if f in batch.columns}
        else:
            found = {k: next((f for f in names if f in batch.columns), None) for k, names in DEFAULT_METADATA.items()}
            columns = {k: batch[f].tolist() for k, f in found.items() if f is not None}
            if "domain" not in columns and "url" in batch.columns:
                columns["domain"] = [_host(u) for u in batch["url"]]
        score = self.config.quality_score
        if score is not None:
            if score in batch.columns:
                columns["quality_score"] = batch[score].tolist()
            else:
                missing.append(score)
        out = []
        for i in range(len(batch)):
            meta = {k: _plain(columns[k][i]) if k in columns else None for k in METADATA_KEYS}
            meta["quality_score"] = _score(meta["quality_score"])
            out.append(orjson.dumps(meta).decode())
        return out


def reject_missing(batch: pd.DataFrame, missing: list[str]) -> None:
    if missing:
        columns = ", ".join(c for c in batch.columns if not c.startswith("_"))
        reject(
            batch,
            np.ones(len(batch), bool),
            "missing_field",
            f"no field {missing} in the records (columns: {columns}); check format's mapping/metadata",
        )


def _missing(value) -> bool:
    return value is None or (np.ndim(value) == 0 and pd.isna(value))


def _text(value) -> str:
    if isinstance(value, str):
        return value
    return "" if _missing(value) else str(value)


def _plain(value):
    if _missing(value):
        return None
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def _host(url) -> str | None:
    try:
        return urlsplit(url).hostname if isinstance(url, str) else None
    except ValueError:
        return None


def _score(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
