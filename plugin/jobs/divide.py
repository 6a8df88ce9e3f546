"""Divide here: a label of a time-lapse divides on the frame shown into daughters, one click each.

napari layer models only (no Qt). :meth:`Division.divide_here` takes the parent label, the
frame shown (axis 0 is time) and one point (row, col) inside each daughter (two or more). Each
daughter gets a new id and SAM2 tracks the daughters together from that frame forward (one
``propagate`` request, each daughter its own object prompted by its point: op ``propagate``,
:func:`protocol.ops.requests.propagate_objects`). When the first answer (the frame itself)
arrives, the parent's pixels from that frame on are cleared, so its track ends on the frame
before, and the lineage ``{daughter: parent}`` (:mod:`plugin.labels.lineage`) is set with that
edit; each later frame's daughters are written as they arrive under the labeling mode. The whole
division (pixels and lineage) is one undo step (:class:`plugin.jobs.stack_runs.StackRun`,
:meth:`plugin.labels.history.LabelHistory.edit`); a failed request changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.jobs.context import JobContext
from plugin.jobs.stack_runs import PROPAGATE, Done, Progress, StackRun, StackRuns
from plugin.labels.lineage import LINEAGE_KEY, lineage_from_metadata, lineage_metadata
from plugin.labels.ops import compute_edit
from plugin.view.image_slice import plane_on, wire_stack
from plugin.view.layers import base_data, slice_view, spatial_shape, write_edit
from protocol.ops.requests import PropagateAnswer, PropagatedLabels, propagate_objects
from protocol.wire.propagate import SlicePrompt

if TYPE_CHECKING:
    from napari.layers import Labels

DIVIDE_TIMEOUT_S = 600.0
"""Silence allowed between two frames of the daughters' propagation."""
WHAT = "Divide here"


class Division:
    """Divides a label of a time-lapse into daughters and propagates them forward.

    Args:
        ctx: the jobs' shared state (labeling mode, results, dispatch).
        runs: the stack runs (a division is a run of kind ``propagate``: it cancels a propagation).
    """

    def __init__(self, ctx: JobContext, runs: StackRuns) -> None:
        self.ctx = ctx
        self.runs = runs

    def divide_here(
        self,
        layer: Labels,
        parent: int,
        points: Sequence[tuple[float, float]],
        on_progress: Progress,
        on_done: Done,
    ) -> bool:
        """Divide ``parent`` on the frame shown into one daughter per point; False if not started.

        Args:
            layer: the time-lapse labels layer ``(T, H, W)`` (axis 0 is time) of the image's shape.
            parent: the dividing label.
            points: one (row, col) in the layer's data pixels inside each daughter (2 or more).
            on_progress, on_done: as for Propagate (GUI thread).
        """
        ctx = self.ctx
        if len(points) < 2:
            ctx.notify("warning", f"{WHAT}: click a point in each daughter (two or more).")
            return False
        found = self.runs.stack(WHAT)
        if found is None:
            return False
        image, plane, axis = found
        if axis != 0 or tuple(layer.data.shape) != spatial_shape(image):
            ctx.notify("warning", f"{WHAT}: {layer.name} must be a time-lapse (time first) of {image.name}.")
            return False
        frame = int(plane.index[axis] or 0)
        first = ctx.results.allocate(layer, slice_view(layer, plane), count=len(points))
        daughters = list(range(first, first + len(points)))
        lineage = lineage_from_metadata(layer.metadata) | dict.fromkeys(daughters, int(parent))
        prompts = [
            SlicePrompt(frame, d, ((float(r), float(c)),), (1,))
            for d, (r, c) in zip(daughters, points, strict=True)
        ]
        run = StackRun(PROPAGATE, layer, plane, axis, label_ids=daughters, on_done=on_done)
        mode, history, dispatch = ctx.mode, ctx.results.histories(layer), ctx.dispatch
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        parent_pixels: list[tuple[np.ndarray, ...]] = []

        def write_daughters(part: PropagatedLabels) -> None:
            target = plane_on(plane, axis, part.frame_index)
            for object_id in part.object_ids:
                edit, _ = compute_edit(slice_view(layer, target), part.labels == object_id, object_id, mode)
                write_edit(layer, target, edit)

        def write(part: PropagatedLabels) -> None:
            if not run.live(ctx):
                return
            if part.frame_index == frame:  # the division itself: parent ends, daughters begin, lineage
                with history.edit(metadata_after={LINEAGE_KEY: lineage_metadata(lineage)}) as steps:
                    if parent_pixels and parent_pixels[0][0].size:
                        layer.data_setitem(parent_pixels[0], 0)
                    write_daughters(part)
            else:
                with history.capture() as steps:
                    write_daughters(part)
            run.steps.extend(steps)
            run.written[part.frame_index] = part.labels
            on_progress(part.done, part.total, f"{WHAT}: frame {part.done} of {part.total}")  # last

        def job(client: Any) -> PropagateAnswer:
            on_or_after = np.nonzero(np.asarray(layer.data[frame:]) == parent)  # off the GUI thread
            parent_pixels.append((on_or_after[0] + frame, *on_or_after[1:]))
            return propagate_objects(
                client,
                wire_stack(data, plane, axis, rgb, limits),
                frame,
                "forward",
                lambda part: dispatch(lambda: write(part)),
                prompts=prompts,
                cancel=run.cancel,
                timeout_s=DIVIDE_TIMEOUT_S,
            )

        def answered(answer: PropagateAnswer) -> None:
            if run.finished:
                return
            self.runs.finish(run, not answer.cancelled)
            ids = ", ".join(str(d) for d in daughters)
            ctx.notify(
                "info" if not answer.cancelled else "warning",
                f"{WHAT}: label {parent} ends on frame {frame - 1}; daughters {ids} written on "
                f"{len(run.written)} frame(s) of {layer.name}.",
            )

        on_progress(0, run.frames, f"{WHAT}: label {parent} into {len(points)} daughters…")
        return self.runs.start(run, job, answered)
