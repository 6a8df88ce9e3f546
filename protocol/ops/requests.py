"""The client side of each operation: typed requests and answers with their checks.

Used by everything that asks a SAM2 service for work (the napari plugin,
``sam2-batch``, the benchmarks), so each operation is spoken through one
piece of code. Every function takes wire-level values: an image already
converted for the wire (:mod:`protocol.wire.wire_image`), points as ``(row,
col)`` pixel positions of that image, point labels 1 = positive / 0 =
negative, boxes as ``(row_min, col_min, row_max, col_max)`` (see
protocol/README.md, "Coordinates"). Calls block: run them off any GUI thread.

Each answer is checked before it is returned: a mask or label image that is
missing, of the wrong shape or dtype raises :class:`protocol.wire.errors.AnswerError`
(a :class:`ProtocolError` that names the request), never a wrong paste.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol.wire.client import SamClient
from protocol.wire.codec import Message
from protocol.wire.errors import AnswerError
from protocol.wire.propagate import Box, Point, PropagateRequest, SlicePrompt, prompt_params
from protocol.wire.wire_image import WireImage, WireStack

# Low-res logits of a segment answer, the shape ``mask_input`` takes back.
LOGITS_SHAPE = (1, 256, 256)


@dataclass(frozen=True)
class SegmentAnswer:
    """The worker's answer to a ``segment`` op.

    Attributes:
        mask: (H, W) bool, the best mask, in the sent image's pixels.
        logits: (1, 256, 256) float32 low-res logits of that mask (for ``mask_input``), or None.
        scores: predicted IoU of each candidate mask.
        prompt: the prompt as the worker received it (``result["prompt"]``).
        request_id: the request's id (for logs).
    """

    mask: np.ndarray = field(repr=False)
    logits: np.ndarray | None = field(repr=False)
    scores: tuple[float, ...]
    prompt: dict[str, Any]
    request_id: str = ""


@dataclass(frozen=True)
class AutoAnswer:
    """The worker's answer to an ``auto`` op.

    Attributes:
        labels: (H, W) uint32, 0 = background, objects 1..n.
        num_objects: n.
        request_id: the request's id (for logs).
    """

    labels: np.ndarray = field(repr=False)
    num_objects: int
    request_id: str = ""


@dataclass(frozen=True)
class PropagatedSlice:
    """One slice of a ``propagate`` answer (a PARTIAL reply).

    Attributes:
        frame_index: the slice (0..Z-1 of the sent stack).
        done, total: progress of the propagation, in slices.
        mask: (H, W) bool, the object on that slice.
    """

    frame_index: int
    done: int
    total: int
    mask: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class PropagatedLabels:
    """One slice of a many-object ``propagate`` answer (a PARTIAL reply).

    Attributes:
        frame_index: the slice (0..Z-1 of the sent stack).
        done, total: progress of the propagation, in slices.
        labels: (H, W) uint32, 0 = none, else the object's own id.
        object_ids: the ids with pixels on that slice, ascending (an object
            missing from a slice has stopped for the rest of that pass).
    """

    frame_index: int
    done: int
    total: int
    labels: np.ndarray = field(repr=False)
    object_ids: tuple[int, ...]


@dataclass(frozen=True)
class PropagateAnswer:
    """The FINAL of ``propagate``: ``frames`` slices produced, ``cancelled`` if the backend stopped early."""

    frames: int
    cancelled: bool
    request_id: str = ""


@dataclass(frozen=True)
class EmbedAnswer:
    """The answer to ``embed``: the image's key and whether the worker already held its embedding."""

    image_key: str
    cached: bool


