"""Propagate labels of the current slice through the stack with SAM2's video predictor (op ``propagate``).

napari layer models only (no Qt). One label (:meth:`Propagation.propagate`: a bool
mask on the slice) or several tracked together in one request, with the kept
Point/Box prompts of other slices as corrections (:meth:`Propagation.propagate_labels`).
Each slice is written as it arrives under the labeling mode; the run is one
undo step (:class:`plugin.jobs.stack_runs.StackRuns`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from plugin.jobs.context import JobContext
from plugin.jobs.stack_runs import PROPAGATE, Done, Progress, StackRun, StackRuns
from plugin.labels.ops import compute_edit
from plugin.labels.pyramid import label_data
from plugin.view.coords import SlicePlane
from plugin.view.image_slice import LazyPlane, plane_on, wire_stack
from plugin.view.layers import base_data, slice_view, spatial_shape, write_edit
from plugin.wording import plural, slices_text
from protocol.ops.requests import (
    PropagateAnswer,
    PropagatedLabels,
    PropagatedSlice,
    propagate,
    propagate_objects,
)
from protocol.wire.propagate import SlicePrompt
from protocol.wire.wire_image import WireStack

if TYPE_CHECKING:
    from napari.layers import Image, Labels

_Part = TypeVar("_Part", PropagatedSlice, PropagatedLabels)
"""One propagated slice: one label's mask, or several labels' ids."""

PROPAGATE_TIMEOUT_S = 600.0
"""Silence allowed between two slices of a propagation (the first slice also encodes the stack)."""


class Propagation:
    """Propagates labels through the stack of the current image.

    Args:
        ctx: the jobs' shared state (its labeling mode and kept prompts too).
        runs: the stack runs (a propagation is the run of kind ``propagate``).
    """

    def __init__(self, ctx: JobContext, runs: StackRuns) -> None:
        self.ctx = ctx
        self.runs = runs

    def propagate(
        self, layer: Labels, label_id: int, direction: str, on_progress: Progress, on_done: Done
    ) -> bool:
        """Propagate ``label_id`` of the current slice of ``layer`` through the stack; False if not started.

        Each slice's mask is written with the same id under the controller's
        labeling mode (``add`` and ``union`` paint it over, ``intersection``
        keeps only the label's pixels inside it, ``overwrite`` makes the label
        exactly the mask on that slice). The prompted slice is the source and
        is left as it is.
        """
        ctx = self.ctx
        found = self._stack_of(layer)
        if found is None:
            return False
        image, plane, axis = found
        mask = slice_view(layer, plane) == label_id
        if label_id <= 0 or not mask.any():
            ctx.notify("warning", f"Propagate: label {label_id} is not on this slice of {layer.name}.")
            return False
        run = StackRun(PROPAGATE, layer, plane, axis, label_ids=[int(label_id)], on_done=on_done)
        mode = ctx.mode

        def write(target: SlicePlane, part: PropagatedSlice) -> np.ndarray:
            edit, _ = compute_edit(slice_view(layer, target), part.mask, int(label_id), mode)
            write_edit(layer, target, edit)
            return part.mask

        on_part = self._writer(run, write, on_progress, "")
        send = _stack_sender(image, plane, axis)

        def job(client: Any) -> PropagateAnswer:
            return propagate(
                client,
                send(),
                mask,
                run.source_index,
                direction,
                on_part,
                cancel=run.cancel,
                timeout_s=PROPAGATE_TIMEOUT_S,
            )

        on_progress(0, run.frames, f"Propagate: sending {run.frames} slices…")
        return self.runs.start(run, job, self._answered(run, f"label {label_id}"))

    def propagate_labels(
        self, layer: Labels, label_ids: list[int], direction: str, on_progress: Progress, on_done: Done
    ) -> bool:
        """Propagate several labels of the current slice of ``layer`` in one request; False if not started.

        ``label_ids``: the labels to carry (one or many; those not on this
        slice are skipped with a warning). One label goes through
        :meth:`propagate`. Several are tracked together by SAM2 (one
        ``propagate`` request with the slice's label image, each object its
        own id): on each slice each object present is written with its own id
        under the labeling mode, an object that vanished stops, and the
        prompted slice is left as it is.

        Corrections: the newest Point/Box prompt of each label on the other
        slices of the stack that the direction reaches
        (:meth:`plugin.jobs.slice_prompts.SlicePrompts.corrections`; only where the
        label still has pixels) go in the same request, so SAM2 re-runs the
        object from each of them. One label with corrections goes this way too.
        """
        wanted = sorted({int(i) for i in label_ids if int(i) > 0})
        ctx = self.ctx
        found = self._stack_of(layer)
        if found is None:
            return False
        image, plane, axis = found
        corrections = self._corrections(layer, wanted, plane, axis, direction)
        if len(wanted) == 1 and not corrections:
            return self.propagate(layer, wanted[0], direction, on_progress, on_done)
        source = slice_view(layer, plane)
        on_slice = set(np.unique(source).tolist())
        ids = [i for i in wanted if i in on_slice]
        if not ids:
            ctx.notify("warning", f"Propagate: no label to propagate on this slice of {layer.name}.")
            return False
        missing = [i for i in wanted if i not in on_slice]
        if missing:
            ctx.notify(
                "warning",
                f"Propagate: label(s) {missing[:10]} are not on this slice of {layer.name}; skipped.",
            )
        masks = np.where(np.isin(source, ids), source, 0).astype(np.uint32)
        corrections = [p for p in corrections if p.object_id in ids]
        fixed = sorted({p.frame_index for p in corrections})
        corrected = f", with corrections on {slices_text(fixed)}" if fixed else ""
        run = StackRun(PROPAGATE, layer, plane, axis, label_ids=ids, on_done=on_done)
        mode = ctx.mode

        def write(target: SlicePlane, part: PropagatedLabels) -> np.ndarray:
            for object_id in part.object_ids:
                edit, _ = compute_edit(slice_view(layer, target), part.labels == object_id, object_id, mode)
                write_edit(layer, target, edit)
            return part.labels

        on_part = self._writer(run, write, on_progress, corrected)
        send = _stack_sender(image, plane, axis)

        def job(client: Any) -> PropagateAnswer:
            return propagate_objects(
                client,
                send(),
                run.source_index,
                direction,
                on_part,
                masks=masks,
                prompts=corrections,
                cancel=run.cancel,
                timeout_s=PROPAGATE_TIMEOUT_S,
            )

        what = f"Propagate: {plural(len(ids), 'label')} from slice {run.source_index}{corrected}"
        on_progress(0, run.frames, f"{what}: sending {run.frames} slices…")
        return self.runs.start(run, job, self._answered(run, plural(len(ids), "label"), corrected))

    def _writer(
        self,
        run: StackRun,
        write: Callable[[SlicePlane, _Part], np.ndarray],
        on_progress: Progress,
        corrected: str,
    ) -> Callable[[_Part], None]:
        """What a worker thread calls with each propagated slice: ``write`` it on the GUI thread.

        ``write(target, part)`` writes ``part`` on the slice ``target`` of ``run``'s layer (under
        the run's undo capture) and returns what it wrote (for :attr:`StackRun.written`); the
        prompted slice is left as it is. Then the progress (last: napari's progress may process
        queued events, the next slice or the end, right there).
        """
        ctx = self.ctx
        history = ctx.results.histories(run.layer)

        def on_gui(part: _Part) -> None:
            if not run.live(ctx):
                return
            if part.frame_index != run.source_index:
                target = plane_on(run.plane, run.axis, part.frame_index)
                with history.capture() as steps:
                    written = write(target, part)
                run.steps.extend(steps)
                run.written[part.frame_index] = written
            on_progress(part.done, part.total, f"Propagate: slice {part.done} of {part.total}{corrected}")

        return lambda part: ctx.dispatch(lambda: on_gui(part))

    def _stack_of(self, layer: Labels) -> tuple[Image, SlicePlane, int] | None:
        """The image, the slice shown and the stack axis, when ``layer`` has the image's shape."""
        found = self.runs.stack("Propagate")
        if found is not None and tuple(layer.data.shape) != spatial_shape(found[0]):
            self.ctx.notify("warning", f"Propagate: {layer.name} does not have the shape of {found[0].name}.")
            return None
        return found

    def _answered(self, run: StackRun, what: str, corrected: str = "") -> Callable[[PropagateAnswer], None]:
        """The end of ``run``: one undo step, and a notification saying what was written where."""
        mode = self.ctx.mode

        def done(answer: PropagateAnswer) -> None:
            if run.finished:
                return
            self.runs.finish(run, not answer.cancelled)
            written = f"{what} written on {len(run.written)} slice(s) of {run.layer.name}"
            if answer.cancelled:
                self.ctx.notify(
                    "warning", f"Propagate: the backend stopped after {answer.frames} slice(s); {written}."
                )
            else:
                self.ctx.notify("info", f"Propagate: {written} (mode {mode.value}){corrected}.")

        return done

    def _corrections(
        self, layer: Labels, label_ids: list[int], plane: SlicePlane, axis: int, direction: str
    ) -> list[SlicePrompt]:
        """The kept prompts of ``label_ids`` on the other slices of the stack through ``plane`` that a
        propagation in ``direction`` reaches, where the label still has pixels (a deleted or undone
        label's prompt is not sent). Reads at most the label's box on each such slice."""
        ctx = self.ctx
        kept = ctx.slice_prompts.corrections(layer.unique_id, label_ids, plane, axis, direction)
        found: list[SlicePrompt] = []
        for prompt in kept:
            target = plane_on(plane, axis, prompt.frame_index)
            box = ctx.results.label_box(layer, target, prompt.object_id)
            r0, c0, r1, c1 = box if box is not None else (0, 0, *target.size)
            labels = LazyPlane(label_data(layer), target)
            if r1 > r0 and c1 > c0 and (labels[r0:r1, c0:c1] == prompt.object_id).any():
                found.append(prompt)
        return found


def _stack_sender(image: Image, plane: SlicePlane, axis: int) -> Callable[[], WireStack]:
    """The stack of ``image`` through ``plane`` along ``axis``, for the wire, built when called (off the
    GUI thread); the image's data, RGB flag and contrast limits are read now (on it)."""
    data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
    return lambda: wire_stack(data, plane, axis, rgb, limits)
