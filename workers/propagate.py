"""Propagation of one object's mask through a stack (z or time) with SAM2's video predictor.

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
``propagate_in_video``); ``tests/test_propagate.py`` checks the state layout
against the installed sam2.
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

from workers.prep import check_image_shape, prepare_image
from workers.prompts import Prompt

log = logging.getLogger(__name__)

DIRECTIONS = ("forward", "backward", "both")
DEFAULT_MAX_STACK_FRAMES = 512
# sam2's load_video_frames defaults (ImageNet statistics), RGB order.
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
OBJECT_ID = 1


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
    the request) instead of files, the video and the state are not offloaded
    (they live on the model's device), and frame 0 is not pre-encoded (the
    prompted slice is encoded first, whatever its index).
    """
    device = predictor.device
    return {
        "images": frames,
        "num_frames": len(frames),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": device,
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
        """Yield ``(slice index, bool (H, W) mask)`` in :func:`frame_order`'s order.

        Args:
            frames: the stack's slices.
            shape: the stack's validated shape.
            frame_index: k, the slice the prompt is on.
            direction: ``forward``, ``backward`` or ``both``.
            max_frames: at most this many slices past k per direction, or None.
            mask: bool (H, W) mask of the object on slice k, or None.
            prompt: points and/or box on slice k in (row, col), or None.

        Exactly one of ``mask`` and ``prompt`` must be given. Each slice is
        computed only when the caller asks for it, so a caller that stops
        iterating (and closes the generator) stops the work between slices.

        Raises:
            ValueError: both or neither of ``mask`` and ``prompt``.
        """
        predictor = self.predictor
        with torch.inference_mode(), self.autocast():
            state = init_inference_state(predictor, frames, shape.height, shape.width)
            if mask is not None and prompt is None:
                _, _, masks = predictor.add_new_mask(state, frame_index, OBJECT_ID, torch.from_numpy(mask))
            elif prompt is not None and mask is None:
                sam = prompt.to_sam()
                _, _, masks = predictor.add_new_points_or_box(
                    state,
                    frame_index,
                    OBJECT_ID,
                    points=sam.point_coords,
                    labels=sam.point_labels,
                    box=sam.box,
                )
            else:
                raise ValueError("give exactly one of mask and prompt")
            yield frame_index, _to_mask(masks)
            passes = {"forward": [False], "backward": [True], "both": [False, True]}[direction]
            for reverse in passes:
                if reverse and frame_index == 0:
                    continue  # sam2 yields nothing backwards from slice 0; nothing is left to do
                stream = predictor.propagate_in_video(
                    state,
                    start_frame_idx=frame_index,
                    max_frame_num_to_track=max_frames,
                    reverse=reverse,
                )
                with contextlib.closing(stream):
                    for index, _, masks in stream:
                        if index != frame_index:  # slice k was sent first
                            yield int(index), _to_mask(masks)


def _to_mask(video_res_masks: torch.Tensor) -> np.ndarray:
    """(1, 1, H, W) mask logits of our one object -> bool (H, W) (logit > 0, as sam2's demo)."""
    return np.ascontiguousarray((video_res_masks[0, 0] > 0.0).cpu().numpy())
