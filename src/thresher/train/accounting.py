"""What became of the training and validation records (``metrics.json``'s ``data``): the tokenize tasks of
:mod:`thresher.train.data` count, per batch, the records read, used, truncated at ``data.max_seq_len`` and dropped
by reason, and the rows made; they add them to a :class:`Tally` actor. The rows an epoch leaves untrained follow
from the row counts and the batch shape; the workers count the validation rows they evaluate."""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger(__name__)

DROP_REASONS = (
    "empty_text",  # text: a null, empty or whitespace text
    "too_short",  # text: one token, nothing to predict
    "missing_response",  # alpaca: a blank output; chat: a blank assistant turn
    "no_assistant_turn",  # chat: nothing to train
    "prompt_too_long",  # the prompt fills max_seq_len: no response token left
    "empty_preference",  # preference: a blank chosen or rejected response
)


class Tally:
    """A Ray actor the tokenize tasks add their counts to, by dataset, without waiting. With ``records`` of a dataset
    (the records of its files), only the first pass over them is counted: with ``optim.max_steps`` every epoch
    tokenizes them again."""

    def __init__(self, records: dict[str, int] | None = None):
        self.records, self.counts = records or {}, {}

    def add(self, dataset: str, counts: dict[str, int]) -> None:
        seen = self.counts.setdefault(dataset, Counter())
        if dataset not in self.records or seen["read"] < self.records[dataset]:
            seen.update(counts)

    def snapshot(self) -> tuple[dict[str, dict[str, int]], bool]:
        """The counts by dataset, and whether they are whole (not when the actor was restarted: its node died)."""
        import ray

        whole = not ray.get_runtime_context().was_current_actor_reconstructed
        return {dataset: dict(counts) for dataset, counts in self.counts.items()}, whole


def start_tally(records: dict[str, int] | None = None):
    """A :class:`Tally` actor on the driver's node (no CPU), restarted (counting from zero) when its process or node
    dies: a driver attached to a worker node's raylet outlives that node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(num_cpus=0, max_restarts=-1, scheduling_strategy=here)(Tally).remote(records)


def read_tally(tally) -> tuple[dict[str, dict[str, int]], bool]:
    """The counts added to ``tally`` by dataset, and whether they are whole; none (not whole) when it does not answer
    within 10 s: the run's result does not wait on its accounting."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        counts, whole = ray.get(tally.snapshot.remote(), timeout=10)
    except (GetTimeoutError, RayActorError) as e:
        log.warning("the training data's counts are lost (%s): metrics.json's data says so", type(e).__name__)
        return {}, False
    return counts, whole


def summary(counts: dict[str, int]) -> dict:
    """``{read, used, dropped: {reason: records}, truncated, rows}`` of one dataset's counts."""
    return {
        "read": counts.get("read", 0),
        "used": counts.get("used", 0),
        "dropped": {r: counts[r] for r in DROP_REASONS if counts.get(r)},
        "truncated": counts.get("truncated", 0),
        "rows": counts.get("rows", 0),
    }


def untrained_per_epoch(rows: int, workers: int, batch_size: int, grad_accum: int) -> int:
    """Rows an epoch of ``rows`` leaves untrained: Ray Train's equal split drops ``rows % workers``, each worker
    its last partial batch (``drop_last``) and its last partial ``grad_accum`` window."""
    per_step = batch_size * grad_accum
    return rows - rows // workers // per_step * per_step * workers


def problems(data: dict) -> str | None:
    """One line on the records dropped and truncated (None when none were)."""
    parts = []
    for name, d in data.items():
        if d and (d["dropped"] or d["truncated"]):
            dropped = ", ".join(f"{n} {reason}" for reason, n in d["dropped"].items())
            parts.append(
                f"data.{name}: {sum(d['dropped'].values())} of {d['read']} records dropped"
                f"{f' ({dropped})' if dropped else ''}, {d['truncated']} truncated at data.max_seq_len"
            )
    return "; ".join(parts) or None
