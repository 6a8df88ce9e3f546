"""A real MDP/0.2 worker on a real socket whose answers a test scripts.

Used to inject faults a SAM2 worker would not produce on demand: late
replies, stale request ids, PARTIAL streams, "need image" answers, silence.
It heartbeats like a conforming worker, from its own thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from protocol.wire import codec, mdp

# handler(request, n) -> steps (command, body frames[, delay_s]); [] = stay silent
Handler = Callable[[codec.Message, int], list[tuple[Any, ...]]]


class ScriptedWorker:
    """Connects to ``backend``, registers ``service`` and answers with ``handler``.

    Attributes:
        requests: every decoded request received, in order.
    """

    def __init__(
        self, backend: str, service: str, handler: Handler, heartbeat_interval_s: float = 0.1
    ) -> None:
        self.backend = backend
        self.service = service.encode()
        self.handler = handler
        self.heartbeat_interval_s = heartbeat_interval_s
        self.requests: list[codec.Message] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ScriptedWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _connect(self) -> zmq.Socket[bytes]:
        """A fresh DEALER (a new identity) that has sent READY."""
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.backend)
        sock.send_multipart(mdp.worker_message(mdp.W_READY, service=self.service))
        return sock

    def _run(self) -> None:
        sock = self._connect()
        next_heartbeat = time.monotonic()
        delayed: list[tuple[float, list[Any]]] = []
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_heartbeat:
                    sock.send_multipart(mdp.worker_message(mdp.W_HEARTBEAT))
                    next_heartbeat = now + self.heartbeat_interval_s
                for item in [d for d in delayed if d[0] <= now]:
                    sock.send_multipart(item[1])
                    delayed.remove(item)
                if not sock.poll(20):
                    continue
                message = mdp.parse_worker(sock.recv_multipart())
                if message.command == mdp.W_DISCONNECT:
                    # Reconnect on a fresh socket, as RFC 18 asks: a DISCONNECT the broker sends to
                    # the old identity later (for a heartbeat already on its way) cannot reach this
                    # one. Delayed answers still go out, on the new socket: a worker that did not
                    # stop its job in time.
                    sock.close(linger=0)
                    sock = self._connect()
                    continue
                if message.command != mdp.W_REQUEST:
                    continue
                request = codec.decode(list(message.body))
                self.requests.append(request)
                for step in self.handler(request, len(self.requests)):
                    command, body = step[0], step[1]
                    delay_s = step[2] if len(step) > 2 else 0.0
                    frames = mdp.worker_message(command, client=message.client, body=body)
                    if delay_s:
                        delayed.append((time.monotonic() + delay_s, frames))
                    else:
                        sock.send_multipart(frames)
        finally:
            sock.close(linger=0)


def reply(
    request: codec.Message, status: str = "ok", *, request_id: str | None = None, **result: Any
) -> list[Any]:
    """Body of a reply to ``request`` (optionally claiming another request id)."""
    header = codec.reply_header(request.header, status, result=result)
    if request_id is not None:
        header["request_id"] = request_id
    return codec.encode(header)
