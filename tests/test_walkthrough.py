"""A stranger's clone: every command of the README and of the examples' headers runs in a copy of the repository's
examples with nothing beside it (no shared data folder), and nothing they publish names the machine: not the
copy's absolute path, the home folder or the host name.

The commands run as written, one after another in the clone on one embedded Ray (``testkit/walkthrough.py``: its
workers work in the clone, as a user's do), each with ``--set`` overrides that only make it small
(fewer steps, rows, tokens, trials and variants; a tiny Llama in a relative folder where SmolLM2 would take minutes).
tests/test_published_model.py runs a ``pkg:`` base's adapter card in a fresh process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.tiny_llama import build_tiny_llama
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

TEXT_SUFFIXES = {".json", ".jsonl", ".yaml", ".yml", ".md", ".html", ".txt", ".csv", ".log", ""}
VOCABULARIES = {"tokenizer.json", "vocab.json", "merges.txt"}
VERBS = ["curate", "python", "train", "eval", "compare", "tune"]  # the order the walkthroughs run them in


def command(line: str) -> str:
    """A command line without its comment (``# ...`` or ``  (...)``)."""
    return re.split(r"#|\s{2,}\(", line)[0].strip()


def readme_commands() -> list[str]:
    """The ``thresher ...`` lines of the README's code blocks and the examples' header comments (``#   thresher``),
    and the ``python -m thresher...`` commands there; ``pip install`` steps are left to the test's environment."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S):
        found += [command(line) for line in block.splitlines()]
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#   "):
                found += [command(part) for part in line[4:].split("&&")]
    commands = [
        c
        for c in dict.fromkeys(found)
        if c.startswith(("thresher ", "python -m thresher")) and "--set" not in c and "--input" not in c
    ]
    # a command on a run's output (thresher train out/tune-.../best_config.yaml) runs after every other
    return sorted(
        commands,
        key=lambda c: (
            len(VERBS)
            if "out/" in c.split("#")[0].split()[2]
            else VERBS.index(c.split()[1] if c.startswith("thresher") else "python")
        ),
    )


def smaller(command: str, tiny: Path) -> list[str]:
    """``--set`` overrides that make ``command`` small (its config file's name says which)."""
    tiny_model = f"{{name_or_path: {tiny}, gguf_file: null}}"
    train = [
        "optim.max_steps=1",
        "optim.grad_accum=1",
        "optim.warmup_steps=0",
        "data.max_seq_len=128",
        "scaling.num_workers=1",
        "eval.every_steps=1",
        "eval.max_rows=2",
        "checkpoint.every_steps=1",
    ]
    by_config = {
        "train_smollm2_lora.yaml": [f"model={tiny_model}", *train],
        "train_smollm2_dpo.yaml": [f"model={tiny_model}", *train],
        "eval_smollm2.yaml": ["data.max_rows=2", "generation.max_new_tokens=4", "bootstrap.samples=50"],
        "compare_smollm2.yaml": [
            f"train.model={tiny_model}",
            *(f"train.{o}" for o in train),
            "variants=[{name: lora, set: {method: lora}}]",
            "eval.data.max_rows=2",
            "eval.generation.max_new_tokens=4",
            "eval.bootstrap.samples=50",
        ],
        "compare_ablation_smollm2.yaml": [
            f"train.model={tiny_model}",
            *(f"train.{o}" for o in train),
            "variants=[{name: no-quality, curate: {drop: [quality]}}]",
            "eval.data.max_rows=2",
            "eval.generation.max_new_tokens=4",
            "eval.bootstrap.samples=50",
        ],
        "tune_smollm2_lora.yaml": [f"train.model={tiny_model}", *(f"train.{o}" for o in train), "num_samples=1"],
        "semantic_dedup.yaml": ["stages.2.embed.max_chars=200"],  # the encoder's cost grows with the text
        "augment_paraphrase.yaml": [
            f"stages.1.augment.methods.0.paraphrase.model={tiny_model}",
            "stages.1.augment.methods.0.paraphrase.generation.max_new_tokens=8",
        ],
    }
    name = next((Path(word).name for word in shlex.split(command) if word.endswith(".yaml")), "")
    return [arg for override in by_config.get(name, []) for arg in ("--set", override)]


def published(folder: Path) -> list[Path]:
    """The text files under ``folder`` but a model's vocabulary (which holds any short word, a host name's too) and
    Ray Tune's own state of a search (``search/``: for resuming it, where it ran)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix in TEXT_SUFFIXES
        and p.name not in VOCABULARIES
        and "search" not in p.relative_to(folder).parts[1:2]
    )


def leaks(folder: Path, needles: list[str]) -> list[str]:
    """``file: needle`` for every published text file under ``folder`` that holds one of ``needles`` (a path, or a
    host name matched as a whole word)."""
    found = []
    for path in published(folder):
        text = path.read_text(encoding="utf-8", errors="replace")
        for needle in needles:
            if re.search(
                rf"(?<![\w.-]){re.escape(needle)}(?![\w.-])" if "/" not in needle else re.escape(needle), text
            ):
                found.append(f"{path.relative_to(folder)}: {needle}")
    return found


def needles(clone: Path) -> list[str]:
    """What no published file may say: the clone's absolute path, the home folder, the host name."""
    return list(dict.fromkeys([str(clone), str(clone.resolve()), str(Path.home()) + "/", socket.gethostname()]))


def test_the_scan_finds_a_planted_path_home_folder_and_host_name(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/clean.json").write_text('{"path": "out/quickstart", "host": "some-other-host"}')
    assert leaks(tmp_path / "run", needles(tmp_path)) == []
    planted = {
        "card.md": f"trained in {tmp_path}/out",
        "config.yaml": f"path: {Path.home()}/data",
        "report.html": f"<p>on {socket.gethostname()}</p>",
    }
    for name, text in planted.items():
        (tmp_path / "run" / name).write_text(text)
    assert sorted(found.split(":")[0] for found in leaks(tmp_path / "run", needles(tmp_path))) == sorted(planted)


def test_every_readme_and_example_command_runs_from_a_clone_and_publishes_no_machine_path(tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "examples", clone / "examples")
    assert not (tmp_path / "shared").exists() and not (clone.parent / "shared").exists()
    gsm8k = (clone / "examples/data/gsm8k_train.jsonl").read_text().splitlines()[:200]
    build_tiny_llama(clone / "tiny-llama", gsm8k + [(clone / "examples/reviews/reviews.jsonl").read_text()])
    tiny = Path("tiny-llama")  # a relative model folder: the workers find it where the commands run
    commands = readme_commands()
    assert (
        "thresher curate examples/quickstart.yaml" in commands
        and "thresher tune examples/tune_smollm2_lora.yaml" in commands
        and len(commands) >= 14
    ), commands
    argvs = [shlex.split(command) + smaller(command, tiny) for command in commands]
    run = subprocess.run(
        [sys.executable, "-m", "testkit.walkthrough", json.dumps(argvs)],
        cwd=clone,
        text=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stderr[-5000:]
    assert leaks(clone / "out", needles(clone)) == []
    assert str(clone) not in run.stdout  # the summaries the commands print name their outputs as given
