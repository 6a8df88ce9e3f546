"""Deterministic tracking through a stack for the stand-in's ``propagate``: an object is the bright
component overlapping it on the previous slice."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from protocol.wire.codec import STATUS_OK, STATUS_PARTIAL, Message
from protocol.wire.wire_image import stack_contrast_limits
from workers.prep import check_contrast_limits
from workers.standin.look import look
from workers.standin.replies import BadRequest, Reply

PARAMS = frozenset(
    {"frame_index", "direction", "max_frames", "contrast_limits", "prompts", "points", "point_labels", "box"}
)
"""The params ``propagate`` takes (one object: points/point_labels/box; several: prompts)."""


def propagate(
    message: Message, params: Mapping[str, Any], wait: Callable[[float], None], delay_s: float
) -> Iterator[Reply]:
    """Deterministic tracking: an object is the bright component overlapping it on the previous slice.

    Same request and reply forms as the real ``propagate`` (one object:
    ``mask`` or a point/box -> PARTIALs with ``mask``; several: ``masks``
    label image and/or ``prompts`` -> PARTIALs with uint32 ``labels`` and
    ``object_ids``). Slice k's answer is its prompt; an object whose
    previous mask overlaps no bright component has vanished and stops for
    the rest of the pass, unless a prompt on a later slice restarts it.
    ``delay_s`` is slept per slice through ``wait``, which raises :class:`Cancelled` once the
    request is cancelled.

    Args:
        message: the request; arrays ``stack`` (Z, H, W) grey or (Z, H, W, 3|4) colour, optionally
            ``mask`` (H, W) bool or ``masks`` (H, W) uint32 of slice ``frame_index``.
        params: its params, already checked against :data:`PARAMS`; points and boxes in (row, col).

    Raises:
        BadRequest: a malformed request (the client gets ``bad_request``).
    """
    stack = message.arrays.get("stack")
    if stack is None or stack.ndim not in (3, 4):
        raise BadRequest("propagate needs a 'stack' array: (Z, H, W) grey or (Z, H, W, 3|4) colour")
    frames = int(stack.shape[0])
    k = params.get("frame_index")
    if type(k) is not int or not 0 <= k < frames:
        raise BadRequest(f"'frame_index' must be in 0..{frames - 1}, got {k!r}")
    direction = params.get("direction", "both")
    if direction not in ("both", "forward", "backward"):
        raise BadRequest(f"unknown direction {direction!r}")
    try:
        limits = check_contrast_limits(params.get("contrast_limits")) or stack_contrast_limits(stack)
    except ValueError as e:
        raise BadRequest(str(e)) from e
    components = [look(stack[i], limits) for i in range(frames)]

    def component(index: int, point: Sequence[float] | None, box: Sequence[float] | None) -> np.ndarray:
        full = components[index].to_sent(components[index].labels)
        if point is not None:
            r, c = int(point[0]), int(point[1])
            if 0 <= r < full.shape[0] and 0 <= c < full.shape[1] and full[r, c]:
                return full == full[r, c]
        elif box is not None:
            r0, c0, r1, c1 = (int(v) for v in box)
            inside = full[r0:r1, c0:c1]
            ids, counts = np.unique(inside[inside > 0], return_counts=True)
            if ids.size:
                return full == ids[np.argmax(counts)]
        return np.zeros(full.shape, bool)

    def prompt_mask(index: int, item: Mapping[str, Any]) -> np.ndarray:
        points, labels = item.get("points") or [], item.get("point_labels") or []
        positive = next((p for p, lab in zip(points, labels, strict=False) if lab == 1), None)
        return component(index, positive, item.get("box"))

    many = "masks" in message.arrays or "prompts" in params
    start: dict[int, np.ndarray] = {}
    fixes: dict[tuple[int, int], np.ndarray] = {}
    if many:
        masks = message.arrays.get("masks")
        if masks is not None:
            if masks.dtype != np.uint32 or masks.shape != stack.shape[1:3]:
                raise BadRequest("masks must be a uint32 (H, W) label image of slice frame_index")
            start = {int(i): masks == i for i in np.unique(masks) if i}
        for item in params.get("prompts") or []:
            index, object_id = int(item["frame_index"]), int(item["object_id"])
            if index == k:
                start[object_id] = prompt_mask(k, item)
            else:
                fixes[(index, object_id)] = prompt_mask(index, item)
        if not start or any(object_id not in start for _, object_id in fixes):
            raise BadRequest("every object needs a prompt on slice frame_index")
    elif message.arrays.get("mask") is not None:
        start = {1: message.arrays["mask"].astype(bool)}
    else:
        start = {1: prompt_mask(k, params)}
    reach = frames if params.get("max_frames") is None else int(params["max_frames"])
    passes = []
    if direction in ("forward", "both"):
        passes.append(list(range(k + 1, min(k + reach, frames - 1) + 1)))
    if direction in ("backward", "both"):
        passes.append(list(range(k - 1, max(k - reach, 0) - 1, -1)))
    total = 1 + sum(len(p) for p in passes)
    done = 0

    def reply(index: int, objects: Mapping[int, np.ndarray]) -> Reply:
        nonlocal done
        done += 1
        labels = np.zeros(stack.shape[1:3], np.uint32)
        for object_id in sorted(objects, reverse=True):  # the lowest id wins where two meet
            labels[objects[object_id]] = object_id
        result: dict[str, Any] = {"frame_index": index, "done": done, "total": total}
        if not many:
            return Reply(STATUS_PARTIAL, result, {"mask": labels == 1})
        result["object_ids"] = sorted(int(i) for i in np.unique(labels) if i)
        return Reply(STATUS_PARTIAL, result, {"labels": labels})

    yield reply(k, start)
    for order in passes:
        previous = {i: m for i, m in start.items() if m.any()}
        for index in order:
            wait(delay_s)
            full = components[index].to_sent(components[index].labels)
            current: dict[int, np.ndarray] = {}
            for object_id, mask in previous.items():
                ids, counts = np.unique(full[mask & (full > 0)], return_counts=True)
                if ids.size:
                    current[object_id] = full == ids[np.argmax(counts)]
            for (fix_index, object_id), mask in fixes.items():
                if fix_index == index and mask.any():
                    current[object_id] = mask
            previous = current
            yield reply(index, current)
    yield Reply(STATUS_OK, {"frames": done, "cancelled": False})
