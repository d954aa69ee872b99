"""Writes the generated parts of the documentation from the code, so that they cannot drift from it.

* ``docs/stages/<name>.md``, one page per curation stage, and ``docs/stages/README.md``: generated whole, from each
  stage's module docstring and config model (``thresher.config_docs.stage_markdown``), with a YAML example: the
  stage's first use with options in ``examples/*.yaml`` (with its comments), else one written below (``EXAMPLES``),
  else the stage with its defaults.
* The key tables of ``docs/config/*.md`` and the report sections of ``docs/outputs.md``: the text between
  ``<!-- BEGIN GENERATED: WHAT -->`` and ``<!-- END GENERATED -->`` (``WHAT``: ``KIND SECTION`` for a config file's
  section, ``KIND .`` for its top-level keys, ``report sections``); the prose around them is written by hand.

    python docs/generate.py            # rewrite every generated page and block
    python docs/generate.py --check    # exit 1 naming each file that is not current

``tests/test_docs.py`` runs the check. The output depends on the code and ``examples/`` only: the same on every
machine and every run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from thresher import config_docs  # noqa: E402

BLOCK = re.compile(r"(<!-- BEGIN GENERATED: ([^>]+?) -->\n)(.*?)(<!-- END GENERATED -->)", re.S)
CONFIG_PAGES = {kind: DOCS / "config" / f"{kind}.md" for kind in config_docs.KINDS}
BLOCK_PAGES = [*CONFIG_PAGES.values(), DOCS / "outputs.md"]

# Examples of the stages that no file in examples/ uses with options (each validated by tests/test_docs.py).
EXAMPLES = {
    "classify": """\
stages:
  - embed: {model: "pkg:all_minilm_l6_v2"}
  - classify: {name: edu, method: linear, head: edu-v1, min_score: 0.5,        # a head trained once, then reused
               train: {positive: [edu_yes.txt], negative: [edu_no.jsonl]}}
  - classify: {name: spam, method: wordlist, words: {en: en.txt, "*": any.txt}, max_score: 0}
  - format: {template: text, quality_score: edu_score}                        # metadata.quality_score
""",
    "curriculum": """\
stages:
  - split: {}
  - curriculum:
      signals: {length: 1.0, readability: 1.0, rare_words: 1.0}   # weights; leave a signal out to skip it
      fields: null                 # text fields scored (default: input.text_field)
      order_splits: [train]        # data/<split>/ files ordered (and data/ itself when there is no split)
      rare_doc_fraction: 0.001     # rare word: in fewer than max(2, fraction x records) records
      max_words: 512               # distinct words per record sampled for rare_words (smallest hashes)
""",
    "filter": """\
stages:
  - filter:
      predicates:
        - {field: year, min: 2015, max: 2024}                 # numbers; bounds inclusive
        - {field: date, min: "2020-01-01", max: 2024-12-31}   # ISO 8601 dates/times (no zone: UTC)
        - {field: license, allow: [cc-by, cc0, mit]}          # text, ignoring case
        - {field: source, deny: [spamsite]}
        - {field: url, domain_deny: [example.com]}            # host of a URL (or a bare host), subdomains included
        - {field: title, regex: "^[A-Z]"}                     # RE2, linear time
        - {required: [title, text]}                           # present and not blank
""",
    "label_noise": """\
stages:
  - labels: {annotations_field: annotator_labels}   # consensus label per item (examples/labels_snli.yaml)
  - label_noise: {label_field: label, action: review, folds: 5}   # likely wrong labels go to data/review/
""",
    "unique_ids": """\
input:
  paths: ["data/raw/"]
  unique_ids: reject      # the runner adds unique_ids before the first global stage; reject: repeats after the first
""",
}


def stage_example(name: str) -> str | None:
    """The YAML shown on a stage's page (None: the stage with its defaults)."""
    if name in EXAMPLES:
        return EXAMPLES[name]
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            m = re.match(rf"^(\s*)- {re.escape(name)}:(.*)$", line)
            if not m:
                continue
            options = m.group(2).split("#")[0].strip()
            if options == "{}" or (not options and not _has_block(lines, i)):
                continue
            indent = len(m.group(1))
            entry = [line]
            for following in lines[i + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                entry.append(following)
            while entry and not entry[-1].strip():
                entry.pop()
            body = "\n".join("  " + e[indent:] for e in entry)
            return f"# {path.relative_to(ROOT).as_posix()}\nstages:\n{body}\n"
    return None


def _has_block(lines: list[str], i: int) -> bool:
    """Whether the stage entry at line ``i`` continues on the next lines (a block of options)."""
    indent = len(lines[i]) - len(lines[i].lstrip())
    following = next((line for line in lines[i + 1 :] if line.strip()), "")
    return len(following) - len(following.lstrip()) > indent + 2


def stage_pages() -> dict[Path, str]:
    """Every generated stage page, by path."""
    pages = {DOCS / "stages" / "README.md": config_docs.stages_index_markdown()}
    for name in config_docs._stages():
        pages[DOCS / "stages" / f"{name}.md"] = config_docs.stage_markdown(name, stage_example(name))
    return pages


def block(what: str) -> str:
    """The generated text of one block."""
    if what == "report sections":
        return config_docs.report_sections_markdown()
    kind, section = what.split()
    return config_docs.config_section_markdown(kind, section)


def fill(text: str) -> str:
    """``text`` with every generated block rewritten."""
    return BLOCK.sub(lambda m: f"{m.group(1)}{block(m.group(2).strip())}\n{m.group(4)}", text)


def blocks(text: str) -> list[str]:
    """The generated blocks of a page (their ``WHAT``)."""
    return [m.group(2).strip() for m in BLOCK.finditer(text)]


def expected() -> dict[Path, str]:
    """Every generated file (whole or with its blocks filled) as it should be."""
    pages = stage_pages()
    for path in BLOCK_PAGES:
        if path.exists():
            pages[path] = fill(path.read_text(encoding="utf-8"))
    return pages


def stale() -> list[str]:
    """The generated files that differ from what the code gives, or are missing, or are stage pages without a
    stage (paths relative to the repository)."""
    found = []
    pages = expected()
    for path, text in sorted(pages.items()):
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            found.append(path.relative_to(ROOT).as_posix())
    for path in sorted((DOCS / "stages").glob("*.md")):
        if path not in pages:
            found.append(f"{path.relative_to(ROOT).as_posix()} (no such stage)")
    return found


def write() -> list[str]:
    """Write every generated file; remove stage pages without a stage; returns what changed."""
    changed = stale()
    for path, text in expected().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    pages = stage_pages()
    for path in (DOCS / "stages").glob("*.md"):
        if path not in pages:
            path.unlink()
    return changed


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        found = stale()
        for name in found:
            print(f"stale: {name}")
        if found:
            print("run: python docs/generate.py")
        return 1 if found else 0
    if argv:
        print(__doc__.split("\n\n")[-2])
        return 2
    for name in write():
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
