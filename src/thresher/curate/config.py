"""The curation config (design.md's contract), validated into typed models."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from thresher.core.config import ConfigError, StrictModel, validate
from thresher.core.storage import StorageOptions, StorageUri
from thresher.curate.gates import GatesConfig
from thresher.curate.stage import REGISTRY, GlobalStage, Stage, StageConfig, load_stages

FORMATS = ("jsonl", "parquet", "text", "wet")


class InputConfig(StrictModel):
    paths: list[StorageUri] = Field(
        min_length=1,
        description=(
            "files, folders or globs (* ? [..] within a folder, ** any depth; names starting with . or _ skipped), local "
            "or s3://; one path may be given as a string"
        ),
    )
    format: Literal["jsonl", "parquet", "text", "wet"] | None = Field(
        None, description=("default: inferred from each file's extension")
    )
    text_field: str = Field("text", description="the field holding the text the stages act on by default")
    id_field: str | None = Field(
        "id",
        description=(
            "the field holding the record's id; where absent, the id is derived from the source file and byte offset (or "
            "row index)"
        ),
    )
    fields: list[str] | None = Field(
        None,
        description=(
            "original fields to keep (the others are counted per field); default: every field of every record"
        ),
    )
    max_doc_chars: int = Field(10_000_000, gt=0, description="longer documents are rejected at read")
    block_bytes: int = Field(
        16 << 20,
        gt=0,
        description=(
            "JSONL is read in ranges of this many (decompressed) bytes, in parallel; a .gz or .zst file in at most 8"
        ),
    )
    unique_ids: Literal["keep", "reject"] = Field(
        "keep",
        description=(
            "records whose id repeats: keep them all (counted in the manifest), or reject every occurrence after the "
            "first (reason duplicate_id)"
        ),
    )

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path(cls, v):
        return [v] if isinstance(v, str) else v


class CardConfig(StrictModel):
    license: str = Field(
        "unknown",
        description=(
            "the data's licence as a Hugging Face Hub licence id (cc-by-4.0, apache-2.0, odc-by, other, ...), for the "
            "dataset card; unknown unless given"
        ),
    )
    pretty_name: str | None = Field(None, description="the dataset's name on the card; default: the run folder's name")


class RepresentationConfig(StrictModel):
    fields: list[str] = Field(
        default_factory=list,
        description="metadata fields of the kept records (source, lang, label, ...) or year(FIELD) of a date field",
    )
    targets: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="per field, the target share of each of its values (shares summing to 1)"
    )
    tolerance: float = Field(
        0.1, gt=0, le=1, description="a value whose share is further than this from its target share is a skew"
    )

    @model_validator(mode="after")
    def _targets_of_fields(self):
        for field, shares in self.targets.items():
            if field not in self.fields:
                raise ValueError(f"targets.{field}: not among the fields ({', '.join(self.fields) or 'none'})")
            if any(v < 0 for v in shares.values()) or abs(sum(shares.values()) - 1) > 1e-6:
                raise ValueError(f"targets.{field}: the shares must be at least 0 and sum to 1")
        return self


class ReportConfig(StrictModel):
    representation: RepresentationConfig = Field(
        RepresentationConfig(),
        description="counts and shares of metadata fields, against target shares (a list: the fields)",
    )

    @field_validator("representation", mode="before")
    @classmethod
    def _fields_list(cls, v):
        return {"fields": v} if isinstance(v, list) else v


class OutputConfig(StrictModel):
    path: StorageUri = Field(description="the run folder, local or s3://")
    target_file_mb: int = Field(256, gt=0, description="size of the Parquet files of data/ and rejects/")
    card: CardConfig = Field(CardConfig(), description="what the dataset card (README.md) says that the data cannot")
    reference_index: bool = Field(
        False,
        description=(
            "write the dedup stages' reference index (index/) at commit, for later runs' against; without it a later "
            "run builds it from data/ when it first needs it (which costs the stages' keys again)"
        ),
    )


class ExecutionConfig(StrictModel):
    batch_size: int = Field(1024, gt=0, description="records per batch handed to the map stages")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of the embedded local Ray (default: all)")
    broadcast_limit_rows: int = Field(
        2_000_000,
        ge=0,
        description=(
            "tables of key rows up to this size go to every task instead of a join; 0 forces the partitioned paths"
        ),
    )
    fresh_workers_after_rows: int | None = Field(
        1_000_000,
        ge=0,
        description=(
            "after decisions over at least this many key rows the apply phase starts on fresh worker processes, giving "
            "back the memory the deciding workers kept (starting them takes a few seconds); null: never"
        ),
    )


class StageSpec(StrictModel):
    name: str
    config: StageConfig


class CurateConfig(StrictModel):
    input: InputConfig = Field(description="what to read")
    output: OutputConfig = Field(description="where the run folder goes")
    stages: list[StageSpec] = Field([], description="the stages, in order: a name, or {name: options}")
    storage: StorageOptions | None = Field(
        None, description=("S3 endpoint and region; default: the standard AWS environment variables")
    )
    execution: ExecutionConfig = Field(ExecutionConfig(), description="how the work is cut and scheduled")
    gates: GatesConfig = Field(
        GatesConfig(), description="limits the finished run must meet; each one left out is not checked"
    )
    report: ReportConfig = Field(ReportConfig(), description="what the report and card add to their standard sections")

    @field_validator("stages", mode="before")
    @classmethod
    def _stages(cls, v):
        if v is None:
            return []
        if not isinstance(v, list):
            raise ValueError(f"a list of stages (- NAME or - NAME: {{options}}), got a {type(v).__name__}")
        return [_parse_stage(i, item) for i, item in enumerate(v)]

    @model_validator(mode="after")
    def _global_stages_once(self):
        for i, spec in enumerate(self.stages):
            if issubclass(REGISTRY[spec.name], GlobalStage) and spec.name in (s.name for s in self.stages[:i]):
                raise ValueError(
                    f"stages.{i}.{spec.name}: a global stage runs once per pipeline (it is also an earlier stage)"
                )
        return self

    @model_validator(mode="after")
    def _gated_stages_exist(self):
        known = {"read", *self.stage_names()}
        if self.input.unique_ids == "reject" or any(issubclass(REGISTRY[s.name], GlobalStage) for s in self.stages):
            known.add("unique_ids")  # repeated ids are counted before the first global stage
        _named_in_run("max_stage_rejected_fraction", self.gates.max_stage_rejected_fraction, sorted(known), "stage")
        return self

    @model_validator(mode="after")
    def _gated_splits_exist(self):
        made = [n for s in self.stages for n in REGISTRY[s.name].splits(s.config.model_dump(mode="json"))]
        known = made or ["all"]  # without a split stage the kept records are the one split all
        _named_in_run("min_split_records", self.gates.min_split_records, known, "split")
        return self

    def stage_names(self) -> list[str]:
        """The stages' names in the run (counts, rejects, gates): a map stage used again is ``<name>-2``, ..."""
        names, uses = [], Counter()
        for s in self.stages:
            uses[s.name] += 1
            names.append(f"{s.name}-{uses[s.name]}" if uses[s.name] > 1 else s.name)
        return names

    def stage_classes(self) -> list[tuple[type[Stage], StageConfig, str]]:
        """(class, options, name in the run) of each stage."""
        return [(REGISTRY[s.name], s.config, name) for s, name in zip(self.stages, self.stage_names())]

    def dump(self) -> dict[str, Any]:
        """The config as plain data, stages in their YAML shape."""
        data = self.model_dump(mode="json", exclude={"stages"})
        data["stages"] = [{s.name: s.config.model_dump(mode="json")} for s in self.stages]
        return data


