"""Prompt validation and THE ONE place where wire (row, col) becomes SAM's (x, y) (SAM2 and SAM 3).

On the wire every coordinate is a pixel position of the sent image in
(row, col) order (napari's and numpy's): points ``[[row, col], ...]`` and
boxes ``[row_min, col_min, row_max, col_max]``. SAM2's predictor wants
(x, y) = (col, row): points Nx2 (x, y) and boxes [x0, y0, x1, y1]. Nothing
else in the project swaps axes.

Positions are continuous: pixel (r, c) covers [r, r+1) x [c, c+1), so valid
coordinates lie in 0 <= row <= H and 0 <= col <= W (the far pixel edge
included).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_POINTS = 64


class PromptError(ValueError):
    """A prompt that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class SamPrompt:
    """A prompt in SAM2's conventions, ready for ``SAM2ImagePredictor.predict``.

    Attributes:
        point_coords: float32 (N, 2), each (x, y) in pixels of the image, or None.
        point_labels: int32 (N,), 1 = positive, 0 = negative, or None.
        box: float32 (4,), [x0, y0, x1, y1] in pixels, or None.
    """

    point_coords: np.ndarray | None
    point_labels: np.ndarray | None
    box: np.ndarray | None


@dataclass(frozen=True)
class Prompt:
    """A validated prompt in wire conventions.

    Attributes:
        points: float64 (N, 2), each (row, col) in pixels, or None.
        point_labels: int32 (N,), 1 = positive, 0 = negative, or None.
        box: float64 (4,), [row_min, col_min, row_max, col_max] in pixels, or None.
    """

    points: np.ndarray | None
    point_labels: np.ndarray | None
    box: np.ndarray | None

    def to_json(self) -> dict[str, Any]:
        """The prompt as received (after validation), in (row, col): JSON values."""
        return {
            "points": None if self.points is None else self.points.tolist(),
            "point_labels": None if self.point_labels is None else self.point_labels.tolist(),
            "box": None if self.box is None else self.box.tolist(),
        }

    def to_sam(self) -> SamPrompt:
        """The same prompt in SAM2's (x, y) conventions."""
        return SamPrompt(
            point_coords=None if self.points is None else points_rc_to_xy(self.points),
            point_labels=None if self.point_labels is None else self.point_labels.astype(np.int32),
            box=None if self.box is None else box_rc_to_xyxy(self.box),
        )


def points_rc_to_xy(points_rc: np.ndarray) -> np.ndarray:
    """(N, 2) points in (row, col) -> float32 (N, 2) in (x, y) = (col, row)."""
    points = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
    return np.ascontiguousarray(points[:, ::-1], dtype=np.float32)


