# One file on purpose: Sam2Service, one method per operation over one predictor, cache and counters.
"""The operations of ``protocol/README.md`` against one SAM2 model.

:class:`Sam2Service` owns the ``SAM2ImagePredictor`` (not thread-safe: the
worker calls :meth:`Sam2Service.handle` from one thread, one request at a
time), the embedding cache, the counters and the last segment prompt.
``handle`` turns one decoded request into replies: optional PARTIALs, then
exactly one final (``ok``, ``need_image`` or ``error``).

Image handling, for every op that takes an image: a request that carries
``image`` gets its key recomputed (``protocol.wire.image_key``); a different
``image_key`` in the header is a ``bad_request``. The image encoder runs only
when the key is not cached. A request with only ``image_key`` that is not
cached gets ``need_image``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from protocol.runtime.memory import release_free_memory
from protocol.wire.automask import AUTO_MASK_KEYS, AutoMaskParams
from protocol.wire.codec import (
    ALLOWED_DTYPES,
    STATUS_ERROR,
    STATUS_NEED_IMAGE,
    STATUS_OK,
    STATUS_PARTIAL,
    Message,
)
from protocol.wire.image_key import image_key
from protocol.wire.propagate import ARRAYS as PROPAGATE_ARRAYS
from protocol.wire.propagate import PARAMS as PROPAGATE_PARAMS
from protocol.wire.propagate import PromptEntry, PropagateRequest, has_prompt
from protocol.wire.wire_image import stack_contrast_limits
from workers import microsam_prep
from workers.automask import AutoCancelled, AutoProgress, generate_labels
from workers.cache import EmbeddingCache, EmbeddingEntry
from workers.device import DeviceChoice
from workers.disk_cache import DiskEmbeddingCache
from workers.models import ServedModel, get_spec
from workers.prep import check_image_shape, prepare_image
from workers.prompts import MAX_POINTS, Prompt, PromptError, parse_prompt
from workers.propagate import (
    DEFAULT_MAX_STACK_FRAMES,
    MAX_OBJECTS,
    ObjectPrompt,
    StackFrames,
    VideoPropagator,
    check_object_prompts,
    check_stack,
    frame_order,
)
from workers.request_checks import (
    RequestError,
    bad_request,
    bool_param,
    check_arrays,
    contrast_limits_param,
    float_param,
    request_params,
)
from workers.sam2_internals import check_predictor, predict_best, warm_up_decoder

log = logging.getLogger(__name__)

OPS = ("info", "embed", "segment", "auto", "propagate", "echo", "sleep")
MAX_SLEEP_S = 60.0
LOW_RES_SHAPE = (1, 256, 256)


@dataclass(frozen=True)
class Reply:
    """One reply to a request.

    Attributes:
        status: ``ok``, ``partial``, ``error`` or ``need_image``.
        result: JSON-serialisable results.
        arrays: name -> numpy array of an allowed wire dtype.
        error: ``(code, message)`` when ``status`` is ``error``.
        image_key: the key of the image the reply is about, when known.
    """

    status: str
    result: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    error: tuple[str, str] | None = None
    image_key: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status != STATUS_PARTIAL


def cancelled(what: str) -> RequestError:
    return RequestError("cancelled", f"{what} was cancelled (the broker connection of this request closed)")


@dataclass
class Counters:
    """Request counters reported by ``info``.

    ``images_received`` counts requests that carried pixels (an ``image`` array);
    ``cancelled`` requests stopped early because their broker connection closed.
    """

    requests: int = 0
    errors: int = 0
    encoder_runs: int = 0
    images_received: int = 0
    cancelled: int = 0
    by_op: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "encoder_runs": self.encoder_runs,
            "images_received": self.images_received,
            "cancelled": self.cancelled,
            "by_op": dict(self.by_op),
        }


@dataclass(frozen=True)
class _ImageRef:
    """The image a request is about: its key and size, its pixels if sent, its cached embedding if any."""

    key: str
    hw: tuple[int, int]
    pixels: np.ndarray | None
    contrast_limits: tuple[float, float] | None
    entry: EmbeddingEntry | None


# ----------------------------------------------------------------------------
# request checks beyond workers.request_checks (network input: validated, never asserted)


def _mask_input(message: Message) -> np.ndarray | None:
    mask_input = message.arrays.get("mask_input")
    if mask_input is None:
        return None
    if mask_input.dtype != np.float32 or mask_input.shape != LOW_RES_SHAPE:
        raise bad_request(
            f"mask_input must be float32 {list(LOW_RES_SHAPE)} (low-res logits of a previous answer), "
            f"got {mask_input.dtype} {list(mask_input.shape)}"
        )
    if not np.isfinite(mask_input).all():
        raise bad_request("mask_input contains NaN or infinity")
    return mask_input


# ----------------------------------------------------------------------------
# the service


class Sam2Service:
    """One SAM2 model and the operations of the protocol.

    Args:
        model: a loaded SAM2 model (``workers.models.load_model``) on ``device.device``.
        model_name: the service/model name, part of every image key.
        device: device and autocast settings the model runs with.
        cache_limit_bytes: byte budget of the embedding cache.
        random_weights: the model has random weights (reported by ``info``).
        max_points: most points accepted in one segment prompt.
        max_stack_frames: most slices accepted in one ``propagate`` stack.
        served: the registry entry, checkpoint file and SHA-256 (``info`` reports them);
            default: the shipped registry's entry for ``model_name``, no checkpoint.
        disk_cache: embeddings shared on disk (:mod:`workers.disk_cache`), or None.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        model_name: str,
        device: DeviceChoice,
        cache_limit_bytes: int,
        *,
        random_weights: bool = False,
        max_points: int = MAX_POINTS,
        max_stack_frames: int = DEFAULT_MAX_STACK_FRAMES,
        served: ServedModel | None = None,
        disk_cache: DiskEmbeddingCache | None = None,
    ) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.model = model
        self.model_name = model_name
        self.device = device
        self.random_weights = random_weights
        self.max_points = max_points
        self.max_stack_frames = max_stack_frames
        self.served = served if served is not None else ServedModel(get_spec(model_name))
        self.microsam = self.served.entry.preprocessing == "microsam"
        self.predictor = SAM2ImagePredictor(model)
        if self.microsam:
            microsam_prep.install(self.predictor)
        check_predictor(self.predictor)  # a sam2 that renamed what the cache and predict_best use fails here
        self.propagator = VideoPropagator(model, self.served.entry.config, device.device, device.autocast)
        self.cache = EmbeddingCache(cache_limit_bytes)
        self.disk_cache = disk_cache
        self._disk_writes: list[tuple[str, EmbeddingEntry]] = []
        self.counters = Counters()
        self.last_prompt: dict[str, Any] | None = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._predictor_key: str | None = None
        self._cancel = threading.Event()
        self._handlers: dict[str, Callable[[Message], Iterator[Reply]]] = {
            "info": self._op_info,
            "embed": self._op_embed,
            "segment": self._op_segment,
            "auto": self._op_auto,
            "propagate": self._op_propagate,
            "echo": self._op_echo,
            "sleep": self._op_sleep,
        }

    # -- entry points ---------------------------------------------------------

    def handle(self, message: Message, cancel: threading.Event | None = None) -> Iterator[Reply]:
        """Run one request; yield PARTIAL replies (if any) and then exactly one final reply.

        Never raises for a bad request or a failing model call: those become
        error replies (``bad_request``, ``unknown_op`` or ``internal``).

        Args:
            message: the decoded request.
            cancel: set by the worker loop when the request can no longer be
                answered (the broker sent DISCONNECT, e.g. for ``mmi.cancel``);
                long operations (``propagate`` between slices, ``auto`` between
                batches of prompts, ``sleep``) then stop early.
        """
        self._cancel = cancel if cancel is not None else threading.Event()
        self.counters.requests += 1
        if "image" in message.arrays:
            self.counters.images_received += 1
        op = message.op
        handler = self._handlers.get(op)
        if handler is None:
            self.counters.errors += 1
            yield Reply(STATUS_ERROR, error=("unknown_op", f"unknown op {op!r}; known ops: {', '.join(OPS)}"))
            return
        self.counters.by_op[op] = self.counters.by_op.get(op, 0) + 1
        encoder_runs = self.counters.encoder_runs
        try:
            for reply in handler(message):
                yield reply
                if reply.is_final:
                    return
            raise RuntimeError(f"op {op!r} ended without a final reply")
        except RequestError as e:
            if e.code == "cancelled":
                self.counters.cancelled += 1
            else:
                self.counters.errors += 1
            yield Reply(STATUS_ERROR, error=(e.code, e.message))
        except Exception as e:
            self.counters.errors += 1
            log.exception("request_id=%s op=%s failed", message.request_id, op)
            yield Reply(STATUS_ERROR, error=("internal", f"{type(e).__name__}: {e}"))
        finally:
            # Runs when the worker loop asks for the next reply, i.e. after the final one is sent.
            self._write_to_disk()
            if self.counters.encoder_runs != encoder_runs:
                release_free_memory()

    def warm_up(self) -> None:
        """Run the mask decoder once on a blank embedding, on the thread that will serve requests.

        Its first call pays one-time costs (kernel and allocator set-up, and the
        calling thread's own CPU thread team) that would otherwise land on the
        user's first click — after a restart, the click whose embedding comes
        from the disk cache.
        """
        started = time.perf_counter()
        warm_up_decoder(self.predictor, self.device.autocast)
        self._predictor_key = None
        log.info("decoder warmed up in %.0f ms", 1000 * (time.perf_counter() - started))

    def count_undecodable(self) -> None:
        """Count a request whose body could not be decoded (answered by the worker loop)."""
        self.counters.requests += 1
        self.counters.errors += 1

    # -- images and embeddings ------------------------------------------------

    def _resolve_image(
        self, message: Message, params: Mapping[str, Any], *, pixels_required: bool
    ) -> _ImageRef | None:
        """The request's image, or ``None`` when the worker must answer ``need_image``.

        ``pixels_required``: the op needs the pixels themselves (``auto``), not
        just an embedding; the cache is then not consulted.
        """
        contrast_limits = contrast_limits_param(params)
        pixels = message.arrays.get("image")
        sent_key = message.header.get("image_key")
        if pixels is not None:
            if pixels.dtype.name not in ALLOWED_DTYPES:
                raise bad_request(f"image dtype {pixels.dtype} is not allowed ({sorted(ALLOWED_DTYPES)})")
            try:
                hw = check_image_shape(pixels.shape)
            except ValueError as e:
                raise bad_request(str(e)) from e
            key = image_key(pixels, contrast_limits, self.model_name)
            if sent_key is not None and sent_key != key:
                raise bad_request(
                    f"image_key {sent_key!r} does not match the image sent: its pixels, contrast_limits "
                    f"{list(contrast_limits) if contrast_limits else None} and model {self.model_name!r} "
                    f"give {key!r}"
                )
            entry = None if pixels_required else self._cached(key)
            return _ImageRef(key, hw, pixels, contrast_limits, entry)
        if sent_key is None:
            raise bad_request(
                f"op {message.op!r} needs an 'image' array or the 'image_key' of a cached image"
            )
        if pixels_required:
            return None
        entry = self._cached(sent_key)
        if entry is None:
            return None
        return _ImageRef(sent_key, entry.orig_hw, None, contrast_limits, entry)

    def _set_image(self, ref: _ImageRef) -> bool:
        """Make the predictor hold ``ref``'s embedding; return whether it came from the cache."""
        if ref.entry is not None:
            if self._predictor_key != ref.key:
                ref.entry.restore_into(self.predictor)
                self._predictor_key = ref.key
            return True
        if ref.pixels is None:  # _resolve_image never returns this
            raise RuntimeError(f"no pixels and no cached embedding for {ref.key}")
        rgb = self._model_rgb(ref)
        self._predictor_key = None
        started = time.perf_counter()
        with torch.inference_mode(), self.device.autocast():
            self.predictor.set_image(rgb)
        self.counters.encoder_runs += 1
        self._predictor_key = ref.key
        entry = EmbeddingEntry.from_predictor(self.predictor)
        stored = self.cache.put(ref.key, entry)
        if self.disk_cache is not None:
            self._disk_writes.append((ref.key, entry))  # written after the reply has gone
        log.info(
            "encoded %s (%dx%d) in %.2fs, %.1f MiB%s",
            ref.key,
            ref.hw[0],
            ref.hw[1],
            time.perf_counter() - started,
            entry.nbytes / 2**20,
            "" if stored else " (larger than the cache, not stored)",
        )
        return False

    def preload(self, count: int) -> None:
        """Read the ``count`` most recently used disk-cache entries of this model into the memory
        cache (before serving: a restarted worker's first click on the images in use reads no file)."""
        if self.disk_cache is None or count <= 0:
            return
        started = time.perf_counter()
        recent = self.disk_cache.recent(count, self.device.device)
        for key, entry in reversed(recent):  # the most recently used goes in last: first to stay
            self.cache.put(key, entry)
        log.info(
            "%d embeddings read from the disk cache in %.0f ms",
            len(recent),
            1000 * (time.perf_counter() - started),
        )

    def _cached(self, key: str) -> EmbeddingEntry | None:
        """The embedding of ``key`` from memory, else from the disk cache (then kept in memory too)."""
        entry = self.cache.get(key)
        if entry is None and self.disk_cache is not None:
            entry = self.disk_cache.get(key, self.device.device)
            if entry is not None:
                self.cache.put(key, entry)
                log.info("embedding of %s read from the disk cache", key)
        return entry

    def _write_to_disk(self) -> None:
        """Store this request's new embeddings in the disk cache (after its final reply was sent)."""
        while self._disk_writes and self.disk_cache is not None:
            key, entry = self._disk_writes.pop()
            self.disk_cache.put(key, entry)
        self._disk_writes.clear()

    def _model_rgb(self, ref: _ImageRef) -> np.ndarray:
        """uint8 (H, W, 3) RGB the model's preprocessing starts from: ``contrast_limits`` scaling
        (``sam2``), or micro-sam's per-channel min-max (``microsam``, contrast limits unused)."""
        if ref.pixels is None:
            raise RuntimeError(f"no pixels for {ref.key}")
        try:
            if self.microsam:
                check_image_shape(ref.pixels.shape)
                return microsam_prep.minmax_rgb8(ref.pixels)
            return prepare_image(ref.pixels, ref.contrast_limits)
        except ValueError as e:
            raise bad_request(str(e)) from e

    def _need_image(self) -> Reply:
        return Reply(
            STATUS_NEED_IMAGE,
            {"message": "this worker does not hold that image_key; resend the request with the image"},
        )

    # -- operations -----------------------------------------------------------

    def _op_info(self, message: Message) -> Iterator[Reply]:
        request_params(message, frozenset())
        check_arrays(message, frozenset())
        yield Reply(
            STATUS_OK,
            {
                "model": self.model_name,
                **self.served.to_json(),
                "ops": list(self._handlers),
                "worker_id": self.worker_id,
                "pid": os.getpid(),
                "device": str(self.device.device),
                "dtype": self.device.dtype_name,
                "sam2_version": package_version("sam2"),
                "torch_version": torch.__version__,
                "random_weights": self.random_weights,
                "cache": self.cache.stats(),
                "disk_cache": None if self.disk_cache is None else self.disk_cache.stats(),
                "counters": self.counters.to_json(),
                "last_prompt": self.last_prompt,
            },
        )

    def _op_embed(self, message: Message) -> Iterator[Reply]:
        params = request_params(message, frozenset({"contrast_limits"}))
        check_arrays(message, frozenset({"image"}))
        ref = self._resolve_image(message, params, pixels_required=False)
        if ref is None:
            yield self._need_image()
            return
        cached = self._set_image(ref)
        yield Reply(STATUS_OK, {"image_key": ref.key, "cached": cached}, image_key=ref.key)

    def _op_segment(self, message: Message) -> Iterator[Reply]:
        params = request_params(
            message,
            frozenset({"points", "point_labels", "box", "multimask", "return_logits", "contrast_limits"}),
        )
        check_arrays(message, frozenset({"image", "mask_input"}))
        multimask = bool_param(params, "multimask", True)
        return_logits = bool_param(params, "return_logits", False)
        mask_input = _mask_input(message)
        ref = self._resolve_image(message, params, pixels_required=False)
        if ref is None:
            yield self._need_image()
            return
        try:
            prompt = parse_prompt(params, ref.hw, self.max_points)
        except PromptError as e:
            raise bad_request(str(e)) from e
        self._set_image(ref)
        sam = prompt.to_sam()
        with torch.inference_mode(), self.device.autocast():
            mask, scores, best, low_res = predict_best(self.predictor, sam, mask_input, multimask)
        height, width = ref.hw
        if mask.shape != (height, width):
            raise RuntimeError(f"predictor returned a {mask.shape} mask for a {(height, width)} image")
        self.last_prompt = {
            **prompt.to_json(),
            "image_key": ref.key,
            "shape": [height, width],
            "multimask": multimask,
            "mask_input": mask_input is not None,
            "sam": {
                "point_coords_xy": None if sam.point_coords is None else sam.point_coords.tolist(),
                "point_labels": None if sam.point_labels is None else sam.point_labels.tolist(),
                "box_xyxy": None if sam.box is None else sam.box.tolist(),
            },
        }
        arrays: dict[str, np.ndarray] = {"mask": mask}
        if return_logits:
            arrays["logits"] = np.ascontiguousarray(low_res[best : best + 1], dtype=np.float32)
        result = {
            "scores": [float(s) for s in scores],
            "best": best,
            "shape": [height, width],
            "prompt": prompt.to_json(),
        }
        yield Reply(STATUS_OK, result, arrays, image_key=ref.key)

    def _op_auto(self, message: Message) -> Iterator[Reply]:
        params = request_params(message, frozenset({*AUTO_MASK_KEYS, "contrast_limits"}))
        check_arrays(message, frozenset({"image"}))
        try:  # the one schema of the automatic-mask parameters and their defaults
            settings = AutoMaskParams.from_params(
                {k: v for k, v in params.items() if k != "contrast_limits"}
            ).to_params()
        except ValueError as e:
            raise bad_request(str(e)) from e
        if settings["min_mask_region_area"] > 0 and importlib.util.find_spec("cv2") is None:
            raise bad_request("min_mask_region_area > 0 needs OpenCV (cv2), which this worker does not have")
        ref = self._resolve_image(message, params, pixels_required=True)
        if ref is None:
            yield self._need_image()
            return
        if ref.pixels is None:  # _resolve_image never returns this with pixels_required
            raise RuntimeError("auto without pixels")
        rgb = self._model_rgb(ref)
        started = time.perf_counter()
        events = generate_labels(
            self.model,
            rgb,
            settings,
            self.device.autocast,
            cancel=self._cancel,
            configure_predictor=microsam_prep.install if self.microsam else None,
        )
        try:
            for event in events:
                if isinstance(event, AutoProgress):
                    if event.done == 0:
                        self.counters.encoder_runs += event.crops  # one image-encoder run per crop
                    progress = {
                        "stage": "auto",
                        "done": event.done,
                        "total": event.total,
                        "crops": event.crops,
                    }
                    yield Reply(STATUS_PARTIAL, progress, image_key=ref.key)
                    continue
                log.info(
                    "auto: %d masks, %d visible objects in %.2fs",
                    event.masks_found,
                    len(event.areas),
                    time.perf_counter() - started,
                )
                yield auto_reply(event.labels, event.areas, ref.key)
                return
        except AutoCancelled:
            raise cancelled(f"auto after {time.perf_counter() - started:.1f} s") from None
        raise RuntimeError("automatic mask generation ended without a result")

    def _op_propagate(self, message: Message) -> Iterator[Reply]:
        params = request_params(message, PROPAGATE_PARAMS)
        check_arrays(message, PROPAGATE_ARRAYS)
        stack = message.arrays.get("stack")
        if stack is None:
            raise bad_request("propagate needs a 'stack' array: (Z, H, W) grey or (Z, H, W, 3|4) colour")
        try:
            shape = check_stack(stack.shape, self.max_stack_frames)
        except ValueError as e:
            raise bad_request(str(e)) from e
        try:  # the request's one definition, shared with the client (protocol.wire.propagate)
            request, entries = PropagateRequest.from_params(params, shape.frames)
        except ValueError as e:
            raise bad_request(str(e)) from e
        frame_index, direction, max_frames = request.frame_index, request.direction, request.max_frames
        contrast_limits = contrast_limits_param(params)
        many = "masks" in message.arrays or "prompts" in params
        if many:
            objects = self._propagate_objects(
                message, params, entries, frame_index, shape.frames, shape.height, shape.width
            )
        else:
            mask, prompt = self._propagate_prompt(message, params, shape.height, shape.width)
            objects = [ObjectPrompt(frame_index, 1, mask, prompt)]
        order = frame_order(shape.frames, frame_index, direction, max_frames)
        if contrast_limits is None:
            contrast_limits = stack_contrast_limits(stack)
        frames = StackFrames(stack, int(self.propagator.predictor.image_size), contrast_limits)
        started = time.perf_counter()
        done = 0
        slices = self.propagator.run_objects(
            frames, shape, frame_index, direction, max_frames, objects, stop_vanished=many
        )
        try:
            for index, present, labels in slices:
                if done >= len(order) or index != order[done]:
                    raise RuntimeError(f"propagation produced slice {index}, expected the order {order}")
                done += 1
                progress: dict[str, Any] = {"frame_index": index, "done": done, "total": len(order)}
                if many:
                    progress["object_ids"] = sorted(present)
                    yield Reply(STATUS_PARTIAL, progress, {"labels": labels})
                else:
                    yield Reply(STATUS_PARTIAL, progress, {"mask": labels == 1})
                if self._cancel.is_set():
                    break
        finally:
            slices.close()
            self.counters.encoder_runs += frames.loads
        was_cancelled = self._cancel.is_set() and done < len(order)
        if was_cancelled:
            self.counters.cancelled += 1
        elif done != len(order):
            raise RuntimeError(f"propagation produced {done} slices, expected {len(order)}")
        log.info(
            "propagate: %d of %d slices of %dx%d from slice %d (%s), %d object(s)%s in %.2fs",
            done,
            len(order),
            shape.height,
            shape.width,
            frame_index,
            direction,
            len({item.object_id for item in objects}),
            ", cancelled" if was_cancelled else "",
            time.perf_counter() - started,
        )
        yield Reply(STATUS_OK, {"frames": done, "cancelled": was_cancelled})

    def _propagate_objects(
        self,
        message: Message,
        params: Mapping[str, Any],
        entries: list[PromptEntry],
        frame_index: int,
        frames: int,
        height: int,
        width: int,
    ) -> list[ObjectPrompt]:
        """The many-object form: a uint32 ``masks`` label image on slice k and/or a ``prompts`` list."""
        if message.arrays.get("mask") is not None or has_prompt(params):
            raise bad_request(
                "give either the one-object form ('mask' or points/box) or the many-object form "
                "('masks' and/or 'prompts'), not both"
            )
        objects: list[ObjectPrompt] = []
        masks = message.arrays.get("masks")
        if masks is not None:
            if masks.dtype != np.uint32 or masks.shape != (height, width):
                raise bad_request(
                    f"masks must be a uint32 (H, W) = {[height, width]} label image of slice frame_index "
                    f"(0 = background, each other id an object), got {masks.dtype} {list(masks.shape)}"
                )
            ids = np.unique(masks)
            ids = ids[ids > 0]
            if ids.size == 0:
                raise bad_request("masks has no object: it must label the objects on slice frame_index")
            if ids.size > MAX_OBJECTS:
                raise bad_request(f"masks has {ids.size} objects; one request tracks at most {MAX_OBJECTS}")
            objects += [ObjectPrompt(frame_index, int(i), masks == i) for i in ids]
        for n, entry in enumerate(entries):  # slice and object checked by PropagateRequest.from_params
            try:
                prompt = parse_prompt(entry.fields, (height, width), self.max_points)
            except PromptError as e:
                raise bad_request(f"prompts[{n}]: {e}") from e
            objects.append(ObjectPrompt(entry.frame_index, entry.object_id, None, prompt))
        try:
            check_object_prompts(objects, frame_index, frames)
        except ValueError as e:
            raise bad_request(str(e)) from e
        return objects

    def _propagate_prompt(
        self, message: Message, params: Mapping[str, Any], height: int, width: int
    ) -> tuple[np.ndarray | None, Prompt | None]:
        """The prompt on slice k: a bool (H, W) ``mask``, or points/box in (row, col); exactly one."""
        mask = message.arrays.get("mask")
        prompted = has_prompt(params)
        if mask is not None:
            if prompted:
                raise bad_request("give either a 'mask' or points/box for slice frame_index, not both")
            if mask.dtype != np.bool_ or mask.shape != (height, width):
                raise bad_request(
                    f"mask must be bool (H, W) = {[height, width]} like one slice of the stack, "
                    f"got {mask.dtype} {list(mask.shape)}"
                )
            if not mask.any():
                raise bad_request("mask is empty: it must mark the object on slice frame_index")
            return mask, None
        if not prompted:
            raise bad_request(
                "propagate needs a prompt on slice frame_index: a 'mask' array (bool (H, W)), "
                "or points + point_labels and/or a box"
            )
        try:
            return None, parse_prompt(params, (height, width), self.max_points)
        except PromptError as e:
            raise bad_request(str(e)) from e

    def _op_echo(self, message: Message) -> Iterator[Reply]:
        yield Reply(STATUS_OK, {"params": message.header.get("params", {})}, dict(message.arrays))

    def _op_sleep(self, message: Message) -> Iterator[Reply]:
        params = request_params(message, frozenset({"seconds"}))
        check_arrays(message, frozenset())
        seconds = float_param(params, "seconds", 0.0, 0.0, MAX_SLEEP_S)
        started = time.perf_counter()
        if self._cancel.wait(seconds):
            raise cancelled(f"sleep after {time.perf_counter() - started:.1f} s")
        yield Reply(STATUS_OK, {"slept_s": round(time.perf_counter() - started, 6)})


def auto_reply(labels: np.ndarray, areas: Sequence[int], image_key: str | None = None) -> Reply:
    """The FINAL of ``auto``: the label image and each object's area as array frames.

    The header holds only ``num_objects``, so its size does not grow with the
    number of objects (a per-object list there passed the client's 64 KiB
    header limit at about 10,000 objects).

    Args:
        labels: uint32 (H, W), 0 = background, ids 1..n.
        areas: visible pixels of label ``i + 1`` at index ``i`` (n entries).
    """
    area_array = np.asarray(areas, dtype=np.uint32).reshape(-1)
    arrays = {"labels": labels, "areas": area_array}
    return Reply(STATUS_OK, {"num_objects": int(area_array.size)}, arrays, image_key=image_key)


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
