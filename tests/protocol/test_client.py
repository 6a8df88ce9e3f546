"""The client against a real broker process and scripted real workers:
retries on a fresh socket, stale replies dropped, PARTIALs streamed, the
"need image" resend, remote errors and timeouts."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from protocol.wire import mdp
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import RemoteError, RequestTimeout, Superseded
from tests.support.processes import PYTHON, free_endpoint, log_text, wait_until
from tests.support.scripted_worker import ScriptedWorker, reply

SERVICE = "scripted"


@pytest.fixture
def broker(spawn):
    frontend, backend = free_endpoint(), free_endpoint()
    args = [
        "--frontend",
        frontend,
        "--backend",
        backend,
        "--heartbeat-interval-s",
        "0.1",
        "--service-wait-s",
        "2",
    ]
    proc = spawn([PYTHON, "-m", "broker", *args, "--log-level", "DEBUG"], "broker")
    assert wait_until(lambda: "broker ready" in log_text(proc), 30), log_text(proc)
    return frontend, backend


def _client(frontend: str, timeout_s: float = 5.0, retries: int = 2) -> SamClient:
    return SamClient(frontend, SERVICE, config=ClientConfig(timeout_s=timeout_s, retries=retries))


def test_partials_arrive_in_order_then_final(broker) -> None:
    frontend, backend = broker

    def handler(request, n):
        partials = [(mdp.W_PARTIAL, reply(request, "partial", step=i)) for i in range(3)]
        return [*partials, (mdp.W_FINAL, reply(request, done=True))]

    seen: list[int] = []
    with ScriptedWorker(backend, SERVICE, handler), _client(frontend) as client:
        result = client.call("echo", on_partial=lambda m: seen.append(m.header["result"]["step"]))
    assert seen == [0, 1, 2]
    assert result.header["result"] == {"done": True}


def test_timeout_retries_on_fresh_socket_and_late_reply_is_not_used(broker) -> None:
    frontend, backend = broker

    def handler(request, n):
        if n == 1:  # answer the first attempt only after the client gave up on it
            return [(mdp.W_FINAL, reply(request, attempt=1), 1.0)]
        return [(mdp.W_FINAL, reply(request, attempt=n))]

    with ScriptedWorker(backend, SERVICE, handler) as worker, _client(frontend, timeout_s=0.5) as client:
        result = client.call("echo")
    assert result.header["result"]["attempt"] >= 2
    ids = {r.request_id for r in worker.requests}
    assert len(worker.requests) >= 2 and len(ids) == 1  # the same request, resent


def test_late_reply_of_a_cancelled_request_is_dropped(broker) -> None:
    """A superseded call's answers arrive while the next call waits: none is taken for its own.

    The broker answers the cancelled call with an error FINAL that reaches
    the client's socket during the next call (the client drops it: another
    request id); the worker, cancelled too late, sends its own PARTIAL and
    FINAL for the first call while it serves the second (the broker drops
    them: they name another request).
    """
    frontend, backend = broker

    def handler(request, n):
        delay_s = 0.6 if n == 1 else 1.0  # the second call is answered after the first's late answer
        return [
            (mdp.W_PARTIAL, reply(request, "partial", call=n), delay_s),
            (mdp.W_FINAL, reply(request, call=n), delay_s),
        ]

    cancel = threading.Event()
    partials: list[int] = []
    with ScriptedWorker(backend, SERVICE, handler) as worker, _client(frontend) as client:
        threading.Timer(0.2, cancel.set).start()
        with pytest.raises(Superseded) as info:
            client.call("echo", cancel=cancel)
        result = client.call("echo", on_partial=lambda m: partials.append(m.header["result"]["call"]))
    assert result.header["result"] == {"call": 2}
    assert partials == [2]
    assert len(worker.requests) == 2  # the second call was not re-run after a wrong answer
    assert info.value.request_id == worker.requests[0].request_id


def test_need_image_resends_with_the_image_once(broker) -> None:
    frontend, backend = broker
    image = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)

    def handler(request, n):
        if n == 2 and "image" not in request.arrays:
            return [(mdp.W_FINAL, reply(request, "need_image"))]
        return [(mdp.W_FINAL, reply(request, had_image="image" in request.arrays))]

    with ScriptedWorker(backend, SERVICE, handler) as worker, _client(frontend) as client:
        first = client.call("segment", image=image, contrast_limits=(0, 4095))
        second = client.call("segment", image=image, contrast_limits=(0, 4095))
    assert first.header["result"]["had_image"] is True
    assert second.header["result"]["had_image"] is True
    # first call sent the image; the second tried without, was told "need image" and resent
    assert ["image" in r.arrays for r in worker.requests] == [True, False, True]
    np.testing.assert_array_equal(worker.requests[2].arrays["image"], image)
    keys = {r.header["image_key"] for r in worker.requests}
    assert len(keys) == 1 and keys.pop().startswith("img-")
    assert worker.requests[0].header["params"]["contrast_limits"] == [0.0, 4095.0]


def test_known_image_is_not_resent(broker) -> None:
    frontend, backend = broker
    image = np.ones((32, 32), np.uint8)
    with ScriptedWorker(backend, SERVICE, lambda r, n: [(mdp.W_FINAL, reply(r))]) as worker:
        with _client(frontend) as client:
            for _ in range(3):
                client.call("segment", {"points": [[1, 1]], "point_labels": [1]}, image=image)
    assert ["image" in r.arrays for r in worker.requests] == [True, False, False]


def test_error_final_raises_remote_error(broker) -> None:
    frontend, backend = broker

    def handler(request, n):
        from protocol.wire import codec

        return [(mdp.W_FINAL, codec.error_body(request.header, "bad_request", "point (900, 3) is outside"))]

    with ScriptedWorker(backend, SERVICE, handler), _client(frontend) as client:
        with pytest.raises(RemoteError, match="outside") as info:
            client.call("segment")
    assert info.value.code == "bad_request"


def test_silent_worker_gives_request_timeout_after_retries(broker) -> None:
    frontend, backend = broker
    with ScriptedWorker(backend, SERVICE, lambda r, n: []) as worker:
        with _client(frontend, timeout_s=0.3, retries=1) as client:
            start = time.monotonic()
            with pytest.raises(RequestTimeout, match="2 attempts") as info:
                client.call("echo")
            assert time.monotonic() - start < 3
    assert len(worker.requests) == 1  # the broker holds the retry while the worker is busy
    assert info.value.request_id == worker.requests[0].request_id


def test_per_call_retries_override_the_config(broker) -> None:
    frontend, backend = broker
    with ScriptedWorker(backend, SERVICE, lambda r, n: []):
        with _client(frontend, timeout_s=0.3, retries=3) as client:
            with pytest.raises(RequestTimeout, match=r"1 attempt$"):  # not 4
                client.call("echo", retries=0)


def test_no_worker_error_from_broker(broker) -> None:
    frontend, _ = broker
    with _client(frontend) as client, pytest.raises(RemoteError) as info:
        client.call("info")
    assert info.value.code == "no_worker" and SERVICE in info.value.message


def test_cancel_raises_superseded(broker) -> None:
    frontend, backend = broker
    cancel = threading.Event()
    with ScriptedWorker(backend, SERVICE, lambda r, n: []), _client(frontend, timeout_s=10) as client:
        threading.Timer(0.3, cancel.set).start()
        with pytest.raises(Superseded) as info:
            client.call("echo", cancel=cancel)
    assert info.value.request_id and info.value.request_id in str(info.value)


def test_services_lists_registered_workers(broker) -> None:
    frontend, backend = broker
    with ScriptedWorker(backend, SERVICE, lambda r, n: []), _client(frontend) as client:
        assert wait_until(lambda: SERVICE in client.services(), 5)
        assert client.services()[SERVICE]["workers"] == 1


def test_services_without_broker_times_out() -> None:
    with SamClient(free_endpoint(), SERVICE) as client, pytest.raises(RequestTimeout, match="no answer"):
        client.services(timeout_s=0.3)


def test_a_request_lost_with_a_restarted_broker_is_sent_again_at_once(spawn) -> None:
    """Broker SIGKILLed while it holds a request, back on the same ports 1 s later: the client sees
    the connection drop and resends at once (logged, counted), long before its 60 s silence timeout."""
    from bench.discs import disc_image, scattered_discs
    from protocol.ops.requests import auto
    from protocol.wire.wire_image import WireImage
    from tests.support.standin_backend import StandinBackend

    backend = StandinBackend(spawn, 1, delay_s=2.0)
    image, _ = disc_image((128, 128), *scattered_discs((128, 128), spacing=40, seed=2))
    client = backend.client()
    outcome: dict[str, object] = {}

    def call() -> None:
        outcome["answer"] = auto(client, WireImage(image, None), {"points_per_side": 8})

    started = time.monotonic()
    caller = threading.Thread(target=call)
    caller.start()
    worker = backend.workers[0]
    assert wait_until(lambda: "op=auto started" in log_text(worker), 10), log_text(worker)
    backend.kill_broker()
    time.sleep(1.0)
    backend.start_broker()
    caller.join(timeout=30)
    assert not caller.is_alive(), "the call still waits for the lost request"
    assert time.monotonic() - started < 20  # outage + worker re-registration + one request, not 60 s
    assert client.resends == 1 and outcome["answer"].num_objects > 0  # type: ignore[attr-defined]
    client.close()
