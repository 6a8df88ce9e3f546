"""AUTO-SEGMENT of the current slice: whole, or tile by tile over all workers on a large slice.

napari layer models only (no Qt). A slice up to the model's input (or, with
tiles off, up to ``MAX_FACTOR`` times it) is sent whole as one ``auto``
request; a larger one is cut into tiles with a halo (:func:`tiled_labels`,
:func:`protocol.ops.tiled.tiled_auto`), as many in flight as the broker has
workers, stitched into compressed rectangles (never a slice-sized array) and
pasted rectangle by rectangle. AUTO-SEGMENT may look at a region only
(:mod:`plugin.jobs.auto_region`: the visible part, a drawn rectangle): the
region is tiled as its own slice and pasted only inside it. Either way it goes the one way every job goes
(:func:`plugin.jobs.submit.submit`) and is one undo step of ``AutoSeg_mask``.
AUTO-SEGMENT STACK (:mod:`plugin.jobs.auto_stack`) uses :func:`tiled_labels`
for each large slice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from plugin.jobs.auto_region import Box, RegionView, region_rect
from plugin.jobs.auto_settings import AutoSettings
from plugin.jobs.context import DuringStoreWrites, JobContext
from plugin.jobs.results import PasteProgress
from plugin.jobs.stack_runs import AUTO_STACK, StackRuns
from plugin.jobs.submit import AUTO, Answers, Applied, submit
from plugin.labels.ops import drop_small_objects
from plugin.provenance_record import AUTO_RUN_KEY, auto_run_metadata
from plugin.view.coords import SlicePlane
from plugin.view.image_slice import LazyPlane, is_large, wire_slice
from plugin.view.layers import AUTO_MASK, base_data, ensure_labels
from plugin.wording import plural, slice_text
from protocol.geometry.compressed import CompressedPlane
from protocol.geometry.grid import tile_grid
from protocol.geometry.windows import MAX_FACTOR, MODEL_INPUT
from protocol.ops.requests import AutoAnswer, auto, partial_fraction
from protocol.ops.tiled import TiledAutoResult, tiled_auto
from protocol.wire.client import SamClient
from protocol.wire.codec import Message
from protocol.wire.errors import Superseded

if TYPE_CHECKING:
    from napari.layers import Labels

    from plugin.connection.session import Session

A = TypeVar("A")
OnProgress = Callable[[float | None, str], None]
"""``on_progress(fraction or None, text)`` on the GUI thread."""


@dataclass(frozen=True)
class StitchedAnswer:
    """AUTO-SEGMENT of a large slice: the stitched tiles, held compressed (never a slice-sized array).

    Attributes:
        stitched: (H, W) labels 0 = none, 1..n, in rectangles (the tiles' cores).
        areas: pixels of object i at ``areas[i - 1]``.
        rect: ``[r0, c0, r1, c1)`` of the slice segmented (``stitched`` is its (r1 - r0, c1 - c0)
            labels); None: the whole slice.
    """

    stitched: CompressedPlane = field(repr=False)
    areas: tuple[int, ...]
    rect: Box | None = None


def record_auto_run(
    layer: Labels, settings: AutoSettings, slice_shape: tuple[int, int], tiled: bool, stack: bool = False
) -> None:
    """Note in ``layer``'s metadata how AUTO made it (its exports' provenance:
    :func:`plugin.provenance_record.automatic_provenance`): the request's params, the minimum area
    (and for a stack the linking), and the tile grid of a tiled (H, W) slice."""
    parameters: dict[str, Any] = {**settings.params(), "min_area": settings.min_area}
    if stack:
        parameters["link_stack"] = settings.link_stack
    size, halo = settings.tile_size, settings.tile_halo
    tiles = (size, halo, tile_grid(slice_shape, size, halo).grid_shape, slice_shape) if tiled else None
    layer.metadata = {**layer.metadata, AUTO_RUN_KEY: auto_run_metadata(parameters, tiles)}


def tiled_run(
    session: Session,
    settings: AutoSettings,
    data: Any,
    plane: SlicePlane,
    rgb: bool,
    limits: tuple[float, ...],
    cancel: threading.Event,
    on_tiles: Callable[[int, int], None] | None = None,
    rect: Box | None = None,
    params: dict[str, Any] | None = None,
    op: str = "auto",
) -> tuple[CompressedPlane, TiledAutoResult]:
    """One large slice (or its ``rect``) as tiles with a halo (AUTO's tile size and overlap), as many
    in flight as the broker has workers: ``auto`` (``params``: AUTO's settings) or ``concept`` (Find all).

    Call off the GUI thread. Only tile windows are read from ``data``; the
    stitched labels are kept compressed, tile core by tile core (no
    slice-sized array). With ``rect`` (``[r0, c0, r1, c1)``) only tiles
    covering it are sent and the labels are the rect's (r1 - r0, c1 - c0).

    Returns:
        ``(labels, result)``: labels (H, W) 1..n read by rectangles (its ``rectangles`` cover
        every object), and :class:`protocol.ops.tiled.TiledAutoResult` (areas, scores, cancelled).
    """
    endpoint, model, config = session.endpoint, session.model, session.config
    source: Any = LazyPlane(data, plane, rgb)
    if rect is not None:
        r0, c0, r1, c1 = rect
        source = RegionView(source, (r0, c0), (r1 - r0, c1 - c0))
    out = CompressedPlane((int(source.shape[0]), int(source.shape[1])))
    result = tiled_auto(
        source,
        out,
        lambda: SamClient(endpoint, model, config=config),
        settings.params() if params is None else params,
        contrast_limits=(float(limits[0]), float(limits[1])),
        tile_size=settings.tile_size,
        halo=settings.tile_halo,
        on_progress=on_tiles,
        cancel=cancel,
        timeout_s=settings.timeout_s,
        op=op,
    )
    return out, result


def tiled_labels(*args: Any) -> tuple[CompressedPlane, list[int], bool]:
    """AUTO-SEGMENT one large slice (:func:`tiled_run`'s arguments up to ``rect``).

    Returns:
        ``(labels, areas, cancelled)``: the pixels of object i at ``areas[i - 1]``.
    """
    out, result = tiled_run(*args)
    return out, list(result.areas), result.cancelled


def submit_run(
    job: Any,
    channel: str,
    what: str,
    ask: Callable[[Any], A],
    paste: Callable[[A], None],
    on_done: Callable[[bool], None],
) -> None:
    """Send a long run (AUTO-SEGMENT, Find all) the one way (:func:`plugin.jobs.submit.submit`):
    ``job.running`` is true until it ends, then ``on_done(completed)``; a cancelled run says
    "<what> cancelled."; other failures are notified."""
    ctx: JobContext = job.ctx

    def pasted(answer: A) -> None:
        job.running = False
        paste(answer)
        on_done(True)

    def failed(error: Exception) -> None:
        job.running = False
        if isinstance(error, Superseded):
            ctx.notify("info", f"{what} cancelled.")
        ctx.results.report_error(error)
        on_done(False)

    job.running = True
    submit(ctx, channel, ask, pasted, failed)


class AutoJobs:
    """AUTO-SEGMENT of the current slice, one at a time.

    Args:
        ctx: the jobs' shared state.
        answers: where each answer applied is recorded.
        stack_runs: the stack runs (AUTO-SEGMENT is refused while AUTO-SEGMENT STACK runs).

    Attributes:
        running: whether a single-slice AUTO-SEGMENT is in flight (AUTO-SEGMENT STACK waits for it).
    """

    def __init__(self, ctx: JobContext, answers: Answers, stack_runs: StackRuns) -> None:
        self.ctx = ctx
        self.answers = answers
        self.stack_runs = stack_runs
        self.running = False
        self._cancel: threading.Event | None = None

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def run(self, on_progress: OnProgress, on_done: Callable[[bool], None]) -> bool:
        """AUTO-SEGMENT the current slice into ``AutoSeg_mask``; False if it could not start.

        Refused while AUTO-SEGMENT STACK runs: the stack writes every slice of
        ``AutoSeg_mask``, this one included, and one worker channel serves both.
        """
        ctx = self.ctx
        if self.stack_runs.running(AUTO_STACK):
            ctx.notify(
                "warning",
                "AUTO-SEGMENT was not started: AUTO-SEGMENT STACK is running and segments this slice too. "
                "Wait for it, or cancel it first.",
            )
            return False
        shown = ctx.shown_slice("AUTO-SEGMENT")
        if shown is None:
            return False
        image, plane = shown
        settings, cancel, dispatch = ctx.auto_settings, threading.Event(), ctx.dispatch
        try:
            rect = region_rect(ctx.viewer, image, plane, settings.region)
        except ValueError as e:
            ctx.notify("warning", f"AUTO-SEGMENT was not started: {e}.")
            return False
        layer = ensure_labels(ctx.viewer, image, AUTO_MASK, ctx.notify)
        session = ctx.connected()
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        self._cancel = cancel

        def progress(message: Message) -> None:
            stage = str((message.header.get("result") or {}).get("stage", "working"))
            fraction = partial_fraction(message)
            dispatch(DuringStoreWrites(lambda: on_progress(fraction, f"AUTO-SEGMENT: {stage}…")))

        def tile_progress(done: int, total: int) -> None:
            text = f"AUTO-SEGMENT: {done} of {plural(total, 'tile')} of {slice_text(plane)}…"
            dispatch(DuringStoreWrites(lambda: on_progress(done / total, text)))

        tiled = rect is not None or (settings.tiling and is_large(plane))  # a region: always its tiles
        if not tiled and max(plane.size) > MAX_FACTOR * MODEL_INPUT:
            ctx.notify(
                "warning",
                f"AUTO-SEGMENT was not started: this slice is {plane.size[0]} x {plane.size[1]} px; "
                "without tiling it would be read and sent whole. Turn on 'Tiles' in the AUTO-SEGMENT box.",
            )
            return False

        def ask(client: Any) -> AutoAnswer | StitchedAnswer:
            if tiled:  # cancelled: raises Superseded (nothing is written)
                args = (session, settings, data, plane, rgb, limits, cancel, tile_progress, rect)
                stitched, areas, cancelled = tiled_labels(*args)
                if cancelled:
                    raise Superseded("AUTO-SEGMENT was cancelled")
                return StitchedAnswer(stitched, tuple(areas), rect)
            wire = wire_slice(data, plane, rgb, limits)
            params, limit = settings.params(), settings.timeout_s
            return auto(client, wire, params, on_progress=progress, cancel=cancel, timeout_s=limit)

        def writing(done: int, total: int) -> None:  # on the thread writing a pyramid's store
            text = f"AUTO-SEGMENT: writing the labels, {done} of {plural(total, 'tile')}…"
            dispatch(DuringStoreWrites(lambda: on_progress(done / total, text)))

        def paste(answer: AutoAnswer | StitchedAnswer) -> None:
            self._paste(layer, plane, answer, ctx.auto_settings.min_area, writing)  # min area as set now
            if layer in ctx.viewer.layers:
                shape = plane.size if rect is None else (rect[2] - rect[0], rect[3] - rect[1])
                record_auto_run(layer, settings, shape, tiled)

        on_progress(None, f"AUTO-SEGMENT: sending {slice_text(plane)} to the backend…")
        submit_run(self, AUTO, "AUTO-SEGMENT", ask, paste, on_done)
        return True

    def _paste(
        self,
        layer: Labels,
        plane: SlicePlane,
        answer: AutoAnswer | StitchedAnswer,
        min_area: int,
        progress: PasteProgress | None = None,
    ) -> None:
        """Write the answer's objects with new ids (one undo step), dropping those under ``min_area``;
        a stitched answer tells ``progress`` after each of its rectangles."""
        ctx, results = self.ctx, self.ctx.results
        if layer not in ctx.viewer.layers:
            return
        if isinstance(answer, StitchedAnswer):  # a large slice: pasted rectangle by rectangle
            stitched: Any = answer.stitched
            cores = stitched.rectangles
            if answer.rect is not None:  # the region's labels, placed at its origin on the slice
                r0, c0 = answer.rect[:2]
                stitched = RegionView(stitched, (-r0, -c0), plane.size)
                cores = [(a + r0, b + c0, c + r0, d + c0) for a, b, c, d in cores]
            ids, pixels = results.paste_stitched(
                layer, plane, stitched, cores, answer.areas, min_area, progress
            )
            whole = None
        else:
            ids, pixels = results.paste_auto(layer, plane, drop_small_objects(answer.labels, min_area))
            whole = answer.labels
        self.answers.record(Applied(AUTO, layer.name, ids, plane, pixels, {}, {}, answer=whole))
        if not ids:
            ctx.notify("info", "AUTO-SEGMENT found no objects on this slice (try more points per side).")
            return
        ctx.notify(
            "info",
            f"AUTO-SEGMENT: {plural(len(ids), 'object')} written to {layer.name} (ids {ids[0]}-{ids[-1]}).",
        )
