"""Runs of whole-stack jobs: one per kind, from start to a single undo step, cancel and abandon.

napari layer models only (no Qt). The stack is the image's slices along the
first non-displayed axis of the current view (:func:`plugin.view.image_slice.stack_axis`),
other non-displayed axes at their current index: (Z, Y, X) or (T, Y, X)
stacks along axis 0; a (T, Z, Y, X) view of one (Y, X) plane along T.

Each run goes on its own session channel (its kind: one request at a time)
by the path every job takes (:func:`plugin.jobs.submit.submit`), writes each
slice on the GUI thread as its answer comes in (``dispatch``), and ends as
**one** undo step (:meth:`plugin.labels.history.LabelHistory.squash`).
Cancelling stops at once: the request is abandoned
(:class:`protocol.wire.errors.Superseded`), slices already written stay,
answers still queued are dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.jobs.context import JobContext
from plugin.jobs.submit import submit
from plugin.labels.history import Step
from plugin.view.coords import SlicePlane
from plugin.view.image_slice import stack_axis
from protocol.geometry.compressed import CompressedPlane
from protocol.wire.errors import Superseded

if TYPE_CHECKING:
    from napari.layers import Image, Labels

PROPAGATE, AUTO_STACK = "propagate", "auto_stack"
"""The kinds of stack runs (and their session channels)."""
Progress = Callable[[int, int, str], None]
"""``on_progress(done, total, text)`` on the GUI thread."""
Done = Callable[[bool], None]
"""``on_done(completed)`` on the GUI thread (False: failed or cancelled)."""


@dataclass
class StackRun:
    """One propagation or stack segmentation, from start to its single undo step.

    Attributes:
        kind: ``propagate`` or ``auto_stack``.
        layer: the labels layer written.
        plane: the slice shown when it started.
        axis: the stack axis (a layer axis).
        cancel: set to stop.
        steps: the history steps written so far (squashed into one at the end).
        written: slice index -> what was written there: the mask (propagate
            of one label, bool (H, W)) or the worker's labels (propagate of
            several labels and auto, (H, W), 0 = none; a large slice's auto
            labels are held compressed, :class:`protocol.geometry.compressed.CompressedPlane`).
        label_ids: ids written (propagate: the labels propagated; auto: all new ids).
        finished, completed: whether it ended, and whether it ran to the end.
        on_done: called once when it ends.
    """

    kind: str
    layer: Labels
    plane: SlicePlane
    axis: int
    cancel: threading.Event = field(default_factory=threading.Event)
    steps: list[Step] = field(default_factory=list, repr=False)
    written: dict[int, np.ndarray | CompressedPlane] = field(default_factory=dict, repr=False)
    label_ids: list[int] = field(default_factory=list)
    finished: bool = False
    completed: bool = False
    on_done: Done = field(default=lambda _completed: None, repr=False)

    @property
    def frames(self) -> int:
        return int(self.plane.shape[self.axis])

    @property
    def source_index(self) -> int:
        return int(self.plane.index[self.axis] or 0)

    def live(self, ctx: JobContext) -> bool:
        """Whether an answer that arrives now is still wanted (not ended, cancelled or its layer removed)."""
        return not self.finished and not self.cancel.is_set() and self.layer in ctx.viewer.layers


class StackRuns:
    """The stack runs of the plugin, one per kind (a new one cancels the previous of its kind).

    Args:
        ctx: the jobs' shared state.
    """

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.runs: dict[str, StackRun] = {}

    def running(self, kind: str) -> bool:
        run = self.runs.get(kind)
        return run is not None and not run.finished

    def cancel(self, kind: str | None = None) -> None:
        """Stop a running job (``None``: all)."""
        for name, run in self.runs.items():
            if kind in (None, name):
                run.cancel.set()

    def forget(self, layer: Labels) -> None:
        """``layer`` was removed from the viewer: stop the jobs writing it and drop their records."""
        for kind, run in list(self.runs.items()):
            if run.layer.unique_id == layer.unique_id:
                run.cancel.set()
                self.finish(run, False)
                del self.runs[kind]

    def abandon(self) -> None:
        """End every running job now (its session is gone): what was written stays, as one step."""
        for run in list(self.runs.values()):
            run.cancel.set()
            self.finish(run, False)

    def stack(self, what: str) -> tuple[Image, SlicePlane, int] | None:
        """The image, the slice shown and the stack axis for a job called ``what``; None: the user was
        told why there is none."""
        ctx = self.ctx
        shown = ctx.shown_slice(what)
        if shown is None:
            return None
        image, plane = shown
        axis = stack_axis(plane)
        if axis is None:
            ctx.notify("warning", f"{what} needs a stack (a 3D or higher image); {image.name} is 2D.")
            return None
        return image, plane, axis

    def start(self, run: StackRun, ask: Callable[[Any], Any], answered: Callable[[Any], None]) -> bool:
        """Send ``run``'s job (``ask`` off the GUI thread, ``answered`` on it at the end); True."""

        def failed(error: Exception) -> None:
            if run.finished:
                return
            self.finish(run, False)
            if isinstance(error, Superseded):
                what = "Propagate" if run.kind == PROPAGATE else "AUTO-SEGMENT STACK"
                self.ctx.notify("info", f"{what} cancelled; {len(run.written)} slice(s) written are kept.")
            else:
                self.ctx.results.report_error(error)

        self.cancel(run.kind)
        self.runs[run.kind] = run
        submit(self.ctx, run.kind, ask, answered, failed)
        return True

    def finish(self, run: StackRun, completed: bool) -> None:
        """End ``run``: its slices become one undo step, and ``on_done`` is called (once)."""
        if run.finished:
            return
        run.finished, run.completed = True, completed
        results = self.ctx.results
        if run.layer in self.ctx.viewer.layers:
            results.histories(run.layer).squash(run.steps)
            results.wrote(run.layer)
        run.on_done(completed)
