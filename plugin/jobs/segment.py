"""Point and box prompts: from the prompt layers' data to one object's label, answer after answer.

napari layer models only (no Qt). An *object* is what successive prompts of a
channel refine: more points on the same slice, or dragging the same box. Each
answer replaces the object's previous answer (:func:`plugin.labels.ops.compute_edit`);
"New object", another slice, another mode or target, an undo or a redo starts
the next one. A slice larger than the model's input sends a window around the
prompt (:func:`protocol.ops.windowed.segment_windowed`) and pastes the answer's
bounding box at its offset. Requests go the one way every job goes
(:func:`plugin.jobs.submit.submit`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.jobs.box_tiles import BoxTiles
from plugin.jobs.context import JobContext, same_layer
from plugin.jobs.prompt_layers import PromptLayers
from plugin.jobs.submit import BOX, POINTS, Answers, Applied, submit
from plugin.labels.ops import LabelMode, SliceEdit, compute_edit, compute_edit_at
from plugin.labels.pyramid import label_data
from plugin.view.coords import OutsideImage, SlicePlane, plane_at
from plugin.view.image_slice import LazyPlane, is_large, wire_slice
from plugin.view.layers import (
    BOX_MASK,
    POINTS_MASK,
    base_data,
    displayed_axes,
    ensure_labels,
    point_labels,
    slice_view,
    spatial_shape,
    to_image_data,
    write_edit,
)
from plugin.view.prompts import Prompt, box_prompt, points_prompt
from protocol.geometry.windows import Window, prompt_extent
from protocol.ops.requests import SegmentAnswer, segment
from protocol.ops.windowed import WindowedMask, segment_windowed

if TYPE_CHECKING:
    from napari.layers import Image, Labels, Points, Shapes

    from plugin.jobs.prefetch import Prefetcher

NO_OBJECT = "SAM2 found no object at this prompt; try another point or a box."
RESULT_LAYERS = {POINTS: POINTS_MASK, BOX: BOX_MASK}
"""Prompt channel -> the labels layer its answers go to in Add mode."""


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


def plane_key_of(point: np.ndarray, plane: SlicePlane) -> tuple[int, ...]:
    """The key of the slice through ``point`` with ``plane``'s displayed axes."""
    fixed = tuple(int(np.round(point[a])) for a, i in enumerate(plane.index) if i is not None)
    return (plane.row_axis, plane.col_axis, *fixed)


