"""The prompt layers: ``Prompt Points`` and ``Bounding Box``, made, wired and kept fit for the image.

napari layer models only (no Qt). Owns the layers' wiring: their data events
(a new or moved prompt is handed to ``on_points`` / ``on_box``, never the
plugin's own edits), point polarity (a modifier key or the "negative points"
toggle), the ``n`` key (new object), undo / redo keys that act on the labels
layer written last, the notice when a prompt layer is hidden, and rebuilding
them for an image of another transform or dimensionality.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from plugin.jobs.context import JobContext
from plugin.labels.history import REDO_KEYS, UNDO_KEYS
from plugin.view.layers import (
    BOUNDING_BOX,
    POLARITY,
    POLARITY_NAMES,
    PROMPT_POINTS,
    ensure_box,
    ensure_points,
    find_layer,
    fits_image,
)
from plugin.view.prompts import point_label

if TYPE_CHECKING:
    from napari.layers import Image, Points, Shapes

_Layer = TypeVar("_Layer", "Points", "Shapes")


def _action(event: Any) -> str:
    action = getattr(event, "action", None)
    return str(getattr(action, "value", action))


@dataclass(eq=False)  # identity equality and hashing: its bound methods are napari event callbacks
class PromptLayers:
    """Makes and wires the prompt layers of the current image.

    Args:
        ctx: the jobs' shared state (viewer, image, notifications, where answers were written).
        on_points: ``on_points(layer, newest)``: the points changed (``newest``: one was added).
        on_box: ``on_box(layer, index, fresh)``: box ``index`` was drawn (``fresh``) or changed.
        on_new_object: the user asked for a new object (key ``n``).

    Attributes:
        negative: new points are negative (a modifier key inverts it).
        watched: ``unique_id`` of the prompt layers wired here.
    """

    ctx: JobContext
    on_points: Callable[[Points, bool], None]
    on_box: Callable[[Shapes, int, bool], None]
    on_new_object: Callable[[], None]
    negative: bool = field(default=False, init=False)
    watched: set[Hashable] = field(default_factory=set, init=False)
    _own_edits: int = field(default=0, init=False, repr=False)

    @contextmanager
    def own_edit(self) -> Iterator[None]:
        """The plugin edits prompt layers inside this block; their events are ignored."""
        self._own_edits += 1
        try:
            yield
        finally:
            self._own_edits -= 1

    def points_layer(self) -> Points | None:
        """The ``Prompt Points`` layer, created and wired on demand (None without an image)."""

        def wire(layer: Points) -> None:
            layer.events.data.connect(self._on_points)
            layer.mouse_drag_callbacks.insert(0, self._choose_polarity)
            layer.bind_key("n", lambda _layer: self.on_new_object(), overwrite=True)
            layer.feature_defaults[POLARITY] = POLARITY_NAMES[point_label((), self.negative)]

        return self._prompt_layer(ensure_points, wire)

    def box_layer(self) -> Shapes | None:
        """The ``Bounding Box`` layer, created and wired on demand (None without an image)."""

        def wire(layer: Shapes) -> None:
            layer.events.data.connect(self._on_box)

        return self._prompt_layer(ensure_box, wire)

    def _prompt_layer(
        self, ensure: Callable[[Any, Image], tuple[_Layer, bool]], wire: Callable[[_Layer], None]
    ) -> _Layer | None:
        """The prompt layer ``ensure`` finds or adds for the current image; the first time, ``wire``
        connects its own events, then undo keys and visibility are bound (None without an image)."""
        image = self.ctx.image
        if image is None:
            return None
        layer, _ = ensure(self.ctx.viewer, image)
        if layer.unique_id not in self.watched:
            self.watched.add(layer.unique_id)
            wire(layer)
            self._bind_undo(layer)
            layer.events.visible.connect(self._on_visibility)
        return layer

    def refit(self, image: Image) -> None:
        """Rebuild the prompt layers made for an image of other dimensions or transform, and say so.

        Prompt layers share their image's world transform (so points are drawn
        at its scale and land on its pixels); the user's selection is kept.
        """
        from napari.layers import Points, Shapes

        viewer = self.ctx.viewer
        for name, kind, make in (
            (PROMPT_POINTS, Points, self.points_layer),
            (BOUNDING_BOX, Shapes, self.box_layer),
        ):
            layer = find_layer(viewer, name, kind)
            if layer is None or fits_image(layer, image):
                continue
            active, prompts, ndim = viewer.layers.selection.active, len(layer.data), layer.ndim
            viewer.layers.remove(layer)
            make()
            if active is not None and active is not layer and active in viewer.layers:
                viewer.layers.selection.active = active
            if prompts or ndim != image.ndim:
                why = (
                    f"{image.ndim}D instead of {ndim}D" if ndim != image.ndim else "another scale or position"
                )
                cleared = f"; its {prompts} earlier prompt(s) were cleared" if prompts else ""
                self.ctx.notify("info", f"{name} was rebuilt for {image.name} ({why}){cleared}.")

    def _on_visibility(self, event: Any) -> None:
        """napari ignores clicks on a hidden layer: say so when a prompt layer is hidden."""
        layer = event.source
        if not layer.visible:
            self.ctx.notify(
                "info",
                f"{layer.name} is hidden: clicks add no prompts until it is shown "
                "(the Point prompts / Box prompts buttons show it).",
            )

    def _bind_undo(self, layer: Points | Shapes) -> None:
        """Ctrl+Z / Ctrl+Shift+Z on a prompt layer undo / redo on the labels layer written last."""
        for key in UNDO_KEYS:
            layer.bind_key(key, lambda _layer: self.undo_last(), overwrite=True)
        for key in REDO_KEYS:
            layer.bind_key(key, lambda _layer: self.undo_last(redo=True), overwrite=True)

    def undo_last(self, redo: bool = False) -> bool:
        """Undo (or redo) one step of the labels layer the plugin wrote last."""
        results = self.ctx.results
        layer = results.last_written
        if layer is None or layer not in self.ctx.viewer.layers:
            return False
        history = results.histories(layer)
        return history.redo() if redo else history.undo()

    def _choose_polarity(self, layer: Points, event: Any) -> None:
        label = point_label(getattr(event, "modifiers", ()), self.negative)
        layer.feature_defaults[POLARITY] = POLARITY_NAMES[label]

    def set_negative(self, negative: bool) -> None:
        """The "negative points" toggle: new points are negative (a modifier key inverts it)."""
        self.negative = bool(negative)
        for layer in self.points_layers():
            layer.feature_defaults[POLARITY] = POLARITY_NAMES[point_label((), self.negative)]

    def points_layers(self) -> list[Points]:
        """The prompt points layers wired here that are in the viewer."""
        from napari.layers import Points

        layers = self.ctx.viewer.layers
        return [la for la in layers if isinstance(la, Points) and la.unique_id in self.watched]

    def clear_points(self) -> None:
        """Remove every prompt point (a new object begins)."""
        for layer in self.points_layers():
            if len(layer.data):
                with self.own_edit():
                    layer.data = np.empty((0, layer.ndim))

    def _on_points(self, event: Any) -> None:
        action = _action(event)
        if self._own_edits or action not in ("added", "changed", "removed"):
            return
        self.on_points(event.source, action == "added")

    def _on_box(self, event: Any) -> None:
        action = _action(event)
        if self._own_edits or action not in ("added", "changed"):
            return
        layer = event.source
        indices = [i for i in (getattr(event, "data_indices", None) or ()) if 0 <= int(i) < len(layer.data)]
        if action == "added":
            self.on_box(layer, len(layer.data) - 1, True)
        elif len(indices) == 1:
            self.on_box(layer, int(indices[0]), False)
