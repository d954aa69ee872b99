"""A check for device placement that runs on a CPU-only machine: every tensor thresher's own code creates must name
its device, or be made from a tensor that has one.

On a CPU nothing fails when a counter is made with ``torch.zeros(n)`` while the batch it meets lives on a GPU: both
are on the CPU. :class:`ImplicitDevice` records each call of a tensor factory (``torch.zeros``, ``torch.tensor``,
...) made from thresher's packages without ``device=``, which on a GPU worker is a tensor on the CPU beside
batches on the GPU (the class of bug that crashed every training method's first step on the first GPU it met).
"""

from __future__ import annotations

import sys

import torch
from torch.overrides import TorchFunctionMode

FACTORIES = {
    torch.zeros,
    torch.ones,
    torch.empty,
    torch.full,
    torch.tensor,
    torch.arange,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.eye,
    torch.linspace,
    torch.as_tensor,
    torch.from_numpy,
}
DISPATCH = ("torch.overrides", "torch.utils._python_dispatch")  # between the caller and this mode
PACKAGES = ("thresher.",)  # thresher's code; torch, transformers, peft are not


class ImplicitDevice(TorchFunctionMode):
    """Records ``file:line factory`` for each tensor factory that thresher's code calls without a ``device``."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            frame = sys._getframe(1)
            while frame is not None and frame.f_globals.get("__name__", "") in DISPATCH:
                frame = frame.f_back
            module = frame.f_globals.get("__name__", "") if frame is not None else ""
            if module.startswith(PACKAGES):
                self.found.append(f"{frame.f_code.co_filename}:{frame.f_lineno} torch.{func.__name__}")
        return func(*args, **kwargs)
