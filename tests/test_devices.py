"""Device placement, checked where CI runs (no GPU): one optimizer step and one evaluation of each objective -- SFT
with LoRA, full fine-tuning and prompt tuning; DPO against the disabled adapter and against a frozen copy; ORPO --
run in this process under :class:`testkit.device_guard.ImplicitDevice`, which records every tensor thresher's code
creates without naming a device. On a GPU worker such a tensor sits on the CPU beside batches on the GPU: the bug
that failed every method's first step on the first GPU thresher met. The steps must also count what they trained.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from testkit.device_guard import ImplicitDevice
from testkit.tiny_llama import build_tiny_llama
from thresher.core.storage import Storage
from thresher.train.config import parse_config
from thresher.train.data import Encoding, encode_batch
from thresher.train.loop import InThread, Job, Recipe, TrainerState
from thresher.train.tracking import Tracker

SEQ = 160
QUESTIONS = [(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.") for a in range(3, 9) for b in range(2, 4)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = [q + " " + a for q, a in QUESTIONS] + ["I cannot help with that."]
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-devices"), texts * 3)


def records(fmt: str) -> list[dict]:
    if fmt == "preference":
        return [{"prompt": q, "chosen": a, "rejected": "I cannot help with that."} for q, a in QUESTIONS]
    return [{"instruction": q, "input": "", "output": a} for q, a in QUESTIONS]


def rows(ray_local, tokenizer, fmt: str, source: int):
    """The records tokenized by training's own map function, as a Ray Dataset (what a worker's shard yields)."""
    encoded = encode_batch(pa.Table.from_pylist(records(fmt)), tokenizer, Encoding(fmt, "text", SEQ, False), source)
    return ray_local.data.from_items([{k: v[i] for k, v in encoded.items()} for i in range(len(encoded["source"]))])


METHODS = {
    "lora": {"method": "lora"},
    "full": {"method": "full"},
    "prompt": {"method": "prompt", "prompt_tuning": {"num_virtual_tokens": 4}},
    "dpo-lora": {"method": "dpo", "dpo": {"adapter": "lora"}},
    "dpo-full": {"method": "dpo"},
    "orpo-lora": {"method": "orpo", "orpo": {"adapter": "lora"}},
}


@pytest.mark.parametrize("variant", list(METHODS))
def test_a_step_and_an_evaluation_create_no_tensor_off_the_batches_device(ray_local, tiny, tmp_path, variant):
    from thresher.train.models import load_tokenizer

    settings = METHODS[variant]
    fmt = "preference" if settings["method"] in ("dpo", "orpo") else "alpaca"
    cfg = parse_config(
        {
            "model": {"name_or_path": str(tiny)},
            **settings,
            "data": {"train": str(tmp_path), "validation": str(tmp_path), "format": fmt, "max_seq_len": SEQ},
            "scaling": {"num_workers": 1},
            "optim": {"max_steps": 1, "batch_size": 4},
            "output": {"path": str(tmp_path / "out")},
        }
    )
    tokenizer = load_tokenizer(cfg.model)
    recipe = Recipe(
        cfg,
        Job(
            total_steps=1,
            storage=Storage.from_options(None),
            tokenizer=tokenizer,
            has_validation=True,
            sources=["first", "second"],
        ),
    )
    recipe.build(rank=0, world=1, device=torch.device("cpu"))
    recipe.state, recipe.tracker = TrainerState(tokens_by_source=[0, 0]), Tracker(None)
    shard = rows(ray_local, tokenizer, fmt, 0)
    recipe.validation_shard = InThread(lambda: shard, "thresher-validation")  # what ask_for_validation gets
    window = list(rows(ray_local, tokenizer, fmt, 1).iter_torch_batches(batch_size=4, dtypes=torch.long))[:1]

    with ImplicitDevice() as guard:
        recipe.train_step(window)
        recipe.evaluate()

    assert guard.found == [], "tensors created without a device:\n" + "\n".join(guard.found)
    trained = int(window[0]["attention_mask"].sum())
    assert recipe.state.step == 1 and recipe.state.tokens_by_source == [0, trained]
    assert recipe.pending["units"] > 0 and recipe.state.evals[0]["loss"] > 0


PLAN_WITH_A_GPU_STAGE = """
import pandas as pd, ray
from thresher.curate.execution.segments import map_stages
from thresher.curate.stage import REJECT_DETAIL, REJECT_REASON, REJECT_STAGE, StageContext
from thresher.curate.stages.embed import Embed, EmbedConfig
ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
def read(batch):
    (task,) = batch["task"]
    yield pd.DataFrame({"text": ["Some text."] * 3, **{c: [None] * 3 for c in (REJECT_STAGE, REJECT_REASON,
                                                                               REJECT_DETAIL)}})
source = ray.data.from_items([{"task": t} for t in range(4)], override_num_blocks=4)
stage = Embed(EmbedConfig(num_gpus=1, device="cpu"), StageContext())
ds, pool = map_stages(source.map_batches(read, batch_size=1, batch_format="pandas"), [stage], batch_size=1024)
out = ds.to_pandas()
assert pool == 1 and len(out) == 12 and out["embedding"].notna().all(), (pool, len(out))
print("planned")
"""


@pytest.mark.slow  # 10 s or more: not in the fast subset
def test_a_stage_that_asks_for_a_gpu_is_planned_on_ray_data():
    """Ray Data plans GPU actors only with a batch size (a rule no CPU run meets): a Ray whose one GPU is a logical
    resource plans and runs an ``embed`` pool with ``num_gpus: 1`` (the model itself on the CPU)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    done = subprocess.run(
        [sys.executable, "-c", PLAN_WITH_A_GPU_STAGE], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "planned" in done.stdout, done.stderr[-3000:]