class PromptJobs:
    """Sends point and box prompts and writes their answers.

    Args:
        ctx: the jobs' shared state.
        layers: the prompt layers (their points are trimmed when a new object begins).
        answers: where each answer applied is recorded.

    Attributes:
        refine_layer, refine_id: the label refined in a refine mode.
        objects: channel -> the object its prompts refine now.
        prefetch: told of each click (a prefetch for another place is dropped); set by the widget.
    """

    def __init__(self, ctx: JobContext, layers: PromptLayers, answers: Answers) -> None:
        self.ctx = ctx
        self.layers = layers
        self.answers = answers
        self.refine_layer: Labels | None = None
        self.refine_id = 0
        self.objects: dict[str, ActiveObject] = {}
        self.prefetch: Prefetcher | None = None
        self._logits: dict[tuple[Hashable, int], tuple[tuple[int, ...], Hashable, np.ndarray]] = {}
        self.box_tiles = BoxTiles(
            ctx, lambda ch, obj, prompt, answer: self._paste_windowed(ch, obj, prompt, answer, False)
        )
        """A box one request would see downsampled: asked first, maybe tiled (issue 23, item 2)."""

    def forget(self, layer: Any) -> None:
        """Drop the objects, logits and refine target held for ``layer`` (removed from the viewer)."""
        key = layer.unique_id
        self._logits = {k: v for k, v in self._logits.items() if k[0] != key}
        self.objects = {c: o for c, o in self.objects.items() if not same_layer(o.layer, layer)}
        if same_layer(self.refine_layer, layer):
            self.refine_layer = None

    def new_object(self) -> None:
        """Finish the current objects: the next prompt of each channel makes a new one."""
        self.objects.pop(POINTS, None)
        self.objects.pop(BOX, None)

    def prepare_result_layer(self, channel: str) -> Labels | None:
        """Create ``channel``'s result layer (``Points_mask``, ``Box_mask``) for the current image now.

        The prompt mode's button calls this one event-loop turn after it made the prompt layer:
        adding a napari layer freezes the window for a while (bench/RESULTS.md, issue 22), so each
        turn pays for one layer, while the user moves to the image, and the first answer is pasted
        as fast as any later one. Only in Add mode (a refine target already exists) and while
        prompts can be answered; None otherwise, or without an image.
        """
        ctx = self.ctx
        image = ctx.image
        if image is None or ctx.mode is not LabelMode.ADD or ctx.not_ready() is not None:
            return None
        return ensure_labels(ctx.viewer, image, RESULT_LAYERS[channel], ctx.notify)

    # -- from prompt layers to a prompt ---------------------------------------------------------

    def segment_points(self, layer: Points, newest: bool = True) -> None:
        """Send the points of the newest point's slice (or the current object's) as one prompt."""
        ctx = self.ctx
        image = ctx.ready()
        if image is None or len(layer.data) == 0:
            self.objects.pop(POINTS, None)
            return
        points = to_image_data(layer, np.asarray(layer.data), image)
        current = self.objects.get(POINTS)
        try:
            if newest or current is None:
                plane = plane_at(points[-1], spatial_shape(image), displayed_axes(ctx.viewer, image))
            else:
                plane = current.plane
        except (ValueError, OutsideImage) as e:
            ctx.notify("warning", f"Point ignored: {e}")
            return
        prompt = points_prompt(points, point_labels(layer), plane)
        if prompt.empty:
            ctx.notify("info", "The point is outside the image.")
            return
        target = self._target(RESULT_LAYERS[POINTS], image)
        if target is None:
            return
        obj = self._object(POINTS, target, plane, image, None, fresh=False)
        if current is not None and obj is not current:
            self._keep_points_on(layer, image, plane)
        self._submit(POINTS, obj, prompt, image)

    def _keep_points_on(self, layer: Points, image: Image, plane: SlicePlane) -> None:
        """Drop prompt points of other slices (a new object began on ``plane``)."""
        points = to_image_data(layer, np.asarray(layer.data), image)
        keep = [i for i, p in enumerate(points) if plane_key_of(p, plane) == plane.key]
        if len(keep) < len(points):
            with self.layers.own_edit():
                layer.selected_data = set(range(len(points))) - set(keep)
                layer.remove_selected()

    def segment_box(self, layer: Shapes, index: int, fresh: bool) -> None:
        """Send box ``index`` of a shapes layer (its bounding box on its slice) as a prompt."""
        ctx = self.ctx
        image = ctx.ready()
        if image is None:
            return
        corners = to_image_data(layer, np.asarray(layer.data[index]), image)
        try:
            plane = plane_at(corners[0], spatial_shape(image), displayed_axes(ctx.viewer, image))
            prompt = box_prompt(corners, plane)
        except (ValueError, OutsideImage) as e:
            ctx.notify("warning", f"Box ignored: {e}")
            return
        target = self._target(RESULT_LAYERS[BOX], image)
        if target is None:
            return
        obj = self._object(BOX, target, plane, image, index, fresh=fresh)
        self._submit(BOX, obj, prompt, image)

    def _target(self, result_name: str, image: Image) -> tuple[Labels, int | None] | None:
        ctx = self.ctx
        if ctx.mode is LabelMode.ADD:
            return ensure_labels(ctx.viewer, image, result_name, ctx.notify), None
        layer = self.refine_layer
        if layer is None or layer not in ctx.viewer.layers or self.refine_id <= 0:
            ctx.notify("warning", "Refine: choose the labels layer and the label id to refine first.")
            return None
        if tuple(layer.data.shape) != spatial_shape(image):
            ctx.notify("warning", f"Refine: {layer.name} does not have the image's shape.")
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
        mode = self.ctx.mode
        obj = self.objects.get(channel)
        if (
            not fresh
            and obj is not None
            and same_layer(obj.layer, layer)
            and obj.plane.key == plane.key
            and obj.mode is mode
            and obj.image_id == image.unique_id
            and obj.shape_index == shape_index
            and (label_id is None or obj.label_id == label_id)
        ):
            return obj
        obj = ActiveObject(layer, plane, mode, label_id, image.unique_id, shape_index)
        if label_id is not None:
            stored = self._logits.get((layer.unique_id, label_id))
            if stored is not None and stored[0] == plane.key and stored[1] == image.unique_id:
                obj.logits = stored[2]
        self.objects[channel] = obj
        return obj

    # -- request and paste ---------------------------------------------------------------------

    def _submit(self, channel: str, obj: ActiveObject, prompt: Prompt, image: Image) -> None:
        """Build the request for ``prompt`` (the slice, or a window of a large slice) and send it."""
        if self.prefetch is not None:
            self.prefetch.clicked(image, obj.plane, prompt)  # a prefetch for another place is dropped
        if channel == BOX and self.box_tiles.intercept(channel, obj, prompt, image):
            return  # tiled at full resolution, or not sent
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        if is_large(obj.plane):
            self._submit_windowed(channel, obj, prompt, LazyPlane(data, obj.plane, rgb), limits)
            return
        mask_input = obj.logits

        def ask(client: Any) -> SegmentAnswer:
            wire = wire_slice(data, obj.plane, rgb, limits)
            return segment(client, wire, prompt.points, prompt.point_labels, prompt.box, mask_input)

        def paste(answer: SegmentAnswer) -> None:
            self._paste_segment(channel, obj, prompt, answer, mask_input is not None)

        submit(self.ctx, channel, ask, paste)

    def _submit_windowed(
        self, channel: str, obj: ActiveObject, prompt: Prompt, source: LazyPlane, limits: tuple[float, ...]
    ) -> None:
        """Send a window of a large slice around the prompt (``segment_windowed``).

        Only the window is read from the layer's data. The previous answer's
        logits go along only when the new prompt fits its window (then that
        window is sent again and the worker's cached embedding is reused).
        """
        window = obj.window if obj.logits is not None and obj.window is not None else None
        if window is not None and not prompt_inside(window, prompt):
            window = None
        mask_input = obj.logits if window is not None else None
        low, high = float(limits[0]), float(limits[1])

        def ask(client: Any) -> WindowedMask:
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

        def paste(answer: WindowedMask) -> None:
            self._paste_windowed(channel, obj, prompt, answer, mask_input is not None)

        submit(self.ctx, channel, ask, paste)

    def _paste_windowed(
        self, channel: str, obj: ActiveObject, prompt: Prompt, answer: WindowedMask, sent_logits: bool
    ) -> None:
        """Paste a bounding-box answer at its offset; only that box (and the previous one) is touched."""
        ctx, results = self.ctx, self.ctx.results
        if obj.layer not in ctx.viewer.layers:
            return
        labels = LazyPlane(label_data(obj.layer), obj.plane)

        def record(ids: tuple[int, ...], pixels: int) -> None:
            self.answers.record(
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
            ctx.notify("info", NO_OBJECT)
            record((), 0)
            return
        if obj.label_id is None:
            r0, c0, r1, c1 = answer.bbox
            obj.label_id = results.allocate(obj.layer, labels[r0:r1, c0:c1])
        refining = obj.mode in (LabelMode.INTERSECTION, LabelMode.OVERWRITE)
        edit, obj.cumulative = compute_edit_at(
            labels,
            answer.mask,
            answer.offset,
            obj.label_id,
            obj.mode,
            obj.cumulative,
            results.only_background,
            results.label_box(obj.layer, obj.plane, obj.label_id) if refining else None,
        )
        write_edit(obj.layer, obj.plane, edit, off_gui=results.off_gui)  # a pyramid's store: in a thread
        results.wrote(obj.layer)
        ctx.slice_prompts.record(obj.layer.unique_id, obj.label_id, prompt)  # slice pixels, not the window's
        obj.window = answer.window
        if answer.logits is not None:
            obj.logits = answer.logits
        if answer.touches_border:
            ctx.notify("info", "The object runs past the largest window SAM2 was sent; it may be cut off.")
        record((obj.label_id,), edit.size)

    def _paste_segment(
        self, channel: str, obj: ActiveObject, prompt: Prompt, answer: SegmentAnswer, sent_logits: bool
    ) -> None:
        """Write a whole-slice answer as the object's new state (one undo step)."""
        ctx, results = self.ctx, self.ctx.results
        if obj.layer not in ctx.viewer.layers:
            return
        labels2d = slice_view(obj.layer, obj.plane)

        def record(ids: tuple[int, ...], pixels: int) -> None:
            sent, echo = prompt.params(), answer.prompt
            self.answers.record(
                Applied(channel, obj.layer.name, ids, obj.plane, pixels, sent, echo, sent_logits, answer.mask)
            )

        if obj.label_id is None and not answer.mask.any():
            ctx.notify("info", NO_OBJECT)
            record((), 0)
            return
        if obj.label_id is None:
            obj.label_id = results.allocate(obj.layer, labels2d)
        edit, obj.cumulative = compute_edit(
            labels2d, answer.mask, obj.label_id, obj.mode, obj.cumulative, results.only_background
        )
        write_edit(obj.layer, obj.plane, edit, off_gui=results.off_gui)  # a pyramid's store: in a thread
        results.wrote(obj.layer)
        ctx.slice_prompts.record(obj.layer.unique_id, obj.label_id, prompt)
        if answer.logits is not None:
            obj.logits = answer.logits
            self._logits[(obj.layer.unique_id, obj.label_id)] = (obj.plane.key, obj.image_id, answer.logits)
        record((obj.label_id,), edit.size)
