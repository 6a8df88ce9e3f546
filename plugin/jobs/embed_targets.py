"""What a click at a place sends, so that it can be embedded ahead (prefetch, Encode stack).

Pure numpy, no Qt, no napari. A click on a slice no larger than the model's
input sends the whole slice (:func:`plugin.view.image_slice.wire_slice`); on a
larger slice it sends the window :func:`protocol.geometry.windows.window_for_prompt`
gives it (:func:`protocol.ops.windowed.segment_windowed`). An
:class:`EmbedTarget` is that image, read exactly as the click path reads it,
so its image key is the key the click will use and the worker's cached
embedding serves the click.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from plugin.view.coords import SlicePlane
from plugin.view.image_slice import LazyPlane, is_large, wire_slice
from protocol.geometry.windows import Window, click_windows, window_for_prompt
from protocol.wire.wire_image import WireImage, to_wire


@dataclass(frozen=True)
class EmbedTarget:
    """The image a click sends: a whole slice, or a window of a large slice.

    Attributes:
        plane: the slice.
        window: the window of a large slice (None: the whole slice).
    """

    plane: SlicePlane
    window: Window | None = None

    @property
    def place(self) -> tuple[Any, ...]:
        """Identity of the place (slice, and window for a large slice), without reading pixels."""
        if self.window is None:
            return self.plane.key
        return (*self.plane.key, *self.window.bbox, self.window.factor)

    def wire(self, data: Any, rgb: bool, contrast_limits: Sequence[float]) -> WireImage:
        """Read and convert the image as the click path does (call off the GUI thread).

        Args:
            data: the image layer's full-resolution data (only the window is read).
            rgb: whether the last axis is colour channels.
            contrast_limits: the layer's ``contrast_limits``.
        """
        if self.window is None:
            return wire_slice(data, self.plane, rgb, contrast_limits)
        low, high = float(contrast_limits[0]), float(contrast_limits[1])
        return to_wire(self.window.read(LazyPlane(data, self.plane, rgb)), (low, high))


def target_at(plane: SlicePlane, pixel: tuple[float, float]) -> EmbedTarget:
    """What a click at wire position ``pixel`` (row, col) of ``plane`` sends (clipped onto the slice)."""
    if not is_large(plane):
        return EmbedTarget(plane)
    height, width = plane.size
    row = min(max(float(pixel[0]), 0.5), height - 0.5)
    col = min(max(float(pixel[1]), 0.5), width - 0.5)
    return EmbedTarget(plane, window_for_prompt(plane.size, [(row, col)]))


def prompt_target(
    plane: SlicePlane, points: np.ndarray | Sequence[Sequence[float]], box: Sequence[float] | None
) -> EmbedTarget:
    """What a prompt (points (N, 2) and/or a box, wire (row, col)) on ``plane`` sends first."""
    if not is_large(plane):
        return EmbedTarget(plane)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return EmbedTarget(plane, window_for_prompt(plane.size, pts if len(pts) else None, box))


def stack_targets(plane: SlicePlane) -> list[EmbedTarget]:
    """Every image clicks on the stack of ``plane`` can send: each slice along every non-displayed axis
    (rows of the first varying slowest), and on a large slice each window a click gets
    (:func:`protocol.geometry.windows.click_windows`)."""
    fixed_axes = [a for a, i in enumerate(plane.index) if i is not None]
    windows: list[Window | None] = list(click_windows(plane.size)) if is_large(plane) else [None]
    targets: list[EmbedTarget] = []
    for indices in itertools.product(*(range(plane.shape[a]) for a in fixed_axes)):
        chosen = dict(zip(fixed_axes, indices, strict=True))
        index = tuple(chosen.get(a) for a in range(plane.ndim))
        here = SlicePlane(plane.shape, plane.row_axis, plane.col_axis, index)
        targets.extend(EmbedTarget(here, window) for window in windows)
    return targets
