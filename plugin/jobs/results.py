"""Writing answers into labels layers: new ids, pasting, undo steps and notifications.

napari layer models only (no Qt). Shared by the controller (one prompt's
answer at a time) and the stack jobs (:mod:`plugin.jobs.stacks`, answers
slice by slice), so neither reaches into the other. :class:`Results` owns
what both need when an answer arrives: the label id counter of each layer
(:class:`plugin.labels.ops.LabelIdTracker`, fed by the user's own painting),
the undo histories (:class:`plugin.labels.history.Histories`), the layer written
last (for the prompt layers' undo keys) and the user notifications.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from plugin.labels.history import Histories, atom_regions
from plugin.labels.ops import (
    NOWHERE,
    Box,
    LabelIdOverflow,
    LabelIdTracker,
    SliceEdit,
    compute_paste,
    dtype_max_id,
    kept_objects,
)
from plugin.labels.pyramid import LabelPyramid, label_data, pyramid_of
from plugin.labels.stats import LabelBoxes, pixel_counts
from plugin.labels.writes import Atom, record_atoms, store_write
from plugin.view.coords import SlicePlane
from plugin.view.image_slice import LazyPlane
from plugin.view.layers import slice_view, write_edit
from protocol.wire.errors import RemoteError, RequestTimeout, Superseded

if TYPE_CHECKING:
    from napari.layers import Labels

T = TypeVar("T")
OffGui = Callable[[Callable[[], T]], T]
"""``off_gui(work)`` runs ``work()`` (no napari call inside) and returns its result."""
PasteProgress = Callable[[int, int], None]
"""``progress(done, total)``: rectangles of a paste written so far, called on whichever thread writes."""


def _silent(done: int, total: int) -> None:
    """No progress shown."""


def run_here(work: Callable[[], T]) -> T:
    """Run ``work`` in the calling thread (the default :attr:`Results.off_gui`)."""
    return work()


Notify = Callable[[str, str], None]
"""``notify(level, message)`` with level ``info``, ``warning`` or ``error``."""


def napari_notify(level: str, message: str) -> None:
    """Show ``message`` as a napari notification (never a traceback dialog)."""
    from napari.utils import notifications

    show = {"info": notifications.show_info, "warning": notifications.show_warning}
    show.get(level, notifications.show_error)(message)


def data_max(data: Any) -> int:
    """Highest id in a labels array (of a zarr array, only the chunks written are read)."""
    if isinstance(data, np.ndarray):
        return int(np.max(data)) if data.size else 0
    return max(pixel_counts(data), default=0)


class Results:
    """Where answers are written: ids, pastes, undo steps, notifications.

    Args:
        notify: user notifications.

    Attributes:
        notify: user notifications (replaceable).
        tracker: the next free label id of each labels layer.
        histories: the undo history of each labels layer.
        last_written: the labels layer the plugin wrote last (None: none, or removed).
    """

    def __init__(self, notify: Notify) -> None:
        self.notify = notify
        self.tracker = LabelIdTracker()
        self.histories = Histories()
        self.last_written: Labels | None = None
        self.only_background = True
        """"Add without overwriting": new objects (Add mode, AUTO-SEGMENT) only fill background."""
        self._painted: set[Hashable] = set()  # layers whose paint events feed the tracker
        self._boxes: dict[Hashable, LabelBoxes | None] = {}  # per layer; None: not known to be complete
        self.off_gui: OffGui = run_here
        """Runs long store work of a pyramid paste and returns its result; the widget sets one that
        runs it in a thread while the window keeps drawing (here: in the caller's thread)."""

    def wrote(self, layer: Labels) -> None:
        """Note that the plugin wrote ``layer`` (its undo keys go through :mod:`plugin.labels.history`)."""
        self.histories(layer)
        self.last_written = layer

    def allocate(self, layer: Labels, labels2d: np.ndarray, count: int = 1) -> int:
        """The first of ``count`` new label ids for ``layer`` (ids the user painted are never reused).

        Args:
            layer: the labels layer written.
            labels2d: (H, W) its slice about to be written, or on a large slice
                the bounding box about to be written (ids on it count as used).
            count: how many consecutive ids.

        Raises:
            LabelIdOverflow: the layer's dtype has no room for them.
        """
        key = layer.unique_id
        if key not in self._painted:
            self._painted.add(key)
            layer.events.paint.connect(lambda _e: self.tracker.observe(key, layer.selected_label))
            self.follow(layer)
        data = label_data(layer)
        return self.tracker.allocate(
            key,
            lambda: data_max(data),
            count=count,
            seen=int(labels2d.max()) if labels2d.size else 0,
            max_id=dtype_max_id(np.dtype(data.dtype)),
        )

    def paste_auto(
        self, layer: Labels, plane: SlicePlane, objects: np.ndarray
    ) -> tuple[tuple[int, ...], int]:
        """Write an automatic segmentation (H, W) (0 = none, 1..n) on ``plane`` with new ids.

        With :attr:`only_background`, objects fill only background pixels;
        an object that finds none is not written.

        Returns:
            ``(ids written, pixels changed)``.
        """
        count = int(objects.max()) if objects.size else 0
        if count == 0:
            return (), 0
        labels2d = slice_view(layer, plane)
        first = self.allocate(layer, labels2d, count=count)
        edit = compute_paste(labels2d, objects, first, self.only_background)
        write_edit(layer, plane, edit)
        self.wrote(layer)
        return tuple(int(i) for i in np.unique(edit.new) if i), edit.size

    def follow(self, layer: Labels) -> None:
        """Keep a box per label of ``layer`` (:class:`plugin.labels.stats.LabelBoxes`) from now on.

        Boxes are trusted only when the layer was empty when following began
        (a layer the plugin made, or one the user had not painted): then every
        pixel it holds was written by a change seen here. Replacing its data
        stops that.
        """
        key = layer.unique_id
        if key in self._boxes:
            return
        highest = data_max(label_data(layer))  # the id counter's first look at the layer, done once
        self.tracker.start(key, highest)
        boxes = LabelBoxes(layer.data.shape) if highest == 0 else None
        self._boxes[key] = boxes
        if boxes is not None:
            for step in self.histories(layer).steps():  # what undo or redo could still bring back
                for index, values in atom_regions(step):
                    boxes.extend(index, values)

        def on_paint(event: Any) -> None:
            found = self._boxes.get(key)
            if found is not None:
                for index, values in atom_regions(list(event.value)):
                    found.extend(index, values)

        def on_data(_event: Any) -> None:
            if key in self._boxes:
                self._boxes[key] = None  # replaced: its labels were not seen being written

        layer.events.paint.connect(on_paint)
        layer.events.data.connect(on_data)

    def label_box(self, layer: Labels, plane: SlicePlane, label_id: int) -> Box | None:
        """[r0, c0, r1, c1) on ``plane`` holding every pixel of ``label_id`` (``NOWHERE``: none there),
        or None when not known (then the caller looks at the slice)."""
        boxes = self._boxes.get(layer.unique_id)
        if boxes is None:
            return None
        box = boxes.box_on(label_id, plane.row_axis, plane.col_axis, plane.index)
        if box is None:
            return NOWHERE
        height, width = plane.size
        return box[0], box[1], min(box[2], height), min(box[3], width)

    def paste_stitched(
        self,
        layer: Labels,
        plane: SlicePlane,
        stitched: Any,
        cores: Sequence[Box],
        areas: Sequence[int],
        min_area: int = 0,
        progress: PasteProgress | None = None,
    ) -> tuple[tuple[int, ...], int]:
        """Write a stitched automatic segmentation of a large slice rectangle by rectangle, with new ids.

        Nothing slice-sized is made: each core is read from ``stitched``, its
        place in the layer is read, planned (:func:`plugin.labels.ops.compute_paste`)
        and written, so the extra memory is one core (plus napari's record of
        the changed pixels). The whole paste is one undo step.

        Args:
            layer: the labels layer (numpy or zarr-backed).
            plane: the slice written.
            stitched: (H, W) labels 0 = none, 1..n, readable by rectangles
                (e.g. :class:`protocol.geometry.compressed.CompressedPlane`).
            cores: [r0, c0, r1, c1) rectangles that cover every object (the tiles' cores).
            areas: pixels of object i at ``areas[i - 1]``.
            min_area: objects smaller than this are not written (the others keep their order).
            progress: told after each rectangle (:meth:`paste_rectangles`).

        Returns:
            ``(ids written, pixels changed)``.
        """
        lut = kept_objects(areas, min_area)
        count = int(lut.max(initial=0))
        if count == 0:
            return (), 0
        first = self.allocate(layer, np.zeros(0, dtype=np.uint32), count=count)
        lut[lut > 0] += np.uint32(first - 1)
        return self.paste_rectangles(layer, plane, stitched, cores, lut, progress)

    def paste_rectangles(
        self,
        layer: Labels,
        plane: SlicePlane,
        source: Any,
        rectangles: Sequence[Box],
        lut: np.ndarray,
        progress: PasteProgress | None = None,
    ) -> tuple[tuple[int, ...], int]:
        """Write ``lut[source]`` (the layer's final ids, 0 = none) on ``plane``, one rectangle at a time.

        With :attr:`only_background`, only background pixels are filled. One
        undo step; the extra memory is one rectangle.

        Args:
            source: (H, W) labels readable by rectangles (numpy, a compressed plane).
            rectangles: [r0, c0, r1, c1) rectangles that cover every labelled pixel of ``source``.
            lut: (n + 1,) id in the layer of each id of ``source`` (``lut[0]`` = 0).
            progress: ``progress(done, len(rectangles))`` after each rectangle, on the thread
                that writes (a pyramid's: :attr:`off_gui`'s; dispatch to the GUI thread there).

        Returns:
            ``(ids written, pixels changed)``.
        """
        pyramid = pyramid_of(layer)
        if pyramid is not None:
            return self._paste_pyramid(layer, pyramid, plane, source, rectangles, lut, progress)
        tell = progress or _silent
        labels = LazyPlane(label_data(layer), plane)
        written: set[int] = set()
        pixels = 0
        pending: SliceEdit | None = None  # written with the redraw once the next one is known (or last)
        with layer.block_history():
            for done, (r0, c0, r1, c1) in enumerate(rectangles, 1):
                objects = lut[np.asarray(source[r0:r1, c0:c1])]
                edit = compute_paste(labels[r0:r1, c0:c1], objects, 1, self.only_background)
                tell(done, len(rectangles))
                if edit.size == 0:
                    continue
                if pending is not None:
                    write_edit(layer, plane, pending, refresh=False)
                pending = SliceEdit(edit.rows + r0, edit.cols + c0, edit.old, edit.new)
                written.update(int(i) for i in np.unique(edit.new) if i)
                pixels += edit.size
            if pending is not None:
                write_edit(layer, plane, pending)  # one redraw for the whole paste
        if written:
            self.wrote(layer)
        return tuple(sorted(written)), pixels

    def _paste_pyramid(
        self,
        layer: Labels,
        pyramid: LabelPyramid,
        plane: SlicePlane,
        source: Any,
        rectangles: Sequence[Box],
        lut: np.ndarray,
        progress: PasteProgress | None = None,
    ) -> tuple[tuple[int, ...], int]:
        """:meth:`paste_rectangles` on a pyramid layer: the store is written through :attr:`off_gui`.

        Planning and writing the store touch no napari object, so they run
        wherever :attr:`off_gui` runs them (the widget: a thread, while the
        window keeps drawing); recording the one undo step and the redraw
        happen here, on the GUI thread.
        """
        labels = LazyPlane(pyramid.levels[0], plane)
        only_background = self.only_background
        tell = progress or _silent

        def work() -> tuple[list[Atom], set[int], int]:
            atoms: list[Atom] = []
            written: set[int] = set()
            pixels = 0
            held = pyramid.levels_held() if len(rectangles) > 1 else contextlib.nullcontext()
            with held:  # the display levels carried down once for all rectangles
                for done, (r0, c0, r1, c1) in enumerate(rectangles, 1):
                    objects = lut[np.asarray(source[r0:r1, c0:c1])]
                    edit = compute_paste(labels[r0:r1, c0:c1], objects, 1, only_background)
                    if edit.size:
                        indices = plane.nd_indices(edit.rows + r0, edit.cols + c0)
                        atom = store_write(pyramid, indices, edit.new)
                        if atom is not None:
                            atoms.append(atom)
                            written.update(int(i) for i in np.unique(edit.new) if i)
                            pixels += int(atom[1].size)
                    if done < len(rectangles):
                        tell(done, len(rectangles))
            if rectangles:  # the last one once the display levels are carried down too
                tell(len(rectangles), len(rectangles))
            return atoms, written, pixels

        atoms, written, pixels = self.off_gui(work)
        record_atoms(layer, atoms)
        if written:
            self.wrote(layer)
        return tuple(sorted(written)), pixels

    def report_error(self, error: Exception) -> None:
        """Report a failed request as a notification (superseded requests are silent)."""
        if isinstance(error, Superseded):
            return
        if isinstance(error, RemoteError):
            self.notify("error", f"SAM2 backend error ({error.code}): {error.message}")
        elif isinstance(error, RequestTimeout):
            self.notify("warning", f"No answer from the SAM2 backend: {error}")
        elif isinstance(error, LabelIdOverflow | ValueError):
            self.notify("error", f"Segmentation not written: {error}")
        else:
            self.notify("error", f"Segmentation failed: {type(error).__name__}: {error}")

    def forget(self, layer: Labels) -> None:
        """Drop the history, id counter and paint watch held for ``layer`` (removed from the viewer)."""
        key = layer.unique_id
        self.histories.forget(layer)
        self.tracker.forget(key)
        self._painted.discard(key)
        self._boxes.pop(key, None)
        if self.last_written is not None and self.last_written.unique_id == key:
            self.last_written = None
