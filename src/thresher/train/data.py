"""Training data: curated Parquet read with Ray Data, rendered, tokenized, prompt-masked and packed in ``map_batches``.

Formats (the columns thresher's ``format`` stage writes):

* ``text``: causal LM on ``data.text_field``; every token is trained; a document longer than ``max_seq_len`` is
  cut into ``max_seq_len`` chunks, each its own sequence.
* ``alpaca``: ``instruction``, ``input`` (may be empty), ``output``, rendered with the Stanford Alpaca prompt;
  only the response and the EOS token after it are trained.
* ``chat``: ``messages``, a list of ``{role, content}``, rendered with the tokenizer's chat template (or, when it
  has none, :data:`FALLBACK_CHAT_TEMPLATE`, which is then saved with the exported tokenizer); only the
  assistant turns are trained. An assistant turn is the text between the rendering of the conversation before
  it (with the generation prompt) and the rendering that includes it.
* ``preference`` (methods dpo, orpo): a prompt and two responses, ``chosen`` and ``rejected``. The prompt is
  ``messages`` (chat turns ending with a user turn; each response is rendered as the assistant turn after them,
  with the chat template) when the files have that column, else ``prompt`` (a string; the response follows it
  directly and the EOS token after it, as TRL's non-conversational format). Only the response tokens are trained:
  the rendered prompt and the response are tokenized apart and concatenated (as TRL does), so no token straddles
  the boundary (a BPE token such as " 2" would otherwise start in the prompt and take the response's first
  character out of training).
  A row holds the pair: each column has shape ``(2, max_seq_len)``, chosen first; rows are never packed, and a
  pair whose response is cut off entirely by ``max_seq_len`` is dropped.

Prompt masking is by character span: the rendered text is tokenized once with offsets, and a token is trained
(label = its id) when it starts inside a trained span, else its label is -100. alpaca and chat examples longer
than ``max_seq_len`` are truncated on the right; an example left with nothing to train is dropped. Every record is
counted (:func:`encode_counted`): used, truncated, or dropped by reason (:data:`thresher.train.accounting.DROP_REASONS`:
a blank text, response or preference side, a chat without an assistant turn, a prompt that fills ``max_seq_len``).

Every row holds ``max_seq_len`` tokens in four columns: ``input_ids``, ``labels``, ``position_ids`` and
``attention_mask`` (1 on real tokens). With ``packing: true`` the examples of a task batch are packed next-fit
into rows; each example's ``position_ids`` restart at 0 and the first label of each example is -100, so no
token is trained to predict across a document boundary. Cross-document attention is prevented by the model:
transformers (5.x) reads restarting ``position_ids`` with ``attention_mask=None`` as packed sequences and builds
a block-diagonal causal mask for sdpa and eager attention, and uses varlen kernels (``cu_seqlens`` from the
positions) for flash-attention -- the same semantics as ``DataCollatorWithFlattening``. The training loop
therefore passes ``position_ids`` and no attention mask (and ``use_cache=False``: a cache disables the
detection). The padding at the end of a row is a sequence of its own with labels -100. Without packing each
row holds one example plus padding. The virtual-token methods (prefix, prompt) cannot take ``position_ids``
(PEFT drops them), so for them rows are never packed and the loop passes ``attention_mask``.

Each row also has ``source``: the index of its dataset in a mixture (``data.train`` as a list, :func:`mix`).
"""

from __future__ import annotations

import functools
import logging
import math
import posixpath
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.core.config import ConfigError
from thresher.core.storage import MANIFEST, Storage, join, require_complete_run, run_root
from thresher.train.order import RecordOrder

log = logging.getLogger(__name__)

IGNORE = -100
COLUMNS = ("input_ids", "labels", "position_ids", "attention_mask")
SPLITS = ("train", "validation", "test")  # the split subfolders of a thresher run's data/
PREFERENCE_PROMPTS = ("messages", "prompt")  # the prompt column of preference data: chat turns, else a string

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)

