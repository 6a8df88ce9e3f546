"""A prompt on a slice of any size: sent with a window around it, answered as a bounding-box mask.

:func:`segment_windowed` picks the window of the slice around the prompt
(:func:`protocol.geometry.windows.window_for_prompt`), reads only that window from
the source (numpy, zarr, dask...), sends it with the prompt translated into
the window (``segment``), brings the mask back to native resolution, and
when the mask runs into an inner side of the window (one that is not the
slice's border) asks again on a grown or shifted window
(:func:`protocol.geometry.windows.grow_window`), up to ``max_tries`` requests. The
caller gets one answer: the mask cropped to its bounding box and that box's
offset in the slice, never a full-slice mask, so pasting it costs the size
of the object, not of the slice.

A slice no larger than the model's input is its own window: the answer is
then the same as a plain ``segment`` on the slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol.geometry.windows import (
    DEFAULT_MARGIN_PX,
    MAX_FACTOR,
    MODEL_INPUT,
    Window,
    grow_window,
    mask_bbox,
    prompt_extent,
    touched_inner_sides,
    window_for_prompt,
)
from protocol.ops import requests as ops
from protocol.wire.client import SamClient
from protocol.wire.wire_image import to_wire

DEFAULT_MAX_TRIES = 3


@dataclass(frozen=True)
class WindowedMask:
    """The answer to a prompt on a large slice.

    Attributes:
        mask: bool (h, w), the object's pixels inside its bounding box
            (``(0, 0)`` shape when the answer is empty).
        offset: (row0, col0) of ``mask[0, 0]`` in the slice.
        window: the window the final answer was computed on.
        tries: requests sent (1 when the first window held the mask).
        touches_border: the final mask still touches an inner side of its
            window (``max_tries`` reached, or no larger window allowed).
        scores: the worker's scores of the final answer.
        logits: (1, 256, 256) float32 low-res logits of the final answer
            (valid as ``mask_input`` only with the same ``window``), or None.
    """

    mask: np.ndarray = field(repr=False)
    offset: tuple[int, int]
    window: Window
    tries: int
    touches_border: bool
    scores: tuple[float, ...] = ()
    logits: np.ndarray | None = field(default=None, repr=False)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """[r0, c0, r1, c1) of ``mask`` in the slice."""
        return (
            self.offset[0],
            self.offset[1],
            self.offset[0] + self.mask.shape[0],
            self.offset[1] + self.mask.shape[1],
        )

    @property
    def empty(self) -> bool:
        return self.mask.size == 0

    def paste_into(self, target: Any, value: int | bool = True) -> None:
        """Write ``value`` where the mask is True into ``target`` (H, W), touching only the bounding box."""
        if self.empty:
            return
        region = (slice(self.bbox[0], self.bbox[2]), slice(self.bbox[1], self.bbox[3]))
        patch = np.array(target[region])
        patch[self.mask] = value
        target[region] = patch


def segment_windowed(
    client: SamClient,
    source: Any,
    points: Sequence[Sequence[float]] | np.ndarray = (),
    point_labels: Sequence[int] = (),
    box: Sequence[float] | None = None,
    *,
    contrast_limits: tuple[float, float] | None = None,
    mask_input: np.ndarray | None = None,
    window: Window | None = None,
    model_input: int = MODEL_INPUT,
    margin_px: int = DEFAULT_MARGIN_PX,
    max_factor: int = MAX_FACTOR,
    max_tries: int = DEFAULT_MAX_TRIES,
) -> WindowedMask:
    """Segment the object of a prompt on an (H, W[, C]) slice, reading and sending only a window.

    Args:
        client: the caller's client (blocking; call off any GUI thread).
        source: the slice, (H, W) grey or (H, W, 3|4) colour, any array-like
            with numpy slicing.
        points: (N, 2) (row, col) positions in the slice, continuous as on
            the wire (the centre of pixel (r, c) is (r + 0.5, c + 0.5)).
        point_labels: (N,) 1 = positive, 0 = negative.
        box: [r0, c0, r1, c1] in the same coordinates, or None.
        contrast_limits: (low, high) for non-uint8 pixels (what the user
            sees); ``None``: the window's own range.
        mask_input: low-res logits of a previous answer on the same window
            (pass that answer's ``window`` too), or None.
        window: use this window first instead of choosing one.
        model_input, margin_px, max_factor: see :func:`protocol.geometry.windows.window_for_prompt`.
        max_tries: most requests (the first plus retries on grown windows).

    Returns:
        :class:`WindowedMask` with the bounding-box mask and its offset.

    Raises:
        RemoteError, RequestTimeout, AnswerError: the request failed.
        ValueError: no prompt, or points and labels of different lengths.
    """
    slice_shape = (int(source.shape[0]), int(source.shape[1]))
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) != len(point_labels):
        raise ValueError(f"{len(pts)} points but {len(point_labels)} point labels")
    region = prompt_extent(pts if len(pts) else None, box)
    sizing = {"model_input": model_input, "margin_px": margin_px, "max_factor": max_factor}
    current = window or window_for_prompt(slice_shape, pts if len(pts) else None, box, **sizing)
    tries = 0
    while True:
        tries += 1
        image = to_wire(current.read(source), contrast_limits)
        win_points = [tuple(p) for p in current.points_to_window(pts)] if len(pts) else []
        win_box = tuple(current.box_to_window(box)) if box is not None else None
        answer = ops.segment(
            client,
            image,
            win_points,
            [int(v) for v in point_labels],
            win_box,
            mask_input=mask_input if tries == 1 else None,
        )
        native = current.mask_to_native(answer.mask)
        touched = bool(touched_inner_sides(current, native))
        grown = grow_window(current, native, region, **sizing) if touched and tries < max_tries else None
        if grown is None:
            return _cropped(native, current, tries, touched, answer)
        current = grown


def _cropped(
    native: np.ndarray, window: Window, tries: int, touched: bool, answer: ops.SegmentAnswer
) -> WindowedMask:
    box = mask_bbox(native)
    if box is None:
        mask, offset = np.zeros((0, 0), dtype=bool), window.offset
    else:
        mask = np.ascontiguousarray(native[box[0] : box[2], box[1] : box[3]])
        offset = (window.row0 + box[0], window.col0 + box[1])
    return WindowedMask(mask, offset, window, tries, touched, answer.scores, answer.logits)
