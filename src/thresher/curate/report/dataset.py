"""Dataset metrics per split (``data/<split>/``, or ``all`` without a split stage).

* Content: what a training recipe reads: the ``messages`` contents (chat), ``instruction`` + ``input`` +
  ``output`` (alpaca), else the text field.
* Size: records, characters, whitespace-separated tokens (``\\S+`` runs, exact) and an estimate of model tokens
  as characters / 4 (the usual rule of thumb for English BPE vocabularies; no tokenizer is loaded).
* Lengths: records by whitespace tokens per record.
* Completeness: per column, null values and empty ones (blank strings, empty lists).
* Lexical diversity on a bounded sample: each write task takes, per split, its records in ascending order of id hash
  (XXH64 of the id; ties by content hash: deterministic, order-independent) until their whitespace tokens reach
  ``SAMPLE_TOKENS`` (the record that reaches it included; all records when they have fewer). Their lowercased
  words (Python's ``\\w+``), in that order, are cut into windows of ``WINDOW`` tokens; ``distinct_1``/``distinct_2``
  are the distinct unigrams/bigrams per token in a window, averaged over all windows of all tasks
  (window-standardized, so splits of different sizes compare; a remainder shorter than a window is left out, and
  a split with under ``WINDOW`` sampled words has none). ``ttr`` is the mean type-token ratio of the sampled
  records (a per-document repetition signal).
* Duplicates: exact duplicates of the content (all content columns equal) within each split, and records whose
  content is also in another split (a leak between splits). A record's content hash is XXH64 of its content
  strings' UTF-8 joined by ``\\x1f`` (null as empty). Each write task keeps the ``SAMPLE_CONTENTS`` smallest
  content hashes with their count per split, the driver the smallest of those: a uniform sample of the distinct
  contents whose counts are exact (any task holding one of the overall smallest holds it among its own
  smallest). Up to that many distinct contents the rates are exact; beyond, estimated from the sample
  (duplicate rate = 1 - 1 / mean copies per sampled content).
* Label balance of every label field (one the config names as a label: the split's ``stratify``, ``rebalance``'s
  ``field``, ``label_noise``'s ``label_field``; or one named like a label, ``LABEL_NAME``, such as ``label`` or
  ``label_status``; not metadata such as ``lang_hint``): a string, boolean or integer column other than the id and
  the content, with 2 to ``MAX_CLASSES`` values overall, at least two records each on average (null and empty are
  the class ``""``): classes per split,
  entropy in bits, entropy / log2(classes) and the imbalance ratio (largest class / smallest class; null when a
  class is absent from the split). The split stage's ``stratify`` field comes first (``skipped`` says so when it
  has too many values).
* Representation (``report.representation`` of the config): per field listed (a metadata column, or ``year(FIELD)``
  of a date column: a date or timestamp column, or strings starting with an ISO 8601 date), its values' records
  and shares of all kept records and per split (null and empty as ``(missing)``); with a target distribution
  (``targets``), each value's target share and difference, the total variation distance (half the summed absolute
  differences) and a skew warning for each value further from its target than ``tolerance``. A field with more
  than ``MAX_CLASSES`` values, or that the records lack, is listed in ``skipped`` with the reason.
"""

from __future__ import annotations

import html
import math
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.core.charts import bar_chart
from thresher.core.groups import MISSING, year_field
from thresher.curate.report import Section, add, folded_table, table_html
from thresher.curate.report.arrays import hashes, string_stats, take, utf8
from thresher.curate.stage import REGISTRY, Stage, load_stages

SAMPLE_TOKENS = 16_000
SAMPLE_CONTENTS = 2000
MAX_CLASSES = 50
OVERFLOW = "\x00more"  # a field's class counts: too many classes somewhere
WINDOW = 1000
TOKEN_EDGES = [0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 1e18]
CHARS_PER_TOKEN = 4
SEPARATOR = "\x1f"  # between a record's content strings
_WORD = re.compile(r"\w+")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
LABEL_NAME = re.compile(r"(?:^|_)(?:label|labels|class|category|target|topic|sentiment)(?:_|$)", re.I)


