"""Interop: the third-party MDP/0.2 implementation ``majortomo`` against our broker.

Two problems of majortomo 0.2.0 are worked around here, not in the broker:

* it imports ``six`` (``majortomo/util.py``) without declaring it as a
  dependency; where ``six`` is missing, a stand-in with the one function it
  uses (``ensure_binary``) is installed first, here and in the worker process;
* its ``Client`` uses the *worker* command codes on the client sub-protocol
  (REQUEST 0x02, PARTIAL 0x03, FINAL 0x04) where RFC 18 says REQUEST 0x01,
  PARTIAL 0x02, FINAL 0x03. Our broker follows the RFC and drops such a
  request with a warning (checked below), so the tests use
  :class:`Rfc18Client`, majortomo's client with the RFC's codes.

Its ``Worker`` follows the RFC and works unchanged; nothing else needed
changing for pyzmq 27.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from protocol.wire import codec, mdp
from tests.support.broker_peers import (
    REPLY_TIMEOUT_S,
    BrokerHandle,
    ThreadedWorker,
    echo_handler,
    request_body,
    wait_for_workers,
)
from tests.support.processes import ProcessSpawner, log_text, wait_until

SERVICE = b"echo"
# majortomo's worker heartbeats at this interval (s); it must be well under
# the test broker's expiry (0.2 s x 3). It drops the broker after
# MAJORTOMO_BROKER_TIMEOUT_S without a message from it.
MAJORTOMO_HEARTBEAT_S = 0.1
MAJORTOMO_BROKER_TIMEOUT_S = 3.0

SIX_SHIM = """
import importlib.util, sys, types
if importlib.util.find_spec("six") is None:
    six = types.ModuleType("six")
    def ensure_binary(s, encoding="utf-8", errors="strict"):
        if isinstance(s, bytes):
            return s
        if isinstance(s, str):
            return s.encode(encoding, errors)
        raise TypeError(f"not expecting type {type(s)}")
    six.ensure_binary = ensure_binary
    sys.modules["six"] = six
"""

# A majortomo echo worker: "multi" as first frame gets three PARTIALs and a
# FINAL; anything else one FINAL of [b"majortomo", *request].
MAJORTOMO_WORKER = (
    SIX_SHIM
    + """
import logging
from majortomo import Worker, WorkerRequestsIterator
logging.basicConfig(level=logging.INFO)
broker_url, service, interval_s, timeout_s = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
worker = Worker(broker_url, service, heartbeat_interval=interval_s, heartbeat_timeout=timeout_s)
requests = WorkerRequestsIterator(worker)
requests.stop_on_signal()
print("majortomo worker started", flush=True)
for request in requests:
    if request[:1] == [b"multi"]:
        parts = ([b"part", str(i).encode()] for i in range(3))
        requests.send_reply_from_iterable(parts, final=[b"done", *request[1:]])
    else:
        requests.send_reply_final([b"majortomo", *request])
