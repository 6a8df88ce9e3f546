"""Make SAM 3 run where its code says ``"cuda"``: the worker's device shim for machines without a GPU.

``sam3`` 0.1.4 hard-codes CUDA in several places: tensors created with
``device="cuda"`` while the model is built (the sine position encoding's
precomputed cache, the decoder's coordinate cache) and at inference
(``Tensor.pin_memory()`` before the exemplar boxes are scaled, a few
``device="cuda"`` defaults). On a machine without CUDA each of these raises.

:class:`FollowDevice` is a ``torch`` function mode (the mechanism behind
``with torch.device(...)``): while it is active, every torch call given
``device="cuda"`` gets the worker's device instead, and ``pin_memory()`` (which
needs a GPU) returns its tensor unchanged. Nothing in the ``sam3`` package is
edited or monkey-patched; the mode is entered only around building the model
and around each request, and only when the worker's device is not CUDA
(:func:`follow_device`). On a GPU the code runs exactly as Meta wrote it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.overrides import TorchFunctionMode


class FollowDevice(TorchFunctionMode):
    """Redirect ``device="cuda"`` to ``device`` and make ``pin_memory()`` a no-op (see module docstring)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.pin_memory:
            return args[0]
        wanted = kwargs.get("device")
        if wanted is not None and torch.device(wanted).type == "cuda":
            kwargs["device"] = self.device
        return func(*args, **kwargs)


def follow_device(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The shim for ``device``: :class:`FollowDevice` off CUDA, nothing on CUDA."""
    if device.type == "cuda":
        return contextlib.nullcontext()
    return FollowDevice(device)
