# One file on purpose: a window, where it is placed and grown, and the way back from it, read together.
"""Windows of a large slice around a prompt: which pixels to send, and the way back.

SAM2 looks at ``model_input`` (1024) px on the long side. For a slice larger
than that, a prompt goes with a *window* of the slice at native resolution
rather than the whole slice (``protocol/README.md``, "Images larger than the
model's input"). This module is pure numpy and knows nothing of napari or the
network:

* :func:`window_for_prompt` picks the window for a prompt: at least
  ``model_input`` px where the slice allows, grown to hold the prompt's extent
  plus a margin, its origin snapped to a grid of half the window's size (so
  nearby clicks get the same window, hence the same image key and cached
  embedding), shifted to stay inside the slice. A prompt larger than
  ``model_input`` gets a window of ``factor * model_input`` px that is
  block-averaged by ``factor`` before sending, as SAM would shrink it.
* :class:`Window` maps prompts into the sent image, reads its pixels from any
  array-like (numpy, zarr, dask: only the window is read) and brings masks
  back to native resolution at the window's offset.
* :func:`click_windows` lists every window a single click on a slice can
  get (what embedding a whole slice ahead of clicks means).
* :func:`touched_inner_sides` and :func:`grow_window` say whether a mask
  runs into the window's border (one that is not the slice's) and propose
  the window to ask again with.

Coordinates: every array index and every position here is (row, col).
Prompt positions are continuous, as on the wire: pixel (r, c) covers
[r, r+1) x [c, c+1), so its centre is (r + 0.5, c + 0.5). Under that
convention a window at offset (row0, col0) with block factor f maps a slice
position p to (p - (row0, col0)) / f exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MODEL_INPUT = 1024
"""SAM2's input size on the long side, in pixels."""

DEFAULT_MARGIN_PX = 64
"""Context kept around a prompt's extent, in native pixels, on each side."""

MAX_FACTOR = 8
"""Largest block factor: a window never spans more than ``MAX_FACTOR * model_input`` px."""

SIDES = ("top", "bottom", "left", "right")