def content_columns(table: pa.Table, text_field: str) -> list[str]:
    names = table.column_names
    if "messages" in names and pa.types.is_list(table.schema.field("messages").type):
        return ["messages"]
    if "instruction" in names and "output" in names:
        return [c for c in ("instruction", "input", "output") if c in names]
    return [text_field] if text_field in names else []


def _strings(table: pa.Table, column: str) -> tuple[pa.Array | pa.ChunkedArray, np.ndarray]:
    """The column's values (message contents for ``messages``) and the row each belongs to (ascending)."""
    if column == "messages":
        chunks, starts = table[column].chunks, np.cumsum([0] + [len(c) for c in table[column].chunks])
        content = table.schema.field(column).type.value_type.field("content").type
        contents = pa.chunked_array([pc.list_flatten(c).field("content") for c in chunks], content)
        rows = [pc.list_parent_indices(c).to_numpy() + start for c, start in zip(chunks, starts)]
        return contents, np.concatenate([np.zeros(0, np.int64), *rows])
    return table[column], np.arange(table.num_rows)


def per_record(table: pa.Table, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each record's whitespace tokens and characters, summed over its content strings."""
    tokens, chars = np.zeros(table.num_rows, np.int64), np.zeros(table.num_rows, np.int64)
    for col in columns:
        strings, rows = _strings(table, col)
        stats = string_stats(strings)
        tokens += np.bincount(rows, weights=stats.tokens, minlength=table.num_rows).astype(np.int64)
        chars += np.bincount(rows, weights=stats.chars, minlength=table.num_rows).astype(np.int64)
    return tokens, chars


def record_contents(table: pa.Table, columns: list[str]) -> pa.Array | pa.ChunkedArray:
    """Each record's content as one string: its content strings joined by ``SEPARATOR`` (null as empty)."""
    if not columns:
        return pa.repeat("", table.num_rows)
    if columns == ["messages"]:
        strings, rows = _strings(table, "messages")
        offsets = np.searchsorted(rows, np.arange(table.num_rows + 1)).astype(np.int32)
        strings = strings.fill_null("").combine_chunks()
        return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), strings), SEPARATOR)
    values = [table[c] if pa.types.is_string(table[c].type) else table[c].cast(pa.string()) for c in columns]
    if len(values) == 1:
        return values[0].fill_null("")
    return pc.binary_join_element_wise(*values, SEPARATOR, null_handling="replace", null_replacement="")


