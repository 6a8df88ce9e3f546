"""Frame-by-frame conformance of the broker with MDP/0.2 (ZeroMQ RFC 18).

A real broker subprocess; bare DEALER sockets play client and worker so
every frame on the wire is checked exactly.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import zmq

from broker.broker import Broker
from broker.config import BrokerConfig
from protocol.wire import mdp
from tests.support.broker_peers import (
    DISCONNECT,
    HEARTBEAT,
    REPLY_TIMEOUT_S,
    TEST_HEARTBEAT_INTERVAL_S,
    TEST_HEARTBEAT_LIVENESS,
    BrokerHandle,
    RawClient,
    RawWorker,
    mmi,
    reply_body,
    request_body,
    services,
    start_broker,
    wait_for_workers,
)
from tests.support.processes import ProcessSpawner, wait_until

SERVICE = b"echo"
EXPIRY_S = TEST_HEARTBEAT_INTERVAL_S * TEST_HEARTBEAT_LIVENESS


def ready_worker(ctx: zmq.Context[Any], broker: BrokerHandle, identity: bytes | None = None) -> RawWorker:
    worker = RawWorker(ctx, broker.backend, SERVICE, identity)
    worker.ready()
    wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 1)
    return worker


def test_request_reaches_worker_and_replies_reach_client_frame_by_frame(
    ctx: zmq.Context[Any], broker: BrokerHandle
) -> None:
    worker = ready_worker(ctx, broker)
    client = RawClient(ctx, broker.frontend, identity=b"client-A")
    body = [*request_body("r1"), b"\x00binary\xff", b""]
    client.request(SERVICE, body)

    frames = worker.next_command()
    assert frames == [b"MDPW02", b"\x02", b"client-A", b"", *body]

    worker.send([b"MDPW02", b"\x03", b"client-A", b"", b"part-1"])
    worker.send([b"MDPW02", b"\x03", b"client-A", b"", b"part-2", b"more"])
    worker.send([b"MDPW02", b"\x04", b"client-A", b"", b"final", b"x" * 100_000])

    assert client.recv() == [b"MDPC02", b"\x02", SERVICE, b"part-1"]
    assert client.recv() == [b"MDPC02", b"\x02", SERVICE, b"part-2", b"more"]
    assert client.recv() == [b"MDPC02", b"\x03", SERVICE, b"final", b"x" * 100_000]
    assert client.recv(0.3) is None


def test_worker_is_reused_after_final(ctx: zmq.Context[Any], broker: BrokerHandle) -> None:
    worker = ready_worker(ctx, broker)
    client = RawClient(ctx, broker.frontend)
    for i in range(3):
        client.request(SERVICE, [f"req-{i}".encode()])
        envelope, body = worker.wait_request()
        assert body == [f"req-{i}".encode()]
        worker.final(envelope, [f"rep-{i}".encode()])
        assert client.final() == ([], [f"rep-{i}".encode()])


def test_broker_heartbeats_at_the_interval(ctx: zmq.Context[Any], broker: BrokerHandle) -> None:
    worker = ready_worker(ctx, broker)
    arrivals: list[float] = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        worker.heartbeat()
        frames = worker.recv(0.05)
        if frames is not None:
            assert frames == [b"MDPW02", b"\x05"]
            arrivals.append(time.monotonic())
    gaps = sorted(b - a for a, b in zip(arrivals[:-1], arrivals[1:], strict=True))
    expected = 2.0 / TEST_HEARTBEAT_INTERVAL_S
    assert expected * 0.5 <= len(arrivals) <= expected * 1.5, arrivals
    assert gaps[len(gaps) // 2] == pytest.approx(TEST_HEARTBEAT_INTERVAL_S, abs=0.1)


def test_command_from_unknown_worker_gets_disconnect(ctx: zmq.Context[Any], broker: BrokerHandle) -> None:
    for command in ([b"MDPW02", b"\x05"], [b"MDPW02", b"\x04", b"someone", b"", b"reply"]):
        stranger = RawWorker(ctx, broker.backend, SERVICE)
        stranger.send(command)
        assert stranger.recv() == [b"MDPW02", b"\x06"]
        stranger.close()
    assert "from unknown worker" in broker.log()


def test_second_ready_gets_disconnect_and_worker_is_forgotten(
    ctx: zmq.Context[Any], broker: BrokerHandle
) -> None:
    worker = ready_worker(ctx, broker)
    worker.ready()
    assert worker.next_command(keep_alive=False) == DISCONNECT
    assert mmi(ctx, broker.frontend, b"mmi.service", [SERVICE]) == [b"404"]
    # The RFC's recovery: a new socket and a new READY.
    worker.close()
    ready_worker(ctx, broker)
    assert mmi(ctx, broker.frontend, b"mmi.service", [SERVICE]) == [b"200"]


def test_silent_worker_is_purged_and_its_next_request_goes_to_another(
    ctx: zmq.Context[Any], broker: BrokerHandle
) -> None:
    silent = RawWorker(ctx, broker.backend, SERVICE)
    silent.ready()
    wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 1)
    # No heartbeats from it: gone after interval * liveness (+ one tick).
    assert wait_until(
        lambda: mmi(ctx, broker.frontend, b"mmi.service", [SERVICE]) == [b"404"], EXPIRY_S + 5.0
    )
    client = RawClient(ctx, broker.frontend)
    client.request(SERVICE, [b"after-purge"])
    alive = ready_worker(ctx, broker)
    envelope, body = alive.wait_request()
    assert body == [b"after-purge"]
    alive.final(envelope, [b"ok"])
    assert client.final() == ([], [b"ok"])
    # The purged worker got heartbeats at most, never the request, and no more heartbeats now.
    received: list[list[bytes]] = []
    while (frames := silent.recv(0.0)) is not None:
        received.append(frames)
    assert all(frames == HEARTBEAT for frames in received)
    assert silent.recv(4 * TEST_HEARTBEAT_INTERVAL_S) is None
    assert "heartbeat expired" in broker.log()


def test_worker_disconnect_is_handled(ctx: zmq.Context[Any], broker: BrokerHandle) -> None:
    leaving = ready_worker(ctx, broker)
    client = RawClient(ctx, broker.frontend)
    client.request(SERVICE, [b"job"])
    leaving.wait_request()
    leaving.send(DISCONNECT)
    # Its request goes to the next worker; it gets nothing back, not even a DISCONNECT.
    other = RawWorker(ctx, broker.backend, SERVICE)
    other.ready()
    envelope, body = other.wait_request()
    assert body == [b"job"]
    other.final(envelope, [b"done"])
    assert client.final() == ([], [b"done"])
    assert leaving.recv(0.5) is None
    assert services(ctx, broker.frontend)["echo"]["workers"] == 1


MALFORMED_CLIENT = [
    [b"MDPC01", b"\x01", SERVICE, b"body"],  # wrong protocol header
    [b"MDPW02", b"\x01", SERVICE, b"body"],  # worker header on the client socket
    [b"MDPC02", b"\x07", SERVICE, b"body"],  # unknown command
    [b"MDPC02", b"\x01"],  # truncated: no service
    [b"MDPC02", b"\x01", b"", b"body"],  # empty service
    [b"MDPC02", b"\x03", SERVICE, b"body"],  # a FINAL from a client
    [b"MDPC02", b"\x01" * 2000, SERVICE],  # oversized command frame
]

MALFORMED_WORKER = [
    [b"MDPW01", b"\x01", SERVICE],  # wrong protocol header
    [b"MDPC02", b"\x01", SERVICE],  # client header on the worker socket
    [b"MDPW02", b"\x09"],  # unknown command
    [b"MDPW02"],  # truncated
    [b"MDPW02", b"\x01"],  # READY without service
    [b"MDPW02", b"\x01", b""],  # READY with empty service
    [b"MDPW02", b"\x01", SERVICE, b"extra"],  # READY with extra frames
    [b"MDPW02", b"\x04", b"client"],  # FINAL without empty frame
    [b"MDPW02", b"\x05", b"extra"],  # HEARTBEAT with a payload
]


def assert_dropped_and_serving(
    broker: BrokerHandle,
    worker: RawWorker,
    client: RawClient,
    sender: str,
    dropped: int,
    client_identity: bytes | None = None,
) -> None:
    """The broker logged ``dropped`` messages from ``sender`` as dropped, is alive, and still
    routes ``client``'s request (its envelope ``client_identity`` when given) to ``worker`` and back."""
    client.request(SERVICE, [b"valid"])
    envelope, body = worker.wait_request()
    assert body == [b"valid"] and envelope == (client_identity or envelope)
    worker.final(envelope, [b"fine"])
    assert client.final() == ([], [b"fine"])
    assert broker.log().count(f"WARNING dropped message from {sender}") == dropped
    assert broker.proc.poll() is None


