"""The documentation in ``docs/``: the generated pages (one per stage, the config key tables, the report sections) are
what ``docs/generate.py`` makes of the code now, every stage has a page and every page a stage, each stage page's
example is a valid config, and every relative link of the docs and the README leads to a file that exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

from thresher import config_docs
from thresher.cli import main
from thresher.curate.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_pages_are_current():
    gen = generator()
    stale = gen.stale()
    assert not stale, "generated docs differ from the code (run: python docs/generate.py): " + ", ".join(stale)


def test_the_generated_pages_are_the_same_every_time():
    gen = generator()
    first, second = gen.expected(), gen.expected()
    assert first == second
    assert not any(" at 0x" in text for text in first.values())  # no object reprs


def test_every_stage_has_a_page_and_every_page_a_stage(capsys):
    assert main(["stages"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    pages = {p.stem for p in (DOCS / "stages").glob("*.md")} - {"README"}
    assert listed == pages, (
        f"stages without a page: {sorted(listed - pages)}; pages without a stage: {sorted(pages - listed)}"
    )
    index = (DOCS / "stages" / "README.md").read_text()
    assert all(f"]({name}.md)" in index for name in listed)


def test_every_stage_page_example_is_a_valid_config():
    gen = generator()
    for name in config_docs._stages():
        example = gen.stage_example(name)
        data = yaml.safe_load(example) if example else {"stages": [{name: {}}]}
        data.setdefault("input", {}).setdefault("paths", ["in/*.jsonl"])
        data.setdefault("output", {"path": "out"})
        cfg = parse_config(data)
        assert name in [s.name for s in cfg.stages] or data["input"].get("unique_ids"), name


def test_every_config_section_has_its_key_table():
    gen = generator()
    for kind, path in gen.CONFIG_PAGES.items():
        blocks = gen.blocks(path.read_text())
        expected = [f"{kind} ."] + [f"{kind} {section}" for section in config_docs.config_sections(kind)]
        missing = [b for b in expected if b not in blocks]
        assert not missing, f"{path.relative_to(ROOT)}: no generated table for {missing}"
    assert "report sections" in gen.blocks((DOCS / "outputs.md").read_text())


LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lowercased, punctuation but ``-`` and ``_`` dropped, spaces as
    ``-``; a repeated one gets ``-1``, ``-2``, ..."""
    found, seen = set(), {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return found


def test_relative_links_lead_to_files_and_headings():
    broken = []
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_the_readme_stays_short_and_keeps_the_set_up_commands_on_its_first_screen():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 260, len(lines)
    first_screen = "\n".join(lines[:20])
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert test_command.replace("pip install -q ", "pip install ") in first_screen  # CI runs it with -q
    assert "thresher curate examples/quickstart.yaml" in first_screen
