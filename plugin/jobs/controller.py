"""From prompts drawn in napari to labels written back: the plugin's orchestration.

No Qt widgets here (napari layer models and events only); the widget sets
the state (image, mode, refine target, connection) and calls the actions.

Per channel (``points`` -> ``Points_mask``, ``box`` -> ``Box_mask``,
``auto`` -> ``AutoSeg_mask``) at most one request is in flight and only the
newest prompt's answer is used (:class:`plugin.connection.session.Session`). An
*object* is what successive prompts of a channel refine: more points on the
same slice, or dragging the same box. Each answer replaces the object's
previous answer (:func:`plugin.labels.ops.compute_edit`); "New object" (key
``n`` on the points layer), another slice, another mode or target, an undo
or a redo starts the next one. The plugin's own edits of prompt layers never
trigger requests.

Each answer is one undo step of its labels layer (:mod:`plugin.labels.history`:
``Ctrl+Z`` / ``Ctrl+Shift+Z`` on the labels layer, or on the prompt layers
for the layer written last). Whole-stack work (propagation, AUTO-SEGMENT
STACK) is in :mod:`plugin.jobs.stacks`; backend events are kept in
:attr:`Controller.events` for the events panel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.connection.session import Session
from plugin.events_log import EventLog
from plugin.jobs.results import Notify, Results, napari_notify
from plugin.jobs.slice_prompts import SlicePrompts
from plugin.jobs.stacks import AUTO_STACK, StackJobs
from plugin.labels.history import REDO_KEYS, UNDO_KEYS, Histories
from plugin.labels.ops import (
    LabelIdTracker,
    LabelMode,
    SliceEdit,
    compute_edit,
    compute_edit_at,
    drop_small_objects,
)
from plugin.labels.pyramid import label_data
from plugin.view.coords import OutsideImage, SlicePlane, plane_at
from plugin.view.image_slice import LazyPlane, is_large, wire_slice
from plugin.view.layers import (
    AUTO_MASK,
    BOUNDING_BOX,
    BOX_MASK,
    POINTS_MASK,
    POLARITY,
    POLARITY_NAMES,
    PROMPT_POINTS,
    base_data,
    displayed_axes,
    ensure_box,
    ensure_labels,
    ensure_points,
    find_layer,
    fits_image,
    plane_of,
    point_labels,
    size_warning,
    slice_view,
    spatial_shape,
    to_image_data,
    write_edit,
)
from plugin.view.prompts import Prompt, box_prompt, point_label, points_prompt
from plugin.wording import plural, slice_text
from protocol.geometry.compressed import CompressedPlane
from protocol.geometry.grid import DEFAULT_HALO, DEFAULT_TILE_SIZE
from protocol.geometry.windows import MAX_FACTOR, MODEL_INPUT, Window, prompt_extent
from protocol.ops.requests import AutoAnswer, SegmentAnswer, auto, partial_fraction, segment
from protocol.ops.tiled import tiled_auto
from protocol.ops.windowed import WindowedMask, segment_windowed
from protocol.wire.client import SamClient
from protocol.wire.codec import Message
from protocol.wire.errors import Superseded

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels, Points, Shapes

    from plugin.jobs.prefetch import Prefetcher

POINTS, BOX, AUTO = "points", "box", "auto"


@dataclass(frozen=True)
class AutoSettings:
    """Parameters of the ``auto`` op (see protocol/README.md); CPU-friendly defaults."""

    points_per_side: int = 16
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    min_area: int = 0
    """Objects smaller than this (pixels) are dropped here, before writing (no OpenCV needed)."""
    timeout_s: float = 900.0
    tiling: bool = True
    """A slice larger than the model's input is segmented tile by tile over all workers, then stitched."""
    tile_size: int = DEFAULT_TILE_SIZE
    """Tile side in pixels (tiles are seen at native resolution)."""
    tile_halo: int = DEFAULT_HALO
    """Overlap between tiles in pixels; should exceed the largest object's radius."""
    link_stack: bool = True
    """AUTO-SEGMENT STACK: the same object on neighbouring slices keeps one id (linked by overlap)."""

    def params(self) -> dict[str, Any]:
        return {
            "points_per_side": self.points_per_side,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_score_thresh": self.stability_score_thresh,
        }


