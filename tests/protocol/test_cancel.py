"""``mmi.cancel``: a client stops its own request, queued or in flight.

A real broker subprocess; bare DEALER sockets play clients and workers, so
the frames the broker sends (error FINAL, DISCONNECT) are checked exactly.
The last test goes through ``SamClient.call(cancel=...)``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import zmq

from bench.raw_peers import DISCONNECT, RawClient, RawWorker, ThreadedWorker, echo_handler, request_body
from protocol.wire import mdp
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import Superseded
from tests.support.broker_peers import BrokerHandle, error_of, services, wait_for_workers
from tests.support.processes import wait_until
from tests.support.scripted_worker import ScriptedWorker, reply

SERVICE = b"echo"
CANCEL = b"mmi.cancel"


def _cancel(client: RawClient, request_id: str) -> list[bytes]:
    """Send ``mmi.cancel`` for ``request_id``; return the FINAL bodies in arrival order, the mmi one last."""
    client.request(CANCEL, [request_id.encode()])
    bodies = []
    while True:
        frames = client.recv()
        assert frames is not None, f"no answer to mmi.cancel; got {bodies}"
        assert frames[1] == b"\x03", frames
        if frames[2] == CANCEL:
            return [*bodies, frames[3:]]
        bodies.append(frames[3:])


def test_cancel_of_a_queued_request_answers_cancelled_and_never_dispatches_it(
    ctx: zmq.Context[Any], broker: BrokerHandle
) -> None:
    # No worker yet: the request waits in the queue.
    client = RawClient(ctx, broker.frontend)
    client.request(SERVICE, request_body("queued-1"))
    assert wait_until(lambda: services(ctx, broker.frontend).get("echo", {}).get("queued") == 1, 5)

    stranger = RawClient(ctx, broker.frontend)
    assert _cancel(stranger, "queued-1") == [[b"404"]]  # only its own client may cancel it

    *replies, answer = _cancel(client, "queued-1")
    assert answer == [b"200"]
    [body] = replies
    code, message, request_id = error_of(body)
    assert (code, request_id) == ("cancelled", "queued-1") and "queued" in message
    assert services(ctx, broker.frontend)["echo"]["queued"] == 0
    assert _cancel(client, "queued-1") == [[b"404"]]  # already gone

    worker = RawWorker(ctx, broker.backend, SERVICE)
    worker.ready()
    wait_for_workers(ctx, broker.frontend, "echo", 1)
    assert worker.next_command(timeout_s=0.5) is None  # nothing left to dispatch
    assert "error reply request_id=queued-1" in broker.log() and "code=cancelled" in broker.log()


def test_cancel_in_flight_disconnects_the_worker_and_does_not_requeue(
    ctx: zmq.Context[Any], broker: BrokerHandle
) -> None:
    busy = RawWorker(ctx, broker.backend, SERVICE, identity=b"busy-worker")
    busy.ready()
    wait_for_workers(ctx, broker.frontend, "echo", 1)
    client = RawClient(ctx, broker.frontend)
    client.request(SERVICE, request_body("long-1"))
    busy.wait_request()

    spare = ThreadedWorker(ctx, broker.backend, SERVICE, echo_handler("spare"))  # heartbeats by itself
    wait_for_workers(ctx, broker.frontend, "echo", 2, idle=1)
    busy.heartbeat()

    *replies, answer = _cancel(client, "long-1")
    assert answer == [b"200"]
    [body] = replies
    code, _, request_id = error_of(body)
    assert (code, request_id) == ("cancelled", "long-1")
    # RFC 18: the broker may send DISCONNECT at any time; the worker is forgotten.
    assert busy.next_command() == DISCONNECT
    wait_for_workers(ctx, broker.frontend, "echo", 1, idle=1)
    # The cancelled request is not given to the spare worker.
    time.sleep(0.5)
    spare.stop()
    assert spare.requests == [] and spare.disconnects == 0
    # A late FINAL from the disconnected worker reaches nobody.
    busy.final(b"whoever", [b"late"])
    assert client.recv(timeout_s=0.3) is None

    # A bad or unknown id is simply not found.
    assert _cancel(client, "no such id!") == [[b"404"]]
    assert _cancel(client, "long-1") == [[b"404"]]


def test_client_cancel_event_stops_the_call_and_the_worker(broker: BrokerHandle) -> None:
    """``SamClient.call(cancel=...)`` raises Superseded at once and the broker stops the worker."""

    def handler(request: Any, n: int) -> list[tuple[Any, ...]]:
        if request.op == "slow":  # one PARTIAL, then nothing until cancelled
            return [(mdp.W_PARTIAL, reply(request, "partial", step=1))]
        return [(mdp.W_FINAL, reply(request, "ok", n=n))]

    cancel = threading.Event()
    partials: list[Any] = []

    def on_partial(message: Any) -> None:
        partials.append(message)
        cancel.set()

    with ScriptedWorker(broker.backend, "echo", handler) as worker:
        with SamClient(broker.frontend, "echo", config=ClientConfig(timeout_s=10, retries=0)) as client:
            started = time.monotonic()
            with pytest.raises(Superseded):
                client.call("slow", on_partial=on_partial, cancel=cancel)
            assert time.monotonic() - started < 5
            assert len(partials) == 1
            # The worker got DISCONNECT, registered again and serves the next call on the
            # same client; the late "cancelled" FINAL and the mmi.cancel answer are dropped.
            reply_message = client.call("fast")
            assert reply_message.header["result"]["n"] == 2
        assert [r.op for r in worker.requests] == ["slow", "fast"]
    log = broker.log()
    assert "code=cancelled" in log and "reason=request" in log and "cancelled" in log
    assert "WARNING" not in "\n".join(line for line in log.splitlines() if "cancel" in line)
