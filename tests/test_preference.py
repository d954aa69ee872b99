"""Preference data and preference optimization: the format stage's ``preference`` template on LLaMA-Factory's
layout (a JSON array of ShareGPT conversations with ``chosen``/``rejected`` messages; GSM8K questions, the worked
answer chosen over a corrupted one), validation with reasons and prompt-grouped splits; tokenization with the
prompt masked; thresher's DPO (sigmoid, IPO, SFT term) and ORPO losses against TRL's on the same batch; the
references (frozen copy, disabled adapter); DPO with a LoRA adapter and ORPO trained on Ray from curated data, their
reward margin rising on held-out pairs.

The training data are arithmetic questions whose chosen answer states the sum and whose rejected one refuses: a
tiny random Llama learns that preference within a few steps, so the margin on held-out prompts must rise.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from testkit.tiny_llama import build_tiny_llama
from tests.samples import preference_pairs
from thresher import train
from thresher.curate.config import parse_config as parse_curation_config
from thresher.curate.runner import run as curate_run
from thresher.train.config import parse_config
from thresher.train.data import FALLBACK_CHAT_TEMPLATE, IGNORE, Encoding, encode_batch, encode_counted
from thresher.train.preference import DisabledAdapter, FrozenCopy, dpo_losses, orpo_losses, sequence_logps

SEQ = 96
REFUSALS = ["I do not know, sorry.", "I cannot help with that.", "Please ask someone else."]


def arithmetic_pairs(n: int, seed: int) -> list[dict]:
    """LLaMA-Factory preference records; every prompt has two pairs (the same chosen, two refusals)."""
    rng = random.Random(seed)
    records = []
    for _ in range(n // 2):
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        conversation = [{"from": "human", "value": f"What is {a} plus {b}?"}]
        if rng.random() < 0.3:
            conversation.insert(0, {"from": "system", "value": "You are good at sums."})
        for refusal in rng.sample(REFUSALS, 2):
            records.append(
                {
                    "conversations": conversation,
                    "chosen": {"from": "gpt", "value": f"{a} plus {b} is {a + b}."},
                    "rejected": {"from": "gpt", "value": refusal},
                }
            )
    return records


def curate(
    records: list[dict], out: Path, split: dict | None = None, normalize: bool = True, dedup: bool = False
) -> tuple[dict, Path]:
    """A curation run over ``records`` written as one JSON array: (normalize,) format preference(, dedup of
    repeated pairs)(, split)."""
    src = out.with_suffix(".json")
    src.write_text(json.dumps(records, indent=2))
    stages = [{"normalize": {}}] if normalize else []
    stages += [{"format": {"template": "preference", "mapping": {"messages": "conversations"}}}]
    stages += [{"dedup_exact": {"fields": ["messages", "chosen", "rejected"]}}] if dedup else []
    manifest = curate_run(
        parse_curation_config(
            {
                "input": {"paths": [str(src)], "text_field": "conversations", "id_field": None},
                "output": {"path": str(out)},
                "stages": stages + ([{"split": split}] if split else []),
            }
        )
    )
    return manifest, out / "data"


@pytest.fixture(scope="module")
def pairs(ray_local, tmp_path_factory):
    """96 arithmetic pairs curated and split 3:1 by prompt; 32 other ones as a second validation set."""
    tmp = tmp_path_factory.mktemp("pref-data")
    manifest, data = curate(
        arithmetic_pairs(96, 0),
        tmp / "train",
        {"ratios": {"train": 0.75, "validation": 0.25}, "group_by": "prompt_id", "seed": 0},
    )
    assert manifest["counts"]["output"] == 96
    return SimpleNamespace(train=data / "train", validation=data / "validation", manifest=manifest)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    texts = [
        f"{m['value']}" for r in arithmetic_pairs(200, 1) for m in [*r["conversations"], r["chosen"], r["rejected"]]
    ]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-pref"), texts * 3)


def tokenizer_of(path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.clean_up_tokenization_spaces = False
    return tok


# -- curation ------------------------------------------------------------------------------------------------------


def test_llama_factory_preference_data_is_formatted_validated_and_split_by_prompt(ray_local, pairs, tmp_path):
    """Preference pairs in LLaMA-Factory's layout (GSM8K questions, some after a system turn or an earlier
    exchange; the worked answer chosen over one with a wrong final number or cut-short reasoning, most prompts with
    both pairs) plus invalid pairs and a repeated pair: the valid ones keep their prompt turns and responses, the
    invalid ones are rejected with the reason, the repeat as a duplicate while the prompt's other pairs stay; a
    prompt's pairs share one split."""
    demo = preference_pairs()
    human = {"from": "human", "value": "Name a colour."}

    def reply(text: str) -> dict:
        return {"from": "gpt", "value": text}

    bad = [
        {"conversations": [human], "chosen": reply("Blue."), "rejected": reply("Blue.")},
        {"conversations": [human], "chosen": reply("Red."), "rejected": reply(" ")},
        {"conversations": [human, reply("Red.")], "chosen": "Blue.", "rejected": "Green."},
    ]
    repeated = next(r for r in demo if sum(d["conversations"] == r["conversations"] for d in demo) > 1)
    manifest, data = curate(demo + bad + [repeated], tmp_path / "demo", normalize=False, dedup=True)
    rejects = pq.read_table(tmp_path / "demo/rejects").to_pylist()
    distinct = len({json.dumps([r["conversations"], r["chosen"], r["rejected"]]) for r in demo})  # it repeats some
    assert manifest["counts"]["output"] == distinct and len(rejects) == 3 + len(demo) + 1 - distinct
    invalid = [r for r in rejects if r["reason"] == "invalid_preference"]
    assert sorted(r["detail"] for r in invalid) == [
        "chosen and rejected are the same",
        "empty rejected response",
        "the prompt must end with a user turn",
    ]
    assert {r["reason"] for r in rejects if r not in invalid} == {"exact_duplicate"}
    kept = pq.read_table(data).to_pylist()
    by_pair = {(r["chosen"], r["rejected"]): r for r in kept}
    for record in demo:
        row = by_pair[record["chosen"]["value"], record["rejected"]["value"]]
        roles = {"human": "user", "gpt": "assistant", "system": "system"}
        assert [(m["role"], m["content"]) for m in row["messages"]] == [
            (roles[m["from"]], m["value"]) for m in record["conversations"]
        ]
    assert len({r["prompt_id"] for r in kept}) == len({json.dumps(r["conversations"]) for r in demo}) < len(demo)

    splits = {s: set(pq.read_table(getattr(pairs, s)).column("prompt_id").to_pylist()) for s in ("train", "validation")}
    assert splits["train"] and splits["validation"] and not splits["train"] & splits["validation"]


