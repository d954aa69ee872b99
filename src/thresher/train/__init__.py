"""Ray Train recipes: fine-tune causal LMs (full/DDP, DeepSpeed ZeRO, LoRA/QLoRA/DoRA, prefix and prompt tuning)
on curated Parquet; ``thresher train CONFIG`` calls :func:`main`."""

from __future__ import annotations

from typing import Any


def main(data: dict[str, Any], address: str | None = None) -> dict:
    """Validate the training config mapping, train on Ray, write ``<output.path>/model`` and ``metrics.json``.

    Config errors raise ``thresher.core.config.ConfigError`` (the CLI exits 2) naming the key.
    """
    from thresher.train.config import parse_config

    cfg = parse_config(data)
    from thresher.train.run import run  # torch, transformers, Ray: after the config is known to be valid

    return run(cfg, address=address)
