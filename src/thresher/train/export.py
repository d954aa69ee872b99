"""Writing the trained model to ``<output.path>/model/`` in Hugging Face format, and copying folders to and
from storage URIs (local or s3://).

* ``full``: the whole model (``config.json`` + safetensors), loadable with ``AutoModelForCausalLM``.
* ``lora``/``qlora``/``prefix``/``prompt``: the PEFT adapter (``adapter_config.json`` + weights), loadable with
  ``PeftModel.from_pretrained(base, path)``; with ``output.merge_lora`` the LoRA is merged into the base and the
  result saved as a full model (qlora: merged into a fresh, unquantized copy of the base in ``model.dtype``).

The tokenizer is saved beside it, and a README.md says how to load the result. Both name the base model by
:func:`base_name`, never by a path of this machine. A model loaded from GGUF is
saved dequantized (see ``models.drop_gguf_record``), so plain transformers loads it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from thresher.core.config import ConfigError
from thresher.core.storage import Storage, join
from thresher.models.resolve import given_name, published_name
from thresher.train.config import ModelOptions, TrainConfig

log = logging.getLogger(__name__)

BASE_RECORD = "thresher.json"
COMBINATIONS = ("cat", "svd", "linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")


def upload_dir(storage: Storage, local: str, uri: str) -> None:
    """Replace the folder at ``uri`` with a copy of the local folder ``local``."""
    storage.delete(uri)
    fs, path = storage.resolve(uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(local, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def download_dir(storage: Storage, uri: str, local: str) -> str:
    """Copy the folder at ``uri`` to ``local``; returns ``local`` (local URIs are returned as they are)."""
    fs, path = storage.resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        return path
    os.makedirs(local, exist_ok=True)
    pafs.copy_files(path, local, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return local


def load_instructions(cfg: TrainConfig, merged: bool, base: str) -> str:
    """The model card: the base by its published name ``base`` and code that loads the result without thresher once
    ``PATH`` names this folder. An adapter's base loads from a ``pkg:`` base's package folder (found at run time), a
    GGUF file's folder as given (the Hub repository of ``base`` may not hold that file), else by ``base``. The code's
    strings are written as JSON, which Python reads as they are."""
    from thresher.train.models import model_dir

    model = cfg.model
    described = f"Base model: `{base}`" + (f" (GGUF `{model.gguf_file}`)" if model.gguf_file else "")
    imports = "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
    path = 'PATH = "path/to/model"  # this folder, the one holding this README\n'
    if merged or not cfg.adapter.saves_adapter:
        code = f"{imports}\n{path}model = AutoModelForCausalLM.from_pretrained(PATH)\n"
    else:
        imports = f"from peft import PeftModel\n{imports}"
        if model.name_or_path.startswith("pkg:"):
            package = model.name_or_path.removeprefix("pkg:")
            imports = f"import importlib.util\n\n{imports}"
            source = f"importlib.util.find_spec({json.dumps(package)}).submodule_search_locations[0]  # its folder"
            described += f", from the Python package `{package}`{install_hint(package)}"
        elif model.gguf_file and os.path.isdir(model_dir(model)):
            source = json.dumps(given_name(model.name_or_path))
        else:
            source = json.dumps(base)
        gguf = f", gguf_file={json.dumps(model.gguf_file)}" if model.gguf_file else ""
        code = (
            f"{imports}\n{path}BASE = {source}\nbase = AutoModelForCausalLM.from_pretrained(BASE{gguf})\n"
            "model = PeftModel.from_pretrained(base, PATH)\n"
        )
    return (
        f"# Fine-tuned with thresher ({cfg.method}{', LoRA merged' if merged else ''})\n\n{described}\n\n"
        f"```python\n{code}tokenizer = AutoTokenizer.from_pretrained(PATH)\n```\n"
    )


def install_hint(package: str) -> str:
    """`` (pip install --no-deps DIST==VERSION)`` for the distribution that installed ``package``; empty without one."""
    from importlib import metadata

    dists = metadata.packages_distributions().get(package)
    return f" (`pip install --no-deps {dists[0]}=={metadata.version(dists[0])}`)" if dists else ""


def base_name(options: ModelOptions) -> str:
    """The base model as the adapter's config and the card name it (:func:`thresher.models.resolve.published_name`)."""
    return published_name(options.name_or_path, options.gguf_file, options.hub_id)


def export_model(
    model, tokenizer, cfg: TrainConfig, storage: Storage, state_dict: dict | None = None, lineage: dict | None = None
) -> str:
    """Save ``model`` (the unwrapped, trained module) and the tokenizer to ``<output.path>/model``, with the data
    ``lineage`` in its thresher.json; returns it."""
    merged = cfg.output.merge_lora and cfg.adapter.mergeable
    if merged:
        from thresher.train.models import load_base_model

        model = cfg.adapter.merged(model, cfg, load_base_model)
    base = base_name(cfg.model)
    uri = join(cfg.output.path, "model")
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, state_dict=state_dict)
        name_base(folder, base)
        tokenizer.save_pretrained(folder)
        Path(folder, "README.md").write_text(load_instructions(cfg, merged, base))
        record = cfg.model.model_dump(exclude={"kernels"})  # ModelOptions, as thresher eval loads the base
        Path(folder, BASE_RECORD).write_text(
            json.dumps(
                {"model": record, "method": cfg.method, "tuning": cfg.tuning, "merged": merged, "lineage": lineage},
                indent=2,
            )
        )
        upload_dir(storage, folder, uri)
    log.info(
        "saved the %s to %s",
        "merged model" if merged else (f"{cfg.tuning} adapter" if cfg.adapter.saves_adapter else "model"),
        uri,
    )
    return uri