def content_hashes(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Each record's content hash: XXH64 of its ``record_contents``."""
    return hashes(record_contents(table, columns))


def lexical_sample(table: pa.Table, columns: list[str], tokens: np.ndarray, contents: np.ndarray) -> list[str]:
    """The content of the records in ascending (id hash, content hash) order, until their whitespace ``tokens``
    reach ``SAMPLE_TOKENS``."""
    ids = table["id"] if "id" in table.column_names else pa.array(np.arange(table.num_rows)).cast(pa.string())
    id_hashes, n = hashes(ids), 1024
    while True:  # sort only the records with the n smallest id hashes (ties included) until they hold the sample
        k = min(n, len(id_hashes)) - 1
        head = np.flatnonzero(id_hashes <= np.partition(id_hashes, k)[k])
        order = head[np.lexsort((contents[head], id_hashes[head]))]
        total = np.cumsum(tokens[order])
        if total[-1] >= SAMPLE_TOKENS or len(head) == len(id_hashes):
            break
        n *= 4
    taken = int(np.searchsorted(total, SAMPLE_TOKENS)) + 1
    sample = pa.table({c: take(table[c], order[:taken]) for c in columns})
    return record_contents(sample, columns).to_pylist()


def content_sample(split: str, contents: np.ndarray) -> dict[str, dict[str, int]]:
    """The ``SAMPLE_CONTENTS`` smallest content hashes (fixed-width hex) -> {split: records with that content}."""
    distinct, counts = np.unique(contents, return_counts=True)
    return {f"{h:016x}": {split: n} for h, n in zip(distinct[:SAMPLE_CONTENTS].tolist(), counts.tolist())}


def smallest(sample: dict) -> dict:
    return {key: sample[key] for key in sorted(sample)[:SAMPLE_CONTENTS]}


def duplicates(sample: dict[str, dict[str, int]], split: str) -> dict:
    """Exact duplicate and cross-split rates of ``split`` from the merged content sample."""
    mine = {key: per[split] for key, per in sample.items() if per.get(split)}
    records = sum(mine.values())
    shared = sum(n for key, n in mine.items() if len(sample[key]) > 1)
    return {
        "exact": len(sample) < SAMPLE_CONTENTS,
        "sampled_contents": len(mine),
        "duplicate_rate": 1 - len(mine) / records if records else 0.0,
        "in_other_splits_rate": shared / records if records else 0.0,
    }


def categorical(table: pa.Table, skip: set[str]) -> dict[str, dict[str, int]]:
    """Class counts of the columns that may be labels (``OVERFLOW`` marks one with too many classes)."""
    out = {}
    for f in table.schema:
        if (
            f.name in skip
            or f.name.startswith("_")
            or not (
                pa.types.is_string(f.type)
                or pa.types.is_large_string(f.type)
                or pa.types.is_boolean(f.type)
                or pa.types.is_integer(f.type)
            )
        ):
            continue
        col = table[f.name]
        if (
            pc.count_distinct(col.slice(0, 10 * MAX_CLASSES), mode="all").as_py() > MAX_CLASSES
            or pc.count_distinct(col, mode="all").as_py() > MAX_CLASSES
        ):
            out[f.name] = {OVERFLOW: 1}
            continue
        vc = pc.value_counts(col)
        counts: dict[str, int] = {}
        for value, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
            label = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            counts[label] = counts.get(label, 0) + n
        out[f.name] = counts
    return out


def date_years(table: pa.Table) -> dict[str, dict[str, int]]:
    """Records per year of each date column (date or timestamp typed, or strings whose first non-null values start
    with an ISO 8601 date), keyed ``year(COLUMN)``; null (or a string that is no date) counts as ``""``."""
    out = {}
    for f in table.schema:
        col = table[f.name]
        if pa.types.is_date(f.type) or pa.types.is_timestamp(f.type):
            years = pc.cast(pc.year(col), pa.string())
        elif pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            head = [v for v in col.slice(0, 100).to_pylist() if v is not None]
            if not head or not all(ISO_DATE.match(v) for v in head):
                continue
            dated = pc.match_substring_regex(col, ISO_DATE.pattern)
            years = pc.if_else(dated, pc.utf8_slice_codeunits(col, 0, 4), pa.scalar(None, pa.string()))
        else:
            continue
        vc = pc.value_counts(years)
        out[f"year({f.name})"] = {
            ("" if v is None else v): n for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())
        }
    return out


def representation(per_split: dict[str, dict[str, dict[str, int]]], splits: list[str], config: dict) -> dict | None:
    """report.json's ``representation`` of the fields ``config`` (``report.representation``) lists; None when it
    lists none. ``per_split``: per split, the value counts of each field (labels and date years)."""
    fields, targets = config.get("fields") or [], config.get("targets") or {}
    if not fields:
        return None
    tolerance = config.get("tolerance", 0.1)
    out: dict = {"tolerance": tolerance, "fields": {}, "skipped": {}}
    for field in fields:
        counted = [s for s in splits if field in per_split[s]]
        if not counted:
            what = "date field" if year_field(field) else "field"
            out["skipped"][field] = f"no {what} of that name with at most {MAX_CLASSES} values in the kept records"
            continue
        if any(OVERFLOW in per_split[s][field] for s in counted):
            out["skipped"][field] = f"more than {MAX_CLASSES} values"
            continue
        by_split = {s: {(v or MISSING): n for v, n in per_split[s][field].items()} for s in counted}
        total: dict[str, int] = {}
        for per in by_split.values():
            for v, n in per.items():
                total[v] = total.get(v, 0) + n
        target = targets.get(field)
        values = sorted(set(total) | set(target or {}), key=lambda v: (-total.get(v, 0), v))
        records = sum(total.values())
        entry: dict = {
            "records": records,
            "counts": {v: total.get(v, 0) for v in values},
            "shares": {v: total.get(v, 0) / records for v in values},
            "splits": {s: {v: per.get(v, 0) for v in values} for s, per in by_split.items()}
            if len(by_split) > 1
            else {},
            "target": None,
            "difference": None,
            "total_variation": None,
            "skews": [],
        }
        if target:
            diff = {v: entry["shares"][v] - target.get(v, 0.0) for v in values}
            entry.update(
                target={v: target.get(v, 0.0) for v in values},
                difference=diff,
                total_variation=sum(abs(d) for d in diff.values()) / 2,
                skews=[v for v in values if abs(diff[v]) > tolerance],
            )
        out["fields"][field] = entry
    return out