def box_rc_to_xyxy(box_rc: np.ndarray) -> np.ndarray:
    """[row_min, col_min, row_max, col_max] -> float32 [x0, y0, x1, y1].

    x0 = col_min, y0 = row_min, x1 = col_max, y1 = row_max.
    """
    r0, c0, r1, c1 = (float(v) for v in np.asarray(box_rc, dtype=np.float64).reshape(4))
    return np.array([c0, r0, c1, r1], dtype=np.float32)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(value: object, what: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or not all(_is_number(v) for v in value):
        raise PromptError(f"{what} must be a list of numbers, got {value!r}"[:300])
    numbers = [float(v) for v in value]
    if not all(math.isfinite(v) for v in numbers):
        raise PromptError(f"{what} must be finite numbers (no NaN or infinity), got {numbers}")
    return numbers


def _check_inside(row: float, col: float, height: int, width: int, what: str) -> None:
    if not (0.0 <= row <= height and 0.0 <= col <= width):
        raise PromptError(
            f"{what} (row={row:g}, col={col:g}) is outside the image: "
            f"need 0 <= row <= {height} and 0 <= col <= {width}"
        )


def _parse_points(
    raw_points: object, raw_labels: object, height: int, width: int, max_points: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if raw_points is None or (isinstance(raw_points, (list, tuple)) and len(raw_points) == 0):
        if raw_labels not in (None, []):
            raise PromptError("point_labels given without points")
        return None, None
    if not isinstance(raw_points, (list, tuple)):
        raise PromptError(f"points must be a list of [row, col] pairs, got {type(raw_points).__name__}")
    if len(raw_points) > max_points:
        raise PromptError(f"{len(raw_points)} points, at most {max_points} are allowed")
    points = []
    for i, pair in enumerate(raw_points):
        numbers = _numbers(pair, f"points[{i}]")
        if len(numbers) != 2:
            raise PromptError(f"points[{i}] must be [row, col], got {len(numbers)} numbers")
        _check_inside(numbers[0], numbers[1], height, width, f"points[{i}]")
        points.append(numbers)
    if raw_labels is None:
        raise PromptError("point_labels are required with points (1 = positive, 0 = negative)")
    if not isinstance(raw_labels, (list, tuple)) or not all(
        type(v) is int or (type(v) is float and v in (0.0, 1.0)) for v in raw_labels
    ):
        raise PromptError(f"point_labels must be a list of 0/1 integers, got {raw_labels!r}"[:300])
    labels = [int(v) for v in raw_labels]
    if any(v not in (0, 1) for v in labels):
        raise PromptError(f"point_labels must be 0 (negative) or 1 (positive), got {labels}")
    if len(labels) != len(points):
        raise PromptError(f"{len(points)} points but {len(labels)} point_labels")
    return np.array(points, dtype=np.float64), np.array(labels, dtype=np.int32)


def _parse_box(raw_box: object, height: int, width: int) -> np.ndarray | None:
    if raw_box is None:
        return None
    numbers = _numbers(raw_box, "box")
    if len(numbers) != 4:
        raise PromptError(f"box must be [row_min, col_min, row_max, col_max], got {len(numbers)} numbers")
    r0, c0, r1, c1 = numbers
    _check_inside(r0, c0, height, width, "box corner (row_min, col_min)")
    _check_inside(r1, c1, height, width, "box corner (row_max, col_max)")
    if r0 > r1 or c0 > c1:
        raise PromptError(f"box must have row_min <= row_max and col_min <= col_max, got {numbers}")
    return np.array(numbers, dtype=np.float64)


def parse_prompt(
    params: Mapping[str, Any], image_hw: tuple[int, int], max_points: int = MAX_POINTS
) -> Prompt:
    """Validate the prompt fields of segment ``params`` against an image of size ``image_hw``.

    Args:
        params: request params; reads ``points`` ([[row, col], ...]),
            ``point_labels`` ([0|1, ...]) and ``box`` ([r0, c0, r1, c1]).
        image_hw: (H, W) of the sent image, in pixels.
        max_points: most points accepted in one prompt.

    Returns:
        The prompt in (row, col); call :meth:`Prompt.to_sam` for SAM's (x, y).

    Raises:
        PromptError: non-numbers, NaN/inf, outside the image, labels not 0/1 or
            not one per point, inverted box, too many points, or no prompt at all.
    """
    height, width = image_hw
    points, labels = _parse_points(
        params.get("points"), params.get("point_labels"), height, width, max_points
    )
    box = _parse_box(params.get("box"), height, width)
    if points is None and box is None:
        raise PromptError("the prompt is empty: give at least one point (points + point_labels) or a box")
    return Prompt(points, labels, box)


def parse_concept_boxes(
    raw_boxes: object, raw_labels: object, image_hw: tuple[int, int], max_boxes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``concept``'s exemplar ``boxes`` and ``box_labels`` against an image of size ``image_hw``.

    Returns:
        float64 (N, 4) boxes [row_min, col_min, row_max, col_max] in pixels and bool (N,) labels
        (True: an instance of the concept, False: not one; default all True); N may be 0.

    Raises:
        PromptError: not a list of boxes, a bad box (as for ``segment``), too many, or labels not 0/1
            or not one per box.
    """
    if raw_boxes is None:
        raw_boxes = []
    if not isinstance(raw_boxes, (list, tuple)):
        raise PromptError(
            f"boxes must be a list of [row_min, col_min, row_max, col_max], got {raw_boxes!r}"[:300]
        )
    if len(raw_boxes) > max_boxes:
        raise PromptError(f"{len(raw_boxes)} exemplar boxes, at most {max_boxes} are allowed")
    boxes = [_parse_box(box, *image_hw) for box in raw_boxes]
    labels = [1] * len(boxes) if raw_labels is None else raw_labels
    if (
        not isinstance(labels, (list, tuple))
        or len(labels) != len(boxes)
        or any(v not in (0, 1) for v in labels)
    ):
        raise PromptError(
            f"box_labels must give 0 or 1 for each of the {len(boxes)} boxes, got {raw_labels!r}"[:300]
        )
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(labels, dtype=bool)


def boxes_rc_to_cxcywh(boxes_rc: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """(N, 4) [row_min, col_min, row_max, col_max] pixels -> float32 (N, 4) SAM 3 boxes
    (center x, center y, width, height), each divided by the image's width (x) or height (y)."""
    height, width = image_hw
    r0, c0, r1, c1 = np.asarray(boxes_rc, dtype=np.float64).reshape(-1, 4).T
    boxes = np.stack(
        [(c0 + c1) / 2 / width, (r0 + r1) / 2 / height, (c1 - c0) / width, (r1 - r0) / height], 1
    )
    return np.ascontiguousarray(boxes, dtype=np.float32)
