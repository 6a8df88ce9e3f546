"""Unit tests of the worker's pure parts: image preparation, prompts, the cache, labels, registry, device."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.automask import count_prompts
from workers.cache import EmbeddingCache, EmbeddingEntry
from workers.device import default_threads, resolve_device
from workers.labels import paint_labels
from workers.models import CheckpointError, get_spec, load_model, sam2_models
from workers.prep import check_contrast_limits, prepare_image
from workers.prompts import MAX_POINTS, PromptError, box_rc_to_xyxy, parse_prompt, points_rc_to_xy
from workers.sam2_internals import Sam2InternalsChanged, check_predictor

WIRE_DTYPES = ["bool", "uint8", "uint16", "int16", "int32", "uint32", "float32"]

# ----------------------------------------------------------------------------
# prep


def _ramp(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    values = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 200
    if dtype == "bool":
        return values > 100
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", WIRE_DTYPES)
@pytest.mark.parametrize("shape", [(12, 20), (12, 20, 3), (12, 20, 4)])
def test_prepare_image_every_dtype_and_layout_gives_uint8_rgb(dtype: str, shape: tuple[int, ...]) -> None:
    image = _ramp(dtype, shape)
    rgb = prepare_image(image)
    assert rgb.dtype == np.uint8
    assert rgb.shape == (12, 20, 3)
    assert rgb.flags.c_contiguous
    if len(shape) == 2:  # grey is repeated to the three channels
        assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    if dtype != "uint8":
        assert rgb.min() == 0 and rgb.max() == 255  # stretched to the full range


def test_uint8_is_used_as_is_and_alpha_dropped() -> None:
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (9, 7, 4), dtype=np.uint8)
    assert np.array_equal(prepare_image(rgba), rgba[..., :3])
    assert np.array_equal(prepare_image(rgba[..., :3], contrast_limits=[10, 20]), rgba[..., :3])
    grey = rgba[..., 0]
    assert np.array_equal(prepare_image(grey), np.repeat(grey[..., None], 3, axis=2))


def test_contrast_limits_map_low_to_0_and_high_to_255_and_clip() -> None:
    image = np.array([[50, 100, 150, 200, 300]], dtype=np.uint16)
    rgb = prepare_image(image, contrast_limits=[100, 200])
    assert rgb[0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_percentiles_are_used_without_contrast_limits() -> None:
    image = np.arange(1000, dtype=np.float32).reshape(10, 100)
    rgb = prepare_image(image)[..., 0]
    low, high = np.percentile(image, [1, 99])
    assert rgb[image <= low].max() == 0
    assert rgb[image >= high].min() == 255
    assert 100 < rgb[5, 0] < 155  # the middle maps near the middle


def test_flat_image_does_not_divide_by_zero() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in ("uint16", "float32", "int32"):
            rgb = prepare_image(np.full((8, 8), 7, dtype=dtype))
            assert rgb.shape == (8, 8, 3) and not rgb.any()


def test_nan_and_inf_pixels_are_mapped_not_propagated() -> None:
    image = np.array([[np.nan, -np.inf, 0.0, 1.0, np.inf]], dtype=np.float32)
    rgb = prepare_image(image, contrast_limits=[0.0, 1.0])[0, :, 0]
    assert rgb.tolist() == [0, 0, 0, 255, 255]
    assert prepare_image(np.full((3, 3), np.nan, dtype=np.float32)).max() == 0


@pytest.mark.parametrize("shape", [(5,), (4, 5, 2), (4, 5, 1), (4, 5, 5), (2, 4, 5, 3), (0, 5), (5, 0, 3)])
def test_bad_image_shapes_are_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="image must"):
        prepare_image(np.zeros(shape, dtype=np.uint8))


@pytest.mark.parametrize(
    "limits", [[5, 5], [9, 1], [1], [1, 2, 3], ["a", 2], [math.nan, 1], [0, math.inf], "x"]
)
def test_bad_contrast_limits_are_rejected(limits: Any) -> None:
    with pytest.raises(ValueError, match="contrast_limits"):
        check_contrast_limits(limits)


# ----------------------------------------------------------------------------
# prompts: the one (row, col) -> (x, y) swap


def test_rc_to_xy_swaps_exactly() -> None:
    xy = points_rc_to_xy(np.array([[1.5, 2.25], [3.0, 4.0]]))
    assert xy.dtype == np.float32
    assert xy.tolist() == [[2.25, 1.5], [4.0, 3.0]]
    box = box_rc_to_xyxy(np.array([10.0, 20.0, 30.0, 40.0]))
    assert box.dtype == np.float32
    assert box.tolist() == [20.0, 10.0, 40.0, 30.0]


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(1, 4096),
    width=st.integers(1, 4096),
    fractions=st.lists(
        st.tuples(st.floats(0, 1), st.floats(0, 1), st.sampled_from([0, 1])), min_size=1, max_size=MAX_POINTS
    ),
    box_fractions=st.none() | st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
)
def test_valid_prompts_convert_exactly(
    height: int,
    width: int,
    fractions: list[tuple[float, float, int]],
    box_fractions: tuple[float, float, float, float] | None,
) -> None:
    points = [[f_r * height, f_c * width] for f_r, f_c, _ in fractions]
    labels = [label for _, _, label in fractions]
    params: dict[str, Any] = {"points": points, "point_labels": labels}
    if box_fractions is not None:
        r0, r1 = sorted((box_fractions[0] * height, box_fractions[1] * height))
        c0, c1 = sorted((box_fractions[2] * width, box_fractions[3] * width))
        params["box"] = [r0, c0, r1, c1]
    prompt = parse_prompt(params, (height, width))
    sam = prompt.to_sam()
    assert sam.point_coords is not None and sam.point_labels is not None
    expected_xy = np.array([[c, r] for r, c in points], dtype=np.float32)
    assert np.array_equal(sam.point_coords, expected_xy)
    assert sam.point_labels.tolist() == labels
    assert prompt.to_json()["points"] == points  # echoed as received, in (row, col)
    if box_fractions is None:
        assert sam.box is None
    else:
        assert sam.box is not None
        assert np.array_equal(sam.box, np.array([c0, r0, c1, r1], dtype=np.float32))


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(1, 512),
    width=st.integers(1, 512),
    row=st.floats(-1e6, 1e6),
    col=st.floats(-1e6, 1e6),
)
def test_points_outside_the_image_are_rejected(height: int, width: int, row: float, col: float) -> None:
    params = {"points": [[row, col]], "point_labels": [1]}
    inside = 0 <= row <= height and 0 <= col <= width
    if inside:
        parse_prompt(params, (height, width))
    else:
        with pytest.raises(PromptError, match="outside the image"):
            parse_prompt(params, (height, width))


def test_pixel_edge_is_inside() -> None:
    prompt = parse_prompt(
        {"points": [[0, 0], [100, 50]], "point_labels": [1, 0], "box": [0, 0, 100, 50]}, (100, 50)
    )
    assert prompt.to_json()["box"] == [0.0, 0.0, 100.0, 50.0]


BAD_PROMPTS: list[tuple[dict[str, Any], str]] = [
    ({}, "empty"),
    ({"points": [], "point_labels": []}, "empty"),
    ({"points": [[1, 2]]}, "point_labels are required"),
    ({"point_labels": [1]}, "without points"),
    ({"points": [[1, 2]], "point_labels": [1, 0]}, "1 points but 2 point_labels"),
    ({"points": [[1, 2], [3, 4]], "point_labels": [1]}, "2 points but 1 point_labels"),
    ({"points": [[1, 2]], "point_labels": [2]}, "0 \\(negative\\) or 1"),
    ({"points": [[1, 2]], "point_labels": [True]}, "0/1 integers"),
    ({"points": [[1, 2]], "point_labels": ["1"]}, "0/1 integers"),
    ({"points": [[math.nan, 2]], "point_labels": [1]}, "finite"),
    ({"points": [[1, math.inf]], "point_labels": [1]}, "finite"),
    ({"points": [[-0.5, 2]], "point_labels": [1]}, "outside the image"),
    ({"points": [[1, 50.01]], "point_labels": [1]}, "outside the image"),
    ({"points": [[1, 2, 3]], "point_labels": [1]}, "must be \\[row, col\\]"),
    ({"points": [[1]], "point_labels": [1]}, "must be \\[row, col\\]"),
    ({"points": "1,2", "point_labels": [1]}, "list"),
    ({"points": [[1, "2"]], "point_labels": [1]}, "list of numbers"),
    ({"points": [[True, 2]], "point_labels": [1]}, "list of numbers"),
    (
        {"points": [[1, 1]] * (MAX_POINTS + 1), "point_labels": [1] * (MAX_POINTS + 1)},
        f"at most {MAX_POINTS}",
    ),
    ({"box": [5, 5, 1, 10]}, "row_min <= row_max"),
    ({"box": [5, 9, 6, 2]}, "col_min <= col_max"),
    ({"box": [1, 2, 3]}, "box must be"),
    ({"box": [1, 2, 3, math.nan]}, "finite"),
    ({"box": [1, 2, 300, 4]}, "outside the image"),
    ({"box": {"r0": 1}}, "list of numbers"),
]


@pytest.mark.parametrize(("params", "message"), BAD_PROMPTS)
def test_invalid_prompts_are_rejected_with_a_clear_message(params: dict[str, Any], message: str) -> None:
    with pytest.raises(PromptError, match=message):
        parse_prompt(params, (100, 50))


# ----------------------------------------------------------------------------
# cache


def _entry(n_floats: int, hw: tuple[int, int] = (10, 10)) -> EmbeddingEntry:
    return EmbeddingEntry(torch.zeros(n_floats), (torch.zeros(n_floats),), hw)


def test_cache_evicts_least_recently_used_by_bytes() -> None:
    cache = EmbeddingCache(limit_bytes=2500)
    assert _entry(125).nbytes == 1000
    cache.put("a", _entry(125))
    cache.put("b", _entry(125))
    assert cache.get("a") is not None  # "a" is now more recent than "b"
    cache.put("c", _entry(125))  # 3000 > 2500: evict the least recently used, "b"
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.nbytes == 2000
    assert cache.get("b") is None
    cache.put("d", _entry(250))  # 2000 bytes: only "d" fits
    assert list(cache.stats().items()) == [
        ("entries", 1),
        ("bytes", 2000),
        ("limit_bytes", 2500),
        ("hits", 1),
        ("misses", 1),
        ("evictions", 3),
    ]


def test_cache_refuses_an_entry_larger_than_the_budget_and_replaces_same_key() -> None:
    cache = EmbeddingCache(limit_bytes=1500)
    cache.put("a", _entry(125))
    assert not cache.put("huge", _entry(1000))
    assert "huge" not in cache and "a" in cache
    cache.put("a", _entry(50))
    assert len(cache) == 1 and cache.nbytes == 400


def test_cache_entry_restores_exactly_what_set_image_sets() -> None:
    predictor = SimpleNamespace(_is_image_set=False, _features=None, _orig_hw=None, _is_batch=True)
    predictor.reset_predictor = lambda: None
    entry = _entry(4, hw=(30, 40))
    entry.restore_into(predictor)
    assert predictor._is_image_set is True and predictor._is_batch is False
    assert predictor._orig_hw == [(30, 40)]
    assert predictor._features["image_embed"] is entry.image_embed
    assert predictor._features["high_res_feats"] == list(entry.high_res_feats)
    again = EmbeddingEntry.from_predictor(predictor)
    assert again.orig_hw == (30, 40) and again.nbytes == entry.nbytes


def _sam2_1_1_0_predictor() -> SimpleNamespace:
    """Every SAM2ImagePredictor member that workers/sam2_internals.py uses, as sam2 1.1.0 has them."""
    return SimpleNamespace(
        _features=None,
        _orig_hw=None,
        _is_image_set=False,
        _is_batch=False,
        _transforms=SimpleNamespace(postprocess_masks=lambda masks, hw: masks),
        _prep_prompts=lambda *args, **kwargs: None,
    )


def test_a_sam2_that_renamed_a_private_member_fails_loudly_naming_it() -> None:
    check_predictor(_sam2_1_1_0_predictor())  # all there
    renamed = _sam2_1_1_0_predictor()
    del renamed._orig_hw
    with pytest.raises(
        Sam2InternalsChanged, match=r"has no _orig_hw: workers/sam2_internals.py .* sam2 1\.1\.0"
    ):
        check_predictor(renamed)
    changed = _sam2_1_1_0_predictor()
    changed._transforms = SimpleNamespace()
    del changed._prep_prompts
    with pytest.raises(Sam2InternalsChanged, match=r"has no _prep_prompts, _transforms.postprocess_masks"):
        check_predictor(changed)


# ----------------------------------------------------------------------------
# labels


def test_paint_labels_largest_first_small_on_top_and_ids_without_gaps() -> None:
    big = np.zeros((10, 10), bool)
    big[:, :] = True
    small = np.zeros((10, 10), bool)
    small[2:4, 2:4] = True
    hidden = np.zeros((10, 10), bool)
    hidden[2:3, 2:3] = True  # smaller still: painted last, on top of "small"
    covered = np.zeros((10, 10), bool)
    covered[2:4, 2:4] = True  # same area as "small", painted after it: hides it completely
    labels, areas = paint_labels([small, big, hidden, covered], (10, 10))
    assert labels.dtype == np.uint32 and labels.shape == (10, 10)
    assert sorted(np.unique(labels).tolist()) == [1, 2, 3]  # "small" vanished, ids renumbered
    assert labels[0, 0] == 1 and labels[2, 2] == 3 and labels[3, 3] == 2
    assert areas == [96, 3, 1]
    assert sum(areas) == int(np.count_nonzero(labels))


def test_paint_labels_empty() -> None:
    labels, areas = paint_labels([], (4, 5))
    assert labels.shape == (4, 5) and not labels.any() and areas == []


def test_auto_progress_counts_crops_and_prompts() -> None:
    assert count_prompts((100, 120), {"points_per_side": 4}) == (1, 16)
    assert count_prompts((100, 120), {"points_per_side": 4, "crop_n_layers": 1}) == (5, 16 + 4 * 16)


# ----------------------------------------------------------------------------
# registry and device


def test_registry_names_configs_files_and_urls() -> None:
    assert sam2_models()[:4] == [
        "sam2.1_hiera_tiny",
        "sam2.1_hiera_small",
        "sam2.1_hiera_base_plus",
        "sam2.1_hiera_large",
    ]
    spec = get_spec("sam2.1_hiera_base_plus")
    assert spec.config == "configs/sam2.1/sam2.1_hiera_b+.yaml"
    assert spec.checkpoint == "sam2.1_hiera_base_plus.pt"
    assert spec.url == "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_base_plus.pt"
    path = spec.checkpoint_path()
    assert path is not None and path.parts[-2:] == ("checkpoints", "sam2.1_hiera_base_plus.pt")
    with pytest.raises(ValueError, match="known models: sam2.1_hiera_tiny"):
        get_spec("sam9")


def test_missing_checkpoint_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_model("sam2.1_hiera_tiny", tmp_path / "nope.pt", "cpu")
    message = str(info.value)
    assert "checkpoints/download.sh sam2.1_hiera_tiny" in message
    assert get_spec("sam2.1_hiera_tiny").url in message
    assert "--random-weights" in message


def test_checkpoint_with_wrong_keys_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pt"
    torch.save({"model": {"not_a_sam2_weight": torch.zeros(1)}}, path)
    with pytest.raises(
        CheckpointError, match=r"wrong\.pt.*missing keys: .*unexpected keys: not_a_sam2_weight"
    ):
        load_model("sam2.1_hiera_tiny", path, "cpu")
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="official layout"):
        load_model("sam2.1_hiera_tiny", path, "cpu")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_model("sam2.1_hiera_tiny", path, "cpu")


def test_default_threads_share_the_cores() -> None:
    assert default_threads(1, cpu_count=16) == 16
    assert default_threads(4, cpu_count=16) == 4
    assert default_threads(4, cpu_count=2) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_auto_device_falls_back_to_cpu_float32_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="workers.device"):
        choice = resolve_device("auto")
    if choice.device.type == "mps":
        pytest.skip("MPS machine")
    assert choice.device.type == "cpu" and choice.dtype_name == "float32" and choice.autocast_dtype is None
    assert "CPU" in caplog.text
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
