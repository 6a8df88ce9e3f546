"""micro-sam's fine-tunes: their preprocessing (against micro-sam's written description, not our
output), their checkpoint layout through the real load path, and the SHA-256 pin at worker start.

The expected values below come from the description in ``workers/microsam_prep.py`` (micro-sam's
development-branch ``to_image`` and ``ResizeLongestSideTransforms``): per-channel min-max to uint8,
ToTensor, longest side to 1024 with ``int(side * 1024 / max(H, W) + 0.5)``, zero padding at the
bottom/right in [0, 1] space, then ImageNet normalisation.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from protocol.wire.codec import Message
from tests.support.processes import PYTHON, REPO_ROOT, free_endpoint
from workers.microsam_prep import ResizeLongestSideTransforms, minmax_rgb8

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def test_minmax_maps_each_channel_min_to_0_and_max_to_255() -> None:
    grey = np.full((4, 5), 1000, dtype=np.uint16)
    grey[0, 0] = 200
    grey[1, 1] = 600
    rgb = minmax_rgb8(grey)
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 5, 3)
    assert (rgb[0, 0] == 0).all() and (rgb[2, 2] == 255).all() and (rgb[1, 1] == 128).all()  # 127.5 rounds up
    colour = np.zeros((2, 2, 4), dtype=np.float32)
    colour[..., 0] = [[1, 2], [3, 5]]
    colour[..., 1] = 7.0  # a constant channel becomes 0
    colour[..., 2] = [[-1, 0], [0, 1]]
    colour[..., 3] = 99.0  # alpha is dropped
    rgb = minmax_rgb8(colour)
    assert rgb[..., 0].tolist() == [[0, 64], [128, 255]]
    assert not rgb[..., 1].any() and rgb[..., 2].tolist() == [[0, 128], [128, 255]]


def test_a_300x500_image_becomes_614x1024_padded_bottom_right_then_imagenet_normalised() -> None:
    image = np.full((300, 500), 4000, dtype=np.uint16)
    image[0, 0] = 0  # min-max: 0 there, 255 everywhere else
    transforms = ResizeLongestSideTransforms(1024, 0.0)
    x = transforms(minmax_rgb8(image)).numpy()
    assert x.shape == (3, 1024, 1024) and x.dtype == np.float32
    pad = (0.0 - MEAN) / STD
    white = (1.0 - MEAN) / STD
    # 300 * 1024 / 500 = 614.4 -> 614 rows of image, rows 614..1023 padding; all 1024 columns are image
    np.testing.assert_allclose(x[:, 614:, :], np.broadcast_to(pad[:, None, None], (3, 410, 1024)), atol=1e-6)
    np.testing.assert_allclose(
        x[:, 10:610, 10:1020], np.broadcast_to(white[:, None, None], (3, 600, 1010)), atol=1e-5
    )
    assert np.abs(x[:, 613, 512] - white).max() < 1e-5  # the last image row is image, not padding


def test_prompts_scale_by_the_longest_side_and_masks_drop_the_padding() -> None:
    transforms = ResizeLongestSideTransforms(1024, 0.0)
    points = torch.tensor([[[499.0, 299.0], [0.0, 0.0]]])
    scaled = transforms.transform_coords(points, normalize=True, orig_hw=(300, 500))
    np.testing.assert_allclose(scaled.numpy(), [[[499 * 2.048, 299 * 2.048], [0, 0]]], rtol=1e-6)
    boxes = transforms.transform_boxes(
        torch.tensor([[10.0, 20.0, 30.0, 40.0]]), normalize=True, orig_hw=(300, 500)
    )
    np.testing.assert_allclose(boxes.numpy(), [[[20.48, 40.96], [61.44, 81.92]]], rtol=1e-6)
    logits = torch.full((1, 1, 256, 256), -8.0)
    logits[..., :128] = 8.0  # left half of the padded square = left half of the 500-pixel-wide image
    mask = transforms.postprocess_masks(logits, (300, 500))[0, 0].numpy() > 0
    assert mask.shape == (300, 500)
    assert mask[:, :245].all() and not mask[:, 255:].any()


@pytest.mark.model
def test_a_checkpoint_in_microsam_layout_loads_and_serves_with_its_preprocessing(tmp_path: Path) -> None:
    from workers.device import resolve_device
    from workers.models import ServedModel, checkpoint_digest, get_spec, load_model, write_random_checkpoint
    from workers.ops import Sam2Service

    spec = get_spec("hvit_t_cells")
    path = write_random_checkpoint(
        "sam2.1_hiera_tiny", tmp_path / "hvit_t_cells.pt", extra={"model_type": "hvit_t"}
    )
    assert set(torch.load(path, map_location="cpu", weights_only=True)) == {"model", "model_type"}
    sha256 = checkpoint_digest(spec, path)
    device = resolve_device("cpu")
    model = load_model(spec.name, path, device.device)
    service = Sam2Service(model, spec.name, device, 64 * 2**20, served=ServedModel(spec, path, sha256))
    assert isinstance(service.predictor._transforms, ResizeLongestSideTransforms)
    image = np.random.default_rng(3).integers(0, 4096, (300, 500), dtype=np.uint16)
    header = {
        "v": 1,
        "op": "segment",
        "request_id": "ms-1",
        "params": {"points": [[150, 400]], "point_labels": [1]},
    }
    [reply] = list(service.handle(Message(header, {"image": image})))
    assert reply.status == "ok", reply.error
    assert reply.arrays["mask"].shape == (300, 500) and reply.result["shape"] == [300, 500]
    assert service.predictor._orig_hw == [(300, 500)]
    [info] = list(service.handle(Message({"v": 1, "op": "info", "request_id": "ms-2"}, {})))
    result = info.result
    assert result["family"] == "sam2" and result["preprocessing"] == "microsam"
    assert result["checkpoint"] == "hvit_t_cells.pt" and result["checkpoint_sha256"] == sha256
    assert "micro-sam" in result["licence"] and "segment" in result["ops"]


def test_worker_refuses_a_checkpoint_whose_sha256_differs_from_the_pin(tmp_path: Path) -> None:
    weights = tmp_path / "ft.pt"
    weights.write_bytes(b"PK not really a checkpoint")
    model_file = tmp_path / "mine.toml"
    model_file.write_text(
        f"""[models.pinned_ft]
family = "sam2"
config = "configs/sam2.1/sam2.1_hiera_t.yaml"
checkpoint = "{weights}"
licence = "ours"
description = "a pinned fine-tune"
sha256 = "{"0" * 64}"
"""
    )
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "workers",
            "--connect",
            free_endpoint(),
            "--model-file",
            str(model_file),
            "--model",
            "pinned_ft",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    assert f"checkpoint {weights} has SHA-256" in done.stderr and f"pins {'0' * 64}" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "cache" / "napari-sam2-broker" / "sha256.json").is_file()


def test_worker_reports_a_bad_model_file_and_an_unknown_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[models.x]\nfamily = "sam9"\n')
    for extra, expected in (
        (["--model-file", str(bad)], f"{bad}: model 'x': field 'family' must be one of"),
        (["--model", "no_such_model"], "unknown model 'no_such_model'; known models: sam2.1_hiera_tiny"),
    ):
        done = subprocess.run(
            [PYTHON, "-m", "workers", "--connect", free_endpoint(), *extra],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and expected in done.stderr, done.stderr
