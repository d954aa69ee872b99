"""A stage brings its own report section, card lines and gates: a dedup-like global stage defined and registered here
alone (no shared module names it) shows in report.json, the card and the manifest's gates, with figures counted
again here from the input."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import Field

from testkit.runs import assert_accounting, write_jsonl
from thresher.curate.config import parse_config
from thresher.curate.dedup.removal import KEPT_DETAIL
from thresher.curate.runner import run
from thresher.curate.stage import (
    ID,
    KEY,
    REJECT_DETAIL,
    REJECT_REASON,
    REJECT_STAGE,
    CardSection,
    GlobalStage,
    StageCard,
    StageConfig,
)

FIRST_WORD = "_first_word"


class FirstWordConfig(StageConfig):
    lowercase: bool = Field(True, description="compare first words in lower case")


class FirstWordDedup(GlobalStage):
    """``test_first_word``: rejects every record whose first word an earlier record (lower internal key) had, with
    detail ``duplicate of kept record <id>`` (as the dedup stages write it)."""

    name = "test_first_word"
    Config = FirstWordConfig
    decides_locally = True
    report_sections = ("duplicates",)
    gates = ("max_duplicate_rate",)

    @classmethod
    def card(cls, options: dict, config: dict) -> StageCard:
        case = "in lower case" if options.get("lowercase", True) else "as written"
        return StageCard(
            options_note=" (one record per first word)",
            sections=(CardSection("First words", f"One record per first word, compared {case}."),),
        )

    def keys(self, batch: pa.Table) -> dict:
        texts = pc.fill_null(batch[self.text].cast(pa.string()), "")
        words = [t.split()[0] if t.split() else "" for t in texts.to_pylist()]
        return {FIRST_WORD: pa.array([w.lower() for w in words] if self.config.lowercase else words, pa.string())}

    def decide(self, keys):
        return keys.in_one_task(_mark_later_first_words)


def _mark_later_first_words(rows: pa.Table) -> pa.Table:
    """Rejects the rows whose first word a row of lower key had; the kept one is named in the detail."""
    order = pc.sort_indices(rows, [(FIRST_WORD, "ascending"), (KEY, "ascending")]).to_pylist()
    words, ids = rows[FIRST_WORD].to_pylist(), rows[ID].to_pylist()
    kept_id: list[str | None] = [None] * rows.num_rows
    previous, first = None, None
    for i in order:
        if words[i] == previous:
            kept_id[i] = str(ids[first])
        else:
            previous, first = words[i], i
    later = pa.array([k is not None for k in kept_id])
    values = {
        REJECT_STAGE: pa.scalar(FirstWordDedup.name),
        REJECT_REASON: pa.scalar("first_word_seen"),
        REJECT_DETAIL: pc.binary_join_element_wise(KEPT_DETAIL, pa.array(kept_id, pa.string()), ""),
    }
    for col, value in values.items():
        i = rows.column_names.index(col)
        rows = rows.set_column(i, col, pc.if_else(later, value, rows[col].cast(pa.string())))
    return rows.drop_columns([FIRST_WORD])


WORDS = ["alpha", "beta", "Gamma", "delta", "gamma", "ALPHA", "epsilon", "alpha"]


def corpus(tmp_path):
    """40 records, half with a first word of their own, half with one of ``WORDS`` (5 in lower case); the expected
    removals (id -> the kept record's id) counted from the records in input order."""
    records = [
        {"id": f"r{i:02d}", "text": f"{WORDS[i // 2 % 8] if i % 2 else f'once{i}'} text number {i}"} for i in range(40)
    ]
    seen: dict[str, str] = {}
    removed = {}
    for r in records:
        word = r["text"].split()[0].lower()
        if word in seen:
            removed[r["id"]] = seen[word]
        else:
            seen[word] = r["id"]
    return write_jsonl(tmp_path / "docs.jsonl", records), records, removed


def curate_with_gate(tmp_path, src, limit: float) -> tuple[dict, object]:
    out = tmp_path / f"out-{limit}"
    cfg = {
        "input": {"paths": [str(src)]},
        "output": {"path": str(out)},
        "stages": [{"test_first_word": {}}],
        "gates": {"max_duplicate_rate": limit},
    }
    return run(parse_config(cfg)), out


@pytest.mark.parametrize("margin, ok", [(-0.01, False), (0.01, True)])
def test_a_stage_defined_in_a_test_gets_its_section_card_lines_and_gate(ray_local, tmp_path, margin, ok):
    src, records, removed = corpus(tmp_path)
    rate = round(len(removed) / len(records), 6)
    assert rate == 15 / 40  # 20 records share 5 first words
    manifest, out = curate_with_gate(tmp_path, src, rate + margin)
    assert_accounting(manifest, out)
    counts = manifest["counts"]["by_stage"]["test_first_word"]
    assert (counts["in"], counts["rejected"]) == (len(records), len(removed))

    # the gate it declares: measured on its removals, tripped above the limit and held below
    (gate,) = manifest["gates"]
    assert (gate["gate"], gate["measured"], gate["ok"]) == ("max_duplicate_rate", rate, ok)
    assert manifest["status"] == ("succeeded" if ok else "gate_failed")

    # the report section it declares: its removals, rate and clusters
    report = json.loads((out / "report.json").read_text())
    section = report["duplicates"]["stages"]["test_first_word"]
    assert section["removed"] == len(removed)
    assert section["rate_of_stage_input"] == round(len(removed) / len(records), 4)
    assert section["clusters_counted"] == len(set(removed.values()))
    sizes = {k: 1 + sum(1 for v in removed.values() if v == k) for k in set(removed.values())}
    for example in section["examples"]:
        assert example["size"] == sizes[example["kept_id"]]
        assert {r["id"] for r in example["removed"]} <= {i for i, k in removed.items() if k == example["kept_id"]}
    assert "test_first_word: cluster sizes" in (out / "report.html").read_text()

    # the card lines it declares: its note in the processing table and a section of its own
    card = (out / "README.md").read_text()
    assert "| `test_first_word` |" in card and "defaults (one record per first word)" in card
    assert "## First words\n\nOne record per first word, compared in lower case." in card
