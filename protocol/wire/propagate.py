"""The ``propagate`` request, built and parsed in one place (client and worker).

A ``propagate`` request carries (see protocol/README.md, "Operations"):

* params: ``frame_index`` (k, the slice the prompts start from, 0..Z-1),
  ``direction`` (``both``, ``forward``: k, k+1, ... or ``backward``: k, k-1, ...),
  optionally ``max_frames`` (slices past k in each direction), ``contrast_limits``,
  and either the one-object form (a ``mask`` array, or ``points`` /
  ``point_labels`` / ``box`` in (row, col)) or the many-object form (a ``masks``
  array and/or a ``prompts`` list: one entry per object and slice);
* arrays: ``stack`` ((Z, H, W) or (Z, H, W, 3|4)), ``mask`` (bool (H, W)) or ``masks``
  (uint32 (H, W) label image of slice k).

:class:`PropagateRequest` builds the params (``to_params``, used by
:mod:`protocol.ops.requests`) and checks a request's (``from_params``, used by the
worker, which parses each prompt's points and box itself: ``workers.prompts``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DIRECTIONS = ("both", "forward", "backward")
"""Propagation directions: from slice k both ways, k, k+1, ... or k, k-1, ..."""
MAX_OBJECTS = 64
"""Most objects tracked in one request (each costs a memory-attention + decoder pass per slice)."""
MAX_PROMPTS = 4 * MAX_OBJECTS
"""Most entries in ``prompts``."""
PROMPT_FIELDS = ("points", "point_labels", "box")
"""The prompt of one object on one slice: points ``[[row, col], ...]``, labels 1/0, ``[r0, c0, r1, c1]``."""
PARAMS = frozenset({"frame_index", "direction", "max_frames", "contrast_limits", "prompts", *PROMPT_FIELDS})
"""Every param a ``propagate`` request may carry."""
ARRAYS = frozenset({"stack", "mask", "masks"})
"""Every array a ``propagate`` request may carry."""

Point = tuple[float, float]
Box = tuple[float, float, float, float]


def prompt_params(
    points: Sequence[Point] = (), point_labels: Sequence[int] = (), box: Box | None = None
) -> dict[str, Any]:
    """The prompt parameters of a request (``points``, ``point_labels``, ``box``; ``segment`` too).

    Args:
        points: ``((row, col), ...)`` in pixels of the sent image.
        point_labels: one per point, 1 positive / 0 negative.
        box: ``(row_min, col_min, row_max, col_max)`` or None.

    Raises:
        ValueError: a different number of points and labels.
    """
    if len(points) != len(point_labels):
        raise ValueError(f"{len(points)} points but {len(point_labels)} point labels")
    params: dict[str, Any] = {}
    if len(points):
        params["points"] = [[float(r), float(c)] for r, c in points]
        params["point_labels"] = [int(label) for label in point_labels]
    if box is not None:
        params["box"] = [float(v) for v in box]
    return params


def has_prompt(params: Mapping[str, Any]) -> bool:
    """Whether ``params`` hold a prompt (any of points, point_labels, box, not empty)."""
    return any(params.get(name) not in (None, []) for name in PROMPT_FIELDS)


@dataclass(frozen=True)
class SlicePrompt:
    """Points and/or a box for one object on one slice (a correction, or the object's start).

    Attributes:
        frame_index: the slice (0..Z-1).
        object_id: the object's id (1..2**32-1).
        points, point_labels, box: as :func:`prompt_params`, in (row, col).
    """

    frame_index: int
    object_id: int
    points: tuple[Point, ...] = ()
    point_labels: tuple[int, ...] = ()
    box: Box | None = None

    def to_wire(self) -> dict[str, Any]:
        """The ``prompts`` entry of a ``propagate`` request."""
        return {
            "frame_index": int(self.frame_index),
            "object_id": int(self.object_id),
            **prompt_params(self.points, self.point_labels, self.box),
        }


@dataclass(frozen=True)
class PromptEntry:
    """One checked entry of a request's ``prompts``: its slice and object, and its prompt fields
    (``points`` / ``point_labels`` / ``box`` as sent: the worker parses them against the image)."""

    frame_index: int
    object_id: int
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class PropagateRequest:
    """The params of a ``propagate`` request (the arrays go beside them).

    Attributes:
        frame_index: k, the slice the prompts start from.
        direction: one of :data:`DIRECTIONS`.
        prompts: points/boxes per object and slice (the many-object form).
        max_frames: at most this many slices past k in each direction (None: to the end).
    """

    frame_index: int
    direction: str = "both"
    prompts: tuple[SlicePrompt, ...] = ()
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")

    def to_params(self) -> dict[str, Any]:
        """The request's ``params`` (JSON-able)."""
        params: dict[str, Any] = {"frame_index": int(self.frame_index), "direction": self.direction}
        if self.prompts:
            params["prompts"] = [p.to_wire() for p in self.prompts]
        if self.max_frames is not None:
            params["max_frames"] = int(self.max_frames)
        return params

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], frames: int
    ) -> tuple[PropagateRequest, list[PromptEntry]]:
        """Check a request's params against a stack of ``frames`` slices.

        Returns:
            The request (its ``prompts`` empty) and the checked ``prompts`` entries.

        Raises:
            ValueError: an unknown param, a missing or out-of-range ``frame_index``,
                an unknown direction, a bad ``max_frames``, or a malformed ``prompts`` entry
                (the message names it).
        """
        unknown = sorted(set(params) - PARAMS)
        if unknown:
            raise ValueError(f"unknown params for op 'propagate': {unknown}; allowed: {sorted(PARAMS)}")
        if "frame_index" not in params:
            raise ValueError("propagate needs 'frame_index': the slice (0..Z-1) the prompt is on")
        frame_index = _index(params["frame_index"], frames, "param 'frame_index'")
        direction = params.get("direction", "both")
        if direction not in DIRECTIONS:
            raise ValueError(f"param 'direction' must be one of {list(DIRECTIONS)}, got {direction!r}")
        max_frames = params.get("max_frames")
        if max_frames is not None and (type(max_frames) is not int or not 0 <= max_frames <= frames):
            raise ValueError(f"param 'max_frames' must be an integer in 0..{frames}, got {max_frames!r}")
        entries = _entries(params.get("prompts", []), frames)
        return cls(frame_index, direction, max_frames=max_frames), entries


def _index(value: Any, frames: int, what: str) -> int:
    if type(value) is not int or not 0 <= value < frames:
        raise ValueError(f"{what} must be an integer in 0..{frames - 1}, got {value!r}")
    return value


def _entries(prompts: Any, frames: int) -> list[PromptEntry]:
    if not isinstance(prompts, list) or len(prompts) > MAX_PROMPTS:
        raise ValueError(f"param 'prompts' must be a list of at most {MAX_PROMPTS} objects")
    entries = []
    for n, item in enumerate(prompts):
        if not isinstance(item, dict):
            raise ValueError(f"prompts[{n}] must be an object")
        unknown = sorted(set(item) - {"frame_index", "object_id", *PROMPT_FIELDS})
        if unknown:
            raise ValueError(f"prompts[{n}]: unknown keys {unknown}")
        index = _index(item.get("frame_index"), frames, f"prompts[{n}]: 'frame_index'")
        object_id = item.get("object_id")
        if type(object_id) is not int or not 0 < object_id < 2**32:
            raise ValueError(
                f"prompts[{n}]: 'object_id' must be an integer in 1..4294967295, got {object_id!r}"
            )
        entries.append(PromptEntry(index, object_id, {k: v for k, v in item.items() if k in PROMPT_FIELDS}))
    return entries
