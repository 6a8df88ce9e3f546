"""MDP/0.2 (ZeroMQ RFC 18, Majordomo Protocol) frame building and parsing.

Every frame layout below is exactly the RFC's, as a DEALER socket sends and
receives it (a ROUTER peer sees one extra identity frame in front)::

    REQUEST    client -> broker : [b"MDPC02", 0x01, service, body...]
    PARTIAL    broker -> client : [b"MDPC02", 0x02, service, body...]
    FINAL      broker -> client : [b"MDPC02", 0x03, service, body...]

    READY      worker -> broker : [b"MDPW02", 0x01, service]
    REQUEST    broker -> worker : [b"MDPW02", 0x02, client, b"", body...]
    PARTIAL    worker -> broker : [b"MDPW02", 0x03, client, b"", body...]
    FINAL      worker -> broker : [b"MDPW02", 0x04, client, b"", body...]
    HEARTBEAT  either direction : [b"MDPW02", 0x05]
    DISCONNECT either direction : [b"MDPW02", 0x06]

``client`` is the envelope (the client's ROUTER identity); workers echo it
back unchanged.

RFC 18 removed MDP/0.1's leading empty frame, but widely used
implementations (the RFC's reference libmdp, majortomo) still send it. So
every parser here also accepts one leading empty frame and reports it as
``delimited``; builders take ``delimited=True`` to answer such a peer in its
own framing. Without it, what we send is RFC 18 to the letter. Parsing
functions raise :class:`ProtocolError` for anything else and never ``assert``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol.runtime.registry import DESCRIBED_FIELDS
from protocol.wire.errors import ProtocolError

CLIENT_HEADER = b"MDPC02"
WORKER_HEADER = b"MDPW02"

# Client commands.
C_REQUEST = b"\x01"
C_PARTIAL = b"\x02"
C_FINAL = b"\x03"

# Worker commands.
W_READY = b"\x01"
W_REQUEST = b"\x02"
W_PARTIAL = b"\x03"
W_FINAL = b"\x04"
W_HEARTBEAT = b"\x05"
W_DISCONNECT = b"\x06"

CLIENT_COMMAND_NAMES = {C_REQUEST: "REQUEST", C_PARTIAL: "PARTIAL", C_FINAL: "FINAL"}
WORKER_COMMAND_NAMES = {
    W_READY: "READY",
    W_REQUEST: "REQUEST",
    W_PARTIAL: "PARTIAL",
    W_FINAL: "FINAL",
    W_HEARTBEAT: "HEARTBEAT",
    W_DISCONNECT: "DISCONNECT",
}

MAX_SERVICE_NAME_BYTES = 255

# A broker's default endpoints: clients connect to the frontend, workers to the backend.
DEFAULT_FRONTEND = "tcp://127.0.0.1:5555"
DEFAULT_BACKEND = "tcp://127.0.0.1:5556"

# The broker's own management services (ZeroMQ RFC 8 style; answered in broker/mmi.py).
MMI_PREFIX = b"mmi."
MMI_SERVICE = b"mmi.service"
MMI_SERVICES = b"mmi.services"
MMI_CANCEL = b"mmi.cancel"
# What ``mmi.services`` says about a service beyond its worker counts, learned from the
# ``info`` replies of its workers (protocol/README.md, "Discovering models").
SERVICE_FIELDS = (*DESCRIBED_FIELDS, "ops")

# A frame as received: ``bytes`` or a zero-copy ``zmq.Frame`` (buffer protocol).
Frame = Any


@dataclass(frozen=True)
class ClientMessage:
    """A parsed client-protocol message (without any ROUTER identity).

    Attributes:
        command: one of ``C_REQUEST``, ``C_PARTIAL``, ``C_FINAL``.
        service: service name as bytes.
        body: the application frames (may be empty).
        delimited: the peer put MDP/0.1's empty frame in front.
    """

    command: bytes
    service: bytes
    body: list[Frame]
    delimited: bool = False


@dataclass(frozen=True)
class WorkerMessage:
    """A parsed worker-protocol message (without any ROUTER identity).

    Attributes:
        command: one of the ``W_*`` commands.
        service: service name (READY only, else ``b""``).
        client: client envelope (REQUEST/PARTIAL/FINAL only, else ``b""``).
        body: the application frames (REQUEST/PARTIAL/FINAL only).
        delimited: the peer put MDP/0.1's empty frame in front.
    """

    command: bytes
    service: bytes = b""
    client: bytes = b""
    body: tuple[Frame, ...] = ()
    delimited: bool = False


def _check_service(service: bytes) -> None:
    if not service:
        raise ProtocolError("empty service name")
    if len(service) > MAX_SERVICE_NAME_BYTES:
        raise ProtocolError(f"service name longer than {MAX_SERVICE_NAME_BYTES} bytes")


def _head(frame: Frame, size: int = 16) -> bytes:
    """The first ``size`` bytes of a frame for error messages (``zmq.Frame`` cannot be sliced)."""
    return bytes(memoryview(frame)[:size])


def _prefix(delimited: bool) -> list[Frame]:
    return [b""] if delimited else []


def _strip_delimiter(frames: Sequence[Frame]) -> tuple[Sequence[Frame], bool]:
    """Drop one leading empty frame (MDP/0.1-style peers); say whether there was one."""
    if frames and len(frames[0]) == 0:
        return frames[1:], True
    return frames, False


def client_request(service: bytes, body: Sequence[Frame], *, delimited: bool = False) -> list[Frame]:
    """Frames a client sends on a DEALER socket to ask ``service``."""
    _check_service(service)
    return [*_prefix(delimited), CLIENT_HEADER, C_REQUEST, service, *body]


def client_reply(
    command: bytes, service: bytes, body: Sequence[Frame], *, delimited: bool = False
) -> list[Frame]:
    """Frames the broker sends to a client (PARTIAL or FINAL), without identity."""
    if command not in (C_PARTIAL, C_FINAL):
        raise ProtocolError(f"not a client reply command: {command!r}")
    return [*_prefix(delimited), CLIENT_HEADER, command, service, *body]


def _open(
    frames: Sequence[Frame], role: str, header: bytes, min_frames: int
) -> tuple[Sequence[Frame], bool, bytes]:
    """Strip one leading empty frame, check the frame count and protocol header of a ``role``
    (client/worker) message, and return ``(frames from the header on, delimited, command)``.

    Raises:
        ProtocolError: fewer than ``min_frames`` frames, or another header.
    """
    frames, delimited = _strip_delimiter(frames)
    if len(frames) < min_frames:
        raise ProtocolError(f"{role} message has {len(frames)} frames, needs at least {min_frames}")
    if bytes(frames[0]) != header:
        raise ProtocolError(f"bad {role} protocol header {_head(frames[0])!r}")
    return frames, delimited, bytes(frames[1])


def parse_client(frames: Sequence[Frame]) -> ClientMessage:
    """Parse client-protocol frames (one leading empty frame is tolerated).

    Body frames are passed through as given (bytes or zero-copy ``zmq.Frame``).

    Raises:
        ProtocolError: wrong header, command, or missing service.
    """
    frames, delimited, command = _open(frames, "client", CLIENT_HEADER, 3)
    if command not in CLIENT_COMMAND_NAMES:
        raise ProtocolError(f"unknown client command {command!r}")
    service = bytes(frames[2])
    _check_service(service)
    return ClientMessage(command, service, list(frames[3:]), delimited)


def worker_message(
    command: bytes,
    *,
    service: bytes = b"",
    client: bytes = b"",
    body: Sequence[Frame] = (),
    delimited: bool = False,
) -> list[Frame]:
    """Frames for one worker-protocol command, without identity.

    READY needs ``service``; REQUEST/PARTIAL/FINAL need ``client`` and
    ``body``; HEARTBEAT and DISCONNECT take nothing.
    """
    head = [*_prefix(delimited), WORKER_HEADER, command]
    if command == W_READY:
        _check_service(service)
        return [*head, service]
    if command in (W_REQUEST, W_PARTIAL, W_FINAL):
        if not client:
            raise ProtocolError("REQUEST/PARTIAL/FINAL need a client envelope")
        return [*head, client, b"", *body]
    if command in (W_HEARTBEAT, W_DISCONNECT):
        return head
    raise ProtocolError(f"unknown worker command {command!r}")


def parse_worker(frames: Sequence[Frame]) -> WorkerMessage:
    """Parse worker-protocol frames (one leading empty frame is tolerated).

    Body frames are passed through as given (bytes or zero-copy ``zmq.Frame``).

    Raises:
        ProtocolError: wrong header, command, or frame count.
    """
    frames, delimited, command = _open(frames, "worker", WORKER_HEADER, 2)
    if command == W_READY:
        if len(frames) != 3:
            raise ProtocolError("READY must carry exactly one service frame")
        service = bytes(frames[2])
        _check_service(service)
        return WorkerMessage(W_READY, service=service, delimited=delimited)
    if command in (W_REQUEST, W_PARTIAL, W_FINAL):
        if len(frames) < 4 or len(frames[3]) != 0:
            raise ProtocolError(f"{WORKER_COMMAND_NAMES[command]} needs a client envelope and an empty frame")
        client = bytes(frames[2])
        if not client:
            raise ProtocolError("empty client envelope")
        return WorkerMessage(command, client=client, body=tuple(frames[4:]), delimited=delimited)
    if command in (W_HEARTBEAT, W_DISCONNECT):
        if len(frames) != 2:
            raise ProtocolError(f"{WORKER_COMMAND_NAMES[command]} carries no frames")
        return WorkerMessage(command, delimited=delimited)
    raise ProtocolError(f"unknown worker command {command!r}")
