"""thresher's training overhead: ``thresher train``'s own path (``thresher.train.main``: Ray Train, one worker, the
rows streamed by Ray Data) beside a plain PyTorch loop written here, in one run, on the same model, rows, tokens per
step, precision, optimizer, learning rate and clipping; and thresher with a checkpoint every ``--checkpoint-every``
steps beside thresher with only the final checkpoint. Writes ``bench/results/train_overhead.md`` and ``.json`` after
each measurement; a measurement replaces the earlier one of the same settings and method, the others are kept
(``--runs`` takes some of a row's three measurements: a long run may be split).

The plain loop (:func:`plain_loop`; ``bench/train_gpu.py`` runs it too): ``AutoModelForCausalLM.from_pretrained``
(sdpa attention), peft's ``get_peft_model`` for LoRA and QLoRA (NF4, double quantization, bf16 compute, after
``prepare_model_for_kbit_training``), ``torch.optim.AdamW`` (fused, no weight decay) with cosine decay to 0 (thresher's
schedule without warmup), cross-entropy averaged over the step's trained tokens, ``clip_grad_norm_(1.0)``. Its rows
are thresher's (``thresher.train.data.encode_batch``: alpaca records packed into rows of ``--seq`` tokens), tokenized
before the loop and fed in order as ``input_ids`` and restarting ``position_ids``, as thresher feeds them.

Precision: on CPU float32. On a GPU, full fine-tuning: float32 weights under bf16 autocast (thresher FSDP2: bf16
parameters gathered, fp32 gradient reduction; ZeRO-2: DeepSpeed's bf16 mode); LoRA: the frozen base in bf16, the
adapters in fp32, bf16 autocast; QLoRA: an NF4 base. The plain loop has no FSDP2 or ZeRO: its full fine-tuning run is
the reference of all three full rows (one worker on one device in every row; DDP is not wrapped for one worker).

CPU threads: a local Ray of 2 CPUs; thresher's worker holds 1 (Ray sets its torch threads to 1), the other runs Ray
Data's read and tokenize tasks; the plain loop runs in this process with ``torch.set_num_threads(1)`` (Ray idle).

Measured: steady tokens/s (input tokens, padding excluded, after step 1: thresher's
``tokens_per_s_after_first_step``), the first step and the phases before it (``startup_seconds``, from the call of
``train.main``), the mean training loss of the run (the two should agree: the same work), peak memory, wall time;
with checkpoints: their count, size on disk, the seconds the loop was blocked and the background write seconds
(``checkpoints`` in thresher's metrics), and the loop and wall seconds each extra checkpoint added. ``--profile``
(``--profile-only``: nothing else): one more thresher run of the first method with py-spy (on PATH; not a project
dependency) sampling the Ray Train worker's training thread, wall clock, from the start of step 2 to the end of the
loop, and the CPU seconds of every process of the Ray session meanwhile.

    python bench/train_overhead.py [--methods full fsdp2 zero2 lora] [--steps 20] [--profile]      # CPU
    python bench/train_overhead.py --model llama-1b --methods full lora qlora                      # a GPU
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench/results"
RECORDS = ROOT / "examples/data/gsm8k_train.jsonl"
LR = 1e-4
LORA = {
    "r": 16,
    "alpha": 32,
    "dropout": 0.05,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
METHODS = {
    "full": ("full", {}),
    "fsdp2": ("full", {"fsdp": {}}),
    "zero2": ("full", {"deepspeed": {"stage": 2}}),
    "lora": ("lora", {}),
    "qlora": ("qlora", {}),
    "full-liger-compile": ("full", {"model": {"kernels": "liger"}, "optim": {"compile": True}}),
}
"""bench name -> thresher method, and the config sections it adds (merged into the sections the bench sets)"""
SMALL_LLAMA = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}
COLUMNS = ("input_ids", "labels", "position_ids", "attention_mask")
RUNS = ("plain", "thresher", "thresher_checkpoints")  # a row's measurements: thresher with only the final checkpoint
SETTINGS = ("machine", "model", "seq", "rows_per_step", "steps", "checkpoint_every")  # rows alike in these compare


# -- data and model -------------------------------------------------------------------------------------------------


def alpaca_parquet(records: Path, out: Path) -> Path:
    """GSM8K records (``question``, ``answer``) as thresher's alpaca columns, in one Parquet file in ``out``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in records.read_text().splitlines()]
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "instruction": [r["question"] for r in rows],
                "input": [""] * len(rows),
                "output": [r["answer"] for r in rows],
            }
        ),
        out / "part-0.parquet",
    )
    return out


