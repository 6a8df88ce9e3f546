"""MDP/0.2 (ZeroMQ RFC 18, Majordomo Protocol) frame building and parsing.

Every frame layout below is the RFC's, as seen on a DEALER socket (the
leading empty frame is the REQ-compatible delimiter). A ROUTER peer sees one
extra identity frame in front.

Client sub-protocol (``MDPC02``)::

    REQUEST  client -> broker : [b"", b"MDPC02", 0x01, service, body...]
    PARTIAL  broker -> client : [b"", b"MDPC02", 0x02, service, body...]
    FINAL    broker -> client : [b"", b"MDPC02", 0x03, service, body...]

Worker sub-protocol (``MDPW02``)::

    READY      worker -> broker : [b"", b"MDPW02", 0x01, service]
    REQUEST    broker -> worker : [b"", b"MDPW02", 0x02, client, b"", body...]
    PARTIAL    worker -> broker : [b"", b"MDPW02", 0x03, client, b"", body...]
    FINAL      worker -> broker : [b"", b"MDPW02", 0x04, client, b"", body...]
    HEARTBEAT  either direction : [b"", b"MDPW02", 0x05]
    DISCONNECT either direction : [b"", b"MDPW02", 0x06]

``client`` is the envelope (the client's ROUTER identity); workers must echo
it back unchanged. Parsing functions raise :class:`ProtocolError` for
anything else and never ``assert``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol.errors import ProtocolError

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

# A frame as received: ``bytes`` or a zero-copy ``zmq.Frame`` (buffer protocol).
Frame = Any


@dataclass(frozen=True)
class ClientMessage:
    """A parsed client-protocol message (without any ROUTER identity).

    Attributes:
        command: one of ``C_REQUEST``, ``C_PARTIAL``, ``C_FINAL``.
        service: service name as bytes.
        body: the application frames (may be empty).
    """

    command: bytes
    service: bytes
    body: list[Frame]


@dataclass(frozen=True)
class WorkerMessage:
    """A parsed worker-protocol message (without any ROUTER identity).

    Attributes:
        command: one of the ``W_*`` commands.
        service: service name (READY only, else ``b""``).
        client: client envelope (REQUEST/PARTIAL/FINAL only, else ``b""``).
        body: the application frames (REQUEST/PARTIAL/FINAL only).
    """

    command: bytes
    service: bytes = b""
    client: bytes = b""
    body: tuple[Frame, ...] = ()


def _check_service(service: bytes) -> None:
    if not service:
        raise ProtocolError("empty service name")
    if len(service) > MAX_SERVICE_NAME_BYTES:
        raise ProtocolError(f"service name longer than {MAX_SERVICE_NAME_BYTES} bytes")


def client_request(service: bytes, body: Sequence[Frame]) -> list[Frame]:
    """Frames a client sends on a DEALER socket to ask ``service``."""
    _check_service(service)
    return [b"", CLIENT_HEADER, C_REQUEST, service, *body]


def client_reply(command: bytes, service: bytes, body: Sequence[Frame]) -> list[Frame]:
    """Frames the broker sends to a client (PARTIAL or FINAL), without identity."""
    if command not in (C_PARTIAL, C_FINAL):
        raise ProtocolError(f"not a client reply command: {command!r}")
    return [b"", CLIENT_HEADER, command, service, *body]


def parse_client(frames: Sequence[Frame]) -> ClientMessage:
    """Parse client-protocol frames that start with the empty delimiter.

    Body frames are passed through as given (bytes or zero-copy ``zmq.Frame``).

    Raises:
        ProtocolError: wrong delimiter, header, command, or missing service.
    """
    if len(frames) < 4:
        raise ProtocolError(f"client message has {len(frames)} frames, needs at least 4")
    if len(frames[0]) != 0:
        raise ProtocolError("client message does not start with an empty delimiter frame")
    if bytes(frames[1]) != CLIENT_HEADER:
        raise ProtocolError(f"bad client protocol header {bytes(frames[1][:16])!r}")
    command = bytes(frames[2])
    if command not in CLIENT_COMMAND_NAMES:
        raise ProtocolError(f"unknown client command {command!r}")
    service = bytes(frames[3])
    _check_service(service)
    return ClientMessage(command, service, list(frames[4:]))


def worker_message(
    command: bytes,
    *,
    service: bytes = b"",
    client: bytes = b"",
    body: Sequence[Frame] = (),
) -> list[Frame]:
    """Frames for one worker-protocol command, without identity.

    READY needs ``service``; REQUEST/PARTIAL/FINAL need ``client`` and
    ``body``; HEARTBEAT and DISCONNECT take nothing.
    """
    if command == W_READY:
        _check_service(service)
        return [b"", WORKER_HEADER, W_READY, service]
    if command in (W_REQUEST, W_PARTIAL, W_FINAL):
        if not client:
            raise ProtocolError("REQUEST/PARTIAL/FINAL need a client envelope")
        return [b"", WORKER_HEADER, command, client, b"", *body]
    if command in (W_HEARTBEAT, W_DISCONNECT):
        return [b"", WORKER_HEADER, command]
    raise ProtocolError(f"unknown worker command {command!r}")


def parse_worker(frames: Sequence[Frame]) -> WorkerMessage:
    """Parse worker-protocol frames that start with the empty delimiter.

    Body frames are passed through as given (bytes or zero-copy ``zmq.Frame``).

    Raises:
        ProtocolError: wrong delimiter, header, command, or frame count.
    """
    if len(frames) < 3:
        raise ProtocolError(f"worker message has {len(frames)} frames, needs at least 3")
    if len(frames[0]) != 0:
        raise ProtocolError("worker message does not start with an empty delimiter frame")
    if bytes(frames[1]) != WORKER_HEADER:
        raise ProtocolError(f"bad worker protocol header {bytes(frames[1][:16])!r}")
    command = bytes(frames[2])
    if command == W_READY:
        if len(frames) != 4:
            raise ProtocolError("READY must carry exactly one service frame")
        service = bytes(frames[3])
        _check_service(service)
        return WorkerMessage(W_READY, service=service)
    if command in (W_REQUEST, W_PARTIAL, W_FINAL):
        if len(frames) < 5 or len(frames[4]) != 0:
            raise ProtocolError(f"{WORKER_COMMAND_NAMES[command]} needs a client envelope and an empty frame")
        client = bytes(frames[3])
        if not client:
            raise ProtocolError("empty client envelope")
        return WorkerMessage(command, client=client, body=tuple(frames[5:]))
    if command in (W_HEARTBEAT, W_DISCONNECT):
        if len(frames) != 3:
            raise ProtocolError(f"{WORKER_COMMAND_NAMES[command]} carries no frames")
        return WorkerMessage(command)
    raise ProtocolError(f"unknown worker command {command!r}")
