"""CurveZMQ authentication for the broker: a ZAP (ZeroMQ RFC 27) handler thread.

With ``--curve-dir DIR`` (layout in ``protocol/wire/security.py``) both broker
sockets become CURVE servers with the broker's keypair: every connection is
encrypted, and a peer gets in only if its public key is listed, with a
separate list per socket:

* frontend (clients), ZAP domain ``sam2.clients``: ``DIR/authorized_clients/*.key``
* backend (workers), ZAP domain ``sam2.workers``: ``DIR/authorized_workers/*.key``

So a client key never lets its holder register as a worker, and the other
way round. The key folders are read again at each handshake: adding or
deleting a ``.key`` file takes effect for the next connection, without a
restart (a connection already admitted stays up until it closes).

Every refusal is logged at WARNING: an unlisted key (with the peer's address
and the key), and, through socket monitors, handshakes that fail before any
key is checked (a peer without CURVE, or one using the wrong broker key).
The same refusal repeated (libzmq reconnects every 100 ms) is logged at most
once per ``repeat_log_s``, with the number of repeats.

The handler must be bound before either socket binds: libzmq admits every
key when no ZAP handler exists. If this thread ever stopped answering,
handshakes would stall rather than succeed (fail closed).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from protocol.wire.security import (
    AUTHORIZED_CLIENTS,
    AUTHORIZED_WORKERS,
    BROKER_SECRET_KEY,
    CLIENTS_DOMAIN,
    WORKERS_DOMAIN,
    CurveKeyPair,
    apply_curve_server,
    scan_authorized_keys,
    secret_file_is_private,
)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"

_HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_PROTOCOL_ERRORS: dict[int, str] = {
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: "the peer does not use CURVE (no key configured on its side)",
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: "CURVE handshake could not be decrypted (the peer has the wrong "
    "broker public key)",
}
# Remembered refusals for rate-limited logging; forgotten wholesale past this many.
_MAX_REMEMBERED_REFUSALS = 4096


@dataclass
class AuthCounters:
    """Handshakes seen by the authenticator since start."""

    admitted: int = 0
    refused: int = 0
    failed_handshakes: int = 0


@dataclass
class _Refusal:
    logged_at_s: float
    repeats: int = 0


@dataclass(frozen=True)
class _Domain:
    role: str  # "client" or "worker"
    socket_name: str  # "frontend" or "backend"
    folder: Path


class CurveAuthenticator:
    """ZAP handler and handshake monitor for the broker's two CURVE sockets.

    Use: ``auth = CurveAuthenticator.from_directory(context, curve_dir)``;
    ``auth.secure(frontend, "frontend")`` and ``auth.secure(backend,
    "backend")`` before binding; ``auth.start()``; at the end, after the two
    sockets are closed, ``auth.stop()``.

    Args:
        context: the context of the sockets to protect (ZAP is per context).
        keypair: the broker's keypair.
        curve_dir: the key directory (its ``authorized_*`` folders are read).
        repeat_log_s: the same refusal is logged at most once per this many seconds.

    Attributes:
        counters: admitted / refused / failed handshakes.
    """

    def __init__(
        self, context: zmq.Context[Any], keypair: CurveKeyPair, curve_dir: Path, repeat_log_s: float = 60.0
    ) -> None:
        self.keypair = keypair
        self.curve_dir = curve_dir
        self.repeat_log_s = repeat_log_s
        self.counters = AuthCounters()
        self._log = logging.getLogger(__name__)
        self._domains = {
            CLIENTS_DOMAIN.encode(): _Domain("client", "frontend", curve_dir / AUTHORIZED_CLIENTS),
            WORKERS_DOMAIN.encode(): _Domain("worker", "backend", curve_dir / AUTHORIZED_WORKERS),
        }
        self._zap: zmq.Socket[bytes] = context.socket(zmq.REP)
        self._zap.setsockopt(zmq.LINGER, 0)
        self._zap.bind(ZAP_ENDPOINT)
        self._monitors: list[tuple[zmq.Socket[bytes], str]] = []
        self._refusals: dict[tuple[str, ...], _Refusal] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-zap", daemon=True)

    @classmethod
    def from_directory(
        cls, context: zmq.Context[Any], curve_dir: Path, *, repeat_log_s: float = 60.0
    ) -> CurveAuthenticator:
        """Load the broker keypair from ``curve_dir`` and bind the ZAP handler.

        Raises:
            SecurityError: ``broker.key_secret`` is missing or malformed.
        """
        keypair = CurveKeyPair.load(curve_dir / BROKER_SECRET_KEY)
        auth = cls(context, keypair, curve_dir, repeat_log_s)
        auth._check_layout()
        return auth

    def _check_layout(self) -> None:
        if not secret_file_is_private(self.curve_dir / BROKER_SECRET_KEY):
            self._log.warning(
                "%s can be read by other users: chmod 600 it", self.curve_dir / BROKER_SECRET_KEY
            )
        for domain in self._domains.values():
            keys, problems = scan_authorized_keys(domain.folder)
            for problem in problems:
                self._log.warning("ignoring an unreadable key file: %s", problem)
            if not keys:
                self._log.warning(
                    "no %s key is authorised (%s has no *.key file): every %s will be refused",
                    domain.role,
                    domain.folder,
                    domain.role,
                )
            else:
                self._log.info("curve: %d %s key(s) authorised in %s", len(keys), domain.role, domain.folder)

    # ------------------------------------------------------------------ set-up

    def secure(self, socket: zmq.Socket[bytes], socket_name: str) -> None:
        """Make ``socket`` (``"frontend"`` or ``"backend"``) a CURVE server; call before ``start``."""
        domain = CLIENTS_DOMAIN if socket_name == "frontend" else WORKERS_DOMAIN
        apply_curve_server(socket, self.keypair, domain)
        self._monitors.append((socket.get_monitor_socket(_HANDSHAKE_EVENTS), socket_name))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close its sockets (after the monitored sockets are closed)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        else:
            self._close_sockets()

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        names = {}
        for monitor, socket_name in self._monitors:
            poller.register(monitor, zmq.POLLIN)
            names[monitor] = socket_name
        try:
            while not self._stop.is_set():
                for socket, _ in poller.poll(200):
                    if socket is self._zap:
                        self._answer_zap()
                        continue
                    try:
                        self._on_monitor_event(socket.recv_multipart(), names[socket])
                    except Exception:  # a strange event must not stop authentication
                        self._log.exception("curve: could not read a handshake event")
        finally:
            self._close_sockets()

    def _close_sockets(self) -> None:
        for monitor, _ in self._monitors:
            monitor.close(linger=0)
        self._monitors.clear()
        self._zap.close(linger=0)

    def _answer_zap(self) -> None:
        """Receive one ZAP request and always answer it (a REP socket that skips a reply is stuck)."""
        request = self._zap.recv_multipart()
        try:
            reply = self.handle_zap(request)
        except Exception:  # e.g. an unreadable key folder: refuse, and keep authenticating
            self._log.exception("curve: error while checking a key; refused")
            reply = [
                ZAP_VERSION,
                request[1] if len(request) > 1 else b"",
                b"500",
                b"internal error",
                b"",
                b"",
            ]
        self._zap.send_multipart(reply)

    def handle_zap(self, frames: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request (RFC 27): 200 for a listed CURVE key, 400 otherwise."""
        if len(frames) < 6:
            return [
                ZAP_VERSION,
                frames[1] if len(frames) > 1 else b"",
                b"500",
                b"malformed ZAP request",
                b"",
                b"",
            ]
        version, request_id, domain_name, address, _identity, mechanism = frames[:6]
        credentials = frames[6:]

        def reply(status: bytes, text: str, user_id: bytes = b"") -> list[bytes]:
            return [ZAP_VERSION, request_id, status, text.encode(), user_id, b""]

        if version != ZAP_VERSION:
            return reply(b"500", "unsupported ZAP version")
        peer = address.decode("ascii", "replace") or "?"
        domain = self._domains.get(domain_name)
        if domain is None:
            self._refuse(
                ("domain", peer), "refused a connection from %s: unknown ZAP domain %r", peer, domain_name
            )
            return reply(b"400", "unknown domain")
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            self._refuse(
                (domain.role, peer, "mechanism"),
                "refused a %s from %s on the %s: mechanism %s, CURVE required",
                domain.role,
                peer,
                domain.socket_name,
                mechanism.decode("ascii", "replace"),
            )
            return reply(b"400", "CURVE required")
        key = z85.encode(credentials[0])
        allowed, _ = scan_authorized_keys(domain.folder)
        name = allowed.get(key)
        if name is None:
            self._refuse(
                (domain.role, peer, key.decode()),
                "refused a %s from %s on the %s: CURVE key %s is not in %s",
                domain.role,
                peer,
                domain.socket_name,
                key.decode(),
                domain.folder,
            )
            return reply(b"400", "key not authorised")
        self.counters.admitted += 1
        self._log.info("curve: admitted %s %r from %s on the %s", domain.role, name, peer, domain.socket_name)
        return reply(b"200", "OK", name.encode())

    def _on_monitor_event(self, frames: list[bytes], socket_name: str) -> None:
        event = parse_monitor_message(frames)
        if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return  # the ZAP handler has already logged the refused key
        self.counters.failed_handshakes += 1
        value = int(event["value"])
        if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            why = _PROTOCOL_ERRORS.get(value, f"protocol error 0x{value:08x}")
        else:
            why = f"no detail (errno {value})"
        endpoint = event["endpoint"].decode("utf-8", "replace")
        # One report per socket per interval, whatever the errno: a refused peer's
        # reconnects fail in several ways (protocol error, then resets) and are one story.
        self._refuse(
            ("handshake", socket_name),
            "refused a connection on the %s (%s): handshake failed: %s",
            socket_name,
            endpoint,
            why,
            count=False,
        )

    def _refuse(self, key: tuple[str, ...], message: str, *args: object, count: bool = True) -> None:
        """Log one refusal at WARNING, at most once per ``repeat_log_s`` for the same ``key``."""
        if count:
            self.counters.refused += 1
        now = time.monotonic()
        seen = self._refusals.get(key)
        if seen is not None and now - seen.logged_at_s < self.repeat_log_s:
            seen.repeats += 1
            return
        if len(self._refusals) >= _MAX_REMEMBERED_REFUSALS:
            self._refusals.clear()
        repeats = (
            f" (refused {seen.repeats} more time(s) since the last report)" if seen and seen.repeats else ""
        )
        self._refusals[key] = _Refusal(now)
        self._log.warning("curve: " + message + repeats, *args)
