"""The ``thresher eval`` config, validated into typed models (a wrong key is a ConfigError naming it)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from thresher.core.config import StrictModel, validate
from thresher.core.groups import year_field
from thresher.core.patterns import RE2_LIMITS, compile_re2
from thresher.core.storage import StorageOptions, StorageUri
from thresher.evaluate.scoring import METRICS
from thresher.models.generation import GenerationSpec
from thresher.train.config import ModelOptions

Metric = Literal["exact_match", "token_f1", "rouge_l", "bleu", "accuracy", "perplexity"]


class EvalData(StrictModel):
    path: StorageUri = Field(description="a thresher run's data/<split> folder, or Parquet/JSONL files, folders, globs")
    format: Literal["text", "alpaca", "chat"] = Field(
        "alpaca", description=("how prompt and reference are read, as training renders them")
    )
    text_field: str = Field("text", description="format text: the prompt column")
    reference_field: str | None = Field(None, description="format text: the column of the expected continuation")
    id_field: str = Field("id", description="ids of the examples (the row number when the column is absent)")
    max_rows: int | None = Field(None, gt=0, description="evaluate the first N rows (the files are read whole first)")


class GenerationOptions(GenerationSpec):
    num_actors: int = Field(1, gt=0, description="model replicas in the Ray Data actor pool")
    use_gpu: bool = Field(False, description="one GPU per actor")


class RegexExtract(StrictModel):
    regex: str = Field(
        description=f"the answer is the last match (its group 1 when the pattern has a group); {RE2_LIMITS}"
    )

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compile_re2(value)
        except ValueError as e:
            raise ValueError(f"not a valid RE2 pattern ({e}); {RE2_LIMITS}") from None
        return value


class AnswerOptions(StrictModel):
    extract: Literal["last_number", "none"] | RegexExtract = Field(
        "none", description="applied to prediction and reference before exact_match, accuracy and token_f1"
    )

    @property
    def extractor(self) -> Any:
        """``last_number``, ``none``, or the regex compiled by RE2."""
        return compile_re2(self.extract.regex) if isinstance(self.extract, RegexExtract) else self.extract


class BootstrapOptions(StrictModel):
    samples: int = Field(1000, gt=0, description="bootstrap resamples of the examples")
    seed: int = Field(0, description="seed of the resampling")


LENGTH_BUCKET = "length_bucket"
SLICE_SPEC = re.compile(r"^[^()\s][^()]*$")


class SliceOptions(StrictModel):
    min_items: int = Field(
        10, gt=0, description="a slice with fewer scored items than this gets no interval: it is marked small"
    )
    length_edges: list[int] = Field(
        [16, 32, 64, 128, 256, 512, 1024],
        min_length=1,
        description="length_bucket: the lower edges (prompt tokens) of the buckets after the first, increasing",
    )

    @field_validator("length_edges")
    @classmethod
    def _increasing(cls, edges: list[int]) -> list[int]:
        if edges[0] <= 0 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("the edges must be positive and strictly increasing")
        return edges


class CoverageData(StrictModel):
    path: StorageUri = Field(
        description="the training data: a thresher run's data/train folder, or Parquet/JSONL files"
    )
    format: Literal["text", "alpaca", "chat"] = Field("alpaca", description="how its prompts are read")
    text_field: str = Field("text", description="format text: the prompt column")


class CoverageOptions(StrictModel):
    data: CoverageData = Field(description="the training data whose prompts the test prompts are compared with")
    max_rows: int = Field(20000, gt=0, description="the first N training records are embedded")
    clusters: int = Field(8, gt=0, description="clusters of the test prompts (spherical k-means)")
    max_ratio: float = Field(
        0.5, gt=0, description="a cluster whose training share is under this times its test share is a gap"
    )
    model: str = Field("pkg:all_minilm_l6_v2", description="sentence encoder folder, or pkg:NAME")
    num_actors: int = Field(1, gt=0, description="encoder replicas in the Ray Data actor pool (1 CPU each)")
    seed: int = Field(0, description="seed of the clustering")


class CandidateOptions(StrictModel):
    write: bool = Field(True, description="write candidates.parquet (one more forward pass per batch)")
    low_confidence_fraction: float = Field(
        0.2, ge=0, le=1, description="the least confident fraction of the examples is flagged low_confidence"
    )
    answer_metric: Literal["exact_match", "accuracy"] | None = Field(
        None,
        description="a score of 0 on it flags wrong_answer; default: exact_match, else accuracy, when scored",
    )
    coverage: CoverageOptions | None = Field(
        None, description="flag coverage_gap: test prompts in clusters the training data hardly holds"
    )


class EvalOutput(StrictModel):
    path: StorageUri = Field(
        description="folder of predictions.parquet, rejects.parquet, metrics.json, report.html and candidates.parquet; "
        "local or s3://"
    )


class EvalConfig(StrictModel):
    model: ModelOptions = Field(
        description=("the model: a thresher train output (adapter or full), an HF folder or pkg:NAME")
    )
    data: EvalData = Field(description="the evaluation set")
    generation: GenerationOptions = Field(GenerationOptions(), description="decoding and the actor pool")
    metrics: list[Metric] = Field(default_factory=lambda: list(METRICS), min_length=1, description="the metrics scored")
    answer: AnswerOptions = Field(AnswerOptions(), description="the answer compared by the answer metrics")
    bootstrap: BootstrapOptions = Field(BootstrapOptions(), description="the 95% intervals")
    slices: list[str] = Field(
        default_factory=list,
        description="fields of the records to slice the metrics by, length_bucket (prompt tokens) or year(FIELD)",
    )
    slice_options: SliceOptions = Field(SliceOptions(), description="small slices and length buckets")
    candidates: CandidateOptions = Field(
        CandidateOptions(), description="candidates.parquet: the examples to improve the data on"
    )
    output: EvalOutput = Field(description="where the outputs go")
    storage: StorageOptions | None = Field(None, description="S3 endpoint and region (as in the curation config)")

    @field_validator("slices")
    @classmethod
    def _slice_specs(cls, slices: list[str]) -> list[str]:
        for i, spec in enumerate(slices):
            if not (spec == LENGTH_BUCKET or year_field(spec) or SLICE_SPEC.match(spec)):
                raise ValueError(f"slices.{i}: {spec!r} is not a field name, {LENGTH_BUCKET} or year(FIELD)")
        if len(set(slices)) < len(slices):
            raise ValueError(f"the slices must be unique: {', '.join(slices)}")
        return slices

    @model_validator(mode="after")
    def _answer_metric_scored(self):
        metric = self.candidates.answer_metric
        if metric and metric not in self.metrics:
            raise ValueError(f"candidates.answer_metric: {metric} is not among the metrics scored")
        return self

    def slice_fields(self) -> list[str]:
        """The record fields the slices read."""
        fields = [year_field(s) or s for s in self.slices if s != LENGTH_BUCKET]
        return list(dict.fromkeys(fields))

    def answer_metric(self) -> str | None:
        """The metric whose 0 flags a wrong answer among the candidates."""
        return self.candidates.answer_metric or next(
            (m for m in ("exact_match", "accuracy") if m in self.metrics), None
        )


def parse_eval_config(data: dict[str, Any]) -> EvalConfig:
    """Validate an eval config mapping; ConfigError names the offending key."""
    return validate(EvalConfig, data)
