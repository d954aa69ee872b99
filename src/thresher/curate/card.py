"""The dataset card: ``README.md`` in a run's output, written before the manifest.

It summarises the source, the stages with their options and counts, the splits and the columns. Its YAML front
matter declares the splits the Hugging Face way (``configs: [{config_name: default, data_files: [{split,
path}]}]``), so ``datasets.load_dataset(OUTPUT)`` reads them, as does ``load_dataset("parquet",
data_files=...)`` with the paths it lists. A run without a split stage has one split, ``train``
(``data/*.parquet``).
"""

from __future__ import annotations

import json
import posixpath
import sys

import pyarrow.parquet as pq
import yaml

from thresher.core.storage import Storage, join
from thresher.curate.config import load_stages
from thresher.curate.report.dataset import split_order
from thresher.curate.stage import REGISTRY


def data_files(manifest: dict) -> list[dict[str, str]]:
    splits = {name: n for name, n in manifest["counts"].get("splits", {}).items() if n}
    if set(splits) == {"all"}:
        return [{"split": "train", "path": "data/*.parquet"}]
    return [{"split": name, "path": f"data/{name}/*.parquet"} for name in split_order(splits, manifest) if name != "all"]


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
    return (first.split(": ", 1)[-1] if first.startswith("``") else first).replace("``", "`")


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
        default = json.loads(json.dumps(default.model_dump(mode="json") if hasattr(default, "model_dump") else default,
                                        default=sorted))
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
            fs, path = storage.resolve(join(files_at, uri[len(output.rstrip("/")) + 1:]))
            with fs.open_input_file(path) as f:
                return pq.read_schema(f)
    return None


def dataset_card(output: str, storage: Storage, manifest: dict, report: dict, files_at: str | None = None) -> str:
    """The card of the run at ``output``, whose final files lie at ``files_at`` until the run commits."""
    load_stages()
    cfg = manifest.get("config", {})
    counts = manifest["counts"]
    files = data_files(manifest)
    front = {"configs": [{"config_name": "default", "data_files": files}]} if files else {}
    front["tags"] = ["thresher"]
    name = posixpath.basename(output.rstrip("/")) or output
    inputs = ", ".join(f"`{p}`" for p in cfg.get("input", {}).get("paths", []))
    parts = [
        "---\n" + yaml.safe_dump(front, sort_keys=False) + "---",
        f"# {name}",
        f"Curated with thresher from {inputs} (text field `{cfg.get('input', {}).get('text_field', 'text')}`), "
        f"finished {manifest.get('finished_at', '')}: {counts['input']:,} records read, "
        + (f"{counts['generated']:,} generated (augmentation, rebalancing), " if counts.get("generated") else "")
        + f"{counts['output']:,} kept, {counts['rejected']:,} rejected (kept + rejected = read + generated). Every rejected record is in `rejects/` with the "
        "stage and reason; `report.html` has the full quality report and `manifest.json` the exact config.",
    ]
    if files:
        paths = ", ".join(f'"{f["split"]}": "{join(output, f["path"])}"' for f in files)
        parts.append("## Loading\n\n```python\nfrom datasets import load_dataset\n\n"
                     f"ds = load_dataset(\"parquet\", data_files={{{paths}}})\n"
                     f"# or, reading the configs above: load_dataset({output!r})\n```")
    splits = (report.get("dataset") or {}).get("splits", {})
    rows = []
    for f in files:
        s = splits.get(f["split"] if f["path"] != "data/*.parquet" else "all", {})
        dup = s.get("duplicates", {})
        rows.append([f["split"], f"`{f['path']}`", s.get("records", 0), s.get("whitespace_tokens", 0),
                     s.get("estimated_tokens", 0), f"{100 * dup.get('duplicate_rate', 0):.2f}%",
                     f"{100 * dup.get('in_other_splits_rate', 0):.2f}%"])
    if rows:
        parts.append("## Splits\n\n" + _table(["split", "files", "records", "whitespace tokens",
                                                 "estimated tokens (chars/4)", "exact duplicates",
                                                 "content also in another split"], rows))
    stage_rows = []
    by_stage, reasons = counts.get("by_stage", {}), manifest.get("rejected_by_reason", {})
    for i, stage in enumerate(cfg.get("stages", [])):
        (stage_name, options), = stage.items()
        c = by_stage.get(stage_name, {})
        top = ", ".join(f"{r} ({n:,})" for r, n in sorted(reasons.get(stage_name, {}).items(), key=lambda x: -x[1])[:3])
        changed = changed_options(stage_name, options)
        stage_rows.append([i + 1, f"`{stage_name}`", _purpose(stage_name), f"`{json.dumps(changed)}`" if changed else "defaults",
                           c.get("in", 0), c.get("out", 0), c.get("rejected", 0), top])
    if stage_rows:
        read = by_stage.get("read", {})
        parts.append(f"## Processing\n\nRead: {read.get('in', 0):,} records, {read.get('rejected', 0):,} unusable. "
                     "Then, in order:\n\n" + _table(["#", "stage", "what it does", "options (non-default)", "in", "out", "rejected",
                                                     "top reasons"], stage_rows))
    for field, b in ((report.get("dataset") or {}).get("label_balance") or {}).get("fields", {}).items():
        classes = b["classes"]
        parts.append(f"## Label balance: `{field}`" + (" (stratified)" if b["stratified"] else "") + "\n\n" + _table(
            ["split", *[c or '""' for c in classes], "entropy (bits)", "imbalance ratio"],
            [[n, *s["counts"].values(), f"{s['entropy_bits']:.3f}",
              "n/a" if s["imbalance_ratio"] is None else f"{s['imbalance_ratio']:.2f}"] for n, s in b["splits"].items()]))
    schema = _schema(output, storage, manifest, files_at or output)
    if schema is not None:
        parts.append("## Columns\n\n" + _table(["column", "type"], [[f"`{f.name}`", f"`{f.type}`"] for f in schema]))
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())
    parts.append(f"## Provenance\n\nSoftware: {versions}. Input and license terms are those of the sources above.")
    return "\n\n".join(parts) + "\n"
