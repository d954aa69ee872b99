"""Per-slice metrics of ``thresher eval`` (``slices: [field, ...]``).

A slice spec is a field of the evaluation records (``source``, ``lang``, ``label``, ...), ``length_bucket`` (the
prompt's tokens, as the model read them, in the buckets ``slice_options.length_edges`` bound) or ``year(FIELD)``
(the year of a date field, :mod:`thresher.core.groups`). Each value of a spec is one slice; null and empty values
are the slice ``(missing)``.

Every metric is computed on each slice as on the whole set, with a 95% interval: a Wilson score interval for the
proportions (``exact_match``, ``accuracy``: 0/1 per example), a percentile bootstrap over the slice's examples
(``bootstrap``, seeded) for the others; ``interval`` says which. ``gap`` is the slice's value less the whole set's.
A metric scored on fewer than ``slice_options.min_items`` examples of a slice has no interval and ``small: true``:
it is shown, marked, never left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from thresher.core.groups import group_name, year_field, year_of
from thresher.evaluate.eval_config import LENGTH_BUCKET, SliceOptions
from thresher.evaluate.scoring import aggregate, counted
from thresher.evaluate.stats import wilson

PROPORTIONS = ("exact_match", "accuracy")
COLUMN = "slice.{}"  # the column of predictions.parquet holding each example's slice of a spec


def length_bucket(tokens: int | None, edges: list[int]) -> str:
    """The bucket of ``tokens``: ``0-15``, ``16-31``, ..., ``1024+`` for edges 16, 32, ..., 1024."""
    if tokens is None:
        return group_name(None)
    bounds = [0, *edges]
    i = int(np.searchsorted(edges, tokens, side="right"))
    return f"{bounds[i]}+" if i == len(edges) else f"{bounds[i]}-{bounds[i + 1] - 1}"


def slice_keys(spec: str, rows: pa.Table, options: SliceOptions) -> list[str]:
    """Each example's slice of ``spec``."""
    if spec == LENGTH_BUCKET:
        return [length_bucket(n, options.length_edges) for n in rows.column("prompt_tokens").to_pylist()]
    field = year_field(spec)
    if field:
        return [year_of(v) for v in rows.column(field).to_pylist()]
    return [group_name(v) for v in rows.column(spec).to_pylist()]


def _order(spec: str, keys: list[str], options: SliceOptions) -> list[str]:
    """The slices in reading order: length buckets and years ascending, other values by examples (most first)."""
    found = set(keys)
    if spec == LENGTH_BUCKET:
        every = [length_bucket(e, options.length_edges) for e in [0, *options.length_edges]]
        return [k for k in every if k in found] + sorted(found - set(every))
    if year_field(spec):
        return sorted(found)
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    return sorted(found, key=lambda k: (-counts[k], k))


def slice_metrics(
    cols: dict[str, list],
    keys: list[str],
    metrics: list[str],
    overall: dict[str, dict],
    options: SliceOptions,
    samples: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Per slice of one spec (``keys``: each example's slice): ``rows``, ``small`` and per metric ``value``,
    ``count``, ``ci95``, ``interval`` (``wilson`` | ``bootstrap`` | None when small), ``small`` and ``gap``."""
    names = np.array(keys, dtype=object)
    out: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(keys):
        mask = names == key
        result = aggregate(cols, metrics, samples, seed, rows=mask)
        entry: dict[str, Any] = {"rows": int(mask.sum()), "small": bool(mask.sum() < options.min_items)}
        per: dict[str, dict] = {}
        for name in metrics:
            m = result[name]
            small = m["count"] < options.min_items
            if m["value"] is None or small:
                interval, ci95 = None, None
            elif name in PROPORTIONS:
                scores = np.array(cols[name], dtype=object)[mask & counted(name, cols)].astype(float)
                interval, ci95 = "wilson", list(wilson(int(scores.sum()), len(scores)))
            else:
                interval, ci95 = "bootstrap", m["ci95"]
            whole = overall[name]["value"]
            per[name] = {
                "value": m["value"],
                "count": m["count"],
                "ci95": ci95,
                "interval": interval,
                "small": small,
                "gap": None if m["value"] is None or whole is None else m["value"] - whole,
            }
        entry["metrics"] = per
        out[key] = entry
    return out


def all_slices(
    rows: pa.Table,
    cols: dict[str, list],
    specs: list[str],
    metrics: list[str],
    overall: dict[str, dict],
    options: SliceOptions,
    samples: int,
    seed: int,
) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """metrics.json's ``slices`` (per spec, per slice, in reading order) and each spec's column of slice names."""
    out, columns = {}, {}
    for spec in specs:
        keys = slice_keys(spec, rows, options)
        columns[COLUMN.format(spec)] = keys
        per = slice_metrics(cols, keys, metrics, overall, options, samples, seed)
        out[spec] = {k: per[k] for k in _order(spec, keys, options)}
    return out, columns
