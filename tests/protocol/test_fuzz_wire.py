"""Fuzzing over real sockets: random and mutated multipart messages to the
broker's frontend and backend and to a real SAM2 worker. Both stay up, keep
serving valid requests, and never unpickle anything.

Bounded: a few hundred hypothesis examples per target. The long run
(100,000 messages, RSS before/after) is ``scripts/soak_fuzz.py --messages 100000``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench import fuzzing
from bench.fuzzing import FakeBroker
from protocol.runtime.processes import free_endpoint, log_text, rss_bytes, wait_until
from protocol.wire import codec, mdp
from tests.support.broker_peers import (
    BrokerHandle,
    RawClient,
    RawPeer,
    ThreadedWorker,
    echo_handler,
    request_body,
    start_broker,
    wait_for_workers,
    zmq_context,
)
from tests.support.processes import MODEL, PYTHON, ProcessSpawner

# No shrinking: each example goes through real processes, and a failure's
# seed and frames are in the assertion message already.
FUZZ_SETTINGS = settings(
    max_examples=1500,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
frames_strategy = st.lists(st.binary(max_size=96), max_size=7)


@pytest.fixture(scope="module")
def ctx() -> Iterator[zmq.Context[Any]]:
    with zmq_context() as context:
        yield context


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Created only if a fuzzed pickle is ever unpickled."""
    return tmp_path_factory.mktemp("pickle") / "unpickled"


@pytest.fixture(scope="module")
def module_spawn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessSpawner]:
    spawner = ProcessSpawner(tmp_path_factory.mktemp("fuzz-logs"))
    yield spawner
    spawner.stop_all()


@dataclass
class BrokerTarget:
    broker: BrokerHandle
    check_worker: ThreadedWorker
    client_fuzzer: RawPeer
    worker_fuzzer: RawPeer
    baseline_rss: int
    sent: int = 0

    def healthy(self, ctx: zmq.Context[Any], request_id: str) -> bool:
        client = RawClient(ctx, self.broker.frontend)
        try:
            client.request(fuzzing.CHECK_SERVICE, request_body(request_id))
            _, final = client.final(10.0)
            return codec.decode(final).request_id == request_id
        finally:
            client.close()


@pytest.fixture(scope="module")
def broker_target(module_spawn: ProcessSpawner, ctx: zmq.Context[Any]) -> Iterator[BrokerTarget]:
    broker = start_broker(module_spawn, service_wait_s=0.5, extra_args=["--log-level", "INFO"])
    check = ThreadedWorker(ctx, broker.backend, fuzzing.CHECK_SERVICE, echo_handler("check"))
    wait_for_workers(ctx, broker.frontend, fuzzing.CHECK_SERVICE.decode(), 1)
    target = BrokerTarget(
        broker,
        check,
        RawPeer(ctx, broker.frontend),
        RawPeer(ctx, broker.backend),
        rss_bytes(broker.proc.pid),
    )
    yield target
    check.stop()
    target.client_fuzzer.close()
    target.worker_fuzzer.close()


def _drain(peer: RawPeer) -> None:
    while peer.socket.poll(0):
        peer.socket.recv_multipart()


def _fuzz_and_check(
    target: BrokerTarget, ctx: zmq.Context[Any], fuzzer: RawPeer, messages: list[list[bytes]], seed: int
) -> None:
    """Send each non-empty message through ``fuzzer``, drain its replies, then assert the broker
    process lives (and, for every 50th seed, still routes a real request)."""
    for frames in messages:
        if frames:
            fuzzer.send(frames)
            target.sent += 1
    _drain(fuzzer)
    assert target.broker.proc.poll() is None
    if seed % 50 == 0:
        assert target.healthy(ctx, f"mid-{seed}")


@pytest.mark.parametrize("side", ["frontend", "backend"])
@FUZZ_SETTINGS
@given(seed=st.integers(0, 2**32 - 1), noise=frames_strategy)
def test_fuzzed_broker_stays_up(
    broker_target: BrokerTarget,
    ctx: zmq.Context[Any],
    marker: Path,
    side: str,
    seed: int,
    noise: list[bytes],
) -> None:
    """Hostile messages on the broker's client frontend, or its worker backend."""
    if side == "frontend":
        message, fuzzer = (
            fuzzing.client_message(random.Random(seed), str(marker)),
            broker_target.client_fuzzer,
        )
    else:
        message, fuzzer = (
            fuzzing.worker_message(random.Random(seed), str(marker)),
            broker_target.worker_fuzzer,
        )
    _fuzz_and_check(broker_target, ctx, fuzzer, [message, noise], seed)