def test_preference_rows_train_only_the_responses(tiny):
    """A row holds (chosen, rejected); the trained tokens are exactly the response (+ EOS after a string prompt,
    + the template's end of turn after chat turns), everything else is -100."""
    tok = tokenizer_of(tiny)
    tok.chat_template = FALLBACK_CHAT_TEMPLATE
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 plus 3?"}]
    for prompt_column, prompt in (("prompt", "What is 2 plus 3? "), ("messages", messages)):
        table = pa.table({prompt_column: [prompt], "chosen": ["2 plus 3 is 5."], "rejected": ["I cannot help."]})
        rows = encode_batch(table, tok, Encoding("preference", "text", SEQ, packing=False))
        assert rows["input_ids"].shape == (1, 2, SEQ) and rows["source"].tolist() == [0]
        for side, response in enumerate(("2 plus 3 is 5.", "I cannot help.")):
            ids, labels, mask = (rows[c][0, side] for c in ("input_ids", "labels", "attention_mask"))
            n = int(mask.sum())
            trained = labels[:n] != IGNORE
            first = int(np.argmax(trained))
            assert trained[first:].all() and (labels[:n][trained] == ids[:n][trained]).all()
            assert (labels[n:] == IGNORE).all()
            end = tok.eos_token if prompt_column == "prompt" else tok.eos_token + "\n"
            assert tok.decode(ids[first:n]) == response + end
            full = (
                prompt + response
                if prompt_column == "prompt"
                else tok.apply_chat_template([*messages, {"role": "assistant", "content": response}], tokenize=False)
            )
            assert tok.decode(ids[:n]) == full + (tok.eos_token if prompt_column == "prompt" else "")