def test_malformed_client_messages_are_dropped(ctx: zmq.Context[Any], broker: BrokerHandle) -> None:
    worker = ready_worker(ctx, broker)
    bad_client = RawClient(ctx, broker.frontend, identity=b"bad-client")
    for frames in MALFORMED_CLIENT:
        bad_client.send(frames)
    assert bad_client.recv(0.5) is None
    # Still serving, on the same connection too.
    sender = "client " + b"bad-client".hex()
    assert_dropped_and_serving(broker, worker, bad_client, sender, len(MALFORMED_CLIENT), b"bad-client")


def test_malformed_worker_messages_are_dropped(ctx: zmq.Context[Any], broker: BrokerHandle) -> None:
    worker = ready_worker(ctx, broker, identity=b"bad-worker")
    for frames in MALFORMED_WORKER:
        worker.send(frames)
    client = RawClient(ctx, broker.frontend)
    assert_dropped_and_serving(broker, worker, client, "worker " + b"bad-worker".hex(), len(MALFORMED_WORKER))


def test_reply_for_another_client_is_dropped(ctx: zmq.Context[Any], broker: BrokerHandle) -> None:
    worker = ready_worker(ctx, broker)
    client = RawClient(ctx, broker.frontend, identity=b"right")
    bystander = RawClient(ctx, broker.frontend, identity=b"wrong")
    bystander.request(b"mmi.service", [SERVICE])  # connect it to the broker
    assert bystander.final() == ([], [b"200"])
    client.request(SERVICE, [b"job"])
    envelope, _ = worker.wait_request()
    worker.final(b"wrong", [b"misrouted"])
    worker.final(envelope, [b"answer"])
    assert client.final() == ([], [b"answer"])
    assert bystander.recv(0.5) is None
    assert "which it is not serving" in broker.log()


