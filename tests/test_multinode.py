"""Training on a two-node Ray cluster (``ray start`` head + worker node on loopback, token auth): ``thresher
train --address`` spreads its two workers over both nodes, reads its data from S3 (the moto server) and checkpoints
there; the worker node is stopped once step 2's checkpoint is registered, and the run resumes from S3 on the
remaining node.

The nodes get the S3 endpoint and credentials in their environment, as a cluster would from its instance role or
a Kubernetes Secret. The cluster is this module's own (it loses a node), not the session's ``ray_head``.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from testkit.faults import AfterCheckpoint
from testkit.ray_cluster import RayHead
from testkit.tiny_llama import build_tiny_llama
from tests.conftest import run_cli
from tests.samples import gsm8k
from thresher.core.storage import Storage

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes(tmp_path, s3_server):
    head = RayHead(tmp_path)
    head.env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    try:
        head.start_head(num_cpus=2)
        worker = head.add_worker(num_cpus=2)
    except Exception as e:
        head.stop()
        raise RuntimeError(f"could not start the cluster:\n{head.logs()}") from e
    yield head, worker
    head.stop()


def test_training_on_two_nodes_survives_a_stopped_node(two_nodes, s3_bucket, tmp_path):
    head, worker = two_nodes
    texts = [r["answer"] for r in gsm8k(64)]
    fs, path = Storage.from_options(None).resolve(f"s3://{s3_bucket}/data/train.parquet")
    pq.write_table(pa.table({"text": texts}), path, filesystem=fs)
    tiny = build_tiny_llama(tmp_path / "tiny", texts)
    checkpoints = f"s3://{s3_bucket}/checkpoints"
    cfg = {
        "model": {"name_or_path": str(tiny)},
        "data": {"train": f"s3://{s3_bucket}/data", "format": "text", "max_seq_len": 64},
        "method": "lora",
        "scaling": {"num_workers": 2, "resources_per_worker": {"CPU": 0.5}, "placement_strategy": "SPREAD"},
        "optim": {"lr": 1e-2, "max_steps": 6, "batch_size": 2, "log_every_steps": 1},
        "checkpoint": {"storage_path": checkpoints, "every_steps": 2, "max_failures": 2},
        "output": {"path": f"s3://{s3_bucket}/run"},
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    stop = AfterCheckpoint(
        f"{checkpoints}/thresher",
        "step-00000002",
        action=lambda: (head.stop_node(worker), "stopped the worker node")[1],
    )
    res = run_cli(
        "train",
        str(tmp_path / "train.yaml"),
        "--address",
        head.address,
        env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": head.token, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1"},
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:] + head.logs()
    assert stop.result() == "stopped the worker node" and head.alive_nodes() == 1
    m = json.loads(Storage.from_options(None).read_bytes(f"s3://{s3_bucket}/run/metrics.json"))
    assert m["nodes"] == [2, 1]  # the first attempt on both nodes, the resumed one on the head alone
    # resumed once, from step 2's checkpoint (or step 4's, when the node outlived that report)
    assert len(m["resumes"]) == 1 and m["resumes"][0] in (2, 4)
    assert m["steps"] == 6 and [x["step"] for x in m["train_loss"]] == list(range(1, 7))
    assert m["checkpoint"] == f"{checkpoints}/thresher/step-00000006"
    assert Storage.from_options(None).exists(f"s3://{s3_bucket}/run/model/adapter_model.safetensors")
