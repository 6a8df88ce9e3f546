# One file on purpose: the propagate tests share one module-scoped broker and real SAM2 worker.
"""``propagate``: SAM2's video predictor through a stack, slice by slice, with cancel.

Pure parts (slice order, stack checks, the inference-state layout, weight
sharing) run in-process; the rest goes through a real broker and one real
worker (sam2.1 tiny, random weights) shared by the module. The image encoder
runs once per slice (about 4-6 s on this CPU), so stacks have 3-6 slices.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.codec import Message
from protocol.wire.errors import RemoteError, Superseded
from protocol.wire.wire_image import stack_contrast_limits
from tests.support.backend import Backend, running_backend
from tests.support.processes import MODEL, log_text, wait_until
from workers.propagate import (
    StackFrames,
    build_video_predictor,
    check_stack,
    frame_order,
    init_inference_state,
)

SIZE = 64


# ----------------------------------------------------------------------------
# pure parts


@pytest.mark.parametrize(
    ("frames", "k", "direction", "max_frames", "expected"),
    [
        (5, 2, "both", None, [2, 3, 4, 1, 0]),
        (5, 2, "forward", None, [2, 3, 4]),
        (5, 2, "backward", None, [2, 1, 0]),
        (5, 0, "backward", None, [0]),
        (5, 4, "forward", None, [4]),
        (5, 2, "both", 1, [2, 3, 1]),
        (5, 2, "both", 0, [2]),
        (1, 0, "both", None, [0]),
    ],
)
def test_frame_order(
    frames: int, k: int, direction: str, max_frames: int | None, expected: list[int]
) -> None:
    assert frame_order(frames, k, direction, max_frames) == expected


def test_frame_order_and_stack_checks_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        frame_order(3, 3, "both", None)
    with pytest.raises(ValueError, match="direction"):
        frame_order(3, 1, "sideways", None)
    assert check_stack((4, 10, 12), 512).frames == 4
    assert (check_stack((4, 10, 12, 3), 512).height, check_stack((4, 10, 12, 3), 512).width) == (10, 12)
    for shape, words in [((10, 12), "stack must be"), ((0, 4, 4), "no slices"), ((600, 4, 4), "at most 512")]:
        with pytest.raises(ValueError, match=words):
            check_stack(shape, 512)
    with pytest.raises(ValueError, match="each slice"):
        check_stack((3, 4, 4, 2), 512)


def test_stack_contrast_limits_are_shared_by_all_slices() -> None:
    stack = np.stack([np.full((4, 4), 100 * (z + 1), np.uint16) for z in range(5)])
    low, high = stack_contrast_limits(stack) or (0, 0)
    assert 100 <= low < high <= 500
    assert stack_contrast_limits(stack.astype(np.uint8)) is None
    assert stack_contrast_limits(np.full((2, 3, 3), 7.0, np.float32)) is None  # flat
    assert stack_contrast_limits(np.full((2, 3, 3), np.nan, np.float32)) is None


def test_stack_frames_are_prepared_like_sam2_jpeg_frames() -> None:
    """Slice -> uint8 RGB -> PIL resize -> /255 -> ImageNet normalisation, as sam2's loader."""
    from PIL import Image

    stack = np.zeros((2, 6, 8), np.uint8)
    stack[1, 2:4, 3:7] = 255
    frames = StackFrames(stack, 16, None)
    assert len(frames) == 2
    frame = frames[1]
    assert frame.shape == (3, 16, 16) and frame.dtype == torch.float32
    rgb = np.asarray(Image.fromarray(np.repeat(stack[1][:, :, None], 3, axis=2)).resize((16, 16)))
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    expected = (torch.from_numpy(rgb / 255.0).permute(2, 0, 1).float() - mean) / std
    assert torch.allclose(frame, expected)
    assert frames.loads == 1


def test_inference_state_has_the_layout_of_sam2_init_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our state from request pixels has every key sam2's ``init_state`` (from JPEG files) makes."""
    import sam2.sam2_video_predictor as video_module

    monkeypatch.setattr(video_module, "load_video_frames", lambda **_: (torch.zeros(2, 3, 8, 8), 5, 7))
    stub = types.SimpleNamespace(
        device=torch.device("cpu"), image_size=8, _get_image_feature=lambda *args, **kwargs: None
    )
    reference = video_module.SAM2VideoPredictor.init_state(stub, "frames/")
    ours = init_inference_state(stub, StackFrames(np.zeros((2, 5, 7), np.uint8), 8, None), 5, 7)
    assert set(ours) == set(reference)
    for key, value in reference.items():
        if key != "images":
            assert type(ours[key]) is type(value), key
    assert (ours["video_height"], ours["video_width"], ours["num_frames"]) == (5, 7, 2)


