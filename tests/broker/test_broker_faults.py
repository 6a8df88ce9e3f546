"""What the broker does when workers hang, die or are missing, and how it routes.

Real broker subprocess with fast heartbeats (0.2 s x 3); raw MDP workers.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import zmq

from protocol.wire import codec
from tests.support.broker_peers import (
    DISCONNECT,
    TEST_HEARTBEAT_INTERVAL_S,
    TEST_HEARTBEAT_LIVENESS,
    BrokerHandle,
    RawClient,
    RawWorker,
    ThreadedWorker,
    echo_handler,
    error_of,
    request_body,
    start_broker,
    wait_for_workers,
)
from tests.support.processes import ProcessSpawner, log_text, wait_until

SERVICE = b"sam2.1_hiera_tiny"
EXPIRY_S = TEST_HEARTBEAT_INTERVAL_S * TEST_HEARTBEAT_LIVENESS
# Slack for a loaded 2-core machine on top of the broker's own timer resolution.
MARGIN_S = 3.0

# A raw worker process: READY, heartbeats, and on REQUEST prints a line and
# keeps heartbeating without ever answering (until it is killed).
HANGING_WORKER = """
import sys, time, zmq
socket = zmq.Context().socket(zmq.DEALER)
socket.connect(sys.argv[1])
socket.send_multipart([b"MDPW02", b"\\x01", sys.argv[2].encode()])
while True:
    socket.send_multipart([b"MDPW02", b"\\x05"])
    if socket.poll(100):
        frames = socket.recv_multipart()
        if frames[1] == b"\\x02":
            print("got request", flush=True)
