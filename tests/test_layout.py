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
