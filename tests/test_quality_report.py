"""The quality section's rule statistics (counts per rule: first failing, failing at all, failing alone; overlaps;
histograms; what-if counts; samples) checked against numbers recomputed here from the ``q_<signal>`` columns of
the same run, on C4 documents and junk made from them, over many read tasks and batches; and the same statistics,
without any column added to the output, from a run in one read task."""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter

import pytest
import xxhash

from testkit.runs import assert_accounting, read_dir
from tests.samples import c4_docs
from thresher.curate.config import parse_config
from thresher.curate.filters.presets import SIGNALS, C4Config, FineWebConfig, GopherConfig, expand
from thresher.curate.runner import run

CONFIGS = {"gopher": GopherConfig(), "c4": C4Config(), "fineweb": FineWebConfig()}
KIND_EDGES = {  # the histograms' bins per signal kind, before the rule's threshold is added
    "fraction": [i / 20 for i in range(21)] + [math.inf],
    "count": [0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 100_000, math.inf],
    "length": list(range(21)) + [math.inf],
    "flag": [0, 0.5, math.inf],
}


def corpus() -> list[str]:
    """120 C4 documents and 120 junk documents made from them (one line without end marks, menus of short lines,
    repeated lines, cut-offs)."""
    docs = [d["text"] for d in c4_docs(120)]
    rng = random.Random(7)
    junk = []
    for i, d in enumerate(docs):
        lines = [s.strip() for s in d.replace(". ", ".\n").splitlines() if s.strip()]
        junk.append(
            [
                " ".join(line.rstrip(".!?") for line in lines),
                "\n".join(w for line in lines for w in line.split()[:3]),
                "\n".join(lines[:3] * 4),
                d[:200],
            ][i % 4]
        )
    texts = docs + junk
    rng.shuffle(texts)
    return texts


def rules() -> list[tuple[str, str, str, float]]:
    """(reason, signal, bound, threshold) of the default presets' enabled rules, in the order they run."""
    out = []
    for preset in expand(["gopher", "c4", "fineweb"]):
        for rule in preset.rules:
            threshold = getattr(CONFIGS[preset.section], rule.option)
            if threshold is not None and threshold is not False:
                out.append((f"{preset.section}.{rule.option}", rule.signal, rule.bound, threshold))
    return out


def fails(bound: str, value: float, threshold) -> bool:
    if value is None or math.isnan(value):
        return False
    return value < threshold if bound == "min" else value > threshold if bound == "max" else value > 0


def edges_of(signal: str, bound: str, threshold) -> list[float]:
    edges = KIND_EDGES[SIGNALS[signal].kind]
    return edges if bound == "flag" or threshold in edges else sorted(edges + [threshold])


def bin_of(value: float, edges: list[float], bound: str) -> int:
    """[lo, hi) bins; (lo, hi] for max rules (the first one closed)."""
    inner = edges[1:-1]
    return sum(e < value for e in inner) if bound == "max" else sum(e <= value for e in inner)


def curate(tmp_path, name: str, texts: list[str], quality: dict, **input_opts) -> tuple[dict, dict, object]:
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i:03d}", "text": t}) + "\n" for i, t in enumerate(texts)))
    assert src.stat().st_size > 5 * input_opts.get("block_bytes", 0)  # with block_bytes: more than 5 read tasks
    out = tmp_path / name
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(src)], **input_opts},
                "output": {"path": str(out)},
                "execution": {"batch_size": 32},
                "stages": [{"quality": quality}],
            }
        )
    )
    assert_accounting(manifest, out)
    return manifest, json.loads((out / "report.json").read_text())["quality"], out


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality_report")
    texts = corpus()
    many = curate(tmp, "many", texts, {"signals": True}, block_bytes=20_000)
    one = curate(tmp, "one", texts, {})
    return texts, many, one


