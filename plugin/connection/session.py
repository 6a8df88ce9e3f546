"""Requests to the SAM2 service, off the GUI thread, newest-only per channel.

No Qt and no napari here. A :class:`Session` talks to one broker and one
model. Each *channel* (one per result layer: ``Points_mask``, ``Box_mask``,
``AutoSeg_mask``) has its own :class:`plugin.connection.latest_only.LatestOnly` runner and
its own :class:`protocol.wire.client.SamClient` (used only by that runner's jobs,
one at a time), so at most one request per channel is in flight and a newer
submission supersedes an older one. Results are handed to ``dispatch``
(which runs a function on the GUI thread) and checked *again* there: a reply
whose request was superseded while it waited in the GUI queue is dropped.

The operations themselves (typed requests and answers) are
:mod:`protocol.ops`; jobs submitted here call them with the channel's client.

Every call is recorded in the session's :class:`plugin.events_log.EventLog`
(op, request id, duration, error) for the events panel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from plugin.connection.latest_only import LatestOnly
from plugin.events_log import ERROR, REQUEST, EventLog
from protocol.wire.client import ClientConfig, KnownKeys, SamClient
from protocol.wire.codec import Message
from protocol.wire.errors import ClientError, ProtocolError, RemoteError, Superseded

T = TypeVar("T")
KNOWN_KEYS = 4096
"""Image keys a session remembers having sent (a stack encoded ahead may have thousands of windows)."""
Dispatch = Callable[[Callable[[], None]], None]


class LoggedClient(SamClient):
    """A :class:`SamClient` that records each call (op, request id, duration, outcome) in an event log."""

    def __init__(
        self,
        endpoint: str,
        service: str,
        *,
        config: ClientConfig,
        log: EventLog,
        known_keys: KnownKeys | None = None,
    ) -> None:
        super().__init__(endpoint, service, config=config, known_keys=known_keys)
        self.log = log

    def call(self, op: str, *args: Any, **kwargs: Any) -> Message:
        started = time.perf_counter()

        def elapsed_ms() -> float:
            return (time.perf_counter() - started) * 1000.0

        try:
            reply = super().call(op, *args, **kwargs)
        except Superseded:
            self.log.record(REQUEST, op, duration_ms=elapsed_ms(), detail="cancelled")
            raise
        except RemoteError as e:
            request_id = str(getattr(e, "request_id", None) or "")
            self.log.record(ERROR, op, request_id, elapsed_ms(), detail=f"{e.code}: {e.message}")
            raise
        except (ClientError, ProtocolError) as e:
            self.log.record(ERROR, op, duration_ms=elapsed_ms(), detail=f"{type(e).__name__}: {e}")
            raise
        self.log.record(REQUEST, op, reply.request_id, elapsed_ms(), detail=str(reply.status))
        return reply


class Session:
    """One broker endpoint + one model, with newest-only channels.

    Args:
        endpoint: broker frontend, e.g. ``"tcp://127.0.0.1:5555"``.
        model: service name, e.g. ``"sam2.1_hiera_tiny"``.
        dispatch: runs a zero-argument function on the GUI thread.
        config: client timeouts and retries.
        log: where calls are recorded (a fresh log by default).
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        dispatch: Dispatch,
        config: ClientConfig | None = None,
        log: EventLog | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.model = model
        self.config = config or ClientConfig()
        self.log = log if log is not None else EventLog()
        self.known_keys = KnownKeys(max(self.config.known_keys, KNOWN_KEYS))
        """Image keys sent by any of the session's clients: an image embedded ahead (prefetch,
        Encode stack) goes with its key only when it is clicked."""
        self._dispatch = dispatch
        self._runners: dict[str, LatestOnly[Any]] = {}
        self._clients: dict[str, SamClient] = {}
        self._closed = False

    def runner(self, channel: str) -> LatestOnly[Any]:
        if channel not in self._runners:
            self._runners[channel] = LatestOnly(name=f"sam2-{channel}")
        return self._runners[channel]

    def _client(self, channel: str) -> SamClient:
        # Only ever called from the channel's runner thread, one job at a time.
        client = self._clients.get(channel)
        if client is None:
            client = self.new_client()
            self._clients[channel] = client
        return client

    def new_client(self) -> SamClient:
        """A new logged client sharing the session's known image keys (fan-outs; the caller closes it)."""
        return LoggedClient(
            self.endpoint, self.model, config=self.config, log=self.log, known_keys=self.known_keys
        )

    def submit(
        self,
        channel: str,
        job: Callable[[SamClient], T],
        on_result: Callable[[T], None],
        on_error: Callable[[Exception], None],
    ) -> int:
        """Run ``job(client)`` on ``channel``'s thread; deliver on the GUI thread if still newest.

        Returns:
            The submission's generation number on that channel.
        """
        if self._closed:
            raise RuntimeError("session is closed")
        runner = self.runner(channel)
        generation = 0

        def deliver(callback: Callable[[Any], None], value: Any) -> None:
            if not self._closed and runner.is_current(generation):
                callback(value)

        generation = runner.submit(
            lambda: job(self._client(channel)),
            lambda value: self._dispatch(lambda: deliver(on_result, value)),
            lambda error: self._dispatch(lambda: deliver(on_error, error)),
        )
        return generation

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no channel has work (tests, shutdown)."""
        return all(r.wait_idle(timeout_s) for r in list(self._runners.values()))

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop delivering results; close the sockets of idle channels."""
        self._closed = True
        for channel, runner in list(self._runners.items()):
            if runner.wait_idle(timeout_s) and channel in self._clients:
                self._clients.pop(channel).close()
