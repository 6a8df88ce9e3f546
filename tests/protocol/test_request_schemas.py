"""The ``auto`` and ``propagate`` requests have one definition each, shared by client and worker:
what a caller builds is what the worker accepts, and a bad value is refused with a message naming it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from batch.__main__ import build_parser, main
from batch.runner import BatchSettings
from plugin.jobs.auto_settings import AutoSettings
from protocol.wire.automask import AUTO_MASK_KEYS, AutoMaskParams
from protocol.wire.propagate import PropagateRequest, SlicePrompt


def test_one_set_of_automatic_mask_defaults_with_the_plugins_named_override() -> None:
    schema = AutoMaskParams()
    assert schema.to_params() == {
        "points_per_side": 32,
        "points_per_batch": 64,
        "pred_iou_thresh": 0.8,
        "stability_score_thresh": 0.95,
        "box_nms_thresh": 0.7,
        "crop_n_layers": 0,
        "min_mask_region_area": 0,
    }
    assert BatchSettings().auto_params() == schema.to_params()  # sam2-batch sends the schema's defaults
    plugin = AutoSettings().params()
    assert plugin == {**schema.to_params(), "points_per_side": 16}  # the GUI's one override (CPU speed)
    assert set(plugin) == set(AUTO_MASK_KEYS)  # the plugin's own settings never reach the wire


def test_sam2_batch_options_default_to_the_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    args = parser.parse_args(["in.tif", "--out", "out"])
    assert (args.points_per_side, args.pred_iou_thresh, args.stability_score_thresh) == (32, 0.8, 0.95)
    # an out-of-range value is a usage error naming it, before any input is read or broker asked
    assert main([str(tmp_path / "in.tif"), "--out", str(tmp_path / "out"), "--pred-iou-thresh", "2"]) == 2
    assert "param 'pred_iou_thresh' must be in [0.0, 1.0], got 2.0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"points_per_side": 0}, "param 'points_per_side' must be an integer in 1..128, got 0"),
        ({"points_per_side": 8.0}, "param 'points_per_side' must be an integer"),
        ({"pred_iou_thresh": 2}, "param 'pred_iou_thresh' must be in [0.0, 1.0], got 2"),
        ({"box_nms_thresh": float("nan")}, "param 'box_nms_thresh' must be a finite number"),
        ({"stability_score_thresh": True}, "param 'stability_score_thresh' must be a finite number"),
        ({"points_per_sides": 8}, "unknown auto params ['points_per_sides']"),
    ],
)
def test_a_bad_automatic_mask_parameter_is_named(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        AutoMaskParams.from_params(params)
    assert message in str(raised.value)


def test_automatic_mask_parameters_round_trip() -> None:
    chosen = AutoMaskParams(points_per_side=8, pred_iou_thresh=0.5, crop_n_layers=1)
    assert AutoMaskParams.from_params(chosen.to_params()) == chosen
    assert AutoMaskParams.from_params({}) == AutoMaskParams()


def test_a_propagate_request_is_read_back_as_it_was_built() -> None:
    fix = SlicePrompt(4, 40, points=((46.0, 46.5),), point_labels=(1,))
    box = SlicePrompt(0, 7, box=(1.0, 2.0, 30.0, 40.0))
    params = PropagateRequest(2, "forward", (fix, box), max_frames=3).to_params()
    request, entries = PropagateRequest.from_params(params, frames=10)
    assert (request.frame_index, request.direction, request.max_frames) == (2, "forward", 3)
    assert [(e.frame_index, e.object_id, dict(e.fields)) for e in entries] == [
        (4, 40, {"points": [[46.0, 46.5]], "point_labels": [1]}),
        (0, 7, {"box": [1.0, 2.0, 30.0, 40.0]}),
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"direction": "both"}, "propagate needs 'frame_index'"),
        ({"frame_index": 10}, "param 'frame_index' must be an integer in 0..9, got 10"),
        ({"frame_index": 0, "direction": "up"}, "param 'direction' must be one of"),
        ({"frame_index": 0, "max_frames": -1}, "param 'max_frames' must be an integer in 0..10"),
        ({"frame_index": 0, "prompts": {}}, "param 'prompts' must be a list"),
        ({"frame_index": 0, "prompts": [{"frame_index": 0, "object_id": 0}]}, "prompts[0]: 'object_id'"),
        ({"frame_index": 0, "prompts": [{"frame_index": 12, "object_id": 1}]}, "prompts[0]: 'frame_index'"),
        ({"frame_index": 0, "prompts": [{"frame_index": 1, "object_id": 1, "z": 1}]}, "unknown keys ['z']"),
        ({"frame_index": 0, "frames": 3}, "unknown params for op 'propagate': ['frames']"),
    ],
)
def test_a_bad_propagate_request_is_named(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        PropagateRequest.from_params(params, frames=10)
    assert message in str(raised.value)


def test_the_client_cannot_build_a_request_with_an_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction must be one of"):
        PropagateRequest(0, "sideways")
