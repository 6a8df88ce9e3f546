"""Every tunable of the broker, declared once with its default and meaning."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.wire.mdp import DEFAULT_BACKEND, DEFAULT_FRONTEND
from protocol.wire.security import is_loopback_endpoint

__all__ = [
    "DEFAULT_BACKEND",
    "DEFAULT_FRONTEND",
    "QUEUE_ENTRY_OVERHEAD_BYTES",
    "BrokerConfig",
    "is_loopback_endpoint",
]

# Bookkeeping cost of one queued request, added to its body bytes for ``max_queued_bytes``.
QUEUE_ENTRY_OVERHEAD_BYTES = 1024


@dataclass(frozen=True)
class BrokerConfig:
    """Broker settings.

    Attributes:
        frontend: ZeroMQ endpoint the client ROUTER binds (MDPC02 only).
        backend: ZeroMQ endpoint the worker ROUTER binds (MDPW02 only).
        heartbeat_interval_s: seconds between HEARTBEATs the broker sends to
            every registered worker; also the longest poll wait, so the
            resolution of every broker timer.
        heartbeat_liveness: a worker silent for
            ``heartbeat_interval_s * heartbeat_liveness`` seconds is dropped.
        max_attempts: how many workers may be lost while serving one request;
            when the count reaches this, the client gets ``worker_lost``.
        service_wait_s: seconds a request may wait while its service has no
            registered worker before the client gets ``no_worker``.
        max_queue: requests queued per service; one more gets ``busy`` at once.
        max_queued_bytes: bytes of request bodies queued in the whole broker
            (each request counted with ``QUEUE_ENTRY_OVERHEAD_BYTES`` more);
            a request that would pass it gets ``busy`` at once. With
            ``max_queue`` this bounds the broker's memory whatever clients send.
        max_message_bytes: ZMQ_MAXMSGSIZE of both sockets, in bytes: libzmq
            checks each frame's announced size before allocating it and
            disconnects a peer that sends a larger frame.
        max_body_frames: body frames in one client REQUEST; more gets
            ``bad_request`` (our bodies have 1 header + at most 8 arrays).
        curve_dir: key directory made by ``scripts/curve_keys.py``; when set,
            both sockets use CurveZMQ (encrypted; only listed keys admitted).
        recent_image_keys: image keys remembered per worker for affinity.
        stats_interval_s: seconds between DEBUG log lines with the counters.
        shutdown_linger_s: seconds the worker socket may take at shutdown to
            deliver the DISCONNECTs; every other close uses LINGER 0.
    """

    frontend: str = DEFAULT_FRONTEND
    backend: str = DEFAULT_BACKEND
    heartbeat_interval_s: float = 1.0
    heartbeat_liveness: int = 3
    max_attempts: int = 2
    service_wait_s: float = 10.0
    max_queue: int = 1000
    max_queued_bytes: int = 2 << 30
    max_message_bytes: int = (1 << 30) + (1 << 20)
    max_body_frames: int = 16
    curve_dir: str | None = None
    recent_image_keys: int = 16
    stats_interval_s: float = 10.0
    shutdown_linger_s: float = 0.5

    def __post_init__(self) -> None:
        if self.frontend == self.backend:
            raise ValueError("frontend and backend must be different endpoints")
        if not self.heartbeat_interval_s > 0:
            raise ValueError("heartbeat_interval_s must be > 0")
        for name in (
            "heartbeat_liveness",
            "max_attempts",
            "max_queue",
            "max_queued_bytes",
            "max_message_bytes",
            "max_body_frames",
            "recent_image_keys",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("service_wait_s", "stats_interval_s", "shutdown_linger_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def worker_expiry_s(self) -> float:
        """Seconds of silence after which a worker is considered dead."""
        return self.heartbeat_interval_s * self.heartbeat_liveness

    def exposed_endpoints(self) -> list[str]:
        """The bound endpoints reachable from other machines (without CURVE: warn about these)."""
        return [e for e in (self.frontend, self.backend) if not is_loopback_endpoint(e)]
