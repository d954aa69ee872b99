"""Sums and facts over a run's training workers (``torch.distributed``: gloo on CPUs, NCCL on GPUs)."""

from __future__ import annotations

import base64

import torch
import torch.distributed as dist


def device_sum(values: list[torch.Tensor]) -> torch.Tensor:
    """The sums over all workers of ``values`` (tensors on one device, flattened and concatenated), as one float64
    tensor on that device: one collective (with NCCL: queued on the device; the host does not wait)."""
    t = torch.cat([v.to(torch.float64).reshape(-1) for v in values])
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def all_sum(values, device: torch.device) -> list[float]:
    """The sums over all workers of ``values`` (numbers or tensors), in one collective and one copy to the host."""
    return device_sum([torch.as_tensor(v, device=device) for v in values]).tolist()


def node_count() -> int:
    """The Ray nodes the workers run on (by node id: nodes may share an IP)."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return 1
    nodes = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, node)
    return len(set(nodes))


def random_states(device: torch.device) -> list[list[str]]:
    """Every worker's torch random state (the CPU's, and its GPU's on one), by rank, base64: what a resumed run
    restores so that dropout draws what it would have drawn."""
    states = [torch.get_rng_state()] + ([torch.cuda.get_rng_state(device)] if device.type == "cuda" else [])
    mine = [base64.b64encode(s.numpy().tobytes()).decode() for s in states]
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [mine]
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return everyone


def restore_random_state(saved: list[str], device: torch.device) -> None:
    """Set this worker's torch random state to one :func:`random_states` gathered."""
    states = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in saved]
    torch.set_rng_state(states[0])
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1], device)