def lexical(texts: list[str]) -> dict:
    docs = [_WORD.findall(t.lower()) for t in texts]
    stream = [w for d in docs for w in d]
    out = {
        "sampled_docs": len(texts),
        "sampled_tokens": len(stream),
        "windows": 0,
        "distinct_1": 0.0,
        "distinct_2": 0.0,
        "ttr_docs": 0,
        "ttr": 0.0,
    }
    for start in range(0, len(stream) - WINDOW + 1, WINDOW):
        w = stream[start : start + WINDOW]
        out["windows"] += 1
        out["distinct_1"] += len(set(w)) / WINDOW
        out["distinct_2"] += len(set(zip(w, w[1:]))) / (WINDOW - 1)
    for d in docs:
        if d:
            out["ttr_docs"] += 1
            out["ttr"] += len(set(d)) / len(d)
    return out


def blank_strings(values: pa.ChunkedArray) -> int:
    """Strings that are empty after trimming whitespace (``utf8_trim_whitespace``), trimmed only where the first
    byte is not a printable ASCII character (any other string has something left)."""
    maybe = [np.zeros(0, bool)]
    for chunk in values.chunks:
        offsets, data = utf8(chunk)
        first = np.zeros(len(chunk), np.uint8)  # 0 for empty strings
        nonempty = offsets[1:] > offsets[:-1]
        first[nonempty] = data[offsets[:-1][nonempty]]
        maybe.append((first <= 0x20) | (first >= 0x7F))
    rows = np.flatnonzero(np.concatenate(maybe))
    if not len(rows):
        return 0
    return pc.sum(pc.equal(pc.utf8_trim_whitespace(take(values, rows)), "")).as_py() or 0


def completeness(table: pa.Table) -> dict:
    out = {}
    for field in table.schema:
        col = table[field.name]
        empty = 0
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            empty = blank_strings(col)
        elif pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            empty = pc.sum(pc.equal(pc.list_value_length(col), 0)).as_py() or 0
        out[field.name] = {"null": col.null_count, "empty": int(empty)}
    return out


def configured_stages(cfg: dict) -> list[tuple[type[Stage], dict]]:
    """(class, options) of the stages of a run's config (as in its manifest), in order."""
    load_stages()
    out = []
    for stage in cfg.get("stages", []):
        name, options = next(iter(stage.items())) if isinstance(stage, dict) else (stage, None)
        if name in REGISTRY:
            out.append((REGISTRY[name], options or {}))
    return out


def split_order(names, manifest: dict) -> list[str]:
    """Splits in the order of the stage that makes them (``Stage.splits``: train, validation, test / fold_0, ...),
    others after, sorted."""
    configured: list[str] = []
    for cls, options in configured_stages(manifest.get("config", {})):
        configured = cls.splits(options) or configured
    return [n for n in configured if n in names] + sorted(n for n in names if n not in configured)


def stratify_field(manifest: dict) -> str | None:
    """The field the splits are stratified by (the label field of the stage that makes them)."""
    return next(
        (
            fields[0]
            for cls, o in configured_stages(manifest.get("config", {}))
            if cls.splits(o) and (fields := cls.label_fields(o))
        ),
        None,
    )


