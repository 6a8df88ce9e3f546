# One file on purpose: SAM2's video predictor and the stack and prompt checks that only it needs.
"""Propagation of objects' masks through a stack (z or time) with SAM2's video predictor.

One object (``VideoPropagator.run``: bool masks) or several tracked together
in one inference state (``VideoPropagator.run_objects``: uint32 label images,
each object its own id, prompts on several slices, vanished objects stop).

The frames come from the (Z, H, W) or (Z, H, W, 3|4) stack sent with the
request, never from JPEG files: each slice is prepared like an ``image``
(``workers.prep``: contrast limits -> uint8 RGB), then resized and normalised
exactly as sam2's ``load_video_frames`` does (PIL ``resize`` to the model's
square input size, /255, ImageNet mean and std). Slices are prepared lazily,
one at a time, when the image encoder first asks for them, so a stack costs
its raw bytes plus one prepared slice, not Z prepared slices.

The video predictor is built once per worker on first use, from the same
config as the image model, and takes the image model's weights by reference
(``load_state_dict(..., assign=True)``): no second copy of the weights.

Order of the masks: slice ``k`` (the prompted one) first, then ``k+1, k+2,
...`` (``forward``), then ``k-1, k-2, ...`` (``backward``); ``both`` runs the
forward pass and then the backward pass over the same memory, as Meta's demo
does. Everything here is tied to sam2 1.1.0's ``SAM2VideoPredictor``
(``init_state``'s state dict, ``add_new_mask``, ``add_new_points_or_box``,
``propagate_in_video``); ``tests/workers/test_propagate.py`` checks the state layout
against the installed sam2. Memory: frames are prepared on the CPU, the
tracking state is stored on the CPU, and :func:`trim_memory` drops tracked
slices SAM2 no longer reads, so a request's state is bounded whatever Z.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from protocol.wire.propagate import DIRECTIONS, MAX_OBJECTS
from workers.prep import check_image_shape, prepare_image
from workers.prompts import Prompt

log = logging.getLogger(__name__)

DEFAULT_MAX_STACK_FRAMES = 512
# sam2's load_video_frames defaults (ImageNet statistics), RGB order.
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
OBJECT_ID = 1
MEMORY_KEEP_FRAMES = 16
"""Tracked (non-prompted) slices kept in the inference state on each side of the slice being
computed and of slice k: SAM2 reads at most 7 memory slices and 16 object pointers back, so older
ones are dropped and the state stays bounded whatever the stack's length."""


@dataclass(frozen=True)
class ObjectPrompt:
    """One object's prompt on one slice: a bool (H, W) ``mask`` or points/box in (row, col), not both."""

    frame_index: int
    object_id: int
    mask: np.ndarray | None = None
    prompt: Prompt | None = None


@dataclass(frozen=True)
class StackShape:
    """A validated stack: ``frames`` slices of ``height`` x ``width`` pixels."""

    frames: int
    height: int
    width: int


def check_stack(shape: Sequence[int], max_frames: int) -> StackShape:
    """Validate a stack's shape: (Z, H, W) grey or (Z, H, W, 3|4) colour, 1 <= Z <= ``max_frames``.

    Raises:
        ValueError: any other shape, an empty slice, or too many slices.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"stack must be (Z, H, W) grey or (Z, H, W, 3|4) colour, got shape {list(shape)}")
    if shape[0] < 1:
        raise ValueError("stack has no slices")
    if shape[0] > max_frames:
        raise ValueError(f"stack has {shape[0]} slices; this worker accepts at most {max_frames}")
    try:
        height, width = check_image_shape(shape[1:])
    except ValueError as e:
        raise ValueError(f"each slice of the stack: {e}") from e
    return StackShape(shape[0], height, width)


def frame_order(frames: int, frame_index: int, direction: str, max_frames: int | None) -> list[int]:
    """Slice indices in the order their masks are produced.

    Args:
        frames: number of slices Z.
        frame_index: the prompted slice k, 0 <= k < Z.
        direction: ``forward`` (k, k+1, ...), ``backward`` (k, k-1, ...) or
            ``both`` (k, k+1, ..., Z-1, k-1, ..., 0).
        max_frames: at most this many slices past k in each direction
            (``None``: to the end of the stack).

    Raises:
        ValueError: unknown direction or k out of range.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not 0 <= frame_index < frames:
        raise ValueError(f"frame_index {frame_index} is outside the stack's slices 0..{frames - 1}")
    reach = frames if max_frames is None else max_frames
    order = [frame_index]
    if direction in ("forward", "both"):
        order += list(range(frame_index + 1, min(frame_index + reach, frames - 1) + 1))
    if direction in ("backward", "both"):
        order += list(range(frame_index - 1, max(frame_index - reach, 0) - 1, -1))
    return order


