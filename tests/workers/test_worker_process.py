"""The real worker process: behind majortomo's MDP/0.2 broker, and against a scripted raw ROUTER "broker".

The scripted broker checks what a conforming broker relies on: READY with
the service name, heartbeats every interval while a request is computed,
requests queued while busy, reconnect with a fresh identity after DISCONNECT
or broker silence, replies of an old connection dropped, DISCONNECT on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from majortomo import Client
from majortomo.broker import Broker

from protocol.wire import codec, mdp
from protocol.wire.image_key import image_key
from tests.support.processes import PYTHON, REPO_ROOT, ProcessSpawner, free_endpoint, log_text, wait_until

pytestmark = pytest.mark.model

MODEL = "sam2.1_hiera_tiny"
STARTUP_TIMEOUT_S = 120.0
REPLY_TIMEOUT_S = 90.0


def worker_args(endpoint: str, checkpoint: Path | None, *extra: str) -> list[str]:
    # majortomo's broker frames commands like the reference libmdp: an empty frame first.
    args = [PYTHON, "-m", "workers", "--connect", endpoint, "--model", MODEL, "--device", "cpu"]
    args += ["--mdp-framing", "delimited"]
    if checkpoint is not None:
        args += ["--checkpoint", str(checkpoint)]
    return args + list(extra)


def body(op: str, request_id: str, params: dict[str, Any] | None = None, **kwargs: Any) -> list[bytes]:
    header: dict[str, Any] = {"op": op, "request_id": request_id, "params": params or {}}
    arrays = kwargs.pop("arrays", None)
    header.update(kwargs)
    return [bytes(frame) for frame in codec.encode(header, arrays)]


# ----------------------------------------------------------------------------
# behind majortomo


@pytest.fixture
def majortomo_endpoint() -> Iterator[str]:
    endpoint = free_endpoint()
    context = zmq.Context()
    broker = Broker(
        bind=endpoint,
        heartbeat_interval=0.5,
        heartbeat_timeout=1.5,
        busy_worker_timeout=120,
        zmq_context=context,
    )

    def serve() -> None:
        try:
            broker.run()
        except zmq.ZMQError:  # majortomo's close() disconnects a bound socket
            pass

    thread = threading.Thread(target=serve, name="majortomo-broker", daemon=True)
    thread.start()
    yield endpoint
    broker.stop()
    thread.join(timeout=5)
    context.destroy(linger=0)


def ask(client: Client, frames: list[bytes], timeout_s: float = REPLY_TIMEOUT_S) -> list[codec.Message]:
    client.send(MODEL.encode(), *frames)
    return [codec.decode(part) for part in client.recv_all(timeout=timeout_s)]


def test_worker_serves_behind_majortomo(
    spawn: ProcessSpawner, majortomo_endpoint: str, random_checkpoint: Path
) -> None:
    proc = spawn(
        worker_args(majortomo_endpoint, random_checkpoint, "--heartbeat-interval-s", "0.3"), "worker"
    )
    client = Client(majortomo_endpoint)
    client.connect()
    try:
        [info] = ask(client, body("info", "i-1"), timeout_s=STARTUP_TIMEOUT_S)
        assert info.status == "ok" and info.request_id == "i-1"
        assert info.header["result"]["model"] == MODEL and info.header["result"]["random_weights"] is False
        assert "worker ready service=sam2.1_hiera_tiny device=cpu" in log_text(proc)

        image = np.random.default_rng(3).integers(0, 256, (48, 64), dtype=np.uint8)
        key = image_key(image, None, MODEL)
        params = {"points": [[20, 30]], "point_labels": [1]}
        [seg] = ask(client, body("segment", "s-1", params, image_key=key, arrays={"image": image}))
        assert seg.status == "ok", seg.header.get("error")
        assert seg.arrays["mask"].dtype == np.bool_ and seg.arrays["mask"].shape == (48, 64)
        [again] = ask(client, body("segment", "s-2", {"box": [0, 0, 48, 64]}, image_key=key))
        assert again.status == "ok" and again.header["image_key"] == key

        [garbage] = ask(client, [b"\xff\x00 not json"])
        assert garbage.status == "error" and garbage.header["error"]["code"] == "bad_request"
        [old] = ask(client, [b'{"v": 99, "op": "info", "request_id": "old-1"}'])
        assert (
            old.status == "error"
            and old.request_id == "old-1"
            and "version" in old.header["error"]["message"]
        )

        # A 2 s request: the broker's heartbeat timeout is 1.5 s; the worker is not lost.
        [slept] = ask(client, body("sleep", "z-1", {"seconds": 2.0}))
        assert slept.status == "ok" and slept.header["result"]["slept_s"] >= 2.0

        # PARTIAL travels through a third-party broker too. (majortomo's Client and Broker agree on
        # client-side command codes that differ from RFC 18's; the worker side is RFC 18.)
        parts = ask(client, body("auto", "a-1", {"points_per_side": 2}, arrays={"image": image}))
        assert [p.status for p in parts][0] == "partial" and parts[-1].status == "ok"
        assert parts[0].header["result"]["total"] == 4
        assert parts[-1].arrays["labels"].shape == (48, 64)

        [info] = ask(client, body("info", "i-2"))
        counters = info.header["result"]["counters"]
        assert counters["encoder_runs"] == 2 and counters["errors"] == 2 and counters["requests"] == 8
    finally:
        client.close()
    assert proc.poll() is None, log_text(proc)


# ----------------------------------------------------------------------------
# command line


def test_missing_checkpoint_exits_2_saying_how_to_get_it(tmp_path: Path) -> None:
    done = subprocess.run(
        worker_args(free_endpoint(), tmp_path / "missing.pt"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "checkpoints/download.sh sam2.1_hiera_tiny" in done.stderr
    assert "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt" in done.stderr
    assert "--random-weights" in done.stderr
    assert "Traceback" not in done.stderr


# ----------------------------------------------------------------------------
# against a scripted broker


class ScriptedBroker:
    """A raw ROUTER playing the broker's side of MDP/0.2, recording the worker's heartbeats."""

    def __init__(self, endpoint: str, heartbeat_interval_s: float) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.linger = 0
        self.socket.bind(endpoint)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeats: list[tuple[float, bytes]] = []
        self.last_sent_s = 0.0

    def close(self) -> None:
        self.socket.close()
        self.context.term()

    def send(self, identity: bytes, frames: list[bytes]) -> None:
        self.socket.send_multipart([identity, *frames])
        self.last_sent_s = time.monotonic()

    def request(self, identity: bytes, client: bytes, frames: list[bytes]) -> None:
        self.send(identity, mdp.worker_message(mdp.W_REQUEST, client=client, body=frames))

    def next(
        self, timeout_s: float, *, heartbeat_to: bytes | None = None, keep_heartbeats: bool = False
    ) -> tuple[bytes, mdp.WorkerMessage]:
        """The next non-heartbeat message; heartbeats are recorded (and returned if ``keep_heartbeats``).

        ``heartbeat_to``: send heartbeats to this identity while waiting (an idle-worker broker).
        """
        deadline = time.monotonic() + timeout_s
        next_heartbeat = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"no message from the worker within {timeout_s}s")
            if heartbeat_to is not None and now >= next_heartbeat:
                self.send(heartbeat_to, mdp.worker_message(mdp.W_HEARTBEAT))
                next_heartbeat = now + self.heartbeat_interval_s
            if not self.socket.poll(timeout=50):
                continue
            identity, *frames = self.socket.recv_multipart()
            message = mdp.parse_worker(frames)
            if message.command == mdp.W_HEARTBEAT:
                self.heartbeats.append((time.monotonic(), identity))
                if not keep_heartbeats:
                    continue
            return identity, message


def _heartbeat_gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_worker_heartbeats_while_busy_queues_and_reconnects(spawn: ProcessSpawner) -> None:
    interval_s = 0.3
    liveness = 4  # the purge threshold the gaps are checked against: 1.2 s
    endpoint = free_endpoint()
    broker = ScriptedBroker(endpoint, interval_s)
    try:
        args = worker_args(endpoint, None, "--random-weights")
        args += ["--heartbeat-interval-s", str(interval_s), "--heartbeat-liveness", str(liveness)]
        proc = spawn(args, "worker")

        # READY with the service name; the loud random-weights warning is in the log.
        worker_a, ready = broker.next(STARTUP_TIMEOUT_S)
        assert ready.command == mdp.W_READY and ready.service == MODEL.encode()
        assert "RANDOM WEIGHTS" in log_text(proc) and "MEANINGLESS" in log_text(proc)
        broker.request(worker_a, b"client-1", body("info", "i-1"))
        _, reply = broker.next(30, heartbeat_to=worker_a)
        assert reply.command == mdp.W_FINAL and reply.client == b"client-1"
        assert codec.decode(reply.body).header["result"]["random_weights"] is True

        # Busy for 2 s, and no heartbeats from the broker meanwhile (majortomo-like): the worker
        # keeps heartbeating at its interval and does not give up on the broker.
        broker.heartbeats.clear()
        broker.request(worker_a, b"client-2", body("sleep", "z-1", {"seconds": 2.0}))
        started = time.monotonic()
        identity, reply = broker.next(30)
        assert identity == worker_a and reply.command == mdp.W_FINAL and reply.client == b"client-2"
        times = [started] + [t for t, who in broker.heartbeats if who == worker_a]
        assert len(times) >= 5 and max(_heartbeat_gaps(times)) < interval_s * liveness, times

        # Busy in the image encoder (real compute, seconds on this CPU): heartbeats continue.
        broker.heartbeats.clear()
        image = np.random.default_rng(5).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        started = time.monotonic()
        broker.request(
            worker_a, b"client-3", body("segment", "s-1", {"box": [0, 0, 40, 40]}, arrays={"image": image})
        )
        identity, reply = broker.next(REPLY_TIMEOUT_S)
        assert identity == worker_a and reply.command == mdp.W_FINAL
        assert codec.decode(reply.body).arrays["mask"].shape == (40, 40)
        times = [started] + [t for t, who in broker.heartbeats if who == worker_a] + [time.monotonic()]
        assert max(_heartbeat_gaps(times)) < interval_s * liveness, _heartbeat_gaps(times)

        # Two requests at once: the second is queued and answered after the first.
        broker.request(worker_a, b"client-4", body("sleep", "z-2", {"seconds": 0.3}))
        broker.request(worker_a, b"client-5", body("echo", "e-1", {"x": 1}))
        replies = [broker.next(30)[1] for _ in range(2)]
        assert [r.client for r in replies] == [b"client-4", b"client-5"]
        assert all(r.command == mdp.W_FINAL for r in replies)

        # DISCONNECT from the broker: READY again from a fresh socket; the reply of the request
        # that was running is dropped (the new connection never sees it).
        broker.request(worker_a, b"client-6", body("sleep", "z-3", {"seconds": 1.0}))
        time.sleep(0.2)
        broker.send(worker_a, mdp.worker_message(mdp.W_DISCONNECT))
        worker_b, ready = broker.next(10)
        assert ready.command == mdp.W_READY and worker_b != worker_a
        with pytest.raises(TimeoutError):
            broker.next(2.0, heartbeat_to=worker_b)

        # Broker silence for interval * liveness: the worker reconnects with a fresh identity.
        worker_c, ready = broker.next(15)
        waited_s = time.monotonic() - broker.last_sent_s
        assert ready.command == mdp.W_READY and worker_c not in (worker_a, worker_b)
        assert interval_s * liveness * 0.9 <= waited_s < 10, waited_s
        assert "reconnecting" in log_text(proc)

        # Still serving, then SIGTERM: DISCONNECT and exit code 0.
        broker.request(
            worker_c, b"client-7", body("echo", "e-2", arrays={"data": np.arange(5, dtype=np.int32)})
        )
        _, reply = broker.next(30, heartbeat_to=worker_c)
        assert np.array_equal(codec.decode(reply.body).arrays["data"], np.arange(5, dtype=np.int32))
        os.killpg(proc.pid, signal.SIGTERM)
        identity, goodbye = broker.next(15, heartbeat_to=worker_c)
        assert identity == worker_c and goodbye.command == mdp.W_DISCONNECT
        assert wait_until(lambda: proc.poll() is not None, 15)
        assert proc.returncode == 0, log_text(proc)
    finally:
        broker.close()
