"""micro-sam's preprocessing for its SAM2 fine-tunes (registry ``preprocessing = "microsam"``).

SAM2's own predictor squashes any image into a 1024 x 1024 square and
normalises with ImageNet's mean and std. micro-sam trains and runs its SAM2
fine-tunes (``hvit_*_cells``) differently; this module writes that down from
micro-sam's development-branch source (computational-cell-analytics/micro-sam,
read through the code index; the released micro_sam on PyPI has no SAM2 code):

1. Intensities: ``micro_sam/v2/normalization.py`` (commit 254595ba),
   ``IMAGE_PREPROCESSING = "minmax_per_channel"`` and ``to_image``: a 2D or
   channel-last image becomes uint8 RGB, each channel min-max normalised on
   its own (grey is repeated into three channels). :func:`minmax_rgb8`.
2. Geometry and normalisation: ``micro_sam/v2/transforms/resize.py`` (commit
   2e46cfdd), ``ResizeLongestSideTransforms``, installed on the image predictor
   by ``configure_image_predictor`` in ``micro_sam/v2/util.py`` (commit
   05c57cce): ``ToTensor`` (uint8 -> [0, 1]), then ``get_preprocess_shape``
   (scale = 1024 / max(H, W), each side ``int(side * scale + 0.5)``), bilinear
   ``F.interpolate`` (``align_corners=False``, ``antialias=True``) to that
   shape, zero padding at the bottom and right to 1024 x 1024 *in [0, 1] image
   space*, then ``Normalize`` with ImageNet's mean (0.485, 0.456, 0.406) and
   std (0.229, 0.224, 0.225), so padded pixels hold ``-mean / std``.
   Prompts (x, y) scale by ``1024 / max(H, W)`` (no padding offset: the image
   sits at the top left). Masks: the 256 x 256 logits are upsampled to 1024 x
   1024, cropped to the resized extent, then resized to (H, W).

:class:`ResizeLongestSideTransforms` replaces a ``SAM2ImagePredictor``'s
``_transforms`` (:func:`install`), exactly as micro-sam does, so ``set_image``,
prompts and mask post-processing all follow it. The embedding cache stores
the predictor's state after ``set_image`` and needs no change.

Not reproduced: micro-sam's hole/sprinkle filling (0 by default, as in
SAM2's predictor) and its video path (``propagate`` keeps SAM2's transforms).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def minmax_rgb8(image: np.ndarray) -> np.ndarray:
    """Per-channel min-max normalisation to uint8 RGB (micro-sam's ``to_image``).

    Args:
        image: (H, W) grey or (H, W, C) with C = 3 or 4 (alpha dropped), any
            numeric dtype; NaN counts as the channel's minimum.

    Returns:
        C-contiguous uint8 (H, W, 3): each channel's minimum maps to 0 and its
        maximum to 255 (rounded); a constant channel becomes 0.
    """
    data = image[:, :, :3] if image.ndim == 3 else image[:, :, None]
    out = np.empty((*data.shape[:2], 3), dtype=np.uint8)
    for channel in range(3):
        values = np.nan_to_num(data[:, :, min(channel, data.shape[2] - 1)].astype(np.float32), nan=-np.inf)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            out[:, :, channel] = 0
            continue
        low, high = float(finite.min()), float(finite.max())
        values = np.clip(values, low, high)
        span = high - low
        scaled = (values - low) * (255.0 / span) if span > 0 else np.zeros_like(values)
        out[:, :, channel] = np.rint(scaled).astype(np.uint8)
    return out


def preprocess_shape(height: int, width: int, target_length: int) -> tuple[int, int]:
    """(new_h, new_w) with the longest side ``target_length`` (micro-sam's ``get_preprocess_shape``)."""
    scale = float(target_length) / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class ResizeLongestSideTransforms(torch.nn.Module):
    """Drop-in for sam2's ``SAM2Transforms``: resize-longest-side + bottom/right pad + ImageNet norm.

    Args:
        resolution: the model's square input side (1024 for SAM 2.1).
        mask_threshold: logit threshold of a mask (the predictor's).
    """

    def __init__(self, resolution: int, mask_threshold: float) -> None:
        super().__init__()
        self.resolution = int(resolution)
        self.mask_threshold = mask_threshold
        # The input is built on the CPU; the predictor moves it to the model's device.
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def _transform_image(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) RGB -> float32 (3, R, R) model input."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)
        new_h, new_w = preprocess_shape(x.shape[1], x.shape[2], self.resolution)
        x = F.interpolate(x[None], size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        x = F.pad(x, (0, self.resolution - new_w, 0, self.resolution - new_h))[0]
        return (x - self.mean) / self.std

    def __call__(self, image: Any) -> torch.Tensor:
        return self._transform_image(np.asarray(image))

    def forward_batch(self, images: Any) -> torch.Tensor:
        return torch.stack([self._transform_image(np.asarray(image)) for image in images], dim=0)

    def transform_coords(
        self, coords: torch.Tensor, normalize: bool = False, orig_hw: Any = None
    ) -> torch.Tensor:
        """Pixel (x, y) of the original image -> (x, y) in the padded model input."""
        coords = coords.clone()
        if normalize:
            if orig_hw is None:
                raise ValueError("orig_hw is required to scale prompt coordinates")
            coords = coords * (float(self.resolution) / max(orig_hw))
        else:
            coords = coords * self.resolution
        return coords

    def transform_boxes(
        self, boxes: torch.Tensor, normalize: bool = False, orig_hw: Any = None
    ) -> torch.Tensor:
        """(B, 4) x0, y0, x1, y1 boxes -> (B, 2, 2) corners in the padded model input."""
        return self.transform_coords(boxes.reshape(-1, 2, 2), normalize=normalize, orig_hw=orig_hw)

    def postprocess_masks(self, masks: torch.Tensor, orig_hw: Any) -> torch.Tensor:
        """(B, C, 256, 256) logits -> (B, C, H, W): upsample to R x R, crop the padding, resize to (H, W)."""
        height, width = int(orig_hw[0]), int(orig_hw[1])
        new_h, new_w = preprocess_shape(height, width, self.resolution)
        size = (self.resolution, self.resolution)
        masks = F.interpolate(masks.float(), size, mode="bilinear", align_corners=False)
        masks = masks[..., :new_h, :new_w]
        return F.interpolate(masks, (height, width), mode="bilinear", align_corners=False)


def install(predictor: Any) -> None:
    """Make a ``SAM2ImagePredictor`` use micro-sam's transforms (its ``configure_image_predictor``)."""
    predictor._transforms = ResizeLongestSideTransforms(predictor.model.image_size, predictor.mask_threshold)
