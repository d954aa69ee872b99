"""The dataset report (report.json numbers checked against the written Parquet, and the duplicate and label
statistics against brute force, exact and sampled), the HTML report rendered by headless Chromium with its charts,
and the dataset card loaded by Hugging Face ``datasets``."""

from __future__ import annotations

import html
import json
import math
import random
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.samples import c4_docs, sentences
from tests.samples import gsm8k as gsm8k_records
from thresher.core.storage import Storage
from thresher.curate.card import data_files
from thresher.curate.commit import rerender_report
from thresher.curate.config import parse_config
from thresher.curate.report import dataset as dataset_section
from thresher.curate.report.dataset import Dataset
from thresher.curate.runner import run

SPLITS = ("train", "validation", "test")


def gsm8k(n: int) -> list[dict]:
    return [{**r, "steps": str(r["answer"].count("\n"))} for r in gsm8k_records(n)]


@pytest.fixture(scope="module")
def finished_run(ray_local, tmp_path_factory):
    """1,500 GSM8K records, 40 near-duplicate variants and 20 German sentences through langid, dedup_fuzzy, a
    stratified split and the Alpaca format: every report section has something to show."""
    tmp = tmp_path_factory.mktemp("report")
    records = [{**r, **provenance(i)} for i, r in enumerate(gsm8k(1500))]
    records += [{**r, "question": r["question"] + " Explain briefly."} for r in records[:40]]
    german = sentences("de", 20)
    records += [{"question": q, "answer": "#### 0", "steps": "0", "source": "web", "date": None} for q in german]
    src = tmp / "gsm8k.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp / "out"
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(src)], "text_field": "question"},
                "output": {"path": str(out)},
                "stages": [
                    {"normalize": {}},
                    {"langid": {"keep": ["en"]}},
                    {"dedup_fuzzy": {}},
                    {"split": {"stratify": "steps"}},
                    {"format": {"template": "alpaca", "mapping": {"instruction": "question", "output": "answer"}}},
                ],
                "report": {"representation": {"fields": ["source", "year(date)"], "targets": {"source": TARGET}}},
            }
        )
    )
    return manifest, out


TARGET = {"web": 0.34, "forum": 0.33, "book": 0.33}


def provenance(i: int) -> dict:
    """A record's source (half web, 3 in 10 forum, 2 in 10 book: web well above its target share of 34%, book
    below 33%, forum near it) and date (years 2019 to 2022, one in 7 without a date)."""
    source = "web" if i % 10 < 5 else "forum" if i % 10 < 8 else "book"
    return {"source": source, "date": None if i % 7 == 0 else f"{2019 + i % 4}-0{1 + i % 9}-15"}


