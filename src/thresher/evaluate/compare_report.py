"""``compare.html`` (self-contained: inline CSS, no scripts) and the Markdown table of ``thresher compare``: one row
per variant, eval metrics with their bootstrap 95% intervals, and per metric each variant's paired test against the
base (the first variant): the difference with its 95% interval, the p-value (exact McNemar for exact_match and
accuracy, paired bootstrap for the others) and the verdict, "within noise" when not significant."""

from __future__ import annotations

import html

from thresher.evaluate.eval_report import CSS

MIB = 1 << 20


def num(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _metric(m: dict) -> str:
    if m["value"] is None:
        return "-"
    return f"{num(m['value'])} [{num(m['ci95'][0])}, {num(m['ci95'][1])}]"


def paired_cell(paired: dict | None, metric: str) -> str:
    """A variant's paired test of ``metric`` against the base, as text ("base" for the base)."""
    if paired is None:
        return "base"
    t = paired.get(metric)
    if t is None or t["difference"] is None:
        return "-"
    sign = "+" if t["difference"] >= 0 else ""
    test = "McNemar" if t["test"] == "mcnemar_exact" else "bootstrap"
    return (
        f"{sign}{num(t['difference'], 3)} [{num(t['ci95'][0], 3)}, {num(t['ci95'][1], 3)}], "
        f"p={num(t['p_value'], 2)} ({test}): {t['verdict']}"
    )


def _validation(train: dict) -> str:
    best = train.get("best")
    text = num(train["eval_loss"])
    if best and best["step"] != train["steps"]:
        text += f" (best {best['metric']} {num(best['value'])} at step {best['step']})"
    if train.get("stopped_early"):
        text += ", stopped early"
    return text


def table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table, as text."""
    metrics = list(result["variants"][0]["eval"]["metrics"])
    base = result.get("base") or result["variants"][0]["name"]
    paired = len(result["variants"]) > 1 and "paired" in result["variants"][0]
    header = (
        ["variant", "method", "steps", "validation loss"]
        + [f"{m} [95% CI]" for m in metrics]
        + ([f"{m} vs {base} [95% CI], p" for m in metrics] if paired else [])
        + ["train wall s", "eval wall s", "tokens/s", "trainable params", "peak memory MiB", "saved MiB", "run"]
    )
    curated = any(v.get("curation") for v in result["variants"])
    if curated:  # compare's curate: what each variant's curation kept and cost (runs shared with others in full)
        header[2:2] = ["records kept", "tokens trained", "curation s"]
    rows = []
    for v in result["variants"]:
        t = v["train"]
        c = v.get("curation")
        curation = (
            [
                f"{c['records']:,} of {c['input']:,}",
                f"{t['tokens']:,}" if t.get("tokens") else "-",
                f"{c['seconds']:.0f}" + (f" ({sum(r['reused'] for r in c['runs'])} of {len(c['runs'])} runs reused)"),
            ]
            if c
            else ["-"] * 3
        )
        rows.append(
            [v["name"], v["method"]]
            + (curation if curated else [])
            + [str(t["steps"]), _validation(t)]
            + [_metric(v["eval"]["metrics"][m]) for m in metrics]
            + ([paired_cell(v["paired"], m) for m in metrics] if paired else [])
            + [
                f"{t['wall_seconds']:.0f}",
                f"{v['eval']['wall_seconds']:.0f}",
                num(t["tokens_per_s"], 3),
                f"{t['trainable_params']:,}",
                f"{t['peak_memory_bytes'] / MIB:,.0f}",
                f"{t['saved_bytes'] / MIB:,.1f}",
                "complete, not retrained" if v["skipped"] else "trained",
            ]
        )
    return header, rows


def _caption(result: dict) -> str:
    return (
        f"Base model {result['model']['name_or_path']}"
        + (f" ({result['model']['gguf_file']})" if result["model"].get("gguf_file") else "")
        + f"; eval data {result['eval_data']} ({result['eval_rows']} rows); {result['schedule']}; "
        f"{result['seconds']:.0f} s in all; {result['cpus']} CPUs, load average "
        + ", ".join(f"{x:.2f}" for x in result["load_average"])
        + (
            "; validation loss is on each variant's own validation split (curation variants split differently: "
            "compare them on the eval data's metrics)"
            if any(v.get("curation") for v in result["variants"])
            else ""
        )
    )


def markdown_table(header: list[str], rows: list[list[str]], caption: str) -> str:
    """A Markdown table and its caption (the console's and results' form of a compare or tune table)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n\n" + caption + "\n"


def html_page(title: str, header: list[str], rows: list[list[str]], caption: str, after: str = "") -> str:
    """A self-contained page: ``title``, ``caption``, the table, then ``after`` (trusted HTML)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{CSS}"
        f"</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(caption)}</p>"
        f"<table><tr>{head}</tr>{body}</table>{after}</body></html>"
    )


def render_markdown(result: dict) -> str:
    return markdown_table(*table(result), _caption(result))


def render_html(result: dict) -> str:
    return html_page("thresher compare", *table(result), _caption(result))
