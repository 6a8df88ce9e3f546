"""Keep napari's long-lived objects out of Python's full garbage collections (``gc.freeze``).

A full (generation-2) collection walks every container object Python tracks: in
napari with the plugin docked, about 300,000 of them (modules, classes, Qt
wrappers, the viewer's models), 0.2-0.75 s on the thread that happens to
allocate. napari runs one each time a layer is removed (``gc.collect`` in its
canvas), and Python runs them by itself as objects accumulate: on the GUI
thread each is a frozen window (bench/RESULTS.md, issue 22).

:class:`LongLivedObjects` moves what exists once the plugin is ready (after the
warm-up imports) into the permanent generation (:func:`gc.freeze`), which no
collection walks. Reference counting still frees frozen objects; only a
*cycle* of frozen objects that becomes garbage is kept until the objects are
thawed. So whenever a layer that was frozen leaves the viewer (its data may be
large, and napari's layers sit in cycles of callbacks), everything is thawed,
collected once and frozen again, on the next event-loop turn; and everything is
thawed for good when the plugin closes. ``SAM2_GC_FREEZE=0`` turns it off.
"""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import napari

ENV_SWITCH = "SAM2_GC_FREEZE"
"""Environment variable: ``0`` leaves Python's garbage collector as it is."""


def enabled() -> bool:
    """Whether the plugin may freeze long-lived objects (``SAM2_GC_FREEZE``, default on)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


class LongLivedObjects:
    """Freezes the process's objects for ``viewer``'s plugin; thaws them when a frozen layer goes.

    Args:
        viewer: whose layer removals are watched.
        later: runs a callable on a later turn of the GUI thread's event loop (the widget:
            ``QTimer.singleShot(0, ...)``).
    """

    def __init__(self, viewer: napari.Viewer, later: Callable[[Callable[[], None]], None]) -> None:
        self.viewer = viewer
        self.later = later
        self.frozen_layers: weakref.WeakSet[Any] = weakref.WeakSet()
        self.active = False
        self.closed = False
        self.thaws = 0
        """How many times a frozen layer's removal thawed, collected and froze again."""
        self._pending = False
        viewer.layers.events.removed.connect(self._on_removed)

    def freeze(self) -> None:
        """Freeze every object tracked now (O(1): generations are linked lists).

        A no-op when disabled or after :meth:`close`.
        """
        if self.closed or not enabled():
            return
        gc.freeze()
        self.active = True
        self.frozen_layers.update(self.viewer.layers)

    def _on_removed(self, event: Any) -> None:
        if self.active and not self._pending and event.value in self.frozen_layers:
            self._pending = True  # the layer is still referenced by this event: collect afterwards
            self.later(self._collect_and_refreeze)

    def _collect_and_refreeze(self) -> None:
        self._pending = False
        if not self.active:
            return
        gc.unfreeze()
        gc.collect()
        self.thaws += 1
        self.frozen_layers.clear()
        self.freeze()

    def close(self) -> None:
        """Thaw everything for good and stop watching (the plugin is closing)."""
        if self.closed:
            return
        if self.active:
            gc.unfreeze()
        self.active, self.closed = False, True
        self.viewer.layers.events.removed.disconnect(self._on_removed)
