"""The point/box prompts that made or refined each label, slice by slice: corrections for Propagate.

Pure Python (no Qt, no napari). SAM2 takes prompts for one object on several
slices of a stack (``add_new_points_or_box`` on several frames; the
``prompts`` of :func:`protocol.ops.propagate_objects`): a prompt on slice
k+20 corrects the object from there. :class:`SlicePrompts` keeps, per labels
layer and label id, the prompt of the **newest** Point or Box answer applied
to that label on each slice (an answer in *Add* created the label, one in a
*Refine* mode changed it); Propagate from slice k sends those on the other
slices of its stack (:meth:`SlicePrompts.corrections`).

Coordinates are those of the wire: points ``(row, col)`` and the box
``(row_min, col_min, row_max, col_max)`` in pixels of the whole slice
(:mod:`plugin.view.coords`: pixel (r, c) covers [r, r + 1) x [c, c + 1)). On a
large slice the prompt is kept in the slice's pixels, never in the
coordinates of the window that was sent.

Entries are dropped with their layer (:meth:`SlicePrompts.forget_layer`). A
deleted label's entries are kept (an undo brings its pixels back): whoever
sends them checks that the label is still on that slice.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from plugin.view.coords import SlicePlane
from plugin.view.prompts import Prompt
from protocol.wire.propagate import SlicePrompt


@dataclass(frozen=True)
class LabelPrompt:
    """The newest prompt applied to one label on one slice.

    Attributes:
        prompt: points, point labels and box on ``prompt.plane``, in slice pixels (row, col).
        order: when it was recorded (higher is newer).
    """

    prompt: Prompt
    order: int

    @property
    def plane(self) -> SlicePlane:
        return self.prompt.plane


def on_stack(plane: SlicePlane, stack: SlicePlane, axis: int) -> bool:
    """Whether ``plane`` is a slice of the stack through ``stack`` along ``axis``.

    Same layer shape and displayed axes, same index on every other
    non-displayed axis; any index along ``axis``.
    """
    return (
        plane.shape == stack.shape
        and (plane.row_axis, plane.col_axis) == (stack.row_axis, stack.col_axis)
        and all(i == j for a, (i, j) in enumerate(zip(plane.index, stack.index, strict=True)) if a != axis)
    )


def ahead(frame: int, source: int, direction: str) -> bool:
    """Whether slice ``frame`` is reached from ``source`` going ``direction`` (``source`` itself: no)."""
    if direction == "forward":
        return frame > source
    if direction == "backward":
        return frame < source
    return frame != source


class SlicePrompts:
    """Per labels layer (its ``unique_id``) and label id: the newest prompt on each slice."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, dict[int, dict[SlicePlane, LabelPrompt]]] = {}
        self._clock = itertools.count()

    def record(self, layer_key: Hashable, label_id: int, prompt: Prompt) -> None:
        """``prompt`` (on ``prompt.plane``) was applied to ``label_id``: it replaces that slice's entry."""
        if label_id <= 0 or prompt.empty:
            return
        labels = self._entries.setdefault(layer_key, {})
        labels.setdefault(int(label_id), {})[prompt.plane] = LabelPrompt(prompt, next(self._clock))

    def entries(self, layer_key: Hashable, label_id: int) -> list[LabelPrompt]:
        """Every slice's newest prompt of ``label_id``, oldest first."""
        found = self._entries.get(layer_key, {}).get(int(label_id), {})
        return sorted(found.values(), key=lambda entry: entry.order)

    def merge(self, layer_key: Hashable, sources: Iterable[int], target: int) -> None:
        """``sources`` were merged into ``target``: on each slice it takes the newest of their prompts.

        The sources keep theirs (an undo of the merge brings them back).
        """
        labels = self._entries.get(layer_key)
        if labels is None:
            return
        merged = dict(labels.get(int(target), {}))
        for source in sources:
            for plane, entry in labels.get(int(source), {}).items():
                if plane not in merged or merged[plane].order < entry.order:
                    merged[plane] = entry
        if merged:
            labels[int(target)] = merged

    def forget_layer(self, layer_key: Hashable) -> None:
        """The layer was removed: drop everything kept for it."""
        self._entries.pop(layer_key, None)

    def corrections(
        self, layer_key: Hashable, label_ids: Iterable[int], stack: SlicePlane, axis: int, direction: str
    ) -> list[SlicePrompt]:
        """The prompts to send with a propagation from ``stack`` (slice k) along ``axis``.

        For each label, its newest prompt on each other slice of the stack
        that the propagation reaches in ``direction`` (``both``, ``forward``,
        ``backward``); slice k itself is never included (its label image is
        the prompt there). Sorted by slice, then label.

        Returns:
            :class:`protocol.ops.SlicePrompt` with ``frame_index`` the slice's
            index along ``axis`` and ``object_id`` the label id.
        """
        source = int(stack.index[axis] or 0)
        found: list[SlicePrompt] = []
        for label_id in sorted({int(i) for i in label_ids}):
            for plane, entry in self._entries.get(layer_key, {}).get(label_id, {}).items():
                frame = int(plane.index[axis] or 0)
                if not on_stack(plane, stack, axis) or not ahead(frame, source, direction):
                    continue
                prompt = entry.prompt
                found.append(SlicePrompt(frame, label_id, prompt.points, prompt.point_labels, prompt.box))
        return sorted(found, key=lambda p: (p.frame_index, p.object_id))
