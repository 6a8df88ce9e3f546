"""The operations of a SAM 3 worker (family ``sam3``): ``info`` and ``concept``.

:class:`Sam3Service` owns one SAM 3 image model (``workers/sam3_model.py``),
used from the worker loop's one thread, one request at a time. ``concept``
finds every instance of a concept in the image sent: a text prompt
("nucleus") and/or exemplar boxes. The answer is the same as the stand-in's
and what :func:`protocol.ops.concept.concept` reads:

* ``labels``: uint32 (H, W) of the image sent, 0 background, instances 1..n
  in decreasing score (where two instances overlap, the higher score keeps
  the pixel; an instance left with no pixel is dropped);
* ``scores``: float32 (n,), the score of label ``i + 1`` at ``i``, each
  >= ``score_threshold``: SAM 3's detection probability times its presence
  probability (as ``sam3``'s ``Sam3Processor`` scores them);
* ``areas``: uint32 (n,) pixels per label; ``result.num_objects`` = n.

Image handling is that of the SAM2 worker: the key of a sent image is
recomputed (``protocol.wire.image_key``); the vision backbone's features stay
cached by key (bounded in bytes), so a second concept on the same image, or a
request carrying only ``image_key``, skips the image encoder; an unknown key
gets ``need_image``. Boxes arrive as (row0, col0, row1, col1) pixels and are
converted to SAM 3's normalised (cx, cy, w, h) in ``workers/prompts.py``.
Off CUDA every model call runs inside ``workers/sam3_device.py``'s shim.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protocol.runtime.memory import release_free_memory
from protocol.runtime.registry import ModelEntry
from protocol.wire.codec import STATUS_ERROR, STATUS_NEED_IMAGE, STATUS_OK, Message
from protocol.wire.concept import DEFAULT_SCORE_THRESHOLD, MAX_BOXES, MAX_TEXT_CHARS, PARAMS
from protocol.wire.image_key import image_key
from workers.device import DeviceChoice
from workers.labels import paint_instances
from workers.models import ServedModel, checkpoint_digest
from workers.ops import Counters, Reply, package_version
from workers.prep import check_image_shape, prepare_image
from workers.prompts import PromptError, boxes_rc_to_cxcywh, parse_concept_boxes
from workers.request_checks import (
    RequestError,
    check_arrays,
    contrast_limits_param,
    float_param,
    request_params,
)
from workers.sam3_device import follow_device
from workers.sam3_model import Sam3Architecture, load_sam3

log = logging.getLogger(__name__)

OPS = ("info", "concept")
VISUAL_ONLY_TEXT = "visual"
"""The text SAM 3 is given when a concept has only exemplar boxes (as ``Sam3Processor`` does)."""


def _nbytes(value: Any) -> int:
    """Bytes of the tensors in a (nested) backbone output."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


