"""The one place that touches private members of sam2's ``SAM2ImagePredictor``.

Checked against **sam2 1.1.0** (the version pinned in
``scripts/constraints.txt``). Two things the public API does not offer need
the predictor's internals:

* the embedding cache (:mod:`workers.cache`) saves and restores what
  ``set_image`` leaves behind: ``_features`` (``{"image_embed": (1, 256, 64,
  64), "high_res_feats": [(1, 32, 256, 256), (1, 64, 128, 128)]}``),
  ``_orig_hw`` (``[(H, W)]``), ``_is_image_set`` and ``_is_batch``;
* :func:`predict_best` runs ``predict``'s steps but upsamples only the best
  mask: ``_prep_prompts``, ``_features``, ``_transforms.postprocess_masks``
  and ``_orig_hw``.

A sam2 release may rename or drop any of them. :func:`check_predictor` runs
when a worker starts (:class:`workers.ops.Sam2Service`) and fails at once
with :class:`Sam2InternalsChanged`, naming what is missing, instead of a
worker that starts and then fails on the first click.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from workers.prompts import SamPrompt

CHECKED_SAM2_VERSION = "1.1.0"
# Private members of SAM2ImagePredictor used here, with what each must be.
PRIVATE_ATTRIBUTES = ("_features", "_orig_hw", "_is_image_set", "_is_batch", "_transforms")
PRIVATE_METHODS = ("_prep_prompts",)
TRANSFORM_METHODS = ("postprocess_masks",)


class Sam2InternalsChanged(RuntimeError):
    """The installed sam2's ``SAM2ImagePredictor`` lacks a private member this module relies on."""


def check_predictor(predictor: Any) -> None:
    """Verify that ``predictor`` (a freshly built ``SAM2ImagePredictor``) has every member used here.

    Raises:
        Sam2InternalsChanged: one or more are missing; the message names them,
            the installed sam2 version and the version this module was checked against.
    """
    missing = [name for name in PRIVATE_ATTRIBUTES if not hasattr(predictor, name)]
    missing += [name for name in PRIVATE_METHODS if not callable(getattr(predictor, name, None))]
    transforms = getattr(predictor, "_transforms", None)
    if transforms is not None:
        missing += [
            f"_transforms.{name}"
            for name in TRANSFORM_METHODS
            if not callable(getattr(transforms, name, None))
        ]
    if missing:
        raise Sam2InternalsChanged(
            f"sam2 {_sam2_version()}'s SAM2ImagePredictor has no {', '.join(missing)}: "
            f"workers/sam2_internals.py was written against sam2 {CHECKED_SAM2_VERSION}. "
            f"Install sam2=={CHECKED_SAM2_VERSION} (scripts/constraints.txt) or update that module."
        )


def capture_embedding(predictor: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, int]]:
    """What ``set_image`` of one image left in ``predictor``.

    Returns:
        ``(image_embed (1, 256, 64, 64), high_res_feats ((1, 32, 256, 256), (1, 64, 128, 128)), (H, W))``.

    Raises:
        RuntimeError: no single image is set.
    """
    if not predictor._is_image_set or predictor._is_batch or predictor._features is None:
        raise RuntimeError("the predictor holds no single-image embedding to cache")
    features = predictor._features
    height, width = predictor._orig_hw[0]
    return features["image_embed"], tuple(features["high_res_feats"]), (int(height), int(width))


def restore_embedding(
    predictor: Any,
    image_embed: torch.Tensor,
    high_res_feats: tuple[torch.Tensor, ...],
    orig_hw: tuple[int, int],
) -> None:
    """Make ``predictor`` hold an embedding exactly as ``set_image`` would have left it (no encoder run)."""
    predictor.reset_predictor()
    predictor._features = {"image_embed": image_embed, "high_res_feats": list(high_res_feats)}
    predictor._orig_hw = [orig_hw]
    predictor._is_batch = False
    predictor._is_image_set = True