def test_video_predictor_shares_the_image_models_weights() -> None:
    from workers.models import build_random, get_spec

    model = build_random(MODEL)
    predictor = build_video_predictor(model, get_spec(MODEL).config, torch.device("cpu"))
    ours = dict(predictor.named_parameters())
    theirs = dict(model.named_parameters())
    assert set(ours) == set(theirs)
    assert all(ours[name].data_ptr() == theirs[name].data_ptr() for name in theirs)
    assert not predictor.training


# ----------------------------------------------------------------------------
# through a real broker and worker


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path) -> Iterator[Backend]:
    """One broker and one worker for the whole module (a worker takes ~10-20 s to start here);
    two torch threads, as the encoder is the work and the test process only waits."""
    with running_backend(tmp_path_factory.mktemp("propagate"), random_checkpoint) as backend:
        yield backend


def _client(backend: Backend) -> SamClient:
    return SamClient(backend.frontend, MODEL, config=ClientConfig(timeout_s=120.0, retries=0))


def _stack(frames: int, seed: int = 0) -> np.ndarray:
    """(frames, 64, 64) uint16: a bright square drifting right by 2 px per slice, on noise."""
    rng = np.random.default_rng(seed)
    stack = rng.integers(0, 300, (frames, SIZE, SIZE)).astype(np.uint16)
    for z in range(frames):
        stack[z, 20:40, 10 + 2 * z : 30 + 2 * z] += 3000
    return stack


def _propagate(
    client: SamClient, stack: np.ndarray, params: dict, mask: np.ndarray | None = None
) -> tuple[list[Message], Message]:
    partials: list[Message] = []
    arrays = {"stack": stack} if mask is None else {"stack": stack, "mask": mask}
    final = client.call("propagate", params, arrays, on_partial=partials.append)
    return partials, final


def _check_stream(partials: list[Message], final: Message, order: list[int]) -> None:
    assert [p.header["result"]["frame_index"] for p in partials] == order
    assert [p.header["result"]["done"] for p in partials] == list(range(1, len(order) + 1))
    assert {p.header["result"]["total"] for p in partials} == {len(order)}
    for partial in partials:
        mask = partial.arrays["mask"]
        assert mask.dtype == np.bool_ and mask.shape == (SIZE, SIZE)
    assert final.status == "ok" and final.header["result"] == {"frames": len(order), "cancelled": False}
    assert final.arrays == {}


@pytest.mark.model
def test_both_directions_stream_every_slice_in_order_from_a_mask(backend: Backend) -> None:
    stack = _stack(3)  # from slice 1: one slice forward, then one backward
    mask = np.zeros((SIZE, SIZE), bool)
    mask[20:40, 12:32] = True  # rows 20..39, columns 12..31: the square on slice 1
    with _client(backend) as client:
        partials, final = _propagate(client, stack, {"frame_index": 1}, mask)
    _check_stream(partials, final, [1, 2, 0])
    # Slice k's answer is the given mask (sam2 uses a mask prompt as the output of its
    # conditioning slice): rows stay rows, columns stay columns.
    first = partials[0].arrays["mask"]
    assert (first & mask).sum() / (first | mask).sum() > 0.9
    assert (first & mask.T).sum() / (first | mask.T).sum() < 0.5


@pytest.mark.model
def test_forward_and_backward_with_point_and_box_prompts(backend: Backend) -> None:
    stack = _stack(4, seed=1)
    with _client(backend) as client:
        forward = _propagate(
            client,
            stack,
            {
                "frame_index": 1,
                "direction": "forward",
                "max_frames": 1,
                "points": [[30, 25]],
                "point_labels": [1],
            },
        )
        backward = _propagate(
            client,
            stack,
            {
                "frame_index": 1,
                "direction": "backward",
                "box": [18, 10, 42, 36],
                "contrast_limits": [0, 3500],
            },
        )
        info = client.call("info").header["result"]
    _check_stream(*forward, [1, 2])
    _check_stream(*backward, [1, 0])
    assert info["counters"]["by_op"]["propagate"] >= 2


