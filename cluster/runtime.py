"""Where Ray runs: an embedded local instance by default, or the cluster at ``--address`` / ``RAY_ADDRESS``."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)


def resolve_address(address: str | None) -> str | None:
    """The cluster address to use: the explicit one, else ``RAY_ADDRESS``, else None (embedded)."""
    return address or os.environ.get("RAY_ADDRESS") or None


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[dict]:
    """Connect to Ray for the duration of a command and yield the cluster's resources.

    Without an address an embedded local Ray starts and stops with the command. If Ray is already
    initialised in this process (tests, notebooks), that session is used and left running.
    """
    import ray

    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    addr = resolve_address(address)
    kwargs: dict = {"log_to_driver": True, "configure_logging": False}
    if addr:
        log.info("connecting to Ray at %s", addr)
        ray.init(address=addr, **kwargs)
    else:
        log.info("starting an embedded local Ray")
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
