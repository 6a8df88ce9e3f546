"""The dock follows its backend (issue 23, items 13 and 6): a real napari viewer under Xvfb, a real
broker process and deterministic stand-in worker processes.

* Docked while the broker has no worker, the plugin keeps looking and
  connects when one registers (prompts enable within seconds).
* A broker killed and started again on the same ports shows as lost (state,
  since when, what is retried) within its liveness and as back once it
  answers, with one notification and one events-log entry per change; the
  "Reconnect now" button reconnects at once.
"""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
from napari.utils.notifications import NotificationSeverity, notification_manager

from bench.discs import disc_image
from plugin._qt.widget import RECONNECT_NOW, SamWidget
from plugin.connection.link_state import CONNECTED, NO_BROKER
from plugin.jobs.controller import POINTS
from plugin.view.layers import POINTS_MASK
from protocol.wire.client import ClientConfig, SamClient
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import click_point, dock_widget
from tests.support.processes import PYTHON, ProcessSpawner, free_endpoint, log_text, wait_until
from tests.support.standin_backend import SERVICE

pytestmark = GUI_TEST_MARKS

BEAT = ["--heartbeat-interval-s", "0.25", "--heartbeat-liveness", "4"]
LIVENESS_MS = 3_000
"""The default broker's liveness (1 s heartbeats x 3): a loss shows within it plus one more check
(two unanswered checks in a row, 1.5 s each, make a loss: one slow answer does not)."""
LOST_WITHIN_MS = LIVENESS_MS + 1_500


def start_broker(
    spawn: ProcessSpawner, frontend: str, backend: str, name: str = "broker"
) -> subprocess.Popen:
    proc = spawn([PYTHON, "-m", "broker", "--frontend", frontend, "--backend", backend, *BEAT], name)
    assert wait_until(lambda: "broker ready" in log_text(proc), 30), log_text(proc)
    return proc


def start_standin(spawn: ProcessSpawner, backend: str) -> subprocess.Popen:
    proc = spawn(
        [PYTHON, "-m", "workers", "--model", SERVICE, "--connect", backend, *BEAT],
        "standin",
    )
    assert wait_until(lambda: "worker ready" in log_text(proc), 60), log_text(proc)
    return proc


def workers_of(frontend: str) -> int:
    """Live stand-in workers the broker at ``frontend`` counts (0 when it does not answer)."""
    try:
        with SamClient(frontend, config=ClientConfig(timeout_s=1.0, retries=0)) as client:
            return int(client.services(timeout_s=1.0).get(SERVICE, {}).get("workers", 0))
    except Exception:
        return 0


def workers_steady(frontend: str, count: int, hold_s: float = 3.0, timeout_s: float = 30.0) -> bool:
    """Whether the broker counts ``count`` workers for ``hold_s`` on end (a worker that re-registers
    with a restarted broker may flap once: its READY can arrive before its own liveness gives up on
    the old connection)."""
    deadline = time.monotonic() + timeout_s
    since = None
    while time.monotonic() < deadline:
        if workers_of(frontend) == count:
            since = since if since is not None else time.monotonic()
            if time.monotonic() - since >= hold_s:
                return True
        else:
            since = None
        time.sleep(0.2)
    return False


def notes_since(seen: int, text: str, severity: NotificationSeverity) -> list[str]:
    return [
        n.message for n in notification_manager.records[seen:] if n.severity == severity and text in n.message
    ]


def a_disc() -> np.ndarray:
    image, _truth = disc_image((96, 96), np.array([[48.0, 48.0]]), np.array([15.0]))
    return image