def segment(
    client: SamClient,
    image: WireImage,
    points: Sequence[Point] = (),
    point_labels: Sequence[int] = (),
    box: Box | None = None,
    mask_input: np.ndarray | None = None,
) -> SegmentAnswer:
    """Run ``segment`` for a prompt on ``image`` (blocking; call from a worker thread).

    ``multimask`` is asked for only when the prompt is ambiguous (one point,
    no box, no previous mask), SAM's own recommendation.

    Args:
        client: the caller's client (one call at a time).
        image: the image the prompt is on.
        points, point_labels, box: the prompt, see :func:`protocol.wire.propagate.prompt_params`.
        mask_input: (1, 256, 256) float32 logits of a previous answer, or None.

    Raises:
        AnswerError: no mask of the image's (H, W) in the answer.
    """
    params = {**prompt_params(points, point_labels, box), "return_logits": True}
    params["multimask"] = len(points) == 1 and box is None and mask_input is None
    arrays = {} if mask_input is None else {"mask_input": mask_input}
    reply = client.call("segment", params, arrays, image=image.pixels, contrast_limits=image.contrast_limits)
    mask = reply.arrays.get("mask")
    if mask is None or mask.shape != image.size:
        got = None if mask is None else mask.shape
        raise AnswerError(f"segment answered a mask of shape {got}, expected {image.size}", reply.request_id)
    logits = reply.arrays.get("logits")
    if logits is not None and logits.shape != LOGITS_SHAPE:
        logits = None
    result = reply.header.get("result") or {}
    scores = tuple(float(s) for s in result.get("scores", ()))
    prompt = dict(result.get("prompt") or {})
    return SegmentAnswer(mask.astype(bool, copy=False), logits, scores, prompt, reply.request_id)


def auto(
    client: SamClient,
    image: WireImage,
    params: Mapping[str, Any],
    on_progress: Callable[[Message], None] | None = None,
    cancel: threading.Event | None = None,
    timeout_s: float | None = None,
) -> AutoAnswer:
    """Run ``auto`` (automatic masks) on ``image`` (blocking; call from a worker thread).

    Args:
        client: the caller's client (one call at a time).
        image: the image to segment.
        params: ``auto``'s parameters (``points_per_side``, ...; see protocol/README.md).
        on_progress: called with each PARTIAL (see :func:`partial_fraction`).
        cancel: set it to stop (the call raises :class:`protocol.wire.errors.Superseded`).
        timeout_s: the silence allowed (the worker is quiet while it
            computes, which takes minutes on a CPU), default the client's.

    Raises:
        AnswerError: no uint32 label image of the image's (H, W) in the answer.
    """
    reply, labels = labels_call(client, "auto", image, params, on_progress, cancel, timeout_s)
    result = reply.header.get("result") or {}
    return AutoAnswer(labels, int(result.get("num_objects", int(labels.max(initial=0)))), reply.request_id)


def labels_call(
    client: SamClient,
    op: str,
    image: WireImage,
    params: Mapping[str, Any],
    on_progress: Callable[[Message], None] | None,
    cancel: threading.Event | None,
    timeout_s: float | None,
) -> tuple[Message, np.ndarray]:
    """Run an op that answers a label image of ``image`` (``auto``, ``concept``): (reply, labels).

    Raises:
        AnswerError: no uint32 label image of the image's (H, W) in the answer.
    """
    reply = client.call(
        op,
        dict(params),
        image=image.pixels,
        contrast_limits=image.contrast_limits,
        timeout_s=timeout_s,
        on_partial=on_progress,
        cancel=cancel,
    )
    labels = reply.arrays.get("labels")
    if labels is None or labels.dtype != np.uint32 or labels.shape != image.size:
        got = None if labels is None else f"{labels.dtype} {labels.shape}"
        raise AnswerError(f"{op} answered labels {got}, expected uint32 {image.size}", reply.request_id)
    return reply, labels


