"""Long store work off the GUI thread while the window keeps drawing (Qt).

:func:`run_keeping_window_alive` is the widget's
:attr:`plugin.jobs.results.Results.off_gui`: the work (writing a pasted
result into a label pyramid: no napari call) runs in a thread, and the
GUI thread meanwhile processes every event except the user's input, which
Qt keeps queued until the work is done. So the window redraws, timers run
and progress moves, and no click can start another edit of the same layer
halfway through.

Answers are not user input: a worker's answer handed to the GUI thread
(:class:`plugin._qt.qt_helpers.GuiDispatcher`) while a store is written would
be written and recorded in the middle of that write's step (an undo's step
still on the undo stack, a paste's atoms not yet recorded). So while a write
runs here, dispatched calls are held (:func:`hold`) and handed back to their
dispatcher, in the order they came, once the outermost write is done: they run
on the next turns, after the caller has recorded its step. Progress steps
(:class:`plugin.jobs.context.DuringStoreWrites`) are not held. Reads (a count,
an export's snapshot) pass ``holds_writes=False``: edits go on meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from qtpy.QtCore import QEventLoop

T = TypeVar("T")
SLICE_MS = 10
"""Longest the GUI thread spends in one round of event processing while it waits."""

_writes = 0
"""Store writes in flight here (nested: an event processed during one may start another)."""
_held: list[tuple[Callable[[Callable[[], None]], None], Callable[[], None]]] = []
"""(dispatcher, call) held while a store write runs, in arrival order (GUI thread only)."""


def writing() -> bool:
    """Whether a store write runs in a thread now (GUI thread)."""
    return _writes > 0


def hold(dispatch: Callable[[Callable[[], None]], None], fn: Callable[[], None]) -> None:
    """Keep ``fn`` until the store writes in flight are done, then hand it back to ``dispatch``."""
    _held.append((dispatch, fn))


def run_keeping_window_alive(work: Callable[[], T], holds_writes: bool = True) -> T:
    """``work()`` in a thread; returns its result (or raises its exception) once it is done.

    Args:
        holds_writes: ``work`` writes a label store: dispatched calls that may write labels
            wait until it is done (see the module's docstring); False for reads.
    """
    global _writes
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as e:  # handed to the caller, raised on its thread
            outcome["error"] = e

    thread = threading.Thread(target=target, name="sam2-store-write", daemon=True)
    _writes += holds_writes
    try:
        thread.start()
        loop = QEventLoop()
        while thread.is_alive():
            loop.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents, SLICE_MS)
            thread.join(0.002)
    finally:
        _writes -= holds_writes
        if not _writes:
            _release()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _release() -> None:
    """Hand the held calls back to their dispatchers, in order (queued: they run on later turns)."""
    while _held:
        dispatch, fn = _held.pop(0)
        dispatch(fn)


def read_keeping_window_alive(work: Callable[[], T]) -> T:
    """:func:`run_keeping_window_alive` for work that only reads (a count, an export): nothing is held."""
    return run_keeping_window_alive(work, holds_writes=False)
