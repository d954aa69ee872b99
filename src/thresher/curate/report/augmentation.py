"""Augmentation and class balance.

* Augmentation (records with ``augmentation``, from the ``augment`` stage and rebalance's copies): per method the
  records generated, accepted (written to ``data/``) and rejected (with the stages and reasons), the distribution
  of the word n-gram Jaccard similarity to the source, and side-by-side examples: per method the ``EXAMPLES``
  accepted copies and rejected ones with the smallest id hashes (deterministic, order-independent), the source's
  text from ``_report.augment_source`` (an excerpt the stage passes along; never written).
* Class balance: the ``rebalance`` stage's counts per class before, targeted and after
  (``manifest.metrics.rebalance``).
"""

from __future__ import annotations

import json

import pyarrow.compute as pc
import xxhash

from thresher.core.charts import bar_chart, histogram
from thresher.curate.report import Section, add, table_html
from thresher.curate.stage import REPORT_PREFIX

EXAMPLES = 3
EXCERPT = 400
BINS = 10
SOURCE = REPORT_PREFIX + "augment_source"


def _method(info: dict) -> str:
    return ("rebalance:" if info.get("rebalance") else "") + str(info.get("label") or info.get("method"))


def _text(row: dict, info: dict, text_field: str) -> str:
    fields = info.get("fields") or [text_field]
    return "\n\n".join(str(row.get(f) or "") for f in fields)[:EXCERPT]


class Augmentation(Section):
    name = "augmentation"
    title = "Augmentation"
    order = 55
    hidden_columns = True

    def collect(self, kept, rejected, text_field):
        out: dict = {}
        for table, accepted in [*((t, True) for t in kept.values()), (rejected, False)]:
            if "augmentation" not in table.column_names:
                continue
            generated = table.filter(pc.is_valid(table["augmentation"]))
            for row in generated.to_pylist():
                info = json.loads(row["augmentation"])
                m = out.setdefault(
                    _method(info),
                    {"generated": 0, "accepted": 0, "rejected": {}, "similarity": [0] * BINS, "examples": []},
                )
                m["generated"] += 1
                if accepted:
                    m["accepted"] += 1
                    if info.get("similarity") is not None:
                        m["similarity"][min(BINS - 1, int(info["similarity"] * BINS))] += 1
                else:
                    reason = f"{row['stage']}: {row['reason']}"
                    m["rejected"][reason] = m["rejected"].get(reason, 0) + 1
                m["examples"].append(
                    {
                        "hash": xxhash.xxh64_intdigest(str(row["id"]).encode()),
                        "id": row["id"],
                        "source_id": row.get("augmented_from"),
                        "accepted": accepted,
                        "source": (row.get(SOURCE) or "")[:EXCERPT],
                        "text": _text(row, info, text_field),
                        "similarity": info.get("similarity"),
                        "reason": None if accepted else f"{row['stage']}: {row['reason']}",
                    }
                )
                m["examples"] = _fewest(m["examples"])
        return out or None

    def merge(self, a, b):
        merged = {}
        for method in {**a, **b}:
            x, y = a.get(method), b.get(method)
            if x is None or y is None:
                merged[method] = x or y
                continue
            merged[method] = {
                "generated": x["generated"] + y["generated"],
                "accepted": x["accepted"] + y["accepted"],
                "rejected": add(x["rejected"], y["rejected"]),
                "similarity": [a + b for a, b in zip(x["similarity"], y["similarity"])],
                "examples": _fewest(x["examples"] + y["examples"]),
            }
        return merged

    def summarize(self, collected, manifest):
        if not collected:
            return None
        return {
            "methods": {
                m: {
                    **v,
                    "rejected_total": sum(v["rejected"].values()),
                    "acceptance": round(v["accepted"] / v["generated"], 4) if v["generated"] else None,
                }
                for m, v in sorted(collected.items())
            },
            "similarity_bins": [round(i / BINS, 2) for i in range(BINS + 1)],
        }

    def html(self, summary):
        methods = summary["methods"]
        out = table_html(
            ["method", "generated", "accepted", "rejected", "acceptance"],
            [
                [m, v["generated"], v["accepted"], v["rejected_total"], v["acceptance"] or 0.0]
                for m, v in methods.items()
            ],
        )
        for m, v in methods.items():
            out += f"<h3>{m}</h3>"
            if any(v["similarity"]):
                out += histogram(
                    summary["similarity_bins"],
                    v["similarity"],
                    f"{m}: accepted copies by similarity to their source",
                    x_label="word n-gram Jaccard similarity to the source",
                    y_label="copies",
                )
            if v["rejected"]:
                out += table_html(
                    ["rejected: stage: reason", "records"],
                    sorted(([r, n] for r, n in v["rejected"].items()), key=lambda x: -x[1]),
                )
            out += table_html(
                ["source", "generated", "similarity", "verdict"],
                [
                    [
                        e["source"] or f"(id {e['source_id']})",
                        e["text"],
                        "-" if e["similarity"] is None else e["similarity"],
                        "accepted" if e["accepted"] else e["reason"],
                    ]
                    for e in v["examples"]
                ],
            )
        return out


def _fewest(examples: list[dict]) -> list[dict]:
    """Per verdict (accepted, rejected), the ``EXAMPLES`` with the smallest id hashes."""
    out = []
    for accepted in (True, False):
        out += sorted((e for e in examples if e["accepted"] is accepted), key=lambda e: e["hash"])[:EXAMPLES]
    return out


class ClassBalance(Section):
    name = "rebalance"
    title = "Class balance (rebalance)"
    order = 56

    def summarize(self, collected, manifest):
        return self.stage_metrics(manifest)

    def html(self, summary):
        classes = sorted(summary["before"], key=lambda c: -summary["before"][c])
        out = (
            f"<p>field <code>{summary['field']}</code>, method {summary['method']}"
            + (f"; {summary['capped']:,} copies short of the targets (max_copies)" if summary["capped"] else "")
            + "</p>"
        )
        out += table_html(
            ["class", "before", "target", "after"],
            [
                [
                    c,
                    summary["before"][c],
                    summary["targets"].get(c, summary["before"][c]),
                    summary["after"].get(c, summary["before"][c]),
                ]
                for c in classes
            ],
        )
        out += bar_chart(classes, [summary["before"][c] for c in classes], "before", axis="records")
        out += bar_chart(
            classes, [summary["after"].get(c, 0) for c in classes], "after", color="#5a9a5a", axis="records"
        )
        return out
