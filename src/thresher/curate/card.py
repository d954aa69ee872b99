"""The dataset card: ``README.md`` in a run's output, written before the manifest.

It summarises the source, the stages with their options, thresholds and counts, the splits and the columns with
their descriptions. Its YAML front matter is the Hugging Face Hub's dataset metadata: ``pretty_name``,
``license`` (``output.card.license``, else ``unknown``), ``language`` (the languages a stage keeps, e.g.
``langid``'s, else those found in the kept records), ``size_categories`` (the Hub's bucket of the kept records),
``task_categories`` (and ``task_ids``) a stage declares (the ``format`` template's), ``source_datasets`` (the
inputs), and the splits
(``configs: [{config_name: default, data_files: [{split, path}]}]``, paths relative to the card), so
``datasets.load_dataset(OUTPUT)`` reads them. A run without a split stage has one split, ``train``
(``data/*.parquet``). The card names local inputs without the machine's absolute paths
(:mod:`thresher.core.published`).

What the card says of a stage beyond its row in the processing table (languages, tasks, the options shown, sections of
its own) the stage declares (``Stage.card``, :class:`thresher.curate.stage.StageCard`): this module names no stage.
"""

from __future__ import annotations

import json
import sys

import pyarrow.parquet as pq
import yaml

from thresher.core.published import input_name, run_name
from thresher.core.storage import Storage, join
from thresher.curate.report.dataset import configured_stages, skew_warnings, split_order
from thresher.curate.stage import REGISTRY, Stage, StageCard, load_stages


def data_files(manifest: dict) -> list[dict[str, str]]:
    splits = {name: n for name, n in manifest["counts"].get("splits", {}).items() if n}
    if set(splits) == {"all"}:
        return [{"split": "train", "path": "data/*.parquet"}]
    return [
        {"split": name, "path": f"data/{name}/*.parquet"} for name in split_order(splits, manifest) if name != "all"
    ]


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        text = f"{v:,}" if isinstance(v, int) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


def _purpose(stage: str) -> str:
    cls = REGISTRY.get(stage)
    doc = (sys.modules[cls.__module__].__doc__ or "") if cls else ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    first = first.split(": ", 1)[-1] if first.startswith("``") else first
    return first.split(". ", 1)[0].rstrip(".").replace("``", "`") + "."


def changed_options(stage: str, options: dict) -> dict:
    """The options that differ from the stage's defaults (nested sections key by key)."""
    cls = REGISTRY.get(stage)
    fields = cls.Config.model_fields if cls else {}
    out = {}
    for key, value in options.items():
        field = fields.get(key)
        if field is None or field.is_required():
            out[key] = value
            continue
        default = field.get_default(call_default_factory=True)
        default = json.loads(
            json.dumps(default.model_dump(mode="json") if hasattr(default, "model_dump") else default, default=sorted)
        )
        if isinstance(value, dict) and isinstance(default, dict) and value.keys() == default.keys():
            value = {k: v for k, v in value.items() if v != default[k]}
            if value:
                out[key] = value
        elif value != default:
            out[key] = value
    return out


def _schema(output: str, storage: Storage, manifest: dict, files_at: str):
    data_root = join(output, "data")
    for uri in manifest.get("files", []):
        if uri.startswith(data_root):
            fs, path = storage.resolve(join(files_at, uri[len(output.rstrip("/")) + 1 :]))
            with fs.open_input_file(path) as f:
                return pq.read_schema(f)
    return None


# the Hub's size categories, by the number of records (n<1K: under 1,000; 1K<n<10K: 1,000 to 9,999; ...)
SIZE_CATEGORIES = (
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
)
# the Hub's task categories and task ids, and tags, where no stage declares others (``StageCard.tasks``)
LANGUAGE_MODELING = (("text-generation",), ("language-modeling",), ())
# the columns thresher writes itself (the stages' own are described by ``Stage.added_columns``, in the manifest)
COLUMNS = {"id": "the record's id: the input's, or derived from its source file and offset"}


def size_category(n: int) -> str:
    i = 0
    while i < len(SIZE_CATEGORIES) - 1 and n >= 1000 * 10**i:
        i += 1
    return SIZE_CATEGORIES[i]


def stage_cards(cfg: dict) -> list[StageCard]:
    """What each configured stage (the first use of each) says on the card, in pipeline order."""
    first: dict[type[Stage], dict] = {}
    for cls, options in configured_stages(cfg):
        first.setdefault(cls, options)
    return [cls.card(options, cfg) for cls, options in first.items()]