def propagate(
    client: SamClient,
    stack: WireStack,
    mask: np.ndarray,
    frame_index: int,
    direction: str,
    on_slice: Callable[[PropagatedSlice], None],
    cancel: threading.Event | None = None,
    timeout_s: float | None = None,
) -> PropagateAnswer:
    """Run ``propagate`` (blocking; call from a worker thread); ``on_slice`` gets each slice as it comes.

    Args:
        client: the caller's client (one call at a time).
        stack: (Z, H, W[, C]) slices, one set of contrast limits.
        mask: (H, W) bool, the object on slice ``frame_index``.
        frame_index: k, the slice the mask is on.
        direction: ``both``, ``forward`` (k, k+1, ...) or ``backward`` (k, k-1, ...).
        on_slice: called on this thread for each PARTIAL (slice k comes first).
        cancel: set it to stop (the call raises :class:`protocol.wire.errors.Superseded`).
        timeout_s: silence allowed between slices (default the client's).

    Returns:
        How many slices the worker produced, and whether it stopped early.

    Raises:
        ValueError: an unknown direction, or a mask of another shape than the slices.
        AnswerError: a slice that is not a bool (H, W) mask of a slice of the stack.
    """
    params = PropagateRequest(frame_index, direction).to_params()  # checks the direction
    if mask.shape != stack.size:
        raise ValueError(f"mask {mask.shape} must have the slices' shape {stack.size}")

    def partial(message: Message) -> None:
        result = message.header.get("result") or {}
        got = message.arrays.get("mask")
        try:
            index, done, total = int(result["frame_index"]), int(result["done"]), int(result["total"])
        except (KeyError, TypeError, ValueError) as e:
            raise AnswerError(
                f"propagate sent a slice without frame_index/done/total: {result}", message.request_id
            ) from e
        if got is None or got.shape != stack.size or not 0 <= index < stack.frames:
            shape = None if got is None else got.shape
            raise AnswerError(
                f"propagate sent slice {index} with mask {shape}, expected {stack.size}", message.request_id
            )
        on_slice(PropagatedSlice(index, done, total, got.astype(bool, copy=False)))

    arrays = {"stack": stack.pixels, "mask": np.ascontiguousarray(mask, dtype=bool)}
    return _call_propagate(client, stack, params, arrays, partial, cancel, timeout_s)


def _call_propagate(
    client: SamClient,
    stack: WireStack,
    params: dict[str, Any],
    arrays: dict[str, np.ndarray],
    partial: Callable[[Message], None],
    cancel: threading.Event | None,
    timeout_s: float | None,
) -> PropagateAnswer:
    """Send one ``propagate`` request (``arrays``: ``stack`` and any masks), feed each PARTIAL to
    ``partial``, and read the FINAL's ``result`` (frames done, cancelled) into a :class:`PropagateAnswer`."""
    reply = client.call(
        "propagate",
        params,
        arrays,
        contrast_limits=stack.contrast_limits,
        timeout_s=timeout_s,
        on_partial=partial,
        cancel=cancel,
    )
    result = reply.header.get("result") or {}
    return PropagateAnswer(
        int(result.get("frames", 0)), bool(result.get("cancelled", False)), reply.request_id
    )


