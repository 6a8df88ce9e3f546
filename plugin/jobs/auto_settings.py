"""AUTO-SEGMENT's settings as the user chose them in the plugin (kept between napari runs by the widget).

No Qt, no napari. The worker's mask parameters are the shared schema
:class:`protocol.wire.automask.AutoMaskParams`; the plugin adds what only it does
(drop small objects, tiles, linking through a stack).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.geometry.grid import DEFAULT_HALO, DEFAULT_TILE_SIZE


@dataclass(frozen=True)
class AutoSettings:
    """Parameters of the ``auto`` op (see protocol/README.md); CPU-friendly defaults."""

    points_per_side: int = 16
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    min_area: int = 0
    """Objects smaller than this (pixels) are dropped here, before writing (no OpenCV needed)."""
    timeout_s: float = 900.0
    tiling: bool = True
    """A slice larger than the model's input is segmented tile by tile over all workers, then stitched."""
    tile_size: int = DEFAULT_TILE_SIZE
    """Tile side in pixels (tiles are seen at native resolution)."""
    tile_halo: int = DEFAULT_HALO
    """Overlap between tiles in pixels; should exceed the largest object's radius."""
    link_stack: bool = True
    """AUTO-SEGMENT STACK: the same object on neighbouring slices keeps one id (linked by overlap)."""

    def params(self) -> dict[str, Any]:
        return {
            "points_per_side": self.points_per_side,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_score_thresh": self.stability_score_thresh,
        }
