"""thresher on a GPU: training throughput and MFU per method beside a plain PyTorch loop, time to first step,
``thresher eval`` generation and ``embed`` encoding rates. Writes ``bench/results/train_gpu.md`` and ``train_gpu.json``.

Training runs ``thresher train``'s own path (``train.main``: Ray Train, one worker per GPU) on curated GSM8K
(``--data``: the ``data`` folder of ``thresher curate examples/gsm8k_instruct.yaml``, alpaca format), packed to
``--seq`` tokens, for each (model, method, sequence length) in priority order until ``--budget-s`` is spent. Models
are random-weight models of real architectures (``testkit.gpu_models``): SmolLM2-135M and a 1B-class Llama
(Llama-3.2-1B's shape). Precision bfloat16 (full fine-tuning: float32 master weights under bf16 autocast; PEFT:
the frozen base stored in bf16; QLoRA: NF4). ``full-liger-compile``: full fine-tuning with ``model.kernels: liger``
and ``optim.compile`` (the compilation falls in the first step, which tokens/s leaves out). Beside each, the plain PyTorch loop of ``bench/train_overhead.py``
(one GPU, in this process, the same rows, tokens per step, precision, optimizer and clipping; full fine-tuning's run
is the reference of the FSDP2 and ZeRO-2 rows too, measured once per model and sequence length).

* tokens/s per GPU: input tokens per second after the first optimizer step (steady state), per GPU.
* MFU: tokens/s per GPU x FLOPs per token / the GPU's peak dense bf16 FLOP/s. FLOPs per token (PaLM's accounting,
  attention over the full row length T): full 6N + 12LdT; LoRA and QLoRA 4N + 12LdT (no weight gradients for the
  frozen base); N = the parameters in matmuls (the output head counted, the input embedding not).
* time to first step: from ``train.main``'s start (Ray already running) to the end of the first optimizer step,
  with the points in between (``startup_seconds``: the trainer's start, the worker's start, model loaded, engine
  ready, first batch on the worker, first step done).
* peak GPU memory: ``torch.cuda.max_memory_allocated`` on the worker (plain: in this process).

Eval: ``thresher eval`` (transformers backend, one GPU actor) of the 135M model on 256 GSM8K prompts x 128 new
tokens at batch 64: new tokens/s over the whole generation phase (actor start and model load included), and the
steady decode rate of one batch of 64 in this process. Embed: all-MiniLM-L6-v2's architecture encoding 256-token
documents (GSM8K text) in this process (the encoder alone), float32 and bfloat16.

    python bench/train_gpu.py --data out/gsm8k/data/train [--budget-s 240]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from train_overhead import METHODS, encoded_rows, plain_loop, thresher_config  # noqa: E402

PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
    "A10": 125.0,
}
TOKENS_PER_STEP = 16384  # per GPU: 16 rows of 1024 or 8 of 2048
PRIORITY = [
    ("llama-1b", "full", 2048),
    ("llama-1b", "full-liger-compile", 2048),
    ("smollm2-135m", "lora", 1024),
    ("llama-1b", "lora", 2048),
    ("llama-1b", "qlora", 2048),
    ("llama-1b", "fsdp2", 2048),
    ("llama-1b", "zero2", 2048),
    ("smollm2-135m", "full", 1024),
    ("smollm2-135m", "qlora", 1024),
    ("smollm2-135m", "fsdp2", 1024),
    ("smollm2-135m", "zero2", 1024),
    ("llama-1b", "full", 1024),
    ("llama-1b", "lora", 1024),
    ("smollm2-135m", "lora", 2048),
    ("smollm2-135m", "full", 2048),
    ("llama-1b", "qlora", 1024),
    ("llama-1b", "fsdp2", 1024),
    ("llama-1b", "zero2", 1024),
    ("smollm2-135m", "qlora", 2048),
    ("smollm2-135m", "fsdp2", 2048),
    ("smollm2-135m", "zero2", 2048),
]


def peak_tflops(device: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device), None)


def flops_per_token(folder: Path, method: str, seq: int) -> tuple[float, int]:
    """FLOPs per trained token and N (see the module docstring), from the model built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    embedding = model.get_input_embeddings().weight
    n = sum(p.numel() for p in model.parameters() if p is not embedding)
    if model.get_output_embeddings().weight is embedding:  # tied: the head is the embedding matrix
        n += embedding.numel()
    attention = 12 * config.num_hidden_layers * config.hidden_size * seq
    return (6 if method == "full" else 4) * n + attention, n


