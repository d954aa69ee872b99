"""The registries of training methods (``thresher.train.methods``): every entry is consistent with the config, and a
method registered here -- an objective (SFT with PaLM's z-loss) and an adapter (PEFT's IA3) -- is accepted by the
config parser and trained, evaluated and exported by the worker's own recipe, in this process (no Ray Train), without
a change to the package."""

from __future__ import annotations

import json
import typing

import pyarrow as pa
import pytest
import torch

from testkit.tiny_llama import build_tiny_llama
from thresher.core.config import ConfigError
from thresher.core.storage import Storage
from thresher.train.config import TrainConfig, parse_config
from thresher.train.data import IGNORE, Encoding, encode_batch
from thresher.train.loop import InThread, Job, Recipe, TrainerState
from thresher.train.methods import (
    ADAPTERS,
    OBJECTIVES,
    SFT,
    Adapter,
    LanguageModelingObjective,
    Objective,
    adapter_settings,
    method_names,
)
from thresher.train.sft import loss_sum, model_inputs, trained_tokens
from thresher.train.tracking import Tracker

SEQ = 160
QUESTIONS = [(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.") for a in range(3, 9) for b in range(2, 4)]
ENGINES = {"ddp", "deepspeed", "fsdp"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = [q + " " + a for q, a in QUESTIONS] + ["I cannot help with that."]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-methods"), texts * 3)


def config(method: str, out, name_or_path="m", **sections) -> dict:
    """A training config of ``method``: preference data for a preference objective, GPUs for an adapter that needs
    them (the config is only parsed then)."""
    preference = method in OBJECTIVES and OBJECTIVES[method].preference
    gpu = method in ADAPTERS and ADAPTERS[method].gpu_only is not None
    return {
        "model": {"name_or_path": str(name_or_path)},
        "data": {"train": "d", "format": "preference" if preference else "alpaca", "max_seq_len": SEQ},
        "method": method,
        "scaling": {"num_workers": 1, "use_gpu": gpu},
        "optim": {"max_steps": 2, "batch_size": 4, "lr": 3e-2},
        "output": {"path": str(out)},
        **sections,
    }


# -- the registries ---------------------------------------------------------------------------------------------


def test_the_config_takes_the_registered_methods():
    """``method`` may be each adapter (trained with sft) and each other objective, in that order, and no other."""
    assert typing.get_args(TrainConfig.model_fields["method"].annotation) == method_names()
    assert method_names() == (*ADAPTERS, *(n for n in OBJECTIVES if n != SFT))
    assert isinstance(OBJECTIVES[SFT], LanguageModelingObjective) and SFT not in method_names()
    with pytest.raises(
        ConfigError,
        match=r"^invalid config: method: Input should be 'full', 'lora', 'qlora', "
        r"'prefix', 'prompt', 'dpo' or 'orpo'$",
    ):
        parse_config(config(SFT, "out"))


@pytest.mark.parametrize("method", method_names())
def test_every_method_parses_into_registered_entries(method, tmp_path):
    """Each method parses into its objective and an adapter of the registries, whose sections are config sections;
    the adapter's declarations are what the config enforces."""
    cfg = parse_config(config(method, tmp_path))
    objective, adapter = cfg.objective, cfg.adapter
    assert OBJECTIVES[objective.name] is objective and ADAPTERS[adapter.name] is adapter and cfg.tuning == adapter.name
    assert objective is OBJECTIVES.get(method, OBJECTIVES[SFT]) and (method in ADAPTERS) == (adapter.name == method)
    for entry in (objective, adapter):
        assert entry.section is None or entry.section in TrainConfig.model_fields
    assert set(adapter.engines) <= ENGINES and "ddp" in adapter.engines
    assert set(adapter_settings(cfg)) == {a.section for a in ADAPTERS.values() if a.section}
    assert not (adapter.mergeable and not adapter.saves_adapter)  # only an adapter merges into its base
    for engine in ENGINES - {"ddp"} - set(adapter.engines):
        with pytest.raises(ConfigError, match=f"{engine}: only with full fine-tuning"):
            parse_config(config(method, tmp_path, **{engine: {"stage": 2} if engine == "deepspeed" else {}}))
    if not adapter.mergeable:
        with pytest.raises(ConfigError, match="output.merge_lora: only with method lora or qlora"):
            parse_config(config(method, tmp_path, output={"path": str(tmp_path), "merge_lora": True}))
    if adapter.gpu_only:
        with pytest.raises(ConfigError, match=f"method {method} needs CUDA GPUs"):
            parse_config({**config(method, tmp_path), "scaling": {"use_gpu": False}})
    other = "alpaca" if objective.preference else "preference"
    with pytest.raises(ConfigError, match=f"data.format: method {method} "):
        parse_config({**config(method, tmp_path), "data": {"train": "d", "format": other}})


def test_an_objectives_section_picks_its_adapter(tmp_path):
    """An objective with a section of its own (dpo, orpo) trains the adapter its ``adapter`` names (none: full)."""
    for name, objective in OBJECTIVES.items():
        if objective.section:
            choices = typing.get_args(
                TrainConfig.model_fields[objective.section].annotation.model_fields["adapter"].annotation
            )
            for choice in choices:
                cfg = parse_config(config(name, tmp_path, **{objective.section: {"adapter": choice}}))
                assert cfg.tuning == ("full" if choice == "none" else choice) and cfg.tuning in ADAPTERS


# -- methods registered here ------------------------------------------------------------------------------------


Z_WEIGHT = 1e-2


class ZLoss:
    """SFT plus PaLM's z-loss (the squared log-partition function of every trained position), summed over tokens."""

    metrics = ("loss", "z_loss")

    def units(self, batch: dict) -> torch.Tensor:
        return trained_tokens(batch["labels"])

    def loss(self, engine, batch: dict, sync: bool = True):
        logits = engine.forward(sync=sync, **model_inputs(batch, virtual_tokens=False))
        trained = batch["labels"][:, 1:] != IGNORE
        z = (torch.logsumexp(logits[:, :-1].float(), -1) ** 2 * trained).sum()
        loss = loss_sum(logits, batch["labels"]) + Z_WEIGHT * z
        return loss, {"loss": loss.detach(), "z_loss": z.detach()}

    def means(self, sums: dict, units: float) -> dict:
        return {k: sums[k] / units if units else None for k in self.metrics}


@pytest.fixture
def zloss():
    """The objective ``zloss``, registered for one test: a LoRA trained on SFT plus z-loss."""

    class ZLossObjective(Objective):
        name = "zloss"

        def adapter(self, cfg) -> Adapter:
            return ADAPTERS["lora"]

        def build(self, cfg, model, device, dtype):
            return ZLoss()

    yield OBJECTIVES["zloss"]
    del OBJECTIVES["zloss"]


@pytest.fixture
def ia3():
    """The adapter ``ia3`` (PEFT's IA3 on the architecture's default modules), registered for one test."""

    class IA3(Adapter):
        name = "ia3"

        def peft_config(self, model, cfg):
            import peft

            return peft.IA3Config(task_type="CAUSAL_LM")

    yield ADAPTERS["ia3"]
    del ADAPTERS["ia3"]


class Rows:
    """A worker's dataset shard, held here: the batches of these rows."""

    def __init__(self, rows: dict):
        self.rows = rows

    def iter_torch_batches(self, batch_size: int, dtypes=None, drop_last: bool = False):
        n = len(self.rows["source"])
        for at in range(0, n - batch_size + 1 if drop_last else n, batch_size):
            yield {k: torch.as_tensor(v[at : at + batch_size], dtype=dtypes) for k, v in self.rows.items()}


def trained_recipe(cfg: TrainConfig) -> Recipe:
    """The worker's recipe for ``cfg`` in this process, built as a worker builds it: an evaluation, two steps on the
    evaluated rows (one batch each), another evaluation."""
    from thresher.train.models import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    records = [{"instruction": q, "input": "", "output": a} for q, a in QUESTIONS[:4]]
    shard = Rows(encode_batch(pa.Table.from_pylist(records), tokenizer, Encoding("alpaca", "text", SEQ, False)))
    recipe = Recipe(
        cfg,
        Job(
            total_steps=2,
            storage=Storage.from_options(None),
            tokenizer=tokenizer,
            has_validation=True,
            sources=["train"],
        ),
    )
    recipe.build(rank=0, world=1, device=torch.device("cpu"))
    recipe.state, recipe.tracker = TrainerState(tokens_by_source=[0]), Tracker(None)
    recipe.validation_shard = InThread(lambda: shard, "thresher-validation")  # what ask_for_validation gets
    recipe.evaluate()
    for _ in range(2):
        recipe.train_step(list(shard.iter_torch_batches(batch_size=4, dtypes=torch.long)))
        recipe.log_train_metrics()
    recipe.evaluate()
    return recipe


def test_an_objective_registered_here_is_parsed_and_trained(tiny, tmp_path, zloss):
    """``method: zloss`` parses into the objective registered here, whose loss the recipe trains on (a LoRA, as its
    entry says) and evaluates with its own metrics; the export records the method."""
    cfg = parse_config(config("zloss", tmp_path / "out", tiny))
    assert cfg.objective is zloss and cfg.tuning == "lora" and "zloss" in method_names()
    assert parse_config(config("lora", tmp_path, tiny)).objective is OBJECTIVES[SFT]
    recipe = trained_recipe(cfg)
    assert isinstance(recipe.objective, ZLoss) and recipe.engine.module.peft_config["default"].peft_type == "LORA"
    first, last = recipe.state.evals
    assert set(first) == {"step", "loss", "z_loss"} and last["step"] == 2
    assert last["loss"] < first["loss"] and last["z_loss"] > 0, recipe.state.evals
    assert set(recipe.state.train_loss[-1]) == {"step", "loss", "z_loss"}
    recipe.export()
    record = json.loads((tmp_path / "out/model/thresher.json").read_text())
    assert (record["method"], record["tuning"], record["merged"]) == ("zloss", "lora", False)


def test_an_adapter_registered_here_is_parsed_trained_and_exported(tiny, tmp_path, ia3):
    """``method: ia3`` trains PEFT's IA3 vectors with the sft objective; the export is an IA3 adapter that loads
    (as ``thresher eval`` loads a model) with the trained weights; the config refuses merging it or DeepSpeed."""
    from thresher.evaluate.generate import load_eval_model
    from thresher.train.config import ModelOptions

    cfg = parse_config(config("ia3", tmp_path / "out", tiny))
    assert cfg.objective is OBJECTIVES[SFT] and cfg.adapter is ia3 and "ia3" in method_names()
    with pytest.raises(ConfigError, match="output.merge_lora: only with method lora or qlora"):
        parse_config(config("ia3", tmp_path, tiny, output={"path": str(tmp_path), "merge_lora": True}))
    with pytest.raises(ConfigError, match="deepspeed: only with full fine-tuning"):
        parse_config(config("ia3", tmp_path, tiny, deepspeed={"stage": 2}))
    recipe = trained_recipe(cfg)
    first, last = recipe.state.evals
    assert last["loss"] < first["loss"], recipe.state.evals
    trained = recipe.engine.module
    assert recipe.trainable_params == sum(p.numel() for n, p in trained.named_parameters() if "ia3_l" in n) > 0
    recipe.export()
    folder = tmp_path / "out/model"
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "IA3"
    assert "PeftModel.from_pretrained(base, PATH)" in (folder / "README.md").read_text()
    reloaded = load_eval_model(ModelOptions(name_or_path=str(folder)), torch.float32)
    ids = torch.as_tensor(recipe.job.tokenizer(QUESTIONS[0][0])["input_ids"])[None]
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(input_ids=ids).logits, trained.eval()(input_ids=ids).logits)