def test_rule_statistics_match_a_recount(runs):
    texts, (manifest, section, out), _ = runs
    assert manifest["counts"]["input"] == len(texts) and len(list((out / "data").glob("*.parquet"))) >= 1
    kept = read_dir(out / "data").to_pylist()
    rejected = [r for r in read_dir(out / "rejects").to_pylist() if r["stage"] == "quality"]
    enabled = rules()
    failed_by_doc = []
    for record in kept + rejected:
        failed_by_doc.append([reason for reason, signal, bound, t in enabled if fails(bound, record[f"q_{signal}"], t)])
    for record, failed in zip(kept + rejected, failed_by_doc):
        if record.get("reason"):
            assert failed[0] == record["reason"]  # the rejects' reason: the first rule failed
    n_kept = len(kept)
    by_rule = {r["rule"]: r for r in section["rules"]}
    assert section["documents"] == len(texts) and section["rejected"] == len(rejected) > 40
    assert section["rejected_by_rule"] == dict(Counter(r["reason"] for r in rejected))

    for reason, signal, bound, t in enabled:
        r = by_rule[reason]
        failing = [i for i, f in enumerate(failed_by_doc) if reason in f]
        alone = [i for i in failing if len(failed_by_doc[i]) == 1]
        assert (r["failed"], r["alone"]) == (len(failing), len(alone)), reason
        assert r["first_failing"] == sum(1 for x in rejected if x["reason"] == reason), reason
        assert r["threshold"] == t and r["bound"] == bound
        edges = edges_of(signal, bound, float(t))
        assert r["histogram"]["bin_lower_edges"] == edges[:-1]
        for part, rows in (("kept", kept), ("rejected", rejected)):
            counts = [0] * (len(edges) - 1)
            for record in rows:
                v = record[f"q_{signal}"]
                if v is not None and not math.isnan(v):
                    counts[bin_of(v, edges, bound)] += 1
            assert r["histogram"][part] == counts, (reason, part)
        # what if: the documents kept with the threshold moved to the neighbouring edges, recounted exactly
        w = r["what_if"]
        if bound == "flag":
            assert w is None
            continue
        k = edges.index(float(t))
        others_pass = [i for i, f in enumerate(failed_by_doc) if not set(f) - {reason}]
        value = [(kept + rejected)[i][f"q_{signal}"] for i in range(len(failed_by_doc))]
        looser = edges[k - 1] if bound == "min" else (edges[k + 1] if not math.isinf(edges[k + 1]) else None)
        assert w["looser"]["threshold"] == looser
        assert w["looser"]["kept_more"] == sum(
            1
            for i in others_pass
            if fails(bound, value[i], t) and not fails(bound, value[i], math.inf if looser is None else looser)
        )
        tighter = edges[k + 1] if bound == "min" else (edges[k - 1] if k > 1 else None)
        if tighter is None:
            assert "tighter" not in w
        else:
            assert w["tighter"]["threshold"] == tighter
            assert w["tighter"]["kept_fewer"] == sum(1 for i in range(n_kept) if fails(bound, value[i], tighter))
        # the sample: the failing documents with the smallest hashes of their text
        expected = sorted(
            (xxhash.xxh64_intdigest((kept + rejected)[i]["text"].encode()), (kept + rejected)[i]["text"][:300])
            for i in failing
        )[:5]
        assert [s["text"] for s in r["samples"]] == [text for _, text in expected], reason

    combos = Counter(" & ".join(f) for f in failed_by_doc if f)
    top = sorted(combos.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [(" & ".join(o["rules"]), o["documents"]) for o in section["overlaps"]] == top


def test_statistics_without_output_columns_and_whatever_the_tasks(runs):
    _, (_, many, _), (_, one, out) = runs
    columns = set(read_dir(out / "data").column_names) | set(read_dir(out / "rejects").column_names)
    assert not [c for c in columns if c.startswith(("q_", "_"))]
    assert one["rules"] == many["rules"] and one["overlaps"] == many["overlaps"]
    assert "signals" in many and "signals" not in one and "would_reject" not in one  # absent, never {}
    html = (out / "report.html").read_text()
    assert "kept if looser" in html and "Rules failed together" in html


def test_c4_sentence_rejections_say_what_the_line_filters_dropped(runs):
    _, (_, _, out), _ = runs
    rejects = [r for r in read_dir(out / "rejects").to_pylist() if r["reason"] == "c4.min_sentences"]
    assert rejects
    for r in rejects:
        assert re.fullmatch(
            r"c4_sentences=\d+ < 3 after C4's line filters dropped \d+ of \d+ lines"
            r"(: \d+ [a-z0-9 '.-]+(, \d+ [a-z0-9 '.-]+)*)? \(lang=en\)",
            r["detail"],
        ), r["detail"]
    assert any(re.search(r"dropped (\d+) of \1 lines: \1 without end punctuation", r["detail"]) for r in rejects)