def test_dataset_metrics(finished_run):
    manifest, out = finished_run
    assert manifest["counts"]["by_stage"]["langid"]["rejected"] >= 18
    assert manifest["counts"]["by_stage"]["dedup_fuzzy"]["rejected"] >= 38
    report = json.loads((out / "report.json").read_text())
    assert {"funnel", "dataset", "lengths", "languages", "duplicates"} <= set(report)
    splits = report["dataset"]["splits"]
    assert list(splits) == list(SPLITS)
    frames = {name: pq.read_table(out / "data" / name).to_pandas() for name in SPLITS}
    for name, df in frames.items():
        s = splits[name]
        content = df["instruction"] + df["input"] + df["output"]
        tokens = sum(len(re.findall(r"\S+", t)) for col in ("instruction", "input", "output") for t in df[col])
        assert s["records"] == len(df) == manifest["counts"]["splits"][name]
        assert s["chars"] == content.str.len().sum() and s["estimated_tokens"] == round(s["chars"] / 4)
        assert s["whitespace_tokens"] == tokens
        assert sum(s["token_histogram"]["counts"].values()) == len(df)
        assert s["completeness"]["input"] == {"null": 0, "empty": len(df)}  # GSM8K has no input
        assert s["completeness"]["instruction"] == {"null": 0, "empty": 0}
        lex = s["lexical_diversity"]
        assert lex["windows"] >= 10 and 0.1 < lex["distinct_1"] < lex["distinct_2"] <= 1 and 0.3 < lex["ttr"] <= 1
        assert lex["sampled_docs"] == sum(
            lexical_sample_size(pq.read_table(f).to_pandas()) for f in (out / "data" / name).glob("*.parquet")
        )
        assert s["duplicates"] == {
            "exact": True,
            "sampled_contents": len(df),
            "duplicate_rate": 0.0,
            "in_other_splits_rate": 0.0,
        }

    balance = report["dataset"]["label_balance"]
    assert list(balance["fields"]) == ["steps"] and balance["fields"]["steps"]["stratified"]
    assert "dup_cluster" not in balance["fields"]  # one value per record: not a label
    steps = balance["fields"]["steps"]
    for name in (*SPLITS, "all"):
        df = pd_concat(frames.values()) if name == "all" else frames[name]
        counts = df["steps"].value_counts().to_dict()
        b = steps["splits"][name]
        assert {k: v for k, v in b["counts"].items() if v} == counts
        p = [n / sum(counts.values()) for n in counts.values()]
        assert b["entropy_bits"] == pytest.approx(-sum(x * math.log2(x) for x in p))
        present = list(b["counts"].values())
        assert b["imbalance_ratio"] == (max(present) / min(present) if min(present) else None)

    # representation of the configured fields, counted here from the written files
    kept = pd_concat(frames.values())
    rep = report["dataset"]["representation"]
    source = rep["fields"]["source"]
    counts = kept["source"].value_counts().to_dict()
    assert source["counts"] == counts and list(source["counts"]) == ["web", "forum", "book"]
    assert source["records"] == len(kept) and source["shares"]["web"] == pytest.approx(counts["web"] / len(kept))
    for name in SPLITS:
        assert source["splits"][name] == {v: int((frames[name]["source"] == v).sum()) for v in counts}
    difference = {v: counts[v] / len(kept) - TARGET[v] for v in TARGET}
    assert source["difference"] == pytest.approx(difference) and source["target"] == TARGET
    assert source["total_variation"] == pytest.approx(sum(abs(d) for d in difference.values()) / 2)
    assert source["skews"] == [v for v in counts if abs(difference[v]) > 0.1] == ["web", "book"]
    years = rep["fields"]["year(date)"]
    expected = kept["date"].fillna("").str[:4].replace("", "(missing)").value_counts().to_dict()
    assert years["counts"] == expected and years["target"] is None and years["skews"] == []
    assert rep["skipped"] == {}

    # `thresher report` recomputes the same numbers from the Parquet files
    again = rerender_report(str(out), Storage())
    assert again["dataset"] == report["dataset"]


def lexical_sample_size(df) -> int:
    """Records of one written file (one write task) in the lexical diversity sample: in ascending xxh64(id) order
    until their whitespace tokens reach ``SAMPLE_TOKENS``."""
    import xxhash

    words = {
        rid: sum(len(re.findall(r"\S+", t)) for t in (i, x, o))
        for rid, i, x, o in zip(df["id"], df["instruction"], df["input"], df["output"])
    }
    total = taken = 0
    for rid in sorted(words, key=lambda r: xxhash.xxh64_intdigest(r.encode())):
        if total >= dataset_section.SAMPLE_TOKENS:
            break
        total += words[rid]
        taken += 1
    return taken