FALLBACK_CHAT_TEMPLATE = (  # newlines as expressions: chat templates render with trim_blocks
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Encoding:
    """How records become rows (picklable: it travels with the ``map_batches`` function)."""

    format: str
    text_field: str
    max_seq_len: int
    packing: bool

    @property
    def source_columns(self) -> list[str]:
        return {
            "text": [self.text_field],
            "alpaca": ["instruction", "input", "output"],
            "chat": ["messages"],
            "preference": ["prompt", "chosen", "rejected"],
        }[self.format]


# -- rendering: a record -> (text, trained character spans) ------------------------------------------------


def render_alpaca(instruction: str, input_: str | None, output: str) -> tuple[str, list[tuple[int, int]]]:
    template = ALPACA_PROMPT_WITH_INPUT if input_ and input_.strip() else ALPACA_PROMPT
    prompt = template.format(instruction=instruction, input=input_ or "")
    return prompt + output, [(len(prompt), len(prompt) + len(output))]


def render_chat(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise ValueError(
                "the chat template does not render a conversation as a prefix of its continuation; "
                "assistant turns cannot be located for prompt masking"
            )
        spans.append((len(before), len(upto)))
    return full, spans


def render_preference(tokenizer, prompt: str | list[dict], response: str) -> tuple[str, str]:
    """The rendered prompt (a string, or chat turns with the generation prompt) and the text after it."""
    if isinstance(prompt, str):
        return prompt, response
    text, spans = render_chat(tokenizer, [*prompt, {"role": "assistant", "content": response}])
    return text[: spans[-1][0]], text[spans[-1][0] :]


def ensure_chat_template(tokenizer) -> None:
    """Give a tokenizer without a chat template the documented fallback."""
    if not getattr(tokenizer, "chat_template", None):
        log.info("the tokenizer has no chat template: using thresher's fallback template")
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE


# -- tokenizing and masking --------------------------------------------------------------------------------


def tokenize(
    tokenizer, texts: list[str], spans: list[list[tuple[int, int]]], enc: Encoding, append_eos: bool
) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels per example; labels are -100 outside the trained spans and on each first token."""
    batch = tokenizer(texts, add_special_tokens=enc.format != "chat", return_offsets_mapping=True)
    eos = tokenizer.eos_token_id
    out = []
    for ids, offsets, trained in zip(batch["input_ids"], batch["offset_mapping"], spans):
        labels = [t if any(s <= start < e for s, e in trained) else IGNORE for t, (start, _) in zip(ids, offsets)]
        if append_eos and eos is not None and (not ids or ids[-1] != eos):
            ids, labels = ids + [eos], labels + [eos]
        out.append((ids, labels))
    return out


class TextTokenizer:
    """The part of a fast tokenizer that :func:`tokenize` calls for the text and alpaca formats: its Rust
    ``tokenizers`` backend, without truncation or padding (as transformers calls it), and its EOS and pad ids. A
    tokenize task unpickles it without importing transformers, which rebuilding the whole tokenizer costs."""

    def __init__(self, tokenizer) -> None:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.eos_token_id, self.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id

    def __call__(self, texts: list[str], add_special_tokens: bool, return_offsets_mapping: bool) -> dict:
        encodings = self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encodings], "offset_mapping": [e.offsets for e in encodings]}


def task_tokenizer(tokenizer, enc: Encoding):
    """What the tokenize tasks of ``enc`` get: a :class:`TextTokenizer` for text and alpaca with a fast tokenizer;
    the tokenizer itself for chat and preference, which render with its chat template."""
    if enc.format in ("text", "alpaca") and getattr(tokenizer, "backend_tokenizer", None) is not None:
        return TextTokenizer(tokenizer)
    return tokenizer


def split_long(ids: list[int], labels: list[int], enc: Encoding) -> list[tuple[list[int], list[int]]]:
    """text: chunks of max_seq_len; alpaca/chat: truncated; each piece's first label masked; empty ones dropped."""
    n = enc.max_seq_len
    pieces = (
        [(ids[i : i + n], labels[i : i + n]) for i in range(0, len(ids), n)]
        if enc.format == "text"
        else [(ids[:n], labels[:n])]
    )
    out = []
    for p_ids, p_labels in pieces:
        p_labels = [IGNORE] + p_labels[1:]
        if any(label != IGNORE for label in p_labels):
            out.append((p_ids, p_labels))
    return out


def blank(value) -> bool:
    """Whether a text field is null, empty or whitespace."""
    return value is None or not str(value).strip()


def record_problem(enc: Encoding, record: dict) -> str | None:
    """Why a record cannot be trained on before it is tokenized (a :data:`DROP_REASONS` name), or None."""
    if enc.format == "text":
        return "empty_text" if blank(record[enc.text_field]) else None
    if enc.format == "alpaca":  # a null instruction is rendered empty: the output alone can be a valid example
        return "missing_response" if blank(record["output"]) else None
    replies = [m["content"] for m in record["messages"] or [] if m["role"] == "assistant"]
    if not replies:
        return "no_assistant_turn"
    return "missing_response" if any(blank(r) for r in replies) else None


def keep_examples(
    examples: list[tuple[list[int], list[int]]], enc: Encoding, counts: Counter
) -> list[tuple[list[int], list[int]]]:
    """The pieces of each tokenized example (:func:`split_long`), counted in ``counts``: ``used``, ``truncated``
    (alpaca/chat cut at max_seq_len), or dropped as ``prompt_too_long`` (text: ``too_short``, one token)."""
    out = []
    for ids, labels in examples:
        pieces = split_long(ids, labels, enc)
        if not pieces:
            counts["too_short" if enc.format == "text" else "prompt_too_long"] += 1
            continue
        counts["used"] += 1
        counts["truncated"] += enc.format != "text" and len(ids) > enc.max_seq_len
        out.extend(pieces)
    return out


def encode_records(tokenizer, batch: pa.Table, enc: Encoding, counts: Counter) -> list[tuple[list[int], list[int]]]:
    """Render, tokenize and mask one batch of records; each record is counted in ``counts`` (used, or dropped by
    reason)."""
    records = []
    for record in batch.select(enc.source_columns).to_pylist():
        problem = record_problem(enc, record)
        if problem:
            counts[problem] += 1
        else:
            records.append(record)
    if enc.format == "text":
        texts = [r[enc.text_field] for r in records]
        spans = [[(0, len(t))] for t in texts]
    elif enc.format == "alpaca":
        rendered = [render_alpaca(r["instruction"] or "", r["input"], r["output"]) for r in records]
        texts, spans = [r[0] for r in rendered], [r[1] for r in rendered]
    else:
        rendered = [render_chat(tokenizer, r["messages"]) for r in records]
        texts, spans = [r[0] for r in rendered], [r[1] for r in rendered]
    examples = tokenize(tokenizer, texts, spans, enc, append_eos=enc.format != "chat") if records else []
    return keep_examples(examples, enc, counts)


def encode_pairs(
    tokenizer, batch: pa.Table, enc: Encoding, counts: Counter
) -> list[tuple[tuple[list[int], list[int]], ...]]:
    """Preference records -> (chosen, rejected) examples, each (ids, labels), truncated to ``max_seq_len``; a pair
    with a blank response is dropped as ``empty_preference``, one with a response cut off entirely as
    ``prompt_too_long`` (counted in ``counts``)."""
    chat = "messages" in batch.column_names
    records = batch.select(["messages" if chat else "prompt", "chosen", "rejected"]).to_pylist()
    counts["empty_preference"] += sum(blank(r["chosen"]) or blank(r["rejected"]) for r in records)
    records = [r for r in records if not (blank(r["chosen"]) or blank(r["rejected"]))]
    prompts = [
        [{"role": m["role"], "content": m["content"]} for m in r["messages"]] if chat else r["prompt"] or ""
        for r in records
    ]
    if not records:
        return []
    eos = [] if chat or tokenizer.eos_token_id is None else [tokenizer.eos_token_id]  # a chat turn ends itself
    sides = []
    for column in ("chosen", "rejected"):
        rendered = [render_preference(tokenizer, p, r[column]) for p, r in zip(prompts, records)]
        # chat-rendered text has its special tokens already
        prompt_ids = tokenizer([r[0] for r in rendered], add_special_tokens=not chat)["input_ids"]
        response_ids = tokenizer([r[1] for r in rendered], add_special_tokens=False)["input_ids"]
        sides.append([(p + r + eos, [IGNORE] * len(p) + r + eos) for p, r in zip(prompt_ids, response_ids)])
    pairs = []
    for chosen, rejected in zip(*sides):
        pieces = [split_long(ids, labels, enc) for ids, labels in (chosen, rejected)]
        if not all(pieces):
            counts["prompt_too_long"] += 1
            continue
        counts["used"] += 1
        counts["truncated"] += max(len(chosen[0]), len(rejected[0])) > enc.max_seq_len
        pairs.append((pieces[0][0], pieces[1][0]))
    return pairs


# -- rows ----------------------------------------------------------------------------------------------------


def to_rows(
    examples: list[tuple[list[int], list[int]]], max_seq_len: int, packing: bool, pad_id: int
) -> dict[str, np.ndarray]:
    """Fixed-length rows; packed next-fit when ``packing``. Padding is its own sequence with labels -100."""
    rows: list[list[tuple[list[int], list[int]]]] = []
    used = max_seq_len + 1
    for ex in examples:
        if not packing or used + len(ex[0]) > max_seq_len:
            rows.append([])
            used = 0
        rows[-1].append(ex)
        used += len(ex[0])
    shape = (len(rows), max_seq_len)
    out = {
        "input_ids": np.full(shape, pad_id, np.int32),
        "labels": np.full(shape, IGNORE, np.int32),
        "position_ids": np.zeros(shape, np.int32),
        "attention_mask": np.zeros(shape, np.int8),
    }
    for r, row in enumerate(rows):
        at = 0
        for ids, labels in row:
            n = len(ids)
            out["input_ids"][r, at : at + n] = ids
            out["labels"][r, at : at + n] = labels
            out["position_ids"][r, at : at + n] = np.arange(n)
            out["attention_mask"][r, at : at + n] = 1
            at += n
        out["position_ids"][r, at:] = np.arange(max_seq_len - at)
    return out


def encode_counted(batch: pa.Table, tokenizer, enc: Encoding, source: int = 0) -> tuple[dict[str, np.ndarray], Counter]:
    """Records -> rows of ``max_seq_len`` tokens (preference: pairs of them), each marked with its dataset's index
    ``source``, and the batch's counts: ``read``, ``used``, ``truncated``, ``rows`` and each drop reason."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    counts: Counter = Counter(read=batch.num_rows)
    if enc.format == "preference":
        pairs = encode_pairs(tokenizer, batch, enc, counts)
        chosen, rejected = (to_rows([p[i] for p in pairs], enc.max_seq_len, False, pad_id) for i in (0, 1))
        rows = {c: np.stack([chosen[c], rejected[c]], axis=1) for c in COLUMNS}
    else:
        rows = to_rows(encode_records(tokenizer, batch, enc, counts), enc.max_seq_len, enc.packing, pad_id)
    counts["rows"] = len(rows["input_ids"])
    return {**rows, "source": np.full(len(rows["input_ids"]), source, np.int32)}, counts


def encode_batch(
    batch: pa.Table, tokenizer, enc: Encoding, source: int = 0, tally=None, dataset: str = "train"
) -> dict[str, np.ndarray]:
    """The ``map_batches`` function: :func:`encode_counted`'s rows; its counts go to the ``tally`` actor
    (:class:`thresher.train.accounting.Tally`) as ``dataset``'s, when given, without waiting."""
    rows, counts = encode_counted(batch, tokenizer, enc, source)
    if tally is not None:
        tally.add.remote(dataset, dict(counts))
    return rows


def parquet_files(uri: str, key: str, enc: Encoding, storage: Storage) -> list[str]:
    """The Parquet files at ``uri`` (a folder, file or glob; local or s3://), checked before any Ray work: they
    exist, are not an unfinished or gate-failed thresher run (any other Parquet is welcome), and hold the columns
    ``enc`` reads. Errors name the config ``key``."""
    files = [f for f, _ in storage.expand(uri) if f.endswith(".parquet")]
    if not files:
        raise ConfigError(f"{key}: no Parquet files at {uri}")
    try:
        require_complete_run(storage, uri)
    except ConfigError as e:
        raise ConfigError(f"{key}: {e}") from None
    schema = parquet_schema(files[0], storage)
    read = read_columns(enc, schema.names)
    missing = [c for c in read if c not in schema.names]
    hint = "data.text_field" if enc.format == "text" else "data.format"
    if missing:
        raise ConfigError(
            f"{hint}: format {enc.format} reads column(s) {', '.join(missing)}, which {files[0]} lacks "
            f"(columns: {', '.join(schema.names)})"
        )
    for column in read:
        kind = schema.field(column).type
        turns = column == "messages"
        if not (_is_turns(kind) if turns else _is_text(kind)):
            raise ConfigError(
                f"{hint}: format {enc.format} reads column {column} as "
                f"{'chat turns (a list of role and content)' if turns else 'text'}, and {files[0]} holds {kind}"
            )
    return files


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


def _is_turns(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_struct(kind.value_type)


def check_no_leak(key: str, uri: str, files: list[str], validation: list[str] | None, storage: Storage) -> None:
    """Refuse training ``files`` (at ``uri``, config ``key``) that are a thresher run's ``data/`` folder with split
    subfolders (they would train on every split) or that include any of the ``validation`` files."""
    root = run_root(uri)
    if root is not None and posixpath.basename(uri.rstrip("/")) == "data" and storage.exists(join(root, MANIFEST)):
        parents = {posixpath.dirname(f) for f in files}
        splits = sorted(posixpath.basename(p) for p in parents if posixpath.basename(p) in SPLITS)
        if splits:
            raise ConfigError(
                f"{key}: {uri} is a thresher run's data folder with the splits {', '.join(splits)}: training would "
                f"read them all; give one split's folder, e.g. {join(uri, 'train')}"
            )
    shared = sorted(set(files) & set(validation or []))
    if shared:
        raise ConfigError(
            f"{key}: {uri} holds {len(shared)} of data.validation's files ({shared[0]}): the model would train on its "
            "validation data"
        )


def record_count(files: list[str], storage: Storage) -> int:
    """The records in the Parquet ``files``, from their footers."""
    total = 0
    for file in files:
        fs, path = storage.resolve(file)
        with fs.open_input_file(path) as f:
            total += pq.read_metadata(f).num_rows
    return total


def first_rows(files: list[str], rows: int, storage: Storage, tokenizer, enc: Encoding, batch_rows: int, tally=None):
    """A Ray Dataset of the first ``rows`` validation rows of the Parquet ``files``, tokenized here, from the row
    groups that make them: no Ray task, so none to cancel. A limit on a tokenizing pipeline cancels the tasks still
    running once it has its rows, and a cancellation that races a task's reply can abort the process that made it
    (a Ray bug). The counts go to the ``tally`` actor as the validation's."""
    import ray
    import ray.data
    from ray.data.block import BlockAccessor

    schema = parquet_schema(files[0], storage)
    columns = read_columns(enc, schema.names)
    refs, made = [], 0
    for file in files:
        fs, path = storage.resolve(file)
        with fs.open_input_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=columns):
                part = encode_batch(pa.Table.from_batches([batch]), tokenizer, enc, tally=tally, dataset="validation")
                refs.append(ray.put(BlockAccessor.batch_to_block(part)))
                made += len(part["input_ids"])
                if made >= rows:
                    return ray.data.from_arrow_refs(refs).limit(rows)
    if not refs:  # no record: the rows' columns
        refs.append(
            ray.put(BlockAccessor.batch_to_block(encode_batch(schema.empty_table().select(columns), tokenizer, enc)))
        )
    return ray.data.from_arrow_refs(refs).limit(rows)


def parquet_schema(file: str, storage: Storage) -> pa.Schema:
    fs, path = storage.resolve(file)
    with fs.open_input_file(path) as f:
        return pq.read_schema(f)


def column_names(file: str, storage: Storage) -> list[str]:
    return parquet_schema(file, storage).names


def read_columns(enc: Encoding, names: list[str]) -> list[str]:
    """The columns ``enc`` reads from files with columns ``names`` (preference: ``messages`` or ``prompt``)."""
    if enc.format == "preference":
        return [next((c for c in PREFERENCE_PROMPTS if c in names), "prompt"), "chosen", "rejected"]
    return enc.source_columns


def renders_chat(enc: Encoding, file: str, storage: Storage) -> bool:
    """Whether ``enc`` renders the records of ``file`` with a chat template."""
    return enc.format == "chat" or (
        enc.format == "preference" and read_columns(enc, column_names(file, storage))[0] == "messages"
    )


def build_dataset(
    files: list[str],
    tokenizer,
    enc: Encoding,
    storage: Storage,
    batch_rows: int,
    order: RecordOrder | None = None,
    source: int = 0,
    tally=None,
    dataset: str = "train",
):
    """A Ray Dataset of training rows from the curated Parquet ``files`` (see :func:`parquet_files`), the records
    in ``order`` (:mod:`thresher.train.order`; default: as stored), the rows marked as dataset ``source`` of a
    mixture; the tokenize tasks count the records as ``dataset``'s in the ``tally`` actor
    (:mod:`thresher.train.accounting`)."""
    import ray.data

    order = order or RecordOrder()

    fs, _ = storage.resolve(files[0])
    ds = ray.data.read_parquet([storage.resolve(f)[1] for f in files], filesystem=fs).select_columns(
        read_columns(enc, column_names(files[0], storage)) + order.columns  # pushed down into the read
    )
    ds = order.apply(ds)
    ds.context.enable_progress_bars = False  # the workers stream it for the whole run: the loop logs progress
    return ds.map_batches(
        functools.partial(
            encode_batch, tokenizer=task_tokenizer(tokenizer, enc), enc=enc, source=source, tally=tally, dataset=dataset
        ),
        batch_format="pyarrow",
        batch_size=batch_rows,
    )


def mix(datasets: list, weights: list[float], seed: int):
    """One dataset of the tokenized ``datasets`` in the proportions ``weights`` (of their rows), shuffled (seeded):
    the first rows of each, as many as let the dataset that runs out first be used whole (Hugging Face's
    ``interleave_datasets`` with ``first_exhausted``). Returns it and the rows taken of each."""
    datasets = [ds.materialize() for ds in datasets]
    rows = [ds.count() for ds in datasets]
    shares = [w / sum(weights) for w in weights]
    total = min(n / share for n, share in zip(rows, shares))
    taken = [math.floor(share * total + 1e-9) for share in shares]
    parts = [ds.limit(n) for ds, n in zip(datasets, taken)]
    mixed = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return mixed.random_shuffle(seed=seed), taken
