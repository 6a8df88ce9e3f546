"""The MDP/0.2 client socket: :class:`MDPClient`, one DEALER speaking RFC 18's client side.

Raw frames in and out, one thread; CurveZMQ when keys are given or set in the
environment; a socket monitor that notices a dropped broker connection.
:class:`protocol.wire.client.SamClient` puts our body codec, ids and retries on top.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import zmq
from zmq.utils.monitor import parse_monitor_message

from protocol.wire import mdp
from protocol.wire.errors import ProtocolError
from protocol.wire.mdp import DEFAULT_FRONTEND
from protocol.wire.security import CurveClientKeys

log = logging.getLogger("protocol.wire.client")


class MDPClient:
    """A DEALER socket to a broker's client frontend (RFC 18 client side).

    Not thread-safe: use one instance per thread.

    Args:
        endpoint: broker frontend, e.g. ``"tcp://127.0.0.1:5555"``.
        context: zmq context (default: the process-wide instance).
        max_message_bytes: ZMQ_MAXMSGSIZE for incoming messages (-1: none).
        delimited: put MDP/0.1's empty frame before each REQUEST, for brokers
            that expect it (libmdp, majortomo); RFC 18 framing when false.
        curve: CurveZMQ keys for a broker started with ``--curve-dir``;
            ``None`` reads them from ``SAM2_CURVE_CLIENT_KEY`` and
            ``SAM2_CURVE_SERVER_KEY`` when those are set (plain TCP otherwise);
            ``False`` never uses CURVE.

    Raises:
        SecurityError: the CURVE key files named by the environment are unusable.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_FRONTEND,
        *,
        context: zmq.Context | None = None,
        max_message_bytes: int = (1 << 30) + (1 << 20),
        delimited: bool = False,
        curve: CurveClientKeys | None | Literal[False] = None,
    ) -> None:
        self.endpoint = endpoint
        self.delimited = delimited
        self.context = context or zmq.Context.instance()
        self.max_message_bytes = max_message_bytes
        self.curve: CurveClientKeys | None = (
            None if curve is False else curve if curve is not None else CurveClientKeys.from_env()
        )
        self.socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self.connect()

    def connect(self) -> None:
        """Open a fresh socket (closing any old one, dropping its queued replies).

        Replies larger than ``max_message_bytes`` per frame are refused by
        libzmq before allocation. With CURVE keys the socket is a CURVE
        client: a broker that does not admit the key never answers (the
        call times out) and logs the refusal.

        A socket monitor (``inproc``, disconnect events only) tells
        :meth:`connection_lost` when an established connection drops.
        """
        self.close()
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        if self.curve is not None:
            self.curve.apply(sock)
        try:
            self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        except zmq.ZMQError as e:  # no monitor: a lost broker is then noticed by the silence timeout only
            log.warning("no socket monitor on the broker connection (%s): a restart is noticed late", e)
            self._monitor = None
        sock.connect(self.endpoint)
        self.socket = sock

    def connection_lost(self) -> bool:
        """Whether the connection to the broker dropped since the last call (never blocks).

        True after the broker's end closed (it exited, crashed or restarted)
        or the network dropped the TCP connection; the socket reconnects by
        itself, but the requests the broker held are gone. Failed connection
        attempts (no broker yet) are not losses.
        """
        lost = False
        while self._monitor is not None:
            try:
                frames = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            lost = lost or parse_monitor_message(frames)["event"] == zmq.EVENT_DISCONNECTED
        return lost

    def close(self) -> None:
        if self.socket is not None:
            if self._monitor is not None:
                self.socket.disable_monitor()
                self._monitor.close(linger=0)
                self._monitor = None
            self.socket.close(linger=0)
            self.socket = None

    def send(self, service: bytes, body: list[Any]) -> None:
        """Send one REQUEST for ``service`` with body frames."""
        if self.socket is None:
            raise ProtocolError("client socket is closed")
        self.socket.send_multipart(mdp.client_request(service, body, delimited=self.delimited), copy=False)

    def recv(self, timeout_s: float) -> mdp.ClientMessage | None:
        """Wait up to ``timeout_s`` for one PARTIAL/FINAL; ``None`` on timeout.

        Malformed messages are logged and skipped (counted as no message).
        """
        if self.socket is None:
            raise ProtocolError("client socket is closed")
        if not self.socket.poll(int(max(timeout_s, 0) * 1000), zmq.POLLIN):
            return None
        frames = self.socket.recv_multipart(copy=False)
        try:
            message = mdp.parse_client([f.buffer for f in frames])
        except ProtocolError as e:
            log.warning("dropping malformed reply from broker: %s", e)
            return None
        if message.command == mdp.C_REQUEST:
            log.warning("dropping REQUEST sent to a client")
            return None
        return message

    def __enter__(self) -> MDPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