def test_token_counts_and_hashes_match_their_definitions():
    """The compiled counters against RE2's ``\\S+`` (ASCII whitespace only: ``\\v`` and Unicode spaces are word
    characters) and ``utf8_length``, and the compiled hashes against xxh64 of the joined contents, on hostile
    strings (nulls, empties, slices, chunks, thousands of strings)."""
    import pyarrow.compute as pc
    import xxhash

    from thresher.curate.report.arrays import string_stats

    rng = random.Random(7)
    alphabet = ["a", "b", " ", "\t", "\n", "\v", "\f", "\r", "é", "\u00a0", "\u2003", "字", "😀"]
    values = [
        None if rng.random() < 0.05 else "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        for _ in range(3 * 1024 + 5)
    ]
    strings = pa.array(values, pa.string())
    for arr in (
        strings,
        strings.slice(7, 2000),
        strings.slice(0, 0),
        pa.array(["", " ", ""]),
        pa.array([None, None], pa.string()),
        pa.array(["a b", None, " c"], pa.large_string()),
        pa.chunked_array([strings.slice(0, 100), strings.slice(5, 50)]),
    ):
        stats = string_stats(arr)
        assert stats.tokens.tolist() == pc.count_substring_regex(arr, r"\S+").fill_null(0).to_pylist()
        assert stats.chars.tolist() == pc.utf8_length(arr).fill_null(0).to_pylist()
        assert stats.hashes.tolist() == [xxhash.xxh64_intdigest((v or "").encode()) for v in arr.to_pylist()]

    def joined(table, columns):
        rows = [
            [m["content"] for m in r["messages"] or []] if columns == ["messages"] else [r[c] for c in columns]
            for r in table.to_pylist()
        ]
        return [xxhash.xxh64_intdigest("\x1f".join(s or "" for s in row).encode()) for row in rows]

    texts = pa.table({"text": values})
    alpaca = pa.table({"instruction": values[:50], "input": values[50:100], "output": values[100:150]})
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    chat = pa.table(
        {
            "messages": pa.array(
                [
                    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}],
                    [],
                    None,
                    [{"role": "user", "content": "é"}],
                ],
                pa.list_(message),
            )
        }
    )
    for table, columns in (
        (texts, ["text"]),
        (texts.slice(3, 100), ["text"]),
        (alpaca, ["instruction", "input", "output"]),
        (chat, ["messages"]),
    ):
        assert dataset_section.content_hashes(table, columns).tolist() == joined(table, columns)


def pd_concat(frames):
    import pandas as pd

    return pd.concat(list(frames))