# -- losses against TRL --------------------------------------------------------------------------------------------


def perturbed(tiny: Path, seed: int = 1):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def trl_batch(trainer, n: int) -> dict:
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def thresher_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """thresher's per-sequence log-probabilities of TRL's batch (chosen rows first, then rejected): the completion
    tokens are the trained labels."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps(logits, labels)


@pytest.mark.parametrize("loss, sft_weight", [("sigmoid", 0.0), ("ipo", 0.0), ("sigmoid", 0.5)])
def test_dpo_loss_and_rewards_equal_trl(tiny, tmp_path, loss, sft_weight):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    tok = tokenizer_of(tiny)
    records = [
        {"prompt": f"What is {a} plus {b}?", "chosen": f" {a} plus {b} is {a + b}.", "rejected": " " + r}
        for (a, b), r in zip([(3, 4), (10, 20), (7, 7), (41, 1)], REFUSALS + REFUSALS[:1])
    ]
    policy, reference = perturbed(tiny), AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    loss_types, weights = ([loss, "sft"], [1.0, sft_weight]) if sft_weight else ([loss], None)
    args = DPOConfig(
        output_dir=str(tmp_path),
        beta=0.1,
        loss_type=loss_types,
        loss_weights=weights,
        report_to=[],
        use_cpu=True,
        per_device_train_batch_size=4,
    )
    trainer = DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(records), processing_class=tok
    )
    batch = trl_batch(trainer, 4)
    with torch.no_grad():
        expected = trainer.compute_loss(policy, batch).item()
    logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}  # the model is in eval mode

    (chosen, rejected), (n_chosen, n_rejected) = (x.chunk(2) for x in thresher_logps(policy, batch))
    ref_chosen, ref_rejected = thresher_logps(reference, batch)[0].chunk(2)
    losses, reward_c, reward_r = dpo_losses(
        chosen, rejected, ref_chosen, ref_rejected, n_chosen, n_rejected, beta=0.1, loss=loss, sft_weight=0.0
    )
    if sft_weight:  # TRL's sft term is the token mean over the batch; thresher's the mean of per-pair token means
        losses = losses - sft_weight * chosen.sum() / n_chosen.sum()
    assert losses.mean().item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert reward_c.mean().item() == pytest.approx(logged["rewards/chosen"], rel=1e-4, abs=1e-6)
    assert reward_r.mean().item() == pytest.approx(logged["rewards/rejected"], rel=1e-4, abs=1e-6)
    assert (reward_c - reward_r).mean().item() == pytest.approx(logged["rewards/margins"], rel=1e-4, abs=1e-6)
    assert (reward_c > reward_r).float().mean().item() == pytest.approx(logged["rewards/accuracies"])
    if sft_weight:  # per pair, thresher's SFT term: the chosen response's token-mean NLL
        with_sft = dpo_losses(chosen, rejected, ref_chosen, ref_rejected, n_chosen, n_rejected, 0.1, loss, sft_weight)[
            0
        ]
        torch.testing.assert_close(
            with_sft - losses.detach() - sft_weight * chosen.sum() / n_chosen.sum(), -sft_weight * chosen / n_chosen
        )


def test_pairs_with_a_blank_response_or_no_room_for_one_are_dropped_and_counted(tiny):
    """A blank chosen or rejected response would train DPO/ORPO to prefer (or avoid) stopping at once: the pair is
    dropped as empty_preference; a prompt that leaves no room for a response as prompt_too_long; a cut response is
    counted as truncated."""
    tok = tokenizer_of(tiny)
    prompt = "What is 2 plus 3? "
    table = pa.table(
        {
            "prompt": [prompt, prompt, prompt, prompt, prompt * 20, prompt],
            "chosen": ["2 plus 3 is 5.", "", None, "2 plus 3 is 5.", "2 plus 3 is 5.", "2 plus 3 is 5. " * 20],
            "rejected": ["I cannot help.", "I cannot help.", "I cannot help.", " ", "I cannot help.", "No."],
        }
    )
    rows, counts = encode_counted(table, tok, Encoding("preference", "text", 48, packing=False))
    assert rows["input_ids"].shape == (2, 2, 48)
    assert counts == {"read": 6, "used": 2, "empty_preference": 3, "prompt_too_long": 1, "truncated": 1, "rows": 2}
    chosen = [
        tok.decode([int(i) for i, x in zip(rows["input_ids"][r, 0], rows["labels"][r, 0]) if x != IGNORE])
        for r in (0, 1)
    ]
    assert chosen[0] == "2 plus 3 is 5." + tok.eos_token and tok.eos_token not in chosen[1]


def test_orpo_loss_equals_trl(tiny):
    """TRL's ORPO: the chosen NLL (token mean over the batch) minus the mean of beta log sigmoid(log odds ratio);
    for one pair that is thresher's per-pair loss, and for a batch the odds-ratio terms agree pair by pair."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOTrainer

    tok = tokenizer_of(tiny)
    model = perturbed(tiny, seed=2)
    prompts = ["What is 3 plus 4? ", "What is 10 plus 20? ", "What is 7 plus 7? "]
    chosen_texts = ["3 plus 4 is 7.", "10 plus 20 is 30.", "7 plus 7 is 14."]
    table = pa.table({"prompt": prompts, "chosen": chosen_texts, "rejected": REFUSALS})
    rows = encode_batch(table, tok, Encoding("preference", "text", 48, packing=False))
    ids = torch.tensor(rows["input_ids"], dtype=torch.long).transpose(0, 1).reshape(6, -1)
    labels = torch.tensor(rows["labels"], dtype=torch.long).transpose(0, 1).reshape(6, -1)
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            position_ids=torch.tensor(rows["position_ids"], dtype=torch.long).transpose(0, 1).reshape(6, -1),
        ).logits
    logps, n = sequence_logps(logits, labels)
    losses, reward_c, reward_r = orpo_losses(*logps.chunk(2), *n.chunk(2), beta=0.1)

    means = ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
    trl = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device="cpu"))
    or_terms, trl_chosen, trl_rejected, _, _ = ORPOTrainer.odds_ratio_loss(trl, *means.chunk(2))
    torch.testing.assert_close(losses, -means.chunk(2)[0] - or_terms)
    torch.testing.assert_close((reward_c, reward_r), (trl_chosen, trl_rejected))
    nll = torch.nn.functional.cross_entropy(
        logits[:1, :-1].reshape(-1, logits.shape[-1]), labels[:1, 1:].reshape(-1), ignore_index=IGNORE
    )
    single = orpo_losses(logps[:1], logps[3:4], n[:1], n[3:4], beta=0.1)[0]
    assert single.item() == pytest.approx((nll - or_terms[:1].mean()).item(), rel=1e-5)


