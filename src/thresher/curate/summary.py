"""The table printed when a curation run succeeds."""


def summary_table(manifest: dict) -> str:
    counts = manifest["counts"]
    rows = [("stage", "in", "out", "rejected", "top reason")]
    for stage, c in counts["by_stage"].items():
        reasons = manifest.get("rejected_by_reason", {}).get(stage, {})
        top = max(reasons.items(), key=lambda kv: kv[1]) if reasons else None
        rows.append(
            (stage, f"{c['in']:,}", f"{c['out']:,}", f"{c['rejected']:,}", f"{top[0]} ({top[1]:,})" if top else "")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(v.ljust(w) if i in (0, 4) else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    splits = ", ".join(f"{k}: {v:,}" for k, v in counts.get("splits", {}).items())
    lines.append("")
    generated = f" + generated {counts['generated']:,}" if counts.get("generated") else ""
    lines.append(
        f"input {counts['input']:,}{generated} = output {counts['output']:,} + rejected {counts['rejected']:,}"
        f" in {manifest['seconds']:.1f}s" + (f"  [{splits}]" if splits else "")
    )
    lines.append(f"output: {manifest['output']}  (manifest.json, report.html, data/, rejects/)")
    return "\n".join(lines)