def test_duplicate_and_label_statistics_exact_and_sampled(monkeypatch):
    """Exact content duplicates within a split and across splits, against brute force: exact below
    ``SAMPLE_CONTENTS`` distinct contents, estimated above it; write tasks' partial results merge in any order."""
    rng = random.Random(3)
    records = [
        {
            "id": f"r{i}",
            "question": r["question"],
            "answer": r["answer"],
            "steps": r["steps"],
            "label": rng.choice([True, False, None]),
            "lang_hint": rng.choice(["en", "de", "fr"]),
        }
        for i, r in enumerate(gsm8k(1500))
    ]
    for i in range(400):  # copies, some of the same record
        records.append({**records[rng.randrange(1500)], "id": f"copy{i}"})
        if i % 4 == 0:
            records.append({**records[-1], "id": f"copy{i}b"})
    where = {r["id"]: ("train" if rng.random() < 0.7 else "test") for r in records}

    def truth(split: str) -> tuple[float, float]:
        mine = Counter(r["question"] + r["answer"] for r in records if where[r["id"]] == split)
        other = {r["question"] + r["answer"] for r in records if where[r["id"]] != split}
        n = sum(mine.values())
        return 1 - len(mine) / n, sum(k for c, k in mine.items() if c in other) / n

    def stats(parts: int) -> dict:
        section = Dataset()
        merged = None
        chunks = [records[i::parts] for i in range(parts)]
        for chunk in reversed(chunks):
            kept = {
                f"data/{s}": pa.Table.from_pylist(
                    [
                        {
                            "id": r["id"],
                            "instruction": r["question"],
                            "input": "",
                            "output": r["answer"],
                            "steps": r["steps"],
                            "label": r["label"],
                            "lang_hint": r["lang_hint"],
                        }
                        for r in chunk
                        if where[r["id"]] == s
                    ]
                )
                for s in ("train", "test")
            }
            merged = section.merge(merged, section.collect(kept, pa.table({}), "question"))
        summary = section.summarize(
            merged, {"config": {"stages": [{"split": {"ratios": {"train": 0.7, "test": 0.3}}}]}}
        )
        return {
            "splits": {s: {"duplicates": v["duplicates"]} for s, v in summary["splits"].items()},
            "label_balance": summary["label_balance"],
        }

    exact = stats(4)
    assert exact == stats(1)
    for split in ("train", "test"):
        dup, shared = truth(split)
        d = exact["splits"][split]["duplicates"]
        assert (
            d["exact"]
            and d["duplicate_rate"] == pytest.approx(dup)
            and d["in_other_splits_rate"] == pytest.approx(shared)
        )
        assert 0.02 < dup and 0.05 < shared
    # a field named like a label is one; metadata with few values (lang_hint) and fields not named in the config
    # (steps, which no split stratifies here) are not
    assert list(exact["label_balance"]["fields"]) == ["label"]
    label = exact["label_balance"]["fields"]["label"]
    assert label["classes"] == ["", "false", "true"] and not label["stratified"]
    assert label["splits"]["all"]["counts"] == {
        "": sum(r["label"] is None for r in records),
        "false": sum(r["label"] is False for r in records),
        "true": sum(r["label"] is True for r in records),
    }

    monkeypatch.setattr(dataset_section, "SAMPLE_CONTENTS", 600)
    sampled = stats(4)
    assert sampled == stats(3)  # the same sample whatever the write tasks
    for split in ("train", "test"):
        dup, shared = truth(split)
        d = sampled["splits"][split]["duplicates"]
        assert not d["exact"] and 100 < d["sampled_contents"] < 600
        assert abs(d["duplicate_rate"] - dup) < 0.05 and abs(d["in_other_splits_rate"] - shared) < 0.05


def test_representation_counts_merge_over_write_tasks_and_skip_what_they_cannot_count():
    """Representation from the section's own collect and merge (no Ray): counts of a string field and of the years
    of a date-typed column, per split and overall, against brute force; a field with too many values, or none, is
    listed as skipped, never dropped silently; a config without fields adds nothing."""
    import datetime

    rng = random.Random(5)
    records = [
        {
            "id": f"r{i}",
            "text": f"record {i}",
            "lang": rng.choice(["en", "en", "en", "de", None]),
            "when": datetime.date(rng.choice([2001, 2002, 2003]), 1 + i % 12, 1),
            "serial": str(i),
        }
        for i in range(600)
    ]
    where = {r["id"]: rng.choice(["train", "test"]) for r in records}
    section = Dataset()
    merged = None
    for part in range(3):
        chunk = records[part::3]
        kept = {f"data/{s}": pa.Table.from_pylist([r for r in chunk if where[r["id"]] == s]) for s in ("train", "test")}
        merged = section.merge(merged, section.collect(kept, pa.table({}), "text"))
    config = {
        "fields": ["lang", "year(when)", "serial", "topic"],
        "targets": {"lang": {"en": 0.5, "de": 0.5}},
        "tolerance": 0.2,
    }
    manifest = {
        "config": {"stages": [{"split": {"ratios": {"train": 0.5, "test": 0.5}}}], "report": {"representation": config}}
    }
    rep = section.summarize(merged, manifest)["representation"]
    lang = rep["fields"]["lang"]
    truth = Counter("(missing)" if r["lang"] is None else r["lang"] for r in records)
    assert lang["counts"] == dict(sorted(truth.items(), key=lambda kv: (-kv[1], kv[0])))
    assert lang["splits"]["test"] == {
        v: sum(1 for r in records if where[r["id"]] == "test" and (r["lang"] or "(missing)") == v) for v in truth
    }
    assert lang["target"] == {"en": 0.5, "de": 0.5, "(missing)": 0.0}
    share = {v: n / 600 for v, n in truth.items()}
    assert lang["skews"] == [v for v in lang["counts"] if abs(share[v] - lang["target"][v]) > 0.2]
    assert "de" in lang["skews"] and "en" not in lang["skews"]  # about 60% and 20% against 50% and 50%
    years = rep["fields"]["year(when)"]
    assert years["counts"] == dict(Counter(str(r["when"].year) for r in records).most_common())
    assert set(rep["skipped"]) == {"serial", "topic"} and "more than 50 values" in rep["skipped"]["serial"]
    manifest["config"]["report"] = {"representation": {"fields": []}}
    assert "representation" not in section.summarize(merged, manifest)


