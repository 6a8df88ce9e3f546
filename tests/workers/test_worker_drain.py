"""SIGTERM to a real worker process (scancel, preemption, a time limit, ``start_all.sh``, by hand).

The worker takes no new request, finishes the one it holds within
``--drain-grace-s`` or hands it back, sends DISCONNECT and exits 0; the
broker gives a handed-back request to another worker, so the client gets
exactly one FINAL either way. (A request the worker knows cannot fit goes
back at once: ``tests/workers/test_drain_estimate.py``; here the first
``sleep`` has no estimate, so the grace is waited out.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from protocol.wire import codec
from tests.support.backend import Backend
from tests.support.broker_peers import RawClient, request_body, services
from tests.support.processes import MODEL, PYTHON, ProcessSpawner, log_text, wait_until

pytestmark = pytest.mark.model

GRACE_S = 3.0
LONG_S = GRACE_S + 2.0
"""A request this long cannot finish within the grace period (a timer: load does not stretch it)."""
STARTUP_TIMEOUT_S = 180.0


def start_worker(backend: Backend, name: str) -> subprocess.Popen[bytes]:
    return backend.spawn(
        [
            PYTHON, "-m", "workers",
            "--connect", backend.backend,
            "--model", MODEL,
            "--checkpoint", str(backend.checkpoint),
            "--device", "cpu",
            "--threads", "1",
            "--heartbeat-interval-s", str(backend.heartbeat_interval_s),
            "--drain-grace-s", str(GRACE_S),
        ],
        name,
    )  # fmt: skip


def holder(workers: list[subprocess.Popen[bytes]], request_id: str) -> subprocess.Popen[bytes]:
    """The worker whose log says it started ``request_id``."""
    started = f"request_id={request_id} op=sleep started"
    assert wait_until(lambda: any(started in log_text(w) for w in workers), 30)
    return next(w for w in workers if started in log_text(w))


def sleep_request(client: RawClient, request_id: str, seconds: float) -> None:
    client.request(MODEL.encode(), request_body(request_id, op="sleep", params={"seconds": seconds}))


def only_final(client: RawClient, timeout_s: float) -> codec.Message:
    """The one FINAL of the client's request; no second one follows."""
    partials, body = client.final(timeout_s)
    assert partials == []
    assert client.recv(1.0) is None, "a second reply arrived"
    return codec.decode(body)


def test_sigterm_hands_back_or_finishes_and_exits_0(
    spawn: ProcessSpawner, random_checkpoint: Path, ctx: zmq.Context[Any]
) -> None:
    backend = Backend(spawn, random_checkpoint, heartbeat_interval_s=0.25)
    workers = [start_worker(backend, "worker-a"), start_worker(backend, "worker-b")]
    for proc in workers:
        ok = wait_until(
            lambda p=proc: "worker ready" in log_text(p) or p.poll() is not None, STARTUP_TIMEOUT_S
        )
        assert ok and proc.poll() is None, log_text(proc)
    client = RawClient(ctx, backend.frontend)

    # A request longer than the grace period: handed back after GRACE_S, served by the other worker.
    sleep_request(client, "long", LONG_S)
    first = holder(workers, "long")
    other = next(w for w in workers if w is not first)
    os.kill(first.pid, signal.SIGTERM)
    signalled = time.monotonic()
    assert wait_until(lambda: first.poll() is not None, GRACE_S + 10), log_text(first)
    assert first.returncode == 0, log_text(first)
    assert GRACE_S - 0.5 <= time.monotonic() - signalled, "left before its grace period was over"
    assert "grace period of 3 s over: handing back 1 unfinished request(s)" in log_text(first)
    requeued = "requeue request_id=long service=sam2.1_hiera_tiny attempts=1 reason=worker sent DISCONNECT"
    assert wait_until(lambda: requeued in log_text(backend.broker), 5), log_text(backend.broker)
    reply = only_final(client, LONG_S + 15)
    assert reply.status == codec.STATUS_OK and reply.header["result"]["slept_s"] >= LONG_S
    assert "request_id=long op=sleep status=ok" in log_text(other)
    assert "request_id=long op=sleep status=ok" not in log_text(first)
    assert services(ctx, backend.frontend)[MODEL]["workers"] == 1

    # A request shorter than the grace period: finished by the worker that got SIGTERM. The worker
    # knows `sleep` by the 5 s of "long" (workers/durations.py), too long to fit: a short sleep first
    # brings its typical `sleep` down to 2.75 s, which fits.
    sleep_request(client, "warm", 0.5)
    assert only_final(client, 15).status == codec.STATUS_OK
    sleep_request(client, "short", 1.5)
    holder([other], "short")
    os.kill(other.pid, signal.SIGTERM)
    os.kill(other.pid, signal.SIGTERM)  # SLURM and a job script may both signal: harmless
    reply = only_final(client, 15)
    assert reply.status == codec.STATUS_OK and reply.header["result"]["slept_s"] >= 1.5
    assert wait_until(lambda: other.poll() is not None, 10), log_text(other)
    assert other.returncode == 0, log_text(other)
    text = log_text(other)
    assert "got SIGTERM: draining" in text and "drained: no request held; sending DISCONNECT" in text
    assert "request_id=short op=sleep status=ok" in text
    assert wait_until(lambda: services(ctx, backend.frontend).get(MODEL, {}).get("workers", 0) == 0, 5)
    client.close()