class StackFrames:
    """The stack's slices as sam2's video predictor wants them, prepared on demand.

    ``frames[i]`` is a float32 (3, S, S) tensor on the CPU (S = the model's
    ``image_size``): slice i -> ``prepare_image`` (uint8 RGB) -> PIL resize to
    S x S -> /255 -> minus ImageNet mean, divided by std, exactly as sam2's
    ``load_video_frames`` prepares JPEG frames.

    Args:
        stack: (Z, H, W) or (Z, H, W, 3|4) pixels of an allowed wire dtype.
        image_size: S, the model's square input side.
        contrast_limits: (low, high) applied to every non-uint8 slice, or None.
    """

    def __init__(
        self, stack: np.ndarray, image_size: int, contrast_limits: tuple[float, float] | None
    ) -> None:
        self.stack = stack
        self.image_size = image_size
        self.contrast_limits = contrast_limits
        self.loads = 0
        self._mean = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return int(self.stack.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image

        rgb = prepare_image(self.stack[index], self.contrast_limits)
        resized = np.asarray(Image.fromarray(rgb).resize((self.image_size, self.image_size)))
        self.loads += 1
        tensor = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
        return (tensor - self._mean) / self._std


def init_inference_state(predictor: Any, frames: StackFrames, height: int, width: int) -> dict[str, Any]:
    """An inference state over ``frames``, as sam2 1.1.0's ``SAM2VideoPredictor.init_state`` builds one.

    Differences from ``init_state``: the frames are ``frames`` (lazy, from
    the request, prepared on the CPU: ``offload_video_to_cpu``) instead of
    files, and frame 0 is not pre-encoded (the prompted slice is encoded
    first, whatever its index). The tracking state (memory features, low-res
    masks) is kept in CPU memory (``offload_state_to_cpu``), so GPU memory
    does not grow with the stack; :func:`trim_memory` bounds the CPU side.
    """
    device = predictor.device
    return {
        "images": frames,
        "num_frames": len(frames),
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": device.type != "cpu",
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": torch.device("cpu"),
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


def build_video_predictor(model: torch.nn.Module, config: str, device: torch.device) -> torch.nn.Module:
    """SAM2's video predictor for ``config`` that shares ``model``'s weights.

    The predictor is built on the CPU with random weights, then takes every
    tensor of ``model``'s state dict by reference (``assign=True``), so both
    use one copy of the weights on ``device``. Any missing or unexpected key
    is an error.

    Raises:
        RuntimeError: the state dicts do not match.
    """
    import sam2.sam2_video_predictor as video_module
    from sam2.build_sam import build_sam2_video_predictor

    # sam2 wraps propagation in a tqdm progress bar; keep it out of the worker's log.
    if not isinstance(video_module.tqdm, functools.partial):
        video_module.tqdm = functools.partial(video_module.tqdm, disable=True)
    predictor: torch.nn.Module = build_sam2_video_predictor(config, None, device="cpu", mode="eval")
    result = predictor.load_state_dict(model.state_dict(), strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"the video predictor does not fit the image model's weights: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    predictor = predictor.to(device)
    predictor.eval()
    if importlib.util.find_spec("sam2._C") is None and getattr(predictor, "fill_hole_area", 0) > 0:
        # sam2 skips hole filling (with a warning per slice) without its compiled extension.
        log.info("sam2 has no compiled extension (sam2._C): masks are propagated without hole filling")
        predictor.fill_hole_area = 0  # type: ignore[assignment]
    return predictor


class VideoPropagator:
    """Runs propagation requests with a lazily built video predictor.

    Not thread-safe: one request at a time (the worker's compute thread).

    Args:
        model: the worker's SAM2 image model (its weights are shared).
        config: the model's Hydra config name (``workers.models.ModelSpec.config``).
        device: the model's device.
        autocast: returns the autocast context for model calls.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: str,
        device: torch.device,
        autocast: Callable[[], contextlib.AbstractContextManager[object]],
    ) -> None:
        self.model = model
        self.config = config
        self.device = device
        self.autocast = autocast
        self.memory_keep_frames = MEMORY_KEEP_FRAMES
        self.peak_tracked_outputs = 0
        """Most tracked slice outputs (all objects) the last run held at once (bounded by trimming)."""
        self._predictor: Any = None

    @property
    def predictor(self) -> Any:
        """The video predictor, built on first use."""
        if self._predictor is None:
            self._predictor = build_video_predictor(self.model, self.config, self.device)
        return self._predictor

    def run(
        self,
        frames: StackFrames,
        shape: StackShape,
        frame_index: int,
        direction: str,
        max_frames: int | None,
        *,
        mask: np.ndarray | None = None,
        prompt: Prompt | None = None,
    ) -> Generator[tuple[int, np.ndarray], None, None]:
        """Yield ``(slice index, bool (H, W) mask)`` of one object in :func:`frame_order`'s order.

        Exactly one of ``mask`` (bool (H, W) on slice k) and ``prompt``
        (points and/or box on slice k in (row, col)) must be given; see
        :meth:`run_objects` for the rest.

        Raises:
            ValueError: both or neither of ``mask`` and ``prompt``.
        """
        if (mask is None) == (prompt is None):
            raise ValueError("give exactly one of mask and prompt")
        one = ObjectPrompt(frame_index, OBJECT_ID, mask, prompt)
        stream = self.run_objects(
            frames, shape, frame_index, direction, max_frames, [one], stop_vanished=False
        )
        with contextlib.closing(stream):
            for index, _ids, labels in stream:
                yield index, labels == OBJECT_ID

    def run_objects(
        self,
        frames: StackFrames,
        shape: StackShape,
        frame_index: int,
        direction: str,
        max_frames: int | None,
        prompts: Sequence[ObjectPrompt],
        *,
        stop_vanished: bool = True,
    ) -> Generator[tuple[int, tuple[int, ...], np.ndarray], None, None]:
        """Track several objects; yield ``(slice, ids on it, uint32 (H, W) labels)``.

        Slices come in :func:`frame_order`'s order.

        Args:
            frames: the stack's slices.
            shape: the stack's validated shape.
            frame_index: k, the slice propagation starts from; every object
                has a prompt there (:func:`check_object_prompts`).
            direction: ``forward``, ``backward`` or ``both``.
            max_frames: at most this many slices past k per direction, or None.
            prompts: the objects' prompts, on k and possibly on other slices
                (corrections: SAM2 conditions on every prompted slice).
            stop_vanished: an object with no pixels on a slice is not
                reported again in that pass until a slice where it has a prompt.

        A pixel claimed by several objects goes to the one with the highest
        logit. Each slice is computed only when the caller asks for it, so a
        caller that stops iterating (and closes the generator) stops the work
        between slices.
        """
        predictor = self.predictor
        prompted: dict[int, set[int]] = {}
        for item in prompts:
            prompted.setdefault(item.object_id, set()).add(item.frame_index)
        # Slice k's prompts last: the last call answers every object's mask on slice k.
        ordered = sorted(prompts, key=lambda item: item.frame_index == frame_index)
        with torch.inference_mode(), self.autocast():
            state = init_inference_state(predictor, frames, shape.height, shape.width)
            self.peak_tracked_outputs = 0
            ids: list[int] = []
            logits: torch.Tensor | None = None
            for item in ordered:
                if item.mask is not None:
                    _, ids, logits = predictor.add_new_mask(
                        state, item.frame_index, item.object_id, torch.from_numpy(item.mask)
                    )
                elif item.prompt is not None:
                    sam = item.prompt.to_sam()
                    _, ids, logits = predictor.add_new_points_or_box(
                        state,
                        item.frame_index,
                        item.object_id,
                        points=sam.point_coords,
                        labels=sam.point_labels,
                        box=sam.box,
                    )
            if logits is None:
                raise ValueError("no prompt")
            object_ids = tuple(int(i) for i in ids)
            first = to_labels(logits, object_ids, set(object_ids))
            yield frame_index, _present(first, object_ids), first
            passes = {"forward": [False], "backward": [True], "both": [False, True]}[direction]
            for reverse in passes:
                if reverse and frame_index == 0:
                    continue  # sam2 yields nothing backwards from slice 0; nothing is left to do
                active = set(_present(first, object_ids)) if stop_vanished else set(object_ids)
                stream = predictor.propagate_in_video(
                    state,
                    start_frame_idx=frame_index,
                    max_frame_num_to_track=max_frames,
                    reverse=reverse,
                )
                with contextlib.closing(stream):
                    for index, _, masks in stream:
                        index = int(index)
                        trim_memory(state, index, frame_index, self.memory_keep_frames)
                        held = sum(
                            len(d["non_cond_frame_outputs"]) for d in state["output_dict_per_obj"].values()
                        )
                        self.peak_tracked_outputs = max(self.peak_tracked_outputs, held)
                        if index == frame_index:  # slice k was sent first
                            continue
                        if stop_vanished:
                            active |= {i for i in object_ids if index in prompted.get(i, ())}
                        labels = to_labels(masks, object_ids, active)
                        present = _present(labels, object_ids)
                        if stop_vanished:
                            active &= set(present)
                        yield index, present, labels


def check_object_prompts(prompts: Sequence[ObjectPrompt], frame_index: int, frames: int) -> None:
    """Refuse prompt sets SAM2 cannot track from slice k.

    Raises:
        ValueError: no prompt, more than :data:`MAX_OBJECTS` objects, an id
            outside 1..2**32-1, a slice outside the stack, two prompts for one
            object on one slice, or an object without a prompt on slice k.
    """
    if not prompts:
        raise ValueError("no object to propagate")
    seen: set[tuple[int, int]] = set()
    for item in prompts:
        if not 0 < item.object_id < 2**32:
            raise ValueError(f"object_id {item.object_id} must be in 1..4294967295")
        if not 0 <= item.frame_index < frames:
            raise ValueError(
                f"prompt for object {item.object_id} on slice {item.frame_index}, outside 0..{frames - 1}"
            )
        if (item.frame_index, item.object_id) in seen:
            raise ValueError(f"two prompts for object {item.object_id} on slice {item.frame_index}")
        seen.add((item.frame_index, item.object_id))
    ids = {item.object_id for item in prompts}
    if len(ids) > MAX_OBJECTS:
        raise ValueError(f"{len(ids)} objects; one request tracks at most {MAX_OBJECTS}")
    missing = sorted(ids - {item.object_id for item in prompts if item.frame_index == frame_index})
    if missing:
        raise ValueError(
            f"object(s) {missing[:10]} have no prompt on slice frame_index {frame_index}: "
            "every object needs one there (prompts on other slices correct it)"
        )


def trim_memory(state: dict[str, Any], current: int, frame_index: int, keep: int = MEMORY_KEEP_FRAMES) -> int:
    """Drop tracked slices SAM2 no longer reads: those more than ``keep`` slices from both ``current`` and k.

    Prompted (conditioning) slices are always kept. Returns how many outputs were dropped.
    """
    dropped = 0
    for output_dict in state["output_dict_per_obj"].values():
        tracked = output_dict["non_cond_frame_outputs"]
        for index in [i for i in tracked if abs(i - current) > keep and abs(i - frame_index) > keep]:
            del tracked[index]
            dropped += 1
    return dropped


def to_labels(video_res_masks: torch.Tensor, object_ids: Sequence[int], active: set[int]) -> np.ndarray:
    """(N, 1, H, W) mask logits of ``object_ids`` -> uint32 (H, W) labels.

    A pixel is an object's where its logit is > 0 (as sam2's demo); where
    several are, the highest logit wins. Objects not in ``active`` are left out.
    """
    logits = video_res_masks[:, 0].float()
    keep = torch.tensor([i in active for i in object_ids], dtype=torch.bool, device=logits.device)
    logits = torch.where(keep[:, None, None], logits, torch.full_like(logits, -torch.inf))
    best, which = logits.max(dim=0)
    ids = torch.tensor([int(i) for i in object_ids], dtype=torch.int64, device=logits.device)
    labels = torch.where(best > 0.0, ids[which], torch.zeros_like(which))
    return np.ascontiguousarray(labels.cpu().numpy().astype(np.uint32))


def _present(labels: np.ndarray, object_ids: Sequence[int]) -> tuple[int, ...]:
    """The ids of ``object_ids`` with pixels in ``labels``, in that order."""
    found = set(np.unique(labels).tolist())
    return tuple(i for i in object_ids if i in found)