def propagate_objects(
    client: SamClient,
    stack: WireStack,
    frame_index: int,
    direction: str,
    on_slice: Callable[[PropagatedLabels], None],
    masks: np.ndarray | None = None,
    prompts: Sequence[SlicePrompt] = (),
    cancel: threading.Event | None = None,
    timeout_s: float | None = None,
) -> PropagateAnswer:
    """Track several objects through ``stack`` in one ``propagate`` request (blocking: off the GUI thread).

    Args:
        client: the caller's client (one call at a time).
        stack: (Z, H, W[, C]) slices, one set of contrast limits.
        frame_index: k, the slice propagation starts from.
        direction: ``both``, ``forward`` (k, k+1, ...) or ``backward`` (k, k-1, ...).
        on_slice: called on this thread for each PARTIAL (slice k comes first).
        masks: (H, W) label image of slice k (0 = none, each other id an
            object; any integer dtype, sent as uint32), or None.
        prompts: points/boxes per object and slice; every object needs a
            prompt on slice k (in ``masks`` or here), others correct it.
        cancel: set it to stop (the call raises :class:`protocol.wire.errors.Superseded`).
        timeout_s: silence allowed between slices (default the client's).

    Raises:
        ValueError: an unknown direction, no object, labels of another shape
            than the slices, or ids outside 0..2**32-1.
        AnswerError: a slice that is not a uint32 (H, W) label image of a
            slice of the stack, or that holds an id that was not asked for.
    """
    params = PropagateRequest(frame_index, direction, tuple(prompts)).to_params()  # checks the direction
    arrays: dict[str, np.ndarray] = {"stack": stack.pixels}
    asked = {int(p.object_id) for p in prompts}
    if masks is not None:
        if masks.shape != stack.size:
            raise ValueError(f"masks {masks.shape} must have the slices' shape {stack.size}")
        if masks.size and (int(masks.min()) < 0 or int(masks.max()) >= 2**32):
            raise ValueError("label ids must be in 0..4294967295")
        arrays["masks"] = np.ascontiguousarray(masks, dtype=np.uint32)
        asked |= {int(i) for i in np.unique(arrays["masks"]) if i}
    if not asked:
        raise ValueError("propagate_objects needs at least one object (masks or prompts)")

    def partial(message: Message) -> None:
        result = message.header.get("result") or {}
        labels = message.arrays.get("labels")
        try:
            index, done, total = int(result["frame_index"]), int(result["done"]), int(result["total"])
            ids = tuple(int(i) for i in result["object_ids"])
        except (KeyError, TypeError, ValueError) as e:
            raise AnswerError(
                f"propagate sent a slice without frame_index/done/total/object_ids: {result}",
                message.request_id,
            ) from e
        if (
            labels is None
            or labels.dtype != np.uint32
            or labels.shape != stack.size
            or not 0 <= index < stack.frames
        ):
            got = None if labels is None else f"{labels.dtype} {labels.shape}"
            raise AnswerError(
                f"propagate sent slice {index} with labels {got}, expected uint32 {stack.size}",
                message.request_id,
            )
        if not set(ids) <= asked:
            raise AnswerError(
                f"propagate sent ids {sorted(set(ids) - asked)} that were not asked for", message.request_id
            )
        on_slice(PropagatedLabels(index, done, total, labels, ids))

    return _call_propagate(client, stack, params, arrays, partial, cancel, timeout_s)


def embed(
    client: SamClient,
    image: WireImage,
    timeout_s: float | None = None,
    cancel: threading.Event | None = None,
) -> EmbedAnswer:
    """Run ``embed``: have a worker compute (and cache) ``image``'s embedding ahead of prompts.

    ``cancel``: set it to abandon the request (``mmi.cancel``; raises ``Superseded``).
    """
    reply = client.call(
        "embed",
        image=image.pixels,
        contrast_limits=image.contrast_limits,
        timeout_s=timeout_s,
        cancel=cancel,
    )
    result = reply.header.get("result") or {}
    return EmbedAnswer(str(result.get("image_key", "")), bool(result.get("cached", False)))


def info(client: SamClient, timeout_s: float | None = None, retries: int | None = None) -> dict[str, Any]:
    """Run ``info``: the worker's model, device, versions, cache and counters (protocol/README.md)."""
    reply = client.call("info", timeout_s=timeout_s, retries=retries)
    return dict(reply.header.get("result") or {})


def partial_fraction(message: Message) -> float | None:
    """Progress in [0, 1] from a PARTIAL reply (``progress`` or ``done``/``total``), if it says."""
    result = message.header.get("result") or {}
    try:
        if "progress" in result:
            return min(max(float(result["progress"]), 0.0), 1.0)
        if "done" in result and "total" in result and float(result["total"]) > 0:
            return min(max(float(result["done"]) / float(result["total"]), 0.0), 1.0)
    except (TypeError, ValueError):
        return None
    return None