def balance(counts: list[int]) -> dict:
    total = sum(counts)
    entropy = -sum(k / total * math.log2(k / total) for k in counts if k) if total else 0.0
    return {
        "entropy_bits": entropy,
        "normalized_entropy": entropy / math.log2(len(counts)) if len(counts) > 1 else 1.0,
        "imbalance_ratio": max(counts) / min(counts) if counts and min(counts) > 0 else None,
    }


def label_fields(manifest: dict) -> set[str]:
    """The fields the config's stages treat as labels (``Stage.label_fields``: the split's ``stratify``,
    ``rebalance.field``, ``label_noise.label_field``)."""
    return {
        field for cls, options in configured_stages(manifest.get("config", {})) for field in cls.label_fields(options)
    }


def label_balance(
    per_split: dict[str, dict[str, dict[str, int]]], splits: list[str], first: str | None, named: set[str] = frozenset()
) -> dict:
    """Per label field (``named`` by the config, or named like a label: ``LABEL_NAME``) with few enough values:
    classes, and per split (and ``all``) counts, entropy and imbalance ratio."""
    fields = sorted(
        {f for per in per_split.values() for f in per if f in named or f == first or LABEL_NAME.search(f)},
        key=lambda f: (f != first, f),
    )
    out: dict = {"fields": {}, "skipped": {}}
    for field in fields:
        counts = {s: per_split[s].get(field, {}) for s in splits}
        classes = sorted({c for per in counts.values() for c in per})
        counts["all"] = {c: sum(per.get(c, 0) for per in counts.values()) for c in classes}
        if OVERFLOW in classes or len(classes) > MAX_CLASSES or sum(counts["all"].values()) < 2 * len(classes):
            if field == first:
                out["skipped"][field] = f"more than {MAX_CLASSES} classes, or fewer than 2 records per class"
            continue  # nearly one value per record: not a label
        if len(classes) < 2:
            continue
        out["fields"][field] = {
            "classes": classes,
            "stratified": field == first,
            "splits": {
                s: {"counts": {c: per.get(c, 0) for c in classes}, **balance([per.get(c, 0) for c in classes])}
                for s, per in counts.items()
            },
        }
    return out


