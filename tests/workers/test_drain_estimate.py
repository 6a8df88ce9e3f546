"""SIGTERM to a worker holding a request it cannot finish within its drain grace (issue 23, item 11).

The worker knows each op's typical duration (``workers/durations.py``): a
request that cannot end within the grace left goes back to the broker at once
(DISCONNECT), and another worker answers it long before the grace would have
run out; a request that fits is finished by the draining worker. Real broker,
real stand-in worker processes (``--delay-s`` makes one slow); the estimate
logic itself is checked with a fake clock.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import numpy as np

from protocol.wire import codec
from tests.support.fake_clock import FakeClock
from tests.support.processes import ProcessSpawner, log_text, wait_until
from tests.support.standin_backend import StandinBackend
from workers.durations import EMA_WEIGHT, RequestDurations

SLOW_S = 3.5
"""The slow stand-in's time per ``auto`` request (a timer: load does not stretch it)."""
GRACE_S = 2.0
"""The slow worker's drain grace: a request of SLOW_S signalled within 1.5 s of its start cannot fit."""
FAST_GRACE_S = 3.0


def _image() -> np.ndarray:
    image = np.zeros((64, 64), dtype=np.uint8)
    image[20:30, 20:30] = 200
    return image


def _call_in_thread(
    backend: StandinBackend, op: str, image: np.ndarray | None = None, **params: Any
) -> tuple[threading.Thread, dict[str, Any]]:
    """Call ``op`` on a thread; the returned dict gets "reply" (or the exception) and "answered_s"."""
    results: dict[str, Any] = {}

    def call() -> None:
        with backend.client() as client:
            try:
                results["reply"] = client.call(op, params, image=image)
            except Exception as e:  # reported by the assertions
                results["reply"] = e
        results["answered_s"] = time.monotonic()

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, results


def test_a_request_that_cannot_fit_goes_back_at_once_and_one_that_fits_is_finished(
    spawn: ProcessSpawner,
) -> None:
    backend = StandinBackend(spawn, 0)
    slow = backend.start_worker(["--delay-s", str(SLOW_S), "--drain-grace-s", str(GRACE_S)], "slow")
    assert backend.wait_workers(1, 10)
    image = _image()
    # One request on the only worker (the other starts meanwhile): its typical `auto` time becomes SLOW_S.
    thread, results = _call_in_thread(backend, "auto", image)
    assert wait_until(lambda: "op=auto started" in log_text(slow), 10), log_text(slow)
    fast = backend.start_worker(["--drain-grace-s", str(FAST_GRACE_S)], "fast", wait=False)
    thread.join(30)
    assert getattr(results["reply"], "status", None) == codec.STATUS_OK, results
    assert backend.wait_workers(2, 30)

    # The same image goes to the worker that holds it (the broker's image affinity): the slow one.
    thread, results = _call_in_thread(backend, "auto", image)
    assert wait_until(lambda: log_text(slow).count("op=auto started") == 2, 10), log_text(slow)
    os.kill(slow.pid, signal.SIGTERM)
    signalled = time.monotonic()
    thread.join(30)
    reply = results["reply"]
    assert isinstance(reply, codec.Message) and reply.status == codec.STATUS_OK, reply
    answered_after_s = results["answered_s"] - signalled
    assert answered_after_s < GRACE_S, f"answered {answered_after_s:.1f} s after SIGTERM"
    assert wait_until(lambda: slow.poll() is not None, 10), log_text(slow)
    assert slow.returncode == 0
    text = log_text(slow)
    assert "handing it back now; sending DISCONNECT" in text
    assert "op=auto has run" in text and f"typical {SLOW_S:.1f} s" in text, text
    assert text.count("op=auto status=ok") == 1, "the slow worker finished the handed-back request"
    assert "op=auto status=ok" in log_text(fast)
    assert "reason=worker sent DISCONNECT" in log_text(backend.broker)

    # A request that fits (no estimate for `sleep` yet: the worker works on through the grace):
    # finished by the draining worker, which then leaves.
    thread, results = _call_in_thread(backend, "sleep", seconds=1.0)
    assert wait_until(lambda: "op=sleep started" in log_text(fast), 10), log_text(fast)
    os.kill(fast.pid, signal.SIGTERM)
    thread.join(30)
    reply = results["reply"]
    assert isinstance(reply, codec.Message) and reply.status == codec.STATUS_OK, reply
    assert wait_until(lambda: fast.poll() is not None, 10), log_text(fast)
    assert fast.returncode == 0
    text = log_text(fast)
    assert "op=sleep status=ok" in text and "drained: no request held; sending DISCONNECT" in text, text
    assert "handing it back now" not in text


def test_typical_duration_is_an_average_of_successes_and_unknown_means_as_long_again() -> None:
    clock = FakeClock()
    durations = RequestDurations(clock)
    assert durations.running() is None
    durations.started("a", "auto")
    clock.now += 0.5
    running = durations.running()
    assert running is not None and running.typical_s is None
    assert running.remaining_s is None and running.elapsed_s == 0.5  # no estimate: unknown
    clock.now += 3.5
    durations.finished(True)
    assert durations.typical_s("auto") == 4.0
    durations.started("b", "auto")
    clock.now += 0.1
    durations.finished(False)  # an error or need_image answer: not counted
    assert durations.typical_s("auto") == 4.0
    durations.started("c", "auto")
    clock.now += 2.0
    durations.finished(True)
    assert durations.typical_s("auto") == EMA_WEIGHT * 2.0 + (1 - EMA_WEIGHT) * 4.0
    durations.started("d", "auto")
    clock.now += 1.0
    running = durations.running()
    assert running is not None and running.remaining_s == 2.0  # typical 3.0 less 1.0 run
    assert "2.0 s more expected" in running.describe()
    clock.now += 4.0  # running past its typical: unknown again
    running = durations.running()
    assert running is not None and running.remaining_s is None
    assert "past its typical 3.0 s" in running.describe()
    assert durations.typical_s("segment") is None