def warm_up_decoder(
    predictor: Any, autocast: Callable[[], contextlib.AbstractContextManager[object]]
) -> None:
    """Run the prompt encoder and mask decoder once on a blank embedding, then reset ``predictor``.

    The first decoder call of a process pays one-time costs (kernel and
    allocator set-up: tens of ms on a CPU, more on a fresh CUDA context) that
    would otherwise land on the user's first click — after a restart, the
    click on an image whose embedding comes from the disk cache.
    """
    model = predictor.model
    side = int(model.image_size)
    dim = int(model.sam_mask_decoder.transformer_dim)
    device = next(model.parameters()).device
    blank = torch.zeros(1, dim, side // 16, side // 16, device=device)
    high_res = (
        torch.zeros(1, dim // 8, side // 4, side // 4, device=device),
        torch.zeros(1, dim // 4, side // 8, side // 8, device=device),
    )
    restore_embedding(predictor, blank, high_res, (side, side))
    point = SamPrompt(np.array([[side / 2, side / 2]], dtype=np.float32), np.array([1], dtype=np.int32), None)
    try:
        with torch.inference_mode(), autocast():
            predict_best(predictor, point, None, multimask=True)
    finally:
        predictor.reset_predictor()


def predict_best(
    predictor: Any, sam: SamPrompt, mask_input: np.ndarray | None, multimask: bool
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """``SAM2ImagePredictor.predict`` for one prompt, bringing only the best mask to full size.

    The same steps as sam2 1.1.0's ``predict`` / ``_predict`` (prompt
    encoder, mask decoder, post-processing, threshold), except that of the 1
    or 3 low-resolution masks only the one with the highest predicted IoU is
    upsampled to the image size and copied to numpy: ``predict`` upsamples
    all three (about 7 of its 45 ms on a CPU at 1024², bench/RESULTS.md).
    Call it under ``torch.inference_mode()`` and the device's autocast, with
    an image set on ``predictor``.

    Args:
        predictor: a ``SAM2ImagePredictor`` holding one image.
        sam: the prompt in SAM's (x, y) pixel conventions.
        mask_input: float32 (1, 256, 256) low-res logits of a previous answer, or None.
        multimask: ask the decoder for three masks (else one).

    Returns:
        ``(mask, scores, best, low_res)``: bool (H, W) mask of the best
        prediction, float32 (C,) predicted IoUs, the index of the best, and
        float32 (C, 256, 256) low-res logits clamped to [-32, 32] (C = 3 or 1).
    """
    mask_t, coords, labels, box = predictor._prep_prompts(
        sam.point_coords, sam.point_labels, sam.box, mask_input, normalize_coords=True
    )
    model = predictor.model
    points = None if coords is None else (coords, labels)
    if box is not None:  # a box is two corner points with labels 2 and 3, in front of the clicks
        box_coords = box.reshape(-1, 2, 2)
        box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=box.device).repeat(box.size(0), 1)
        if points is None:
            points = (box_coords, box_labels)
        else:
            points = (torch.cat([box_coords, points[0]], dim=1), torch.cat([box_labels, points[1]], dim=1))
    sparse, dense = model.sam_prompt_encoder(points=points, boxes=None, masks=mask_t)
    features = predictor._features
    low_res, iou, _, _ = model.sam_mask_decoder(
        image_embeddings=features["image_embed"][-1].unsqueeze(0),
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        repeat_image=False,
        high_res_features=[level[-1].unsqueeze(0) for level in features["high_res_feats"]],
    )
    scores = iou[0].float().cpu().numpy()
    best = int(np.argmax(scores))
    upsampled = predictor._transforms.postprocess_masks(low_res[:, best : best + 1], predictor._orig_hw[-1])
    mask = np.ascontiguousarray((upsampled[0, 0] > predictor.mask_threshold).cpu().numpy())
    logits = torch.clamp(low_res[0], -32.0, 32.0).float().cpu().numpy()
    return mask, scores, best, logits


def _sam2_version() -> str:
    try:
        return importlib.metadata.version("sam2")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"