def languages(manifest: dict, report: dict) -> list[str]:
    """The languages a stage keeps (``StageCard.languages``), else those of the kept records (most records
    first)."""
    kept_by_stage = next((c.languages for c in stage_cards(manifest.get("config", {})) if c.languages), ())
    if kept_by_stage:
        return list(kept_by_stage)
    kept = ((report.get("languages") or {}).get("kept") or {}).get("by_language", {})
    return [lang for lang in kept if lang != "und"]


def card_metadata(manifest: dict, report: dict) -> dict:
    """The card's YAML front matter: the Hub's dataset metadata and the splits."""
    cfg = manifest.get("config", {})
    card = cfg.get("output", {}).get("card", {})
    categories, task_ids, tags = next((c.tasks for c in stage_cards(cfg) if c.tasks), LANGUAGE_MODELING)
    front = {
        "pretty_name": card.get("pretty_name") or run_name(manifest.get("output", "")),
        "license": card.get("license", "unknown"),
    }
    if langs := languages(manifest, report):
        front["language"] = langs
    front["size_categories"] = [size_category(manifest["counts"]["output"])]
    front["task_categories"] = list(categories)
    if task_ids:
        front["task_ids"] = list(task_ids)
    front["source_datasets"] = [input_name(p) for p in cfg.get("input", {}).get("paths", [])]
    if files := data_files(manifest):
        front["configs"] = [{"config_name": "default", "data_files": files}]
    front["tags"] = ["thresher", *tags]
    return front


def _stage_rows(cfg: dict, by_stage: dict, reasons: dict) -> list[list]:
    """One row per stage the run counted (``unique_ids`` included), in order; ``read`` is reported apart."""
    specs = [next(iter(s.items())) for s in cfg.get("stages", [])]
    uses: dict[str, int] = {}
    named = {}
    for name, options in specs:
        uses[name] = uses.get(name, 0) + 1
        named[f"{name}-{uses[name]}" if uses[name] > 1 else name] = (name, options)
    rows = []
    for i, (run_name_, c) in enumerate((n, c) for n, c in by_stage.items() if n != "read"):
        stage, options = named.get(run_name_, (run_name_, None))
        cls = REGISTRY.get(stage)
        notes = cls.card(options or {}, cfg) if cls else StageCard()
        changed = notes.options
        if changed is None:
            changed = {k: v for k, v in changed_options(stage, options or {}).items() if k not in notes.hidden_options}
        shown = (f"`{json.dumps(changed)}`" if changed else "defaults") + notes.options_note
        top = ", ".join(f"{r} ({n:,})" for r, n in sorted(reasons.get(run_name_, {}).items(), key=lambda x: -x[1])[:3])
        rows.append(
            [
                i + 1,
                f"`{run_name_}`",
                _purpose(stage),
                shown,
                c.get("in", 0),
                c.get("out", 0),
                c.get("rejected", 0),
                top,
            ]
        )
    return rows


def _representation(rep: dict) -> str:
    """The card's Representation section: per field, records and shares of its values (against the target), and a
    skew warning line per value further from its target than the tolerance."""
    out = ["## Representation"]
    warnings = [line for field, r in rep["fields"].items() for line in skew_warnings(field, r, rep["tolerance"])]
    if warnings:
        out.append("\n".join(f"> **Skew warning**: {line}." for line in warnings))
    elif any(r["target"] for r in rep["fields"].values()):
        out.append(f"Every value is within {100 * rep['tolerance']:.1f} points of its target share.")
    for field, r in rep["fields"].items():
        header = ["value", "records", "share"] + (["target share"] if r["target"] else [])
        rows = [
            [f"`{v}`", r["counts"][v], f"{100 * r['shares'][v]:.1f}%"]
            + ([f"{100 * r['target'][v]:.1f}%"] if r["target"] else [])
            for v in r["counts"]
        ]
        out.append(f"### `{field}`\n\n" + _table(header, rows))
    if rep["skipped"]:
        out.append("Not counted: " + ", ".join(f"`{f}` ({why})" for f, why in rep["skipped"].items()) + ".")
    return "\n\n".join(out)