def parquet_table(data: Path):
    import pyarrow.parquet as pq

    return pq.read_table(
        [data] if data.is_file() else sorted(data.rglob("*.parquet")), columns=["instruction", "input", "output"]
    )


def make_model(name: str, data: Path, root: Path) -> Path:
    """``small``: a random Llama of :data:`SMALL_LLAMA`'s shape with a tokenizer trained on ``data``; else a random
    model of ``testkit.gpu_models``."""
    if name == "small":
        from testkit.tiny_llama import build_tiny_llama
        from thresher.train.data import render_alpaca

        texts = [render_alpaca(r["instruction"], r["input"], r["output"])[0] for r in parquet_table(data).to_pylist()]
        return build_tiny_llama(root / "small", texts, **SMALL_LLAMA)
    from testkit.gpu_models import random_model

    return random_model(name, root)


def encoded_rows(data: Path, model: Path, seq: int, batch_rows: int = 1024) -> dict:
    """thresher's rows of ``data`` (alpaca, packed into ``seq`` tokens), tokenized ``batch_rows`` records at a time
    as its Ray Data tasks do (``data.batch_rows``): numpy arrays by column."""
    import numpy as np
    from transformers import AutoTokenizer

    from thresher.train.data import Encoding, encode_batch

    tokenizer = AutoTokenizer.from_pretrained(model)
    enc = Encoding("alpaca", "text", seq, packing=True)
    table = parquet_table(data)
    parts = [encode_batch(table.slice(at, batch_rows), tokenizer, enc) for at in range(0, len(table), batch_rows)]
    return {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}


# -- the plain loop ---------------------------------------------------------------------------------------------------


def plain_loop(model_dir: Path, method: str, rows: dict, rows_per_step: int, steps: int, device: str) -> dict:
    """``steps`` optimizer steps of a plain PyTorch loop in this process (``method``: full, lora or qlora; see the
    module docstring) on ``rows_per_step`` of ``rows`` each, cycling through them."""
    import peft
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    started = time.perf_counter()
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    kwargs = {"attn_implementation": "sdpa", "dtype": torch.bfloat16 if on_gpu and method != "full" else torch.float32}
    if method == "qlora":
        kwargs.update(
            device_map={"": device.index or 0},
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            ),
        )
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    model.config.use_cache = False
    if method == "qlora":
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if method != "full":
        model = peft.get_peft_model(
            model,
            peft.LoraConfig(
                task_type="CAUSAL_LM",
                r=LORA["r"],
                lora_alpha=LORA["alpha"],
                lora_dropout=LORA["dropout"],
                target_modules=LORA["target_modules"],
            ),
        )
    if method != "qlora":
        model = model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0, fused=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    model_loaded = time.perf_counter() - started

    count = len(rows["input_ids"])
    losses, units, tokens, first = [], [], 0, None
    loop_started = time.perf_counter()
    for step in range(steps):
        at = step * rows_per_step % (count - rows_per_step + 1)
        batch = {c: torch.from_numpy(rows[c][at : at + rows_per_step]).to(device, torch.long) for c in COLUMNS}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        loss = F.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        units.append(int((rows["labels"][at : at + rows_per_step, 1:] != -100).sum()))
        tokens += int(rows["attention_mask"][at : at + rows_per_step].sum())
        if step == 0:
            sync()
            first = (time.perf_counter() - loop_started, tokens)
    sync()
    seconds = time.perf_counter() - loop_started
    mean_loss = float(sum(l.item() * u for l, u in zip(losses, units)) / sum(units))
    result = {
        "tokens_per_s": tokens / seconds,
        "steady_tokens_per_s": (tokens - first[1]) / (seconds - first[0]) if steps > 1 else None,
        "first_step_s": first[0],
        "train_seconds": seconds,
        "steps": steps,
        "tokens": tokens,
        "mean_loss": mean_loss,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if on_gpu else None,
        "startup_seconds": {"model_loaded": round(model_loaded, 3), "first_step": round(model_loaded + first[0], 3)},
        "wall_s": time.perf_counter() - started,
    }
    del model, optimizer, schedule, params, batch, logits, loss, losses
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    return result