def test_references_frozen_copy_and_disabled_adapter(tiny):
    """Full fine-tuning's reference is a frozen copy that later updates of the model leave alone; LoRA's is the
    base model: the adapter switched off (no copy), and back on afterwards."""
    import peft

    ids = torch.tensor([tokenizer_of(tiny)("What is 2 plus 3?")["input_ids"]])
    model = perturbed(tiny)
    before = model(input_ids=ids).logits.detach()
    frozen = FrozenCopy(model, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    engine = SimpleNamespace(module=model, forward=lambda sync=True, **inputs: model(**inputs).logits)
    torch.testing.assert_close(frozen.logits(engine, {"input_ids": ids}), before)
    assert not any(p.requires_grad for p in frozen.model.parameters())

    base = perturbed(tiny)
    base_logits = base(input_ids=ids).logits.detach()
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    engine = SimpleNamespace(module=lora, forward=lambda sync=True, **inputs: lora(**inputs).logits)
    adapted = lora(input_ids=ids).logits.detach()
    assert not torch.allclose(adapted, base_logits, atol=1e-4)
    torch.testing.assert_close(DisabledAdapter().logits(engine, {"input_ids": ids}), base_logits)
    torch.testing.assert_close(lora(input_ids=ids).logits.detach(), adapted)


# -- training on Ray -----------------------------------------------------------------------------------------------


def preference_config(tiny: Path, pairs, out: Path, method: str, **sections) -> dict:
    cfg = {
        "model": {"name_or_path": str(tiny)},
        "data": {
            "train": str(pairs.train),
            "validation": str(pairs.validation),
            "format": "preference",
            "max_seq_len": SEQ,
        },
        "method": method,
        "scaling": {"num_workers": 2},
        "optim": {"lr": 1e-2, "max_steps": 6, "batch_size": 4, "log_every_steps": 1},
        "eval": {"every_steps": 3},
        "checkpoint": {"every_steps": 6},
        "output": {"path": str(out)},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def test_dpo_lora_raises_the_margin_on_held_out_pairs(pairs, tiny, tmp_path):
    """DPO with a LoRA adapter (reference: the adapter disabled): at the first evaluation policy and reference
    differ only by the steps taken; the margin on the held-out prompts rises to clearly positive, with most pairs
    ranked right; metrics.json reports the last evaluation's reward accuracy and margin; the adapter exports."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = preference_config(
        tiny, pairs, tmp_path, "dpo", dpo={"beta": 0.1, "adapter": "lora"}, lora={"r": 8, "alpha": 16, "dropout": 0.0}
    )
    m = train.main(copy.deepcopy(cfg))
    evals = m["evals"]
    assert [e["step"] for e in evals] == [3, 6]
    assert evals[-1]["reward_margin"] > max(evals[0]["reward_margin"], 0.0) + 0.05, evals
    assert m["eval_reward_margin"] == evals[-1]["reward_margin"] and m["eval_reward_accuracy"] >= 0.9
    assert m["eval_loss"] < np.log(2)  # DPO's loss starts at log 2 (policy = reference)
    first = m["train_loss"][0]
    assert first["loss"] == pytest.approx(np.log(2), abs=1e-4) and first["reward_margin"] == pytest.approx(0, abs=1e-5)
    assert set(first) == {"step", "loss", "rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["eval_reward_accuracy"] == m["eval_reward_accuracy"] and saved["evals"] == evals
    assert json.loads((tmp_path / "model/thresher.json").read_text())["tuning"] == "lora"
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), tmp_path / "model")


def test_orpo_full_fine_tuning_without_a_reference(pairs, tiny, tmp_path):
    """ORPO (full fine-tuning, reference-free): the held-out margin of mean log-probabilities rises and the loss
    falls."""
    cfg = preference_config(tiny, pairs, tmp_path, "orpo", orpo={"beta": 0.5}, optim={"lr": 3e-3})
    m = train.main(copy.deepcopy(cfg))
    evals = m["evals"]
    assert evals[-1]["reward_margin"] > evals[0]["reward_margin"] and m["eval_reward_accuracy"] >= 0.9, evals
    assert m["train_loss"][-1]["loss"] < m["train_loss"][0]["loss"]
    assert json.loads((tmp_path / "model/thresher.json").read_text())["tuning"] == "full"


@pytest.mark.parametrize(
    "change, key",
    [
        ({"method": "dpo", "data": {"format": "alpaca"}}, "data.format"),
        ({"method": "lora", "data": {"format": "preference"}}, "data.format"),
        ({"method": "dpo", "dpo": {"loss": "hinge"}}, "dpo.loss"),
        ({"method": "orpo", "fsdp": {}, "orpo": {"adapter": "lora"}}, "fsdp"),
    ],
)
def test_preference_config_errors_name_the_key(tiny, tmp_path, change, key):
    from thresher.core.config import ConfigError

    cfg = preference_config(tiny, SimpleNamespace(train="out/pairs/train", validation=None), tmp_path, "dpo")
    for section, value in change.items():
        cfg[section] = {**cfg[section], **value} if isinstance(value, dict) and cfg.get(section) else value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(cfg)
