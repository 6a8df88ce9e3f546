"""The stand-in's operations (``StandinService``), answered from what it sees (``look.py``).

The same operations and reply formats as the SAM2 worker (``protocol/README.md``):
``info``, ``embed``, ``segment``, ``auto``, ``sleep`` and ``propagate``, one
request at a time, run by the same loop (``workers.worker.Worker``: READY,
heartbeats, cancellation). Images are cached by image key, so ``need_image``
works as with SAM2. ``delay_s`` is slept per ``segment``/``auto`` request (and
per ``propagate`` slice) and ``encode_delay_s`` per new image, to emulate model
time in benchmarks; ``cache_entries`` images stay cached, and ``info`` reports
the cache as the real worker does (``entries``, ``bytes``, ``limit_bytes``,
counting each entry as ``ENTRY_BYTES``). Prompts are (row, col) pixels of the sent image.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from protocol.runtime.registry import get_entry
from protocol.wire.codec import STATUS_ERROR, STATUS_NEED_IMAGE, STATUS_OK, Message
from protocol.wire.concept import PARAMS as CONCEPT_PARAMS
from protocol.wire.image_key import image_key
from workers.prep import check_contrast_limits
from workers.standin.look import Seen, look
from workers.standin.propagate import PARAMS, propagate
from workers.standin.replies import BadRequest, Cancelled, Reply

CACHE_ENTRIES = 8
OPS = ("info", "embed", "segment", "auto", "concept", "sleep", "propagate")
"""The operations a stand-in serves (``info`` lists those not turned off with ``--without-op``)."""
ENTRY_BYTES = 1 << 20
"""Nominal size of one cached image in ``info``'s ``cache`` (the stand-in's cache counts entries)."""


class StandinService:
    """The operations, answered from :func:`look` (one request at a time, like the real worker)."""

    def __init__(
        self,
        service: str,
        delay_s: float = 0.0,
        encode_delay_s: float = 0.0,
        cache_entries: int = CACHE_ENTRIES,
        without_ops: frozenset[str] = frozenset(),
    ) -> None:
        self.service = service
        self.without_ops = without_ops
        self.delay_s = delay_s
        self.encode_delay_s = encode_delay_s
        self.cache_entries = cache_entries
        self.cache: OrderedDict[str, Seen] = OrderedDict()
        self.counters: dict[str, int] = {"requests": 0, "errors": 0, "encoder_runs": 0, "images_received": 0}
        self.by_op: dict[str, int] = {}
        self.image_shapes: list[list[int]] = []
        self._cancel = threading.Event()

    def warm_up(self) -> None:
        """Nothing to warm: the stand-in runs no model."""

    def count_undecodable(self) -> None:
        self.counters["requests"] += 1
        self.counters["errors"] += 1

    def handle(self, message: Message, cancel: threading.Event | None = None) -> Iterator[Reply]:
        self._cancel = cancel or threading.Event()
        self.counters["requests"] += 1
        self.by_op[message.op] = self.by_op.get(message.op, 0) + 1
        if "image" in message.arrays:
            self.counters["images_received"] += 1
            self.image_shapes.append(list(message.arrays["image"].shape))
        ops: dict[str, Callable[[Message], Reply | Iterator[Reply]]] = {
            "info": self._info,
            "embed": self._embed,
            "segment": self._segment,
            "auto": self._auto,
            "concept": self._concept,
            "sleep": self._sleep,
            "propagate": self._propagate,
        }
        handler = None if message.op in self.without_ops else ops.get(message.op)
        try:
            if handler is None:
                raise BadRequest(f"unknown op {message.op!r}")
            answer = handler(message)
            if isinstance(answer, Reply):
                yield answer
            else:
                yield from answer
        except BadRequest as e:
            self.counters["errors"] += 1
            code = "unknown_op" if handler is None else "bad_request"
            yield Reply(STATUS_ERROR, error=(code, str(e)))
        except Cancelled:
            yield Reply(STATUS_ERROR, error=("cancelled", "cancelled"))

    # -- helpers ------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self._cancel.wait(seconds):
            raise Cancelled

    def _params(self, message: Message, allowed: set[str]) -> dict[str, Any]:
        params = dict(message.header.get("params") or {})
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise BadRequest(f"unknown params for op {message.op!r}: {unknown}")
        return params

    def _seen(
        self, message: Message, params: Mapping[str, Any], pixels_required: bool
    ) -> tuple[str, Seen | None]:
        """(image key, what was seen); ``None`` when the worker must answer ``need_image``."""
        try:
            limits = check_contrast_limits(params.get("contrast_limits"))
        except ValueError as e:
            raise BadRequest(str(e)) from e
        pixels = message.arrays.get("image")
        sent_key = message.header.get("image_key")
        if pixels is None:
            if pixels_required or not isinstance(sent_key, str):
                return "", None
            seen = self.cache.get(sent_key)
            if seen is not None:
                self.cache.move_to_end(sent_key)
            return sent_key, seen
        key = image_key(pixels, limits, self.service)
        if sent_key is not None and sent_key != key:
            raise BadRequest(f"image_key {sent_key!r} does not match the image sent ({key!r})")
        if not pixels_required and key in self.cache:
            return key, self.cache[key]
        try:
            seen = look(pixels, limits)
        except ValueError as e:
            raise BadRequest(str(e)) from e
        self._wait(self.encode_delay_s)
        self.counters["encoder_runs"] += 1
        self.cache[key] = seen
        while len(self.cache) > self.cache_entries:
            self.cache.popitem(last=False)
        return key, seen

    # -- operations -----------------------------------------------------------

    def _info(self, message: Message) -> Reply:
        return Reply(
            STATUS_OK,
            {
                "model": self.service,
                **get_entry(self.service).describe(),  # family, description, licence, preprocessing
                "ops": [op for op in OPS if op not in self.without_ops],
                "device": "standin",
                "random_weights": False,
                "pid": os.getpid(),
                "counters": {**self.counters, "by_op": dict(self.by_op)},
                "image_shapes": self.image_shapes[-64:],
                "cache": {
                    "entries": len(self.cache),
                    "bytes": len(self.cache) * ENTRY_BYTES,
                    "limit_bytes": self.cache_entries * ENTRY_BYTES,
                },
            },
        )

    def _concept(self, message: Message) -> Reply:
        """SAM 3's ``concept`` op, stand-in style: every bright blob is an instance of any concept.

        Text and exemplar boxes are checked like the real op but do not change the answer; each
        object's score is its mean grey in [0, 1] (a blob of grey 255 scores 1.0, one of 200 about
        0.78), and blobs scoring below ``score_threshold`` (default 0.5) are left out, as SAM 3
        does, so a test knows which objects a threshold keeps.
        """
        params = self._params(message, set(CONCEPT_PARAMS))
        text, boxes = params.get("text"), params.get("boxes", [])
        if not (isinstance(text, str) and text.strip()) and not boxes:
            raise BadRequest("concept needs a 'text' prompt and/or exemplar 'boxes'")
        key, seen = self._seen(message, params, pixels_required=False)
        if seen is None:
            return Reply(STATUS_NEED_IMAGE, {"message": "send the image"})
        self._wait(self.delay_s)
        threshold = float(params.get("score_threshold", 0.5))
        keep = seen.brightness >= threshold
        lut = np.zeros(keep.size + 1, dtype=np.uint32)
        lut[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
        labels = seen.to_sent(lut[seen.labels])
        areas = np.bincount(labels.ravel(), minlength=int(keep.sum()) + 1)[1:].astype(np.uint32)
        scores = seen.brightness[keep].astype(np.float32)
        arrays = {"labels": labels, "areas": areas, "scores": scores}
        return Reply(STATUS_OK, {"num_objects": int(areas.size)}, arrays, image_key=key)

    def _embed(self, message: Message) -> Reply:
        params = self._params(message, {"contrast_limits"})
        cached = message.header.get("image_key") in self.cache
        key, seen = self._seen(message, params, pixels_required=False)
        if seen is None:
            return Reply(STATUS_NEED_IMAGE, {"message": "send the image"})
        return Reply(STATUS_OK, {"image_key": key, "cached": cached}, image_key=key)

    def _segment(self, message: Message) -> Reply:
        params = self._params(
            message, {"points", "point_labels", "box", "multimask", "return_logits", "contrast_limits"}
        )
        key, seen = self._seen(message, params, pixels_required=False)
        if seen is None:
            return Reply(STATUS_NEED_IMAGE, {"message": "send the image"})
        self._wait(self.delay_s)
        points = np.asarray(params.get("points") or [], dtype=np.float64).reshape(-1, 2)
        labels = list(params.get("point_labels") or [])
        if len(labels) != len(points):
            raise BadRequest("point_labels must match points")
        low = seen.labels
        f = seen.factor
        chosen = np.zeros(low.shape, dtype=bool)
        positives = [p for p, lab in zip(points, labels, strict=True) if lab == 1]
        if positives:
            r, c = (int(v // f) for v in positives[0])
            if 0 <= r < low.shape[0] and 0 <= c < low.shape[1] and low[r, c]:
                chosen = low == low[r, c]
        elif params.get("box") is not None:
            r0, c0, r1, c1 = (float(v) / f for v in params["box"])
            inside = low[int(r0) : math.ceil(r1), int(c0) : math.ceil(c1)]
            ids, counts = np.unique(inside[inside > 0], return_counts=True)
            if ids.size:
                chosen = low == ids[np.argmax(counts)]
        for p, lab in zip(points, labels, strict=True):
            r, c = (int(v // f) for v in p)
            if lab == 0 and 0 <= r < low.shape[0] and 0 <= c < low.shape[1] and low[r, c]:
                chosen &= low != low[r, c]
        mask = seen.to_sent(chosen)
        arrays: dict[str, np.ndarray] = {"mask": mask}
        if params.get("return_logits"):
            arrays["logits"] = np.full((1, 256, 256), -10.0, dtype=np.float32)
        result = {
            "scores": [1.0 if mask.any() else 0.0],
            "best": 0,
            "shape": list(seen.sent_hw),
            "prompt": {"points": points.tolist(), "point_labels": labels, "box": params.get("box")},
        }
        return Reply(STATUS_OK, result, arrays, image_key=key)

    def _auto(self, message: Message) -> Reply:
        allowed = {
            "points_per_side",
            "points_per_batch",
            "pred_iou_thresh",
            "stability_score_thresh",
            "box_nms_thresh",
            "crop_n_layers",
            "min_mask_region_area",
            "contrast_limits",
        }
        params = self._params(message, allowed)
        if "image" not in message.arrays:
            return Reply(STATUS_NEED_IMAGE, {"message": "auto needs the image"})
        _, seen = self._seen(message, params, pixels_required=True)
        if seen is None:
            return Reply(STATUS_NEED_IMAGE, {"message": "auto needs the image"})
        self._wait(self.delay_s)
        labels = seen.to_sent(seen.labels.astype(np.uint32))
        areas = np.bincount(labels.ravel())[1:].tolist()
        return Reply(STATUS_OK, {"num_objects": len(areas), "areas": areas}, {"labels": labels})

    def _propagate(self, message: Message) -> Iterator[Reply]:
        """Deterministic tracking (:func:`workers.standin.propagate.propagate`); ``delay_s`` per slice."""
        params = self._params(message, set(PARAMS))
        return propagate(message, params, self._wait, self.delay_s)

    def _sleep(self, message: Message) -> Reply:
        params = self._params(message, {"seconds"})
        self._wait(float(params.get("seconds", 0)))
        return Reply(STATUS_OK, {"slept_s": float(params.get("seconds", 0))})