"""
)


def import_majortomo() -> types.ModuleType:
    """``import majortomo``, with the ``six`` stand-in if needed."""
    if "six" not in sys.modules and importlib.util.find_spec("six") is None:
        namespace: dict[str, Any] = {}
        exec(SIX_SHIM, namespace)  # installs sys.modules["six"]
    import majortomo

    return majortomo


def rfc18_client_class() -> type[Any]:
    """majortomo's ``Client`` with RFC 18's client command codes.

    It keeps majortomo's leading empty frame, which our broker mirrors back.
    """
    majortomo = import_majortomo()
    from majortomo import protocol as majortomo_protocol

    to_majortomo = {mdp.C_PARTIAL: majortomo_protocol.PARTIAL, mdp.C_FINAL: majortomo_protocol.FINAL}

    base: type[Any] = majortomo.Client

    class Rfc18Client(base):
        def send(self, service: bytes, *body: bytes) -> None:
            self._socket.send_multipart(mdp.client_request(service, body, delimited=True))
            self._expect_reply = True

        @staticmethod
        def _parse_message(message: list[bytes]) -> tuple[bytes, list[bytes]]:
            if len(message) > 2:
                message[2] = to_majortomo.get(message[2], message[2])
            parsed: tuple[bytes, list[bytes]] = base._parse_message(message)
            return parsed

    return Rfc18Client


@pytest.fixture
def majortomo_client(broker: BrokerHandle) -> Iterator[Any]:
    client = rfc18_client_class()(broker.frontend)
    client.connect()
    yield client
    client.close()


def start_majortomo_worker(spawn: ProcessSpawner, broker: BrokerHandle) -> None:
    proc = spawn(
        [
            sys.executable,
            "-c",
            MAJORTOMO_WORKER,
            broker.backend,
            SERVICE.decode(),
            str(MAJORTOMO_HEARTBEAT_S),
            str(MAJORTOMO_BROKER_TIMEOUT_S),
        ],
        "majortomo-worker",
    )
    assert wait_until(lambda: "majortomo worker started" in log_text(proc) or proc.poll() is not None, 30)
    assert proc.poll() is None, log_text(proc)


def recv_parts(client: Any) -> list[list[bytes]]:
    """Every reply part of the current request, each as majortomo returns it: [service, body...]."""
    return list(client.recv_all(timeout=REPLY_TIMEOUT_S))


def test_majortomo_client_and_worker_through_our_broker(
    spawn: ProcessSpawner, ctx: zmq.Context[Any], broker: BrokerHandle, majortomo_client: Any
) -> None:
    start_majortomo_worker(spawn, broker)
    wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 1)

    majortomo_client.send(b"mmi.service", SERVICE)
    assert recv_parts(majortomo_client) == [[b"mmi.service", b"200"]]

    body = request_body("mt-1")
    majortomo_client.send(SERVICE, *body, b"\x00\xff" * 1000)
    assert recv_parts(majortomo_client) == [[SERVICE, b"majortomo", *body, b"\x00\xff" * 1000]]

    majortomo_client.send(SERVICE, b"multi", b"tail")
    assert recv_parts(majortomo_client) == [
        [SERVICE, b"part", b"0"],
        [SERVICE, b"part", b"1"],
        [SERVICE, b"part", b"2"],
        [SERVICE, b"done", b"tail"],
    ]
    # Several round trips in a row keep the majortomo worker registered and reused.
    for i in range(5):
        majortomo_client.send(SERVICE, f"round-{i}".encode())
        assert recv_parts(majortomo_client) == [[SERVICE, b"majortomo", f"round-{i}".encode()]]


def test_majortomo_worker_and_raw_worker_share_a_service(
    spawn: ProcessSpawner, ctx: zmq.Context[Any], broker: BrokerHandle, majortomo_client: Any
) -> None:
    start_majortomo_worker(spawn, broker)
    wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 1)
    raw = ThreadedWorker(ctx, broker.backend, SERVICE, echo_handler("raw"))
    try:
        wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 2, idle=2)
        answered_by: Counter[str] = Counter()
        for i in range(6):
            body = request_body(f"mix-{i}")
            majortomo_client.send(SERVICE, *body)
            [part] = recv_parts(majortomo_client)
            assert part[0] == SERVICE
            if part[1] == b"majortomo":
                assert part[2:] == body
                answered_by["majortomo"] += 1
            else:
                reply = codec.decode(part[1:])
                assert (reply.request_id, reply.header["result"]["worker"]) == (f"mix-{i}", "raw")
                answered_by["raw"] += 1
        # Longest-idle dispatch alternates between the two workers.
        assert answered_by == {"majortomo": 3, "raw": 3}
    finally:
        raw.stop()


def test_stock_majortomo_client_request_is_dropped_with_a_warning(broker: BrokerHandle) -> None:
    majortomo = import_majortomo()
    client = majortomo.Client(broker.frontend)
    client.connect()
    try:
        client.send(b"mmi.service", SERVICE)  # goes out as [b"", b"MDPC02", b"\x02", ...]
        with pytest.raises(majortomo.error.Timeout):
            client.recv_part(timeout=1.0)
    finally:
        client.close()
    assert wait_until(lambda: "clients may only send REQUEST" in broker.log(), 5)
    assert broker.proc.poll() is None
