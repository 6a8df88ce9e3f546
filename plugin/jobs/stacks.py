"""Work on a whole stack: propagate a label through z or time, AUTO-SEGMENT every slice.

napari layer models only (no Qt). The stack is the image's slices along
the first non-displayed axis of the current view (:func:`plugin.view.image_slice.stack_axis`),
other non-displayed axes at their current index: (Z, Y, X) or (T, Y, X)
stacks along axis 0; a (T, Z, Y, X) view of one (Y, X) plane along T.

Each job runs on its own session channel (one request at a time), writes
each slice on the GUI thread as its answer comes in (``dispatch``), and
ends as **one** undo step (:meth:`plugin.labels.history.LabelHistory.squash`).
Cancelling (``cancel``) stops at once: the request is abandoned
(:class:`protocol.wire.errors.Superseded`), slices already written stay,
answers still queued are dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from plugin.connection.session import Session
from plugin.jobs.results import Results
from plugin.jobs.slice_prompts import SlicePrompts
from plugin.labels.history import Step
from plugin.labels.ops import LabelMode, Relabelled, compute_edit, drop_small_objects, kept_objects
from plugin.labels.pyramid import label_data
from plugin.view.coords import OutsideImage, SlicePlane
from plugin.view.image_slice import LazyPlane, is_large, plane_on, stack_axis, wire_slice, wire_stack
from plugin.view.layers import (
    AUTO_MASK,
    base_data,
    ensure_labels,
    plane_of,
    slice_view,
    spatial_shape,
    write_edit,
)
from plugin.wording import plural, slices_text
from protocol.geometry.compressed import CompressedPlane
from protocol.geometry.link import StackLinker
from protocol.ops.requests import (
    PropagateAnswer,
    PropagatedLabels,
    PropagatedSlice,
    SlicePrompt,
    auto,
    propagate,
    propagate_objects,
)
from protocol.wire.errors import Superseded

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

PROPAGATE, AUTO_STACK = "propagate", "auto_stack"
LINK_BAND_ROWS = 256
"""Rows of a large slice read at a time when linking it to the previous one (20,000 wide: 20 MB)."""
PROPAGATE_TIMEOUT_S = 600.0
"""Silence allowed between two slices of a propagation (the first slice also encodes the stack)."""
Progress = Callable[[int, int, str], None]
"""``on_progress(done, total, text)`` on the GUI thread."""
Done = Callable[[bool], None]
"""``on_done(completed)`` on the GUI thread (False: failed or cancelled)."""


class AutoParams(Protocol):
    """The ``auto`` settings the user chose (:class:`plugin.jobs.controller.AutoSettings`)."""

    @property
    def timeout_s(self) -> float: ...

    @property
    def min_area(self) -> int: ...

    @property
    def tiling(self) -> bool: ...

    @property
    def link_stack(self) -> bool: ...

    def params(self) -> dict[str, Any]: ...


class StackHost(Protocol):
    """What stack jobs need from the plugin's state (the :class:`plugin.jobs.controller.Controller`)."""

    @property
    def viewer(self) -> napari.Viewer: ...

    @property
    def dispatch(self) -> Callable[[Callable[[], None]], None]: ...

    @property
    def results(self) -> Results: ...

    @property
    def session(self) -> Session | None: ...

    @property
    def mode(self) -> LabelMode: ...

    @property
    def slice_prompts(self) -> SlicePrompts:
        """The newest Point/Box prompt applied to each label on each slice (sent as corrections)."""
        ...

    @property
    def auto_settings(self) -> AutoParams: ...

    @property
    def auto_running(self) -> bool:
        """Whether a single-slice AUTO-SEGMENT is in flight."""
        ...

    def ready(self) -> Image | None:
        """The image to segment, or None (the user was told why)."""
        ...

    def tiled_labels(
        self,
        data: Any,
        plane: SlicePlane,
        rgb: bool,
        limits: tuple[float, ...],
        cancel: threading.Event,
        on_tiles: Callable[[int, int], None] | None = None,
    ) -> tuple[CompressedPlane, list[int], bool]:
        """AUTO-SEGMENT a large slice tile by tile (off the GUI thread): ``(labels, areas, cancelled)``,
        the labels kept compressed by rectangles."""
        ...


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


