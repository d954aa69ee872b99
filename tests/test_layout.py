"""The package's layout is its architecture: one import package, and imports that follow the direction
core <- runtime <- curate, train, evaluate, jobs <- cli (``models`` beside core, shared by curate and evaluate);
curate and train never import each other; no curation code but the execution layer imports Ray."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "thresher"

# what each part may import of thresher (its own modules always)
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "runtime": {"core"},
    "jobs": {"core", "runtime"},
    "curate": {"core", "runtime", "models"},
    "train": {"core", "runtime", "models"},
    "evaluate": {"core", "runtime", "models", "train"},  # compare trains its variants; eval reads train's models
    "config_docs": {"core", "curate", "train", "evaluate"},  # what users can configure, from the config models
    "cli": {"core", "runtime", "jobs", "curate", "train", "evaluate", "config_docs"},
    "__main__": {"cli"},
    "__init__": set(),
}


def imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (anywhere in it, lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def part(rel: Path) -> str:
    return rel.parts[0].removesuffix(".py")


def test_one_top_level_package():
    assert sorted(p.name for p in (ROOT / "src").iterdir() if not p.name.endswith(".egg-info")) == ["thresher"]
    assert set(ALLOWED) == {part(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    for args in (["--version"], ["--help"]):
        done = subprocess.run([sys.executable, "-m", "thresher", *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.startswith(("thresher 0", "usage: thresher")), done


def test_imports_follow_the_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        own = part(rel)
        for name in imports(path):
            if name.split(".")[0] in ("cluster", "pipelines", "training", "models") and not name.startswith("thresher"):
                wrong.append(f"{rel}: {name} (the old top-level packages)")
            if name.startswith("thresher."):
                target = name.split(".")[1]
                if target != own and target not in ALLOWED[own]:
                    wrong.append(f"{rel}: {name}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_only_the_execution_layer_imports_ray_in_curation():
    found = {
        str(p.relative_to(PACKAGE))
        for p in (PACKAGE / "curate").rglob("*.py")
        if not p.relative_to(PACKAGE).parts[1] == "execution"
        and any(n == "ray" or n.startswith("ray.") for n in imports(p))
    }
    assert not found, "curation modules importing Ray (use curate/execution)"


def test_no_import_cycles():
    """No module imports one that imports it back, directly or through others (lazy imports included)."""
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("thresher"):
                deps |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                }
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path, name, dep])
            if dep not in state:
                visit(dep, [*path, name])
        state[name] = 2

    for name in sorted(modules):
        if name not in state:
            visit(name, [])


METHOD_MODULES = {"train/methods.py"}  # the registries of training methods, where their names are compared


def method_comparisons(source: str) -> list[int]:
    """Lines of ``source`` that compare something with a training method's name (``== "lora"``, ``in ("dpo",
    "orpo")``, ``case "full"``) or list method names (``("lora", "qlora")``): what the registries' entries answer."""
    from thresher.train.methods import ADAPTERS, OBJECTIVES

    name = "[\"'](?:" + "|".join(map(re.escape, sorted({*ADAPTERS, *OBJECTIVES}, key=len, reverse=True))) + ")[\"']"
    found = re.finditer(
        rf"(?:==|!=)\s*{name}|{name}\s*(?:==|!=)|\bin\s*[(\[{{][^)\]}}]*{name}|\bcase\s+{name}"
        rf"|[(\[{{]\s*{name}(?:\s*,\s*{name})+\s*,?\s*[)\]}}]",
        source,
    )
    return [source.count("\n", 0, m.start()) + 1 for m in found]


def test_training_methods_are_told_apart_only_by_their_registries():
    """``thresher.train.methods`` answers everything that differs per method: no other module compares a method's
    name (a method added there would silently fall into the other branch)."""
    found = [
        f"{p.relative_to(PACKAGE)}:{line}"
        for p in sorted(PACKAGE.rglob("*.py"))
        if str(p.relative_to(PACKAGE)) not in METHOD_MODULES
        for line in method_comparisons(p.read_text())
    ]
    assert not found, "method names compared outside train/methods.py:\n" + "\n".join(found)
    planted = [
        'if cfg.method == "lora":',
        "if 'qlora' != cfg.tuning:",
        'if cfg.method in (\n    "dpo", "orpo"):',
        'match cfg.method:\n    case "prefix":',
        'PEFT = ("lora", "qlora")',
        "x = cfg.dpo if m == 'dpo' else 0",
    ]
    assert [method_comparisons(p) for p in planted] == [[1], [1], [1], [2], [1], [1]]
    assert method_comparisons('if cfg.method == "linear" or column == "prompts" or cfg.dpo.adapter == "none":') == []