def _named_in_run(gate: str, names, known: list[str], kind: str) -> None:
    """A ValueError naming ``gates.<gate>.<name>`` for the first of ``names`` not among the run's ``known`` stages
    or splits (``kind``)."""
    for name in names:
        if name not in known:
            problem = "no such stage in this run" if kind == "stage" else "no stage of this run makes that split"
            raise ValueError(f"gates.{gate}.{name}: {problem} ({kind}s: {', '.join(known)})")


def _parse_stage(i: int, item: Any) -> StageSpec:
    if isinstance(item, StageSpec):
        return item
    if isinstance(item, str):
        item = {item: {}}
    if not isinstance(item, dict) or len(item) != 1:
        raise ValueError(f"stages.{i}: each stage is a mapping {{name: options}}")
    ((name, options),) = item.items()
    load_stages()
    if name not in REGISTRY:
        raise ValueError(f"stages.{i}: unknown stage {name!r} (known: {', '.join(sorted(REGISTRY))})")
    cfg = validate(REGISTRY[name].Config, {} if options is None else options, prefix=f"stages.{i}.{name}")
    return StageSpec(name=name, config=cfg)


def parse_config(data: dict[str, Any]) -> CurateConfig:
    """Validate a config mapping; errors raise ConfigError naming the key path."""
    try:
        return validate(CurateConfig, data)
    except ConfigError:
        raise
    except ValueError as e:  # pragma: no cover - pydantic wraps validator errors
        raise ConfigError(str(e)) from None
