"""Faults the backend survives, with real processes: stalled workers, a broker
killed and restarted, clients that vanish mid-request, overload.

Complements ``test_broker_faults.py`` (hung and killed raw workers,
``worker_lost``, ``no_worker``, the per-service queue bound) and
``test_backend_e2e.py`` (a SAM2 worker SIGKILLed mid-request).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from protocol.runtime.processes import free_endpoint, log_text, rss_bytes, wait_until
from protocol.wire import codec
from protocol.wire.client import ClientConfig, SamClient
from tests.support.broker_peers import (
    RawClient,
    ThreadedWorker,
    error_of,
    reply_body,
    request_body,
    services,
    start_broker,
    wait_for_workers,
)
from tests.support.processes import MODEL, PYTHON, ProcessSpawner

SERVICE = MODEL.encode()
MARGIN_S = 2.0  # slack for a loaded 2-core machine


def _client(frontend: str, timeout_s: float = 60.0, retries: int = 0) -> SamClient:
    return SamClient(frontend, MODEL, config=ClientConfig(timeout_s=timeout_s, retries=retries))


# ---------------------------------------------------------------------------- stalled worker


@pytest.mark.model
def test_stalled_worker_is_dropped_within_liveness_and_its_request_served_by_another(make_backend) -> None:
    """SIGSTOP a real SAM2 worker mid-request: it stops heartbeating, as a hung process would."""
    interval_s = 0.25
    backend = make_backend(workers=2, heartbeat_interval_s=interval_s)
    expiry_s = interval_s * 3
    with _client(backend.frontend) as client:
        assert wait_until(lambda: client.services()[MODEL]["idle"] == 2, 30)
        outcome: dict[str, Any] = {}

        def call() -> None:
            outcome["reply"] = client.call("sleep", {"seconds": 1.0})
            outcome["extra"] = client.mdp.recv(1.0)  # exactly one FINAL: nothing more comes

        thread = threading.Thread(target=call)
        thread.start()
        assert wait_until(lambda: any("op=sleep started" in log_text(w) for w in backend.workers), 30)
        stalled = next(w for w in backend.workers if "op=sleep started" in log_text(w))
        other = next(w for w in backend.workers if w is not stalled)
        os.kill(stalled.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            assert wait_until(lambda: "reason=heartbeat expired" in log_text(backend.broker), 10)
            dropped_after_s = time.monotonic() - stopped_at
            thread.join(30)
            served_after_s = time.monotonic() - stopped_at
        finally:
            os.kill(stalled.pid, signal.SIGCONT)
    assert dropped_after_s < expiry_s + interval_s + MARGIN_S, dropped_after_s
    reply = outcome["reply"]
    assert reply.status == "ok" and reply.header["result"]["slept_s"] >= 1.0
    assert outcome["extra"] is None
    assert served_after_s < expiry_s + 1.0 + MARGIN_S + 2.0, served_after_s
    assert "op=sleep started" in log_text(other)
    broker_log = log_text(backend.broker)
    assert f"requeue request_id={reply.request_id}" in broker_log
    # Once resumed, the stalled worker's late reply is dropped and it registers again.
    with _client(backend.frontend) as client:
        assert wait_until(lambda: client.services().get(MODEL, {}).get("workers") == 2, 30)
    assert "reconnecting" in log_text(stalled)


# ---------------------------------------------------------------------------- broker restart


def _broker_args(frontend: str, backend: str, interval_s: float) -> list[str]:
    return [
        PYTHON, "-m", "broker", "--frontend", frontend, "--backend", backend,
        "--heartbeat-interval-s", str(interval_s), "--log-level", "DEBUG",
    ]  # fmt: skip


@pytest.mark.model
def test_broker_killed_and_restarted_workers_reregister_within_5s_and_clients_retry(
    spawn: ProcessSpawner, random_checkpoint: Path
) -> None:
    interval_s = 0.5
    frontend, backend = free_endpoint(), free_endpoint()
    first = spawn(_broker_args(frontend, backend, interval_s), "broker-1")
    assert wait_until(lambda: "broker ready" in log_text(first), 30)
    worker = spawn(
        [
            PYTHON, "-m", "workers", "--connect", backend, "--model", MODEL,
            "--checkpoint", str(random_checkpoint), "--device", "cpu", "--threads", "1",
            "--heartbeat-interval-s", str(interval_s),
        ],
        "worker",
    )  # fmt: skip
    with _client(frontend) as probe:
        assert wait_until(lambda: probe.services().get(MODEL, {}).get("workers") == 1, 120), log_text(worker)

    results: dict[str, Any] = {}

    def call(name: str, params: dict[str, Any], op: str) -> None:
        # Default-style policy, shortened: silence timeout, then retries on a fresh socket.
        with _client(frontend, timeout_s=4.0, retries=4) as client:
            try:
                results[name] = client.call(op, params)
            except Exception as e:  # reported by the assertions below
                results[name] = e

    in_flight = threading.Thread(target=call, args=("in_flight", {"seconds": 1.5}, "sleep"))
    in_flight.start()
    assert wait_until(lambda: "op=sleep started" in log_text(worker), 30)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    sent_while_down = threading.Thread(target=call, args=("sent_while_down", {}, "info"))
    sent_while_down.start()
    time.sleep(5.0)  # long enough for the worker to back off more than once

    second = spawn(_broker_args(frontend, backend, interval_s), "broker-2")
    assert wait_until(lambda: "broker ready" in log_text(second), 30)
    back_at = time.monotonic()
    assert wait_until(lambda: "worker ready worker=" in log_text(second), 10), log_text(second)
    reregistered_s = time.monotonic() - back_at
    in_flight.join(60)
    sent_while_down.join(60)

    assert reregistered_s < 5.0, reregistered_s
    assert isinstance(results["in_flight"], codec.Message), results
    assert results["in_flight"].header["result"]["slept_s"] >= 1.5
    assert isinstance(results["sent_while_down"], codec.Message), results
    assert results["sent_while_down"].header["result"]["pid"] == worker.pid
    worker_log = log_text(worker)
    assert "reconnecting in 0.25s" in worker_log and "reconnecting in 0.50s" in worker_log
    assert worker.poll() is None


# ---------------------------------------------------------------------------- vanished clients


def _slow_echo(delay_s: float):  # type: ignore[no-untyped-def]
    def handle(body: list[bytes]) -> list[list[bytes]]:
        time.sleep(delay_s)
        return [reply_body(body, size=sum(len(f) for f in body)) + body[1:]]

    return handle


def test_clients_that_vanish_mid_request_leave_nothing_behind(
    spawn: ProcessSpawner, ctx: zmq.Context[Any], workers: list[ThreadedWorker]
) -> None:
    broker = start_broker(spawn)
    worker = ThreadedWorker(ctx, broker.backend, SERVICE, _slow_echo(0.005))
    workers.append(worker)
    wait_for_workers(ctx, broker.frontend, MODEL, 1)
    payload = os.urandom(256 * 1024)
    per_round, rounds = 60, 5
    rss_after: list[int] = []
    for round_number in range(rounds):
        clients = [RawClient(ctx, broker.frontend) for _ in range(per_round)]
        for i, client in enumerate(clients):
            client.request(SERVICE, [*request_body(f"gone-{round_number}-{i}"), payload])
        for client in clients:  # gone before any reply: queued or being served
            client.socket.close(linger=2000)
        expected = per_round * (round_number + 1)
        assert wait_until(lambda n=expected: len(worker.requests) >= n, 30), len(worker.requests)
        wait_for_workers(ctx, broker.frontend, MODEL, 1, idle=1)
        rss_after.append(rss_bytes(broker.proc.pid))
    assert len(worker.requests) == per_round * rounds  # each served once, none re-sent
    assert services(ctx, broker.frontend)[MODEL] == {"workers": 1, "idle": 1, "queued": 0}
    # Rounds 1-2 warm allocator pools and libzmq buffers; later rounds must not keep growing. A
    # leak grows every round (a round carries 15 MiB of payload), so the lower of the last two
    # samples is compared: one sample may sit a few MiB high while freed pages are not yet
    # returned (seen under load: 75, 71, 70, 70, 76 MiB).
    growth = min(rss_after[-2:]) - rss_after[1]
    assert growth < 4 << 20, [r >> 20 for r in rss_after]
    # The broker still serves a live client normally.
    live = RawClient(ctx, broker.frontend)
    live.request(SERVICE, request_body("alive"))
    assert codec.decode(live.final()[1][:1]).request_id == "alive"
    assert broker.proc.poll() is None


# ---------------------------------------------------------------------------- overload


def test_queue_bound_in_bytes_answers_busy_and_memory_stays_bounded(
    spawn: ProcessSpawner, ctx: zmq.Context[Any]
) -> None:
    limit = 16 << 20
    broker = start_broker(
        spawn, max_queue=1000, service_wait_s=60, extra_args=["--max-queued-bytes", str(limit)]
    )
    baseline = rss_bytes(broker.proc.pid)
    client = RawClient(ctx, broker.frontend)
    big = os.urandom(1 << 20)
    sent = 200  # 200 MiB offered, 16 MiB allowed
    for i in range(sent):
        client.request(SERVICE, [*request_body(f"big-{i}"), big])
    busy: list[str] = []
    deadline = time.monotonic() + 30
    queued = 0
    while time.monotonic() < deadline:
        queued = services(ctx, broker.frontend).get(MODEL, {}).get("queued", 0)
        if queued + len(busy) >= sent:
            break
        frames = client.recv(0.2)
        if frames is not None:
            code, message, request_id = error_of(frames[3:])
            assert code == "busy" and "try again later" in message, message
            busy.append(request_id)
    assert queued + len(busy) == sent
    assert 0 < queued <= limit // (1 << 20)
    assert busy[0] == f"big-{queued}"  # first come, first queued; the rest refused at once
    grown = rss_bytes(broker.proc.pid) - baseline
    assert grown < 64 << 20, grown >> 20  # not 200 MiB
    log = log_text(broker.proc)
    assert "code=busy" in log and f"limit of {limit}" in log


def test_too_many_body_frames_get_bad_request(spawn: ProcessSpawner, ctx: zmq.Context[Any]) -> None:
    broker = start_broker(spawn, extra_args=["--max-body-frames", "4"])
    client = RawClient(ctx, broker.frontend)
    client.request(SERVICE, [*request_body("frames-1"), *([b"x"] * 4)])
    code, message, request_id = error_of(client.final()[1])
    assert (code, request_id) == ("bad_request", "frames-1")
    assert "5 body frames" in message and "at most 4" in message


def test_oversized_frames_are_refused_by_libzmq_before_allocation(
    spawn: ProcessSpawner, ctx: zmq.Context[Any], workers: list[ThreadedWorker]
) -> None:
    """ZMQ_MAXMSGSIZE: the frame's announced size is checked before its buffer exists."""
    limit = 1 << 20
    broker = start_broker(spawn, extra_args=["--max-message-bytes", str(limit)])
    workers.append(ThreadedWorker(ctx, broker.backend, SERVICE, _slow_echo(0)))
    wait_for_workers(ctx, broker.frontend, MODEL, 1)
    baseline = rss_bytes(broker.proc.pid)
    for _ in range(10):  # 10 x 32 MiB announced; libzmq drops each connection at the frame header
        attacker = RawClient(ctx, broker.frontend)
        attacker.request(SERVICE, [*request_body("huge"), bytes(32 << 20)])
        assert attacker.recv(0.2) is None
        attacker.close()
    assert rss_bytes(broker.proc.pid) - baseline < 32 << 20
    client = RawClient(ctx, broker.frontend)
    client.request(SERVICE, request_body("small"))
    assert codec.decode(client.final()[1][:1]).request_id == "small"