# -- thresher ---------------------------------------------------------------------------------------------------------


def thresher_config(
    model_dir: Path,
    data: Path,
    method_name: str,
    seq: int,
    rows_per_step: int,
    steps: int,
    checkpoint_every: int,
    on_gpu: bool,
    out: Path,
    workers: int = 1,
) -> dict:
    """``thresher train``'s config for bench method ``method_name``, with the plain loop's settings."""
    method, sections = METHODS[method_name]
    cfg = {
        "model": {"name_or_path": str(model_dir), "dtype": "bfloat16" if on_gpu else "float32"},
        "data": {"train": str(data), "format": "alpaca", "max_seq_len": seq, "packing": True},
        "method": method,
        "lora": LORA,
        "scaling": {"num_workers": workers, "use_gpu": on_gpu},
        "optim": {
            "lr": LR,
            "max_steps": steps,
            "batch_size": rows_per_step,
            "weight_decay": 0.0,
            "max_grad_norm": 1.0,
            "log_every_steps": steps,
        },
        "checkpoint": {"every_steps": checkpoint_every, "max_failures": 0},
        "output": {"path": str(out)},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def ray_train_floor(workers_cpu: dict, on_gpu: bool, folder: Path) -> list[float]:
    """Seconds from ``TorchTrainer.fit`` to the start of a training function that returns at once (one worker with
    ``workers_cpu``, no datasets), twice: Ray Train's own start, which every thresher run pays."""
    import ray.train
    from ray.train.torch import TorchTrainer

    def started(config: dict) -> float:
        return time.time() - config["called"]

    seconds = []
    for i in range(2):
        trainer = TorchTrainer(
            started,
            train_loop_config={"called": time.time()},
            scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=on_gpu, resources_per_worker=workers_cpu),
            run_config=ray.train.RunConfig(storage_path=str(folder / f"floor-{i}")),
        )
        seconds.append(round(trainer.fit().return_value, 2))
    return seconds


def thresher_run(cfg: dict) -> dict:
    """``thresher.train.main(cfg)`` on the running Ray; the metrics this bench reports."""
    from thresher import train
    from thresher.train.checkpoints import folder_bytes

    wall = time.perf_counter()
    metrics = train.main(cfg)
    wall = time.perf_counter() - wall
    checkpoint = metrics["checkpoint"]
    return {
        "tokens_per_s": metrics["tokens_per_s"],
        "steady_tokens_per_s": metrics["tokens_per_s_after_first_step"],
        "first_step_s": metrics["first_step_seconds"],
        "train_seconds": metrics["train_seconds"],
        "steps": metrics["steps_this_run"],
        "tokens": metrics["tokens"],
        "mean_loss": metrics["train_loss"][-1]["loss"] if metrics["train_loss"] else None,
        "eval_seconds": metrics["eval_seconds"],
        "checkpoint_seconds": metrics["checkpoint_seconds"],
        "checkpoints": metrics["checkpoints"],
        "checkpoint_bytes_on_disk": folder_bytes(checkpoint) if checkpoint and Path(checkpoint).exists() else None,
        "startup_seconds": metrics["startup_seconds"],
        "peak_memory_bytes": metrics["peak_memory_bytes"],
        "wall_s": wall,
    }


def measured(measure) -> dict:
    """``measure()`` (or the error it raised: a failing setup is a finding, not the end of the run) and the 1-minute
    load average before and after it (above the CPU count: other work shared the machine)."""
    before = os.getloadavg()[0]
    try:
        result = measure()
    except Exception as e:
        result = {"error": f"{type(e).__name__}: {e}"[:400]}
    return {**result, "load_average": [round(before, 1), round(os.getloadavg()[0], 1)]}


# -- the profile ------------------------------------------------------------------------------------------------------


