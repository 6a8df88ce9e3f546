"""Prompts for one 2D slice, built from what the user drew (pure numpy).

The ``Prompt Points`` layer holds points in nD; a prompt uses the points of
one slice only (the slice of the newest point). Each point carries a label:
1 = positive ("this is the object"), 0 = negative ("not this").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from plugin.view.coords import SlicePlane, box_in_plane, inside, on_plane, pixel_in_plane
from protocol.wire.propagate import prompt_params

POSITIVE = 1
NEGATIVE = 0
NEGATIVE_MODIFIERS = frozenset({"Shift", "Alt", "Control", "Meta"})


def point_label(modifiers: Iterable[object], negative_toggle: bool) -> int:
    """The label of a new point: negative when the toggle is on or a modifier key is held.

    Args:
        modifiers: names (or key objects with a ``name``) of the keys held
            during the click, e.g. napari's ``event.modifiers``.
        negative_toggle: the widget's "negative points" switch.
    """
    held = {str(getattr(m, "name", m)) for m in modifiers}
    negative = negative_toggle != bool(held & NEGATIVE_MODIFIERS)
    return NEGATIVE if negative else POSITIVE


@dataclass(frozen=True)
class Prompt:
    """A segment prompt on one slice, in slice pixels.

    Attributes:
        plane: the slice.
        points: ``((row, col), ...)``.
        point_labels: one per point, 1 positive / 0 negative.
        box: ``(row_min, col_min, row_max, col_max)`` or None.
    """

    plane: SlicePlane
    points: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None

    def params(self) -> dict[str, Any]:
        """Wire parameters of the ``segment`` op (points, point_labels, box)."""
        return prompt_params(self.points, self.point_labels, self.box)


def points_prompt(data_points: np.ndarray, labels: Sequence[int], plane: SlicePlane) -> Prompt:
    """The points of ``plane`` that lie on the image, as a prompt.

    Args:
        data_points: (N, ndim) positions in the *image's* data coordinates.
        labels: N point labels (1 / 0).
        plane: the slice to keep.
    """
    points: list[tuple[float, float]] = []
    kept: list[int] = []
    for point, label in zip(np.asarray(data_points, dtype=float), labels, strict=True):
        if not on_plane(point, plane):
            continue
        pixel = pixel_in_plane(point, plane)
        if inside(pixel, plane.size):
            points.append(pixel)
            kept.append(POSITIVE if int(label) else NEGATIVE)
    return Prompt(plane, tuple(points), tuple(kept))


def box_prompt(corners: np.ndarray, plane: SlicePlane) -> Prompt:
    """A box prompt from a rectangle's (4, ndim) corners in image data coordinates.

    Raises:
        coords.OutsideImage: the box misses the image.
    """
    return Prompt(plane, box=box_in_plane(corners, plane))
