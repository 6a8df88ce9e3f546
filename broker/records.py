"""What the broker remembers: requests, workers, services and counters.

All times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from protocol.wire.mdp import Frame


@dataclass(eq=False)
class PendingRequest:
    """One client request, queued or being served.

    Attributes:
        client: the client's ROUTER identity (the MDP envelope).
        service: service name.
        body: the application frames, kept as received (zero-copy frames).
        header: best-effort parse of body frame 0 (``{}`` if it is not a JSON
            object); echoed into the broker's error replies.
        queued_at_s: when the broker first received it.
        attempts: workers lost while serving it so far.
        delimited: the client frames with MDP/0.1's leading empty frame;
            replies to it do the same.
        nbytes: what it counts against the broker's ``max_queued_bytes``
            (body bytes plus a fixed bookkeeping overhead).
    """

    client: bytes
    service: bytes
    body: list[Frame]
    header: dict[str, Any]
    queued_at_s: float
    attempts: int = 0
    delimited: bool = False
    nbytes: int = 0

    @property
    def request_id(self) -> str:
        """The client's request id for logs, ``"-"`` when it has none."""
        value = self.header.get("request_id")
        return value if isinstance(value, str) else "-"

    @property
    def image_key(self) -> str | None:
        """The header's image key (a routing hint), or None."""
        value = self.header.get("image_key")
        return value if isinstance(value, str) and value else None


@dataclass(eq=False)
class WorkerRecord:
    """One registered worker (one DEALER connection that sent READY).

    Attributes:
        identity: the worker's ROUTER identity on the backend socket.
        service: the service it registered for.
        expiry_s: when it is considered dead unless it sends something.
        request: the request it is serving, or None when idle.
        recent_image_keys: image keys of its latest requests, newest last.
        delimited: the worker frames with MDP/0.1's leading empty frame;
            the broker answers it the same way.
        described: what its latest ``info`` reply said (``SERVICE_FIELDS``), or None.
    """

    identity: bytes
    service: bytes
    expiry_s: float
    request: PendingRequest | None = None
    recent_image_keys: deque[str] = field(default_factory=lambda: deque(maxlen=16))
    delimited: bool = False
    described: dict[str, Any] | None = None

    def remember_image_key(self, image_key: str) -> None:
        """Record ``image_key`` as the most recent one (moved to the end if known)."""
        if image_key in self.recent_image_keys:
            self.recent_image_keys.remove(image_key)
        self.recent_image_keys.append(image_key)


@dataclass(eq=False)
class ServiceRecord:
    """One service: its FIFO request queue and its workers.

    Attributes:
        name: service name.
        requests: waiting requests, oldest first (re-queued ones go first).
        workers: every registered worker of the service, by identity.
        idle: idle workers, longest idle first.
        no_worker_since_s: since when the service has had no registered
            worker (None while it has one); starts the ``no_worker`` clock.
    """

    name: bytes
    no_worker_since_s: float | None
    requests: deque[PendingRequest] = field(default_factory=deque)
    workers: dict[bytes, WorkerRecord] = field(default_factory=dict)
    idle: list[WorkerRecord] = field(default_factory=list)


@dataclass
class BrokerCounters:
    """Totals since start, logged at DEBUG every ``stats_interval_s``.

    Attributes:
        requests: client requests accepted into a queue.
        mmi_requests: ``mmi.*`` requests answered by the broker.
        partials: PARTIAL replies forwarded to clients.
        replies: FINAL replies forwarded from workers to clients.
        requeues: requests put back in a queue after their worker was lost.
        dropped: malformed or unexpected messages dropped.
        errors: error FINALs sent by the broker, by error code.
    """

    requests: int = 0
    mmi_requests: int = 0
    partials: int = 0
    replies: int = 0
    requeues: int = 0
    dropped: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One log-friendly line."""
        errors = ",".join(f"{code}:{n}" for code, n in sorted(self.errors.items())) or "none"
        return (
            f"requests={self.requests} mmi={self.mmi_requests} partials={self.partials} "
            f"replies={self.replies} requeues={self.requeues} dropped={self.dropped} errors={errors}"
        )