def module_of(file: str) -> str:
    """A dotted module name for a source file (site-packages, thresher's tree, or the standard library)."""
    for marker in ("site-packages/", "dist-packages/", "/src/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            if marker == "/lib/python3":
                file = file.split("/", 1)[-1]
            break
    return file.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


class WorkerProfile:
    """py-spy on the Ray Train worker of the next thresher run (from its start to its exit, ``--idle``: wall-clock
    samples), and the CPU seconds of every process of this Ray session meanwhile (psutil, polled)."""

    def __init__(self, out: Path, rate: int):
        import psutil

        self.out, self.rate, self.own = out, rate, psutil.Process()
        self.seen = {p.pid for p in self.own.children(recursive=True)}  # earlier runs' processes are not the worker
        self.cpu: dict[int, list] = {}  # pid -> [first CPU s, last CPU s, titles seen]
        self.spy, self.done = None, threading.Event()
        self.thread = threading.Thread(target=self._poll, name="bench-profile", daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        import psutil

        while not self.done.wait(0.5 if self.spy else 0.1):
            for p in [self.own, *self.own.children(recursive=True)]:
                try:
                    title, times = " ".join(p.cmdline()), p.cpu_times()
                except psutil.Error:
                    continue
                used = times.user + times.system
                entry = self.cpu.setdefault(
                    p.pid, [used if p.pid in self.seen or p is self.own else 0.0, used, collections.Counter()]
                )
                entry[1] = used
                entry[2][title] += 1
                if self.spy is None and "RayTrainWorker" in title and p.pid not in self.seen:
                    self.spy = subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "--pid",
                            str(p.pid),
                            "--rate",
                            str(self.rate),
                            "--idle",
                            "--nonblocking",
                            "--format",
                            "speedscope",
                            "--output",
                            str(self.out),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        text=True,
                    )

    def finish(self, steps: int) -> dict:
        """Stop polling; the summary (see :func:`summarise`)."""
        self.done.set()
        self.thread.join()
        if self.spy is None:
            return {"error": "no Ray Train worker process was found"}
        try:
            _, err = self.spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.spy.terminate()
            _, err = self.spy.communicate()
        if not self.out.exists():
            return {"error": f"py-spy wrote no profile: {err.strip()[-300:]}"}
        summary = summarise(json.loads(self.out.read_text()), self.rate, steps)
        return {**summary, "cpu_seconds": self.cpu_by_process()}

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds per process kind (Ray worker processes by their busiest title)."""
        totals: collections.Counter = collections.Counter()
        for pid, (first, last, titles) in self.cpu.items():
            ranked = [t for t, _ in titles.most_common()]
            title = next(
                (t for t in ranked if t.startswith("ray::") and "IDLE" not in t),
                next((t for t in ranked if "IDLE" not in t), ranked[0]),
            ).split()
            name = title[0] if title[0].startswith("ray::") else os.path.basename(title[0])
            if name.startswith("python") and len(title) > 1:
                name = os.path.basename(next((a for a in title[1:] if not a.startswith("-")), title[1]))
            if pid == self.own.pid:
                name = "this bench (the driver)"
            totals[name.split(".")[0] if name.startswith("ray::") else name] += last - first
        return {k: round(v, 1) for k, v in totals.most_common() if v >= 0.05}


def summarise(speedscope: dict, rate: int, steps: int) -> dict:
    """The training thread's samples from the start of step 2 (its first forward after a backward) to the end of
    ``Recipe.train``: shares by the innermost thresher training frame, by innermost Python function, and by the
    package of that function."""
    frames = speedscope["shared"]["frames"]
    labels = [f"{module_of(f.get('file', ''))}.{f['name']}" for f in frames]
    in_thresher = [label.startswith("thresher.train.") for label in labels]
    thread = next(
        (
            p
            for p in speedscope["profiles"]
            if any(labels[i].endswith(".train_loop_per_worker") for s in p["samples"] for i in s)
        ),
        None,
    )
    if thread is None:
        return {"error": "no thread of the worker ran train_loop_per_worker"}
    samples, weights = thread["samples"], thread["weights"]  # stacks root first; seconds each
    inner = [
        next((labels[i].removeprefix("thresher.train.") for i in reversed(s) if in_thresher[i]), "(outside thresher)")
        for s in samples
    ]
    in_train = [
        any(labels[i] in ("thresher.train.loop.Recipe.train", "thresher.train.loop.train") for i in s) for s in samples
    ]
    backward = next((i for i, f in enumerate(inner) if f.endswith(".backward")), None)
    start = next(
        (
            i
            for i, f in enumerate(inner)
            if backward is not None and i > backward and f.endswith((".forward", ".outputs"))
        ),
        None,
    )
    end = max((i for i, t in enumerate(in_train) if t), default=None)
    if start is None or end is None or end <= start:
        return {"error": "the profile holds no steady steps"}
    by_frame, by_function, by_package = collections.Counter(), collections.Counter(), collections.Counter()
    for stack, frame, seconds in zip(samples[start : end + 1], inner[start : end + 1], weights[start : end + 1]):
        by_frame[frame] += seconds
        by_function[labels[stack[-1]]] += seconds
        by_package[labels[stack[-1]].split(".")[0]] += seconds
    total = sum(weights[start : end + 1])
    share = lambda counter, top: [(k, round(v / total, 4)) for k, v in counter.most_common(top)]  # noqa: E731
    return {
        "rate_hz": rate,
        "samples": end + 1 - start,
        "seconds": total,
        "seconds_per_step": total / max(steps - 1, 1),
        "by_thresher_frame": share(by_frame, 14),
        "by_function": share(by_function, 14),
        "by_package": share(by_package, 8),
    }


# -- results ----------------------------------------------------------------------------------------------------------


def fmt(value, spec: str = ",.0f", missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def ratio(a, b) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def loop_seconds(run: dict) -> float:
    """The training loop's seconds after step 1 (thresher's ``train_seconds`` leave evaluations and checkpoints
    out; step 1 also waits for the data pipeline to start)."""
    return (
        (run["train_seconds"] or 0.0) + run["eval_seconds"] + run["checkpoint_seconds"] - (run["first_step_s"] or 0.0)
    )


def load(row: dict) -> str:
    """The highest 1-minute load average seen around the row's measurements."""
    seen = [x for k in RUNS for x in (row.get(k) or {}).get("load_average", [])]
    return f"{max(seen):.1f}" if seen else "n/a"


