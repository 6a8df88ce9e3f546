"""After a broker restart each worker registers exactly once (issue 23: the READY flap).

While the broker is down, a worker's READY waits in a fresh socket whose
liveness window (interval x liveness of silence) counts on. A broker that
comes back late in that window got the READY, but its first heartbeat came
after the window's end: the worker gave up on the socket and sent READY again
on a new one, and the broker held a ghost registration until its expiry
(two "worker ready" lines, ``mmi.services`` counting two workers). The worker
now counts silence from the moment the connection is made.

The broker is restarted inside that late part of the window on purpose: the
worker's silence timeout is 2 s, the broker heartbeats every 1.5 s, and the
broker is started 0.6 s after the worker's fresh socket sent READY.
"""

from __future__ import annotations

import time

from tests.support.processes import ProcessSpawner, log_text, wait_until
from tests.support.standin_backend import HEARTBEAT_LIVENESS, SERVICE, StandinBackend

WORKER_INTERVAL_S = 0.5
WORKER_TIMEOUT_S = WORKER_INTERVAL_S * HEARTBEAT_LIVENESS
BROKER_INTERVAL_S = 1.5
"""Below the worker's timeout (2 s), so heartbeats keep it content, but late enough after a restart."""
START_AFTER_READY_S = 0.6


def test_a_broker_back_late_in_a_sockets_window_gets_one_registration(spawn: ProcessSpawner) -> None:
    backend = StandinBackend(
        spawn,
        1,
        worker_args=["--heartbeat-interval-s", str(WORKER_INTERVAL_S)],
        broker_args=["--heartbeat-interval-s", str(BROKER_INTERVAL_S)],
    )
    (worker,) = backend.workers
    ready_lines = log_text(worker).count("worker ready")
    backend.kill_broker()
    # The worker notices the silence, drops its socket and sends READY on a fresh one, which waits.
    assert wait_until(lambda: log_text(worker).count("worker ready") > ready_lines, WORKER_TIMEOUT_S + 10)
    time.sleep(START_AFTER_READY_S)
    broker = backend.start_broker()
    assert wait_until(lambda: "worker ready worker=" in log_text(broker), WORKER_TIMEOUT_S + 2)
    registered = log_text(worker).count("worker ready")
    # Longer than what was left of the worker's window, plus a reconnection: a second READY would be here.
    time.sleep(WORKER_TIMEOUT_S)
    text = log_text(broker)
    assert text.count("worker ready worker=") == 1, text
    assert log_text(worker).count("worker ready") == registered, log_text(worker)[-3000:]
    with backend.client() as client:
        assert client.services()[SERVICE]["workers"] == 1