def name_base(folder: str, base: str) -> None:
    """Name the base ``base`` in the ``adapter_config.json`` of ``folder``, if any (PEFT writes the folder the base
    was loaded from)."""
    config = Path(folder, "adapter_config.json")
    if config.is_file():
        config.write_text(
            json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": base}, indent=2, sort_keys=True)
        )


# -- weighted combination of LoRA adapters ---------------------------------------------------------------------


def combine_adapters(
    adapters: list[tuple[str, float]],
    output: str,
    storage: Storage,
    combination: str = "cat",
    base: ModelOptions | None = None,
    svd_rank: int | None = None,
    density: float | None = None,
) -> str:
    """One LoRA adapter from several of the same base model, weighted (PEFT's ``add_weighted_adapter``).

    ``cat`` (default) is exact: the combined update is the weighted sum of the adapters' updates (its rank is the
    sum of theirs); ``svd`` approximates that sum at rank ``svd_rank``; ``linear`` averages the A and B matrices
    (adapters of one rank; rough); ``ties``/``dare_linear``/``dare_ties``/``magnitude_prune`` prune to
    ``density`` first. The base model is the one recorded in the first adapter's ``thresher.json`` (written by
    thresher's export) unless ``base`` is given. The tokenizer of the first adapter that has one is saved with the result.
    """
    import peft
    import torch
    from transformers import AutoTokenizer

    from thresher.train.models import load_base_model

    if len(adapters) < 2:
        raise ConfigError("combine: give at least two adapters")
    if combination not in COMBINATIONS:
        raise ConfigError(f"combine: combination must be one of {', '.join(COMBINATIONS)}, got {combination!r}")
    with tempfile.TemporaryDirectory() as tmp:
        local = [download_dir(storage, uri, os.path.join(tmp, f"adapter{i}")) for i, (uri, _) in enumerate(adapters)]
        for (uri, _), folder in zip(adapters, local):
            config = Path(folder, "adapter_config.json")
            if not config.is_file() or json.loads(config.read_text()).get("peft_type") != "LORA":
                raise ConfigError(f"combine: {uri} is not a LoRA adapter (no adapter_config.json of peft_type LORA)")
            if json.loads(config.read_text()).get("use_dora"):
                raise ConfigError(f"combine: {uri} is a DoRA adapter; only plain LoRA adapters combine")
        if base is None:
            record = Path(local[0], BASE_RECORD)
            if record.is_file():
                base = ModelOptions(**json.loads(record.read_text())["model"])
            else:
                base = ModelOptions(
                    name_or_path=json.loads(Path(local[0], "adapter_config.json").read_text())[
                        "base_model_name_or_path"
                    ]
                )
        model = peft.PeftModel.from_pretrained(load_base_model(base, torch.float32), local[0], adapter_name="a0")
        for i, folder in enumerate(local[1:], 1):
            model.load_adapter(folder, adapter_name=f"a{i}")
        names = [f"a{i}" for i in range(len(local))]
        # the result takes the first adapter's config with lora_alpha = r, i.e. scaling 1, unless that one is rsLoRA
        model.peft_config["a0"].use_rslora = False
        model.add_weighted_adapter(
            names,
            [w for _, w in adapters],
            adapter_name="default",
            combination_type=combination,
            svd_rank=svd_rank,
            density=density,
        )
        for name in names:
            model.delete_adapter(name)
        out = os.path.join(tmp, "combined")
        model.save_pretrained(out)
        name_base(out, base_name(base))
        tokenizers = [f for f in local if Path(f, "tokenizer_config.json").is_file()]
        if tokenizers:
            AutoTokenizer.from_pretrained(tokenizers[0]).save_pretrained(out)
        Path(out, BASE_RECORD).write_text(
            json.dumps(
                {
                    "model": base.model_dump(),
                    "method": "lora",
                    "merged": False,
                    "combined": [{"adapter": u, "weight": w} for u, w in adapters],
                    "combination": combination,
                },
                indent=2,
            )
        )
        upload_dir(storage, out, output)
    log.info("combined %d adapters (%s) into %s", len(adapters), combination, output)
    return output


def main(argv: list[str] | None = None) -> int:
    """``python -m thresher.train.export combine --adapter URI WEIGHT --adapter URI WEIGHT --output URI``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m thresher.train.export", description="combine LoRA adapters into one")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("combine", help="weighted combination of LoRA adapters of one base model")
    c.add_argument(
        "--adapter",
        nargs=2,
        action="append",
        required=True,
        metavar=("URI", "WEIGHT"),
        help="an adapter folder (local or s3://) and its weight; give two or more",
    )
    c.add_argument("--output", required=True, metavar="URI")
    c.add_argument("--combination", default="cat", choices=COMBINATIONS)
    c.add_argument("--svd-rank", type=int)
    c.add_argument("--density", type=float)
    c.add_argument("--base", metavar="NAME_OR_PATH", help="base model (default: the one the first adapter records)")
    c.add_argument("--gguf-file", help="GGUF file inside --base")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        adapters = [(uri, float(w)) for uri, w in args.adapter]
    except ValueError:
        print("combine: error: --adapter URI WEIGHT: WEIGHT must be a number", file=sys.stderr)
        return 2
    base = ModelOptions(name_or_path=args.base, gguf_file=args.gguf_file) if args.base else None
    try:
        combine_adapters(
            adapters, args.output, Storage.from_options(None), args.combination, base, args.svd_rank, args.density
        )
    except ConfigError as e:
        print(f"combine: error: {e}", file=sys.stderr)
        return 2
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
