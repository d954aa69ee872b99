"""thresher on one CUDA GPU, as users run it: each training method a few optimizer steps through ``thresher
train``'s Ray Train path (finite losses that fall), one checkpoint and resume, ``thresher eval`` generating on the
GPU, and the model-backed curation stages (``embed``, ``augment``'s paraphrase) on an actor that holds the GPU --
and each stage built from its config and run in the test process, which needs no numba (``thresher curate``'s
writer does: where numba is absent, the curation runs are skipped and these still run).

Models: SmolLM2-135M's architecture and tokenizer with random weights (``testkit.gpu_models``); data: generated
arithmetic questions, written as Parquet (training, eval) or JSON Lines (curation). Losses of random-weight models
fall fast, so a few steps on a small, repeated set show that the updates land.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit.gpu_models import random_model
from thresher.train import main as train_main

SEQ = 256
STEPS = 6
REFUSAL = "I cannot help with that."
RECORDED = (
    "method",
    "steps",
    "train_loss",
    "tokens_per_s",
    "tokens_per_s_after_first_step",
    "startup_seconds",
    "peak_memory_bytes",
    "quantized_layers",
    "resumed_from_step",
    "device",
    "dtype",
)


def questions(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        out.append((f"What is {a} plus {b}?", f"{a} plus {b} makes {a + b}, so the answer is {a + b}."))
    return out


def write_parquet(records: list[dict], path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path / "part-0.parquet")
    return path


@pytest.fixture(scope="session")
def smollm2(gpu_models) -> Path:
    return random_model("smollm2-135m", gpu_models)


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """SFT rows (alpaca) and preference pairs: 64 each, a few packed batches per epoch, so steps repeat data."""
    root = tmp_path_factory.mktemp("gpu-data")
    qa = questions(64)
    sft = write_parquet([{"instruction": q, "input": "", "output": a} for q, a in qa], root / "sft")
    pairs = write_parquet([{"prompt": q, "chosen": a, "rejected": REFUSAL} for q, a in qa], root / "pairs")
    return {"sft": sft, "pairs": pairs}


def train(
    smollm2: Path, data: Path, out: Path, method: str, lr: float, fmt: str = "alpaca", steps: int = STEPS, **sections
) -> dict:
    cfg = {
        "model": {"name_or_path": str(smollm2), "dtype": "bfloat16"},
        "data": {"train": str(data), "format": fmt, "max_seq_len": SEQ},
        "method": method,
        "scaling": {"num_workers": 1, "use_gpu": True},
        "optim": {"lr": lr, "max_steps": steps, "batch_size": 8, "log_every_steps": 1},
        "checkpoint": {"every_steps": steps, "keep": 1, "max_failures": 0},
        "output": {"path": str(out)},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    metrics = train_main(cfg)
    record = os.environ.get("THRESHER_GPU_RECORD")
    if record:  # kept even when a time limit stops the suite before its summary
        with open(record, "a") as f:
            f.write(json.dumps({k: metrics.get(k) for k in RECORDED} | {"config": cfg}) + "\n")
    return metrics


def assert_trained(metrics: dict, steps: int = STEPS) -> list[float]:
    losses = [x["loss"] for x in metrics["train_loss"]]
    assert metrics["device"] == "cuda" and metrics["dtype"] == "bfloat16"
    assert metrics["steps"] == steps and len(losses) == steps and all(math.isfinite(x) for x in losses), losses
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    assert metrics["tokens"] > 0 and metrics["peak_memory_bytes"] > 0
    return losses


def test_eval_generates_on_the_gpu(ray_gpu, smollm2, tmp_path):
    from thresher.evaluate.evaluation import main as evaluate

    qa = questions(64, seed=1)
    path = write_parquet(
        [{"id": str(i), "instruction": q, "input": "", "output": a} for i, (q, a) in enumerate(qa)],
        tmp_path / "eval-data",
    )
    result = evaluate(
        {
            "model": {"name_or_path": str(smollm2), "dtype": "bfloat16"},
            "data": {"path": str(path), "format": "alpaca"},
            "generation": {"use_gpu": True, "batch_size": 32, "max_new_tokens": 32, "backend": "transformers"},
            "metrics": ["exact_match", "perplexity"],
            "output": {"path": str(tmp_path / "eval")},
        }
    )
    assert result["rows"] == 64 and result["device"] == "cuda"
    assert result["new_tokens"] > 0 and result["new_tokens_per_s"] > 0
    assert math.isfinite(result["metrics"]["perplexity"]["value"])


NO_NUMBA = (
    "thresher curate's writer computes the report's statistics with numba, absent here; "
    "the stage's own test runs it on the GPU"
)


def curate(tmp_path: Path, records: list[dict], stages: list[dict], text_field: str) -> tuple[dict, Path]:
    pytest.importorskip("numba", reason=NO_NUMBA)
    from thresher.curate.config import parse_config
    from thresher.curate.runner import run

    source = tmp_path / "input.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "run"
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(source)], "text_field": text_field},
                "output": {"path": str(out)},
                "stages": stages,
            }
        )
    )
    counts = manifest["counts"]
    assert counts["input"] + counts.get("generated", 0) == counts["output"] + counts["rejected"]
    return manifest, out


def set_up_stage(stage: dict, text_field: str):
    """``stage`` built from its config as ``thresher curate`` builds it, its models loaded in this process (no Ray,
    no writer: no numba)."""
    from thresher.core.storage import Storage
    from thresher.curate.config import parse_config
    from thresher.curate.plan import build_stages, segments

    cfg = parse_config(
        {"input": {"paths": ["unused"], "text_field": text_field}, "output": {"path": "unused"}, "stages": [stage]}
    )
    (built,) = build_stages(cfg, Storage())
    segments(cfg, [built], Storage())  # binds a generator's key space
    built.setup()
    return built


def batch_of(records: list[dict]):
    """``records`` as a batch of live read rows, as the execution layer hands them to a map stage."""
    import pandas as pd

    from thresher.curate.stage import KEY, REJECT_DETAIL, REJECT_REASON, REJECT_STAGE

    batch = pd.DataFrame(records)
    batch[KEY] = np.arange(len(batch), dtype=np.int64)
    return batch.assign(**{c: None for c in (REJECT_STAGE, REJECT_REASON, REJECT_DETAIL)})


def embed(minilm: Path) -> dict:
    return {"embed": {"model": str(minilm), "device": "cuda", "num_gpus": 1, "dtype": "bfloat16"}}


def embed_records() -> list[dict]:
    return [{"id": str(i), "text": f"{q} {a}"} for i, (q, a) in enumerate(questions(200, seed=2))]


def assert_unit_vectors(vectors: np.ndarray) -> None:
    assert vectors.shape == (200, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)


def test_embed_runs_on_the_gpu(ray_gpu, gpu_models, tmp_path):
    minilm = random_model("minilm", gpu_models)
    manifest, out = curate(tmp_path, embed_records(), [embed(minilm)], "text")
    assert manifest["counts"]["output"] == 200
    table = pa.concat_tables(pq.read_table(f) for f in sorted((out / "data").rglob("*.parquet")))
    assert_unit_vectors(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)))


def test_embed_stage_encodes_on_the_gpu(gpu_models):
    from thresher.curate.stage import run_map_stage

    stage = set_up_stage(embed(random_model("minilm", gpu_models)), "text")
    assert next(stage.encoder.model.parameters()).device.type == "cuda"
    out = run_map_stage(stage, batch_of(embed_records()))
    assert out["_reject_reason"].isna().all()
    assert_unit_vectors(np.stack([np.asarray(v, np.float32) for v in out["embedding"]]))


def paraphrase(smollm2: Path) -> dict:
    method = {
        "paraphrase": {
            "model": {"name_or_path": str(smollm2), "dtype": "bfloat16"},
            "generation": {"max_new_tokens": 16, "backend": "transformers"},
            "similarity": {"min": 0},
        }
    }
    return {
        "augment": {
            "fields": ["question"],
            "methods": [method],
            "splits": [],
            "num_gpus": 1,
            "validation": {"language": False},
        }
    }


def paraphrase_records() -> list[dict]:
    return [{"id": str(i), "question": q} for i, (q, _) in enumerate(questions(8, seed=3))]


def test_paraphrase_generates_on_the_gpu(ray_gpu, smollm2, tmp_path):
    manifest, _ = curate(tmp_path, paraphrase_records(), [paraphrase(smollm2)], "question")
    assert manifest["metrics"]["augment"]["paraphrase.generated"] == 8


def test_paraphrase_stage_generates_on_the_gpu(smollm2):
    from thresher.curate.stage import run_map_stage

    stage = set_up_stage(paraphrase(smollm2), "question")
    (generator,) = stage.generators.values()
    assert generator.device == "cuda" and next(generator.model.parameters()).device.type == "cuda"
    out = run_map_stage(stage, batch_of(paraphrase_records()))
    copies = out[out["_generated.augment"] == 1]
    assert len(out) == 16 and len(copies) == 8 and int(out["_metric.augment.paraphrase.generated"].sum()) == 8
    assert sorted(copies["augmented_from"]) == [str(i) for i in range(8)]


SFT = {
    "lora": ("lora", 1e-3, {}),
    "qlora": ("qlora", 1e-3, {}),
    "full-ddp": ("full", 1e-4, {}),
    "full-fsdp2": ("full", 1e-4, {"fsdp": {}}),
    "full-zero2": ("full", 1e-4, {"deepspeed": {"stage": 2}}),
    "full-zero3": ("full", 1e-4, {"deepspeed": {"stage": 3}}),
    "prompt": ("prompt", 0.3, {"prompt_tuning": {"num_virtual_tokens": 8}}),
}


@pytest.mark.parametrize("variant", list(SFT))
def test_sft_method_trains_on_the_gpu(ray_gpu, smollm2, data, tmp_path, variant):
    method, lr, sections = SFT[variant]
    metrics = train(smollm2, data["sft"], tmp_path, method, lr, **sections)
    assert_trained(metrics)
    if method == "qlora":  # the frozen base really is 4-bit: bitsandbytes' layers ran the steps
        assert metrics["quantized_layers"] > 0
    assert (tmp_path / "model").is_dir() and (tmp_path / "metrics.json").is_file()


def test_liger_fused_loss_and_gradients_equal_the_logits_objectives(smollm2, data, monkeypatch):
    """Liger's kernels in this process, float32, on one batch: thresher's fused objective (Liger's fused linear
    cross-entropy, from the last hidden states and the head's weight: no logits) gives the summed loss and the
    gradients of the plain model's logits objective."""
    import torch
    import transformers.models.llama.modeling_llama as modeling_llama

    from thresher.train.config import parse_config
    from thresher.train.data import Encoding, encode_batch
    from thresher.train.engines import DDPEngine
    from thresher.train.loop import LanguageModeling
    from thresher.train.models import load_model, load_tokenizer

    pytest.importorskip("liger_kernel", reason="model.kernels: liger needs pip install liger-kernel")
    for name in ("apply_rotary_pos_emb", "LlamaRMSNorm", "LlamaMLP"):  # Liger patches the module: restored after
        monkeypatch.setattr(modeling_llama, name, getattr(modeling_llama, name))
    cfg = parse_config(
        {
            "model": {"name_or_path": str(smollm2), "dtype": "float32"},
            "data": {"train": str(data["sft"]), "format": "alpaca", "max_seq_len": SEQ},
            "method": "full",
            "scaling": {"num_workers": 1, "use_gpu": True},
            "optim": {"max_steps": 1},
            "output": {"path": "unused"},
        }
    )
    rows = encode_batch(pq.read_table(data["sft"]), load_tokenizer(cfg.model), Encoding("alpaca", "text", SEQ, True))
    batch = {
        k: torch.as_tensor(rows[k][:4], dtype=torch.long, device="cuda")
        for k in ("input_ids", "labels", "position_ids")
    }
    results = []
    for kernels in (None, "liger"):  # the plain model first: Liger's patches of the module apply to later models
        run_cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"kernels": kernels})})
        engine = DDPEngine(load_model(run_cfg, torch.device("cuda")), run_cfg, 1, torch.float32, torch.device("cuda"))
        engine.train(True)
        loss, _ = LanguageModeling("full", fused=kernels == "liger").loss(engine, batch)
        loss.backward()
        results.append((loss.item(), engine.module.get_input_embeddings().weight.grad.cpu()))
    (plain, plain_grad), (fused, fused_grad) = results
    # the last model is Liger's: its forward computes the loss without logits (else both would be transformers')
    assert engine.module.forward.__func__.__module__ == "liger_kernel.transformers.model.llama"
    assert engine.module.model.norm._get_name() == "LigerRMSNorm"
    assert fused == pytest.approx(plain, rel=1e-4)
    torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-3, atol=1e-3 * plain_grad.abs().max().item())


