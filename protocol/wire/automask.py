"""Automatic-mask parameters (op ``auto``): one typed schema, one set of defaults, for every room.

The worker validates a request's params with :meth:`AutoMaskParams.from_params`;
the plugin (:class:`plugin.jobs.auto_settings.AutoSettings`) and ``sam2-batch``
(:class:`batch.runner.BatchSettings`) build their requests with
:meth:`AutoMaskParams.to_params`. A caller overrides a default only where it
says why (the plugin's 16 points per side, for speed on a CPU). The values are
those of SAM2's ``SAM2AutomaticMaskGenerator`` (sam2 1.1.0), so a request with
no params gets what SAM2 would do; README.md ("AUTO-SEGMENT and sam2-batch
options") says what each does and why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


def _param(default: Any, low: float, high: float) -> Any:
    """A parameter's field: its default, and its allowed range (inclusive) in the field's metadata."""
    return field(default=default, metadata={"limits": (low, high)})


@dataclass(frozen=True)
class AutoMaskParams:
    """The parameters of SAM2's automatic mask generator that travel in an ``auto`` request.

    Attributes:
        points_per_side: the prompt grid is this many points along each side of
            the image (n² prompts: more finds smaller objects, costs n² decoder runs).
        points_per_batch: prompts decoded at once (memory, not results).
        pred_iou_thresh: keep masks whose predicted quality (IoU) is at least this, 0..1.
        stability_score_thresh: keep masks whose IoU between two binarisation
            thresholds is at least this, 0..1 (unstable masks are vague).
        box_nms_thresh: masks whose boxes overlap more than this (IoU) are duplicates, 0..1.
        crop_n_layers: also run on 2x2, 4x4, ... crops of the image (0: the whole image only).
        min_mask_region_area: remove holes and islands smaller than this many
            pixels (0: none; > 0 needs OpenCV on the worker).
    """

    # name: type = _param(default, lowest, highest): each parameter's one line
    points_per_side: int = _param(32, 1, 128)
    points_per_batch: int = _param(64, 1, 1024)
    pred_iou_thresh: float = _param(0.8, 0.0, 1.0)
    stability_score_thresh: float = _param(0.95, 0.0, 1.0)
    box_nms_thresh: float = _param(0.7, 0.0, 1.0)
    crop_n_layers: int = _param(0, 0, 3)
    min_mask_region_area: int = _param(0, 0, 2**31 - 1)

    def __post_init__(self) -> None:
        for name in AUTO_MASK_KEYS:
            check_param(name, getattr(self, name))

    def to_params(self) -> dict[str, Any]:
        """The ``params`` of an ``auto`` request (JSON-able; contrast limits go beside them)."""
        return {name: getattr(self, name) for name in AUTO_MASK_KEYS}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AutoMaskParams:
        """The parameters of a request's ``params`` (missing ones take the defaults).

        Raises:
            ValueError: an unknown name, a value of the wrong type or out of
                its range (the message names the parameter and its range).
        """
        unknown = sorted(set(params) - set(AUTO_MASK_KEYS))
        if unknown:
            raise ValueError(f"unknown auto params {unknown}; allowed: {sorted(AUTO_MASK_KEYS)}")
        checked: dict[str, Any] = {name: check_param(name, value) for name, value in params.items()}
        return cls(**checked)


def check_param(name: str, value: Any) -> int | float:
    """``value`` of the parameter ``name`` checked against its type and :data:`LIMITS`.

    Raises:
        ValueError: ``param 'name' must be ...``.
    """
    low, high = LIMITS[name]
    if isinstance(low, int) and isinstance(high, int):
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"param {name!r} must be an integer in {low}..{high}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"param {name!r} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"param {name!r} must be in [{low}, {high}], got {value!r}")
    return float(value)


AUTO_MASK_KEYS: tuple[str, ...] = tuple(f.name for f in fields(AutoMaskParams))
"""The names of the automatic-mask parameters, in the schema's order."""
LIMITS: dict[str, tuple[float, float]] = {f.name: f.metadata["limits"] for f in fields(AutoMaskParams)}
"""The allowed range of each parameter, inclusive (the worker refuses others with ``bad_request``)."""
