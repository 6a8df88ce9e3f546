"""Automatic masks (``SAM2AutomaticMaskGenerator``) with progress reports.

Generation runs in a helper thread so that the caller, a generator, can
yield progress while it runs (one report per batch of point prompts, at most
one per ``progress_interval_s``). The helper thread owns its own
``torch.inference_mode`` and autocast, which are thread-local. A ``cancel``
event is checked after each batch: generation then stops with
:class:`AutoCancelled`.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workers.labels import paint_labels


class AutoCancelled(Exception):
    """Generation stopped early because its ``cancel`` event was set."""


@dataclass(frozen=True)
class AutoProgress:
    """``done`` of ``total`` point prompts decoded, over ``crops`` image crops."""

    done: int
    total: int
    crops: int


@dataclass(frozen=True)
class AutoResult:
    """Label image and per-label areas (see :func:`workers.labels.paint_labels`)."""

    labels: np.ndarray
    areas: list[int]
    masks_found: int


def _progress_generator_class() -> type:
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    class ProgressMaskGenerator(SAM2AutomaticMaskGenerator):
        """Meta's generator, calling ``on_batch(n_points)`` after each batch.

        Hooks sam2 1.1.0's ``_process_batch``; should it be renamed, only the progress reports stop.
        """

        def __init__(self, model: torch.nn.Module, on_batch: Callable[[int], None], **kwargs: Any) -> None:
            super().__init__(model, **kwargs)
            self.on_batch = on_batch

        def _process_batch(self, points: np.ndarray, *args: Any, **kwargs: Any) -> Any:
            data = super()._process_batch(points, *args, **kwargs)
            self.on_batch(len(points))
            return data

    return ProgressMaskGenerator


def count_prompts(image_hw: tuple[int, int], settings: Mapping[str, Any]) -> tuple[int, int]:
    """(number of crops, total point prompts) that generation will run for ``settings``."""
    from sam2.utils.amg import build_all_layer_point_grids, generate_crop_boxes

    crop_n_layers = int(settings.get("crop_n_layers", 0))
    overlap = float(settings.get("crop_overlap_ratio", 512 / 1500))
    _, layer_idxs = generate_crop_boxes(image_hw, crop_n_layers, overlap)
    grids = build_all_layer_point_grids(
        int(settings["points_per_side"]),
        crop_n_layers,
        int(settings.get("crop_n_points_downscale_factor", 1)),
    )
    return len(layer_idxs), sum(len(grids[layer]) for layer in layer_idxs)


def generate_labels(
    model: torch.nn.Module,
    rgb: np.ndarray,
    settings: Mapping[str, Any],
    autocast: Callable[[], contextlib.AbstractContextManager[object]],
    progress_interval_s: float = 1.0,
    cancel: threading.Event | None = None,
    configure_predictor: Callable[[Any], None] | None = None,
) -> Iterator[AutoProgress | AutoResult]:
    """Run automatic mask generation on ``rgb``; yield progress, then one :class:`AutoResult`.

    Args:
        model: the SAM2 model.
        rgb: uint8 (H, W, 3) RGB image.
        settings: keyword arguments of ``SAM2AutomaticMaskGenerator`` (``points_per_side`` required).
        autocast: returns the autocast context for model calls.
        progress_interval_s: least time between two progress reports.
        cancel: when set, generation stops after the current batch of prompts.
        configure_predictor: called with the generator's ``SAM2ImagePredictor`` before it
            runs (e.g. :func:`workers.microsam_prep.install` for micro-sam's preprocessing).

    Raises:
        AutoCancelled: ``cancel`` was set.
        Exception: whatever generation raised, re-raised in the caller's thread.
    """
    crops, total = count_prompts(rgb.shape[:2], settings)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def on_batch(n_points: int) -> None:
        if cancel is not None and cancel.is_set():
            raise AutoCancelled
        events.put(("batch", n_points))

    generator = _progress_generator_class()(model, on_batch=on_batch, output_mode="binary_mask", **settings)
    if configure_predictor is not None:
        configure_predictor(generator.predictor)

    def work() -> None:
        try:
            with torch.inference_mode(), autocast():
                events.put(("done", generator.generate(rgb)))
        except BaseException as e:  # handed to the caller
            events.put(("error", e))

    thread = threading.Thread(target=work, name="sam2-auto", daemon=True)
    thread.start()
    done = 0
    yield AutoProgress(0, total, crops)
    last_report = time.monotonic()
    while True:
        kind, value = events.get()
        if kind == "batch":
            done += int(value)
            if time.monotonic() - last_report >= progress_interval_s:
                last_report = time.monotonic()
                yield AutoProgress(done, total, crops)
        elif kind == "error":
            thread.join()
            raise value
        else:
            thread.join()
            masks = [record["segmentation"] for record in value]
            labels, areas = paint_labels(masks, (rgb.shape[0], rgb.shape[1]))
            yield AutoResult(labels, areas, len(masks))
            return
