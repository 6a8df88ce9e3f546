"""``workers.sam2_internals.predict_best`` answers exactly what ``SAM2ImagePredictor.predict`` answers.

The worker upsamples only the best of SAM2's masks (bench/: benchmark 1);
this checks, with the real tiny model (random weights), that mask, scores,
best index and low-res logits are those of ``predict`` for every prompt kind.
One image-encoder run (a few seconds on a CPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from workers.models import load_model
from workers.prompts import SamPrompt
from workers.sam2_internals import check_predictor, predict_best

pytestmark = pytest.mark.model

MODEL = "sam2.1_hiera_tiny"
HEIGHT, WIDTH = 120, 160


@pytest.fixture(scope="module")
def predictor(random_checkpoint: Path) -> Iterator[Any]:
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(load_model(MODEL, random_checkpoint, "cpu"))
    image = np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    with torch.inference_mode():
        predictor.set_image(image)
    yield predictor


def test_the_installed_sam2_has_every_private_member_the_worker_uses(predictor: Any) -> None:
    # A sam2 upgrade that renames one fails here and at worker start-up, naming it.
    check_predictor(predictor)


def _prompts() -> list[tuple[str, SamPrompt, bool, bool]]:
    """(name, prompt in (x, y), multimask, with mask_input)."""
    points = np.array([[40.0, 30.0], [100.5, 80.25]], dtype=np.float32)
    labels = np.array([1, 0], dtype=np.int32)
    box = np.array([20.0, 10.0, 130.0, 90.0], dtype=np.float32)
    return [
        ("one point", SamPrompt(points[:1], labels[:1], None), True, False),
        ("two points, single mask", SamPrompt(points, labels, None), False, False),
        ("box", SamPrompt(None, None, box), True, False),
        ("points and box", SamPrompt(points, labels, box), True, False),
        ("point and mask input", SamPrompt(points[:1], labels[:1], None), True, True),
    ]


@pytest.mark.parametrize(("name", "prompt", "multimask", "with_mask_input"), _prompts())
def test_predict_best_matches_predict(
    predictor: Any, name: str, prompt: SamPrompt, multimask: bool, with_mask_input: bool
) -> None:
    mask_input = None
    if with_mask_input:
        mask_input = np.random.default_rng(5).normal(0, 4, (1, 256, 256)).astype(np.float32)
    with torch.inference_mode():
        masks, scores, low_res = predictor.predict(
            point_coords=prompt.point_coords,
            point_labels=prompt.point_labels,
            box=prompt.box,
            mask_input=mask_input,
            multimask_output=multimask,
        )
        mask, fast_scores, best, fast_low_res = predict_best(predictor, prompt, mask_input, multimask)
    assert best == int(np.argmax(scores)), name
    assert mask.dtype == np.bool_ and mask.shape == (HEIGHT, WIDTH) and mask.flags.c_contiguous
    np.testing.assert_array_equal(mask, masks[best] > 0.5)
    np.testing.assert_allclose(fast_scores, scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast_low_res, low_res, rtol=0, atol=1e-5)
