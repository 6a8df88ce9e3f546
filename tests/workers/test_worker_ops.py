"""Sam2Service in-process with the real SAM2 tiny model (random weights, loaded from a checkpoint file).

Each distinct image costs one image-encoder run (about 4 s on this CPU), so
the module uses three small images in all.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protocol.wire.codec import Message
from protocol.wire.image_key import image_key
from workers.device import resolve_device
from workers.models import load_model
from workers.ops import Reply, Sam2Service

pytestmark = pytest.mark.model

MODEL = "sam2.1_hiera_tiny"


@pytest.fixture(scope="module")
def service(random_checkpoint: Path) -> Iterator[Sam2Service]:
    device = resolve_device("cpu")
    model = load_model(MODEL, random_checkpoint, device.device)
    yield Sam2Service(model, MODEL, device, cache_limit_bytes=256 * 2**20)


@pytest.fixture(scope="module")
def rgb_image() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (96, 128, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def rgb_key(rgb_image: np.ndarray) -> str:
    return image_key(rgb_image, None, MODEL)


def run(
    service: Sam2Service,
    op: str,
    params: dict[str, Any] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    key: str | None = None,
) -> list[Reply]:
    header: dict[str, Any] = {"v": 1, "op": op, "request_id": f"test-{op}"}
    if params is not None:
        header["params"] = params
    if key is not None:
        header["image_key"] = key
    replies = list(service.handle(Message(header, dict(arrays or {}))))
    assert replies and replies[-1].status != "partial"
    assert all(r.status == "partial" for r in replies[:-1])
    return replies


def final(service: Sam2Service, op: str, **kwargs: Any) -> Reply:
    return run(service, op, **kwargs)[-1]


def ok(service: Sam2Service, op: str, **kwargs: Any) -> Reply:
    reply = final(service, op, **kwargs)
    assert reply.status == "ok", reply.error
    return reply


def embed(service: Sam2Service, image: np.ndarray, key: str) -> None:
    ok(service, "embed", arrays={"image": image}, key=key)


# ----------------------------------------------------------------------------


def test_segment_points_box_and_both_reuse_one_embedding(
    service: Sam2Service, rgb_image: np.ndarray, rgb_key: str
) -> None:
    first = ok(
        service,
        "segment",
        params={"points": [[40, 60]], "point_labels": [1]},
        arrays={"image": rgb_image},
        key=rgb_key,
    )
    runs = service.counters.encoder_runs
    hits = service.cache.hits
    received = service.counters.images_received
    prompts: list[dict[str, Any]] = [
        {"box": [10.5, 20, 80, 100]},
        {"points": [[40, 60], [5, 5]], "point_labels": [1, 0], "box": [10, 20, 80, 100]},
        {"points": [[40, 60]], "point_labels": [1], "multimask": False},
    ]
    replies = [first] + [ok(service, "segment", params=p, key=rgb_key) for p in prompts]
    assert service.counters.encoder_runs == runs  # key only: no encoder run
    assert service.counters.images_received == received
    assert service.cache.hits == hits + len(prompts)
    for reply, n_masks in zip(replies, [3, 3, 3, 1], strict=True):
        mask = reply.arrays["mask"]
        assert mask.dtype == np.bool_ and mask.shape == (96, 128)
        scores = reply.result["scores"]
        assert len(scores) == n_masks and all(math.isfinite(s) for s in scores)
        assert reply.result["best"] == int(np.argmax(scores))
        assert reply.result["shape"] == [96, 128]
        assert reply.image_key == rgb_key
        assert "logits" not in reply.arrays
    assert replies[1].result["prompt"] == {
        "points": None,
        "point_labels": None,
        "box": [10.5, 20.0, 80.0, 100.0],
    }
    assert replies[2].result["prompt"]["points"] == [[40.0, 60.0], [5.0, 5.0]]


def test_prompt_reaches_sam_in_xy_order(
    service: Sam2Service, rgb_image: np.ndarray, rgb_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    embed(service, rgb_image, rgb_key)
    seen: dict[str, Any] = {}
    real_prep = service.predictor._prep_prompts

    def spy(point_coords: Any, point_labels: Any, box: Any, *args: Any, **kwargs: Any) -> Any:
        # The predictor's own entry for prompts (predict and the worker's predict_best call it).
        seen.update(point_coords=point_coords, point_labels=point_labels, box=box)
        return real_prep(point_coords, point_labels, box, *args, **kwargs)

    monkeypatch.setattr(service.predictor, "_prep_prompts", spy)
    ok(
        service,
        "segment",
        params={"points": [[10, 90]], "point_labels": [1], "box": [5, 70, 20, 110]},
        key=rgb_key,
    )
    assert seen["point_coords"].tolist() == [[90.0, 10.0]]  # (x, y) = (col, row)
    assert seen["point_labels"].tolist() == [1]
    assert seen["box"].tolist() == [70.0, 5.0, 110.0, 20.0]  # [x0, y0, x1, y1]
    last = ok(service, "info").result["last_prompt"]
    assert last["points"] == [[10.0, 90.0]] and last["sam"]["point_coords_xy"] == [[90.0, 10.0]]
    assert last["sam"]["box_xyxy"] == [70.0, 5.0, 110.0, 20.0] and last["image_key"] == rgb_key


def test_logits_round_trip_as_mask_input(service: Sam2Service, rgb_image: np.ndarray, rgb_key: str) -> None:
    embed(service, rgb_image, rgb_key)
    first = ok(
        service,
        "segment",
        params={"points": [[40, 60]], "point_labels": [1], "return_logits": True},
        key=rgb_key,
    )
    logits = first.arrays["logits"]
    assert logits.dtype == np.float32 and logits.shape == (1, 256, 256)
    second = ok(
        service,
        "segment",
        params={"points": [[40, 60], [50, 70]], "point_labels": [1, 1]},
        arrays={"mask_input": logits},
        key=rgb_key,
    )
    assert second.arrays["mask"].shape == (96, 128)
    assert ok(service, "info").result["last_prompt"]["mask_input"] is True


def test_unknown_key_without_image_needs_the_image(service: Sam2Service) -> None:
    runs = service.counters.encoder_runs
    reply = final(service, "segment", params={"points": [[1, 1]], "point_labels": [1]}, key="img-" + "0" * 32)
    assert reply.status == "need_image" and reply.error is None
    assert final(service, "embed", key="img-" + "1" * 32).status == "need_image"
    assert service.counters.encoder_runs == runs


def test_mismatched_key_is_refused_and_not_cached(service: Sam2Service, rgb_image: np.ndarray) -> None:
    runs = service.counters.encoder_runs
    wrong = "img-" + "f" * 32
    reply = final(
        service,
        "segment",
        params={"points": [[1, 1]], "point_labels": [1]},
        arrays={"image": rgb_image},
        key=wrong,
    )
    assert reply.status == "error" and reply.error is not None
    assert reply.error[0] == "bad_request" and "does not match" in reply.error[1]
    assert wrong not in service.cache and service.counters.encoder_runs == runs


def test_grey_uint16_with_contrast_limits(service: Sam2Service) -> None:
    grey = (np.arange(64 * 80, dtype=np.uint32).reshape(64, 80) * 13 % 4000).astype(np.uint16)
    limits = [100.0, 3000.0]
    key = image_key(grey, limits, MODEL)
    embedded = ok(service, "embed", params={"contrast_limits": limits}, arrays={"image": grey})
    assert embedded.result == {"image_key": key, "cached": False}
    again = ok(service, "embed", params={"contrast_limits": limits}, key=key)
    assert again.result == {"image_key": key, "cached": True}
    reply = ok(service, "segment", params={"box": [0, 0, 64, 80], "contrast_limits": limits}, key=key)
    assert reply.arrays["mask"].shape == (64, 80)
    # The same pixels with other contrast limits are another image: not cached.
    other = final(service, "segment", params={"box": [0, 0, 64, 80]}, key=image_key(grey, None, MODEL))
    assert other.status == "need_image"


def test_auto_returns_a_label_image_with_ids_1_to_n(service: Sam2Service, rgb_image: np.ndarray) -> None:
    runs = service.counters.encoder_runs
    replies = run(
        service,
        "auto",
        params={"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
        arrays={"image": rgb_image},
    )
    assert [r.status for r in replies][-1] == "ok"
    assert replies[0].result == {"stage": "auto", "done": 0, "total": 16, "crops": 1}
    assert all(0 <= r.result["done"] <= 16 for r in replies[:-1])
    reply = replies[-1]
    labels = reply.arrays["labels"]
    assert labels.dtype == np.uint32 and labels.shape == rgb_image.shape[:2]
    n = reply.result["num_objects"]
    assert n >= 1  # thresholds at 0 keep masks even with random weights
    assert set(np.unique(labels).tolist()) - {0} == set(range(1, n + 1))
    assert reply.arrays["areas"].tolist() == [int(np.count_nonzero(labels == i)) for i in range(1, n + 1)]
    assert service.counters.encoder_runs == runs + 1


def test_info_echo_and_sleep(service: Sam2Service) -> None:
    info = ok(service, "info").result
    assert info["model"] == MODEL and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["random_weights"] is False and info["sam2_version"] and info["torch_version"]
    assert set(info["cache"]) >= {"entries", "bytes", "limit_bytes", "hits", "misses"}
    counters = {"requests", "errors", "encoder_runs", "images_received", "cancelled", "by_op"}
    assert set(info["counters"]) == counters
    assert info["pid"] > 0 and str(info["pid"]) in info["worker_id"]
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    echo = ok(service, "echo", params={"anything": [1, "two"]}, arrays={"data": array})
    assert echo.result == {"params": {"anything": [1, "two"]}} and np.array_equal(echo.arrays["data"], array)
    assert ok(service, "sleep", params={"seconds": 0.05}).result["slept_s"] >= 0.05


IMAGE = np.zeros((32, 32, 3), np.uint8)
POINT = {"points": [[1, 1]], "point_labels": [1]}
BAD_REQUESTS: list[tuple[str, dict[str, Any] | None, dict[str, np.ndarray], bool, str, str]] = [
    # op, params, arrays, send the key of IMAGE, code, message part
    ("frobnicate", None, {}, False, "unknown_op", "unknown op 'frobnicate'"),
    ("segment", POINT, {}, False, "bad_request", "needs an 'image' array"),
    ("segment", {}, {"image": IMAGE}, False, "bad_request", "prompt is empty"),
    (
        "segment",
        {"points": [[40, 1]], "point_labels": [1]},
        {"image": IMAGE},
        False,
        "bad_request",
        "outside",
    ),
    ("segment", {"box": [1, 1, 50, 5]}, {"image": IMAGE}, False, "bad_request", "outside"),
    (
        "segment",
        {"points": [[math.nan, 1]], "point_labels": [1]},
        {"image": IMAGE},
        False,
        "bad_request",
        "finite",
    ),
    (
        "segment",
        {"points": [[1, 1]], "point_labels": [3]},
        {"image": IMAGE},
        False,
        "bad_request",
        "0 (negative)",
    ),
    ("segment", POINT, {"image": np.zeros((32, 32, 2), np.uint8)}, False, "bad_request", "image must be"),
    ("segment", POINT, {"image": np.zeros((32,), np.uint8)}, False, "bad_request", "image must be"),
    ("segment", POINT, {"image": np.zeros((32, 32), np.float64)}, False, "bad_request", "dtype float64"),
    ("segment", {**POINT, "multimask": "yes"}, {"image": IMAGE}, False, "bad_request", "'multimask'"),
    ("segment", {**POINT, "pointz": 1}, {"image": IMAGE}, False, "bad_request", "unknown params"),
    (
        "segment",
        {**POINT, "contrast_limits": [5, 1]},
        {"image": IMAGE},
        False,
        "bad_request",
        "contrast_limits",
    ),
    (
        "segment",
        POINT,
        {"image": IMAGE, "mask_input": np.zeros((1, 64, 64), np.float32)},
        False,
        "bad_request",
        "mask_input must be float32",
    ),
    ("segment", POINT, {"image": IMAGE, "extra": IMAGE}, False, "bad_request", "unexpected arrays"),
    ("auto", {"points_per_side": 0}, {"image": IMAGE}, False, "bad_request", "'points_per_side'"),
    ("auto", {"pred_iou_thresh": 2}, {"image": IMAGE}, False, "bad_request", "'pred_iou_thresh'"),
    ("auto", {}, {}, False, "bad_request", "needs an 'image'"),
    ("embed", {}, {}, False, "bad_request", "needs an 'image'"),
    ("sleep", {"seconds": 100}, {}, False, "bad_request", "'seconds'"),
    ("sleep", {"seconds": "1"}, {}, False, "bad_request", "'seconds'"),
    ("info", {"verbose": True}, {}, False, "bad_request", "unknown params"),
]


@pytest.mark.parametrize(("op", "params", "arrays", "send_key", "code", "message"), BAD_REQUESTS)
def test_bad_requests_get_clear_errors_without_running_the_encoder(
    service: Sam2Service,
    op: str,
    params: dict[str, Any] | None,
    arrays: dict[str, np.ndarray],
    send_key: bool,
    code: str,
    message: str,
) -> None:
    runs, errors = service.counters.encoder_runs, service.counters.errors
    reply = final(
        service, op, params=params, arrays=arrays, key=image_key(IMAGE, None, MODEL) if send_key else None
    )
    assert reply.status == "error" and reply.error is not None
    assert reply.error[0] == code
    assert message in reply.error[1]
    assert service.counters.encoder_runs == runs
    assert service.counters.errors == errors + 1


def test_auto_with_only_a_key_needs_the_image(
    service: Sam2Service, rgb_image: np.ndarray, rgb_key: str
) -> None:
    embed(service, rgb_image, rgb_key)  # cached embeddings do not help: auto needs the pixels
    assert final(service, "auto", params={"points_per_side": 4}, key=rgb_key).status == "need_image"


def test_unexpected_failure_is_internal_and_service_keeps_serving(
    service: Sam2Service, rgb_image: np.ndarray, rgb_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    embed(service, rgb_image, rgb_key)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(service.predictor.model.sam_mask_decoder, "forward", broken)
    reply = final(service, "segment", params=POINT, key=rgb_key)
    assert reply.status == "error" and reply.error == ("internal", "RuntimeError: decoder exploded")
    monkeypatch.undo()
    assert ok(service, "segment", params=POINT, key=rgb_key).arrays["mask"].shape == (96, 128)


def test_a_set_cancel_event_stops_sleep_and_auto_early(service: Sam2Service) -> None:
    """The worker loop sets a request's cancel event when its broker connection closes."""
    cancel = threading.Event()
    cancel.set()
    before = service.counters.cancelled
    started = time.monotonic()
    header = {"v": 1, "op": "sleep", "request_id": "cancel-sleep", "params": {"seconds": 30}}
    [reply] = list(service.handle(Message(header, {}), cancel))
    assert reply.error is not None and reply.error[0] == "cancelled" and time.monotonic() - started < 1
    image = np.random.default_rng(9).integers(0, 256, (32, 32), dtype=np.uint8)
    header = {"v": 1, "op": "auto", "request_id": "cancel-auto", "params": {"points_per_side": 4}}
    replies = list(service.handle(Message(header, {"image": image}), cancel))
    # Stopped after the first batch of prompts, before any mask was painted.
    assert replies[-1].error is not None and replies[-1].error[0] == "cancelled", replies[-1]
    assert service.counters.cancelled == before + 2
