"""A large box prompt: say what resolution one request would see it at, offer full resolution (issue 23,
item 2).

napari glue without Qt. Before a box larger than the model's input is sent,
:meth:`BoxTiles.intercept` works out how it would be seen
(:func:`protocol.ops.tiled_box.box_view`) and asks :attr:`BoxTiles.choose`
(the dock asks the user; tests answer it): :data:`FULL` segments it tile by
tile at native resolution (:func:`protocol.ops.tiled_box.segment_box_tiled`,
pasted like any windowed answer), :data:`ONE` sends it as one block-averaged
request (and says at which resolution), None sends nothing. A choice can be
kept for the rest of the session (:attr:`BoxTiles.remembered`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from plugin.jobs.context import JobContext
from plugin.jobs.submit import submit
from plugin.view.image_slice import LazyPlane
from plugin.view.layers import base_data
from plugin.view.prompts import Prompt
from protocol.ops.tiled_box import BoxView, box_view, segment_box_tiled
from protocol.ops.windowed import WindowedMask

if TYPE_CHECKING:
    from napari.layers import Image

FULL = "full"
"""Segment the box at native resolution, one request per tile, stitched into one label."""
ONE = "one"
"""Send the box as one request, block-averaged to the model's input."""


class BoxTiles:
    """Decides, before sending, how a large box is segmented; runs the tiled one.

    Args:
        ctx: the jobs' shared state (session, notifications).
        apply: pastes a :class:`~protocol.ops.windowed.WindowedMask` answer for ``(channel, obj, prompt)``
            on the GUI thread (the prompt jobs' windowed paste).
    """

    def __init__(self, ctx: JobContext, apply: Callable[[str, Any, Prompt, WindowedMask], None]) -> None:
        self.ctx, self.apply = ctx, apply
        self.choose: Callable[[BoxView], str | None] = lambda _view: ONE
        """Asked on the GUI thread with how the box would be seen: :data:`FULL`, :data:`ONE` or None."""
        self.remembered: str | None = None
        """A choice kept for the session (the question's "do not ask again")."""

    def intercept(self, channel: str, obj: Any, prompt: Prompt, image: Image) -> bool:
        """Handle a box prompt that one request would see downsampled; False: send it as usual.

        ``obj`` is the controller's active object (``.plane``: the slice).
        """
        session = self.ctx.session
        if prompt.box is None or len(prompt.points) or session is None:
            return False
        try:
            view = box_view(obj.plane.size, prompt.box)
        except ValueError:
            return False
        if not view.downsampled:
            return False
        choice = self.remembered or self.choose(view)
        if choice is None:
            self.ctx.notify("info", "Box not sent.")
            return True
        if choice != FULL:
            self.ctx.notify("info", f"{view.notice()} Sent as one request.")
            return False
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        source, box = LazyPlane(data, obj.plane, rgb), tuple(prompt.box)
        contrast = (float(limits[0]), float(limits[1]))

        def job(_client: Any) -> WindowedMask:
            return segment_box_tiled(session.new_client, source, box, contrast_limits=contrast)

        self.ctx.notify("info", f"Segmenting the box at full resolution in {view.tiles} tiles…")

        def done(answer: WindowedMask) -> None:
            self.apply(channel, obj, prompt, answer)

        submit(self.ctx, channel, job, done)
        return True