class Dataset(Section):
    name = "dataset"
    title = "Dataset"
    order = 15

    def collect(self, kept, rejected, text_field):
        out = {"splits": {}, "contents": {}}
        for dest, table in kept.items():
            if not table.num_rows:
                continue
            split = dest.partition("/")[2] or "all"
            columns = content_columns(table, text_field)
            tokens, chars = per_record(table, columns)
            contents = content_hashes(table, columns)
            counts, _ = np.histogram(tokens, bins=TOKEN_EDGES)
            out["splits"][split] = add(
                out["splits"].get(split),
                {
                    "records": table.num_rows,
                    "chars": int(chars.sum()),
                    "whitespace_tokens": int(tokens.sum()),
                    "token_bins": {f"{TOKEN_EDGES[i]:g}": int(c) for i, c in enumerate(counts) if c},
                    "completeness": completeness(table),
                    "lexical": lexical(lexical_sample(table, columns, tokens, contents)),
                    "content": {",".join(columns): table.num_rows},
                    "labels": categorical(table, {"id", text_field, *columns}),
                    "years": date_years(table),
                },
            )
            out["contents"] = self.merge_contents(out["contents"], content_sample(split, contents))
        return out if out["splits"] else None

    def merge(self, a, b):
        if a is None or b is None:
            return a if b is None else b
        return {"splits": add(a["splits"], b["splits"]), "contents": self.merge_contents(a["contents"], b["contents"])}

    @staticmethod
    def merge_contents(a: dict, b: dict) -> dict:
        return smallest(add(a, b))

    def summarize(self, collected, manifest):
        if not collected:
            return None
        names = split_order(collected["splits"], manifest)
        splits = {}
        for split in names:
            c = collected["splits"][split]
            lex = c["lexical"]
            windows = lex["windows"]
            splits[split] = {
                "records": c["records"],
                "chars": c["chars"],
                "whitespace_tokens": c["whitespace_tokens"],
                "estimated_tokens": round(c["chars"] / CHARS_PER_TOKEN),
                "mean_whitespace_tokens": c["whitespace_tokens"] / c["records"],
                "content_columns": sorted(c["content"]),
                "token_histogram": {"bin_lower_edges": [f"{e:g}" for e in TOKEN_EDGES[:-1]], "counts": c["token_bins"]},
                "completeness": c["completeness"],
                "lexical_diversity": {
                    "distinct_1": lex["distinct_1"] / windows if windows else None,
                    "distinct_2": lex["distinct_2"] / windows if windows else None,
                    "ttr": lex["ttr"] / lex["ttr_docs"] if lex["ttr_docs"] else None,
                    "windows": windows,
                    "sampled_docs": lex["sampled_docs"],
                    "sampled_tokens": lex["sampled_tokens"],
                },
                "duplicates": duplicates(collected["contents"], split),
            }
        represented = representation(
            {s: {**collected["splits"][s]["labels"], **collected["splits"][s].get("years", {})} for s in names},
            names,
            (manifest.get("config", {}).get("report") or {}).get("representation") or {},
        )
        return {
            **({"representation": represented} if represented else {}),
            "notes": {
                "tokens": f"whitespace_tokens: \\S+ runs (exact); estimated_tokens: characters / {CHARS_PER_TOKEN}",
                "lexical_diversity": f"per write task and split, records by lowest id hash until {SAMPLE_TOKENS} "
                f"whitespace tokens; distinct-n averaged over {WINDOW}-token windows; "
                "ttr: mean per record",
                "duplicates": f"exact content duplicates; from the {SAMPLE_CONTENTS} smallest content hashes "
                "(exact when there are fewer distinct contents)",
                "label_balance": "fields the config names as labels (split stratify, rebalance, label_noise) or named "
                f"like one (label, class, category, ...); string/boolean/integer with 2 to {MAX_CLASSES} "
                "values; null and empty "
                'count as the class ""',
            },
            "splits": splits,
            "label_balance": label_balance(
                {s: collected["splits"][s]["labels"] for s in names},
                names,
                stratify_field(manifest),
                label_fields(manifest),
            ),
        }

    def html(self, summary):
        splits = summary["splits"]
        names = list(splits)
        out = table_html(
            [
                "split",
                "records",
                "characters",
                "whitespace tokens",
                "est. tokens (chars/4)",
                "mean tokens/record",
                "duplicate rate",
                "content also in another split",
            ],
            [
                [
                    n,
                    s["records"],
                    s["chars"],
                    s["whitespace_tokens"],
                    s["estimated_tokens"],
                    s["mean_whitespace_tokens"],
                    _percent(s["duplicates"]["duplicate_rate"]),
                    _percent(s["duplicates"]["in_other_splits_rate"]),
                ]
                for n, s in splits.items()
            ],
        )
        out += bar_chart(names, [s["records"] for s in splits.values()], "records per split", axis="records")
        out += bar_chart(
            names,
            [s["estimated_tokens"] for s in splits.values()],
            "estimated tokens per split",
            color="#7a5ab5",
            axis="estimated tokens (characters / 4)",
        )
        out += '<p class="note">Records by length: see <a href="#lengths">Lengths</a>.</p>'
        out += "<h3>Lexical diversity</h3>" + table_html(
            ["split", "distinct-1", "distinct-2", "TTR (per record)", "windows", "sampled records", "sampled tokens"],
            [
                [
                    n,
                    _num(s["lexical_diversity"]["distinct_1"]),
                    _num(s["lexical_diversity"]["distinct_2"]),
                    _num(s["lexical_diversity"]["ttr"]),
                    s["lexical_diversity"]["windows"],
                    s["lexical_diversity"]["sampled_docs"],
                    s["lexical_diversity"]["sampled_tokens"],
                ]
                for n, s in splits.items()
            ],
        )
        d2 = [
            (n, s["lexical_diversity"]["distinct_2"]) for n, s in splits.items() if s["lexical_diversity"]["distinct_2"]
        ]
        out += bar_chart(
            [n for n, _ in d2],
            [v for _, v in d2],
            f"distinct-2 per {WINDOW}-token window",
            color="#b5884a",
            axis="distinct bigrams per bigram",
        )
        out += "<h3>Completeness</h3>" + self._completeness_html(splits)
        out += self._balance_html(summary["label_balance"])
        if summary.get("representation"):
            out += self._representation_html(summary["representation"])
        notes = "".join(f"<li>{k}: {html.escape(v)}</li>" for k, v in summary["notes"].items())
        return out + f"<ul>{notes}</ul>"

    @staticmethod
    def _completeness_html(splits: dict) -> str:
        """Null and empty values of the columns that have any (the complete ones counted in one line)."""
        columns = list(dict.fromkeys(c for s in splits.values() for c in s["completeness"]))
        header = ["column"] + [f"{n}: {k}" for n in splits for k in ("null", "empty")]
        rows = []
        for col in columns:
            row = [col]
            for s in splits.values():
                c = s["completeness"].get(col, {"null": s["records"], "empty": 0})
                row += [_share(c["null"], s["records"]), _share(c["empty"], s["records"])]
            rows.append(row)
        return folded_table(header, rows, "{n} more columns complete (no null or empty value)")

    @staticmethod
    def _representation_html(rep: dict) -> str:
        out = ""
        for field, r in rep["fields"].items():
            out += f"<h3>Representation: {html.escape(field)}</h3>"
            for line in skew_warnings(field, r, rep["tolerance"]):
                out += f'<p class="note"><b>Skew</b>: {html.escape(line)}</p>'
            header = ["value", "records", "share"]
            if r["target"]:
                header += ["target share", "difference"]
            header += [f"{s}: records" for s in r["splits"]]
            rows = []
            for v in r["counts"]:
                row = [v, r["counts"][v], _percent(r["shares"][v])]
                if r["target"]:
                    row += [_percent(r["target"][v]), _signed_percent(r["difference"][v])]
                rows.append(row + [per[v] for per in r["splits"].values()])
            out += table_html(header, rows)
            if r["total_variation"] is not None:
                out += f'<p class="note">Total variation distance to the target: {r["total_variation"]:.3f}</p>'
        return out + _skipped_html("Not counted", rep["skipped"])

    @staticmethod
    def _balance_html(balance: dict) -> str:
        out = ""
        for field, b in balance["fields"].items():
            classes = b["classes"]
            how = " (the split's stratify field)" if b["stratified"] else ""
            out += f"<h3>Label balance: {html.escape(field)}{how}</h3>"
            out += table_html(
                ["split", *[c or '""' for c in classes], "entropy (bits)", "normalized entropy", "imbalance ratio"],
                [
                    [n, *s["counts"].values(), s["entropy_bits"], s["normalized_entropy"], _num(s["imbalance_ratio"])]
                    for n, s in b["splits"].items()
                ],
            )
            shown = b["splits"].items() if b["stratified"] else [("all", b["splits"]["all"])]
            for n, s in shown:
                out += bar_chart(
                    [c or '""' for c in classes],
                    list(s["counts"].values()),
                    f"{n}: records per {field}",
                    color="#4ab59a",
                    axis="records",
                )
        return out + _skipped_html("Not shown as labels", balance["skipped"])


def _skipped_html(what: str, skipped: dict[str, str]) -> str:
    """A line naming the fields left out of a section, and why; nothing when none was."""
    if not skipped:
        return ""
    return f"<p>{what}: " + ", ".join(f"{html.escape(f)} ({why})" for f, why in skipped.items()) + "</p>"


def skew_warnings(field: str, r: dict, tolerance: float) -> list[str]:
    """One line per value of ``field`` whose share is further than ``tolerance`` from its target share."""
    return [
        f"{field} = {v}: {100 * r['shares'][v]:.1f}% of the kept records against a target of "
        f"{100 * r['target'][v]:.1f}% (tolerance {100 * tolerance:.1f} points)"
        for v in r["skews"]
    ]


def _signed_percent(v: float) -> str:
    return f"{'+' if v >= 0 else ''}{100 * v:.2f}%"


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _percent(v: float) -> str:
    return f"{100 * v:.2f}%"


def _share(n: int, total: int) -> str:
    return f"{n:,} ({100 * n / total:.1f}%)" if n else "0"
