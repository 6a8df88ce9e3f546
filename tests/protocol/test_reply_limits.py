"""Replies too large to decode: a clear error at once, never a silent re-run;
and the worker's ``auto`` answer keeps its header small whatever the number of objects.

The client side runs against a real broker process and a scripted real
worker (tests/support/scripted_worker.py); the worker side packs a real ``auto``
answer with the worker's own function and encodes it with the wire codec.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from protocol.wire import codec, mdp
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import BadReply, RemoteError
from tests.support.processes import PYTHON, free_endpoint, log_text, wait_until
from tests.support.scripted_worker import ScriptedWorker, reply

SERVICE = "scripted"


@pytest.fixture
def broker(spawn):
    frontend, backend = free_endpoint(), free_endpoint()
    args = ["--frontend", frontend, "--backend", backend, "--heartbeat-interval-s", "0.1"]
    proc = spawn([PYTHON, "-m", "broker", *args, "--log-level", "DEBUG"], "broker")
    assert wait_until(lambda: "broker ready" in log_text(proc), 30), log_text(proc)
    return frontend, backend


def test_an_oversized_reply_is_one_clear_error_and_the_request_runs_once(broker) -> None:
    frontend, backend = broker

    def handler(request, n):  # an auto answer listing 20,000 areas in its header (> 64 KiB)
        if request.op != "auto":
            return [(mdp.W_FINAL, reply(request, ok=True))]
        return [(mdp.W_FINAL, reply(request, num_objects=20_000, areas=[123_456] * 20_000))]

    config = ClientConfig(timeout_s=3.0, retries=2)
    with (
        ScriptedWorker(backend, SERVICE, handler) as worker,
        SamClient(frontend, SERVICE, config=config) as client,
    ):
        started = time.monotonic()
        with pytest.raises(BadReply) as caught:
            client.call("auto", {"points_per_side": 4})
        elapsed = time.monotonic() - started
        assert elapsed < 2.0  # at once, not after a timeout
        assert len(worker.requests) == 1  # the expensive work was not re-run
        error = caught.value
        assert isinstance(error, RemoteError) and error.code == "bad_reply"
        assert "header is" in error.message and "limit is 65536" in error.message
        assert error.request_id == worker.requests[0].request_id
        # the client still works afterwards
        assert client.call("echo").header["result"] == {"ok": True}


def test_an_undecodable_reply_for_another_request_is_dropped(broker) -> None:
    frontend, backend = broker

    def handler(request, n):
        stale = codec.encode(
            {"status": "ok", "op": "auto", "request_id": "someone-else", "result": {"x": "y" * 70_000}}
        )
        return [(mdp.W_PARTIAL, stale), (mdp.W_FINAL, reply(request, ok=True))]

    config = ClientConfig(timeout_s=3.0, retries=0)
    with ScriptedWorker(backend, SERVICE, handler), SamClient(frontend, SERVICE, config=config) as client:
        assert client.call("echo").header["result"] == {"ok": True}


def test_auto_answer_header_stays_small_with_many_objects() -> None:
    from workers.ops import auto_reply

    n = 20_000
    labels = np.arange(n, dtype=np.uint32).reshape(100, 200) + 1
    areas = [1] * n
    answer = auto_reply(labels, areas, image_key="k1")
    header = codec.reply_header({"op": "auto", "request_id": "r1"}, answer.status, result=answer.result)
    frames = codec.encode(header, answer.arrays)
    assert len(frames[0]) < 1024 < codec.DEFAULT_LIMITS.max_header_bytes
    decoded = codec.decode(frames)  # what the client reads, with its default limits
    assert decoded.header["result"]["num_objects"] == n
    assert decoded.arrays["areas"].dtype == np.uint32 and decoded.arrays["areas"].tolist() == areas
    np.testing.assert_array_equal(decoded.arrays["labels"], labels)