"""


def result_worker(body: list[bytes]) -> str:
    message = codec.decode(body)
    assert message.status == codec.STATUS_OK, message.header
    return str(message.header["result"]["worker"])


def _request_held_by_a_hung_worker(
    spawn: ProcessSpawner,
    ctx: zmq.Context[Any],
    workers: list[ThreadedWorker],
    request_id: str,
    **broker_options: Any,
) -> tuple[BrokerHandle, RawClient]:
    """A broker, one worker that goes silent once it gets a request, and a client whose request
    ``request_id`` that worker now holds."""
    broker = start_broker(spawn, **broker_options)
    hung = ThreadedWorker(ctx, broker.backend, SERVICE, echo_handler("hung"), silent_after_request=True)
    workers.append(hung)
    wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 1)
    client = RawClient(ctx, broker.frontend)
    client.request(SERVICE, request_body(request_id))
    assert hung.got_request.wait(10)
    return broker, client


def test_request_of_a_hung_worker_goes_to_another_and_client_gets_one_final(
    spawn: ProcessSpawner, ctx: zmq.Context[Any], workers: list[ThreadedWorker]
) -> None:
    broker, client = _request_held_by_a_hung_worker(spawn, ctx, workers, "hang-1")
    workers.append(ThreadedWorker(ctx, broker.backend, SERVICE, echo_handler("healthy")))

    partials, final = client.final(EXPIRY_S + MARGIN_S + 5)
    assert partials == []
    assert result_worker(final) == "healthy"
    assert codec.decode(final).request_id == "hang-1"
    assert client.recv(1.0) is None  # exactly one FINAL
    assert "requeue request_id=hang-1" in broker.log()


def test_request_of_a_killed_worker_process_goes_to_another(
    spawn: ProcessSpawner, ctx: zmq.Context[Any], workers: list[ThreadedWorker]
) -> None:
    broker = start_broker(spawn)
    victim = spawn([sys.executable, "-c", HANGING_WORKER, broker.backend, SERVICE.decode()], "victim")
    wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 1)
    client = RawClient(ctx, broker.frontend)
    client.request(SERVICE, request_body("kill-1"))
    assert wait_until(lambda: "got request" in log_text(victim), 10), log_text(victim)
    workers.append(ThreadedWorker(ctx, broker.backend, SERVICE, echo_handler("survivor")))
    wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 2)

    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _, final = client.final(EXPIRY_S + MARGIN_S + 5)
    assert time.monotonic() - killed_at < EXPIRY_S + MARGIN_S
    assert result_worker(final) == "survivor"
    assert codec.decode(final).request_id == "kill-1"
    assert client.recv(1.0) is None


def test_worker_lost_when_max_attempts_reached(
    spawn: ProcessSpawner, ctx: zmq.Context[Any], workers: list[ThreadedWorker]
) -> None:
    _, client = _request_held_by_a_hung_worker(spawn, ctx, workers, "lost-1", max_attempts=1)
    silent_since = time.monotonic()

    partials, final = client.final(EXPIRY_S + MARGIN_S + 5)
    elapsed = time.monotonic() - silent_since
    code, message, request_id = error_of(final)
    assert (code, request_id, partials) == ("worker_lost", "lost-1", [])
    assert SERVICE.decode() in message
    assert EXPIRY_S - 2 * TEST_HEARTBEAT_INTERVAL_S <= elapsed < EXPIRY_S + MARGIN_S


def test_each_lost_worker_counts_one_attempt(
    spawn: ProcessSpawner, ctx: zmq.Context[Any], workers: list[ThreadedWorker]
) -> None:
    broker = start_broker(spawn, max_attempts=2)
    first = ThreadedWorker(ctx, broker.backend, SERVICE, echo_handler("first"), silent_after_request=True)
    second = ThreadedWorker(ctx, broker.backend, SERVICE, echo_handler("second"), silent_after_request=True)
    workers.extend([first, second])
    wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 2)
    client = RawClient(ctx, broker.frontend)
    client.request(SERVICE, request_body("lost-2"))

    _, final = client.final(2 * EXPIRY_S + MARGIN_S + 5)
    assert error_of(final)[0] == "worker_lost"
    assert first.requests == second.requests == [request_body("lost-2")]


def test_no_worker_after_service_wait(spawn: ProcessSpawner, ctx: zmq.Context[Any]) -> None:
    service_wait_s = 0.5
    broker = start_broker(spawn, service_wait_s=service_wait_s)
    client = RawClient(ctx, broker.frontend)
    sent_at = time.monotonic()
    client.request(b"nobody.serves.this", request_body("nw-1"))

    _, final = client.final(service_wait_s + MARGIN_S + 5)
    elapsed = time.monotonic() - sent_at
    code, message, request_id = error_of(final)
    assert (code, request_id) == ("no_worker", "nw-1")
    assert "nobody.serves.this" in message
    assert service_wait_s <= elapsed < service_wait_s + MARGIN_S


def test_no_worker_clock_starts_when_the_last_worker_leaves(
    spawn: ProcessSpawner, ctx: zmq.Context[Any]
) -> None:
    service_wait_s = 1.0
    broker = start_broker(spawn, service_wait_s=service_wait_s, max_attempts=1)
    worker = RawWorker(ctx, broker.backend, SERVICE)
    worker.ready()
    wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 1)
    serving, waiting = RawClient(ctx, broker.frontend), RawClient(ctx, broker.frontend)
    serving.request(SERVICE, request_body("served"))
    worker.wait_request()
    waiting.request(SERVICE, request_body("queued"))
    # The queued request waits longer than service_wait_s while a worker exists...
    assert worker.next_command(service_wait_s * 1.5) is None
    worker.send(DISCONNECT)
    left_at = time.monotonic()
    assert error_of(serving.final()[1])[:1] == ("worker_lost",)
    # ...and only times out service_wait_s after the service lost its last worker.
    _, final = waiting.final(service_wait_s + MARGIN_S + 5)
    elapsed = time.monotonic() - left_at
    assert error_of(final)[0::2] == ("no_worker", "queued")
    assert service_wait_s - TEST_HEARTBEAT_INTERVAL_S <= elapsed < service_wait_s + MARGIN_S


def test_full_queue_answers_busy_at_once(
    spawn: ProcessSpawner, ctx: zmq.Context[Any], workers: list[ThreadedWorker]
) -> None:
    broker = start_broker(spawn, max_queue=2, service_wait_s=30)
    client = RawClient(ctx, broker.frontend)
    for request_id in ("q1", "q2", "q3"):
        client.request(SERVICE, request_body(request_id))
    _, final = client.final(MARGIN_S)
    code, message, request_id = error_of(final)
    assert (code, request_id) == ("busy", "q3")
    assert SERVICE.decode() in message
    # The queued ones are served once a worker comes.
    workers.append(ThreadedWorker(ctx, broker.backend, SERVICE, echo_handler("late")))
    served = [codec.decode(client.final()[1]).request_id for _ in range(2)]
    assert served == ["q1", "q2"]


def test_image_affinity_prefers_the_worker_that_served_the_key(
    spawn: ProcessSpawner, ctx: zmq.Context[Any], workers: list[ThreadedWorker]
) -> None:
    broker = start_broker(spawn)
    for name in ("A", "B"):  # A registers first, so A is the longest idle
        workers.append(ThreadedWorker(ctx, broker.backend, SERVICE, echo_handler(name)))
        wait_for_workers(ctx, broker.frontend, SERVICE.decode(), len(workers), idle=len(workers))
    client = RawClient(ctx, broker.frontend)

    def served_by(request_id: str, image_key: str | None) -> str:
        client.request(SERVICE, request_body(request_id, image_key=image_key))
        return result_worker(client.final()[1])

    assert served_by("k1-first", "key-1") == "A"  # longest idle; A now holds key-1
    assert served_by("k1-again", "key-1") == "A"  # B is longest idle, but A has the key
    assert served_by("k2-first", "key-2") == "B"  # nobody has key-2: longest idle
    assert served_by("k2-again", "key-2") == "B"
    assert served_by("k1-third", "key-1") == "A"
    assert served_by("no-key", None) == "B"  # longest idle again