def test_liger_and_compile_train_on_the_gpu(ray_gpu, smollm2, data, tmp_path):
    """Full fine-tuning with ``model.kernels: liger`` and ``optim.compile``: the first step's loss is the plain run's
    (bfloat16: within 1 %), the loss falls, and without the logits the peak memory is lower (the plain run's second
    step is its peak: the first one's forward and backward run before AdamW's state exists)."""
    from thresher.train.config import ModelOptions

    pytest.importorskip("liger_kernel", reason="model.kernels: liger needs pip install liger-kernel")
    fast = train(
        smollm2, data["sft"], tmp_path / "fast", "full", 1e-4, model={"kernels": "liger"}, optim={"compile": True}
    )
    plain = train(smollm2, data["sft"], tmp_path / "plain", "full", 1e-4, steps=2)
    assert_trained(fast)
    assert fast["train_loss"][0]["loss"] == pytest.approx(plain["train_loss"][0]["loss"], rel=1e-2)
    assert fast["peak_memory_bytes"] < plain["peak_memory_bytes"]
    record = json.loads((tmp_path / "fast/model/thresher.json").read_text())
    assert ModelOptions(**record["model"]).name_or_path == str(smollm2)  # thresher eval's base: no kernels key


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_preference_method_with_lora_trains_on_the_gpu(ray_gpu, smollm2, data, tmp_path, method):
    metrics = train(smollm2, data["pairs"], tmp_path, method, 1e-3, fmt="preference", **{method: {"adapter": "lora"}})
    assert_trained(metrics)
    if method == "dpo":  # the policy starts as its reference (the disabled adapter): log 2 exactly
        assert metrics["train_loss"][0]["loss"] == pytest.approx(math.log(2), abs=1e-3)


def test_checkpoint_and_resume_on_the_gpu(ray_gpu, smollm2, data, tmp_path):
    first = train(smollm2, data["sft"], tmp_path, "lora", 1e-3, steps=3)
    assert first["steps"] == 3 and first["resumed_from_step"] is None
    resumed = train(smollm2, data["sft"], tmp_path, "lora", 1e-3, steps=6)
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 6 and resumed["steps_this_run"] == 3
    assert resumed["device"] == "cuda" and all(math.isfinite(x["loss"]) for x in resumed["train_loss"])
    assert [x["step"] for x in resumed["train_loss"]] == list(range(1, 7))
