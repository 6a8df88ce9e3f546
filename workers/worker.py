# One file on purpose: one worker loop whose main thread alone owns the socket; its rules read in one place.
"""The MDP/0.2 (ZeroMQ RFC 18) worker loop.

Threads and sockets::

    main thread                                   compute thread
    DEALER  <-> broker backend (READY, REQUEST,    runs RequestHandler.handle(message)
                HEARTBEAT, PARTIAL, FINAL, ...)    for one request at a time
    PAIR (bind) <--- inproc --- PAIR (connect)     sends finished reply frames

The main thread owns the DEALER socket and is the only one that sends on it:
it keeps heartbeating while a request is being computed, watches the broker's
liveness, reconnects, and forwards the reply frames the compute thread hands
it over the inproc PAIR socket. Requests that arrive while one is running
are queued (a broker may send more than one).

Broker liveness: any message from the broker counts. After
``heartbeat_interval_s * heartbeat_liveness`` of silence the worker drops its
socket, waits (0.25 s doubling to 2 s), connects a fresh one and sends READY
again; a DISCONNECT from the broker does the same. Silence is counted from
when a socket's connection is made (its ZMTP handshake, seen on a socket
monitor), not from when the socket was created: while the broker is down,
READY waits in a fresh socket, and a broker that comes back late in that
socket's liveness window must get the time of a heartbeat to answer it.
Counting from the socket's creation gave up on such a socket just after its
READY had reached the broker, and registered again on the next one: two
registrations, one of them a ghost until the broker's expiry, seen in about
one broker restart in three (issue 23). While a request is being
computed, silence counts only if the broker has sent something during that
request: some conforming brokers (majortomo) send no heartbeats to busy
workers. Replies to requests received on an older connection are dropped:
the broker that sent them no longer knows this worker.

Draining (SIGTERM from a scheduler, ``start_all.sh`` or a user): after
:meth:`Worker.drain` the worker takes no new request; the one it holds is
finished if it ends within ``drain_grace_s``, else handed back. Then it sends
DISCONNECT and ``run()`` returns. A request that is not expected to end within
the grace left is handed back at once, not at the end of the grace: the
worker keeps each op's typical duration (``workers/durations.py``, which also
says what it assumes for an op it has no estimate of) and checks at every
poll. A REQUEST that arrives while draining (the
broker may send the next one the moment a FINAL reaches it) is handed back
at once, unstarted. A broker re-queues a request whose worker sent
DISCONNECT, so the client still gets exactly one FINAL, from another worker.

Cancellation: whenever the worker drops a broker connection (DISCONNECT,
silence, shutdown), the requests received on it can no longer be answered,
so their cancel events are set; the handler stops long operations early
(between slices, batches). This is how a client's ``mmi.cancel`` reaches a
busy worker: the broker answers it by sending that worker DISCONNECT.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import blosc2
import zmq
from zmq.utils.monitor import recv_monitor_message

from protocol.wire import codec, mdp
from protocol.wire.errors import CodecError, ProtocolError
from protocol.wire.security import CurveClientKeys
from workers.durations import RequestDurations

log = logging.getLogger(__name__)

POLL_MAX_S = 0.1
# On the way out: how long a cancelled request may take to stop, and how long
# DISCONNECT gets to leave when the process exits without terminating its context.
COMPUTE_STOP_WAIT_S = 1.0
DISCONNECT_FLUSH_S = 0.5


class ReplyLike(Protocol):
    """What a handler yields (see ``workers.ops.Reply``)."""

    @property
    def status(self) -> str: ...

    @property
    def result(self) -> dict[str, Any]: ...

    @property
    def arrays(self) -> dict[str, Any]: ...

    @property
    def error(self) -> tuple[str, str] | None: ...

    @property
    def image_key(self) -> str | None: ...


class RequestHandler(Protocol):
    """The operations behind the worker (``workers.ops.Sam2Service``)."""

    def handle(self, message: codec.Message, cancel: threading.Event) -> Iterator[ReplyLike]: ...

    def warm_up(self) -> None:
        """One-time costs of the first request, paid on the compute thread before READY is sent."""
        ...

    def count_undecodable(self) -> None: ...


@dataclass(frozen=True)
class WorkerConfig:
    """Settings of the worker loop.

    Attributes:
        connect: the broker's backend endpoint, e.g. ``tcp://127.0.0.1:5556``.
        service: the MDP service name (the model name) sent in READY.
        device_name: shown in the "worker ready" log line.
        heartbeat_interval_s: seconds between heartbeats sent to the broker.
        heartbeat_liveness: heartbeats the broker may miss before it is considered dead.
        reconnect_initial_s: first wait before reconnecting.
        reconnect_max_s: the wait doubles up to this; it bounds how long a
            worker takes to re-register once a restarted broker is back.
        limits: bounds on every received request body.
        delimited: put MDP/0.1's empty frame before every command, for
            brokers that expect it (the reference libmdp, majortomo); RFC 18
            framing when false.
        curve: this worker's CURVE keypair and the broker's public key, for
            a broker started with ``--curve-dir``; None: no encryption.
        drain_grace_s: after :meth:`Worker.drain`, seconds the request being
            computed may take to finish before it is handed back to the broker.
        disconnect_linger_s: seconds the last messages (a FINAL, DISCONNECT)
            may take to leave when the worker closes its broker connection.
    """

    connect: str
    service: str
    device_name: str = ""
    heartbeat_interval_s: float = 1.0
    heartbeat_liveness: int = 3
    reconnect_initial_s: float = 0.25
    reconnect_max_s: float = 2.0
    limits: codec.Limits = field(default_factory=codec.Limits)
    delimited: bool = False
    curve: CurveClientKeys | None = None
    drain_grace_s: float = 20.0
    disconnect_linger_s: float = 2.0

    @property
    def broker_timeout_s(self) -> float:
        return self.heartbeat_interval_s * self.heartbeat_liveness

    @property
    def max_frame_bytes(self) -> int:
        """Largest frame a valid request can contain (for ``ZMQ_MAXMSGSIZE``)."""
        return max(self.limits.max_header_bytes, self.limits.max_array_bytes + blosc2.MAX_OVERHEAD)


@dataclass(frozen=True)
class _Job:
    connection: int
    client: bytes
    body: tuple[Any, ...]
    received_s: float
    cancel: threading.Event = field(default_factory=threading.Event)


class _ComputeThread(threading.Thread):
    """Runs requests one at a time and sends reply frames to the main thread.

    Each reply goes over the PAIR socket as
    ``[connection id, client envelope, W_PARTIAL | W_FINAL, body...]``.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        handler: RequestHandler,
        limits: codec.Limits,
        current_connection: Callable[[], int],
        durations: RequestDurations,
    ) -> None:
        super().__init__(name="sam2-compute", daemon=True)
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self._context = context
        self._endpoint = endpoint
        self._handler = handler
        self._limits = limits
        self._current_connection = current_connection
        self._durations = durations
        self.busy = threading.Event()
        self.warmed_up = threading.Event()

    def run(self) -> None:
        try:
            self._handler.warm_up()
        except Exception:  # a failed warm-up only makes the first request slower
            log.exception("warm-up failed; serving anyway")
        finally:
            self.warmed_up.set()
        pair = self._context.socket(zmq.PAIR)
        pair.linger = 0
        pair.connect(self._endpoint)
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                if job.connection != self._current_connection() or job.cancel.is_set():
                    log.warning("dropping a queued request of a closed broker connection")
                    continue
                self.busy.set()
                try:
                    for command, frames in self._replies(job):
                        pair.send_multipart([str(job.connection).encode(), job.client, command, *frames])
                except Exception:  # a bug here must not stop the worker from serving
                    log.exception("request failed outside the handler; no reply was sent")
                finally:
                    self.busy.clear()
        finally:
            pair.close()

    def _replies(self, job: _Job) -> Iterator[tuple[bytes, Sequence[Any]]]:
        """Reply frames for one job: PARTIALs, then exactly one FINAL."""
        try:
            message = codec.decode(job.body, self._limits)
        except CodecError as e:
            header = codec.peek_header(job.body[0]) if job.body else {}
            log.warning("request_id=%s bad body: %s", header.get("request_id", "?"), e)
            self._handler.count_undecodable()
            yield mdp.W_FINAL, codec.error_body(header, "bad_request", str(e))
            return
        request_id, op = message.request_id, message.op
        waited_ms = 1000.0 * (time.monotonic() - job.received_s)
        log.info("request_id=%s op=%s started waited_ms=%.0f", request_id, op, waited_ms)
        started = time.monotonic()
        self._durations.started(request_id, op)
        try:
            for reply in self._handler.handle(message, job.cancel):
                final = reply.status != codec.STATUS_PARTIAL
                header = codec.reply_header(
                    message.header, reply.status, result=reply.result or None, error=reply.error
                )
                if reply.image_key is not None:
                    header["image_key"] = reply.image_key
                frames = codec.encode(header, reply.arrays)
                if not final:
                    yield mdp.W_PARTIAL, frames
                    continue
                code = f" code={reply.error[0]}" if reply.error else ""
                code += " cancelled" if job.cancel.is_set() else ""
                elapsed_ms = 1000.0 * (time.monotonic() - started)
                level = logging.WARNING if reply.error and reply.error[0] == "internal" else logging.INFO
                log.log(
                    level,
                    "request_id=%s op=%s status=%s%s ms=%.0f",
                    request_id,
                    op,
                    reply.status,
                    code,
                    elapsed_ms,
                )
                self._durations.finished(reply.status == codec.STATUS_OK and not job.cancel.is_set())
                yield mdp.W_FINAL, frames
                return
            error = "the worker produced no final reply"
        except Exception as e:  # the handler catches its own errors; this is a last resort
            log.exception("request_id=%s op=%s failed in the worker loop", request_id, op)
            error = f"{type(e).__name__}: {e}"
        finally:
            self._durations.finished(False)  # nothing when already counted above
        yield mdp.W_FINAL, codec.error_body(message.header, "internal", error)


