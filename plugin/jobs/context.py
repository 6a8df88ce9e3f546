"""The state every job reads, held in one place and handed to each job explicitly.

napari layer models only (no Qt). The widget and the :class:`plugin.jobs.controller.Controller`
set it (connection, image, labeling mode, AUTO settings); the prompt jobs
(:mod:`plugin.jobs.segment`), AUTO-SEGMENT (:mod:`plugin.jobs.auto`), the stack jobs
(:mod:`plugin.jobs.stacks`), prefetch and Encode stack read it. None of them calls
back into the controller: what they need is here, or passed to them as an argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plugin.connection.session import Session
from plugin.jobs.auto_settings import AutoSettings
from plugin.jobs.results import Notify, Results
from plugin.jobs.slice_prompts import SlicePrompts
from plugin.labels.ops import LabelMode
from plugin.view.coords import OutsideImage, SlicePlane
from plugin.view.layers import plane_of, spatial_shape

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

Dispatch = Callable[[Callable[[], None]], None]
"""``dispatch(fn)``: run ``fn`` on the GUI thread (later).

While a label store is written in a thread with the window kept drawing
(:func:`plugin._qt.off_thread.run_keeping_window_alive`), a dispatched call waits
until that write and its undo step are done, in the order the calls came: an
answer written meanwhile would land inside another step. Calls that write no
labels and must move during the write (progress) are wrapped in
:class:`DuringStoreWrites`.
"""


class DuringStoreWrites:
    """A dispatched call that writes no labels (a progress step): it runs even while a store is written.

    Args:
        fn: the call.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn

    def __call__(self) -> None:
        self.fn()


def same_layer(a: Any, b: Any) -> bool:
    """Whether two references name one layer (napari may hand plugins proxies of layers)."""
    if a is None or b is None:
        return a is b
    return bool(a.unique_id == b.unique_id)


class JobContext:
    """What the plugin's jobs share: the viewer, the connection, where answers go, the user's choices.

    Args:
        viewer: the napari viewer.
        dispatch: runs a zero-argument function on the GUI thread (later).
        notify: user notifications.

    Attributes:
        viewer: the napari viewer.
        dispatch: runs a function on the GUI thread.
        results: ids, pastes, undo steps and notifications (:class:`plugin.jobs.results.Results`).
        session: the connection to the broker (None: not connected).
        unavailable: why the backend cannot segment now (no worker), else None.
        mode: the labeling mode (``ADD`` or a refine mode); Propagate writes under it too.
        auto_settings: AUTO-SEGMENT's settings (:class:`plugin.jobs.auto_settings.AutoSettings`).
        slice_prompts: the newest Point/Box prompt applied to each label on each slice
            (Propagate sends them as corrections).
    """

    def __init__(self, viewer: napari.Viewer, dispatch: Dispatch, notify: Notify) -> None:
        self.viewer = viewer
        self.dispatch = dispatch
        self.results = Results(notify)
        self.session: Session | None = None
        self.unavailable: str | None = None
        self.mode = LabelMode.ADD
        self.auto_settings = AutoSettings()
        self.slice_prompts = SlicePrompts()
        self._image: Image | None = None

    @property
    def image(self) -> Image | None:
        """The image prompts go to (None: none chosen, or removed from the viewer)."""
        if self._image is not None and self._image not in self.viewer.layers:
            self._image = None
        return self._image

    @image.setter
    def image(self, layer: Image | None) -> None:
        self._image = layer

    def notify(self, level: str, message: str) -> None:
        """A user notification (``info``, ``warning`` or ``error``)."""
        self.results.notify(level, message)

    def not_ready(self) -> str | None:
        """Why nothing can be segmented now (no backend, no worker, no image), or None."""
        if self.session is None:
            return "Not connected to a SAM2 backend: press Connect in the SAM2 panel."
        if self.unavailable is not None:
            return self.unavailable
        if self.image is None:
            return "Choose the image to segment in the SAM2 panel."
        return None

    def ready(self) -> Image | None:
        """The image to segment, or None after telling the user why nothing can be segmented now."""
        reason = self.not_ready()
        if reason is not None:
            self.notify("warning", reason)
            return None
        return self.image

    def shown_slice(self, what: str) -> tuple[Image, SlicePlane] | None:
        """The image to segment and its slice shown now, or None after telling the user why (``what``
        names the job in the message)."""
        image = self.ready()
        if image is None:
            return None
        try:
            return image, plane_of(self.viewer, image, spatial_shape(image))
        except (ValueError, OutsideImage) as e:
            self.notify("warning", f"{what}: {e}")
            return None

    def connected(self) -> Session:
        """The session, for a job that was started after :meth:`ready` (raises if it is gone)."""
        if self.session is None:
            raise RuntimeError("no SAM2 session: call ready() before starting a job")
        return self.session
