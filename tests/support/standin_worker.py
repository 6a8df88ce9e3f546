"""A deterministic stand-in for a SAM2 worker, and the synthetic images it is judged on.

Random weights make SAM2's masks meaningless, so windowing and stitching are
also tested against this worker, whose right answers are known. Like SAM it
looks at what it is sent at <= 1024 px on the long side (larger images are
block-averaged by an integer factor first), then labels bright connected
components there (threshold 128 on the image prepared exactly as the real
worker prepares it, ``workers.prep.prepare_image``), and answers at the sent
size (each looked-at pixel upsampled to a block). So a small disc sent in a
large image comes back coarse, as it would from SAM.

It is a real MDP/0.2 worker process, run by the same loop as the SAM2 worker
(``workers.worker.Worker``: READY, heartbeats, one request at a time,
cancellation), with the same operations and reply formats
(``protocol/README.md``): ``info``, ``embed``, ``segment``, ``auto``, ``sleep``,
and ``propagate`` (deterministic tracking: the bright component that overlaps
the object on the previous slice).
Images are cached by image key (so ``need_image`` works as with SAM2)::

    python -m tests.support.standin_worker --connect tcp://127.0.0.1:5556 --service standin \
        [--delay-s 0.05] [--encode-delay-s 0.5] [--cache-entries 8]

``--delay-s`` is slept per ``segment``/``auto`` request and
``--encode-delay-s`` per new image, to emulate model time in benchmarks.
``--cache-entries`` (8) images stay cached; ``info`` reports the cache as the
real worker does (``entries``, ``bytes``, ``limit_bytes``, counting each
entry as ``ENTRY_BYTES``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from protocol.runtime.registry import get_entry
from protocol.wire.codec import STATUS_ERROR, STATUS_NEED_IMAGE, STATUS_OK, STATUS_PARTIAL, Limits, Message
from protocol.wire.image_key import image_key
from protocol.wire.wire_image import stack_contrast_limits
from workers.prep import check_contrast_limits, prepare_image
from workers.worker import Worker, WorkerConfig

log = logging.getLogger("standin")

MODEL_INPUT = 1024
THRESHOLD = 128
CACHE_ENTRIES = 8
ENTRY_BYTES = 1 << 20
"""Nominal size of one cached image in ``info``'s ``cache`` (the stand-in's cache counts entries)."""


@dataclass(frozen=True)
class Reply:
    """One reply (the fields ``workers.worker`` reads from a handler's replies)."""

    status: str
    result: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    error: tuple[str, str] | None = None
    image_key: str | None = None


class _BadRequest(Exception):
    pass


@dataclass(frozen=True)
class Seen:
    """What the stand-in "encoded": the components it sees at <= 1024 px.

    Attributes:
        sent_hw: (H, W) of the sent image.
        factor: sent pixels per looked-at pixel along each axis.
        labels: int32 (ceil(H/f), ceil(W/f)) connected components, 0 = background.
    """

    sent_hw: tuple[int, int]
    factor: int
    labels: np.ndarray

    def to_sent(self, low: np.ndarray) -> np.ndarray:
        """A (h, w) array at the looked-at size -> (H, W) at the sent size (blocks)."""
        f = self.factor
        full = np.repeat(np.repeat(low, f, axis=0), f, axis=1) if f > 1 else low
        return np.ascontiguousarray(full[: self.sent_hw[0], : self.sent_hw[1]])


def look(image: np.ndarray, contrast_limits: Sequence[float] | None) -> Seen:
    """Prepare ``image`` like the real worker, view it at <= 1024 px and label bright components."""
    rgb = prepare_image(image, contrast_limits)
    grey = rgb.mean(axis=2, dtype=np.float32)
    height, width = grey.shape
    factor = max(1, math.ceil(max(height, width) / MODEL_INPUT))
    if factor > 1:
        out_h, out_w = math.ceil(height / factor), math.ceil(width / factor)
        padded = np.zeros((out_h * factor, out_w * factor), dtype=np.float32)
        padded[:height, :width] = grey
        grey = padded.reshape(out_h, factor, out_w, factor).mean(axis=(1, 3))
    labels, _ = ndimage.label(grey >= THRESHOLD)
    return Seen((height, width), factor, labels.astype(np.int32))


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
        ops = {"info": self._info, "embed": self._embed, "segment": self._segment, "auto": self._auto}
        ops["sleep"] = self._sleep
        ops["concept"] = self._concept
        for op in self.without_ops:
            ops.pop(op, None)
        handler = ops.get(message.op)
        if message.op == "propagate" and "propagate" not in self.without_ops:
            handler = self._propagate  # type: ignore[assignment]
        try:
            if handler is None:
                raise _BadRequest(f"unknown op {message.op!r}")
            answer = handler(message)
            if isinstance(answer, Reply):
                yield answer
            else:
                yield from answer
        except _BadRequest as e:
            self.counters["errors"] += 1
            code = "unknown_op" if handler is None else "bad_request"
            yield Reply(STATUS_ERROR, error=(code, str(e)))
        except _Cancelled:
            yield Reply(STATUS_ERROR, error=("cancelled", "cancelled"))

    # -- helpers ------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self._cancel.wait(seconds):
            raise _Cancelled

    def _params(self, message: Message, allowed: set[str]) -> dict[str, Any]:
        params = dict(message.header.get("params") or {})
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise _BadRequest(f"unknown params for op {message.op!r}: {unknown}")
        return params

    def _seen(
        self, message: Message, params: Mapping[str, Any], pixels_required: bool
    ) -> tuple[str, Seen | None]:
        """(image key, what was seen); ``None`` when the worker must answer ``need_image``."""
        try:
            limits = check_contrast_limits(params.get("contrast_limits"))
        except ValueError as e:
            raise _BadRequest(str(e)) from e
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
            raise _BadRequest(f"image_key {sent_key!r} does not match the image sent ({key!r})")
        if not pixels_required and key in self.cache:
            return key, self.cache[key]
        try:
            seen = look(pixels, limits)
        except ValueError as e:
            raise _BadRequest(str(e)) from e
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
                **get_entry("standin-blobs").describe(),  # family, description, licence, preprocessing
                "ops": [
                    op
                    for op in ("info", "embed", "segment", "auto", "concept", "sleep", "propagate")
                    if op not in self.without_ops
                ],
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
            raise _BadRequest("point_labels must match points")
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

    def _concept(self, message: Message) -> Reply:
        """SAM 3's ``concept`` op, stand-in style: every bright blob is an instance of any concept.

        Text and exemplar boxes are checked like the real op but do not change the answer; each
        object's score is 1.0, so ``score_threshold`` (<= 1) keeps them all.
        """
        params = self._params(message, {"text", "boxes", "box_labels", "score_threshold", "contrast_limits"})
        text, boxes = params.get("text"), params.get("boxes", [])
        if not (isinstance(text, str) and text.strip()) and not boxes:
            raise _BadRequest("concept needs a 'text' prompt and/or exemplar 'boxes'")
        key, seen = self._seen(message, params, pixels_required=False)
        if seen is None:
            return Reply(STATUS_NEED_IMAGE, {"message": "send the image"})
        self._wait(self.delay_s)
        labels = seen.to_sent(seen.labels.astype(np.uint32))
        areas = np.bincount(labels.ravel())[1:].astype(np.uint32)
        scores = np.ones(areas.size, dtype=np.float32)
        arrays = {"labels": labels, "areas": areas, "scores": scores}
        return Reply(STATUS_OK, {"num_objects": int(areas.size)}, arrays, image_key=key)

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
        """Deterministic tracking: an object is the bright component overlapping it on the previous slice.

        Same request and reply forms as the real ``propagate`` (one object:
        ``mask`` or a point/box -> PARTIALs with ``mask``; several: ``masks``
        label image and/or ``prompts`` -> PARTIALs with uint32 ``labels`` and
        ``object_ids``). Slice k's answer is its prompt; an object whose
        previous mask overlaps no bright component has vanished and stops for
        the rest of the pass, unless a prompt on a later slice restarts it.
        ``--delay-s`` is slept per slice (cancel is checked then).
        """
        allowed = {"frame_index", "direction", "max_frames", "contrast_limits", "prompts"}
        params = self._params(message, allowed | {"points", "point_labels", "box"})
        stack = message.arrays.get("stack")
        if stack is None or stack.ndim not in (3, 4):
            raise _BadRequest("propagate needs a 'stack' array: (Z, H, W) grey or (Z, H, W, 3|4) colour")
        frames = int(stack.shape[0])
        k = params.get("frame_index")
        if type(k) is not int or not 0 <= k < frames:
            raise _BadRequest(f"'frame_index' must be in 0..{frames - 1}, got {k!r}")
        direction = params.get("direction", "both")
        if direction not in ("both", "forward", "backward"):
            raise _BadRequest(f"unknown direction {direction!r}")
        try:
            limits = check_contrast_limits(params.get("contrast_limits")) or stack_contrast_limits(stack)
        except ValueError as e:
            raise _BadRequest(str(e)) from e
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
                    raise _BadRequest("masks must be a uint32 (H, W) label image of slice frame_index")
                start = {int(i): masks == i for i in np.unique(masks) if i}
            for item in params.get("prompts") or []:
                index, object_id = int(item["frame_index"]), int(item["object_id"])
                if index == k:
                    start[object_id] = prompt_mask(k, item)
                else:
                    fixes[(index, object_id)] = prompt_mask(index, item)
            if not start or any(object_id not in start for _, object_id in fixes):
                raise _BadRequest("every object needs a prompt on slice frame_index")
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
                self._wait(self.delay_s)
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

    def _sleep(self, message: Message) -> Reply:
        params = self._params(message, {"seconds"})
        self._wait(float(params.get("seconds", 0)))
        return Reply(STATUS_OK, {"slept_s": float(params.get("seconds", 0))})


class _Cancelled(Exception):
    pass


# ----------------------------------------------------------------------------
# synthetic images whose right answer is known


def disc_image(
    shape: tuple[int, int],
    centres: np.ndarray,
    radii: np.ndarray,
    *,
    background: int = 20,
    foreground: int = 200,
    dtype: Any = np.uint8,
) -> tuple[np.ndarray, np.ndarray]:
    """An image of bright discs and its true labels.

    Args:
        shape: (H, W).
        centres: (N, 2) (row, col) disc centres in pixels.
        radii: (N,) radii in pixels; discs must not touch.

    Returns:
        (image of ``dtype`` (H, W), uint32 labels (H, W): disc k has label k + 1).
    """
    image = np.full(shape, background, dtype=dtype)
    truth = np.zeros(shape, dtype=np.uint32)
    for k, ((r, c), rad) in enumerate(zip(centres, radii, strict=True)):
        r0, r1 = max(0, int(r - rad - 1)), min(shape[0], int(r + rad + 2))
        c0, c1 = max(0, int(c - rad - 1)), min(shape[1], int(c + rad + 2))
        rr, cc = np.ogrid[r0:r1, c0:c1]
        inside = (rr + 0.5 - r) ** 2 + (cc + 0.5 - c) ** 2 <= rad**2
        image[r0:r1, c0:c1][inside] = foreground
        truth[r0:r1, c0:c1][inside] = k + 1
    return image, truth


def scattered_discs(
    shape: tuple[int, int],
    *,
    spacing: int = 60,
    radius_range: tuple[float, float] = (6.0, 10.0),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Disc centres on a jittered grid of ``spacing`` px (so many straddle any tile border), and radii.

    Returns:
        (centres (N, 2) (row, col) float64, radii (N,) float64); discs never touch.
    """
    rng = np.random.default_rng(seed)
    rows = np.arange(spacing / 2, shape[0] - spacing / 2, spacing)
    cols = np.arange(spacing / 2, shape[1] - spacing / 2, spacing)
    grid = np.array([(r, c) for r in rows for c in cols], dtype=np.float64)
    jitter = rng.uniform(-spacing / 6, spacing / 6, size=grid.shape)
    radii = rng.uniform(*radius_range, size=len(grid))
    return grid + jitter, radii


# ----------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.standin_worker", description=__doc__)
    parser.add_argument("--connect", required=True, help="the broker's backend endpoint")
    parser.add_argument("--service", default="standin", help="service name registered with READY")
    parser.add_argument("--delay-s", type=float, default=0.0, help="seconds per segment/auto request")
    parser.add_argument("--encode-delay-s", type=float, default=0.0, help="seconds per new image")
    parser.add_argument("--cache-entries", type=int, default=CACHE_ENTRIES, help="images kept cached")
    parser.add_argument(
        "--without-op", action="append", default=[], help="an op this stand-in does not serve (repeatable)"
    )
    parser.add_argument("--heartbeat-interval-s", type=float, default=1.0)
    parser.add_argument("--heartbeat-liveness", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s standin[%(process)d] %(levelname)s %(message)s"
    )
    service = StandinService(
        args.service, args.delay_s, args.encode_delay_s, args.cache_entries, frozenset(args.without_op)
    )
    config = WorkerConfig(
        connect=args.connect,
        service=args.service,
        device_name="standin",
        heartbeat_interval_s=args.heartbeat_interval_s,
        heartbeat_liveness=args.heartbeat_liveness,
        limits=Limits(),
    )
    worker = Worker(config, service)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run()
    time.sleep(0.05)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
