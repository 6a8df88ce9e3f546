"""Choosing the torch device, the compute dtype and the CPU thread count.

``auto`` picks CUDA when available, else Apple MPS, else the CPU (with a
warning: the image encoder takes seconds per image there). On CUDA the model
runs under bfloat16 autocast, as Meta's SAM2 examples do (``--no-bf16``
turns it off); everywhere else it runs in float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    """Where and in which precision the model runs.

    Attributes:
        device: the torch device of the model and its tensors.
        autocast_dtype: ``torch.bfloat16`` for CUDA autocast, or ``None`` (float32).
    """

    device: torch.device
    autocast_dtype: torch.dtype | None = None

    @property
    def dtype_name(self) -> str:
        """``"bfloat16"`` under autocast, else ``"float32"``."""
        return "bfloat16" if self.autocast_dtype == torch.bfloat16 else "float32"

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """Context manager to wrap every model call in (a no-op without autocast)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(requested: str = "auto", bf16: bool = True) -> DeviceChoice:
    """Turn ``--device`` into a :class:`DeviceChoice`.

    Args:
        requested: ``"auto"``, ``"cpu"``, ``"mps"``, ``"cuda"`` or ``"cuda:N"``.
        bf16: use bfloat16 autocast on CUDA.

    Raises:
        ValueError: an unknown device or one this machine does not have.
    """
    if requested == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif _mps_available():
            device = torch.device("mps")
        else:
            log.warning("no CUDA or MPS device found: running SAM2 on the CPU (seconds per image)")
            device = torch.device("cpu")
    else:
        try:
            device = torch.device(requested)
        except RuntimeError as e:
            raise ValueError(f"unknown device {requested!r}: {e}") from e
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {requested!r} requested but CUDA is not available")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise ValueError(f"device {requested!r}: only {torch.cuda.device_count()} CUDA devices")
        elif device.type == "mps" and not _mps_available():
            raise ValueError("device 'mps' requested but MPS is not available")
        elif device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"unsupported device {requested!r} (use auto, cpu, cuda, cuda:N or mps)")
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
        if torch.cuda.get_device_properties(index).major >= 8:
            # TF32 on Ampere and newer, as in Meta's SAM2 examples.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return DeviceChoice(device, torch.bfloat16 if bf16 else None)
    return DeviceChoice(device, None)


def default_threads(workers_per_host: int = 1, cpu_count: int | None = None) -> int:
    """CPU threads per worker: the machine's cores shared among its workers, at least 1."""
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers_per_host))


def configure_threads(threads: int | None, workers_per_host: int = 1) -> int:
    """Set ``torch.set_num_threads`` from ``--threads`` (or the default) and return the number used."""
    n = threads if threads is not None else default_threads(workers_per_host)
    if n < 1:
        raise ValueError(f"--threads must be at least 1, got {n}")
    torch.set_num_threads(n)
    return n