def test_broker_after_fuzzing_serves_and_did_not_bloat(
    broker_target: BrokerTarget, ctx: zmq.Context[Any], marker: Path
) -> None:
    assert broker_target.sent > 400
    assert broker_target.healthy(ctx, "after-fuzz")
    grown = rss_bytes(broker_target.broker.proc.pid) - broker_target.baseline_rss
    assert grown < 48 << 20, grown >> 20
    log = broker_target.broker.log()
    assert "dropped message from client" in log and "dropped message from worker" in log
    assert "Traceback" not in log  # every bad message was handled by a rule, not by the last resort
    assert not marker.exists()


# ---------------------------------------------------------------------------- a worker


@pytest.fixture(scope="module")
def fake_broker(
    module_spawn: ProcessSpawner, ctx: zmq.Context[Any], random_checkpoint: Path
) -> Iterator[tuple[FakeBroker, Any]]:
    endpoint = free_endpoint()
    fake = FakeBroker.bind(ctx, endpoint)
    proc = module_spawn(
        [
            PYTHON, "-m", "workers", "--connect", endpoint, "--model", MODEL,
            "--checkpoint", str(random_checkpoint), "--device", "cpu", "--threads", "1",
            "--log-level", "WARNING",
        ],
        "fuzzed-worker",
    )  # fmt: skip
    registered = lambda: (fake.pump(0.05), fake.worker is not None or proc.poll() is not None)[1]  # noqa: E731
    assert wait_until(registered, 120) and proc.poll() is None, log_text(proc)
    yield fake, proc
    fake.socket.close(linger=0)


@settings(FUZZ_SETTINGS, max_examples=800)
@given(seed=st.integers(0, 2**32 - 1), noise=frames_strategy)
def test_fuzzed_worker_answers_each_request_exactly_once_and_stays_up(
    fake_broker: tuple[FakeBroker, Any], marker: Path, seed: int, noise: list[bytes]
) -> None:
    fake, proc = fake_broker
    fake.pump(0)
    assert fake.worker is not None
    rng = random.Random(seed)
    fake.examples += 1
    client = b"c-%d-%d" % (fake.examples, seed)  # hypothesis may repeat a seed: one envelope per example
    frames = fuzzing.to_worker_message(rng, client, str(marker))
    fake.socket.send_multipart([fake.worker, *noise])
    fake.socket.send_multipart([fake.worker, *frames])
    valid_request = (
        len(frames) >= 4
        and frames[:2] == [mdp.WORKER_HEADER, mdp.W_REQUEST]
        and frames[2]
        and frames[3] == b""
    )
    if valid_request:
        fake.sent_requests += 1
        finals = fake.final_for(client, 10.0)
        assert len(finals) == 1, (frames, finals)
        reply = codec.decode(finals[0])
        assert reply.status in {codec.STATUS_OK, codec.STATUS_ERROR, codec.STATUS_NEED_IMAGE}
    assert proc.poll() is None


def test_worker_after_fuzzing_serves_and_sent_no_extra_replies(
    fake_broker: tuple[FakeBroker, Any], marker: Path
) -> None:
    fake, proc = fake_broker
    assert fake.sent_requests > 200
    fake.pump(0.5)
    assert fake.worker is not None
    fake.socket.send_multipart(
        [fake.worker, mdp.WORKER_HEADER, mdp.W_REQUEST, b"check", b"", *request_body("after-fuzz")]
    )
    finals = fake.final_for(b"check", 10.0)
    assert len(finals) == 1 and codec.decode(finals[0]).request_id == "after-fuzz"
    assert all(len(bodies) == 1 for bodies in fake.finals.values())  # never two FINALs for one request
    assert proc.poll() is None
    assert not marker.exists()
    assert "Traceback" not in log_text(proc)
