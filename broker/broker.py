# One file on purpose: the broker is one small class with one poll loop and one short method per message.
"""The Majordomo broker: one poll loop, one short method per kind of message.

Frames as the broker's ROUTER sockets see them (identity first, then the
RFC 18 frames of ``protocol.wire.mdp``)::

    frontend in   [client_id, b"MDPC02", 0x01, service, body...]
    frontend out  [client_id, b"MDPC02", 0x02|0x03, service, body...]
    backend in    [worker_id, b"MDPW02", command, ...]
    backend out   [worker_id, b"MDPW02", 0x02, client_id, b"", body...]
                  [worker_id, b"MDPW02", 0x05 | 0x06]

A peer that puts MDP/0.1's empty frame in front of its commands (the RFC's
reference libmdp and majortomo do) is answered in that framing; everyone
else gets RFC 18 to the letter.

Body frames are received with ``copy=False`` and forwarded as the same
``zmq.Frame`` objects, so a large image crosses the broker without a copy.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import zmq

from broker.auth import CurveAuthenticator
from broker.config import QUEUE_ENTRY_OVERHEAD_BYTES, BrokerConfig
from broker.mmi import (
    STATUS_FOUND,
    STATUS_NOT_FOUND,
    cancel_request_id,
    describe_from_info,
    is_mmi,
    mmi_reply,
)
from broker.records import BrokerCounters, PendingRequest, ServiceRecord, WorkerRecord
from protocol.runtime.memory import release_free_memory
from protocol.wire import mdp
from protocol.wire.codec import echoable_request_id, error_body, peek_header
from protocol.wire.errors import ProtocolError
from protocol.wire.mdp import MMI_CANCEL, Frame

# Error codes of the broker's own error FINALs (see protocol/README.md).
ERROR_BAD_REQUEST = "bad_request"
ERROR_BUSY = "busy"
ERROR_CANCELLED = "cancelled"
ERROR_NO_WORKER = "no_worker"
ERROR_WORKER_LOST = "worker_lost"

# Envelope frames (delimiter, header, command, service or client id) are
# tiny; anything longer there is malformed and is never copied.
MAX_ENVELOPE_FRAME_BYTES = 1024

# Messages taken from one socket per poll before the other socket's turn:
# under load one poll serves many messages (bench/: 3. broker throughput).
RECEIVE_BATCH = 64

# Socket flags as plain ints: pyzmq's enum flags cost an allocation per frame.
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_SNDMORE = int(zmq.NOBLOCK) | int(zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def _name(value: bytes) -> str:
    """A service name or other short bytes, printable for logs."""
    return value.decode("utf-8", "backslashreplace")


def _envelope_as_bytes(frames: Sequence[Frame], count: int) -> list[Frame]:
    """The first ``count`` frames (one more after a leading empty frame) as
    ``bytes`` for parsing; the body frames untouched.

    Raises:
        ProtocolError: one of those frames is longer than ``MAX_ENVELOPE_FRAME_BYTES``.
    """
    if frames and len(frames[0]) == 0:
        count += 1
    head: list[Frame] = []
    for frame in frames[:count]:
        if len(frame) > MAX_ENVELOPE_FRAME_BYTES:
            raise ProtocolError(f"envelope frame of {len(frame)} bytes")
        head.append(bytes(frame))
    return head + list(frames[count:])


class Broker:
    """An MDP/0.2 broker with a client frontend and a worker backend.

    Use: ``broker = Broker(config); broker.bind(); broker.run(); broker.close()``.
    ``stop()`` may be called from a signal handler; ``run()`` then returns
    within one heartbeat interval.

    Args:
        config: every tunable (see :class:`BrokerConfig`).
        clock: monotonic time in seconds (injectable for tests).
        context: a ZeroMQ context to make the sockets in, for a broker
            embedded in a process whose other sockets reach it over
            ``inproc://`` (the caller then owns and terminates it); by default
            the broker makes and terminates its own.

    Raises:
        SecurityError: ``config.curve_dir`` is set but holds no usable broker keypair.
    """

    def __init__(
        self,
        config: BrokerConfig,
        clock: Callable[[], float] = time.monotonic,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.config = config
        self.counters = BrokerCounters()
        self._clock = clock
        self._log = logging.getLogger(__name__)
        self._services: dict[bytes, ServiceRecord] = {}
        self._workers: dict[bytes, WorkerRecord] = {}
        self._stop_requested = False
        self._queued_bytes = 0
        self._messages_at_trim = 0
        self._owns_context = context is None
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context() if context is None else context
        self._auth: CurveAuthenticator | None = None
        if config.curve_dir is not None:
            try:
                self._auth = CurveAuthenticator.from_directory(self._context, Path(config.curve_dir))
            except Exception:
                if self._owns_context:
                    self._context.term()
                raise
        self._frontend = self._router_socket()
        self._backend = self._router_socket()
        if self._auth is not None:
            self._auth.secure(self._frontend, "frontend")
            self._auth.secure(self._backend, "backend")
            self._auth.start()
        # Workers first: a FINAL frees a worker for the next queued request,
        # so under load it goes before the clients' new requests.
        self._poll_items = [(self._backend, _POLLIN), (self._frontend, _POLLIN)]

    def _router_socket(self) -> zmq.Socket[bytes]:
        socket: zmq.Socket[bytes] = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_bytes)
        return socket

    # ------------------------------------------------------------------ life cycle

    def bind(self) -> None:
        """Bind both sockets and log the ready line.

        Raises:
            zmq.ZMQError: an endpoint is invalid or already in use.
        """
        self._frontend.bind(self.config.frontend)
        self._backend.bind(self.config.backend)
        self._log.info(
            "broker ready frontend=%s backend=%s%s",
            self.config.frontend,
            self.config.backend,
            " curve=on" if self._auth is not None else "",
        )

    def stop(self) -> None:
        """Ask ``run()`` to return (safe to call from a signal handler)."""
        self._stop_requested = True

    def run(self) -> None:
        """Serve until ``stop()``: poll, handle what waits (workers first), run the timers."""
        now = self._clock()
        next_heartbeat_s = now + self.config.heartbeat_interval_s
        next_stats_s = now + self.config.stats_interval_s
        while not self._stop_requested:
            self.serve_ready(max(0, int((next_heartbeat_s - self._clock()) * 1000)))
            now = self._clock()
            if now >= next_heartbeat_s:
                self.purge_workers()
                self.expire_requests()
                self.send_heartbeats()
                self._trim_heap()
                next_heartbeat_s = now + self.config.heartbeat_interval_s
            if now >= next_stats_s:
                self._log.debug(
                    "counters %s workers=%d services=%d",
                    self.counters.summary(),
                    len(self._workers),
                    len(self._services),
                )
                next_stats_s = now + self.config.stats_interval_s

    def close(self) -> None:
        """Send DISCONNECT to every worker, close both sockets and the context it made."""
        for worker in self._workers.values():
            self._send_worker(worker.identity, mdp.W_DISCONNECT, delimited=worker.delimited)
        self._log.info(
            "broker stopping: sent DISCONNECT to %d workers; %s", len(self._workers), self.counters.summary()
        )
        self._backend.close(linger=int(self.config.shutdown_linger_s * 1000))
        self._frontend.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        if self._owns_context:
            self._context.term()

    def serve_ready(self, timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for messages, then handle what waits on either socket."""
        for socket, _ in zmq.zmq_poll(self._poll_items, timeout_ms):
            if socket is self._frontend:
                self._receive(self._frontend, self.process_client)
            else:
                self._receive(self._backend, self.process_worker)

    def _receive(self, socket: zmq.Socket[bytes], handler: Callable[[bytes, list[Frame]], None]) -> None:
        """Hand each waiting message (up to ``RECEIVE_BATCH``) to ``handler``; log and survive any error."""
        recv = socket.recv
        for _ in range(RECEIVE_BATCH):
            try:
                frame = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return
            frames = [frame]
            while frame.more:  # the other parts of a message arrive with its first
                frame = recv(_NOBLOCK, copy=False)
                frames.append(frame)
            sender = frames[0].bytes
            try:
                handler(sender, frames[1:])
            except Exception:
                self.counters.dropped += 1
                self._log.exception("unexpected error handling a message from %s; dropped", sender.hex())
            if not cast(int, socket.get(_EVENTS)) & _POLLIN:  # cheaper than a recv raising zmq.Again
                return

    # ------------------------------------------------------------------ clients

    def process_client(self, sender: bytes, frames: list[Frame]) -> None:
        """Handle one message from a client: queue a REQUEST or answer ``mmi.*``."""
        try:
            message = mdp.parse_client(_envelope_as_bytes(frames, 3))
        except ProtocolError as e:
            self._drop("client", sender, str(e))
            return
        if message.command != mdp.C_REQUEST:
            self._drop("client", sender, f"clients may only send REQUEST, got {message.command!r}")
            return
        if is_mmi(message.service):
            self.counters.mmi_requests += 1
            if message.service == MMI_CANCEL:
                request_id = cancel_request_id(message.body)
                found = request_id is not None and self.cancel(sender, request_id)
                reply = [STATUS_FOUND if found else STATUS_NOT_FOUND]
            else:
                reply = mmi_reply(message.service, message.body, self._services)
            self._send_client(sender, mdp.C_FINAL, message.service, reply, message.delimited)
            return
        header = peek_header(message.body[0]) if message.body else {}
        nbytes = sum(len(frame) for frame in message.body) + QUEUE_ENTRY_OVERHEAD_BYTES
        request = PendingRequest(
            sender,
            message.service,
            message.body,
            header,
            self._clock(),
            delimited=message.delimited,
            nbytes=nbytes,
        )
        if len(message.body) > self.config.max_body_frames:
            self._reply_error(
                request,
                ERROR_BAD_REQUEST,
                f"the request has {len(message.body)} body frames; this broker accepts at most "
                f"{self.config.max_body_frames}",
            )
            return
        service = self._service(message.service)
        if len(service.requests) >= self.config.max_queue:
            self._reply_error(
                request,
                ERROR_BUSY,
                f"service {_name(service.name)!r} has {len(service.requests)} queued requests "
                f"(limit {self.config.max_queue}); try again later",
            )
            return
        if self._queued_bytes + nbytes > self.config.max_queued_bytes:
            self._reply_error(
                request,
                ERROR_BUSY,
                f"the broker holds {self._queued_bytes} bytes of queued requests; {nbytes} more would pass "
                f"its limit of {self.config.max_queued_bytes}; try again later",
            )
            return
        service.requests.append(request)
        self._queued_bytes += nbytes
        self.counters.requests += 1
        if self._log.isEnabledFor(logging.DEBUG):  # the arguments cost more than the call
            self._log.debug(
                "request request_id=%s service=%s client=%s queued=%d",
                request.request_id,
                _name(service.name),
                sender.hex(),
                len(service.requests),
            )
        self.dispatch(service)

    # ------------------------------------------------------------------ workers

    def process_worker(self, sender: bytes, frames: list[Frame]) -> None:
        """Handle one message from a worker, following RFC 18's rules."""
        try:
            message = mdp.parse_worker(_envelope_as_bytes(frames, 4))
        except ProtocolError as e:
            self._drop("worker", sender, str(e))
            return
        worker = self._workers.get(sender)
        command = message.command
        if command == mdp.W_DISCONNECT:
            if worker is not None:
                self.delete_worker(
                    worker, disconnect=False, reason="worker sent DISCONNECT", level=logging.INFO
                )
            return
        if command == mdp.W_READY:
            if worker is not None:
                self.delete_worker(worker, disconnect=True, reason="second READY")
            elif is_mmi(message.service):
                self._log.warning(
                    "worker %s tried to register reserved service %s; disconnecting",
                    sender.hex(),
                    _name(message.service),
                )
                self._send_worker(sender, mdp.W_DISCONNECT, delimited=message.delimited)
            else:
                self._register_worker(sender, message.service, message.delimited)
            return
        if worker is None:
            self._log.warning(
                "%s from unknown worker %s; sending DISCONNECT",
                mdp.WORKER_COMMAND_NAMES[command],
                sender.hex(),
            )
            self._send_worker(sender, mdp.W_DISCONNECT, delimited=message.delimited)
            return
        worker.expiry_s = self._clock() + self.config.worker_expiry_s
        if command == mdp.W_HEARTBEAT:
            return
        if command in (mdp.W_PARTIAL, mdp.W_FINAL):
            self._forward_reply(worker, message)
            return
        self.delete_worker(worker, disconnect=True, reason=f"unexpected {mdp.WORKER_COMMAND_NAMES[command]}")

    def _register_worker(self, identity: bytes, service_name: bytes, delimited: bool) -> None:
        service = self._service(service_name)
        worker = WorkerRecord(
            identity,
            service_name,
            self._clock() + self.config.worker_expiry_s,
            recent_image_keys=deque(maxlen=self.config.recent_image_keys),
            delimited=delimited,
        )
        self._workers[identity] = worker
        service.workers[identity] = worker
        service.idle.append(worker)
        service.no_worker_since_s = None
        self._log.info(
            "worker ready worker=%s service=%s workers=%d",
            identity.hex(),
            _name(service_name),
            len(service.workers),
        )
        self.dispatch(service)

    def _forward_reply(self, worker: WorkerRecord, message: mdp.WorkerMessage) -> None:
        """Forward a worker's PARTIAL or FINAL to the client it is serving."""
        request = worker.request
        if request is None or request.client != message.client:
            self._drop(
                "worker",
                worker.identity,
                f"{mdp.WORKER_COMMAND_NAMES[message.command]} for client {message.client.hex()}, "
                f"which it is not serving",
            )
            return
        request_id = request.header.get("request_id")
        answered = (
            peek_header(message.body[0]).get("request_id")
            if message.body and echoable_request_id(request_id)
            else None
        )
        if isinstance(answered, str) and answered != request_id:
            # e.g. a late answer to a request cancelled before the worker re-registered: taking
            # it as this request's answer would hand the client the wrong one and drop the right one
            self._drop(
                "worker",
                worker.identity,
                f"{mdp.WORKER_COMMAND_NAMES[message.command]} for request {answered}, not for "
                f"{request_id}, which it is serving",
            )
            return
        if message.command == mdp.W_PARTIAL:
            self.counters.partials += 1
            self._send_client(request.client, mdp.C_PARTIAL, worker.service, message.body, request.delimited)
            return
        self.counters.replies += 1
        if request.header.get("op") == "info" and message.body:
            worker.described = describe_from_info(message.body[0]) or worker.described
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug(
                "final request_id=%s service=%s worker=%s",
                request.request_id,
                _name(worker.service),
                worker.identity.hex(),
            )
        worker.request = None
        service = self._service(worker.service)
        service.idle.append(worker)
        # The worker's next request goes out before this reply: the worker
        # then waits one send less (bench/OPTIMISATIONS.md); the client's
        # reply is the same frames either way.
        self.dispatch(service)
        self._send_client(request.client, mdp.C_FINAL, worker.service, message.body, request.delimited)

    def delete_worker(
        self, worker: WorkerRecord, *, disconnect: bool, reason: str, level: int = logging.WARNING
    ) -> None:
        """Forget ``worker`` (optionally telling it DISCONNECT) and re-queue its request.

        ``level`` is the log level of the "worker gone" line.
        """
        if disconnect:
            self._send_worker(worker.identity, mdp.W_DISCONNECT, delimited=worker.delimited)
        self._workers.pop(worker.identity, None)
        service = self._service(worker.service)
        service.workers.pop(worker.identity, None)
        if worker in service.idle:
            service.idle.remove(worker)
        if not service.workers:
            service.no_worker_since_s = self._clock()
        self._log.log(
            level,
            "worker gone worker=%s service=%s reason=%s workers=%d",
            worker.identity.hex(),
            _name(worker.service),
            reason,
            len(service.workers),
        )
        request, worker.request = worker.request, None
        if request is not None:
            self._requeue(request, reason)
        self.dispatch(service)

    def cancel(self, client: bytes, request_id: str) -> bool:
        """Cancel ``client``'s request ``request_id`` (``mmi.cancel``); return whether it was found.

        A queued request leaves its queue. A request being served is taken
        from its worker, which gets DISCONNECT and is forgotten without the
        request being re-queued (RFC 18 lets the broker disconnect a worker
        at any time; ours then reconnects and stops the job between steps).
        Either way the client gets an error FINAL with code ``cancelled``.
        Only the client that sent a request can cancel it.
        """

        def matches(request: PendingRequest) -> bool:
            return request.client == client and request.header.get("request_id") == request_id

        for service in self._services.values():
            queued = next((r for r in service.requests if matches(r)), None)
            if queued is not None:
                service.requests.remove(queued)
                self._queued_bytes -= queued.nbytes
                self._reply_error(
                    queued, ERROR_CANCELLED, "cancelled by the client while queued", level=logging.INFO
                )
                return True
        worker = next(
            (w for w in self._workers.values() if w.request is not None and matches(w.request)), None
        )
        if worker is None or worker.request is None:
            return False
        request, worker.request = worker.request, None
        self._reply_error(
            request,
            ERROR_CANCELLED,
            f"cancelled by the client while worker {worker.identity.hex()} served it; the worker was "
            "told to stop",
            level=logging.INFO,
        )
        self.delete_worker(
            worker, disconnect=True, reason=f"request {request_id} cancelled", level=logging.INFO
        )
        return True

    def _requeue(self, request: PendingRequest, reason: str) -> None:
        """Put a request whose worker was lost back at the front, or give up."""
        request.attempts += 1
        if request.attempts >= self.config.max_attempts:
            self._reply_error(
                request,
                ERROR_WORKER_LOST,
                f"lost {request.attempts} worker(s) of service {_name(request.service)!r} while "
                f"serving this request (last: {reason})",
            )
            return
        self._service(request.service).requests.appendleft(request)
        self._queued_bytes += request.nbytes
        self.counters.requeues += 1
        self._log.warning(
            "requeue request_id=%s service=%s attempts=%d reason=%s",
            request.request_id,
            _name(request.service),
            request.attempts,
            reason,
        )

    # ------------------------------------------------------------------ routing and timers

    def dispatch(self, service: ServiceRecord) -> None:
        """Give queued requests of ``service`` to its idle workers, oldest request first."""
        while service.requests and service.idle:
            request = service.requests.popleft()
            self._queued_bytes -= request.nbytes
            worker = self._choose_worker(service, request.image_key)
            service.idle.remove(worker)
            worker.request = request
            if request.image_key is not None:
                worker.remember_image_key(request.image_key)
            if self._log.isEnabledFor(logging.DEBUG):
                self._log.debug(
                    "dispatch request_id=%s service=%s worker=%s attempt=%d",
                    request.request_id,
                    _name(service.name),
                    worker.identity.hex(),
                    request.attempts + 1,
                )
            self._send_worker(
                worker.identity,
                mdp.W_REQUEST,
                client=request.client,
                body=request.body,
                delimited=worker.delimited,
            )

    @staticmethod
    def _choose_worker(service: ServiceRecord, image_key: str | None) -> WorkerRecord:
        """An idle worker that recently served ``image_key``, else the longest idle one."""
        if image_key is not None:
            for worker in service.idle:
                if image_key in worker.recent_image_keys:
                    return worker
        return service.idle[0]

    def purge_workers(self) -> None:
        """Drop workers that have been silent longer than the expiry (no DISCONNECT sent)."""
        now = self._clock()
        expired = [w for w in self._workers.values() if w.expiry_s < now]
        # Out of the idle lists first, so a re-queued request never goes to another dead worker.
        for worker in expired:
            idle = self._service(worker.service).idle
            if worker in idle:
                idle.remove(worker)
        for worker in expired:
            self.delete_worker(worker, disconnect=False, reason="heartbeat expired")

    def _trim_heap(self) -> None:
        """Give freed heap pages back to the OS if messages moved since the last heartbeat.

        libzmq's I/O threads allocate every received message in their own
        malloc arenas, and glibc keeps those pages after a burst of large
        requests unless trimmed; without this RSS stays at its high-water
        mark. Costs well under a millisecond for the broker's heap, at most
        once per heartbeat interval.
        """
        moved = self.counters.requests + self.counters.replies + self.counters.dropped
        if moved != self._messages_at_trim:
            self._messages_at_trim = moved
            release_free_memory()

    def send_heartbeats(self) -> None:
        """Send HEARTBEAT to every registered worker."""
        for worker in self._workers.values():
            self._send_worker(worker.identity, mdp.W_HEARTBEAT, delimited=worker.delimited)

    def expire_requests(self) -> None:
        """Answer ``no_worker`` to requests that waited too long for a worker; forget empty services.

        A request's wait starts when it arrived or when its service lost its
        last worker, whichever is later.
        """
        now = self._clock()
        for service in list(self._services.values()):
            if service.workers:
                continue
            if not service.requests:
                del self._services[service.name]
                continue
            since_s = service.no_worker_since_s if service.no_worker_since_s is not None else now
            waiting: deque[PendingRequest] = deque()
            for request in service.requests:
                if now - max(request.queued_at_s, since_s) >= self.config.service_wait_s:
                    self._queued_bytes -= request.nbytes
                    self._reply_error(
                        request,
                        ERROR_NO_WORKER,
                        f"no worker for service {_name(service.name)!r} within "
                        f"{self.config.service_wait_s:g} s",
                    )
                else:
                    waiting.append(request)
            service.requests = waiting

    # ------------------------------------------------------------------ helpers

    def _service(self, name: bytes) -> ServiceRecord:
        service = self._services.get(name)
        if service is None:
            service = ServiceRecord(name, no_worker_since_s=self._clock())
            self._services[name] = service
        return service

    def _reply_error(
        self, request: PendingRequest, code: str, message: str, *, level: int = logging.WARNING
    ) -> None:
        """Send the client an error FINAL (``protocol.wire.codec.error_body``) for ``request``."""
        self.counters.errors[code] += 1
        self._log.log(
            level,
            "error reply request_id=%s service=%s client=%s code=%s: %s",
            request.request_id,
            _name(request.service),
            request.client.hex(),
            code,
            message,
        )
        self._send_client(
            request.client,
            mdp.C_FINAL,
            request.service,
            error_body(request.header, code, message),
            request.delimited,
        )

    def _drop(self, role: str, sender: bytes, why: str) -> None:
        self.counters.dropped += 1
        self._log.warning("dropped message from %s %s: %s", role, sender.hex(), why)

    def _send_client(
        self, client: bytes, command: bytes, service: bytes, body: Sequence[Frame], delimited: bool
    ) -> None:
        frames = mdp.client_reply(command, service, body, delimited=delimited)
        self._send(self._frontend, [client, *frames], client)

    def _send_worker(
        self,
        identity: bytes,
        command: bytes,
        *,
        client: bytes = b"",
        body: Sequence[Frame] = (),
        delimited: bool,
    ) -> None:
        frames = mdp.worker_message(command, client=client, body=body, delimited=delimited)
        self._send(self._backend, [identity, *frames], identity)

    def _send(self, socket: zmq.Socket[bytes], frames: list[Frame], peer: bytes) -> None:
        """Send without blocking; a vanished peer is dropped silently by ROUTER.

        Frame by frame with plain-int flags (what ``send_multipart`` does, minus
        its per-frame overhead); large frames go without a copy.
        """
        send = socket.send
        last = len(frames) - 1
        try:
            for i, frame in enumerate(frames):
                send(frame, _NOBLOCK_SNDMORE if i < last else _NOBLOCK, copy=False)
        except zmq.ZMQError as e:
            self._log.warning("could not send to %s: %s", peer.hex(), e)
