"""Find all: every instance of a concept ("nucleus") on the current slice, into a labels layer of its own.

napari layer models only (no Qt). The concept is a text prompt and/or
exemplar boxes drawn in the ``Bounding Box`` layer on the slice shown; it is
checked before anything is sent (:func:`protocol.ops.concept.concept_params`:
empty text and no box is refused with a message). A slice up to the model's
input is one ``concept`` request; a larger one goes tile by tile over all
workers exactly like AUTO-SEGMENT (:func:`protocol.ops.tiled.tiled_auto` with
``op="concept"``, AUTO's tile size and overlap; text only: exemplar boxes
belong to one window, so they are refused there with a message). The job
takes the one way every job goes (:func:`plugin.jobs.submit.submit`, on its
own channel ``concept``) and is one undo step of its layer.

The result goes to a layer named after the concept (:func:`concept_layer_name`,
e.g. ``nucleus (Find all)``). Its new labels are named after the prompt
(``nucleus 1``, ``nucleus 2``... in ``metadata["label_names"]``, which the
NAME LABEL widget and the names overlay show), each instance's score is kept
in ``metadata["concept_scores"]`` (``{label_id: score}``; an instance merged
across tiles keeps the highest score of its pieces), and the provenance
record (:data:`plugin.provenance_record.AUTO_RUN_KEY`) holds the op
(``concept`` / ``tiled_concept``), the prompt, the threshold, the exemplar
boxes and the tile grid. Instances scoring below the threshold are dropped
here too, whatever the worker did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from plugin.jobs.auto import OnProgress, submit_run, tiled_run
from plugin.jobs.context import DuringStoreWrites, JobContext
from plugin.jobs.submit import Answers, Applied
from plugin.labels.names import clean_name, names_from_metadata
from plugin.provenance_record import AUTO_RUN_KEY, auto_run_metadata
from plugin.view.coords import OutsideImage, SlicePlane, box_in_plane
from plugin.view.image_slice import is_large, wire_slice
from plugin.view.layers import BOUNDING_BOX, base_data, ensure_labels, find_layer, to_image_data
from plugin.wording import plural, slice_text
from protocol.formats.labels_file import SCORES_KEY
from protocol.geometry.grid import tile_grid
from protocol.ops.concept import concept, concept_params
from protocol.wire.errors import Superseded

if TYPE_CHECKING:
    from napari.layers import Image, Labels, Shapes

CONCEPT = "concept"
"""The session channel of Find all (a run supersedes only an earlier Find all, never AUTO-SEGMENT)."""
EXEMPLARS_NAME = "exemplars"
"""What a concept given by exemplar boxes only is called (layer and label names)."""


@dataclass(frozen=True)
class FindAllRequest:
    """What the user asked for.

    Attributes:
        text: the concept in words ("nucleus"); may be empty when exemplar boxes are used.
        score_threshold: instances scoring below it are left out, in [0, 1].
        use_exemplars: send the ``Bounding Box`` layer's boxes on the shown slice as exemplars.
    """

    text: str
    score_threshold: float
    use_exemplars: bool = False

    @property
    def concept_name(self) -> str:
        """The name labels and the layer get: the text, or ``exemplars`` without one."""
        return clean_name(self.text) or EXEMPLARS_NAME


@dataclass(frozen=True)
class FoundInstances:
    """The instances found on one slice, before pasting.

    Attributes:
        labels: (H, W) uint32 labels 0 = none, 1..n, readable by rectangles (numpy for one
            request; compressed tile cores on a large slice).
        rectangles: [r0, c0, r1, c1) rectangles covering every instance.
        scores: float (n,) score of instance ``i + 1`` at ``i``.
        areas: int (n,) pixels of instance ``i + 1`` at ``i``.
        tiles: ``(tile_size, halo, (rows, cols), (H, W))`` of a tiled run, else None.
    """

    labels: Any = field(repr=False)
    rectangles: tuple[tuple[int, int, int, int], ...]
    scores: tuple[float, ...]
    areas: tuple[int, ...]
    tiles: tuple[int, int, tuple[int, int], tuple[int, int]] | None = None


def concept_layer_name(request: FindAllRequest) -> str:
    """The labels layer Find all writes: ``"<concept> (Find all)"``."""
    return f"{request.concept_name} (Find all)"


def exemplar_boxes(layer: Shapes | None, image: Image, plane: SlicePlane) -> list[tuple[float, ...]]:
    """The boxes of ``layer`` drawn on ``plane`` as wire boxes ``(row0, col0, row1, col1)`` in
    pixels of the slice (boxes on other slices, or outside the image, are left out)."""
    if layer is None:
        return []
    boxes: list[tuple[float, ...]] = []
    for shape in layer.data:
        corners = to_image_data(layer, np.asarray(shape), image)
        on_plane = all(
            i is None or int(round(float(corners[0][axis]))) == i for axis, i in enumerate(plane.index)
        )
        if not on_plane:
            continue
        try:
            boxes.append(box_in_plane(corners, plane))
        except OutsideImage:
            continue
    return boxes


def keep_above(scores: Sequence[float], areas: Sequence[int], threshold: float) -> np.ndarray:
    """(n + 1,) uint32 renumbering that keeps instances with a score >= ``threshold`` and some pixels
    (kept ones 1..m in their order, dropped ones 0)."""
    keep = (np.asarray(scores, dtype=np.float64) >= threshold) & (np.asarray(areas, dtype=np.int64) > 0)
    lut = np.zeros(keep.size + 1, dtype=np.uint32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lut


class FindAllJobs:
    """Find all on the current slice, one run at a time.

    Args:
        ctx: the jobs' shared state (the AUTO settings give the tile size and overlap).
        answers: where each answer applied is recorded (channel ``concept``).

    Attributes:
        running: whether a run is in flight.
    """

    def __init__(self, ctx: JobContext, answers: Answers) -> None:
        self.ctx = ctx
        self.answers = answers
        self.running = False
        self._cancel: threading.Event | None = None

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def run(self, request: FindAllRequest, on_progress: OnProgress, on_done: Callable[[bool], None]) -> bool:
        """Find every instance of ``request``'s concept on the shown slice; False if it could not start
        (the user was told why; nothing was sent)."""
        ctx = self.ctx
        shown = ctx.shown_slice("Find all")
        if shown is None:
            return False
        image, plane = shown
        from napari.layers import Shapes

        boxes: list[tuple[float, ...]] = []
        if request.use_exemplars:  # the layer is never created here: no layer, no boxes
            boxes = exemplar_boxes(find_layer(ctx.viewer, BOUNDING_BOX, Shapes), image, plane)
        tiled = is_large(plane)
        refused = self._refusal(request, boxes, tiled, plane)
        if refused is not None:
            ctx.notify("warning", f"Find all was not started: {refused}")
            return False
        params = concept_params(request.text.strip() or None, boxes, score_threshold=request.score_threshold)
        session, settings = ctx.connected(), ctx.auto_settings
        data, rgb, limits = base_data(image), bool(image.rgb), tuple(image.contrast_limits)
        cancel, dispatch = threading.Event(), ctx.dispatch
        self._cancel = cancel
        what = f"Find all “{request.concept_name}”"

        def tile_progress(done: int, total: int) -> None:
            text = f"{what}: {done} of {plural(total, 'tile')} of {slice_text(plane)}…"
            dispatch(DuringStoreWrites(lambda: on_progress(done / total, text)))

        def ask(client: Any) -> FoundInstances:
            if not tiled:
                wire = wire_slice(data, plane, rgb, limits)
                answer = concept(client, wire, params, cancel=cancel, timeout_s=settings.timeout_s)
                count = answer.num_objects  # ids beyond the scores given are not instances: dropped
                labels = np.where(answer.labels <= count, answer.labels, 0).astype(np.uint32)
                areas = np.bincount(labels.ravel(), minlength=count + 1)[1 : count + 1]
                height, width = plane.size
                return FoundInstances(
                    labels,
                    ((0, 0, height, width),),
                    tuple(answer.scores.tolist()),
                    tuple(areas.tolist()),
                )
            args = (session, settings, data, plane, rgb, limits, cancel, tile_progress)
            out, result = tiled_run(*args, params=params, op="concept")
            if result.cancelled:
                raise Superseded("Find all was cancelled")
            grid = tile_grid(plane.size, settings.tile_size, settings.tile_halo).grid_shape
            tiles = (settings.tile_size, settings.tile_halo, grid, plane.size)
            return FoundInstances(out, tuple(out.rectangles), result.scores, tuple(result.areas), tiles)

        def paste(found: FoundInstances) -> None:
            self._paste(request, params, image, plane, found)

        on_progress(None, f"{what}: sending {slice_text(plane)} to the backend…")
        submit_run(self, CONCEPT, "Find all", ask, paste, on_done)
        return True

    @staticmethod
    def _refusal(
        request: FindAllRequest, boxes: Sequence[Sequence[float]], tiled: bool, plane: SlicePlane
    ) -> str | None:
        """Why ``request`` cannot be sent as it is (None: it can)."""
        if not request.text.strip() and not boxes:
            if request.use_exemplars:
                return (
                    "type what to find (e.g. “nucleus”), or draw exemplar boxes in the "
                    f"Bounding Box layer on {slice_text(plane)}."
                )
            return "type what to find (e.g. “nucleus”), or tick “Exemplar boxes” and draw boxes."
        if tiled and boxes:
            height, width = plane.size
            return (
                f"this slice ({height} x {width} px) is searched tile by tile, and exemplar boxes belong "
                "to one window, not to every tile. Untick “Exemplar boxes” to search by text."
            )
        try:
            concept_params(request.text.strip() or None, boxes, score_threshold=request.score_threshold)
        except ValueError as e:
            return f"{e}."
        return None

    def _paste(
        self,
        request: FindAllRequest,
        params: dict[str, Any],
        image: Image,
        plane: SlicePlane,
        found: FoundInstances,
    ) -> None:
        """Write the instances scoring at least the threshold with new ids, named after the prompt,
        with their scores and the run's provenance: one undo step (names and metadata included)."""
        ctx, results = self.ctx, self.ctx.results
        if image not in ctx.viewer.layers:
            return
        lut = keep_above(found.scores, found.areas, request.score_threshold)
        count = int(lut.max(initial=0))
        name = concept_layer_name(request)
        if count == 0:
            ctx.notify("info", f"Find all found no “{request.concept_name}” on {slice_text(plane)}.")
            self._record(name, plane, (), 0)
            return
        layer: Labels = ensure_labels(ctx.viewer, image, name, ctx.notify)
        first = results.allocate(layer, np.zeros(0, dtype=np.uint32), count=count)
        lut[lut > 0] += np.uint32(first - 1)
        kept = np.flatnonzero(lut[1:])  # instance index (0-based) of each kept one, in order
        names = names_from_metadata(layer.metadata)
        scores = {int(k): float(v) for k, v in (layer.metadata.get(SCORES_KEY) or {}).items()}
        for rank, index in enumerate(kept, start=1):
            label_id = int(lut[index + 1])
            names[label_id] = f"{request.concept_name} {rank}"
            scores[label_id] = round(float(found.scores[index]), 4)
        run = dict(params)  # the text, exemplar boxes and threshold as sent
        metadata = {SCORES_KEY: scores, AUTO_RUN_KEY: auto_run_metadata(run, found.tiles, op="concept")}
        with results.histories(layer).edit(names_after=names, metadata_after=metadata):
            ids, pixels = results.paste_rectangles(layer, plane, found.labels, found.rectangles, lut)
            # the edit reads names and metadata when the block ends: an instance that found no
            # background to fill ("Add without overwriting") gets no name and no score
            for label_id in set(lut[lut > 0].tolist()) - set(ids):
                names.pop(label_id, None)
                scores.pop(label_id, None)
        self._record(layer.name, plane, ids, pixels)
        if ids:
            ctx.notify(
                "info",
                f"Find all: {plural(len(ids), 'instance')} of “{request.concept_name}” written to "
                f"{layer.name} (ids {ids[0]}-{ids[-1]}).",
            )

    def _record(self, layer_name: str, plane: SlicePlane, ids: tuple[int, ...], pixels: int) -> None:
        self.answers.record(Applied(CONCEPT, layer_name, ids, plane, pixels, {}, {}))
