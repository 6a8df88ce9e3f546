"""AUTO-SEGMENT STACK: every slice of the current stack into ``AutoSeg_mask``, linked through z or t.

napari layer models only (no Qt). Slices go one at a time (a large slice tile
by tile over all workers, :func:`plugin.jobs.auto.tiled_labels`); each slice's
objects are linked to the previous slice's by overlap
(:class:`protocol.geometry.link.StackLinker`, so one object keeps one id) or get
ids of their own, and are written as each slice arrives; the run is one undo
step (:class:`plugin.jobs.stack_runs.StackRuns`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from plugin.jobs.auto import AutoJobs, record_auto_run, tiled_labels
from plugin.jobs.context import DuringStoreWrites, JobContext
from plugin.jobs.stack_runs import AUTO_STACK, Done, Progress, StackRun, StackRuns
from plugin.labels.ops import Relabelled, drop_small_objects, kept_objects
from plugin.view.image_slice import is_large, plane_on, wire_slice
from plugin.view.layers import AUTO_MASK, base_data, ensure_labels, slice_view
from plugin.wording import plural
from protocol.geometry.compressed import CompressedPlane
from protocol.geometry.link import StackLinker
from protocol.ops.requests import auto
from protocol.wire.errors import Superseded

LINK_BAND_ROWS = 256
"""Rows of a large slice read at a time when linking it to the previous one (20,000 wide: 20 MB)."""


class AutoStack:
    """AUTO-SEGMENT STACK for the current image.

    Args:
        ctx: the jobs' shared state (AUTO settings too).
        runs: the stack runs (this is the run of kind ``auto_stack``).
        auto: single-slice AUTO-SEGMENT (the stack is refused while it runs).
    """

    def __init__(self, ctx: JobContext, runs: StackRuns, auto: AutoJobs) -> None:
        self.ctx = ctx
        self.runs = runs
        self.auto = auto

    def run(self, on_progress: Progress, on_done: Done) -> bool:
        """AUTO-SEGMENT every slice of the current stack into ``AutoSeg_mask``; False if not started.

        Slices go one at a time; each slice's objects get new ids (unique
        across slices and above every id the layer had).
        """
        ctx = self.ctx
        if self.auto.running:
            ctx.notify(
                "warning",
                "AUTO-SEGMENT STACK was not started: AUTO-SEGMENT is running on a slice. "
                "Wait for it, or cancel it first.",
            )
            return False
        found = self.runs.stack("AUTO-SEGMENT STACK")
        if found is None:
            return False
        image, plane, axis = found
        layer = ensure_labels(ctx.viewer, image, AUTO_MASK)
        run = StackRun(AUTO_STACK, layer, plane, axis, on_done=on_done)
        settings, session = ctx.auto_settings, ctx.connected()
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        dispatch, total = ctx.dispatch, run.frames

        linker = StackLinker(link=settings.link_stack, band_rows=LINK_BAND_ROWS)
        layer_ids: dict[int, int] = {}  # the linker's id -> the layer's id

        def write(index: int, linked: np.ndarray | CompressedPlane) -> None:
            if not run.live(ctx):
                return
            target = plane_on(plane, axis, index)
            if not settings.link_stack:
                layer_ids.clear()  # each slice's objects are new objects
            # A large slice is held compressed, by rectangles: it is read one rectangle at a time.
            parts = linked.rectangles if isinstance(linked, CompressedPlane) else [(0, 0, *linked.shape)]
            found: set[int] = set()
            for r0, c0, r1, c1 in parts:
                found.update(int(i) for i in np.unique(linked[r0:r1, c0:c1]) if i)
            present = sorted(found - set(layer_ids))
            if present:
                seen = (
                    np.zeros(0, np.uint32)
                    if isinstance(linked, CompressedPlane)
                    else slice_view(layer, target)
                )
                first = ctx.results.allocate(layer, seen, count=len(present))
                layer_ids.update({k: first + n for n, k in enumerate(present)})
            lut = np.zeros(max(found, default=0) + 1, dtype=np.uint32)
            for k, v in layer_ids.items():
                if k < lut.size:
                    lut[k] = v
            with ctx.results.histories(layer).capture() as steps:
                ids, _pixels = ctx.results.paste_rectangles(layer, target, linked, parts, lut)
            run.steps.extend(steps)
            run.label_ids.extend(i for i in ids if i not in run.label_ids)
            run.written[index] = linked
            on_progress(index + 1, total, f"AUTO-SEGMENT STACK: slice {index + 1} of {total}")  # last

        def job(client: Any) -> int:
            for index in range(total):
                if run.cancel.is_set():
                    raise Superseded("AUTO-SEGMENT STACK was cancelled")
                text = f"AUTO-SEGMENT STACK: segmenting slice {index + 1} of {total}…"
                dispatch(DuringStoreWrites(lambda i=index, t=text: on_progress(i, total, t)))  # type: ignore[misc]
                here = plane_on(plane, axis, index)
                linked: np.ndarray | CompressedPlane
                if settings.tiling and is_large(here):  # never a slice-sized array
                    args = (session, settings, data, here, rgb, limits, run.cancel)
                    stitched, areas, cancelled = tiled_labels(*args)
                    if cancelled:
                        raise Superseded("AUTO-SEGMENT STACK was cancelled")
                    objects: Any = Relabelled(stitched, kept_objects(areas, settings.min_area))
                    linked = CompressedPlane(here.size)
                else:
                    wire = wire_slice(data, here, rgb, limits)
                    params, limit = settings.params(), settings.timeout_s
                    labels = auto(client, wire, params, cancel=run.cancel, timeout_s=limit).labels
                    objects = drop_small_objects(labels, settings.min_area)
                    linked = np.zeros(objects.shape, dtype=np.uint32)
                linker.add(objects, linked)  # one id through the stack (or per-slice ids)
                dispatch(lambda i=index, a=linked: write(i, a))  # type: ignore[misc]
            return total

        def done(_frames: int) -> None:
            if run.finished:
                return
            self.runs.finish(run, True)
            if layer in ctx.viewer.layers:
                record_auto_run(layer, settings, plane.size, settings.tiling and is_large(plane), stack=True)
            ctx.notify(
                "info",
                f"AUTO-SEGMENT STACK: {plural(len(run.label_ids), 'object')} on "
                f"{plural(len(run.written), 'slice')} written to {layer.name}.",
            )

        on_progress(0, total, f"AUTO-SEGMENT STACK: {total} slices…")
        return self.runs.start(run, job, done)
