"""The GPU suite: every test here is marked ``gpu`` and skipped, with the reason, where torch sees no CUDA GPU.

One Ray instance (every CPU and GPU of the machine) serves the suite; the models are random-weight models of real
architectures (``testkit.gpu_models``) and the data are generated here, so the suite needs no download and nothing
beside the repository. Run it with ``pytest tests/gpu`` (``-m gpu`` selects the same tests anywhere); with pytest-xdist, ``-n 4`` runs four
test processes side by side on the one GPU (each with its own local Ray and a share of the CPUs). Where
``THRESHER_GPU_RECORD`` names a file, each training run appends its metrics there as one JSON line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip = None if _cuda() else pytest.mark.skip(reason="needs a CUDA GPU: torch sees none on this machine")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if skip is not None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_gpu():
    """The suite's one local Ray, with the machine's GPUs and CPUs."""
    import ray
    import torch

    from thresher.runtime import EMBEDDED_SYSTEM_CONFIG

    if not ray.is_initialized():
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))  # pytest -n: one Ray per test process
        ray.init(
            address="local",
            num_cpus=max(2, (os.cpu_count() or 2) // workers),
            num_gpus=torch.cuda.device_count(),
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
            _system_config=EMBEDDED_SYSTEM_CONFIG,
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def gpu_models(tmp_path_factory) -> Path:
    """The folder random-weight models are made in (``THRESHER_GPU_MODELS`` keeps them across runs)."""
    given = os.environ.get("THRESHER_GPU_MODELS")
    return Path(given) if given else tmp_path_factory.mktemp("gpu-models")


def pytest_runtest_logreport(report):
    """A failure is printed as it happens: a suite stopped by a time limit on a lent GPU still shows why."""
    if report.failed and report.nodeid.startswith("tests/gpu/"):
        print(f"\n{report.nodeid} ({report.when}) FAILED:\n{report.longreprtext[-2500:]}\n", flush=True)