def render(result: dict) -> str:
    lines = [
        "# thresher's training overhead",
        "",
        "thresher's own path (`thresher.train.main`, one Ray Train worker) beside a plain PyTorch loop in one run "
        "(`bench/train_overhead.py`: its docstring says what each does). tokens/s: input tokens per second after "
        "step 1. Raw: `bench/results/train_overhead.json`. Load average: the highest 1-minute load average around "
        "a row's runs (above the machine's core count: other work shared it, and that row's rates are low).",
    ]
    groups: dict = {}
    for row in result["rows"]:
        groups.setdefault(tuple(row[k] for k in SETTINGS), []).append(row)
    for rows in groups.values():
        r0 = rows[0]
        every = r0["checkpoint_every"]
        commands = dict.fromkeys(r[k]["command"] for r in rows for k in RUNS if "command" in (r.get(k) or {}))
        lines += [
            "",
            f"## `{r0['model']}`, {r0['steps']} steps, {r0['machine']}",
            "",
            "Measured by " + ", ".join(f"`{c}`" for c in commands) + ".",
            "",
            f"{r0['machine']}; {r0['versions']}. Model `{r0['model']}` ({r0['params'] / 1e6:.1f} M parameters, "
            f"random weights); {r0['rows_per_step']} rows x {r0['seq']} tokens per step (packed GSM8K alpaca "
            "records), "
            f"{r0['steps']} steps, AdamW lr {LR:g} with cosine decay, no weight decay, gradient clipping 1.0; "
            f"{r0['precision']}; {r0['threads']}.",
            "",
            "| method | plain tokens/s | thresher tokens/s | thresher / plain | first step s: plain, thresher | "
            "mean loss: plain, thresher | peak memory GB: plain, thresher | wall s: plain, thresher | "
            "load average |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        gb = lambda b: fmt(b and b / 1e9, ".2f")  # noqa: E731
        for r in rows:
            p, t = r.get("plain") or {}, r.get("thresher") or {}
            if "error" in p or "error" in t:
                lines.append(f"| {r['method']} | failed: {(p.get('error') or t.get('error'))[:200]} |||||||")
                continue
            lines.append(
                f"| {r['method']}{' (plain: full)' if r['method'] in ('fsdp2', 'zero2') else ''} "
                f"| {fmt(p.get('steady_tokens_per_s'))} | {fmt(t.get('steady_tokens_per_s'))} "
                f"| {ratio(t.get('steady_tokens_per_s'), p.get('steady_tokens_per_s'))} "
                f"| {fmt(p.get('first_step_s'), '.2f')}, {fmt(t.get('first_step_s'), '.2f')} "
                f"| {fmt(p.get('mean_loss'), '.4f')}, {fmt(t.get('mean_loss'), '.4f')} "
                f"| {gb(p.get('peak_memory_bytes'))}, {gb(t.get('peak_memory_bytes'))} "
                f"| {fmt(p.get('wall_s'), '.1f')}, {fmt(t.get('wall_s'), '.1f')} | {load(r)} |"
            )
        lines += [
            "",
            f"### Checkpoints: every {every} steps against only the final one",
            "",
            "Loop s: the training loop's seconds after step 1 (`train_seconds` + `eval_seconds` + "
            "`checkpoint_seconds` - `first_step_seconds`); "
            "blocked: the seconds the loop waited for checkpoints (`checkpoint_seconds`); write: background "
            "writing and upload (`checkpoints.write_seconds`).",
            "",
            f"| method | tokens/s, final only | tokens/s, every {every} | ratio | checkpoints | MB each on disk "
            f"| blocked s each | write s each | GB/s written | loop s: final only, every {every} "
            "| per extra checkpoint: loop s, wall s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            t, c = r.get("thresher") or {}, r.get("thresher_checkpoints") or {}
            if not t or not c or "error" in t or "error" in c:
                lines.append(
                    f"| {r['method']} | {(c.get('error') or t.get('error') or 'not measured')[:200]} ||||||||||"
                )
                continue
            info, n = c["checkpoints"], c["checkpoints"]["count"]
            extra = n - t["checkpoints"]["count"]
            written = info.get("bytes") or (c["checkpoint_bytes_on_disk"] or 0) * n
            per_extra = lambda key: fmt((key(c) - key(t)) / extra if extra > 0 else None, ".2f")  # noqa: E731
            lines.append(
                f"| {r['method']} | {fmt(t.get('steady_tokens_per_s'))} | {fmt(c.get('steady_tokens_per_s'))} "
                f"| {ratio(c.get('steady_tokens_per_s'), t.get('steady_tokens_per_s'))} | {n} "
                f"| {fmt(c['checkpoint_bytes_on_disk'] and c['checkpoint_bytes_on_disk'] / 1e6, ',.1f')} "
                f"| {fmt(c['checkpoint_seconds'] / n if c['checkpoint_seconds'] else None, '.2f')} "
                f"| {fmt(info['write_seconds'] / n if info.get('write_seconds') else None, '.2f')} "
                f"| {fmt(written / 1e9 / info['write_seconds'] if info.get('write_seconds') else None, '.2f')} "
                f"| {loop_seconds(t):.1f}, {loop_seconds(c):.1f} | {per_extra(loop_seconds)}, "
                f"{per_extra(lambda x: x['wall_s'])} |"
            )
        points = list(dict.fromkeys(k for r in rows for k in ((r.get("thresher") or {}).get("startup_seconds") or {})))
        lines += [
            "",
            "### Time to the first step (seconds from the call; thresher: the run with only the final checkpoint)",
            "",
            f"| method | {' | '.join(points)} | plain: model loaded, first step |",
            "|---|" + "---:|" * (len(points) + 1),
        ]
        for r in rows:
            s = (r.get("thresher") or {}).get("startup_seconds") or {}
            p = (r.get("plain") or {}).get("startup_seconds") or {}
            lines.append(
                f"| {r['method']} | "
                + " | ".join(fmt(s.get(k), ".1f") for k in points)
                + f" | {fmt(p.get('model_loaded'), '.1f')}, {fmt(p.get('first_step'), '.1f')} |"
            )
        floor = result.get("ray_train_floor", {}).get(r0["machine"])
        if floor:
            lines += [
                "",
                f"Ray Train alone (a bare `TorchTrainer`: one worker, no datasets, a training function that "
                f"returns at once) starts its function {floor[0]:.1f} s after `fit()` is called, and "
                f"{floor[1]:.1f} s the second time: the part of `worker_started` that is Ray Train's own start.",
            ]
    for prof in result.get("profiles", []):
        lines += [
            "",
            f"## Profile: {prof['method']}, `{prof['model']}`, {prof['machine']}",
            "",
            f"`{prof['command']}`",
            "",
        ]
        if "error" in prof:
            lines.append(f"Not profiled: {prof['error']}")
            continue
        lines += [
            f"py-spy at {prof['rate_hz']} Hz with `--idle` (wall clock) on the Ray Train worker's training "
            f"thread, from the start of step 2 to the end of the training loop: {prof['seconds']:.1f} s, "
            f"{prof['seconds_per_step']:.2f} s per step ({fmt(prof.get('steady_tokens_per_s'))} tokens/s in this "
            f"run; load average {prof['load_average'][0]:.1f} before it, {prof['load_average'][1]:.1f} after). "
            "Shares of that time by the innermost frame of thresher's training code, and by the innermost Python "
            "function (C++ work is charged to the Python function that called it):",
            "",
            "| thresher frame | share |",
            "|---|---:|",
        ]
        lines += [f"| `{k}` | {v:.1%} |" for k, v in prof["by_thresher_frame"]]
        lines += ["", "| Python function | share |", "|---|---:|"]
        lines += [f"| `{k}` | {v:.1%} |" for k, v in prof["by_function"]]
        lines += [
            "",
            "By package: " + ", ".join(f"{k} {v:.1%}" for k, v in prof["by_package"]) + ".",
            "",
            "CPU seconds of this Ray session's processes over the whole profiled run (start-up included; Ray "
            "worker processes by their busiest title; py-spy is the sampler):",
            "",
            "| process | CPU s |",
            "|---|---:|",
        ]
        lines += [f"| `{k}` | {v:g} |" for k, v in prof["cpu_seconds"].items()]
    return "\n".join(lines) + "\n"


def machine_name(on_gpu: bool) -> str:
    import torch

    if on_gpu:
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{platform.machine()} {model}, {os.cpu_count()} CPU cores"


def parameter_count(model_dir: Path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", choices=["small", "smollm2-135m", "llama-1b"], help="default: small on CPU, llama-1b on a GPU"
    )
    p.add_argument(
        "--methods", nargs="+", choices=list(METHODS), help="default: full fsdp2 zero2 lora (and qlora on a GPU)"
    )
    p.add_argument("--steps", type=int, default=20, help="optimizer steps of every run")
    p.add_argument("--seq", type=int, help="tokens per row (default: 256 on CPU, 2048 on a GPU)")
    p.add_argument("--rows", type=int, help="rows per step (default: 4 on CPU, 16384 tokens' worth on a GPU)")
    p.add_argument("--checkpoint-every", type=int, default=5)
    p.add_argument(
        "--data",
        type=Path,
        help="alpaca Parquet, a file or folder (default: the repository's GSM8K "
        "records, examples/data/gsm8k_train.jsonl)",
    )
    p.add_argument("--models", type=Path, help="where the random-weight models are made (default: a temporary folder)")
    p.add_argument(
        "--runs",
        nargs="+",
        choices=RUNS,
        default=list(RUNS),
        help="the measurements to take (a row keeps those of earlier runs with the same settings)",
    )
    p.add_argument("--profile", action="store_true", help="one more thresher run of the first method, under py-spy")
    p.add_argument("--profile-only", action="store_true", help="only that run")
    p.add_argument("--profile-rate", type=int, default=25, help="py-spy samples per second (each costs CPU)")
    p.add_argument("--out", type=Path, default=RESULTS / "train_overhead.md")
    args = p.parse_args()
    command = "python bench/train_overhead.py " + " ".join(sys.argv[1:])

    import peft
    import ray
    import torch
    import transformers

    from testkit.ray_cluster import start_local_ray

    on_gpu = torch.cuda.is_available()
    model_name = args.model or ("llama-1b" if on_gpu else "small")
    methods = args.methods or ["full", "fsdp2", "zero2", "lora", *(["qlora"] if on_gpu else [])]
    seq = args.seq or (2048 if on_gpu else 256)
    rows_per_step = args.rows or (16384 // seq if on_gpu else 4)
    machine = machine_name(on_gpu)
    if on_gpu:
        start_local_ray(num_gpus=1)
        threads = "one GPU: thresher's worker and the plain loop (in this process) each use it alone"
        precision = "full: float32 weights under bf16 autocast; LoRA: bf16 base, fp32 adapters; QLoRA: NF4 base"
    else:
        start_local_ray(num_cpus=2)
        torch.set_num_threads(1)
        threads = (
            "1 torch thread each: thresher's worker holds 1 of the local Ray's 2 CPUs (the other runs Ray "
            "Data's read and tokenize tasks), the plain loop runs in the bench's process with "
            "torch.set_num_threads(1)"
        )
        precision = "float32"
    versions = (
        f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
        f"Ray {ray.__version__}"
    )
    stored = (
        json.loads(args.out.with_suffix(".json").read_text())
        if args.out.with_suffix(".json").exists()
        else {"rows": [], "profiles": []}
    )

    def save(row: dict | None = None, profile: dict | None = None) -> None:
        if row is not None:
            key = [row[k] for k in (*SETTINGS, "method")]
            old = next((r for r in stored["rows"] if [r[k] for k in (*SETTINGS, "method")] == key), {})
            stored["rows"] = [r for r in stored["rows"] if r is not old] + [{**old, **row}]
        if profile is not None:
            key = [profile[k] for k in ("machine", "model", "method")]
            stored["profiles"] = [
                r for r in stored["profiles"] if [r[k] for k in ("machine", "model", "method")] != key
            ] + [profile]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(stored, indent=1) + "\n")
        args.out.write_text(render(stored))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data or alpaca_parquet(RECORDS, tmp / "data")
        model = make_model(model_name, data, args.models or tmp / "models")
        rows = encoded_rows(data, model, seq)
        device = "cuda" if on_gpu else "cpu"
        plain: dict[str, dict] = {}  # by thresher method: fsdp2 and zero2 share full's
        settings = {
            "machine": machine,
            "model": model_name,
            "params": parameter_count(model),
            "seq": seq,
            "rows_per_step": rows_per_step,
            "steps": args.steps,
            "checkpoint_every": args.checkpoint_every,
            "precision": precision,
            "threads": threads,
            "versions": versions,
        }

        def run_thresher(method: str, every: int, name: str) -> dict:
            return measured(
                lambda: thresher_run(
                    thresher_config(model, data, method, seq, rows_per_step, args.steps, every, on_gpu, tmp / name)
                )
            )

        if not args.profile_only and any(run != "plain" for run in args.runs):
            stored.setdefault("ray_train_floor", {})[machine] = ray_train_floor(
                None if on_gpu else {"CPU": 1}, on_gpu, tmp
            )
            save()
        for method in [] if args.profile_only else methods:
            tuning = METHODS[method][0]
            row = {**settings, "method": method}
            for run in args.runs:
                if run == "plain":
                    if tuning not in plain:
                        plain[tuning] = measured(
                            lambda: plain_loop(model, tuning, rows, rows_per_step, args.steps, device)
                        )
                    row["plain"] = {**plain[tuning], "command": command}
                else:
                    every = args.steps + 1 if run == "thresher" else args.checkpoint_every
                    row[run] = {**run_thresher(method, every, f"{method}-{run}"), "command": command}
                save(row)
            print(
                json.dumps(
                    {
                        "method": method,
                        **{
                            k: {m: row[k].get(m) for m in ("steady_tokens_per_s", "wall_s", "error")} for k in args.runs
                        },
                    }
                ),
                flush=True,
            )
        if args.profile or args.profile_only:
            if shutil.which("py-spy") is None:
                profile = {"error": "py-spy is not on PATH (pip install py-spy)"}
            else:
                spy = WorkerProfile(tmp / "profile.json", args.profile_rate)
                run = run_thresher(methods[0], args.steps + 1, "profile")
                profile = {
                    **spy.finish(args.steps),
                    "steady_tokens_per_s": run.get("steady_tokens_per_s"),
                    "load_average": run["load_average"],
                    **({"run_error": run["error"]} if "error" in run else {}),
                }
            save(profile={**settings, "method": methods[0], "command": command, **profile})
            print(json.dumps(profile), flush=True)
    ray.shutdown()
    print(render(stored))


if __name__ == "__main__":
    main()
