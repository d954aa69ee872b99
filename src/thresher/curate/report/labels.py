"""Annotator agreement and consensus from the ``labels`` stage (the manifest's ``metrics.labels``)."""

from __future__ import annotations

from thresher.core.charts import bar_chart
from thresher.curate.report import Section, table_html

SHOWN_PAIRS = 20
SHOWN_ANNOTATORS = 20


class _StageMetrics(Section):
    """A section showing the manifest's ``metrics.<stage>`` (what the stage that declares it reduced on the
    workers)."""

    def summarize(self, collected, manifest):
        return self.stage_metrics(manifest)


class Labels(_StageMetrics):
    name = "labels"
    title = "Labels: agreement and consensus"
    order = 60

    def html(self, summary):
        classes = summary["classes"]
        consensus = summary["consensus"]
        alpha = summary["krippendorff_alpha_by_level"]
        rows = [
            ["items", summary["items"]],
            ["annotations", summary["annotations"]],
            ["items with two or more annotations", summary["pairable_items"]],
            ["percent agreement (pairs)", summary["percent_agreement"]],
            ["unanimous items", summary["unanimous_fraction"]],
            ["Fleiss' kappa", summary["fleiss_kappa"]],
            *[[f"Krippendorff's alpha ({level})", value] for level, value in alpha.items()],
        ]
        if "cohen_kappa_mean" in summary:
            rows.append(["Cohen's kappa, mean over annotator pairs", summary["cohen_kappa_mean"]])
        out = table_html(["agreement", "value"], [[k, "-" if v is None else v] for k, v in rows])
        out += "<h3>Per class</h3>" + table_html(
            ["class", "pairable values", "specific agreement", "alpha (class vs rest)", "consensus labels"],
            [
                [c, s["values"], _dash(s["specific_agreement"]), _dash(s["alpha"]), consensus["labels"].get(c, 0)]
                for c, s in summary["per_class"].items()
            ],
        )
        out += "<h3>Label confusion between annotators (coincidence matrix)</h3>" + table_html(
            ["", *classes], [[c, *row] for c, row in zip(classes, summary["coincidence"])]
        )
        hist = summary["item_agreement_histogram"]
        out += bar_chart(
            [f"{i / len(hist):.1f}-{(i + 1) / len(hist):.1f}" for i in range(len(hist))],
            hist,
            "items by share of agreeing annotation pairs",
            axis="items",
        )
        if "cohen_kappa_pairs" in summary:
            out += f"<h3>Cohen's kappa per annotator pair (first {SHOWN_PAIRS} by shared items)</h3>" + table_html(
                ["annotators", "shared items", "percent agreement", "Cohen's kappa"],
                [
                    [" / ".join(p["annotators"]), p["items"], _dash(p["percent_agreement"]), _dash(p["cohen_kappa"])]
                    for p in summary["cohen_kappa_pairs"][:SHOWN_PAIRS]
                ],
            )
        review = consensus["review_queue"]
        out += (
            f"<h3>Consensus ({consensus['method']})</h3><p>review queue: <b>{review:,}</b> items in "
            f"<code>data/{consensus['review_split']}/</code> (below {consensus['min_confidence']} confidence, "
            "ties and items without annotations)</p>"
        )
        out += table_html(["status", "items"], [[k, v] for k, v in consensus["status"].items()])
        if "dawid_skene" in summary:
            ds = summary["dawid_skene"]
            out += f"<h3>Per-annotator reliability (Dawid-Skene, {ds['iterations']} EM iterations)</h3>" + table_html(
                [
                    "annotator",
                    "estimated accuracy",
                    *[f"P(given {c} | true {t})" for t in classes for c in classes if c == t],
                ],
                [
                    [a["annotator"], a["accuracy"], *[a["confusion"][i][i] for i in range(len(classes))]]
                    for a in ds["annotators"][:SHOWN_ANNOTATORS]
                ],
            )
        return out


def _dash(value):
    return "-" if value is None else value


class LabelNoise(_StageMetrics):
    name = "label_noise"
    title = "Label noise (confident learning)"
    order = 61

    def html(self, summary):
        if "skipped" in summary:
            return f"<p>not judged: {summary['skipped']}</p>"
        classes = summary["classes"]
        out = table_html(
            ["", "value"],
            [
                ["records judged", summary["judged"]],
                ["likely label issues", summary["issues"]],
                ["issue rate", _dash(summary["issue_rate"])],
                ["out-of-fold accuracy against the given labels", _dash(summary["out_of_fold_accuracy"])],
                ["accuracy of always answering the largest class", _dash(summary["majority_class_accuracy"])],
                ["action", summary["action"]],
                ["training rows", summary["train_rows"]],
            ],
        )
        out += "<h3>Per-class thresholds</h3>" + table_html(
            ["class", "threshold"], [[c, v] for c, v in summary["thresholds"].items()]
        )
        out += "<h3>Confident joint (rows: given label, columns: confident class)</h3>" + table_html(
            ["given \\ confident", *classes], [[c, *row] for c, row in zip(classes, summary["confident_joint"])]
        )
        return out
