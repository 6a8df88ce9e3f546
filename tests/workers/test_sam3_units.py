"""The SAM 3 family's pure parts, without building a model: exemplar boxes from (row, col) to SAM 3's
normalised (cx, cy, w, h), painting instances into one label image, the CPU device shim, architecture
files and the checkpoint's ``detector.`` keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from protocol.runtime.registry import ModelEntry
from workers.labels import paint_instances
from workers.models import CheckpointError
from workers.prompts import PromptError, boxes_rc_to_cxcywh, parse_concept_boxes
from workers.sam3_device import follow_device
from workers.sam3_model import Sam3Architecture, image_model_state, read_architecture


def test_an_exemplar_box_in_row_col_pixels_becomes_sam3s_normalised_centre_and_size() -> None:
    # rows 100..300 of 1000, cols 200..1000 of 2000: centre x 0.3, centre y 0.2, width 0.4, height 0.2
    boxes = boxes_rc_to_cxcywh(np.array([[100, 200, 300, 1000]]), (1000, 2000))
    assert boxes.dtype == np.float32
    np.testing.assert_allclose(boxes, [[0.3, 0.2, 0.4, 0.2]], rtol=1e-6)


def test_exemplar_boxes_are_checked_against_the_image() -> None:
    boxes, labels = parse_concept_boxes([[0, 0, 10, 20]], None, (100, 100), max_boxes=2)
    assert boxes.shape == (1, 4) and labels.tolist() == [True]
    assert parse_concept_boxes(None, None, (100, 100), 2)[0].shape == (0, 4)
    for raw, raw_labels, message in (
        ([[0, 0, 10, 200]], None, "outside the image"),
        ([[0, 0, 10, 20]], [2], "box_labels must give 0 or 1"),
        ([[0, 0, 10, 20]] * 3, None, "at most 2"),
        ("box", None, "must be a list"),
    ):
        with pytest.raises(PromptError, match=message):
            parse_concept_boxes(raw, raw_labels, (100, 100), max_boxes=2)


def test_higher_scores_keep_overlapping_pixels_and_instances_left_empty_are_dropped() -> None:
    logits = np.full((3, 4, 4), -5.0, dtype=np.float32)
    logits[0, :, :2] = 5.0  # left half
    logits[1] = 5.0  # everywhere: keeps only what instance 0 left
    logits[2, :, :1] = 5.0  # inside instance 0: nothing left, dropped
    labels, scores = paint_instances(logits, np.array([0.9, 0.8, 0.7], dtype=np.float32), (8, 8))
    assert labels.dtype == np.uint32 and labels.shape == (8, 8)
    np.testing.assert_array_equal(scores, np.array([0.9, 0.8], dtype=np.float32))
    assert set(np.unique(labels).tolist()) == {1, 2}
    assert (labels[:, 0] == 1).all() and (labels[:, -1] == 2).all()


def _reference_paint(logits: np.ndarray, scores: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, list]:
    """The straightforward painting: every mask resized over the whole image by torch, then painted."""
    full = torch.nn.functional.interpolate(
        torch.from_numpy(logits)[:, None], size=hw, mode="bilinear", align_corners=False
    )[:, 0].numpy()
    labels = np.zeros(hw, dtype=np.uint32)
    kept: list[float] = []
    for index, mask in enumerate(full > 0):
        free = mask & (labels == 0)
        if free.any():
            kept.append(float(scores[index]))
            labels[free] = len(kept)
    return labels, kept


@pytest.mark.parametrize("hw", [(100, 130), (64, 80), (20, 25)])  # up by a fraction, up 2x, down
def test_painting_within_bounding_boxes_matches_painting_whole_masks(hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[0:32, 0:40]
    logits = []
    for _ in range(40):  # discs anywhere, overlapping, some cut by the edges, some tiny or empty
        centre_r, centre_c = rng.uniform(-4, 36), rng.uniform(-4, 44)
        radius = rng.uniform(0.3, 9)
        disc = radius - np.hypot(rows - centre_r, cols - centre_c)
        logits.append(disc + rng.normal(0, 0.3, disc.shape))
    logits.append(np.full((32, 40), -1.0))  # nowhere
    stacked = np.asarray(logits, dtype=np.float32)
    scores = np.linspace(0.99, 0.5, len(stacked), dtype=np.float32)
    labels, kept = paint_instances(stacked, scores, hw)
    expected, expected_kept = _reference_paint(stacked, scores, hw)
    assert 20 < len(kept) < len(stacked)  # overlaps hid some instances: the test covers dropping
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(kept, np.asarray(expected_kept, dtype=np.float32))
    assert labels[0].any() and labels[-1].any() and labels[:, 0].any() and labels[:, -1].any()


def test_off_cuda_the_shim_moves_cuda_tensors_to_the_workers_device_and_skips_pinning() -> None:
    with follow_device(torch.device("cpu")):
        made = torch.zeros((2, 3), device="cuda")
        kept = torch.ones(2)
        pinned = kept.pin_memory()
    assert made.device.type == "cpu" and made.shape == (2, 3)
    assert pinned is kept


def test_an_architecture_file_round_trips_and_bad_ones_are_refused(tmp_path: Path) -> None:
    small = Sam3Architecture(resolution=168, vit_width=64, vit_depth=2, vit_global_blocks=(1,))
    (tmp_path / "arch.toml").write_text(small.to_toml())
    entry = ModelEntry("x", "sam3", "d", "l", config="arch.toml", source=str(tmp_path / "models.toml"))
    assert read_architecture(entry) == small
    assert read_architecture(ModelEntry("x", "sam3", "d", "l")) == Sam3Architecture()
    (tmp_path / "arch.toml").write_text("[sam3]\nvit_width = 0\n")
    with pytest.raises(CheckpointError, match="bad value 0 for vit_width"):
        read_architecture(entry)
    (tmp_path / "arch.toml").write_text("[sam3]\nwidth = 3\n")
    with pytest.raises(CheckpointError, match=r"needs a \[sam3\] table"):
        read_architecture(entry)


def test_the_image_model_takes_the_checkpoints_detector_keys() -> None:
    weight = torch.zeros(1)
    state = image_model_state({"detector.a.b": weight, "tracker.c": weight}, Path("sam3.pt"))
    assert state == {"a.b": weight}
    with pytest.raises(CheckpointError, match="not a SAM 3 checkpoint"):
        image_model_state({"a.b": weight}, Path("sam2.pt"))
