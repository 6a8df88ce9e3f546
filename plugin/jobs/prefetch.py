"""Prefetch: embed the image under the view while the user looks, so the first click there is quick.

napari glue without Qt widgets. When the view settles (no camera move, zoom
or slice change for ``PREFETCH_DELAY_MS``; the widget supplies the
debouncing ``schedule``), :class:`Prefetcher` works out what a click at the
centre of the view would send (:func:`plugin.jobs.embed_targets.target_at`: the
whole slice, or the window of a large slice, the same function as the click
path, so the keys match) and sends it as ``embed`` on its own channel
(``prefetch``), but only when the broker reports an idle worker for the
model (``mmi.services``), so a prefetch never holds a worker a click wants.

* At most one prefetch is in flight; a newer view for another place
  cancels it (``mmi.cancel``), and so does a click for another place.
* Places already prefetched or clicked are remembered (per session) and
  not sent again; the session's shared known keys make the click send only
  the key.
* Best effort: failures are logged at debug level and show in the Backend
  events panel (the client logs every call), never as a notification.
* Only the window is read from the layer's data (lazy arrays stay lazy),
  and only off the GUI thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.connection.session import Session
from plugin.jobs.context import JobContext
from plugin.jobs.embed_targets import EmbedTarget, prompt_target, target_at
from plugin.view.coords import OutsideImage, SlicePlane, pixel_in_plane
from plugin.view.layers import base_data, plane_of, spatial_shape, view_camera
from protocol.ops import requests as ops
from protocol.wire.client import SamClient
from protocol.wire.image_key import image_key

if TYPE_CHECKING:
    from napari.layers import Image

    from plugin.view.prompts import Prompt

log = logging.getLogger(__name__)

PREFETCH = "prefetch"
"""The session channel prefetches go on."""
PREFETCH_DELAY_MS = 400
"""How long the view must stay still before its image is prefetched."""
PREFETCH_TIMEOUT_S = 120.0
BUSY_RETRIES = 5
"""How often a settled view is tried again while no worker is idle."""

EMBEDDED, KNOWN, BUSY = "embedded", "known", "busy"

Schedule = Callable[[Callable[[], None]], None]
"""``schedule(fn)``: run ``fn`` on the GUI thread once the view has been still for a while (debounced)."""


class Prefetcher:
    """Embeds the image under the view when the view settles.

    Args:
        host: the jobs' shared state (viewer, session, whether a worker is up, the image).
        schedule: the debouncer (the widget's :class:`plugin._qt.qt_helpers.Coalescer`).
    """

    def __init__(self, host: JobContext, schedule: Schedule) -> None:
        self.host = host
        self.schedule = schedule
        self.enabled = True
        self.sent: list[tuple[Hashable, ...]] = []
        """Places sent as ``embed``, oldest first (the last 64; for the status and tests)."""
        self._done: set[tuple[Hashable, ...]] = set()
        self._session: Session | None = None
        self._in_flight: tuple[tuple[Hashable, ...], threading.Event] | None = None
        self._retries = 0
        viewer = host.viewer
        camera = view_camera(viewer).events
        self._sources = (camera.center, camera.zoom, viewer.dims.events.current_step)
        for emitter in self._sources:
            emitter.connect(self._moved)

    def close(self) -> None:
        """Stop following the view and drop the prefetch in flight."""
        for emitter in self._sources:
            emitter.disconnect(self._moved)
        self.cancel()

    def set_enabled(self, enabled: bool) -> None:
        """Turn prefetching on (the current view is prefetched soon) or off (the one in flight is dropped)."""
        self.enabled = bool(enabled)
        if self.enabled:
            self._moved()
        else:
            self.cancel()

    def cancel(self) -> None:
        """Abandon the prefetch in flight, if any (``mmi.cancel``)."""
        if self._in_flight is not None:
            self._in_flight[1].set()
            self._in_flight = None

    @property
    def busy(self) -> bool:
        """Whether a prefetch is in flight."""
        return self._in_flight is not None

    def poke(self) -> None:
        """The view may show something new (another image, a backend just connected): check it soon."""
        self._moved()

    def _moved(self, _event: Any = None) -> None:
        if self.enabled:
            self._retries = 0
            self.schedule(self.settled)

    def _place(self, image: Image, target: EmbedTarget) -> tuple[Hashable, ...]:
        return (image.unique_id, tuple(float(v) for v in image.contrast_limits), *target.place)

    def _remembered(self) -> set[tuple[Hashable, ...]]:
        session = self.host.session
        if session is not self._session:  # a new session may have new workers: nothing is known
            self._session, self._done = session, set()
        return self._done

    def clicked(self, image: Image, plane: SlicePlane, prompt: Prompt) -> None:
        """A prompt is about to be sent: remember its place, and drop a prefetch for another place.

        The click's channel is another socket; a prefetch for the same place goes on (the click
        would only do its work again).
        """
        try:
            place = self._place(image, prompt_target(plane, prompt.points, prompt.box))
        except ValueError:
            return
        self._remembered().add(place)
        if self._in_flight is not None and self._in_flight[0] != place:
            self.cancel()

    def view_target(self, image: Image) -> EmbedTarget | None:
        """What a click at the centre of the view would send (None: no 2D view of the image)."""
        viewer = self.host.viewer
        try:
            plane = plane_of(viewer, image, spatial_shape(image))
        except (ValueError, OutsideImage):
            return None
        world = np.asarray(viewer.dims.point, dtype=float)
        displayed = list(viewer.dims.displayed)
        centre = np.asarray(view_camera(viewer).center, dtype=float)[-len(displayed) :]
        world[displayed] = centre
        data = np.asarray(image.world_to_data(world), dtype=float)
        if not np.isfinite(data).all():
            return None
        return target_at(plane, pixel_in_plane(data.tolist(), plane))

    def settled(self) -> None:
        """The view is still (GUI thread): send ``embed`` for what a click at its centre would send."""
        host = self.host
        session, image = host.session, host.image
        if not self.enabled or session is None or host.unavailable is not None or image is None:
            return
        target = self.view_target(image)
        if target is None:
            return
        place = self._place(image, target)
        if self._in_flight is not None:
            if self._in_flight[0] == place:
                return  # already on its way
            self.cancel()  # the view moved on: a prefetch for another place is dropped
        if place in self._remembered():
            return
        cancel = threading.Event()
        self._in_flight = (place, cancel)
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)

        def job(client: SamClient) -> str:
            if cancel.is_set():
                return BUSY
            idle = int(client.services().get(client.service, {}).get("idle", 0))
            if idle < 1:
                return BUSY
            wire = target.wire(data, rgb, limits)
            if image_key(wire.pixels, wire.contrast_limits, client.service) in client.known_keys:
                return KNOWN
            ops.embed(client, wire, timeout_s=PREFETCH_TIMEOUT_S, cancel=cancel)
            return EMBEDDED

        def done(outcome: str) -> None:
            if self._in_flight is not None and self._in_flight[1] is cancel:
                self._in_flight = None
            if outcome == BUSY:
                if self._retries < BUSY_RETRIES and not cancel.is_set():
                    self._retries += 1
                    self.schedule(self.settled)
                return
            if outcome == EMBEDDED:
                self.sent = [*self.sent[-63:], place]
            self._remembered().add(place)

        def failed(error: Exception) -> None:
            if self._in_flight is not None and self._in_flight[1] is cancel:
                self._in_flight = None
            log.debug("prefetch of %s failed: %s", place, error)

        session.submit(PREFETCH, job, done, failed)