def test_a_reply_naming_another_request_is_not_taken_for_the_one_being_served(
    ctx: zmq.Context[Any], broker: BrokerHandle
) -> None:
    """A worker cancelled mid-request re-registers and is handed the same client's next request;
    its late answer to the cancelled one must not complete the new one."""
    worker = ready_worker(ctx, broker)
    client = RawClient(ctx, broker.frontend)
    client.request(SERVICE, request_body("next-2"))
    envelope, body = worker.wait_request()
    worker.partial(envelope, reply_body(request_body("cancelled-1"), "partial"))
    worker.final(envelope, reply_body(request_body("cancelled-1"), late=True))
    worker.final(envelope, reply_body(body, late=False))
    partials, final = client.final()
    assert partials == []
    assert json.loads(final[0])["request_id"] == "next-2"
    assert json.loads(final[0])["result"] == {"late": False}
    dropped = "for request cancelled-1, not for next-2"
    assert wait_until(lambda: broker.log().count(dropped) == 2, 5), broker.log()
    # A reply without the project's header (any RFC 18 peer) is forwarded as it is.
    client.request(SERVICE, [b"raw"])
    envelope, _ = worker.wait_request()
    worker.final(envelope, [b"raw answer"])
    assert client.final() == ([], [b"raw answer"])


