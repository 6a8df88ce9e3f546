"""MDP/0.2 peers made of bare ZeroMQ sockets, speaking frame by frame: a raw client, a raw worker
driven step by step, and a threaded worker that answers by itself.

Used by the fuzz soak (``scripts/soak_fuzz.py``) for its health checks and by
the broker tests (``tests/support/broker_peers.py``). A peer that gets no
answer in time, or a frame it did not expect, raises ``AssertionError``
(these are checkers, not clients: use ``protocol.wire.client`` for real work).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from protocol.wire import codec, mdp

REPLY_TIMEOUT_S = 10.0
"""Default wait for an answer (generous: test machines are busy)."""
WORKER_HEARTBEAT_S = 0.1
"""Raw workers heartbeat this often (twice as often as test brokers expect)."""

HEARTBEAT = [mdp.WORKER_HEADER, mdp.W_HEARTBEAT]
DISCONNECT = [mdp.WORKER_HEADER, mdp.W_DISCONNECT]


def request_body(
    request_id: str, *, op: str = "echo", image_key: str | None = None, params: dict[str, Any] | None = None
) -> list[bytes]:
    """Body frames of a request built with the project's codec."""
    header: dict[str, Any] = {"op": op, "request_id": request_id, "params": params or {}}
    if image_key is not None:
        header["image_key"] = image_key
    return [bytes(frame) for frame in codec.encode(header)]


def reply_body(request: Sequence[bytes], status: str = "ok", **result: Any) -> list[bytes]:
    """Body frames of a reply to the request body ``request``."""
    header = codec.reply_header(codec.peek_header(request[0]) if request else {}, status, result=result)
    return [bytes(frame) for frame in codec.encode(header)]


class RawPeer:
    """A DEALER socket with a bounded receive."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, identity: bytes | None = None) -> None:
        self.socket: zmq.Socket[bytes] = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            self.socket.setsockopt(zmq.IDENTITY, identity)
        self.socket.connect(endpoint)

    def send(self, frames: Sequence[bytes]) -> None:
        self.socket.send_multipart(list(frames))

    def recv(self, timeout_s: float = REPLY_TIMEOUT_S) -> list[bytes] | None:
        if self.socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            return self.socket.recv_multipart()
        return None

    def close(self) -> None:
        self.socket.close(linger=0)


class RawClient(RawPeer):
    """An MDP client made of a bare DEALER socket."""

    def request(self, service: bytes, body: Sequence[bytes]) -> None:
        self.send(mdp.client_request(service, body))

    def final(self, timeout_s: float = REPLY_TIMEOUT_S) -> tuple[list[list[bytes]], list[bytes]]:
        """Collect PARTIAL bodies until the FINAL; returns (partial bodies, final body)."""
        partials: list[list[bytes]] = []
        deadline = time.monotonic() + timeout_s
        while True:
            frames = self.recv(max(0.0, deadline - time.monotonic()))
            if frames is None:
                raise AssertionError(f"no FINAL within {timeout_s} s (partials so far: {partials})")
            assert frames[:1] == [mdp.CLIENT_HEADER], frames
            if frames[1] == mdp.C_FINAL:
                return partials, frames[3:]
            assert frames[1] == mdp.C_PARTIAL, frames
            partials.append(frames[3:])


class RawWorker(RawPeer):
    """An MDP worker made of a bare DEALER socket, driven step by step by the test."""

    def __init__(
        self, context: zmq.Context[Any], endpoint: str, service: bytes, identity: bytes | None = None
    ) -> None:
        super().__init__(context, endpoint, identity)
        self.service = service

    def ready(self) -> None:
        self.send([mdp.WORKER_HEADER, mdp.W_READY, self.service])

    def heartbeat(self) -> None:
        self.send(HEARTBEAT)

    def next_command(self, timeout_s: float = REPLY_TIMEOUT_S, keep_alive: bool = True) -> list[bytes] | None:
        """The next message that is not a HEARTBEAT, heartbeating meanwhile if ``keep_alive``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if keep_alive:
                self.heartbeat()
            frames = self.recv(min(WORKER_HEARTBEAT_S, max(0.0, deadline - time.monotonic())))
            if frames is not None and frames != HEARTBEAT:
                return frames
        return None

    def wait_request(self, timeout_s: float = REPLY_TIMEOUT_S) -> tuple[bytes, list[bytes]]:
        """(client envelope, body) of the next REQUEST."""
        frames = self.next_command(timeout_s)
        assert frames is not None, "no REQUEST arrived"
        assert frames[:2] == [mdp.WORKER_HEADER, mdp.W_REQUEST] and frames[3] == b"", frames
        return frames[2], frames[4:]

    def partial(self, client: bytes, body: Sequence[bytes]) -> None:
        self.send(mdp.worker_message(mdp.W_PARTIAL, client=client, body=body))

    def final(self, client: bytes, body: Sequence[bytes]) -> None:
        self.send(mdp.worker_message(mdp.W_FINAL, client=client, body=body))


Handler = Callable[[list[bytes]], list[list[bytes]]]


def echo_handler(name: str) -> Handler:
    """A handler whose FINAL says which worker answered: ``result.worker == name``."""

    def handle(body: list[bytes]) -> list[list[bytes]]:
        return [reply_body(body, worker=name)]

    return handle


class ThreadedWorker:
    """A raw MDP worker on its own thread: heartbeats, answers with ``handler``.

    ``handler(body)`` returns the reply bodies: all but the last go out as
    PARTIAL, the last as FINAL. With ``silent_after_request`` the worker stops
    sending anything (heartbeats included) once it receives a REQUEST, like a
    hung process.

    Attributes:
        requests: bodies of the REQUESTs received, in order.
        got_request: set at the first REQUEST.
        disconnects: DISCONNECTs received from the broker.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        service: bytes,
        handler: Handler,
        *,
        silent_after_request: bool = False,
    ) -> None:
        self.requests: list[list[bytes]] = []
        self.got_request = threading.Event()
        self.disconnects = 0
        self._context = context
        self._endpoint = endpoint
        self._service = service
        self._handler = handler
        self._silent_after_request = silent_after_request
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        worker = RawWorker(self._context, self._endpoint, self._service)
        try:
            worker.ready()
            while not self._stop.is_set():
                frames = worker.next_command(WORKER_HEARTBEAT_S * 2)
                if frames is None:
                    continue
                if frames == DISCONNECT:
                    self.disconnects += 1
                    continue
                if frames[1] != mdp.W_REQUEST:
                    continue
                client, body = frames[2], frames[4:]
                self.requests.append(body)
                self.got_request.set()
                if self._silent_after_request:
                    self._stop.wait()
                    return
                replies = self._handler(body)
                for partial in replies[:-1]:
                    worker.partial(client, partial)
                worker.final(client, replies[-1])
        finally:
            worker.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
