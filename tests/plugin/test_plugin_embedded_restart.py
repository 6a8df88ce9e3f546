"""The plugin brings its own embedded backend back: a real napari viewer, the real embedded
broker and random-weight SAM2 worker the plugin starts (``SAM2_RANDOM_WEIGHTS=1``).

A SIGKILLed embedded worker is restarted by the plugin, which says so; a
click while no worker is up is refused at once with that message (not after
a timeout); once the worker is back a click segments. Switching the plugin to
another broker stops the embedded one.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager
from skimage import data as skdata

from plugin._qt.widget import SamWidget
from plugin.jobs.controller import POINTS
from plugin.view.layers import POINTS_MASK, PROMPT_POINTS
from tests.support.marks import GUI_TEST_MARKS
from tests.support.processes import free_endpoint, wait_until

pytestmark = [*GUI_TEST_MARKS, pytest.mark.timeout(900)]

START_TIMEOUT_MS = 300_000


def warnings_since(seen: int, text: str) -> list[str]:
    return [
        n.message
        for n in notification_manager.records[seen:]
        if n.severity == NotificationSeverity.WARNING and text in n.message
    ]


def test_a_killed_embedded_worker_is_restarted_and_clicks_meanwhile_are_refused_at_once(
    make_napari_viewer, qtbot, monkeypatch
) -> None:
    monkeypatch.setenv("SAM2_BROKER_ADDRESS", free_endpoint())  # nothing answers: the plugin starts one
    monkeypatch.setenv("SAM2_RANDOM_WEIGHTS", "1")
    monkeypatch.delenv("SAM2_EMBEDDED", raising=False)
    viewer = make_napari_viewer()
    viewer.add_image(np.ascontiguousarray(skdata.cell()[200:328, 150:278]))
    widget = SamWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM2 Segmentation")
    qtbot.waitUntil(lambda: widget.controller.session is not None, timeout=START_TIMEOUT_MS)
    local = widget.local
    assert local is not None and widget.status.embedded
    broker, worker = local.procs["broker"], local.procs["worker"]
    procs = [broker, worker]
    try:
        os.kill(worker.pid, signal.SIGKILL)
        qtbot.waitUntil(lambda: widget.controller.unavailable is not None, timeout=5_000)
        assert not widget.points_button.isEnabled()
        assert "embedded worker" in widget.status_label.text()

        # a click now: refused at once, saying why and what happens
        widget.start_points()
        seen = len(notification_manager.records)
        clicked = time.monotonic()
        viewer.layers[PROMPT_POINTS].add([40, 40])
        qtbot.waitUntil(lambda: bool(warnings_since(seen, "No SAM2 worker is running")), timeout=2_000)
        assert time.monotonic() - clicked < 2.0
        (message,) = warnings_since(seen, "No SAM2 worker is running")
        assert "embedded worker" in message and "attempt 1/5" in message
        assert POINTS not in widget.controller.applied and POINTS_MASK not in viewer.layers

        # the plugin restarts the worker by itself and says so; the broker was never touched
        qtbot.waitUntil(lambda: widget.points_button.isEnabled(), timeout=START_TIMEOUT_MS)
        assert local.procs["worker"].pid != worker.pid and local.procs["worker"].poll() is None
        assert local.procs["broker"] is broker and broker.poll() is None
        procs.append(local.procs["worker"])
        assert widget.controller.unavailable is None
        assert "Connected to embedded local backend: 1 worker(s)" in widget.status_label.text()
        assert any("worker is back" in n.message for n in notification_manager.records[seen:])

        # and a click segments again
        widget.new_button.click()
        viewer.layers[PROMPT_POINTS].add([60, 60])
        qtbot.waitUntil(lambda: POINTS in widget.controller.applied, timeout=120_000)
        assert POINTS_MASK in viewer.layers

        # choosing another broker stops the embedded backend (no new one: SAM2_EMBEDDED=0)
        monkeypatch.setenv("SAM2_EMBEDDED", "0")
        widget.address.setText(free_endpoint())
        widget.connect_button.click()
        assert wait_until(lambda: all(p.poll() is not None for p in procs), 30)
        qtbot.waitUntil(lambda: "Not connected" in widget.status_label.text(), timeout=30_000)
        assert widget.local is None
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