def test_mmi(ctx: zmq.Context[Any], broker: BrokerHandle) -> None:
    client = RawClient(ctx, broker.frontend)
    client.request(b"mmi.service", [SERVICE])
    assert client.recv() == [b"MDPC02", b"\x03", b"mmi.service", b"404"]
    ready_worker(ctx, broker)
    client.request(b"mmi.service", [SERVICE])
    assert client.recv() == [b"MDPC02", b"\x03", b"mmi.service", b"200"]
    client.request(b"mmi.services", [])
    frames = client.recv()
    assert frames is not None and frames[:3] == [b"MDPC02", b"\x03", b"mmi.services"]
    assert json.loads(frames[3]) == {"services": {"echo": {"workers": 1, "idle": 1, "queued": 0}}}
    client.request(b"mmi.nothing", [])
    assert client.recv(REPLY_TIMEOUT_S) == [b"MDPC02", b"\x03", b"mmi.nothing", b"501"]


def test_mmi_services_describes_a_service_from_the_info_answers_it_forwards(
    ctx: zmq.Context[Any], spawn: ProcessSpawner
) -> None:
    # raw workers heartbeat only when told to: a broker with a 10 s liveness window
    broker = start_broker(spawn, heartbeat_interval_s=2.0, heartbeat_liveness=5)
    first, second = ready_worker(ctx, broker, b"w-1"), RawWorker(ctx, broker.backend, SERVICE, b"w-2")
    second.ready()
    wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 2)
    client = RawClient(ctx, broker.frontend)
    gone: RawWorker | None = None

    def listing() -> dict[str, Any]:
        for worker in (first, second):  # raw workers: keep them alive by hand
            if worker is not gone:
                worker.heartbeat()
        client.request(b"mmi.services", [])
        frames = client.recv()
        assert frames is not None
        return dict(json.loads(frames[3])["services"][SERVICE.decode()])

    client.request(SERVICE, request_body("e-1"))  # not an info request: its reply teaches nothing
    envelope, body = first.wait_request()
    first.final(envelope, reply_body(body, family="fake"))
    client.final()
    second.heartbeat()
    assert "family" not in listing()
    junk = {
        "family": "sam2",
        "description": "x" * 5000,
        "licence": 7,
        "ops": ["segment", 5, "auto"],
        "pid": 1,
    }
    # the broker serves its longest-idle worker first: w-2, then w-1
    for n, (worker, result) in enumerate([(second, {"family": "sam2", "ops": ["propagate"]}), (first, junk)]):
        client.request(SERVICE, request_body(f"i-{n}", op="info"))
        envelope, body = worker.wait_request()
        worker.final(envelope, reply_body(body, **result))
        client.final()
        (second if worker is first else first).heartbeat()
    described = listing()
    assert described.get("family") == "sam2" and described["described"] == 2, (
        described,
        broker.log()[-3000:],
    )
    assert described["ops"] == ["auto", "propagate", "segment"]  # the union; the non-string op is dropped
    assert "description" not in described and "licence" not in described and "pid" not in described
    second.send(mdp.worker_message(mdp.W_DISCONNECT))
    gone = second
    assert wait_until(lambda: listing()["workers"] == 1, 5)
    assert listing()["ops"] == ["auto", "segment"]  # the leaver's ops leave with it


def test_worker_may_not_register_an_mmi_service(ctx: zmq.Context[Any], broker: BrokerHandle) -> None:
    worker = RawWorker(ctx, broker.backend, b"mmi.service")
    worker.ready()
    assert worker.next_command(keep_alive=False) == DISCONNECT


