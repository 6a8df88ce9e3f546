"""Long store work off the GUI thread while the window keeps drawing (Qt).

:func:`run_keeping_window_alive` is the widget's
:attr:`plugin.jobs.results.Results.off_gui`: the work (writing a pasted
result into a label pyramid: no napari call) runs in a thread, and the
GUI thread meanwhile processes every event except the user's input, which
Qt keeps queued until the work is done. So the window redraws, timers run
and progress moves, and no click can start another edit of the same layer
halfway through.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from qtpy.QtCore import QEventLoop

T = TypeVar("T")
SLICE_MS = 10
"""Longest the GUI thread spends in one round of event processing while it waits."""


def run_keeping_window_alive(work: Callable[[], T]) -> T:
    """``work()`` in a thread; returns its result (or raises its exception) once it is done."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as e:  # handed to the caller, raised on its thread
            outcome["error"] = e

    thread = threading.Thread(target=target, name="sam2-store-write", daemon=True)
    thread.start()
    loop = QEventLoop()
    while thread.is_alive():
        loop.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents, SLICE_MS)
        thread.join(0.002)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