class Worker:
    """An MDP/0.2 worker serving ``handler`` for one service.

    ``run()`` blocks until ``stop()`` (at once) or ``drain()`` (after the
    request it holds, within ``config.drain_grace_s``) is called from a
    signal handler or another thread; it then sends DISCONNECT and returns.
    """

    def __init__(
        self, config: WorkerConfig, handler: RequestHandler, context: zmq.Context[Any] | None = None
    ) -> None:
        self.config = config
        self._handler = handler
        self._context = context or zmq.Context()
        self._own_context = context is None
        self._stop = threading.Event()
        self._drain = threading.Event()
        self._drain_deadline: float | None = None
        self._handed_back = 0
        self._dealer: zmq.Socket[Any] | None = None
        self._monitor: zmq.Socket[Any] | None = None
        self._connection = 0
        self._connect_at = 0.0
        self._backoff_s = config.reconnect_initial_s
        self._broker_deadline = 0.0
        self._heartbeat_at = 0.0
        self._in_flight = 0
        self._job_cancels: deque[threading.Event] = deque()
        self._heard_while_busy = False
        self._poller = zmq.Poller()
        self._durations = RequestDurations()
        self.ready_count = 0

    # -- public ---------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run()`` to finish now, cancelling any request held (safe from signal handlers)."""
        self._stop.set()

    def drain(self) -> None:
        """Ask ``run()`` to finish once the request it holds is done or handed back.

        Safe from signal handlers and other threads; calling it again changes nothing.
        """
        self._drain.set()

    @property
    def draining(self) -> bool:
        """Whether :meth:`drain` was called."""
        return self._drain.is_set()

    def run(self) -> bool:
        """Serve until :meth:`stop`; always leaves with DISCONNECT sent and sockets closed.

        Returns:
            True when everything shut down; False when a request was still
            being computed (its thread is abandoned: exit the process soon).
        """
        endpoint = f"inproc://sam2-worker-results-{id(self)}"
        results = self._context.socket(zmq.PAIR)
        results.linger = 0
        results.bind(endpoint)
        self._poller.register(results, zmq.POLLIN)
        compute = _ComputeThread(
            self._context,
            endpoint,
            self._handler,
            self.config.limits,
            lambda: self._connection,
            self._durations,
        )
        compute.start()
        try:
            while not self._stop.is_set() and not compute.warmed_up.wait(0.05):
                pass  # READY only once the first request would not pay the warm-up
            self._connect()
            while not self._stop.is_set() and not (self._drain.is_set() and self._drained()):
                self._poll_once(results, compute)
        finally:
            self._disconnect(send=True)
            compute.jobs.put(None)
            # A request held was cancelled by the disconnect: most operations
            # stop within moments (between steps), so give them that long.
            compute.join(timeout=COMPUTE_STOP_WAIT_S)
            if compute.is_alive():
                log.warning("stopping while a request is still being computed; its reply is dropped")
            self._poller.unregister(results)
            results.close()
        clean = not compute.is_alive()
        if clean and self._own_context:
            self._context.term()  # waits up to disconnect_linger_s for DISCONNECT to leave
        elif not clean:
            # The caller will exit without terminating the context (the compute
            # thread still holds a socket): give ZeroMQ's I/O thread a moment
            # to deliver DISCONNECT, or the broker only notices at its liveness timeout.
            time.sleep(min(DISCONNECT_FLUSH_S, self.config.disconnect_linger_s))
        return clean

    # -- loop -----------------------------------------------------------------

    def _drained(self) -> bool:
        """While draining: whether to leave now (nothing held, a request to hand back, or grace over)."""
        now = time.monotonic()
        if self._drain_deadline is None:
            self._drain_deadline = now + self.config.drain_grace_s
            running = self._durations.running()
            log.info(
                "draining: taking no new request; %s%s",
                f"finishing the one held within {self.config.drain_grace_s:g} s, else handing it back"
                if self._in_flight
                else "none held",
                f" ({running.describe()})" if running is not None and self._in_flight else "",
            )
        if self._dealer is None or self._in_flight == 0:
            log.info("drained: no request held; sending DISCONNECT")
            return True
        if self._handed_back:
            log.info(
                "handing back %d request(s) received while draining; sending DISCONNECT", self._in_flight
            )
            return True
        grace_left_s = self._drain_deadline - now
        running = self._durations.running()
        if (
            running is not None
            and running.remaining_s is not None
            and 0.0 < grace_left_s < running.remaining_s
        ):
            log.warning(
                "%s, more than the %.1f s of grace left: handing it back now; sending DISCONNECT",
                running.describe(),
                grace_left_s,
            )
            return True
        if now >= self._drain_deadline:
            log.warning(
                "grace period of %g s over: handing back %d unfinished request(s) to the broker; "
                "sending DISCONNECT",
                self.config.drain_grace_s,
                self._in_flight,
            )
            return True
        return False

    def _poll_once(self, results: zmq.Socket[Any], compute: _ComputeThread) -> None:
        now = time.monotonic()
        if self._dealer is None:
            if now >= self._connect_at:
                self._connect()
                return
            wait_s = self._connect_at - now
        else:
            wait_s = self._heartbeat_at - now
        timeout_ms = int(1000.0 * max(0.0, min(wait_s, POLL_MAX_S)))
        events = dict(self._poller.poll(timeout=timeout_ms))
        if self._monitor is not None and self._monitor in events:
            self._read_connection_events()
        if self._dealer is not None and self._dealer in events:
            frames = self._dealer.recv_multipart(copy=False)
            try:
                self._on_broker_message(frames, compute)
            except Exception:  # a message nobody foresaw must not stop the worker
                log.exception("unexpected error handling a message from the broker; dropped")
        if results in events:
            self._on_result(results.recv_multipart(copy=False))
        if self._dealer is None:
            return
        now = time.monotonic()
        if now >= self._heartbeat_at:
            self._send(self._frames(mdp.W_HEARTBEAT))
        busy = self._in_flight > 0
        if now >= self._broker_deadline:
            self._read_connection_events()  # a connection made since the poll restarts the count
        if now >= self._broker_deadline and (not busy or self._heard_while_busy):
            log.warning(
                "broker silent for %.1fs (interval %.2fs x liveness %d): reconnecting",
                self.config.broker_timeout_s,
                self.config.heartbeat_interval_s,
                self.config.heartbeat_liveness,
            )
            self._schedule_reconnect()

    def _on_broker_message(self, frames: list[Any], compute: _ComputeThread) -> None:
        now = time.monotonic()
        self._broker_deadline = now + self.config.broker_timeout_s
        try:
            message = mdp.parse_worker(frames)
        except ProtocolError as e:
            log.warning("ignoring a malformed message from the broker: %s", e)
            return
        if message.command != mdp.W_DISCONNECT:
            self._backoff_s = self.config.reconnect_initial_s
        if message.command == mdp.W_HEARTBEAT and self._in_flight:
            self._heard_while_busy = True  # this broker heartbeats busy workers: hold it to that
        if message.command == mdp.W_REQUEST:
            self._in_flight += 1
            if self._in_flight == 1:
                self._heard_while_busy = False
            elif self._in_flight > 1:
                log.info("request queued behind %d others", self._in_flight - 1)
            job = _Job(self._connection, message.client, message.body, now)
            self._job_cancels.append(job.cancel)
            if self._drain.is_set():
                self._handed_back += 1  # never started: handed back with the DISCONNECT
                return
            compute.jobs.put(job)
        elif message.command == mdp.W_HEARTBEAT:
            return
        elif message.command == mdp.W_DISCONNECT:
            log.warning("broker sent DISCONNECT: reconnecting")
            self._schedule_reconnect()
        else:
            name = mdp.WORKER_COMMAND_NAMES.get(message.command, repr(message.command))
            log.warning("ignoring unexpected %s from the broker", name)

    def _on_result(self, frames: list[Any]) -> None:
        connection, client, command, body = (
            int(bytes(frames[0])),
            bytes(frames[1]),
            bytes(frames[2]),
            frames[3:],
        )
        if connection != self._connection or self._dealer is None:
            log.warning("dropping a reply: the broker connection its request came from is gone")
            return
        self._send(self._frames(command, client=client, body=body))
        if command == mdp.W_FINAL:
            if self._job_cancels:  # requests finish in the order they came
                self._job_cancels.popleft()
            self._in_flight = max(0, self._in_flight - 1)
            if self._in_flight == 0:
                # Count the broker's silence from the end of the request.
                self._broker_deadline = time.monotonic() + self.config.broker_timeout_s

    # -- connection -----------------------------------------------------------

    def _frames(self, command: bytes, **fields: Any) -> list[Any]:
        """One worker command in the configured framing (RFC 18 unless ``delimited``)."""
        return mdp.worker_message(command, delimited=self.config.delimited, **fields)

    def _send(self, frames: Sequence[Any]) -> None:
        """Send to the broker without ever blocking the loop (a full queue means the broker is gone)."""
        if self._dealer is None:
            return
        try:
            self._dealer.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("broker connection is not accepting messages; one message dropped")
        self._heartbeat_at = time.monotonic() + self.config.heartbeat_interval_s

    def _connect(self) -> None:
        dealer = self._context.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.setsockopt(zmq.MAXMSGSIZE, self.config.max_frame_bytes)
        if self.config.curve is not None:
            self.config.curve.apply(dealer)
        self._monitor = dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._poller.register(self._monitor, zmq.POLLIN)
        dealer.connect(self.config.connect)
        self._dealer = dealer
        self._poller.register(dealer, zmq.POLLIN)
        self._connection += 1
        self._in_flight = 0
        self._heard_while_busy = False
        self._broker_deadline = time.monotonic() + self.config.broker_timeout_s
        self._send(self._frames(mdp.W_READY, service=self.config.service.encode()))
        self.ready_count += 1
        log.info(
            "worker ready service=%s device=%s broker=%s%s",
            self.config.service,
            self.config.device_name,
            self.config.connect,
            "" if self.ready_count == 1 else f" (reconnect {self.ready_count - 1})",
        )

    def _read_connection_events(self) -> None:
        """Restart the broker's silence count when the socket's connection is made (a handshake)."""
        while self._monitor is not None:
            try:
                event = recv_monitor_message(self._monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._broker_deadline = time.monotonic() + self.config.broker_timeout_s

    def _disconnect(self, send: bool) -> None:
        """Close the broker connection; cancel its requests, whose replies could no longer be sent."""
        if self._job_cancels:
            log.info("cancelling %d request(s) of the closed broker connection", len(self._job_cancels))
            for cancel in self._job_cancels:
                cancel.set()
            self._job_cancels.clear()
        if self._dealer is None:
            return
        if send:
            try:
                self._dealer.send_multipart(self._frames(mdp.W_DISCONNECT), flags=zmq.NOBLOCK)
            except zmq.ZMQError as e:
                log.warning("could not send DISCONNECT: %s", e)
            self._dealer.linger = int(1000 * self.config.disconnect_linger_s)
        if self._monitor is not None:
            self._poller.unregister(self._monitor)
            self._dealer.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        self._poller.unregister(self._dealer)
        self._dealer.close()
        self._dealer = None

    def _schedule_reconnect(self) -> None:
        self._disconnect(send=False)
        self._connect_at = time.monotonic() + self._backoff_s
        log.info("reconnecting in %.2fs", self._backoff_s)
        self._backoff_s = min(self._backoff_s * 2, self.config.reconnect_max_s)