@dataclass
class ActiveObject:
    """The object a channel's successive prompts refine.

    Attributes:
        layer: where it is written.
        plane: the slice it lives on.
        mode: ``ADD`` (a new id) or a refine mode.
        label_id: its id (None until the first non-empty answer in ``ADD``).
        image_id: ``unique_id`` of the image it was segmented on.
        shape_index: the box it comes from (box channel).
        cumulative: its total change since it began (to replace it).
        logits: (1, 256, 256) logits of its last answer (sent as ``mask_input``).
        window: the window of the slice its last answer was computed on
            (large slices only; logits are sent again only with that window).
    """

    layer: Labels
    plane: SlicePlane
    mode: LabelMode
    label_id: int | None
    image_id: Hashable
    shape_index: int | None = None
    cumulative: SliceEdit | None = None
    logits: np.ndarray | None = field(default=None, repr=False)
    window: Window | None = None


def prompt_inside(window: Window, prompt: Prompt) -> bool:
    """Whether every point and the box of ``prompt`` lie inside ``window`` (slice pixels)."""
    points = np.asarray(prompt.points, dtype=float).reshape(-1, 2)
    r0, c0, r1, c1 = prompt_extent(points if len(points) else None, prompt.box)
    return window.row0 <= r0 and window.col0 <= c0 and r1 <= window.row1 and c1 <= window.col1


@dataclass(frozen=True)
class Applied:
    """What the newest answer of a channel did (status line, tests).

    Attributes:
        channel: ``points``, ``box`` or ``auto``.
        layer_name: the labels layer written.
        label_ids: ids written (empty when the answer was empty).
        plane: the slice written.
        pixels: pixels changed.
        sent: the prompt's wire parameters (``segment``) or ``{}`` (``auto``).
        echo: the prompt as the worker received it (``result["prompt"]``).
        mask_input: whether previous logits were sent.
        answer: the worker's mask (segment, bool (H, W)) or labels (auto, (H, W));
            on a large slice the mask cropped to its bounding box, at ``offset``.
        offset: (row0, col0) of ``answer[0, 0]`` in the slice.
        window: the window of the slice that was sent (large slices), else None.
    """

    channel: str
    layer_name: str
    label_ids: tuple[int, ...]
    plane: SlicePlane
    pixels: int
    sent: dict[str, Any]
    echo: dict[str, Any]
    mask_input: bool = False
    answer: np.ndarray | None = field(default=None, repr=False)
    offset: tuple[int, int] = (0, 0)
    window: Window | None = None


@dataclass(frozen=True)
class StitchedAnswer:
    """AUTO-SEGMENT of a large slice: the stitched tiles, held compressed (never a slice-sized array).

    Attributes:
        stitched: (H, W) labels 0 = none, 1..n, in rectangles (the tiles' cores).
        areas: pixels of object i at ``areas[i - 1]``.
    """

    stitched: CompressedPlane = field(repr=False)
    areas: tuple[int, ...]


def same_layer(a: Any, b: Any) -> bool:
    """Whether two references name one layer (napari may hand plugins proxies of layers)."""
    if a is None or b is None:
        return a is b
    return bool(a.unique_id == b.unique_id)


def _action(event: Any) -> str:
    action = getattr(event, "action", None)
    return str(getattr(action, "value", action))