@pytest.mark.parametrize(
    "report, key",
    [
        ({"representation": {"field": ["lang"]}}, "report.representation.field: unknown key"),
        ({"representation": {"fields": ["lang"], "targets": {"src": {"a": 1}}}}, "targets.src: not among the fields"),
        ({"representation": {"fields": ["lang"], "targets": {"lang": {"en": 0.7}}}}, "targets.lang: the shares must"),
        (
            {"representation": {"fields": ["lang"], "targets": {"lang": {"en": float("nan"), "de": 1}}}},
            "report.representation.targets.lang.en: Input should be a finite number",
        ),
        ({"representation": {"fields": ["lang"], "tolerance": 0}}, "report.representation.tolerance"),
        ({"representations": ["lang"]}, "report.representations: unknown key"),
    ],
)
def test_representation_config_errors_name_the_key(report, key):
    from thresher.core.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_config({"input": {"paths": ["in.jsonl"]}, "output": {"path": "out"}, "report": report})
    cfg = parse_config(
        {"input": {"paths": ["in.jsonl"]}, "output": {"path": "out"}, "report": {"representation": ["a"]}}
    )
    assert cfg.report.representation.fields == ["a"]  # a list: the fields


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.skip("no headless Chromium (Debian: apt-get install -y chromium); the HTML report is not rendered")