@pytest.mark.model
def test_bad_requests_are_refused_before_any_work(backend: Backend) -> None:
    stack = _stack(3)
    mask = np.ones((SIZE, SIZE), bool)
    point = {"points": [[5, 5]], "point_labels": [1]}
    cases = [
        ({"frame_index": 3, **point}, {"stack": stack}, "outside|0..2"),
        ({"frame_index": -1, **point}, {"stack": stack}, "frame_index"),
        ({**point}, {"stack": stack}, "frame_index"),
        ({"frame_index": 0}, {"stack": stack}, "needs a prompt"),
        ({"frame_index": 0}, {"stack": stack, "mask": np.ones((SIZE, SIZE + 1), bool)}, "mask must be bool"),
        ({"frame_index": 0}, {"stack": stack, "mask": mask.astype(np.uint8)}, "mask must be bool"),
        ({"frame_index": 0}, {"stack": stack, "mask": np.zeros((SIZE, SIZE), bool)}, "empty"),
        ({"frame_index": 0, **point}, {"stack": stack, "mask": mask}, "not both"),
        ({"frame_index": 0, "direction": "up", **point}, {"stack": stack}, "direction"),
        ({"frame_index": 0, "points": [[70, 5]], "point_labels": [1]}, {"stack": stack}, "outside the image"),
        ({"frame_index": 0, **point}, {"stack": stack[0]}, "stack must be"),
        ({"frame_index": 0, **point}, {}, "needs a 'stack'"),
        ({"frame_index": 0, "max_frames": -2, **point}, {"stack": stack}, "max_frames"),
    ]
    started = time.monotonic()
    with _client(backend) as client:
        for params, arrays, words in cases:
            with pytest.raises(RemoteError, match=words) as caught:
                client.call("propagate", params, arrays)
            assert caught.value.code == "bad_request", caught.value
    assert time.monotonic() - started < 10


def _cancelled_line(log: str) -> str | None:
    """The worker's summary line of a cancelled propagation, if any."""
    return next((line for line in log.splitlines() if "propagate: " in line and ", cancelled" in line), None)


@pytest.mark.model
def test_cancel_stops_the_stream_and_the_worker_serves_the_next_request(backend: Backend) -> None:
    stack = _stack(6, seed=2)
    cancel = threading.Event()
    partials: list[Message] = []
    cancelled_at: list[float] = []

    def on_partial(message: Message) -> None:
        partials.append(message)
        cancelled_at.append(time.monotonic())
        cancel.set()

    worker_log = backend.workers[0]
    with _client(backend) as client:
        with pytest.raises(Superseded):
            client.call(
                "propagate",
                {"frame_index": 0, "direction": "forward", "points": [[30, 20]], "point_labels": [1]},
                {"stack": stack},
                on_partial=on_partial,
                cancel=cancel,
            )
        assert time.monotonic() - cancelled_at[0] < 1.0  # Superseded at once
        assert len(partials) == 1 and partials[0].header["result"]["frame_index"] == 0
        # The broker told the worker to stop; it finishes the slice it is on, stops, reconnects ...
        assert wait_until(lambda: _cancelled_line(log_text(worker_log)) is not None, 60), log_text(worker_log)
        # ... and serves the next request.
        info = client.call("info").header["result"]
    assert info["counters"]["cancelled"] == 1
    text = log_text(worker_log)
    assert "broker sent DISCONNECT" in text and "cancelling 1 request(s)" in text and "(reconnect 1)" in text
    line = _cancelled_line(text) or ""
    done = int(line.split("propagate: ")[1].split(" of ")[0])
    assert 1 <= done < 6, line
    broker_log = log_text(backend.broker)
    assert "code=cancelled" in broker_log and "cancelled" in broker_log
    assert worker_log.poll() is None


# ----------------------------------------------------------------------------
# several objects in one request


def test_to_labels_gives_each_pixel_to_the_highest_logit_and_leaves_stopped_objects_out() -> None:
    from workers.propagate import to_labels

    logits = torch.full((2, 1, 4, 6), -5.0)
    logits[0, 0, :, :4] = 2.0  # object 3: columns 0..3
    logits[1, 0, :, 2:] = 1.0  # object 9: columns 2..5, weaker where both claim
    labels = to_labels(logits, (3, 9), {3, 9})
    assert labels.dtype == np.uint32
    assert labels[0].tolist() == [3, 3, 3, 3, 9, 9]
    assert to_labels(logits, (3, 9), {9})[0].tolist() == [0, 0, 9, 9, 9, 9]  # 3 stopped: not reported


