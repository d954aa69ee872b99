"""The ``thresher eval`` config, validated into typed models (a wrong key is a ConfigError naming it)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from thresher.core.config import StrictModel, validate
from thresher.core.storage import StorageOptions
from thresher.evaluate.scoring import METRICS
from thresher.models.generation import GenerationSpec
from thresher.train.config import ModelOptions

Metric = Literal["exact_match", "token_f1", "rouge_l", "bleu", "accuracy", "perplexity"]


class EvalData(StrictModel):
    path: str = Field(description="a thresher run's data/<split> folder, or Parquet/JSONL files, folders, globs")
    format: Literal["text", "alpaca", "chat"] = Field(
        "alpaca", description=("how prompt and reference are read, as training renders them")
    )
    text_field: str = Field("text", description="format text: the prompt column")
    reference_field: str | None = Field(None, description="format text: the column of the expected continuation")
    id_field: str = Field("id", description="ids of the examples (the row number when the column is absent)")
    max_rows: int | None = Field(None, gt=0, description="evaluate the first N rows")


class GenerationOptions(GenerationSpec):
    num_actors: int = Field(1, gt=0, description="model replicas in the Ray Data actor pool")
    use_gpu: bool = Field(False, description="one GPU per actor")


class RegexExtract(StrictModel):
    regex: str = Field(description="the answer is the last match (its group 1 when the pattern has a group)")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return value


class AnswerOptions(StrictModel):
    extract: Literal["last_number", "none"] | RegexExtract = Field(
        "none", description="applied to prediction and reference before exact_match, accuracy and token_f1"
    )

    @property
    def extractor(self) -> str | re.Pattern:
        return re.compile(self.extract.regex) if isinstance(self.extract, RegexExtract) else self.extract


class BootstrapOptions(StrictModel):
    samples: int = Field(1000, gt=0, description="bootstrap resamples of the examples")
    seed: int = Field(0, description="seed of the resampling")


class EvalOutput(StrictModel):
    path: str = Field(description="folder of predictions.parquet, metrics.json and report.html; local or s3://")


class EvalConfig(StrictModel):
    model: ModelOptions = Field(
        description=("the model: a thresher train output (adapter or full), an HF folder or pkg:NAME")
    )
    data: EvalData = Field(description="the evaluation set")
    generation: GenerationOptions = Field(GenerationOptions(), description="decoding and the actor pool")
    metrics: list[Metric] = Field(default_factory=lambda: list(METRICS), min_length=1, description="the metrics scored")
    answer: AnswerOptions = Field(AnswerOptions(), description="the answer compared by the answer metrics")
    bootstrap: BootstrapOptions = Field(BootstrapOptions(), description="the 95% intervals")
    output: EvalOutput = Field(description="where the outputs go")
    storage: StorageOptions | None = Field(None, description="S3 endpoint and region (as in the curation config)")


def parse_eval_config(data: dict[str, Any]) -> EvalConfig:
    """Validate an eval config mapping; ConfigError names the offending key."""
    return validate(EvalConfig, data)