def _headless(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


# Appended to a copy of the report (which itself has no script): after layout, count the charts that were drawn.
PROBE = """<script>
const charts = [...document.querySelectorAll('svg.chart')];
const drawn = charts.filter(s => { const r = s.getBoundingClientRect(); return r.width > 100 && r.height > 20
  && s.querySelectorAll('rect').length > 0; });
document.body.setAttribute('data-charts', charts.length);
document.body.setAttribute('data-drawn', drawn.length);
document.body.setAttribute('data-sections', [...document.querySelectorAll('section')].map(s => s.id).join(','));
</script>"""


def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    _, out = finished_run
    page = (out / "report.html").read_text()
    # self-contained: no scripts, stylesheets or anything fetched (the SVG namespace URI is only a name; links
    # within the page are anchors)
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(?:src|href|url)\s*[=(]\s*(?!["']?#)""", page)
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = _headless(tmp_path, "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r'<body data-charts="(\d+)" data-drawn="(\d+)" data-sections="([^"]*)"', dom.stdout)
    assert body, dom.stdout[:500]
    charts, drawn, sections = int(body.group(1)), int(body.group(2)), body.group(3).split(",")
    assert {"funnel", "dataset", "lengths", "languages", "duplicates"} <= set(sections)
    # dataset: 2 size bars, distinct-2, 4 label-balance bars (3 splits + all); lengths: kept, rejected and 3 splits
    assert charts >= 16 and drawn == charts

    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body></body></html>")
    shots = {}
    for name, uri in (("report", (out / "report.html").as_uri()), ("blank", blank.as_uri())):
        shots[name] = tmp_path / f"{name}.png"
        r = _headless(tmp_path, f"--screenshot={shots[name]}", "--window-size=1200,2400", uri)
        assert r.returncode == 0 and shots[name].exists(), r.stderr[-2000:]
    assert shots["report"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shots["report"].stat().st_size > 10 * shots["blank"].stat().st_size  # text and charts, not a blank page


# Appended to a copy of a report: after layout, every text box that leaves its chart or overlaps another text of the
# chart, every table cell whose content is wider than the cell, and the page's own horizontal overflow.
OVERFLOW_PROBE = """<script>
const found = [];
const near = (a, b) => a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1;
for (const svg of document.querySelectorAll('svg.chart')) {
  const box = svg.getBoundingClientRect();
  const texts = [...svg.querySelectorAll('text')].filter(t => t.textContent.trim());
  const rects = texts.map(t => t.getBoundingClientRect());
  texts.forEach((t, i) => {
    const r = rects[i];
    if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1)
      found.push('outside its chart: ' + t.textContent);
    for (let j = 0; j < i; j++) if (near(r, rects[j])) found.push('overlaps ' + texts[j].textContent + ': ' + t.textContent);
  });
}
for (const cell of document.querySelectorAll('td, th'))
  if (cell.scrollWidth > cell.clientWidth + 1) found.push('cut in its cell: ' + cell.textContent);
const page = document.documentElement;
if (page.scrollWidth > page.clientWidth + 1) found.push('page wider than the window: ' + page.scrollWidth);
document.body.setAttribute('data-overflow', JSON.stringify(found));
document.body.setAttribute('data-texts', document.querySelectorAll('svg.chart text').length);
</script>"""


def overflowing_labels(page: str, tmp: Path, width: int) -> tuple[list[str], int]:
    """The probe's findings on ``page`` laid out in a ``width``-pixel window, and the number of chart texts."""
    probe = tmp / f"overflow-{width}.html"
    probe.write_text(page.replace("</body>", OVERFLOW_PROBE + "</body>"))
    dom = _headless(tmp, f"--window-size={width},1200", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'data-overflow="([^"]*)" data-texts="(\d+)"', dom.stdout)
    assert found, dom.stdout[:500]
    return json.loads(html.unescape(found.group(1))), int(found.group(2))


@pytest.mark.parametrize("width", [1000, 1600])
def test_report_labels_fit_at_two_widths(finished_run, published_run, width, tmp_path):
    """No chart label or number leaves its chart or overlaps another, no table cell cuts its content, and the page
    does not scroll sideways, at 1000 and 1600 pixels (both reports: the stratified split and the web pipeline
    with quality rules); and the probe does find a label cut by a chart too narrow for it."""
    from thresher.core.charts import bar_chart

    for out in (finished_run[1], published_run[2]):
        found, texts = overflowing_labels((out / "report.html").read_text(), tmp_path, width)
        assert texts > 50 and found == []
    cut = bar_chart(["gopher_repetition.max_dup_10gram_char_frac", "c4.min_sentences"], [25_177_781, 3])
    cut = cut.replace('text-anchor="end"', "")  # labels drawn rightwards from their anchor run into the bars
    cut = re.sub(
        r'width="\d+" height="(\d+)" viewBox="0 0 \d+', r'width="300" height="\1" viewBox="0 0 300', cut, count=1
    )
    found, _ = overflowing_labels(f"<!doctype html><html><body>{cut}</body></html>", tmp_path, width)
    assert any(f.startswith("outside its chart: 25,177,781") for f in found), found
    assert any(f.startswith("overlaps") for f in found), found


def test_card_loads_with_datasets(finished_run, tmp_path, monkeypatch):
    manifest, out = finished_run
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    files = front["configs"][0]["data_files"]
    assert front["configs"][0]["config_name"] == "default"
    assert files == [{"split": s, "path": f"data/{s}/*.parquet"} for s in SPLITS]
    assert "## Splits" in card and "## Processing" in card and "## Label balance: `steps` (stratified)" in card
    rep = json.loads((out / "report.json").read_text())["dataset"]["representation"]["fields"]["source"]
    section = card.split("## Representation")[1].split("\n## ")[0]
    for value, target in (("web", "34.0%"), ("book", "33.0%")):
        share = f"{100 * rep['shares'][value]:.1f}%"
        assert (
            f"> **Skew warning**: source = {value}: {share} of the kept records against a target of {target}" in section
        )
    assert "source = forum" not in section and "### `year(date)`" in section

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    cache = str(tmp_path / "hf-cache")
    loaded = datasets.load_dataset(
        "parquet", data_files={f["split"]: str(out / f["path"]) for f in files}, cache_dir=cache
    )
    assert {s: loaded[s].num_rows for s in SPLITS} == manifest["counts"]["splits"]
    assert {"instruction", "input", "output"} <= set(loaded["train"].column_names)
    by_card = datasets.load_dataset(str(out), cache_dir=cache)  # reads the README's configs
    assert {s: by_card[s].num_rows for s in SPLITS} == manifest["counts"]["splits"]


def test_card_without_split_stage():
    manifest = {"counts": {"splits": {"all": 10}}, "config": {"stages": [{"normalize": {}}]}}
    assert data_files(manifest) == [{"split": "train", "path": "data/*.parquet"}]
    manifest = {"counts": {"splits": {"fold_1": 5, "fold_0": 5}}, "config": {"stages": [{"split": {"folds": 2}}]}}
    assert [f["split"] for f in data_files(manifest)] == ["fold_0", "fold_1"]


def test_damaged_input_lists_the_files_that_lost_the_most():
    """The section lists the manifest's damaged files (the largest losses, with how many there are in all), and is
    left out of a run that lost nothing."""
    from thresher.curate.report import build_report, render_html

    largest = [{"file": f"s3://bucket/part-{i:03d}.jsonl.gz", "rejected_bytes": 5000 - i} for i in range(100)]
    manifest = {
        "counts": {"read_bytes": 10_000_000, "rejected_bytes": 600_000},
        "damaged_input": {"files": 250, "largest": largest},
    }
    report = build_report({}, manifest)
    assert report["damaged_input"] == {
        "read_bytes": 10_000_000,
        "rejected_bytes": 600_000,
        "rejected_fraction": 0.06,
        "files": 250,
        "largest": largest,
    }
    page = render_html(report, manifest)
    assert "250 files lost 600,000 of the 10,000,000 bytes read (6.00%); the 100 that lost the most below" in page
    assert all(f["file"] in page for f in largest) and "4,901" in page
    clean = {"counts": {"read_bytes": 1000, "rejected_bytes": 0}, "damaged_input": {"files": 0, "largest": []}}
    assert "damaged_input" not in build_report({}, clean)


# The Hub's allowed values (huggingface.co/docs/hub/datasets-cards; the hub-docs repository's size and task lists)
HUB_SIZE_CATEGORIES = [
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
    "n>1T",
]
HUB_TASK_CATEGORIES = {
    "text-generation",
    "text-classification",
    "question-answering",
    "summarization",
    "translation",
    "fill-mask",
    "token-classification",
    "sentence-similarity",
}
HUB_TASK_IDS = {"language-modeling", "dialogue-modeling", "masked-language-modeling", "open-domain-qa"}
ADDRESS = re.compile(r"gcs_address|(?:\d{1,3}\.){3}\d{1,3}:\d+|127\.0\.0\.1")


def hub_size(n: int) -> str:
    """The Hub's bucket for ``n`` records: n<1K below 1,000, then one per power of ten."""
    return HUB_SIZE_CATEGORIES[0] if n < 1000 else HUB_SIZE_CATEGORIES[min(int(math.log10(n)) - 2, 10)]


def test_size_categories_are_the_hubs():
    from thresher.curate.card import size_category

    for n in (0, 999, 1000, 9999, 10_000, 123_456, 10**6, 10**9 - 1, 10**12 - 1, 10**12, 10**15):
        assert size_category(n) == hub_size(n), n


@pytest.fixture(scope="module")
def published_run(ray_local, tmp_path_factory):
    """C4 documents (some with an e-mail address, some repeated), and German sentences, read from a folder through
    normalize, pii, langid, quality, dedup_exact and the text format, with a storage endpoint and a licence."""
    tmp = tmp_path_factory.mktemp("published")
    docs = [d["text"] for d in c4_docs(120)]
    docs = [t + f" Write to editor{i}@example.com for details." if i % 10 == 0 else t for i, t in enumerate(docs)]
    docs += docs[:15] + sentences("de", 10)
    (tmp / "web").mkdir()
    (tmp / "web" / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    out = tmp / "out"
    manifest = run(
        parse_config(
            {
                "input": {"paths": [str(tmp / "web")]},
                "output": {"path": str(out), "card": {"license": "odc-by"}},
                "storage": {"endpoint_url": "http://127.0.0.1:9", "region": "us-east-1"},
                "stages": [
                    "normalize",
                    "pii",
                    {"langid": {"keep": ["en"]}},
                    "quality",
                    "dedup_exact",
                    {"format": {"template": "text"}},
                ],
            }
        )
    )
    return manifest, tmp, out


def test_published_files_name_no_local_path_or_address(published_run):
    """Neither the card nor the report names the machine's folders; no published file (the manifest included)
    names a network address (the storage endpoint, Ray's GCS)."""
    _, tmp, out = published_run
    card, page, report = ((out / f).read_text() for f in ("README.md", "report.html", "report.json"))
    for text in (card, page, report):
        assert str(tmp) not in text and "/tmp/" not in text
        assert not ADDRESS.search(text), ADDRESS.search(text)
    manifest_text = (out / "manifest.json").read_text()
    assert not ADDRESS.search(manifest_text), ADDRESS.search(manifest_text)
    assert json.loads(manifest_text)["config"]["storage"] == {"endpoint_url": None, "region": "us-east-1"}
    assert "<title>thresher report: out</title>" in page


def test_card_metadata_validates_for_the_hub(published_run):
    from huggingface_hub import DatasetCard, DatasetCardData

    manifest, _, out = published_run
    text = (out / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    kept = sum(pq.ParquetFile(f).metadata.num_rows for f in (out / "data").glob("*.parquet"))
    assert kept == manifest["counts"]["output"] > 50
    assert front["license"] == "odc-by" and front["language"] == ["en"] and front["pretty_name"] == "out"
    assert front["size_categories"] == [hub_size(kept)]
    assert set(front["task_categories"]) <= HUB_TASK_CATEGORIES and set(front["task_ids"]) <= HUB_TASK_IDS
    assert front["source_datasets"] == ["web"]
    assert front["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}
    ]
    # what the Hub reads of it, offline: the card data round-trips, nothing dropped or renamed
    card = DatasetCard(text)
    assert card.data.to_dict() == DatasetCardData(**front).to_dict() == front

    # every written column described; the placeholders, the thresholds and every counted stage listed
    columns = re.search(r"## Columns\n\n(.*?)(?:\n\n|$)", text, re.S).group(1).splitlines()[2:]
    described = {row.split("|")[1].strip(" `"): row.split("|")[3].strip() for row in columns}
    assert set(described) == set(pq.read_schema(next((out / "data").glob("*.parquet"))).names)
    assert all(described.values()) and described["text"].startswith("the document")
    assert "`[EMAIL]`" in text and "`[PHONE]`" in text
    assert "| `gopher.min_words` | `words` | >= 50 |" in text
    processing = re.search(r"## Processing\n\n(.*?)\n\n## ", text, re.S).group(1)
    staged = [m for m in re.findall(r"^\| \d+ \| `([^`]+)`", processing, re.M)]
    assert staged == [s for s in manifest["counts"]["by_stage"] if s != "read"]
    assert "unique_ids" in staged