def test_trim_memory_keeps_prompted_slices_and_those_near_the_current_slice_and_k() -> None:
    from workers.propagate import trim_memory

    state: dict = {
        "output_dict_per_obj": {
            0: {
                "cond_frame_outputs": {0: "k", 40: "fix"},
                "non_cond_frame_outputs": dict.fromkeys(range(1, 60)),
            },
        }
    }
    dropped = trim_memory(state, current=59, frame_index=0, keep=3)
    kept = sorted(state["output_dict_per_obj"][0]["non_cond_frame_outputs"])
    assert kept == [1, 2, 3, 56, 57, 58, 59]
    assert dropped == 59 - len(kept)
    assert state["output_dict_per_obj"][0]["cond_frame_outputs"] == {0: "k", 40: "fix"}


def test_object_prompt_checks_refuse_what_sam2_cannot_track() -> None:
    from workers.propagate import MAX_OBJECTS, ObjectPrompt, check_object_prompts

    mask = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match="no object"):
        check_object_prompts([], 0, 3)
    with pytest.raises(ValueError, match=r"object\(s\) \[5\] have no prompt on slice frame_index 1"):
        check_object_prompts([ObjectPrompt(1, 2, mask), ObjectPrompt(2, 5, mask)], 1, 3)
    with pytest.raises(ValueError, match="two prompts for object 2 on slice 1"):
        check_object_prompts([ObjectPrompt(1, 2, mask), ObjectPrompt(1, 2, mask)], 1, 3)
    with pytest.raises(ValueError, match="outside 0..2"):
        check_object_prompts([ObjectPrompt(1, 2, mask), ObjectPrompt(3, 2, mask)], 1, 3)
    with pytest.raises(ValueError, match="at most"):
        check_object_prompts([ObjectPrompt(0, i + 1, mask) for i in range(MAX_OBJECTS + 1)], 0, 3)
    check_object_prompts([ObjectPrompt(1, 2, mask), ObjectPrompt(2, 2, mask), ObjectPrompt(1, 7, mask)], 1, 3)


def _two_objects(frames: int) -> np.ndarray:
    """(frames, 64, 64) uint8: a square drifting right and a still square, on black."""
    stack = np.zeros((frames, SIZE, SIZE), np.uint8)
    for z in range(frames):
        stack[z, 8:24, 4 + 3 * z : 20 + 3 * z] = 255
        stack[z, 40:56, 40:56] = 180
    return stack


@pytest.mark.model
def test_many_objects_keep_their_ids_on_every_slice_with_a_correction_on_another_slice(
    backend: Backend,
) -> None:
    """A label image on slice 1 (ids 5 and 900) plus a point for 900 on slice 2: ids stay, slices in order."""
    stack = _two_objects(3)
    masks = np.zeros((SIZE, SIZE), np.uint32)
    masks[8:24, 7:23] = 5
    masks[40:56, 40:56] = 900
    params = {
        "frame_index": 1,
        "prompts": [{"frame_index": 2, "object_id": 900, "points": [[48.0, 48.0]], "point_labels": [1]}],
    }
    with _client(backend) as client:
        partials: list[Message] = []
        final = client.call("propagate", params, {"stack": stack, "masks": masks}, on_partial=partials.append)
    results = [p.header["result"] for p in partials]
    assert [r["frame_index"] for r in results] == [1, 2, 0]
    assert [(r["done"], r["total"]) for r in results] == [(1, 3), (2, 3), (3, 3)]
    assert final.status == "ok" and final.header["result"] == {"frames": 3, "cancelled": False}
    for partial, result in zip(partials, results, strict=True):
        labels = partial.arrays["labels"]
        assert labels.dtype == np.uint32 and labels.shape == (SIZE, SIZE)
        ids = sorted(int(i) for i in np.unique(labels) if i)
        assert ids == result["object_ids"]  # the ids listed are exactly those on the slice
        assert set(ids) <= {5, 900}  # no other id ever appears
    first = partials[0].arrays["labels"]
    # slice k is the given label image (a mask prompt is its slice's output), each object its own id
    for object_id in (5, 900):
        given, got = masks == object_id, first == object_id
        assert (given & got).sum() / (given | got).sum() > 0.9, object_id
    assert results[0]["object_ids"] == [5, 900]
    assert 900 in results[1]["object_ids"]  # slice 2 carries a prompt for 900: it is there


