"""Asking a broker what it serves: addresses, ``mmi.services``, a worker's ``info``, the status line.

No Qt, no napari; blocking functions meant for a worker thread. :func:`probe`
asks a broker which models (services) it serves, :func:`fetch_info` asks a
worker about its device, :class:`BackendStatus` is what the widget shows.

Environment: ``SAM2_BROKER_ADDRESS`` (default ``tcp://127.0.0.1:5555``),
``SAM2_MODEL`` (default ``sam2.1_hiera_tiny``).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.runtime.checkpoints import DEFAULT_MODEL
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.mdp import DEFAULT_FRONTEND

DEFAULT_ADDRESS = DEFAULT_FRONTEND
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
_TCP_RE = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+)$")


def default_address() -> str:
    return os.environ.get("SAM2_BROKER_ADDRESS", "").strip() or DEFAULT_ADDRESS


def default_model() -> str:
    return os.environ.get("SAM2_MODEL", "").strip() or DEFAULT_MODEL


def is_local(address: str) -> bool:
    """Whether ``address`` is a TCP endpoint on this machine (where we may start a backend)."""
    match = _TCP_RE.match(address.strip())
    return match is not None and match.group("host") in _LOCAL_HOSTS


def free_local_endpoint() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def probe(address: str, timeout_s: float = 1.5) -> dict[str, dict[str, Any]]:
    """``{model: {"workers", "idle", "queued"}}`` from the broker at ``address``.

    Raises:
        ClientError: no broker answered within ``timeout_s``.
        ProtocolError: something answered, but not like our broker.
    """
    with SamClient(address, config=ClientConfig(timeout_s=timeout_s, retries=0)) as client:
        return client.services(timeout_s=timeout_s)


def describe_services(address: str, timeout_s: float = 2.0) -> dict[str, dict[str, Any]]:
    """:func:`probe` plus family, description, licence and ops of each live service
    (``SamClient.describe_services``: asks ``info`` of services the broker cannot describe yet)."""
    with SamClient(address, config=ClientConfig(timeout_s=timeout_s, retries=0)) as client:
        return client.describe_services(timeout_s=timeout_s)


def fetch_info(address: str, model: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The ``info`` op's result from one worker of ``model`` (device, random_weights, ...)."""
    with SamClient(address, model, config=ClientConfig(timeout_s=timeout_s, retries=0)) as client:
        reply = client.call("info")
    return dict(reply.header.get("result") or {})


@dataclass(frozen=True)
class BackendStatus:
    """What the plugin knows about its backend (a snapshot for the status line).

    Attributes:
        address: broker frontend.
        services: ``{model: {"workers": n, ..., "family", "description", "licence", "ops"}}``
            from the broker (``mmi.services``; the descriptive fields where known).
        model: the chosen model, or None.
        info: the chosen model's ``info`` result (``device``, ``random_weights``).
        embedded: whether the plugin started this backend itself.
        error: why there is no usable backend (None when connected).
        reachable: whether a broker answered at ``address`` (False: none did, so the
            error is about the broker, not about its workers).
    """

    address: str
    services: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    model: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    embedded: bool = False
    error: str | None = None
    reachable: bool = True

    @property
    def connected(self) -> bool:
        return self.error is None and self.model is not None and self.workers > 0

    @property
    def workers(self) -> int:
        return int(self.services.get(self.model or "", {}).get("workers", 0))

    @property
    def device(self) -> str:
        return str(self.info.get("device", "?"))

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"

    def offers(self, op: str) -> bool:
        """Whether a worker of the chosen model serves ``op`` (True while its ``ops`` are unknown)."""
        ops = self.services.get(self.model or "", {}).get("ops", self.info.get("ops"))
        return ops is None or op in ops

    def model_summary(self, model: str | None = None) -> str:
        """One line about ``model`` (default: the chosen one): family, preprocessing, licence, description."""
        name = model or self.model or ""
        entry = dict(self.services.get(name, {}))
        if name == self.model:  # the chosen model's own info answer fills what the broker lacks
            entry = {**self.info, **entry}
        if "family" not in entry:
            return ""
        ops = ", ".join(op for op in entry.get("ops", []) if op not in ("info", "echo", "sleep"))
        return (
            f"{entry.get('description', '')} [{entry['family']}, preprocessing "
            f"{entry.get('preprocessing', '?')}; licence {entry.get('licence', '?')}; ops: {ops or '?'}]"
        )

    def describe(self) -> str:
        """One or two lines for the status label."""
        if self.error is not None:
            return f"Not connected: {self.error}"
        if self.model is None:
            return f"Broker at {self.address} has no SAM2 workers yet"
        if self.workers == 0:
            return f"The broker at {self.address} has no live {self.model} worker now; waiting for one"
        where = "embedded local backend" if self.embedded else self.address
        text = f"Connected to {where}: {self.workers} worker(s) of {self.model} on {self.device}"
        if self.on_cpu:
            text += "\nRunning on CPU: each new image takes seconds to encode; prompts are then fast."
        if self.info.get("random_weights"):
            text += "\nRANDOM WEIGHTS (test mode): masks are meaningless."
        return text


def choose_model(services: Mapping[str, Mapping[str, Any]], wanted: str) -> str | None:
    """``wanted`` if it has workers, else the first model that has any, else None."""
    if services.get(wanted, {}).get("workers", 0) > 0:
        return wanted
    return next((m for m, s in sorted(services.items()) if s.get("workers", 0) > 0), None)
