"""Run gates: limits a finished run must meet to count as a dataset (config ``gates``).

A violated gate does not lose the run's work: the report, the card and ``manifest.json`` are written as usual,
with ``status: gate_failed`` and every gate's measured value, and ``thresher curate`` exits 1 naming the gate.
``thresher train`` refuses such a run. Where a succeeded run holds the output folder, a re-run that fails its gates
leaves it in place and commits to ``_gate_failed/`` (``thresher.curate.run_folder``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from thresher.core.config import StrictModel
from thresher.curate.stage import load_stages, stage_class

GATE_FAILED = "gate_failed"


class GatesConfig(StrictModel):
    max_rejected_fraction: float | None = Field(None, ge=0, le=1, description="rejected / (input + generated)")
    max_duplicate_rate: float | None = Field(
        None, ge=0, le=1, description=("rows the dedup stages removed / rows entering the first dedup stage")
    )
    max_malformed_fraction: float | None = Field(None, ge=0, le=1, description="rows rejected at read / input")
    max_malformed_bytes_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "bytes lost to damage at read (malformed, invalid UTF-8 or non-object lines, unreadable files and ranges) / "
            "input bytes"
        ),
    )
    min_output_records: int | None = Field(None, ge=0, description="least records kept (all splits)")
    max_output_records: int | None = Field(None, ge=0, description="most records kept (all splits)")
    min_split_records: dict[str, int] = Field({}, description="least records per split, e.g. {test: 100}")
    max_stage_rejected_fraction: dict[str, float] = Field(
        {}, description=("per stage: rows it rejected / rows entering it (0 to 1), e.g. {langid: 0.3}")
    )

    @field_validator("min_split_records")
    @classmethod
    def _counts(cls, limits: dict[str, int]) -> dict[str, int]:
        for split, limit in limits.items():
            if limit < 0:
                raise ValueError(f"{split}: a number of records, at least 0, got {limit}")
        return limits

    @field_validator("max_stage_rejected_fraction")
    @classmethod
    def _fractions(cls, limits: dict[str, float]) -> dict[str, float]:
        for stage, limit in limits.items():
            if not 0 <= limit <= 1:
                raise ValueError(f"{stage}: a fraction from 0 to 1, got {limit}")
        return limits

    @model_validator(mode="after")
    def _output_range(self):
        low, high = self.min_output_records, self.max_output_records
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_output_records: {low} is above max_output_records {high}")
        return self


def measure(counts: dict[str, Any]) -> dict[str, Any]:
    """The figures the gates compare, from the manifest's counts."""
    by_stage = counts["by_stage"]
    dedup = [s for s in by_stage if "max_duplicate_rate" in counted_by(s)]
    entered = by_stage[dedup[0]]["in"] if dedup else 0
    return {
        "max_rejected_fraction": _fraction(counts["rejected"], counts["input"] + counts.get("generated", 0)),
        "max_duplicate_rate": _fraction(sum(by_stage[s]["rejected"] for s in dedup), entered),
        "max_malformed_fraction": _fraction(by_stage.get("read", {}).get("rejected", 0), counts["input"]),
        "max_malformed_bytes_fraction": _fraction(counts["rejected_bytes"], counts["read_bytes"]),
        "min_output_records": counts["output"],
        "max_output_records": counts["output"],
        "min_split_records": counts["splits"],
        "max_stage_rejected_fraction": {
            s: _fraction(c["rejected"], c["in"] + c.get("generated", 0)) for s, c in by_stage.items()
        },
    }


def counted_by(run_name: str) -> tuple[str, ...]:
    """The gates that count the stage named ``run_name`` in a run (its class's ``gates``)."""
    load_stages()
    cls = stage_class(run_name)
    return cls.gates if cls else ()


def _fraction(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def check(gates: GatesConfig, counts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every configured gate with its limit, measured value and whether it holds (``gate`` names it, e.g.
    ``min_split_records.test``)."""
    measured = measure(counts)
    results = []
    for name, limit in gates.model_dump(exclude_none=True).items():
        if isinstance(limit, dict):
            for key, lim in limit.items():
                results.append(_result(f"{name}.{key}", name, lim, measured[name].get(key, 0)))
        else:
            results.append(_result(name, name, limit, measured[name]))
    return results


def _result(gate: str, kind: str, limit: float, value: float) -> dict[str, Any]:
    ok = value >= limit if kind.startswith("min_") else value <= limit
    return {"gate": gate, "limit": limit, "measured": value, "ok": ok}


def failures(results: list[dict[str, Any]]) -> list[str]:
    """One line per violated gate."""
    return [f"gate {r['gate']}: measured {r['measured']}, limit {r['limit']}" for r in results if not r["ok"]]
