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
    # compare curates and trains its variants; eval reads train's models
    "evaluate": {"core", "runtime", "models", "train", "curate"},
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


# -- curation code moves key rows through the execution interface only ------------------------------------------

IMPLEMENTATIONS = {"LocalTable", "LocalRows", "RayRows", "LocalTasks", "RayTasks"}
RAY_DATA_METHODS = {
    "repartition",
    "map_batches",
    "iter_internal_ref_bundles",
    "materialize",
    "take_all",
    "to_arrow_refs",
    "random_shuffle",
    "write_datasink",
}
GROUPED_DATA_METHODS = {"map_groups", "aggregate", "count", "sum", "min", "max", "mean", "std"}
RAY_PRIVATE_ATTRIBUTES = {"_logical_plan", "_plan", "_internal", "_private", "_raylet"}


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def execution_leaks(source: str) -> list[int]:
    """Lines of ``source`` that reach past the execution interface (``thresher.curate.execution.rows.KeyRows``): a
    check of which implementation holds the rows (``isinstance(..., LocalRows)``, ``is_local``), a Ray private
    module or attribute (``ray.data._internal``, ``._logical_plan``, ``ray._private``), or a Ray Data method call
    (``.map_batches(``, ``.repartition(``, ``.union(`` on anything but a set built in place, ``.groupby(...)``
    followed by a method of Ray Data's grouped data: pandas code says ``.agg``, ``.size`` or iterates)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            if (
                len(node.args) == 2
                and {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} & IMPLEMENTATIONS
            ):
                found.append(line)
        elif isinstance(node, ast.Name | ast.Attribute) and "is_local" in (
            getattr(node, "id", 0),
            getattr(node, "attr", 0),
        ):
            found.append(line)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            private = any(n.split(".")[0] == "ray" and any(p.startswith("_") for p in n.split(".")) for n in names)
            if private or any(a.name == "is_local" for a in node.names):
                found.append(line)
        elif isinstance(node, ast.Attribute) and (
            node.attr in RAY_PRIVATE_ATTRIBUTES or (node.attr.startswith("_") and _root_name(node) == "ray")
        ):
            found.append(line)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, receiver = node.func.attr, node.func.value
            built_set = isinstance(receiver, (ast.Set, ast.SetComp)) or (
                isinstance(receiver, ast.Call)
                and isinstance(receiver.func, ast.Name)
                and receiver.func.id in ("set", "frozenset")
            )
            grouped = (
                name in GROUPED_DATA_METHODS
                and isinstance(receiver, ast.Call)
                and isinstance(receiver.func, ast.Attribute)
                and receiver.func.attr == "groupby"
            )
            if name in RAY_DATA_METHODS or (name == "union" and not built_set) or grouped:
                found.append(line)
    return sorted(set(found))


def test_curation_moves_key_rows_only_through_the_execution_interface():
    """Outside ``curate/execution/`` no curation module tells the two implementations of the key rows apart, reaches
    into Ray's private modules or attributes, or calls Ray Data's methods: a stage written against ``KeyRows``
    decides the same on Ray and in one process."""
    found = [
        f"{p.relative_to(PACKAGE)}:{line}"
        for p in sorted((PACKAGE / "curate").rglob("*.py"))
        if p.relative_to(PACKAGE).parts[1] != "execution"
        for line in execution_leaks(p.read_text())
    ]
    assert not found, "past the execution interface (use KeyRows' methods):\n" + "\n".join(found)


def test_the_execution_interface_check_finds_planted_leaks():
    planted = [
        "if isinstance(ds, LocalTable):\n    pass",
        "local = isinstance(keys, (RayRows, LocalRows))",
        "if is_local(refs):\n    pass",
        "from thresher.curate.execution.worker import is_local",
        "source = ds._logical_plan.dag",
        "from ray.data._internal.execution.interfaces import TaskContext",
        "import ray._private.worker",
        "node = ray._private.worker._global_node",
        "n = ds.count()\nds = ds.repartition(4, keys=['k'])",
        "out = ds.map_batches(fn, batch_format='pyarrow')",
        "both = left.union(right)",
        "out = ds.groupby('k').map_groups(fn)",
        "n = ds.groupby('k').count()",
        "for b in ds.iter_internal_ref_bundles():\n    pass",
        "rows = ds.take_all()",
    ]
    assert [execution_leaks(p) for p in planted] == [
        [1],
        [1],
        [1],
        [1],
        [1],
        [1],
        [1],
        [1],
        [2],
        [1],
        [1],
        [1],
        [1],
        [1],
        [1],
    ]
    clean = [
        "classes = frame.groupby('c')['h'].agg(['min', 'max'])",
        "sizes = frame.groupby(['c', 'h']).size()",
        "names = set().union(*found)",
        "text = ' '.join(words)",
        "def _is_local(path):\n    return True",
        "out = keys.map_blocks(fn).by_group(['k'], fn, partitions=2, rows=9, limit_rows=0).map_groups('k', fn)",
        "table = table.group_by('k').aggregate([('v', 'min')])",
    ]
    assert [execution_leaks(c) for c in clean] == [[]] * len(clean)


def test_the_execution_layer_imports_nothing_above_it():
    """``curate/execution`` runs what the phases give it (a sink, a reader of staged files): it imports only itself
    and the stage interface, never the writer, the run folder or a phase."""
    found = [
        f"{p.relative_to(PACKAGE)}: {name}"
        for p in sorted((PACKAGE / "curate" / "execution").rglob("*.py"))
        for name in imports(p)
        if name.startswith("thresher.curate.")
        and not name.startswith("thresher.curate.execution")
        and name != "thresher.curate.stage"
    ]
    assert not found, "the execution layer imports from above it:\n" + "\n".join(found)