@dataclass(frozen=True)
class Window:
    """A rectangle of a 2D slice and how it is sent.

    Attributes:
        row0, col0: the window's first pixel in the slice (native pixels).
        rows, cols: its size in native pixels.
        factor: native pixels per sent pixel along each axis (1: sent at
            native resolution; f > 1: block-averaged by f x f before sending).
        slice_shape: (H, W) of the slice the window belongs to.
    """

    row0: int
    col0: int
    rows: int
    cols: int
    factor: int
    slice_shape: tuple[int, int]

    def __post_init__(self) -> None:
        height, width = self.slice_shape
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if not (0 <= self.row0 and self.rows >= 1 and self.row0 + self.rows <= height):
            raise ValueError(f"window rows {self.row0}..{self.row0 + self.rows} outside the slice's {height}")
        if not (0 <= self.col0 and self.cols >= 1 and self.col0 + self.cols <= width):
            raise ValueError(f"window cols {self.col0}..{self.col0 + self.cols} outside slice width {width}")

    # -- geometry ---------------------------------------------------------

    @property
    def row1(self) -> int:
        """One past the last row (exclusive)."""
        return self.row0 + self.rows

    @property
    def col1(self) -> int:
        """One past the last column (exclusive)."""
        return self.col0 + self.cols

    @property
    def offset(self) -> tuple[int, int]:
        """(row0, col0): where the window's pixel (0, 0) lies in the slice."""
        return self.row0, self.col0

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """[row0, col0, row1, col1) in slice pixels (end exclusive)."""
        return self.row0, self.col0, self.row1, self.col1

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index of the window in the slice: ``source[window.slices]``."""
        return slice(self.row0, self.row1), slice(self.col0, self.col1)

    @property
    def sent_shape(self) -> tuple[int, int]:
        """(rows, cols) of the image actually sent (after block averaging)."""
        return math.ceil(self.rows / self.factor), math.ceil(self.cols / self.factor)

    @property
    def is_whole_slice(self) -> bool:
        return self.rows == self.slice_shape[0] and self.cols == self.slice_shape[1]

    def inner_sides(self) -> tuple[str, ...]:
        """The sides of the window that are not also the slice's border."""
        height, width = self.slice_shape
        sides = []
        if self.row0 > 0:
            sides.append("top")
        if self.row1 < height:
            sides.append("bottom")
        if self.col0 > 0:
            sides.append("left")
        if self.col1 < width:
            sides.append("right")
        return tuple(sides)

    # -- pixels -----------------------------------------------------------

    def read(self, source: Any) -> np.ndarray:
        """The pixels to send, read from ``source``.

        Args:
            source: (H, W) or (H, W, C) array-like supporting numpy basic
                slicing (numpy, zarr, dask, napari's data); only the window's
                region is indexed.

        Returns:
            (rows, cols[, C]) at factor 1, else block-averaged to
            ``sent_shape`` (see :func:`block_mean`), in the source's dtype.
        """
        if tuple(int(s) for s in source.shape[:2]) != self.slice_shape:
            raise ValueError(f"source of shape {tuple(source.shape)} is not a slice of {self.slice_shape}")
        pixels = np.asarray(source[self.slices])
        return block_mean(pixels, self.factor)

    # -- prompts into the window ------------------------------------------

    def points_to_window(self, points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
        """Slice positions (N, 2) (row, col) -> positions in the sent image (N, 2) float64."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return (pts - np.array(self.offset, dtype=np.float64)) / self.factor

    def box_to_window(self, box: Sequence[float]) -> np.ndarray:
        """Slice box [r0, c0, r1, c1] -> the same box in the sent image (float64 (4,))."""
        b = np.asarray(box, dtype=np.float64).reshape(4)
        origin = np.array([self.row0, self.col0, self.row0, self.col0], dtype=np.float64)
        return (b - origin) / self.factor

    # -- masks back to the slice ------------------------------------------

    def mask_to_native(self, sent_mask: np.ndarray) -> np.ndarray:
        """A mask of the sent image -> a bool (rows, cols) mask at native resolution.

        Each sent pixel becomes a ``factor x factor`` block (nearest
        neighbour), cropped to the window's size.
        """
        mask = np.asarray(sent_mask)
        if mask.shape != self.sent_shape:
            raise ValueError(f"mask of shape {mask.shape} does not match the sent image {self.sent_shape}")
        mask = mask.astype(bool, copy=False)
        if self.factor == 1:
            return mask
        return upsample_blocks(mask, self.factor)[: self.rows, : self.cols]


def block_mean(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Shrink (H, W) or (H, W, C) by ``factor`` along rows and columns by block averaging.

    Edge blocks that are cut short average the pixels they have. The result
    keeps the input's dtype (integers rounded to nearest; bool becomes the
    majority of its block, ties to True), shape (ceil(H/f), ceil(W/f)[, C]).
    ``factor`` 1 returns the input unchanged.
    """
    if factor == 1:
        return pixels
    height, width = pixels.shape[:2]
    out_h, out_w = math.ceil(height / factor), math.ceil(width / factor)
    pad_w = out_w * factor - width
    rest = pixels.shape[2:]
    out = np.empty((out_h, out_w, *rest), dtype=pixels.dtype)
    # Row bands bound the temporary float64 memory to factor rows of blocks at a time.
    band_rows = max(1, (1 << 22) // max(1, width * factor * (math.prod(rest) or 1)))
    for r in range(0, out_h, band_rows):
        r_end = min(out_h, r + band_rows)
        band = pixels[r * factor : min(height, r_end * factor)].astype(np.float64)
        rows_here = r_end - r
        missing = rows_here * factor - band.shape[0]
        counts_r = np.full(rows_here, factor, dtype=np.float64)
        counts_r[-1] -= missing
        if missing or pad_w:
            band = np.pad(band, [(0, missing), (0, pad_w)] + [(0, 0)] * len(rest))
        sums = band.reshape(rows_here, factor, out_w, factor, *rest).sum(axis=(1, 3))
        counts_c = np.full(out_w, factor, dtype=np.float64)
        counts_c[-1] -= pad_w
        counts = np.outer(counts_r, counts_c).reshape(rows_here, out_w, *([1] * len(rest)))
        means = sums / counts
        if pixels.dtype == np.bool_:
            out[r:r_end] = means >= 0.5
        elif pixels.dtype.kind in "ui":
            info = np.iinfo(pixels.dtype)
            out[r:r_end] = np.clip(np.rint(means), info.min, info.max)
        else:
            out[r:r_end] = means
    return out


def upsample_blocks(array: np.ndarray, factor: int) -> np.ndarray:
    """Each element of (h, w) becomes a ``factor x factor`` block: (h*f, w*f)."""
    if factor == 1:
        return array
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def prompt_extent(
    points: np.ndarray | Sequence[Sequence[float]] | None = None, box: Sequence[float] | None = None
) -> tuple[float, float, float, float]:
    """Bounding box [r0, c0, r1, c1] of all points (N, 2) and the box, in continuous slice positions.

    Raises:
        ValueError: neither points nor box, or non-finite values.
    """
    coords: list[np.ndarray] = []
    if points is not None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(pts):
            coords.append(pts)
    if box is not None:
        b = np.asarray(box, dtype=np.float64).reshape(4)
        coords.append(b.reshape(2, 2))
    if not coords:
        raise ValueError("a prompt needs points or a box")
    allc = np.concatenate(coords)
    if not np.isfinite(allc).all():
        raise ValueError("prompt positions must be finite")
    lo, hi = allc.min(axis=0), allc.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _place(start: float, stop: float, size: int, length: int, grid: int) -> int:
    """Origin of a window of ``size`` along an axis of ``length`` that holds [start, stop).

    Snapped to multiples of ``grid`` (then ``grid // 2``) when one such
    origin holds the interval, choosing the one whose centre is nearest the
    interval's centre; else centred on the interval. Always clipped to
    [0, length - size].
    """
    if size >= length:
        return 0
    lo, hi = max(0.0, start), min(float(length), stop)
    centre = (lo + hi) / 2.0
    for step in (grid, grid // 2):
        if step < 1:
            continue
        first = math.ceil((hi - size) / step)
        last = math.floor(lo / step)
        candidates = [k * step for k in range(max(first, 0), last + 1) if k * step + size <= length]
        if candidates:
            return min(candidates, key=lambda o: (abs(o + size / 2.0 - centre), o))
    origin = int(round(centre - size / 2.0))
    return min(max(origin, 0), length - size)


def window_for_region(
    slice_shape: Sequence[int],
    region: Sequence[float],
    *,
    model_input: int = MODEL_INPUT,
    margin_px: int = DEFAULT_MARGIN_PX,
    max_factor: int = MAX_FACTOR,
) -> Window:
    """The window that holds ``region`` [r0, c0, r1, c1] (continuous slice positions) plus a margin.

    Its side is ``factor * model_input`` for the smallest factor (<=
    ``max_factor``) that holds the region plus ``margin_px`` on each side,
    clipped to the slice; the origin is snapped to a grid of half the side
    and shifted to stay inside the slice. A slice no larger than
    ``model_input`` is always sent whole.
    """
    height, width = int(slice_shape[0]), int(slice_shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"slice must not be empty, got shape {(height, width)}")
    r0, c0, r1, c1 = (float(v) for v in region)
    need = max(r1 - r0, c1 - c0, 0.0) + 2 * margin_px
    factor = min(max(1, math.ceil(need / model_input)), max_factor)
    side = factor * model_input
    rows, cols = min(side, height), min(side, width)
    # A clipped window needs no more averaging than its long side calls for.
    factor = max(1, math.ceil(max(rows, cols) / model_input))
    grid = max(1, side // 2)
    row0 = _place(r0 - margin_px, r1 + margin_px, rows, height, grid)
    col0 = _place(c0 - margin_px, c1 + margin_px, cols, width, grid)
    return Window(row0, col0, rows, cols, factor, (height, width))


def window_for_prompt(
    slice_shape: Sequence[int],
    points: np.ndarray | Sequence[Sequence[float]] | None = None,
    box: Sequence[float] | None = None,
    *,
    model_input: int = MODEL_INPUT,
    margin_px: int = DEFAULT_MARGIN_PX,
    max_factor: int = MAX_FACTOR,
) -> Window:
    """The window to send with a prompt on a slice of ``slice_shape`` (H, W).

    Args:
        slice_shape: (H, W) of the 2D slice.
        points: (N, 2) (row, col) continuous slice positions (pixel centres at +0.5).
        box: [r0, c0, r1, c1] in the same coordinates.
        model_input: the model's input size (px on the long side).
        margin_px: context around the prompt's extent, each side.
        max_factor: the largest block-averaging factor allowed.

    Returns:
        The :class:`Window`; for a slice no larger than ``model_input``, the whole slice.
    """
    return window_for_region(
        slice_shape,
        prompt_extent(points, box),
        model_input=model_input,
        margin_px=margin_px,
        max_factor=max_factor,
    )


def click_windows(
    slice_shape: Sequence[int],
    *,
    model_input: int = MODEL_INPUT,
    margin_px: int = DEFAULT_MARGIN_PX,
    max_factor: int = MAX_FACTOR,
) -> list[Window]:
    """Every window a single click somewhere on a slice of ``slice_shape`` (H, W) gets, rows first.

    The windows :func:`window_for_prompt` gives one point at each pixel
    centre (rows and columns are placed independently, so these are the
    row origins times the column origins): embedding them all ahead makes
    every later click on the slice a decoder call. A slice no larger than
    ``model_input`` has one window, itself.
    """
    height, width = int(slice_shape[0]), int(slice_shape[1])
    sizing = {"model_input": model_input, "margin_px": margin_px, "max_factor": max_factor}
    row_origins = sorted(
        {
            window_for_region((height, width), (r + 0.5, 0.5, r + 0.5, 0.5), **sizing).row0
            for r in range(height)
        }
    )
    by_col = {
        window_for_region((height, width), (0.5, c + 0.5, 0.5, c + 0.5), **sizing) for c in range(width)
    }
    columns = sorted({(w.col0, w.cols) for w in by_col})
    first = next(iter(by_col))
    return [
        Window(row0, col0, first.rows, cols, first.factor, (height, width))
        for row0 in row_origins
        for col0, cols in columns
    ]


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """[r0, c0, r1, c1) of the True pixels of a 2D mask (end exclusive); None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def touched_inner_sides(window: Window, native_mask: np.ndarray) -> tuple[str, ...]:
    """The inner sides of ``window`` (not the slice's border) that the mask touches.

    Args:
        window: the window the mask was computed on.
        native_mask: bool (rows, cols) mask in window coordinates, native
            resolution (:meth:`Window.mask_to_native`).

    Returns:
        A subset of ``("top", "bottom", "left", "right")``; empty when the
        mask lies inside the window or touches only the slice's own border.
    """
    if native_mask.shape != (window.rows, window.cols):
        raise ValueError(f"mask {native_mask.shape} is not of the window size {(window.rows, window.cols)}")
    # At factor f the last sent row covers the last f native rows.
    edge = window.factor
    touched = []
    for side in window.inner_sides():
        strip = {
            "top": native_mask[:edge],
            "bottom": native_mask[-edge:],
            "left": native_mask[:, :edge],
            "right": native_mask[:, -edge:],
        }[side]
        if strip.any():
            touched.append(side)
    return tuple(touched)


def grow_window(
    window: Window,
    native_mask: np.ndarray,
    prompt_region: Sequence[float],
    *,
    model_input: int = MODEL_INPUT,
    margin_px: int = DEFAULT_MARGIN_PX,
    max_factor: int = MAX_FACTOR,
) -> Window | None:
    """The window to ask again with when the mask runs into an inner side; None when there is none.

    The new window holds the prompt and the mask's bounding box, extended
    past every touched side by a quarter of the window's side (the object
    goes on there), plus the margin; it is chosen like any window (snapped,
    inside the slice), so it is shifted, larger, or both.

    Args:
        window: the window the mask came from.
        native_mask: bool (rows, cols) mask in window coordinates.
        prompt_region: [r0, c0, r1, c1] of the prompt (:func:`prompt_extent`).

    Returns:
        A different window, or None when the mask touches no inner side or
        no larger window can be built (``max_factor`` reached).
    """
    touched = touched_inner_sides(window, native_mask)
    box = mask_bbox(native_mask)
    if not touched or box is None:
        return None
    reach = max(window.rows, window.cols) // 4
    r0, c0 = box[0] + window.row0, box[1] + window.col0
    r1, c1 = box[2] + window.row0, box[3] + window.col0
    if "top" in touched:
        r0 -= reach
    if "bottom" in touched:
        r1 += reach
    if "left" in touched:
        c0 -= reach
    if "right" in touched:
        c1 += reach
    pr0, pc0, pr1, pc1 = prompt_region
    region = (min(r0, pr0), min(c0, pc0), max(r1, pr1), max(c1, pc1))
    height, width = window.slice_shape
    region = (max(region[0], 0), max(region[1], 0), min(region[2], height), min(region[3], width))
    new = window_for_region(
        window.slice_shape, region, model_input=model_input, margin_px=margin_px, max_factor=max_factor
    )
    return None if new == window else new