def test_docked_before_any_worker_it_connects_when_one_registers(
    make_napari_viewer, qtbot, monkeypatch, spawn
) -> None:
    frontend, backend = free_endpoint(), free_endpoint()
    start_broker(spawn, frontend, backend)  # a broker, no worker yet
    monkeypatch.setenv("SAM2_BROKER_ADDRESS", frontend)
    monkeypatch.setenv("SAM2_MODEL", SERVICE)
    monkeypatch.setenv("SAM2_EMBEDDED", "0")
    viewer = make_napari_viewer()
    viewer.add_image(a_disc())
    seen = len(notification_manager.records)
    widget = SamWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM2 Segmentation")
    qtbot.waitUntil(lambda: "no live workers" in widget.status_label.text(), timeout=10_000)
    assert not widget.points_button.isEnabled() and widget.controller.session is None
    qtbot.waitUntil(lambda: widget.link.state is not None and widget.link.state.attempts >= 3, timeout=10_000)
    text = widget.status_label.text()
    assert "Waiting for the backend since" in text and "retrying: asking the broker" in text
    assert len(notes_since(seen, "no live workers", NotificationSeverity.WARNING)) == 1  # once, not per try

    start_standin(spawn, backend)
    registered = time.monotonic()
    qtbot.waitUntil(lambda: widget.points_button.isEnabled(), timeout=10_000)
    assert time.monotonic() - registered < 5.0
    assert "Connected to" in widget.status_label.text() and widget.link.state.state == CONNECTED
    assert widget.controller.session is not None and widget.box_button.isEnabled()
    click_point(widget, qtbot, [48, 48])  # and a click segments
    assert widget.controller.applied[POINTS].label_ids
    assert viewer.layers[POINTS_MASK].data[48, 48] > 0


def test_a_broker_restart_shows_lost_and_back_once_each_and_reconnect_now_reconnects(
    make_napari_viewer, qtbot, monkeypatch, spawn
) -> None:
    frontend, backend = free_endpoint(), free_endpoint()
    broker = start_broker(spawn, frontend, backend)
    start_standin(spawn, backend)
    viewer = make_napari_viewer()
    viewer.add_image(a_disc())
    widget = dock_widget(viewer, qtbot, monkeypatch, frontend, SERVICE)
    qtbot.waitUntil(lambda: widget.points_button.isEnabled(), timeout=10_000)
    seen, logged = len(notification_manager.records), len(widget.controller.events)

    broker.send_signal(signal.SIGKILL)
    broker.wait(10)
    killed = time.monotonic()
    qtbot.waitUntil(
        lambda: "Backend lost since" in widget.status_label.text(), timeout=LOST_WITHIN_MS + 2_000
    )
    assert time.monotonic() - killed < LOST_WITHIN_MS / 1000.0
    assert not widget.points_button.isEnabled() and widget.link.state.state == NO_BROKER
    assert f"retrying: connecting to the broker at {frontend}" in widget.status_label.text()
    assert widget.connect_button.text() == RECONNECT_NOW
    qtbot.wait(2_500)  # more failed checks: still one notification, one log entry
    assert len(notes_since(seen, "SAM2 backend lost", NotificationSeverity.WARNING)) == 1
    kinds = [e.kind for e in widget.controller.events.recent()[: len(widget.controller.events) - logged]]
    assert kinds.count("disconnect") == 1 and "connect" not in kinds

    broker = start_broker(spawn, frontend, backend, "broker_again")  # same ports; the worker comes back
    qtbot.waitUntil(lambda: widget.points_button.isEnabled(), timeout=15_000)
    assert "Connected to" in widget.status_label.text()
    qtbot.wait(1_500)
    assert len(notes_since(seen, "SAM2 backend is back", NotificationSeverity.INFO)) == 1
    assert len(notes_since(seen, "SAM2 backend lost", NotificationSeverity.WARNING)) == 1
    click_point(widget, qtbot, [48, 48])  # a fresh session: clicks work again
    assert viewer.layers[POINTS_MASK].data[48, 48] > 0

    # "Reconnect now": with the automatic retry far away, the button is what brings it back
    monkeypatch.setattr("plugin._qt.backend_link.RETRY_INTERVAL_MS", 600_000)
    broker.send_signal(signal.SIGKILL)
    broker.wait(10)
    qtbot.waitUntil(
        lambda: "Backend lost since" in widget.status_label.text(), timeout=LOST_WITHIN_MS + 2_000
    )
    start_broker(spawn, frontend, backend, "broker_third")
    assert workers_steady(frontend, 1)
    assert not widget.points_button.isEnabled()  # nothing retries by itself for 10 minutes
    widget.connect_button.click()
    qtbot.waitUntil(lambda: widget.points_button.isEnabled(), timeout=5_000)
    assert "Connected to" in widget.status_label.text()
