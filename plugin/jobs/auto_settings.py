"""AUTO-SEGMENT's settings as the user chose them in the plugin (kept between napari runs by the widget).

No Qt, no napari. The worker's mask parameters and their defaults are the shared
schema :class:`protocol.wire.automask.AutoMaskParams`; the plugin overrides one
default (below, with the reason) and adds what only it does: drop small
objects, tiles, linking through a stack, its patience.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.geometry.grid import DEFAULT_HALO, DEFAULT_TILE_SIZE
from protocol.wire.automask import AutoMaskParams

WHOLE, VISIBLE, DRAWN = "whole", "visible", "drawn"
"""Where AUTO-SEGMENT looks (:mod:`plugin.jobs.auto_region`): the slice, the view, a drawn rectangle."""


@dataclass(frozen=True)
class AutoSettings(AutoMaskParams):
    """The ``auto`` request's parameters (:class:`AutoMaskParams`) and the plugin's own AUTO settings."""

    points_per_side: int = 16
    """16, not the schema's 32, for speed on a CPU: a quarter of the prompts, so a 512² slice takes
    about 50 s instead of over three minutes on 2 cores (DESIGN.md); raise it for small objects."""
    min_area: int = 0
    """Objects smaller than this (pixels) are dropped here, before writing (no OpenCV needed)."""
    timeout_s: float = 900.0
    tiling: bool = True
    """A slice larger than the model's input is segmented tile by tile over all workers, then stitched."""
    tile_size: int = DEFAULT_TILE_SIZE
    """Tile side in pixels (tiles are seen at native resolution)."""
    tile_halo: int = DEFAULT_HALO
    """Overlap between tiles in pixels; should exceed the largest object's radius."""
    region: str = WHOLE
    """AUTO-SEGMENT (one slice): ``whole``, ``visible`` or ``drawn`` (:mod:`plugin.jobs.auto_region`)."""
    link_stack: bool = True
    """AUTO-SEGMENT STACK: the same object on neighbouring slices keeps one id (linked by overlap)."""

    def params(self) -> dict[str, Any]:
        """The ``auto`` request's params (:meth:`AutoMaskParams.to_params`)."""
        return self.to_params()
