"""Batch generation on Ray Data: an actor pool holding the model renders each record's prompt exactly as training
rendered it, generates a continuation, and scores the reference continuation's NLL.

Rendering (:func:`render_example`) composes training's own functions: alpaca is ``thresher.train.data.render_alpaca``
with the response cut off; chat is ``thresher.train.data.render_chat`` up to the last assistant turn (with the
generation prompt), that turn being the reference; text is the prompt column as it is, the reference another
column. The reference's NLL masks the prompt as training's loss does: the rendered prompt + reference go through
``thresher.train.data.tokenize`` (same special tokens, the EOS after alpaca/text responses), and only its trained
tokens count.

Generation itself is the batch generation layer augmentation uses too (``thresher.models.generation``): transformers
(greedy at temperature 0), or vLLM when ``generation.backend`` asks for it or is ``auto`` and vLLM is installed and
the actor has a GPU (full models only; adapters and GGUF files use transformers). The reference NLL is always
computed with transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from thresher.curate.fields import conversation
from thresher.curate.readers.common import field_text
from thresher.evaluate.eval_config import EvalData, GenerationOptions
from thresher.models.generation import BatchGenerator, Sampling, start_vllm, want_vllm
from thresher.train.config import ModelOptions
from thresher.train.data import Encoding, ensure_chat_template, render_alpaca, render_chat, tokenize

NO_TRUNCATION = 1 << 30
READ_REASON, READ_DETAIL = "_read_reason", "_read_detail"  # a JSON line that gave no record: why, and where
REASON, DETAIL = "reason", "detail"  # why a record was not evaluated (null when it was), and for an unread line where
# the columns of a record's evaluation, by type (the id, the reason and the carried columns besides)
TYPES = {
    "prompt": pa.string(),
    "reference": pa.string(),
    "prediction": pa.string(),
    "prediction_tokens": pa.int64(),
    "stopped_at_limit": pa.bool_(),
    "reference_nll": pa.float64(),
    "reference_tokens": pa.int64(),
    "prompt_tokens": pa.int64(),
    "confidence": pa.float64(),
    "margin": pa.float64(),
}


def source_columns(data: EvalData) -> list[str]:
    """The record columns an evaluation of ``data`` reads (besides the optional id column)."""
    if data.format == "text":
        return [data.text_field, data.reference_field]
    return Encoding(data.format, data.text_field, NO_TRUNCATION, False).source_columns


def unusable(record: dict, data: EvalData) -> str | None:
    """Why ``record`` cannot be evaluated, None when it can: its line gave no record (``READ_REASON``), its
    conversation is not a list of role and content strings or has no assistant turn, its prompt (format text) or
    its reference is blank."""
    if record.get(READ_REASON):
        return record[READ_REASON]
    if data.format == "chat":
        messages = conversation(record["messages"])
        if messages is None or not all(
            isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
        ):
            return "malformed_conversation"
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        if not replies:
            return "no_assistant_turn"
        reference = replies[-1]
    elif data.format == "alpaca":
        reference = record["output"]
    else:
        if not (field_text(record[data.text_field]) or "").strip():
            return "empty_prompt"
        reference = record[data.reference_field]
    return None if (field_text(reference) or "").strip() else "missing_response"


def render_example(record: dict, data: EvalData, tokenizer) -> tuple[str, str, str, list[tuple[int, int]]]:
    """(prompt, reference, rendered prompt + reference, the reference's character span) of one usable record
    (:func:`unusable`); a field that is not a string counts as its JSON text."""
    if data.format == "alpaca":
        prompt = render_alpaca(field_text(record["instruction"]) or "", field_text(record["input"]), "")[0]
        reference = field_text(record["output"]) or ""
    elif data.format == "chat":
        messages = conversation(record["messages"]) or []
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        text, spans = render_chat(tokenizer, messages[: last + 1])
        prompt, reference = text[: spans[-1][0]], messages[last]["content"]
        return prompt, reference, text, [spans[-1]]
    else:
        prompt = field_text(record[data.text_field]) or ""
        reference = field_text(record[data.reference_field]) or ""
    return prompt, reference, prompt + reference, [(len(prompt), len(prompt) + len(reference))]


def is_adapter(folder: str) -> bool:
    return Path(folder, "adapter_config.json").is_file()


def load_eval_model(options: ModelOptions, dtype):
    """The model at ``options``: a full model, or a PEFT adapter on the base its thresher.json (else its
    adapter_config.json) names."""
    from thresher.train.export import BASE_RECORD
    from thresher.train.models import load_base_model, model_dir

    folder = model_dir(options)
    if not is_adapter(folder):
        return load_base_model(options, dtype)
    import peft

    record = Path(folder, BASE_RECORD)
    base = (
        ModelOptions(**json.loads(record.read_text())["model"])
        if record.is_file()
        else ModelOptions(
            name_or_path=json.loads(Path(folder, "adapter_config.json").read_text())["base_model_name_or_path"]
        )
    )
    return peft.PeftModel.from_pretrained(load_base_model(base, dtype), folder)


class Generator:
    """The ``map_batches`` callable class: records in; id, prompt, reference, prediction, prediction_tokens,
    stopped_at_limit (the generation reached ``max_new_tokens`` without ending), reference_nll, reference_tokens
    and prompt_tokens out; with ``confidence``, the generation's ``confidence`` (the mean log-probability of its
    tokens, the end-of-sequence token included when it ended) and ``margin`` (the mean, over those tokens, of its
    log-probability less the best other token's); ``reason`` and ``detail`` (:func:`unusable`: a record that cannot be
    evaluated has these, and nulls in the columns above); then the record's columns named in ``carry``, as they
    are."""

    def __init__(
        self,
        model: ModelOptions,
        data: EvalData,
        generation: GenerationOptions,
        perplexity: bool,
        progress=None,
        confidence: bool = False,
        carry: tuple[str, ...] = (),
    ):
        import torch

        from thresher.train.models import DTYPES, load_tokenizer, model_dir

        self.data, self.generation, self.perplexity, self.progress = data, generation, perplexity, progress
        self.confidence, self.carry = confidence, carry
        if generation.use_gpu and not torch.cuda.is_available():
            raise RuntimeError("generation.use_gpu: this actor sees no CUDA GPU")
        self.device = torch.device("cuda" if generation.use_gpu else "cpu")
        self.tokenizer = load_tokenizer(model)
        if data.format == "chat":
            ensure_chat_template(self.tokenizer)
        dtype = DTYPES[model.dtype] if self.device.type == "cuda" else torch.float32
        folder = model_dir(model)
        vllm = None
        if want_vllm(generation.backend, not is_adapter(folder) and not model.gguf_file):
            vllm = start_vllm(folder, model.dtype, generation.seed)
        needs_model = perplexity or confidence or not vllm
        self.model = load_eval_model(model, dtype).to(self.device).eval() if needs_model else None
        self.engine = BatchGenerator(self.tokenizer, model=self.model, llm=vllm, device=self.device.type)
        self.sampling = Sampling(generation.max_new_tokens, generation.temperature, generation.top_p, generation.seed)
        self.encoding = Encoding(data.format, data.text_field, NO_TRUNCATION, False)

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = batch.to_pylist()
        reasons = [unusable(r, self.data) for r in records]
        kept = [i for i, why in enumerate(reasons) if why is None]
        evaluated = self._evaluate([records[i] for i in kept]) if kept else {}
        if self.progress is not None:
            self.progress.add.remote({"rows": len(records)})
        columns = {"id": [None if r.get(self.data.id_field) is None else str(r[self.data.id_field]) for r in records]}
        for name in (n for n in TYPES if self.confidence or n not in ("confidence", "margin")):  # not evaluated: null
            spread: list = [None] * len(records)
            for i, value in zip(kept, evaluated.get(name, [])):
                spread[i] = value
            columns[name] = pa.array(spread, TYPES[name])
        columns[REASON] = pa.array(reasons, pa.string())
        columns[DETAIL] = pa.array([r.get(READ_DETAIL) for r in records], pa.string())
        for name in self.carry:
            columns[name] = batch.column(name)
        return pa.table(columns)

    def _evaluate(self, records: list[dict]) -> dict[str, list]:
        """The columns of ``TYPES`` for usable ``records``."""
        rendered = [render_example(r, self.data, self.tokenizer) for r in records]
        prompts = [r[0] for r in rendered]
        prompt_ids = self._prompt_ids(prompts)
        predictions, cut = self.engine.continuations(prompt_ids, self.sampling)
        nll, tokens = self._reference_nll(rendered) if self.perplexity else ([None] * len(records),) * 2
        columns = {
            "prompt": prompts,
            "reference": [r[1] for r in rendered],
            "prediction": predictions,
            "prediction_tokens": [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in predictions],
            "stopped_at_limit": cut,
            "reference_nll": nll,
            "reference_tokens": tokens,
            "prompt_tokens": [len(ids) for ids in prompt_ids],
        }
        if self.confidence:
            columns["confidence"], columns["margin"] = self._confidence(prompt_ids, predictions, cut)
        return columns

    def _prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        return self.tokenizer(prompts, add_special_tokens=self.data.format != "chat")["input_ids"]

    def _confidence(
        self, prompt_ids: list[list[int]], predictions: list[str], cut: list[bool]
    ) -> tuple[list[float | None], list[float | None]]:
        """Per generation: the mean log-probability of its tokens given the prompt (the prediction tokenized again,
        with the end-of-sequence token when it ended), and the mean margin of each token over the best other."""
        import torch

        eos = self.tokenizer.eos_token_id
        continuations = [
            self.tokenizer(p, add_special_tokens=False)["input_ids"] + ([] if c or eos is None else [eos])
            for p, c in zip(predictions, cut)
        ]
        sequences = [p + c for p, c in zip(prompt_ids, continuations)]
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences], device=self.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], device=self.device)
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -width:].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        confidence: list[float | None] = []
        margin: list[float | None] = []
        for row, (p, c) in enumerate(zip(prompt_ids, continuations)):
            if not c or not p:
                confidence.append(None)
                margin.append(None)
                continue
            positions = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=self.device)
            targets = torch.tensor(c, device=self.device)
            scores = logprobs[row, positions]
            chosen = scores.gather(1, targets[:, None])[:, 0]
            others = scores.scatter(1, targets[:, None], float("-inf")).max(dim=1).values
            confidence.append(float(chosen.mean()))
            margin.append(float((chosen - others).mean()))
        return confidence, margin

    def _reference_nll(self, rendered) -> tuple[list[float], list[int]]:
        """Summed NLL and count of the reference's tokens, masked as training masks its loss."""
        import torch
        import torch.nn.functional as F

        from thresher.train.data import IGNORE

        examples = tokenize(
            self.tokenizer,
            [r[2] for r in rendered],
            [r[3] for r in rendered],
            self.encoding,
            append_eos=self.data.format != "chat",
        )
        width = max(len(ids) for ids, _ in examples)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in examples], device=self.device)
        labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in examples], device=self.device)
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in examples], device=self.device)
        labels[:, 0] = IGNORE  # as training: no token is trained to follow nothing
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -width:].float()
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE, reduction="none")
        return nll.sum(1).tolist(), (labels[:, 1:] != IGNORE).sum(1).tolist()