class Sam3Service:
    """``info`` and ``concept`` over one SAM 3 image model (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        arch: Sam3Architecture,
        device: DeviceChoice,
        served: ServedModel,
        cache_limit_bytes: int,
        random_weights: bool = False,
    ) -> None:
        from sam3.model.sam3_image_processor import Sam3Processor

        self.model: Any = model  # sam3's Sam3Image (untyped)
        self.device = device
        self.served = served
        self.model_name = served.entry.name
        self.random_weights = random_weights
        self.cache_limit_bytes = cache_limit_bytes
        self.cache: OrderedDict[str, tuple[dict[str, Any], tuple[int, int], int]] = OrderedDict()
        self.counters = Counters()
        with follow_device(device.device):
            self.processor = Sam3Processor(model, resolution=arch.resolution, device=str(device.device))
        self._handlers: dict[str, Callable[[Message], Reply]] = {"info": self._info, "concept": self._concept}

    def warm_up(self) -> None:
        """Nothing to warm: SAM 3's decoder needs an image's features, and it is a GPU model."""

    def count_undecodable(self) -> None:
        """Count a request whose body could not be decoded (answered by the worker loop)."""
        self.counters.requests += 1
        self.counters.errors += 1

    def handle(self, message: Message, cancel: threading.Event | None = None) -> Iterator[Reply]:
        """Answer one request with exactly one final reply; bad requests and failures become errors."""
        self.counters.requests += 1
        self.counters.images_received += "image" in message.arrays
        handler = self._handlers.get(message.op)
        if handler is None:
            self.counters.errors += 1
            yield Reply(
                STATUS_ERROR, error=("unknown_op", f"unknown op {message.op!r}; known ops: {', '.join(OPS)}")
            )
            return
        self.counters.by_op[message.op] = self.counters.by_op.get(message.op, 0) + 1
        encoder_runs = self.counters.encoder_runs
        try:
            yield handler(message)
        except RequestError as e:
            self.counters.errors += 1
            yield Reply(STATUS_ERROR, error=(e.code, e.message))
        except Exception as e:
            self.counters.errors += 1
            log.exception("request_id=%s op=%s failed", message.request_id, message.op)
            yield Reply(STATUS_ERROR, error=("internal", f"{type(e).__name__}: {e}"))
        finally:  # after the reply has gone: hand the encoder's scratch memory back
            if self.counters.encoder_runs != encoder_runs:
                release_free_memory()

    # -- operations -------------------------------------------------------------

    def _info(self, message: Message) -> Reply:
        request_params(message, frozenset())
        check_arrays(message, frozenset())
        return Reply(
            STATUS_OK,
            {
                "model": self.model_name,
                **self.served.to_json(),
                "ops": list(OPS),
                "pid": os.getpid(),
                "device": str(self.device.device),
                "dtype": self.device.dtype_name,
                "sam3_version": package_version("sam3"),
                "torch_version": torch.__version__,
                "random_weights": self.random_weights,
                "cache": {
                    "entries": len(self.cache),
                    "bytes": sum(size for _, _, size in self.cache.values()),
                    "limit_bytes": self.cache_limit_bytes,
                },
                "counters": self.counters.to_json(),
            },
        )

    def _concept(self, message: Message) -> Reply:
        params = request_params(message, frozenset(PARAMS))
        check_arrays(message, frozenset({"image"}))
        text = params.get("text")
        if text is not None and not (isinstance(text, str) and 0 < len(text.strip()) <= MAX_TEXT_CHARS):
            raise RequestError(
                "bad_request", f"'text' must be 1..{MAX_TEXT_CHARS} characters, got {text!r}"[:300]
            )
        threshold = float_param(params, "score_threshold", DEFAULT_SCORE_THRESHOLD, 0.0, 1.0)
        found = self._features(message, params)
        if found is None:
            return Reply(STATUS_NEED_IMAGE, {"message": "send the image"})
        key, features, hw = found
        try:
            boxes, box_labels = parse_concept_boxes(
                params.get("boxes"), params.get("box_labels"), hw, MAX_BOXES
            )
        except PromptError as e:
            raise RequestError("bad_request", str(e)) from e
        if text is None and not len(boxes):
            raise RequestError("bad_request", "a concept needs a 'text' prompt and/or exemplar 'boxes'")
        started = time.perf_counter()
        mask_logits, scores = self._detect(
            features, text.strip() if text else None, boxes, box_labels, hw, threshold
        )
        labels, scores = paint_instances(mask_logits.float().cpu().numpy(), scores, hw)
        areas = np.bincount(labels.ravel(), minlength=scores.size + 1)[1:].astype(np.uint32)
        log.info(
            "concept %r, %d boxes on %s: %d instances in %.2fs",
            text,
            len(boxes),
            key,
            scores.size,
            time.perf_counter() - started,
        )
        arrays = {"labels": labels, "scores": scores, "areas": areas}
        return Reply(STATUS_OK, {"num_objects": int(scores.size)}, arrays, image_key=key)

    # -- the model ----------------------------------------------------------------

    def _features(
        self, message: Message, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any], tuple[int, int]] | None:
        """(image key, backbone features, (H, W)) of the request's image; None: answer ``need_image``."""
        limits = contrast_limits_param(params)
        pixels = message.arrays.get("image")
        sent_key = message.header.get("image_key")
        if pixels is None:
            cached = self.cache.get(sent_key) if isinstance(sent_key, str) else None
            if cached is None or not isinstance(sent_key, str):
                return None
            self.cache.move_to_end(sent_key)
            return sent_key, cached[0], cached[1]
        try:
            hw = check_image_shape(pixels.shape)
        except ValueError as e:
            raise RequestError("bad_request", str(e)) from e
        key = image_key(pixels, limits, self.model_name)
        if sent_key is not None and sent_key != key:
            raise RequestError(
                "bad_request", f"image_key {sent_key!r} does not match the image sent ({key!r})"
            )
        if key in self.cache:
            self.cache.move_to_end(key)
            return key, self.cache[key][0], hw
        started = time.perf_counter()
        rgb = prepare_image(pixels, limits)  # (H, W, 3) uint8
        with torch.inference_mode(), follow_device(self.device.device), self.device.autocast():
            features = self.processor.set_image(rgb)["backbone_out"]
        self.counters.encoder_runs += 1
        size = _nbytes(features)
        log.info(
            "encoded %s (%dx%d) in %.2fs, %.1f MiB",
            key,
            hw[0],
            hw[1],
            time.perf_counter() - started,
            size / 2**20,
        )
        if size <= self.cache_limit_bytes:
            self.cache[key] = (features, hw, size)
            while sum(s for _, _, s in self.cache.values()) > self.cache_limit_bytes:
                self.cache.popitem(last=False)
        return key, features, hw

    def _detect(
        self,
        features: dict[str, Any],
        text: str | None,
        boxes: np.ndarray,
        box_labels: np.ndarray,
        hw: tuple[int, int],
        threshold: float,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """SAM 3's grounding: (n, h, w) low-resolution mask logits and float32 (n,) scores >= ``threshold``,
        in decreasing score."""
        device = self.device.device
        with torch.inference_mode(), follow_device(device), self.device.autocast():
            backbone_out = dict(features)
            backbone_out.update(self.model.backbone.forward_text([text or VISUAL_ONLY_TEXT], device=device))
            prompt = self.model._get_dummy_prompt()
            if len(boxes):
                sam_boxes = torch.from_numpy(boxes_rc_to_cxcywh(boxes, hw)).to(device).view(-1, 1, 4)
                prompt.append_boxes(sam_boxes, torch.from_numpy(box_labels).to(device).view(-1, 1))
            out = self.model.forward_grounding(
                backbone_out=backbone_out,
                find_input=self.processor.find_stage,
                geometric_prompt=prompt,
                find_target=None,
            )
            presence = out["presence_logit_dec"].sigmoid().unsqueeze(1)
            probs = (out["pred_logits"].sigmoid() * presence).squeeze(-1)[0].float()
            order = torch.argsort(probs, descending=True)
            order = order[probs[order] >= threshold]
            return out["pred_masks"][0][order], probs[order].cpu().numpy().astype(np.float32)


def load_service(
    entry: ModelEntry,
    checkpoint: Path | None,
    device: DeviceChoice,
    cache_limit_bytes: int,
    random_weights: bool = False,
) -> Sam3Service:
    """Load ``entry``'s SAM 3 model (:func:`workers.sam3_model.load_sam3`) and serve it; warn loudly on a CPU.

    Raises:
        CheckpointError: missing (with how to get the gated weights), unreadable, mismatching checkpoint.
    """
    if device.device.type != "cuda":
        log.warning(
            "SAM 3 is a GPU model: on %s one image takes about 1-2 minutes (63-137 s on 2 CPU cores for "
            "the full model). Start this worker on a machine with CUDA for interactive use.",
            device.device,
        )
    sha256: str | None = None
    if not random_weights and checkpoint is not None and checkpoint.is_file():
        sha256 = checkpoint_digest(entry, checkpoint)  # before the (slow) load: a bad pin fails at once
    model, arch = load_sam3(entry, checkpoint, device.device, random_weights=random_weights)
    served = ServedModel(entry, None if random_weights else checkpoint, sha256)
    return Sam3Service(model, arch, device, served, cache_limit_bytes, random_weights=random_weights)