class StackJobs:
    """Propagation and stack AUTO-SEGMENT for the plugin's state (a :class:`StackHost`)."""

    def __init__(self, host: StackHost) -> None:
        self.c = host
        self.results = host.results
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
                self._finish(run, False)
                del self.runs[kind]

    def abandon(self) -> None:
        """End every running job now (its session is gone): what was written stays, as one step."""
        for run in list(self.runs.values()):
            run.cancel.set()
            self._finish(run, False)

    def _stack(self, what: str) -> tuple[Image, SlicePlane, int] | None:
        image = self.c.ready()
        if image is None:
            return None
        try:
            plane = plane_of(self.c.viewer, image, spatial_shape(image))
        except (ValueError, OutsideImage) as e:
            self.results.notify("warning", f"{what}: {e}")
            return None
        axis = stack_axis(plane)
        if axis is None:
            self.results.notify(
                "warning", f"{what} needs a stack (a 3D or higher image); {image.name} is 2D."
            )
            return None
        return image, plane, axis

    # -- propagate -------------------------------------------------------------------------

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
        found = self._stack("Propagate")
        if found is None:
            return False
        image, plane, axis = found
        if tuple(layer.data.shape) != spatial_shape(image):
            self.results.notify(
                "warning", f"Propagate: {layer.name} does not have the shape of {image.name}."
            )
            return False
        mask = slice_view(layer, plane) == label_id
        if label_id <= 0 or not mask.any():
            self.results.notify(
                "warning", f"Propagate: label {label_id} is not on this slice of {layer.name}."
            )
            return False
        run = StackRun(PROPAGATE, layer, plane, axis, label_ids=[int(label_id)], on_done=on_done)
        mode = self.c.mode
        history = self.results.histories(layer)
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        dispatch = self.c.dispatch

        def write(part: PropagatedSlice) -> None:
            if run.finished or run.cancel.is_set() or layer not in self.c.viewer.layers:
                return
            if part.frame_index != run.source_index:
                target = plane_on(plane, axis, part.frame_index)
                edit, _ = compute_edit(slice_view(layer, target), part.mask, int(label_id), mode)
                with history.capture() as steps:
                    write_edit(layer, target, edit)
                run.steps.extend(steps)
                run.written[part.frame_index] = part.mask
            # last: napari's progress may process queued events (the next slice, the end) right here
            on_progress(part.done, part.total, f"Propagate: slice {part.done} of {part.total}")

        def job(client: Any) -> PropagateAnswer:
            wire = wire_stack(data, plane, axis, rgb, limits)
            return propagate(
                client,
                wire,
                mask,
                run.source_index,
                direction,
                lambda part: dispatch(lambda: write(part)),
                cancel=run.cancel,
                timeout_s=PROPAGATE_TIMEOUT_S,
            )

        def done(answer: PropagateAnswer) -> None:
            if run.finished:
                return
            self._finish(run, not answer.cancelled)
            written = f"label {label_id} written on {len(run.written)} slice(s) of {layer.name}"
            if answer.cancelled:
                self.results.notify(
                    "warning", f"Propagate: the backend stopped after {answer.frames} slice(s); {written}."
                )
            else:
                self.results.notify("info", f"Propagate: {written} (mode {mode.value}).")

        on_progress(0, run.frames, f"Propagate: sending {run.frames} slices…")
        return self._submit(run, job, done)

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
        found = self._stack("Propagate")
        if found is None:
            return False
        image, plane, axis = found
        if tuple(layer.data.shape) != spatial_shape(image):
            self.results.notify(
                "warning", f"Propagate: {layer.name} does not have the shape of {image.name}."
            )
            return False
        corrections = self._corrections(layer, wanted, plane, axis, direction)
        if len(wanted) == 1 and not corrections:
            return self.propagate(layer, wanted[0], direction, on_progress, on_done)
        source = slice_view(layer, plane)
        on_slice = set(np.unique(source).tolist())
        ids = [i for i in wanted if i in on_slice]
        if not ids:
            self.results.notify("warning", f"Propagate: no label to propagate on this slice of {layer.name}.")
            return False
        missing = [i for i in wanted if i not in on_slice]
        if missing:
            self.results.notify(
                "warning",
                f"Propagate: label(s) {missing[:10]} are not on this slice of {layer.name}; skipped.",
            )
        masks = np.where(np.isin(source, ids), source, 0).astype(np.uint32)
        corrections = [p for p in corrections if p.object_id in ids]
        fixed = sorted({p.frame_index for p in corrections})
        corrected = f", with corrections on {slices_text(fixed)}" if fixed else ""
        run = StackRun(PROPAGATE, layer, plane, axis, label_ids=ids, on_done=on_done)
        mode = self.c.mode
        history = self.results.histories(layer)
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        dispatch = self.c.dispatch

        def write(part: PropagatedLabels) -> None:
            if run.finished or run.cancel.is_set() or layer not in self.c.viewer.layers:
                return
            if part.frame_index != run.source_index:
                target = plane_on(plane, axis, part.frame_index)
                with history.capture() as steps:
                    for object_id in part.object_ids:
                        edit, _ = compute_edit(
                            slice_view(layer, target), part.labels == object_id, object_id, mode
                        )
                        write_edit(layer, target, edit)
                run.steps.extend(steps)
                run.written[part.frame_index] = part.labels
            text = f"Propagate: slice {part.done} of {part.total}{corrected}"
            on_progress(part.done, part.total, text)  # last

        def job(client: Any) -> PropagateAnswer:
            wire = wire_stack(data, plane, axis, rgb, limits)
            return propagate_objects(
                client,
                wire,
                run.source_index,
                direction,
                lambda part: dispatch(lambda: write(part)),
                masks=masks,
                prompts=corrections,
                cancel=run.cancel,
                timeout_s=PROPAGATE_TIMEOUT_S,
            )

        def done(answer: PropagateAnswer) -> None:
            if run.finished:
                return
            self._finish(run, not answer.cancelled)
            written = f"{plural(len(ids), 'label')} written on {len(run.written)} slice(s) of {layer.name}"
            if answer.cancelled:
                self.results.notify(
                    "warning", f"Propagate: the backend stopped after {answer.frames} slice(s); {written}."
                )
            else:
                self.results.notify("info", f"Propagate: {written} (mode {mode.value}){corrected}.")

        what = f"Propagate: {plural(len(ids), 'label')} from slice {run.source_index}{corrected}"
        on_progress(0, run.frames, f"{what}: sending {run.frames} slices…")
        return self._submit(run, job, done)

    def _corrections(
        self, layer: Labels, label_ids: list[int], plane: SlicePlane, axis: int, direction: str
    ) -> list[SlicePrompt]:
        """The kept prompts of ``label_ids`` on the other slices of the stack through ``plane`` that a
        propagation in ``direction`` reaches, where the label still has pixels (a deleted or undone
        label's prompt is not sent). Reads at most the label's box on each such slice."""
        kept = self.c.slice_prompts.corrections(layer.unique_id, label_ids, plane, axis, direction)
        found: list[SlicePrompt] = []
        for prompt in kept:
            target = plane_on(plane, axis, prompt.frame_index)
            box = self.results.label_box(layer, target, prompt.object_id)
            r0, c0, r1, c1 = box if box is not None else (0, 0, *target.size)
            labels = LazyPlane(label_data(layer), target)
            if r1 > r0 and c1 > c0 and (labels[r0:r1, c0:c1] == prompt.object_id).any():
                found.append(prompt)
        return found

    # -- AUTO-SEGMENT STACK ---------------------------------------------------------------------

    def auto_stack(self, on_progress: Progress, on_done: Done) -> bool:
        """AUTO-SEGMENT every slice of the current stack into ``AutoSeg_mask``; False if not started.

        Slices go one at a time; each slice's objects get new ids (unique
        across slices and above every id the layer had).
        """
        if self.c.auto_running:
            self.results.notify(
                "warning",
                "AUTO-SEGMENT STACK was not started: AUTO-SEGMENT is running on a slice. "
                "Wait for it, or cancel it first.",
            )
            return False
        found = self._stack("AUTO-SEGMENT STACK")
        if found is None:
            return False
        image, plane, axis = found
        layer = ensure_labels(self.c.viewer, image, AUTO_MASK)
        run = StackRun(AUTO_STACK, layer, plane, axis, on_done=on_done)
        settings = self.c.auto_settings
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        dispatch, total = self.c.dispatch, run.frames

        linker = StackLinker(link=settings.link_stack, band_rows=LINK_BAND_ROWS)
        layer_ids: dict[int, int] = {}  # the linker's id -> the layer's id

        def write(index: int, linked: np.ndarray | CompressedPlane) -> None:
            if run.finished or run.cancel.is_set() or layer not in self.c.viewer.layers:
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
                first = self.results.allocate(layer, seen, count=len(present))
                layer_ids.update({k: first + n for n, k in enumerate(present)})
            lut = np.zeros(max(found, default=0) + 1, dtype=np.uint32)
            for k, v in layer_ids.items():
                if k < lut.size:
                    lut[k] = v
            with self.results.histories(layer).capture() as steps:
                ids, _pixels = self.results.paste_rectangles(layer, target, linked, parts, lut)
            run.steps.extend(steps)
            run.label_ids.extend(i for i in ids if i not in run.label_ids)
            run.written[index] = linked
            on_progress(index + 1, total, f"AUTO-SEGMENT STACK: slice {index + 1} of {total}")  # last

        def job(client: Any) -> int:
            for index in range(total):
                if run.cancel.is_set():
                    raise Superseded("AUTO-SEGMENT STACK was cancelled")
                text = f"AUTO-SEGMENT STACK: segmenting slice {index + 1} of {total}…"
                dispatch(lambda i=index, t=text: on_progress(i, total, t))  # type: ignore[misc]
                here = plane_on(plane, axis, index)
                linked: np.ndarray | CompressedPlane
                if settings.tiling and is_large(here):  # never a slice-sized array
                    stitched, areas, cancelled = self.c.tiled_labels(data, here, rgb, limits, run.cancel)
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
            self._finish(run, True)
            self.results.notify(
                "info",
                f"AUTO-SEGMENT STACK: {plural(len(run.label_ids), 'object')} on "
                f"{plural(len(run.written), 'slice')} written to {layer.name}.",
            )

        on_progress(0, total, f"AUTO-SEGMENT STACK: {total} slices…")
        return self._submit(run, job, done)

    # -- common ---------------------------------------------------------------------------------------

    def _submit(self, run: StackRun, job: Callable[[Any], Any], done: Callable[[Any], None]) -> bool:
        assert self.c.session is not None

        def failed(error: Exception) -> None:
            if run.finished:
                return
            self._finish(run, False)
            if isinstance(error, Superseded):
                what = "Propagate" if run.kind == PROPAGATE else "AUTO-SEGMENT STACK"
                self.results.notify(
                    "info", f"{what} cancelled; {len(run.written)} slice(s) written are kept."
                )
            else:
                self.results.report_error(error)

        self.cancel(run.kind)
        self.runs[run.kind] = run
        self.c.session.submit(run.kind, job, done, failed)
        return True

    def _finish(self, run: StackRun, completed: bool) -> None:
        if run.finished:
            return
        run.finished, run.completed = True, completed
        if run.layer in self.c.viewer.layers:
            self.results.histories(run.layer).squash(run.steps)
            self.results.wrote(run.layer)
        run.on_done(completed)
