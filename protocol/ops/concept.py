"""The client side of ``concept``: SAM 3's "find every instance of this" (issue 24).

A concept is a text prompt ("nucleus") and/or exemplar boxes on the image;
the answer is every instance, as a label image plus one score per object
(protocol/README.md, "Operations"). Served by workers of family ``sam3``
(and the stand-in); ``mmi.services`` lists ``concept`` in a service's
``ops`` when its workers serve it. Large slides go tile by tile like AUTO:
:func:`protocol.ops.tiled.tiled_auto` with ``op="concept"``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol.ops.requests import labels_call
from protocol.wire.client import SamClient
from protocol.wire.codec import Message
from protocol.wire.concept import DEFAULT_SCORE_THRESHOLD, MAX_BOXES, MAX_TEXT_CHARS
from protocol.wire.errors import AnswerError
from protocol.wire.wire_image import WireImage

__all__ = [
    "DEFAULT_SCORE_THRESHOLD",
    "MAX_BOXES",
    "MAX_TEXT_CHARS",
    "ConceptAnswer",
    "concept",
    "concept_params",
]


@dataclass(frozen=True)
class ConceptAnswer:
    """The worker's answer to a ``concept`` op.

    Attributes:
        labels: (H, W) uint32, 0 = background, instances 1..n.
        scores: float32 (n,), the score of label ``i + 1`` at ``i``.
        num_objects: n.
        request_id: the request's id (for logs).
    """

    labels: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    num_objects: int
    request_id: str = ""


def concept_params(
    text: str | None = None,
    boxes: Sequence[Sequence[float]] = (),
    box_labels: Sequence[int] | None = None,
    score_threshold: float = DEFAULT_SCORE_THRESHOLD,
) -> dict[str, Any]:
    """``concept``'s parameters, checked before anything is sent.

    Args:
        text: the concept in words ("nucleus"), 1..200 characters, or None.
        boxes: exemplar boxes ``(row0, col0, row1, col1)`` in pixels of the image sent.
        box_labels: 1 (an instance) or 0 (not one) per box; default all 1.
        score_threshold: instances scoring below it are left out, in [0, 1].

    Raises:
        ValueError: no text and no box, or a value out of range.
    """
    params: dict[str, Any] = {"score_threshold": float(score_threshold)}
    if not 0.0 <= score_threshold <= 1.0 or not math.isfinite(score_threshold):
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    if text is not None:
        text = text.strip()
        if not 0 < len(text) <= MAX_TEXT_CHARS:
            raise ValueError(f"the concept text must be 1..{MAX_TEXT_CHARS} characters")
        params["text"] = text
    if len(boxes) > MAX_BOXES:
        raise ValueError(f"at most {MAX_BOXES} exemplar boxes, got {len(boxes)}")
    if boxes:
        rows = [[float(v) for v in box] for box in boxes]
        if any(len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]) for box in rows):
            raise ValueError("each exemplar box is (row0, col0, row1, col1) with row0 < row1 and col0 < col1")
        params["boxes"] = rows
        labels = [1] * len(rows) if box_labels is None else [int(v) for v in box_labels]
        if len(labels) != len(rows) or any(v not in (0, 1) for v in labels):
            raise ValueError("box_labels must give 0 or 1 for each exemplar box")
        params["box_labels"] = labels
    if "text" not in params and "boxes" not in params:
        raise ValueError("a concept needs a text prompt and/or exemplar boxes")
    return params


def concept(
    client: SamClient,
    image: WireImage,
    params: dict[str, Any],
    on_progress: Callable[[Message], None] | None = None,
    cancel: threading.Event | None = None,
    timeout_s: float | None = None,
) -> ConceptAnswer:
    """Run ``concept`` on ``image`` (blocking; call from a worker thread).

    Raises:
        AnswerError: no uint32 label image of the image's (H, W), or scores that do not fit it.
    """
    reply, labels = labels_call(client, "concept", image, params, on_progress, cancel, timeout_s)
    result = reply.header.get("result") or {}
    num_objects = int(result.get("num_objects", int(labels.max(initial=0))))
    scores = reply.arrays.get("scores")
    if scores is None or scores.dtype != np.float32 or scores.shape != (num_objects,):
        raise AnswerError(f"concept answered no float32 score per object ({num_objects})", reply.request_id)
    return ConceptAnswer(labels, scores, num_objects, reply.request_id)