def test_large_bodies_pass_unchanged_and_oversized_messages_are_refused(
    spawn: ProcessSpawner, ctx: zmq.Context[Any]
) -> None:
    limit = 4 << 20
    broker = start_broker(spawn, extra_args=["--max-message-bytes", str(limit)])
    worker = ready_worker(ctx, broker)
    client = RawClient(ctx, broker.frontend)
    big = bytes(range(256)) * ((3 << 20) // 256)
    client.request(SERVICE, [b"head", big])
    envelope, body = worker.wait_request()
    assert body == [b"head", big]
    worker.final(envelope, [big])
    assert client.final() == ([], [big])

    oversized = RawClient(ctx, broker.frontend)
    oversized.request(SERVICE, [b"x" * (limit + 1)])
    assert worker.next_command(1.0) is None
    client.request(SERVICE, [b"small"])
    envelope, body = worker.wait_request()
    assert body == [b"small"]
    worker.final(envelope, [b"ok"])
    assert client.final() == ([], [b"ok"])


def test_peers_with_a_leading_empty_frame_are_answered_in_their_framing(
    ctx: zmq.Context[Any], broker: BrokerHandle
) -> None:
    """libmdp and majortomo put MDP/0.1's empty frame first; RFC 18 peers do not.

    Each side gets its own framing back, so both kinds interoperate through one broker.
    """
    legacy_worker = RawWorker(ctx, broker.backend, SERVICE)
    legacy_worker.send([b"", b"MDPW02", b"\x01", SERVICE])
    wait_for_workers(ctx, broker.frontend, SERVICE.decode(), 1)

    rfc_client = RawClient(ctx, broker.frontend, identity=b"rfc-client")
    rfc_client.send([b"MDPC02", b"\x01", SERVICE, b"hello"])
    deadline = time.monotonic() + 10
    frames = None
    while time.monotonic() < deadline:
        frames = legacy_worker.recv(1.0)
        if frames is not None and frames[:3] != [b"", b"MDPW02", b"\x05"]:
            break
    assert frames == [b"", b"MDPW02", b"\x02", b"rfc-client", b"", b"hello"]
    legacy_worker.send([b"", b"MDPW02", b"\x04", b"rfc-client", b"", b"hi"])
    assert rfc_client.recv() == [b"MDPC02", b"\x03", SERVICE, b"hi"]

    legacy_client = RawClient(ctx, broker.frontend)
    legacy_client.send([b"", b"MDPC02", b"\x01", b"mmi.service", SERVICE])
    assert legacy_client.recv() == [b"", b"MDPC02", b"\x03", b"mmi.service", b"200"]


def test_embedded_broker_serves_over_inproc_and_leaves_the_callers_context_open() -> None:
    """``Broker(context=...)`` runs inside the caller's process; ``serve_ready`` handles one poll's worth."""
    context: zmq.Context[Any] = zmq.Context()
    try:
        broker = Broker(BrokerConfig(frontend="inproc://front", backend="inproc://back"), context=context)
        broker.bind()
        worker = context.socket(zmq.DEALER)
        worker.connect("inproc://back")
        worker.send_multipart([b"MDPW02", b"\x01", SERVICE])
        broker.serve_ready(1000)
        client = context.socket(zmq.DEALER)
        client.setsockopt(zmq.ROUTING_ID, b"client-E")
        client.connect("inproc://front")
        body = request_body("embedded")
        client.send_multipart([b"MDPC02", b"\x01", SERVICE, *body])
        broker.serve_ready(1000)
        assert worker.poll(1000) and worker.recv_multipart() == [b"MDPW02", b"\x02", b"client-E", b"", *body]
        worker.send_multipart([b"MDPW02", b"\x04", b"client-E", b"", b"done"])
        broker.serve_ready(1000)
        assert client.poll(1000) and client.recv_multipart() == [b"MDPC02", b"\x03", SERVICE, b"done"]
        assert broker.counters.requests == 1 and broker.counters.replies == 1
        broker.serve_ready(0)  # nothing waiting: returns at once, handles nothing
        assert broker.counters.dropped == 0
        worker.close(linger=0)
        client.close(linger=0)
        broker.close()
        assert not context.closed  # the caller's context: still usable, the caller terminates it
        context.socket(zmq.PAIR).close()
    finally:
        context.term()
