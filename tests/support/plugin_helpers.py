"""Small pieces shared by the napari test modules: a real image crop, a worker, a docked widget, a click."""

from __future__ import annotations

import numpy as np
from skimage import data as skdata

from plugin._qt.qt_helpers import Coalescer
from plugin._qt.widget import SamWidget
from plugin.jobs.controller import POINTS, Applied
from plugin.view.layers import PROMPT_POINTS
from tests.support.backend import Backend
from tests.support.processes import MODEL, PYTHON, log_text, wait_until

TIMEOUT_MS = 90_000
HEARTBEAT = ["--heartbeat-interval-s", "0.25", "--heartbeat-liveness", "3"]


def start_worker(backend: Backend, threads: int = 2) -> None:
    """A worker like conftest's, with two torch threads (stack work is encoder-bound)."""
    proc = backend.spawn(
        [PYTHON, "-m", "workers", "--connect", backend.backend, "--model", MODEL,
         "--checkpoint", str(backend.checkpoint), "--device", "cpu", "--threads", str(threads), *HEARTBEAT],
        f"worker{len(backend.workers)}",
    )  # fmt: skip
    backend.workers.append(proc)
    ok = wait_until(lambda: "worker ready" in log_text(proc) or proc.poll() is not None, 180)
    assert ok and proc.poll() is None, log_text(proc)


def cell(size: int = 96, shift: int = 0) -> np.ndarray:
    """A real fluorescence crop (scikit-image's ``cell``), small."""
    return np.ascontiguousarray(skdata.cell()[220 : 220 + size, 170 + shift : 170 + shift + size])


def dock_widget(
    viewer, qtbot, monkeypatch, frontend: str, model: str | None = None, timeout_ms: int = 30_000
) -> SamWidget:
    """Point the plugin at the broker ``frontend`` (``model``: its service; no embedded backend),
    dock a SAM2 widget in ``viewer`` and wait until it is connected."""
    monkeypatch.setenv("SAM2_BROKER_ADDRESS", frontend)
    if model is not None:
        monkeypatch.setenv("SAM2_MODEL", model)
    monkeypatch.setenv("SAM2_EMBEDDED", "0")
    widget = SamWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM2 Segmentation")
    qtbot.waitUntil(lambda: widget.controller.session is not None, timeout=timeout_ms)
    return widget


def click_point(
    widget: SamWidget,
    qtbot,
    position: list[float],
    wait_idle_s: float | None = None,
    settle_ms: int = 20,
    timeout_ms: int = TIMEOUT_MS,
) -> Applied:
    """Add a prompt point (image data coordinates) and wait for its answer; return what it applied.

    ``wait_idle_s``: then also wait up to that long until the session has no request in flight.
    ``settle_ms``: then let Qt process events this long (0: not at all).
    ``timeout_ms``: how long the answer may take.
    """
    previous = widget.controller.applied.get(POINTS)
    widget.start_points()
    widget.viewer.layers[PROMPT_POINTS].add(position)
    qtbot.waitUntil(lambda: widget.controller.applied.get(POINTS) not in (None, previous), timeout=timeout_ms)
    if wait_idle_s is not None:
        widget.controller.session.wait_idle(wait_idle_s)
    if settle_ms:
        qtbot.wait(settle_ms)
    return widget.controller.applied[POINTS]


def wait_for_redraws(qtbot, widget: SamWidget, timeout_ms: int = 5000) -> None:
    """Wait until no coalesced redraw of the dock widget (label table, names, overlays) is pending."""
    qtbot.waitUntil(lambda: not any(c.pending for c in widget.findChildren(Coalescer)), timeout=timeout_ms)