@pytest.mark.model
def test_bad_many_object_requests_are_refused_before_any_work(backend: Backend) -> None:
    stack = _two_objects(3)
    labels = np.zeros((SIZE, SIZE), np.uint32)
    labels[2:6, 2:6] = 4
    point = {"points": [[5, 5]], "point_labels": [1]}
    cases: list[tuple[dict[str, Any], dict[str, np.ndarray], str]] = [
        ({"frame_index": 0}, {"stack": stack, "masks": labels.astype(np.uint16)}, "masks must be a uint32"),
        ({"frame_index": 0}, {"stack": stack, "masks": np.zeros((SIZE, SIZE), np.uint32)}, "no object"),
        ({"frame_index": 0, **point}, {"stack": stack, "masks": labels}, "not both"),
        (
            {"frame_index": 0, "prompts": [{"frame_index": 1, "object_id": 4, **point}]},
            {"stack": stack},
            "no prompt on slice",
        ),
        (
            {"frame_index": 0, "prompts": [{"frame_index": 0, "object_id": 0, **point}]},
            {"stack": stack},
            "object_id",
        ),
        (
            {"frame_index": 0, "prompts": [{"frame_index": 9, "object_id": 4, **point}]},
            {"stack": stack},
            "0..2",
        ),
        (
            {"frame_index": 0, "prompts": [{"frame_index": 0, "object_id": 4, "mask": 1}]},
            {"stack": stack},
            "unknown keys",
        ),
        ({"frame_index": 0, "prompts": [{"frame_index": 0, "object_id": 4}]}, {"stack": stack}, "empty"),
        ({"frame_index": 0, "prompts": "x"}, {"stack": stack}, "must be a list"),
    ]
    with _client(backend) as client:
        for params, arrays, words in cases:
            with pytest.raises(RemoteError, match=words) as caught:
                client.call("propagate", params, arrays)
            assert caught.value.code == "bad_request", caught.value


@pytest.mark.model
def test_tracked_state_stays_bounded_while_the_stack_grows() -> None:
    """The real video predictor over 3 slices with no memory window: old tracked slices are dropped.

    With ``memory_keep_frames`` = 0 the state holds only the slice just
    computed (1 tracked output), where an untrimmed state would hold one per
    tracked slice (2 here, 499 for a 500-slice stack); the default window is
    16. Masks still come for every slice. (Peak RSS over a 24-slice stack
    takes many minutes on this CPU; this checks the bound itself.)
    """
    import contextlib

    from workers.models import build_random, get_spec
    from workers.propagate import ObjectPrompt, VideoPropagator

    propagator = VideoPropagator(
        build_random(MODEL), get_spec(MODEL).config, torch.device("cpu"), contextlib.nullcontext
    )
    propagator.memory_keep_frames = 0
    stack = _two_objects(3)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[8:24, 4:20] = True
    slices = list(
        propagator.run_objects(
            StackFrames(stack, 1024, None), check_stack(stack.shape, 512), 0, "forward", None,
            [ObjectPrompt(0, 4, mask)],
        )
    )  # fmt: skip
    assert [index for index, _, _ in slices] == [0, 1, 2]
    assert all(labels.dtype == np.uint32 and set(np.unique(labels)) <= {0, 4} for _, _, labels in slices)
    assert propagator.peak_tracked_outputs == 1


@pytest.mark.model
def test_cancel_of_many_objects_keeps_the_slices_sent_and_the_worker_goes_on(backend: Backend) -> None:
    stack = _two_objects(5)
    masks = np.zeros((SIZE, SIZE), np.uint32)
    masks[8:24, 4:20] = 2
    masks[40:56, 40:56] = 3
    cancel = threading.Event()
    partials: list[Message] = []

    def on_partial(message: Message) -> None:
        partials.append(message)
        cancel.set()

    with _client(backend) as client:
        before = client.call("info").header["result"]["counters"]["cancelled"]
        with pytest.raises(Superseded):
            client.call(
                "propagate",
                {"frame_index": 0, "direction": "forward"},
                {"stack": stack, "masks": masks},
                on_partial=on_partial,
                cancel=cancel,
            )
        assert len(partials) == 1  # what came before the cancel is the caller's to keep
        first = partials[0]
        assert first.header["result"]["frame_index"] == 0 and first.header["result"]["object_ids"] == [2, 3]
        assert set(np.unique(first.arrays["labels"])) == {0, 2, 3}
        assert wait_until(
            lambda: client.call("info").header["result"]["counters"]["cancelled"] == before + 1, 120
        )
    assert backend.workers[0].poll() is None