def stage_name_uses(source: str, names: set[str]) -> list[int]:
    """Lines of ``source`` that tell a stage apart by its name (one of ``names``): compare with it (``== "quality"``,
    ``in ("dedup_exact", ...)``, ``case "pii"``), list it in a module constant (``STAGES = ("dedup_exact", ...)``),
    pass it to a function about stages (``_stage_options(cfg, "langid")``) or look it up among the run's metrics,
    counts or stages (``manifest["metrics"].get("pii")``, ``by_stage["dedup_fuzzy"]``): what the stages' declarations
    (``Stage.report_sections``, ``gates``, ``card``, ...) answer."""
    tree = ast.parse(source)

    def named(node: ast.AST | None) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(named(e) for e in node.elts)

    def mentions_run(node: ast.AST) -> bool:
        return bool(re.search(r"metrics|by_stage|stages", ast.unparse(node)))

    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(named(n) for n in [node.left, *node.comparators]):
            lines.add(node.lineno)
        elif isinstance(node, ast.MatchValue) and named(node.value):
            lines.add(node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            args = [*node.args, *(k.value for k in node.keywords)]
            if "stage" in func.lower() and any(named(a) for a in args):
                lines.add(node.lineno)
            elif func == "get" and args and named(args[0]) and mentions_run(node.func):
                lines.add(node.lineno)
        elif isinstance(node, ast.Subscript) and named(node.slice) and mentions_run(node.value):
            lines.add(node.lineno)
    for statement in tree.body:  # module constants
        if isinstance(statement, (ast.Assign, ast.AnnAssign)) and statement.value is not None:
            if any(isinstance(n, ast.Constant) and n.value in names for n in ast.walk(statement.value)):
                lines.add(statement.lineno)
    return sorted(lines)


def shared_curation_modules() -> list[Path]:
    """The curation modules every stage goes through: ``curate/*.py``, the execution layer and the report sections
    that are no stage's own (a section a stage declares, ``Stage.report_sections``, may hold what only it shows)."""
    from thresher.curate.report import SECTIONS, sections
    from thresher.curate.stage import REGISTRY, load_stages

    load_stages()
    sections()
    declared = {s for cls in REGISTRY.values() for s in cls.report_sections}
    own = {sys.modules[SECTIONS[s].__module__].__file__ for s in declared}
    curate = PACKAGE / "curate"
    found = [*curate.glob("*.py"), *(curate / "execution").glob("*.py"), *(curate / "report").glob("*.py")]
    return sorted(p for p in found if str(p) not in own)


def test_shared_curation_modules_name_no_stage():
    """Stages declare what they contribute to the report, the card and the gates: no shared module names a stage
    (one added, or renamed, would silently be left out)."""
    from thresher.curate.stage import REGISTRY, load_stages

    load_stages()
    names = {n for n, cls in REGISTRY.items() if cls.__module__.startswith("thresher.")}
    modules = shared_curation_modules()
    assert {"card.py", "gates.py", "manifest.py", "runner.py", "funnel.py", "dataset.py"} <= {p.name for p in modules}
    assert not {"duplicates.py", "quality.py"} & {p.name for p in modules}  # sections that stages declare
    found = [f"{p.relative_to(PACKAGE)}:{line}" for p in modules for line in stage_name_uses(p.read_text(), names)]
    assert not found, "stage names in shared curation modules:\n" + "\n".join(found)
    planted = [
        'if stage == "quality":\n    pass',
        "if 'pii' != name:\n    pass",
        'x = name in (\n    "dedup_exact", "dedup_fuzzy")',
        'match name:\n    case "langid":\n        pass',
        'DEDUP_STAGES = ("dedup_exact", "dedup_fuzzy", "dedup_semantic")',
        'DETAILED = {"quality": "quality"}',
        'options = _stage_options(cfg, "format")',
        'metrics = manifest.get("metrics", {}).get("pii")',
        'n = counts["by_stage"]["dedup_fuzzy"]["in"]',
    ]
    assert [stage_name_uses(p, names) for p in planted] == [[1], [1], [1], [2], [1], [1], [1], [1], [1]]
    unrelated = (
        'def f(f, splits):\n    header = ["split", "files"]\n    return f["split"], splits.get("format"), name == x'
    )
    assert stage_name_uses(unrelated, names) == []


def side_prefix_uses(text: str) -> list[int]:
    """Lines of ``text`` spelling a side column's prefix (``thresher.curate.stage.SIDE_KINDS``) in a string that is
    not a docstring."""
    from thresher.curate.stage import SIDE_KINDS

    tree = ast.parse(text)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return sorted(
        {
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and any(prefix in node.value for prefix in SIDE_KINDS.values())
        }
    )


def test_side_columns_are_named_in_one_place():
    """Metrics, summaries, seconds and the seen/generated counts travel beside the rows through one channel: only
    ``curate/stage.py`` spells their columns' names (``side_column``, ``side_of``, ``Stage.add_metric``)."""
    found = [
        f"{p.relative_to(PACKAGE)}:{line}"
        for p in sorted(PACKAGE.rglob("*.py"))
        if p != PACKAGE / "curate" / "stage.py"
        for line in side_prefix_uses(p.read_text())
    ]
    assert not found, "side column prefixes spelled outside curate/stage.py:\n" + "\n".join(found)
    planted = [
        'batch["_metric.pii.email"] = counts',
        'metric = f"_metric.{self.name}."',
        'if col.startswith("_summary."):\n    pass',
        'x = col.startswith(("_seen.", "_generated."))',
        'seconds = table["_seconds.read"]',
    ]
    assert [side_prefix_uses(p) for p in planted] == [[1], [1], [1], [1], [1]]
    assert side_prefix_uses('name = "_metric"\ny = "_report.x"') == []