def train_row(
    model: Path, name: str, method_name: str, seq: int, data: Path, gpus: int, peak, steps: int, out: Path
) -> dict:
    from thresher import train

    cfg = thresher_config(model, data, method_name, seq, TOKENS_PER_STEP // seq, steps, steps, True, out, workers=gpus)
    wall = time.perf_counter()
    metrics = train.main(cfg)
    wall = time.perf_counter() - wall
    per_gpu = metrics["tokens_per_s_after_first_step"] / gpus
    fpt, n = flops_per_token(model, cfg["method"], seq)
    return {
        "model": name,
        "method": method_name,
        "seq": seq,
        "rows_per_step": TOKENS_PER_STEP // seq,
        "steps": steps,
        "params_matmul": n,
        "tokens_per_s_per_gpu": per_gpu,
        "mfu": per_gpu * fpt / (peak * 1e12) if peak else None,
        "peak_gpu_memory_gb": metrics["peak_memory_bytes"] / 1e9,
        "time_to_first_step_s": metrics["startup_seconds"].get("first_step"),
        "startup_seconds": metrics["startup_seconds"],
        "wall_s": wall,
        "final_loss": metrics["train_loss"][-1]["loss"],
        "quantized_layers": metrics["quantized_layers"],
    }


def plain_row(model: Path, method: str, seq: int, data: Path, peak, steps: int) -> dict:
    """The plain loop of ``bench/train_overhead.py`` (thresher ``method``) on this process's GPU."""
    result = plain_loop(model, method, encoded_rows(data, model, seq), TOKENS_PER_STEP // seq, steps, "cuda")
    steady = result["steady_tokens_per_s"]
    fpt, _ = flops_per_token(model, method, seq)
    return {
        "tokens_per_s": steady,
        "mfu": steady * fpt / (peak * 1e12) if peak else None,
        "peak_gpu_memory_gb": result["peak_memory_bytes"] / 1e9,
        "time_to_first_step_s": result["startup_seconds"]["first_step"],
        "startup_seconds": result["startup_seconds"],
        "mean_loss": result["mean_loss"],
        "wall_s": result["wall_s"],
    }


def eval_rows(model: Path, data: Path, out: Path) -> dict:
    import pyarrow.parquet as pq
    import torch

    from thresher.evaluate.evaluation import main as evaluate
    from thresher.models.generation import BatchGenerator, Sampling
    from thresher.train.data import render_alpaca

    files = sorted(data.rglob("*.parquet"))
    records = pq.read_table(files).slice(0, 256).to_pylist()
    path = out / "eval.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": str(i), "instruction": r["instruction"], "input": r["input"], "output": r["output"]})
            + "\n"
            for i, r in enumerate(records)
        )
    )
    result = evaluate(
        {
            "model": {"name_or_path": str(model), "dtype": "bfloat16"},
            "data": {"path": str(path), "format": "alpaca"},
            "generation": {"use_gpu": True, "batch_size": 64, "max_new_tokens": 128, "backend": "transformers"},
            "metrics": ["exact_match"],
            "output": {"path": str(out / "eval")},
        }
    )
    generator = BatchGenerator.load(str(model), dtype="bfloat16", backend="transformers", use_gpu=True)
    prompts = generator.encode([render_alpaca(r["instruction"], r["input"], "")[0] for r in records[:64]], chat=False)
    sampling = Sampling(max_new_tokens=128)
    generator.generate(prompts, sampling)  # warm-up
    torch.cuda.synchronize()
    at = time.perf_counter()
    texts = generator.generate(prompts, sampling)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - at
    steady = sum(len(generator.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) / seconds
    return {
        "rows": result["rows"],
        "new_tokens": result["new_tokens"],
        "generation_seconds": result["generation_seconds"],
        "new_tokens_per_s": result["new_tokens_per_s"],
        "steady_new_tokens_per_s_batch64": steady,
        "steady_batch_seconds": seconds,
    }


def embed_rows(model: Path, data: Path) -> list[dict]:
    import pyarrow.parquet as pq
    import torch

    from thresher.models.encoders import SentenceEncoder

    table = pq.read_table(sorted(data.rglob("*.parquet")), columns=["instruction", "output"]).to_pylist()
    texts = [
        (a["instruction"] + " " + a["output"] + " " + b["instruction"] + " " + b["output"])
        for a, b in zip(table[0::2], table[1::2])
    ]
    texts = (texts * (1 + 20000 // len(texts)))[:20000]
    rows = []
    for dtype in ("float32", "bfloat16"):
        encoder = SentenceEncoder(model, "cuda", batch_size=256, dtype=dtype)
        encoder.max_length = 256
        encoder.encode(texts[:1024])  # warm-up
        tokens = sum(min(len(ids), 256) for ids in encoder.tokenizer(texts[:2000])["input_ids"]) / 2000
        torch.cuda.synchronize()
        at = time.perf_counter()
        encoder.encode(texts)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - at
        rows.append(
            {
                "dtype": dtype,
                "documents": len(texts),
                "mean_tokens": tokens,
                "seconds": seconds,
                "documents_per_s": len(texts) / seconds,
            }
        )
    return rows


def render(result: dict, command: str) -> str:
    env = result["environment"]
    lines = [
        "# thresher on a GPU",
        "",
        f"`{command}` on {env['gpus']} x {env['device']} ({env['cpus']} CPU cores), torch {env['torch']}, "
        f"transformers {env['transformers']}, peft {env['peft']}, Ray {env['ray']}; peak bf16 "
        f"{env['peak_tflops']} TFLOP/s per GPU. Installed: flash-attn {env['flash_attn']}, Liger kernels "
        f"{env['liger_kernel']}, vLLM {env['vllm']} (attention: PyTorch SDPA). Random-weight models of real "
        "architectures; data: curated GSM8K, packed; 16,384 tokens per GPU per step, bfloat16.",
        "",
        "## Training (`thresher train`, one Ray Train worker per GPU, beside the plain loop on one GPU)",
        "",
        "Each cell with two figures: thresher, plain. Startup points: seconds from the call (`startup_seconds`; "
        "plain: model loaded, first step done).",
        "",
        "| model | method | seq | tokens/s per GPU | thresher / plain | MFU | peak GPU memory GB | "
        "time to first step s | worker started s | model loaded s | engine ready s | first batch s | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def pair(a: dict, b: dict, key: str, spec: str) -> str:
        return ", ".join("n/a" if x.get(key) is None else format(x[key], spec) for x in (a, b))

    for r in result["train"]:
        p = r.get("plain") or {}
        if "error" in r or "error" in p:
            lines.append(
                f"| {r['model']} | {r['method']} | {r['seq']} | failed: "
                f"{(r.get('error') or 'plain: ' + p['error'])[:160]} ||||||||||"
            )
            continue
        s, ps = r["startup_seconds"], p.get("startup_seconds", {})
        t = {
            "tokens": r["tokens_per_s_per_gpu"],
            "mfu": r["mfu"],
            "memory": r["peak_gpu_memory_gb"],
            "first": r["time_to_first_step_s"],
            "loaded": s.get("model_loaded"),
            "wall": r["wall_s"],
        }
        q = {
            "tokens": p.get("tokens_per_s"),
            "mfu": p.get("mfu"),
            "memory": p.get("peak_gpu_memory_gb"),
            "first": p.get("time_to_first_step_s"),
            "loaded": ps.get("model_loaded"),
            "wall": p.get("wall_s"),
        }
        ratio = f"{t['tokens'] / q['tokens']:.2f}" if q["tokens"] else "n/a"
        lines.append(
            f"| {r['model']} | {r['method']} | {r['seq']} | {pair(t, q, 'tokens', ',.0f')} | {ratio} | "
            f"{pair(t, q, 'mfu', '.1%')} | {pair(t, q, 'memory', '.1f')} | {pair(t, q, 'first', '.1f')} | "
            f"{s.get('worker_started', 0):.1f} | {pair(t, q, 'loaded', '.1f')} | "
            f"{s.get('engine_ready', 0):.1f} | {s.get('first_batch', 0):.1f} | {pair(t, q, 'wall', '.0f')} |"
        )
    if result["skipped"]:
        lines += [
            "",
            "Not run within the time budget: " + ", ".join(f"{m} {k} {q}" for m, k, q in result["skipped"]) + ".",
        ]
    e = result.get("eval")
    if e:
        lines += [
            "",
            "## Generation (`thresher eval`, transformers, SmolLM2-135M architecture)",
            "",
            f"{e['rows']} prompts x 128 new tokens at batch 64: {e['new_tokens']:,} new tokens in "
            f"{e['generation_seconds']:.1f} s of the generate phase (Ray Data actor start and model load "
            f"included) = {e['new_tokens_per_s']:,.0f} new tokens/s. One batch of 64 in one process, steady: "
            f"{e['steady_new_tokens_per_s_batch64']:,.0f} new tokens/s ({e['steady_batch_seconds']:.2f} s).",
        ]
    if result.get("embed"):
        lines += [
            "",
            "## Embedding (all-MiniLM-L6-v2 architecture, the encoder alone in one process)",
            "",
            "| dtype | documents | mean tokens | documents/s |",
            "|---|---:|---:|---:|",
        ]
        for r in result["embed"]:
            lines.append(
                f"| {r['dtype']} | {r['documents']:,} | {r['mean_tokens']:.0f} | {r['documents_per_s']:,.0f} |"
            )
    for name, error in result.get("errors", {}).items():
        lines += ["", f"{name} failed: {error}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="curated GSM8K in alpaca format (a data/<split> folder)")
    p.add_argument("--models", type=Path, help="where the random-weight models are made (default: a temporary folder)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=240,
        help=(
            "start no training row that would end after this many seconds (taking the longest row so far as its length)"
        ),
    )
    p.add_argument("--steps", type=int, default=10)
    p.add_argument(
        "--parts",
        nargs="*",
        choices=["eval", "embed"],
        default=["eval", "embed"],
        help="measured before the training rows (--parts with none of them: training only)",
    )
    p.add_argument("--only", nargs="*", help="model:method:seq entries to run instead of the priority list")
    p.add_argument("--peak-tflops", type=float)
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/train_gpu.md")
    args = p.parse_args()
    command = "python bench/train_gpu.py " + " ".join(sys.argv[1:])

    import peft
    import ray
    import torch
    import transformers

    from testkit.gpu_models import random_model
    from thresher.runtime import EMBEDDED_SYSTEM_CONFIG

    if not torch.cuda.is_available():
        raise SystemExit(
            "train_gpu.py needs a CUDA GPU; this machine has none (bench/train_bench.py and "
            "bench/train_overhead.py measure CPUs)"
        )
    started = time.perf_counter()
    gpus, device = torch.cuda.device_count(), torch.cuda.get_device_name(0)
    peak = peak_tflops(device, args.peak_tflops)
    env = {
        "device": device,
        "gpus": gpus,
        "cpus": os.cpu_count(),
        "peak_tflops": peak,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "ray": ray.__version__,
        "python": platform.python_version(),
        **{m: importlib.util.find_spec(m) is not None for m in ("flash_attn", "liger_kernel", "vllm")},
    }
    result = {"command": command, "environment": env, "train": [], "skipped": [], "errors": {}}
    configs = [tuple(int(x) if x.isdigit() else x for x in o.split(":")) for o in args.only] if args.only else PRIORITY
    ray.init(
        address="local",
        num_gpus=gpus,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        _system_config=EMBEDDED_SYSTEM_CONFIG,
    )

    def save() -> None:  # after every measurement: a run stopped by a time limit keeps what it measured
        result["wall_s"] = time.perf_counter() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
        args.out.write_text(render(result, command))

    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or Path(tmp) / "models"
        parts = (
            ("eval", lambda: eval_rows(random_model("smollm2-135m", models), args.data, Path(tmp))),
            ("embed", lambda: embed_rows(random_model("minilm", models), args.data)),
        )
        for part, measure in ((name, measure) for name, measure in parts if name in args.parts):
            try:
                result[part] = measure()
            except Exception as e:  # recorded: a failing part is a finding, not the end of the run
                result["errors"][part] = f"{type(e).__name__}: {e}"
            print(json.dumps({part: result.get(part), "error": result["errors"].get(part)}), flush=True)
            save()
        plain: dict[tuple, dict] = {}  # (model, thresher method, seq): FSDP2's and ZeRO-2's reference is full's
        longest = 0.0  # the longest row so far (thresher and plain): a row that would not end in the budget waits
        for i, (name, method, seq) in enumerate(configs):
            if time.perf_counter() - started + longest > args.budget_s:
                result["skipped"] = [list(c) for c in configs[i:]]
                break
            row_started = time.perf_counter()
            try:
                model = random_model(name, models)
                row = train_row(model, name, method, seq, args.data, gpus, peak, args.steps, Path(tmp) / f"run-{i}")
            except Exception as e:
                row = {"model": name, "method": method, "seq": seq, "error": f"{type(e).__name__}: {e}"}
            result["train"].append(row)
            save()
            tuning = METHODS[method][0]
            if (name, tuning, seq) not in plain:
                try:
                    plain[name, tuning, seq] = plain_row(model, tuning, seq, args.data, peak, args.steps)
                except Exception as e:
                    plain[name, tuning, seq] = {"error": f"{type(e).__name__}: {e}"}
            row["plain"] = plain[name, tuning, seq]
            longest = max(longest, time.perf_counter() - row_started)
            print(json.dumps(row), flush=True)
            save()
    ray.shutdown()
    save()
    print(render(result, command))


if __name__ == "__main__":
    main()