class Controller:
    """Orchestrates prompts, requests and label writes for one viewer.

    Args:
        viewer: the napari viewer.
        dispatch: runs a zero-argument function on the GUI thread (later).
        notify: user notifications (default: napari's).
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        dispatch: Callable[[Callable[[], None]], None],
        notify: Notify | None = None,
    ) -> None:
        self.viewer = viewer
        self.dispatch = dispatch
        self.results = Results(notify or napari_notify)
        self.session: Session | None = None
        self.unavailable: str | None = None
        """Set by the widget while the backend cannot segment (no worker): prompts are refused at once."""
        self._image: Image | None = None
        self.mode = LabelMode.ADD
        self.refine_layer: Labels | None = None
        self.refine_id = 0
        self.negative = False
        self.auto_settings = AutoSettings()
        self.objects: dict[str, ActiveObject] = {}
        self.applied: dict[str, Applied] = {}
        self.listeners: list[Callable[[Applied], None]] = []
        self._logits: dict[tuple[Hashable, int], tuple[tuple[int, ...], Hashable, np.ndarray]] = {}
        self._own_edits = 0
        self._watched: set[Hashable] = set()
        self._auto_cancel: threading.Event | None = None
        self.auto_running = False
        """Whether a single-slice AUTO-SEGMENT is in flight (AUTO-SEGMENT STACK waits for it)."""
        self.events = EventLog()
        self.prefetch: Prefetcher | None = None
        """Embeds the image under the view ahead of clicks (set by the widget; see jobs.prefetch)."""
        self.histories.before_change.append(self.new_object)
        self.slice_prompts = SlicePrompts()
        """The newest Point/Box prompt applied to each label on each slice (Propagate sends them)."""
        self.stack = StackJobs(self)
        viewer.layers.events.removed.connect(self._on_removed)

    def close(self) -> None:
        """Stop following the viewer's layer list (the widget is closing)."""
        self.viewer.layers.events.removed.disconnect(self._on_removed)

    def _on_removed(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            self.forget(layer)

    def forget(self, layer: Any) -> None:
        """Drop everything held for ``layer``, removed from the viewer, so its memory can go.

        Its undo history, id counter, stored logits, current objects, the
        prompts kept for Propagate, the stack jobs writing it (cancelled) and
        the last answers written to it.
        """
        key = layer.unique_id
        self.results.forget(layer)
        self.slice_prompts.forget_layer(key)
        self._watched.discard(key)
        self._logits = {k: v for k, v in self._logits.items() if k[0] != key}
        self.objects = {c: o for c, o in self.objects.items() if not same_layer(o.layer, layer)}
        self.applied = {c: a for c, a in self.applied.items() if a.layer_name != layer.name}
        if same_layer(self.refine_layer, layer):
            self.refine_layer = None
        if same_layer(self._image, layer):
            self._image = None
            self.objects.clear()
        self.stack.forget(layer)

    # -- shared with the stack jobs (plugin.jobs.results) -----------------------------

    @property
    def notify(self) -> Notify:
        """User notifications: ``notify(level, message)``."""
        return self.results.notify

    @notify.setter
    def notify(self, notify: Notify) -> None:
        self.results.notify = notify

    @property
    def histories(self) -> Histories:
        """The undo history of each labels layer."""
        return self.results.histories

    @property
    def tracker(self) -> LabelIdTracker:
        """The next free label id of each labels layer."""
        return self.results.tracker

    @property
    def last_written(self) -> Labels | None:
        """The labels layer the plugin wrote last."""
        return self.results.last_written

    # -- state set by the widget ------------------------------------------------

    @property
    def image(self) -> Image | None:
        if self._image is not None and self._image not in self.viewer.layers:
            self._image = None
        return self._image

    @image.setter
    def image(self, layer: Image | None) -> None:
        if not same_layer(layer, self._image):
            self._image = layer
            self.objects.clear()
            if layer is not None:
                self._refit_prompt_layers(layer)
                warning = size_warning(layer)
                if warning is not None:
                    self.notify("warning", warning)
                if self.prefetch is not None:
                    self.prefetch.poke()  # the view now shows another image

    def _refit_prompt_layers(self, image: Image) -> None:
        """Rebuild the prompt layers made for an image of other dimensions or transform, and say so.

        Prompt layers share their image's world transform (so points are drawn
        at its scale and land on its pixels); the user's selection is kept.
        """
        from napari.layers import Points, Shapes

        for name, kind, make in (
            (PROMPT_POINTS, Points, self.points_layer),
            (BOUNDING_BOX, Shapes, self.box_layer),
        ):
            layer = find_layer(self.viewer, name, kind)
            if layer is None or fits_image(layer, image):
                continue
            active, prompts, ndim = self.viewer.layers.selection.active, len(layer.data), layer.ndim
            self.viewer.layers.remove(layer)
            make()
            if active is not None and active is not layer and active in self.viewer.layers:
                self.viewer.layers.selection.active = active
            if prompts or ndim != image.ndim:
                why = (
                    f"{image.ndim}D instead of {ndim}D" if ndim != image.ndim else "another scale or position"
                )
                cleared = f"; its {prompts} earlier prompt(s) were cleared" if prompts else ""
                self.notify("info", f"{name} was rebuilt for {image.name} ({why}){cleared}.")

    def set_mode(self, mode: LabelMode, refine_layer: Labels | None = None, refine_id: int = 0) -> None:
        """Change the labeling mode / refine target; the next prompt starts a new object."""

        def target(m: LabelMode, layer: Labels | None, label_id: int) -> tuple[Any, ...]:
            return (m,) if m is LabelMode.ADD else (m, layer, label_id)  # Add ignores the refine target

        changed = target(mode, refine_layer, refine_id) != target(
            self.mode, self.refine_layer, self.refine_id
        )
        self.mode, self.refine_layer, self.refine_id = mode, refine_layer, int(refine_id)
        if changed:
            self.new_object()

    @contextmanager
    def own_edit(self) -> Iterator[None]:
        """The plugin edits prompt layers inside this block; their events are ignored."""
        self._own_edits += 1
        try:
            yield
        finally:
            self._own_edits -= 1

    # -- prompt layers ------------------------------------------------------------

    def points_layer(self) -> Points | None:
        """The ``Prompt Points`` layer, created and wired on demand (None without an image)."""
        if self.image is None:
            return None
        layer, _ = ensure_points(self.viewer, self.image)
        if layer.unique_id not in self._watched:
            self._watched.add(layer.unique_id)
            layer.events.data.connect(self._on_points)
            layer.mouse_drag_callbacks.insert(0, self._choose_polarity)
            layer.bind_key("n", lambda _layer: self.new_object(), overwrite=True)
            self._bind_undo(layer)
            layer.events.visible.connect(self._on_prompt_visibility)
            layer.feature_defaults[POLARITY] = POLARITY_NAMES[point_label((), self.negative)]
        return layer

    def box_layer(self) -> Shapes | None:
        """The ``Bounding Box`` layer, created and wired on demand (None without an image)."""
        if self.image is None:
            return None
        layer, _ = ensure_box(self.viewer, self.image)
        if layer.unique_id not in self._watched:
            self._watched.add(layer.unique_id)
            layer.events.data.connect(self._on_box)
            self._bind_undo(layer)
            layer.events.visible.connect(self._on_prompt_visibility)
        return layer

    def _on_prompt_visibility(self, event: Any) -> None:
        """napari ignores clicks on a hidden layer: say so when a prompt layer is hidden."""
        layer = event.source
        if not layer.visible:
            self.notify(
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
        layer = self.last_written
        if layer is None or layer not in self.viewer.layers:
            return False
        history = self.histories(layer)
        return history.redo() if redo else history.undo()

    def _choose_polarity(self, layer: Points, event: Any) -> None:
        label = point_label(getattr(event, "modifiers", ()), self.negative)
        layer.feature_defaults[POLARITY] = POLARITY_NAMES[label]

    def set_negative(self, negative: bool) -> None:
        """The "negative points" toggle: new points are negative (a modifier key inverts it)."""
        self.negative = bool(negative)
        for layer in self._prompt_points_layers():
            layer.feature_defaults[POLARITY] = POLARITY_NAMES[point_label((), self.negative)]

    def _prompt_points_layers(self) -> list[Points]:
        from napari.layers import Points

        return [la for la in self.viewer.layers if isinstance(la, Points) and la.unique_id in self._watched]

    def new_object(self) -> None:
        """Finish the current objects: the next prompt makes a new one; prompt points are cleared."""
        self.objects.pop(POINTS, None)
        self.objects.pop(BOX, None)
        for layer in self._prompt_points_layers():
            if len(layer.data):
                with self.own_edit():
                    layer.data = np.empty((0, layer.ndim))

    def _on_points(self, event: Any) -> None:
        action = _action(event)
        if self._own_edits or action not in ("added", "changed", "removed"):
            return
        self.segment_points(event.source, newest=action == "added")

    def _on_box(self, event: Any) -> None:
        action = _action(event)
        if self._own_edits or action not in ("added", "changed"):
            return
        layer = event.source
        indices = [i for i in (getattr(event, "data_indices", None) or ()) if 0 <= int(i) < len(layer.data)]
        if action == "added":
            self.segment_box(layer, len(layer.data) - 1, fresh=True)
        elif len(indices) == 1:
            self.segment_box(layer, int(indices[0]), fresh=False)

    # -- segment ------------------------------------------------------------------

    def ready(self) -> Image | None:
        """The image to segment, or None after telling the user why nothing can be segmented now."""
        if self.session is None:
            self.notify("warning", "Not connected to a SAM2 backend: press Connect in the SAM2 panel.")
            return None
        if self.unavailable is not None:
            self.notify("warning", self.unavailable)
            return None
        if self.image is None:
            self.notify("warning", "Choose the image to segment in the SAM2 panel.")
            return None
        return self.image

    def _target(self, result_name: str, image: Image) -> tuple[Labels, int | None] | None:
        if self.mode is LabelMode.ADD:
            return ensure_labels(self.viewer, image, result_name, self.notify), None
        layer = self.refine_layer
        if layer is None or layer not in self.viewer.layers or self.refine_id <= 0:
            self.notify("warning", "Refine: choose the labels layer and the label id to refine first.")
            return None
        if tuple(layer.data.shape) != spatial_shape(image):
            self.notify("warning", f"Refine: {layer.name} does not have the image's shape.")
            return None
        return layer, self.refine_id

    def _object(
        self,
        channel: str,
        target: tuple[Labels, int | None],
        plane: SlicePlane,
        image: Image,
        shape_index: int | None,
        fresh: bool,
    ) -> ActiveObject:
        layer, label_id = target
        obj = self.objects.get(channel)
        if (
            not fresh
            and obj is not None
            and same_layer(obj.layer, layer)
            and obj.plane.key == plane.key
            and obj.mode is self.mode
            and obj.image_id == image.unique_id
            and obj.shape_index == shape_index
            and (label_id is None or obj.label_id == label_id)
        ):
            return obj
        obj = ActiveObject(layer, plane, self.mode, label_id, image.unique_id, shape_index)
        if label_id is not None:
            stored = self._logits.get((layer.unique_id, label_id))
            if stored is not None and stored[0] == plane.key and stored[1] == image.unique_id:
                obj.logits = stored[2]
        self.objects[channel] = obj
        return obj

    def segment_points(self, layer: Points, newest: bool = True) -> None:
        """Send the points of the newest point's slice (or the current object's) as one prompt."""
        image = self.ready()
        if image is None or len(layer.data) == 0:
            self.objects.pop(POINTS, None)
            return
        points = to_image_data(layer, np.asarray(layer.data), image)
        current = self.objects.get(POINTS)
        try:
            if newest or current is None:
                plane = plane_at(points[-1], spatial_shape(image), displayed_axes(self.viewer, image))
            else:
                plane = current.plane
        except (ValueError, OutsideImage) as e:
            self.notify("warning", f"Point ignored: {e}")
            return
        prompt = points_prompt(points, point_labels(layer), plane)
        if prompt.empty:
            self.notify("info", "The point is outside the image.")
            return
        target = self._target(POINTS_MASK, image)
        if target is None:
            return
        obj = self._object(POINTS, target, plane, image, None, fresh=False)
        if current is not None and obj is not current:
            self._keep_points_on(layer, image, plane)
        self._submit_segment(POINTS, obj, prompt, image)

    def _keep_points_on(self, layer: Points, image: Image, plane: SlicePlane) -> None:
        """Drop prompt points of other slices (a new object began on ``plane``)."""
        points = to_image_data(layer, np.asarray(layer.data), image)
        keep = [i for i, p in enumerate(points) if plane_key_of(p, plane) == plane.key]
        if len(keep) < len(points):
            with self.own_edit():
                layer.selected_data = set(range(len(points))) - set(keep)
                layer.remove_selected()

    def segment_box(self, layer: Shapes, index: int, fresh: bool) -> None:
        """Send box ``index`` of a shapes layer (its bounding box on its slice) as a prompt."""
        image = self.ready()
        if image is None:
            return
        corners = to_image_data(layer, np.asarray(layer.data[index]), image)
        try:
            plane = plane_at(corners[0], spatial_shape(image), displayed_axes(self.viewer, image))
            prompt = box_prompt(corners, plane)
        except (ValueError, OutsideImage) as e:
            self.notify("warning", f"Box ignored: {e}")
            return
        target = self._target(BOX_MASK, image)
        if target is None:
            return
        obj = self._object(BOX, target, plane, image, index, fresh=fresh)
        self._submit_segment(BOX, obj, prompt, image)

    def _submit_segment(self, channel: str, obj: ActiveObject, prompt: Prompt, image: Image) -> None:
        assert self.session is not None
        if self.prefetch is not None:
            self.prefetch.clicked(image, obj.plane, prompt)  # a prefetch for another place is dropped
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        if is_large(obj.plane):
            self._submit_windowed(channel, obj, prompt, LazyPlane(data, obj.plane, rgb), limits)
            return
        mask_input = obj.logits

        def job(client: Any) -> SegmentAnswer:
            wire = wire_slice(data, obj.plane, rgb, limits)
            return segment(client, wire, prompt.points, prompt.point_labels, prompt.box, mask_input)

        def done(answer: SegmentAnswer) -> None:
            self._apply_segment(channel, obj, prompt, answer, mask_input is not None)

        self.session.submit(channel, job, done, self.on_error)

    def _submit_windowed(
        self, channel: str, obj: ActiveObject, prompt: Prompt, source: LazyPlane, limits: tuple[float, ...]
    ) -> None:
        """Send a window of a large slice around the prompt (``segment_windowed``).

        Only the window is read from the layer's data. The previous answer's
        logits go along only when the new prompt fits its window (then that
        window is sent again and the worker's cached embedding is reused).
        """
        assert self.session is not None
        window = obj.window if obj.logits is not None and obj.window is not None else None
        if window is not None and not prompt_inside(window, prompt):
            window = None
        mask_input = obj.logits if window is not None else None
        low, high = float(limits[0]), float(limits[1])

        def job(client: Any) -> WindowedMask:
            return segment_windowed(
                client,
                source,
                prompt.points,
                prompt.point_labels,
                prompt.box,
                contrast_limits=(low, high),
                mask_input=mask_input,
                window=window,
            )

        def done(answer: WindowedMask) -> None:
            self._apply_windowed(channel, obj, prompt, answer, mask_input is not None)

        self.session.submit(channel, job, done, self.on_error)

    def _apply_windowed(
        self, channel: str, obj: ActiveObject, prompt: Prompt, answer: WindowedMask, sent_logits: bool
    ) -> None:
        """Paste a bounding-box answer at its offset; only that box (and the previous one) is touched."""
        if obj.layer not in self.viewer.layers:
            return
        labels = LazyPlane(label_data(obj.layer), obj.plane)

        def record(ids: tuple[int, ...], pixels: int) -> None:
            self._record(
                Applied(
                    channel,
                    obj.layer.name,
                    ids,
                    obj.plane,
                    pixels,
                    prompt.params(),
                    {},
                    sent_logits,
                    answer.mask,
                    answer.offset,
                    answer.window,
                )  # fmt: skip
            )

        if obj.label_id is None and answer.empty:
            self.notify("info", "SAM2 found no object at this prompt; try another point or a box.")
            record((), 0)
            return
        if obj.label_id is None:
            r0, c0, r1, c1 = answer.bbox
            obj.label_id = self.results.allocate(obj.layer, labels[r0:r1, c0:c1])
        refining = obj.mode in (LabelMode.INTERSECTION, LabelMode.OVERWRITE)
        edit, obj.cumulative = compute_edit_at(
            labels,
            answer.mask,
            answer.offset,
            obj.label_id,
            obj.mode,
            obj.cumulative,
            self.results.only_background,
            self.results.label_box(obj.layer, obj.plane, obj.label_id) if refining else None,
        )
        write_edit(obj.layer, obj.plane, edit)
        self.results.wrote(obj.layer)
        self.slice_prompts.record(obj.layer.unique_id, obj.label_id, prompt)  # slice pixels, not the window's
        obj.window = answer.window
        if answer.logits is not None:
            obj.logits = answer.logits
        if answer.touches_border:
            self.notify("info", "The object runs past the largest window SAM2 was sent; it may be cut off.")
        record((obj.label_id,), edit.size)

    def _apply_segment(
        self, channel: str, obj: ActiveObject, prompt: Prompt, answer: SegmentAnswer, sent_logits: bool
    ) -> None:
        if obj.layer not in self.viewer.layers:
            return
        labels2d = slice_view(obj.layer, obj.plane)

        def record(ids: tuple[int, ...], pixels: int) -> None:
            sent, echo = prompt.params(), answer.prompt
            self._record(
                Applied(channel, obj.layer.name, ids, obj.plane, pixels, sent, echo, sent_logits, answer.mask)
            )

        if obj.label_id is None and not answer.mask.any():
            self.notify("info", "SAM2 found no object at this prompt; try another point or a box.")
            record((), 0)
            return
        if obj.label_id is None:
            obj.label_id = self.results.allocate(obj.layer, labels2d)
        edit, obj.cumulative = compute_edit(
            labels2d, answer.mask, obj.label_id, obj.mode, obj.cumulative, self.results.only_background
        )
        write_edit(obj.layer, obj.plane, edit)
        self.results.wrote(obj.layer)
        self.slice_prompts.record(obj.layer.unique_id, obj.label_id, prompt)
        if answer.logits is not None:
            obj.logits = answer.logits
            self._logits[(obj.layer.unique_id, obj.label_id)] = (obj.plane.key, obj.image_id, answer.logits)
        record((obj.label_id,), edit.size)

    def _record(self, applied: Applied) -> None:
        self.applied[applied.channel] = applied
        for listener in list(self.listeners):
            listener(applied)

    def on_error(self, error: Exception) -> None:
        """Report a failed request as a notification (superseded requests are silent)."""
        self.results.report_error(error)

    # -- auto -----------------------------------------------------------------------

    def run_auto(
        self, on_progress: Callable[[float | None, str], None], on_done: Callable[[bool], None]
    ) -> bool:
        """AUTO-SEGMENT the current slice into ``AutoSeg_mask``; False if it could not start.

        Refused while AUTO-SEGMENT STACK runs: the stack writes every slice of
        ``AutoSeg_mask``, this one included, and one worker channel serves both.
        """
        if self.stack.running(AUTO_STACK):
            self.notify(
                "warning",
                "AUTO-SEGMENT was not started: AUTO-SEGMENT STACK is running and segments this slice too. "
                "Wait for it, or cancel it first.",
            )
            return False
        image = self.ready()
        if image is None:
            return False
        try:
            plane = plane_of(self.viewer, image, spatial_shape(image))
        except (ValueError, OutsideImage) as e:
            self.notify("warning", f"AUTO-SEGMENT: {e}")
            return False
        layer = ensure_labels(self.viewer, image, AUTO_MASK, self.notify)
        assert self.session is not None
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        settings, cancel = self.auto_settings, threading.Event()
        self._auto_cancel = cancel

        def progress(message: Message) -> None:
            stage = str((message.header.get("result") or {}).get("stage", "working"))
            fraction = partial_fraction(message)
            self.dispatch(lambda: on_progress(fraction, f"AUTO-SEGMENT: {stage}…"))

        tiled = settings.tiling and is_large(plane)
        if not tiled and max(plane.size) > MAX_FACTOR * MODEL_INPUT:
            self.notify(
                "warning",
                f"AUTO-SEGMENT was not started: this slice is {plane.size[0]} x {plane.size[1]} px; "
                "without tiling it would be read and sent whole. Turn on 'Tiles' in the AUTO-SEGMENT box.",
            )
            return False

        def job(client: Any) -> AutoAnswer | StitchedAnswer:
            if tiled:
                return self._tiled_job(data, plane, rgb, limits, cancel, on_progress)
            wire = wire_slice(data, plane, rgb, limits)
            return auto(
                client,
                wire,
                settings.params(),
                on_progress=progress,
                cancel=cancel,
                timeout_s=settings.timeout_s,
            )

        def done(answer: AutoAnswer | StitchedAnswer) -> None:
            self.auto_running = False
            self._apply_auto(layer, plane, answer)
            on_done(True)

        def failed(error: Exception) -> None:
            self.auto_running = False
            if isinstance(error, Superseded):
                self.notify("info", "AUTO-SEGMENT cancelled.")
            self.on_error(error)
            on_done(False)

        on_progress(None, f"AUTO-SEGMENT: sending {slice_text(plane)} to the backend…")
        self.auto_running = True
        self.session.submit(AUTO, job, done, failed)
        return True

    def tiled_labels(
        self,
        data: Any,
        plane: SlicePlane,
        rgb: bool,
        limits: tuple[float, ...],
        cancel: threading.Event,
        on_tiles: Callable[[int, int], None] | None = None,
    ) -> tuple[CompressedPlane, list[int], bool]:
        """AUTO-SEGMENT one large slice as tiles with a halo, as many in flight as the broker has workers.

        Call off the GUI thread. Only tile windows are read from ``data``; the
        stitched labels are kept compressed, tile core by tile core (no
        slice-sized array).

        Returns:
            ``(labels, areas, cancelled)``: labels (H, W) 1..n read by
            rectangles (its ``rectangles`` cover every object), and the pixels
            of object i at ``areas[i - 1]``.
        """
        assert self.session is not None
        settings = self.auto_settings
        endpoint, model, config = self.session.endpoint, self.session.model, self.session.config
        out = CompressedPlane(plane.size)
        result = tiled_auto(
            LazyPlane(data, plane, rgb),
            out,
            lambda: SamClient(endpoint, model, config=config),
            settings.params(),
            contrast_limits=(float(limits[0]), float(limits[1])),
            tile_size=settings.tile_size,
            halo=settings.tile_halo,
            on_progress=on_tiles,
            cancel=cancel,
            timeout_s=settings.timeout_s,
        )
        return out, list(result.areas), result.cancelled

    def _tiled_job(
        self,
        data: Any,
        plane: SlicePlane,
        rgb: bool,
        limits: tuple[float, ...],
        cancel: threading.Event,
        on_progress: Callable[[float | None, str], None],
    ) -> StitchedAnswer:
        """Tiles of a large slice for AUTO-SEGMENT, stitched into compressed rectangles (no slice-sized
        array); cancelled: raises ``Superseded`` (nothing is written)."""

        def progress(done: int, total: int) -> None:
            text = f"AUTO-SEGMENT: {done} of {plural(total, 'tile')} of {slice_text(plane)}…"
            self.dispatch(lambda: on_progress(done / total, text))

        stitched, areas, cancelled = self.tiled_labels(data, plane, rgb, limits, cancel, progress)
        if cancelled:
            raise Superseded("AUTO-SEGMENT was cancelled")
        return StitchedAnswer(stitched, tuple(areas))

    def cancel_auto(self) -> None:
        if self._auto_cancel is not None:
            self._auto_cancel.set()

    def _apply_auto(self, layer: Labels, plane: SlicePlane, answer: AutoAnswer | StitchedAnswer) -> None:
        if layer not in self.viewer.layers:
            return
        min_area = self.auto_settings.min_area
        if isinstance(answer, StitchedAnswer):  # a large slice: pasted rectangle by rectangle
            stitched = answer.stitched
            ids, pixels = self.results.paste_stitched(
                layer, plane, stitched, stitched.rectangles, answer.areas, min_area
            )
            whole = None
        else:
            ids, pixels = self.paste_auto(layer, plane, drop_small_objects(answer.labels, min_area))
            whole = answer.labels
        self._record(Applied(AUTO, layer.name, ids, plane, pixels, {}, {}, answer=whole))
        if not ids:
            self.notify("info", "AUTO-SEGMENT found no objects on this slice (try more points per side).")
            return
        self.notify(
            "info",
            f"AUTO-SEGMENT: {plural(len(ids), 'object')} written to {layer.name} (ids {ids[0]}-{ids[-1]}).",
        )

    def paste_auto(
        self, layer: Labels, plane: SlicePlane, objects: np.ndarray
    ) -> tuple[tuple[int, ...], int]:
        """Write an automatic segmentation (H, W) (0 = none, 1..n) on ``plane`` with new ids.

        Returns:
            ``(ids written, pixels changed)``.
        """
        return self.results.paste_auto(layer, plane, objects)


def plane_key_of(point: np.ndarray, plane: SlicePlane) -> tuple[int, ...]:
    """The key of the slice through ``point`` with ``plane``'s displayed axes."""
    fixed = tuple(int(np.round(point[a])) for a, i in enumerate(plane.index) if i is not None)
    return (plane.row_axis, plane.col_axis, *fixed)