def dataset_card(output: str, storage: Storage, manifest: dict, report: dict, files_at: str | None = None) -> str:
    """The card of the run at ``output``, whose final files lie at ``files_at`` until the run commits."""
    load_stages()
    cfg = manifest.get("config", {})
    counts = manifest["counts"]
    front = card_metadata(manifest, report)
    files = data_files(manifest)
    inputs = ", ".join(f"`{s}`" for s in front["source_datasets"])
    parts = [
        "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---",
        f"# {front['pretty_name']}",
        f"Curated with thresher from {inputs} (text field `{cfg.get('input', {}).get('text_field', 'text')}`), "
        f"finished {manifest.get('finished_at', '')}: {counts['input']:,} records read, "
        + (f"{counts['generated']:,} generated (augmentation, rebalancing), " if counts.get("generated") else "")
        + f"{counts['output']:,} kept, {counts['rejected']:,} rejected (kept + rejected = read + generated). Every rejected record is in `rejects/` with the "
        "stage and reason; `report.html` has the full quality report and `manifest.json` the exact config.",
    ]
    if files:
        paths = ", ".join(f'"{f["split"]}": "{f["path"]}"' for f in files)
        parts.append(
            "## Loading\n\nFrom this folder (or its copy on the Hub, by the repository's name):\n\n"
            "```python\nfrom datasets import load_dataset\n\n"
            'ds = load_dataset(".")  # reads the configs above\n'
            f'ds = load_dataset("parquet", data_files={{{paths}}})\n```'
        )
    splits = (report.get("dataset") or {}).get("splits", {})
    rows = []
    for f in files:
        s = splits.get(f["split"] if f["path"] != "data/*.parquet" else "all", {})
        dup = s.get("duplicates", {})
        rows.append(
            [
                f["split"],
                f"`{f['path']}`",
                s.get("records", 0),
                s.get("whitespace_tokens", 0),
                s.get("estimated_tokens", 0),
                f"{100 * dup.get('duplicate_rate', 0):.2f}%",
                f"{100 * dup.get('in_other_splits_rate', 0):.2f}%",
            ]
        )
    if rows:
        parts.append(
            "## Splits\n\n"
            + _table(
                [
                    "split",
                    "files",
                    "records",
                    "whitespace tokens",
                    "estimated tokens (chars/4)",
                    "exact duplicates",
                    "content also in another split",
                ],
                rows,
            )
        )
    by_stage = counts.get("by_stage", {})
    stage_rows = _stage_rows(cfg, by_stage, manifest.get("rejected_by_reason", {}))
    if stage_rows:
        read = by_stage.get("read", {})
        parts.append(
            f"## Processing\n\nRead: {read.get('in', 0):,} records, {read.get('rejected', 0):,} unusable. "
            "Then, in order:\n\n"
            + _table(
                ["#", "stage", "what it does", "options (non-default)", "in", "out", "rejected", "top reasons"],
                stage_rows,
            )
        )
    for section in sorted((s for c in stage_cards(cfg) for s in c.sections), key=lambda s: s.order):
        parts.append(
            f"## {section.title}\n\n{section.text}"
            + (f"\n\n{_table(list(section.header), [list(r) for r in section.rows])}" if section.header else "")
        )
    for field, b in ((report.get("dataset") or {}).get("label_balance") or {}).get("fields", {}).items():
        classes = b["classes"]
        parts.append(
            f"## Label balance: `{field}`"
            + (" (stratified)" if b["stratified"] else "")
            + "\n\n"
            + _table(
                ["split", *[c or '""' for c in classes], "entropy (bits)", "imbalance ratio"],
                [
                    [
                        n,
                        *s["counts"].values(),
                        f"{s['entropy_bits']:.3f}",
                        "n/a" if s["imbalance_ratio"] is None else f"{s['imbalance_ratio']:.2f}",
                    ]
                    for n, s in b["splits"].items()
                ],
            )
        )
    rep = (report.get("dataset") or {}).get("representation")
    if rep:
        parts.append(_representation(rep))
    schema = _schema(output, storage, manifest, files_at or output)
    if schema is not None:
        text_field = cfg.get("input", {}).get("text_field", "text")
        described = {**COLUMNS, text_field: "the text the stages acted on", **manifest.get("columns", {})}
        parts.append(
            "## Columns\n\n"
            + _table(
                ["column", "type", "description"],
                [
                    [f"`{f.name}`", f"`{f.type}`", described.get(f.name, "a field of the input, as read")]
                    for f in schema
                ],
            )
        )
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())
    licence = front["license"]
    parts.append(
        f"## Provenance\n\nSoftware: {versions}. Licence: `{licence}`"
        + (" (set `output.card.license` to the sources' licence)" if licence == "unknown" else "")
        + "; the sources' terms apply."
    )
    return "\n\n".join(parts) + "\n"
