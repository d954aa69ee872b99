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

from thresher.evaluate.eval_config import EvalData, GenerationOptions
from thresher.models.generation import BatchGenerator, Sampling, start_vllm, want_vllm
from thresher.train.config import ModelOptions
from thresher.train.data import Encoding, ensure_chat_template, render_alpaca, render_chat, tokenize

NO_TRUNCATION = 1 << 30


def source_columns(data: EvalData) -> list[str]:
    """The record columns an evaluation of ``data`` reads (besides the optional id column)."""
    if data.format == "text":
        return [data.text_field, data.reference_field]
    return Encoding(data.format, data.text_field, NO_TRUNCATION, False).source_columns


def render_example(record: dict, data: EvalData, tokenizer) -> tuple[str, str, str, list[tuple[int, int]]]:
    """(prompt, reference, rendered prompt + reference, the reference's character span) of one record."""
    if data.format == "alpaca":
        prompt = render_alpaca(record["instruction"] or "", record["input"], "")[0]
        reference = record["output"] or ""
    elif data.format == "chat":
        messages = record["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        text, spans = render_chat(tokenizer, messages[: last + 1])
        prompt, reference = text[: spans[-1][0]], messages[last]["content"]
        return prompt, reference, text, [spans[-1]]
    else:
        prompt, reference = record[data.text_field] or "", record[data.reference_field] or ""
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
    log-probability less the best other token's); then the record's columns named in ``carry``, as they are."""

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
        rendered = [render_example(r, self.data, self.tokenizer) for r in records]
        prompts = [r[0] for r in rendered]
        prompt_ids = self._prompt_ids(prompts)
        predictions, cut = self.engine.continuations(prompt_ids, self.sampling)
        nll, tokens = self._reference_nll(rendered) if self.perplexity else ([None] * len(records),) * 2
        if self.confidence:
            confidence, margin = self._confidence(prompt_ids, predictions, cut)
        if self.progress is not None:
            self.progress.add.remote({"rows": len(records)})
        columns = {
            "id": [None if r.get(self.data.id_field) is None else str(r[self.data.id_field]) for r in records],
            "prompt": prompts,
            "reference": [r[1] for r in rendered],
            "prediction": predictions,
            "prediction_tokens": [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in predictions],
            "stopped_at_limit": pa.array(cut, pa.bool_()),
            "reference_nll": pa.array(nll, pa.float64()),
            "reference_tokens": pa.array(tokens, pa.int64()),
            "prompt_tokens": pa.array([len(ids) for ids in prompt_ids], pa.int64()),
        }
        if self.confidence:
            columns.update(confidence=pa.array(confidence, pa.float64()), margin=pa.array(margin, pa.float64()))
        for name in self.carry:
            columns[name] = batch.column(name)
        return pa.table(columns)

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
