"""Helpers for the broker tests: a real broker subprocess on free ports, and asking it (mmi).

The raw MDP peers (clients and workers that speak MDP/0.2 frame by frame, a
threaded worker that answers by itself) live in ``bench/raw_peers.py`` and are
re-exported here for the tests.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from bench.raw_peers import (  # noqa: F401 (the tests import the peers from here)
    DISCONNECT,
    HEARTBEAT,
    REPLY_TIMEOUT_S,
    WORKER_HEARTBEAT_S,
    Handler,
    RawClient,
    RawPeer,
    RawWorker,
    ThreadedWorker,
    echo_handler,
    reply_body,
    request_body,
)
from protocol.wire import codec
from tests.support.processes import ProcessSpawner, free_endpoint, log_text, wait_until

# Generous bounds: the machine has 2 cores shared with other test runs.
BROKER_START_TIMEOUT_S = 30.0
# Test brokers heartbeat fast so that liveness tests take well under a second.
TEST_HEARTBEAT_INTERVAL_S = 0.2
TEST_HEARTBEAT_LIVENESS = 3


@dataclass
class BrokerHandle:
    """A running broker subprocess and its endpoints."""

    proc: subprocess.Popen[bytes]
    frontend: str
    backend: str

    def log(self) -> str:
        return log_text(self.proc)


def start_broker(
    spawn: ProcessSpawner,
    *,
    heartbeat_interval_s: float = TEST_HEARTBEAT_INTERVAL_S,
    heartbeat_liveness: int = TEST_HEARTBEAT_LIVENESS,
    max_attempts: int = 2,
    service_wait_s: float = 5.0,
    max_queue: int = 100,
    extra_args: Sequence[str] = (),
    name: str = "broker",
) -> BrokerHandle:
    """Start ``python -m broker`` on free loopback ports and wait for its ready line."""
    frontend, backend = free_endpoint(), free_endpoint()
    args = [
        sys.executable,
        "-m",
        "broker",
        "--frontend",
        frontend,
        "--backend",
        backend,
        "--log-level",
        "DEBUG",
        "--heartbeat-interval-s",
        str(heartbeat_interval_s),
        "--heartbeat-liveness",
        str(heartbeat_liveness),
        "--max-attempts",
        str(max_attempts),
        "--service-wait-s",
        str(service_wait_s),
        "--max-queue",
        str(max_queue),
        *extra_args,
    ]
    proc = spawn(args, name)
    ready = wait_until(
        lambda: "broker ready" in log_text(proc) or proc.poll() is not None, BROKER_START_TIMEOUT_S
    )
    if not ready or "broker ready" not in log_text(proc):
        raise AssertionError(f"broker did not start:\n{log_text(proc)}")
    return BrokerHandle(proc, frontend, backend)


def error_of(body: Sequence[bytes]) -> tuple[str, str, str]:
    """(code, message, request_id) of an error reply body."""
    message = codec.decode(body)
    assert message.status == codec.STATUS_ERROR, message.header
    return message.header["error"]["code"], message.header["error"]["message"], message.request_id


def mmi(context: zmq.Context[Any], frontend: str, service: bytes, body: Sequence[bytes] = ()) -> list[bytes]:
    """Ask the broker an ``mmi.*`` question; returns the FINAL body."""
    client = RawClient(context, frontend)
    try:
        client.request(service, body)
        partials, final = client.final()
        assert partials == []
        return final
    finally:
        client.close()


def services(context: zmq.Context[Any], frontend: str) -> dict[str, dict[str, int]]:
    """The broker's ``mmi.services`` listing."""
    listing: dict[str, dict[str, int]] = json.loads(mmi(context, frontend, b"mmi.services")[0])["services"]
    return listing


def wait_for_workers(
    context: zmq.Context[Any], frontend: str, service: str, workers: int, idle: int | None = None
) -> None:
    """Wait until the broker lists ``workers`` registered (and ``idle`` idle) workers of ``service``."""

    def matches() -> bool:
        entry = services(context, frontend).get(service, {"workers": 0, "idle": 0})
        return entry["workers"] == workers and (idle is None or entry["idle"] == idle)

    assert wait_until(matches, REPLY_TIMEOUT_S, interval_s=0.05), services(context, frontend)


@contextlib.contextmanager
def zmq_context() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context for a test's own sockets, destroyed without lingering on exit."""
    context: zmq.Context[Any] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)
