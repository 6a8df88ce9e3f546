"""A box larger than the model's input, at full resolution: one request per tile of the box, stitched.

One ``segment`` request on a box wider than the model's input (1,024 px) is
sent block-averaged (:func:`protocol.geometry.windows.window_for_prompt`):
a 5,000² box is seen at about 1/5 of its resolution and the object comes
back coarse. :func:`box_view` says so before anything is sent (the
resolution, and what the full-resolution alternative costs);
:func:`segment_box_tiled` is that alternative:

1. the box plus ``halo`` px of context (inside the slice) is cut into tiles
   of the model's input (:func:`protocol.geometry.grid.tile_grid`), so each
   tile is seen at native resolution;
2. every tile whose *core* meets the box is sent with its own part of the
   box (the box clipped to the tile's window, halo included), as many in
   flight as the broker has workers (:func:`protocol.ops.fan_out.fan_out`);
3. each tile's mask is written into its core only (the cores partition the
   region, so the result does not depend on the order answers arrive in,
   :class:`protocol.geometry.stitch.TileStitcher`), and the pieces, all parts
   of the one object the box asks for, become one mask.

The answer is a :class:`protocol.ops.windowed.WindowedMask` (the mask
cropped to its bounding box and its offset in the slice), as for a box
sent whole, so a caller pastes either the same way. Coordinates are
(row, col); boxes [r0, c0, r1, c1) in continuous slice pixels as on the
wire. Memory: the region's mask (one uint32 per pixel of the box plus halo)
and one tile per sending thread.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocol.geometry.grid import DEFAULT_HALO, DEFAULT_TILE_SIZE, Tile, TileGrid, tile_grid
from protocol.geometry.stitch import TileStitcher
from protocol.geometry.windows import MODEL_INPUT, Window, mask_bbox, window_for_prompt
from protocol.ops import requests as ops
from protocol.ops.fan_out import fan_out
from protocol.ops.windowed import WindowedMask
from protocol.wire.client import SamClient
from protocol.wire.errors import Superseded
from protocol.wire.wire_image import to_wire

MIN_PIECE_PX = 4
"""A tile's part of the box narrower than this (rows or cols) is not sent: no object fits in it."""


@dataclass(frozen=True)
class BoxView:
    """How a box prompt would be seen in one request, and the full-resolution alternative.

    Attributes:
        box_shape: (rows, cols) of the box in slice pixels.
        window: the window one request sends (its ``factor``: native pixels per pixel seen).
        tiles: requests the full-resolution alternative sends (tiles whose core meets the box).
    """

    box_shape: tuple[int, int]
    window: Window
    tiles: int

    @property
    def factor(self) -> int:
        return self.window.factor

    @property
    def downsampled(self) -> bool:
        """Whether one request sees the box below native resolution."""
        return self.factor > 1

    def notice(self) -> str:
        """One line: the resolution the box is seen at, and the alternative."""
        rows, cols = self.box_shape
        seen = max(1, math.ceil(max(rows, cols) / self.factor))
        return (
            f"This {cols:,} x {rows:,} px box is seen at 1/{self.factor} resolution in one request "
            f"(about {seen:,} px across): the object comes back coarse. At full resolution it is "
            f"segmented in {self.tiles} tiles of {MODEL_INPUT} px, each with its part of the box, "
            "stitched into one label."
        )


def _region(slice_shape: tuple[int, int], box: Sequence[float], halo: int) -> tuple[int, int, int, int]:
    """[r0, c0, r1, c1) of the box (whole pixels it touches) plus ``halo`` px, inside the slice."""
    height, width = slice_shape
    r0 = max(0, math.floor(box[0]) - halo)
    c0 = max(0, math.floor(box[1]) - halo)
    r1 = min(height, math.ceil(box[2]) + halo)
    c1 = min(width, math.ceil(box[3]) + halo)
    if r0 >= r1 or c0 >= c1:
        raise ValueError(f"box {list(box)} lies outside the slice {slice_shape}")
    return r0, c0, r1, c1


def _clip(box: Sequence[float], rect: Sequence[int]) -> tuple[float, float, float, float] | None:
    """The box's part inside ``rect`` [r0, c0, r1, c1), or None when thinner than :data:`MIN_PIECE_PX`."""
    r0, c0 = max(float(box[0]), rect[0]), max(float(box[1]), rect[1])
    r1, c1 = min(float(box[2]), rect[2]), min(float(box[3]), rect[3])
    if r1 - r0 < MIN_PIECE_PX or c1 - c0 < MIN_PIECE_PX:
        return None
    return r0, c0, r1, c1


@dataclass(frozen=True)
class _Plan:
    region: tuple[int, int, int, int]
    grid: TileGrid
    tiles: tuple[Tile, ...]  # those whose core meets the box, in grid order


def _plan(slice_shape: tuple[int, int], box: Sequence[float], tile_size: int, halo: int) -> _Plan:
    region = _region(slice_shape, box, halo)
    grid = tile_grid((region[2] - region[0], region[3] - region[1]), tile_size, halo)
    local = [box[0] - region[0], box[1] - region[1], box[2] - region[0], box[3] - region[1]]
    tiles = tuple(t for t in grid.tiles if _clip(local, t.core) is not None)
    return _Plan(region, grid, tiles)


def box_view(
    slice_shape: Sequence[int],
    box: Sequence[float],
    *,
    tile_size: int = DEFAULT_TILE_SIZE,
    halo: int = DEFAULT_HALO,
) -> BoxView:
    """How ``box`` [r0, c0, r1, c1] on a slice of ``slice_shape`` (H, W) would be seen (no I/O).

    Raises:
        ValueError: the box lies outside the slice.
    """
    shape = (int(slice_shape[0]), int(slice_shape[1]))
    plan = _plan(shape, box, tile_size, halo)
    box_shape = (math.ceil(box[2]) - math.floor(box[0]), math.ceil(box[3]) - math.floor(box[1]))
    return BoxView(box_shape, window_for_prompt(shape, None, box), len(plan.tiles))


def segment_box_tiled(
    client_factory: Callable[[], SamClient],
    source: Any,
    box: Sequence[float],
    *,
    contrast_limits: tuple[float, float] | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    halo: int = DEFAULT_HALO,
    in_flight: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> WindowedMask:
    """Segment the object in ``box`` on an (H, W[, C]) slice at native resolution, tile by tile.

    Args:
        client_factory: one client per sending thread (share the plugin's known image keys).
        source: the slice, (H, W) grey or (H, W, 3|4) colour, any array-like with numpy slicing;
            only tile windows are read, each in the thread that sends it.
        box: [r0, c0, r1, c1] in continuous slice pixels (row, col), as on the wire.
        contrast_limits: (low, high) for non-uint8 pixels, the same for every tile (what the user
            sees); ``None``: each tile's own range.
        tile_size, halo: the tiles (:func:`protocol.geometry.grid.tile_grid`).
        in_flight: requests at once; ``None``: the broker's worker count.
        on_progress: ``on_progress(tiles_done, tiles_total)`` after each answer (calling thread).
        cancel: set it to stop (raises :class:`~protocol.wire.errors.Superseded`).

    Returns:
        :class:`~protocol.ops.windowed.WindowedMask`: the object's mask cropped to its bounding box
        and its offset; ``window`` is the region (box plus halo, factor 1); ``tries`` the tiles sent.

    Raises:
        ValueError: the box lies outside the slice.
        RemoteError, RequestTimeout, AnswerError: a tile failed (the others are cancelled first).
        Superseded: cancelled.
    """
    slice_shape = (int(source.shape[0]), int(source.shape[1]))
    plan = _plan(slice_shape, box, tile_size, halo)
    rr0, cc0, rr1, cc1 = plan.region
    local_box = [box[0] - rr0, box[1] - cc0, box[2] - rr0, box[3] - cc0]
    out = np.zeros((rr1 - rr0, cc1 - cc0), dtype=np.uint32)
    stitcher = TileStitcher(out, plan.grid)

    def send(client: SamClient, tile: Tile, _halt: threading.Event) -> np.ndarray:
        piece = _clip(local_box, tile.window)
        w0, c0 = tile.window[0], tile.window[1]
        if piece is None:  # the core meets the box but the window's part is too thin to hold an object
            return np.zeros(tile.shape, dtype=bool)
        rows, cols = tile.window_slices
        pixels = source[rr0 + rows.start : rr0 + rows.stop, cc0 + cols.start : cc0 + cols.stop]
        image = to_wire(np.asarray(pixels), contrast_limits)
        in_tile = (piece[0] - w0, piece[1] - c0, piece[2] - w0, piece[3] - c0)
        return ops.segment(client, image, (), (), in_tile).mask

    def stitch(tile: Tile, mask: np.ndarray) -> None:
        stitcher.add(tile, mask.astype(np.uint32))
        if on_progress is not None:
            on_progress(stitcher.tiles_done, len(plan.tiles))

    run = fan_out(list(plan.tiles), client_factory, send, stitch, in_flight=in_flight, cancel=cancel)
    if run.cancelled:
        raise Superseded("the tiled box was cancelled")
    whole = out > 0  # every piece is part of the one object the box asks for
    bbox = mask_bbox(whole)
    region = Window(rr0, cc0, rr1 - rr0, cc1 - cc0, 1, slice_shape)
    if bbox is None:
        mask, offset = np.zeros((0, 0), dtype=bool), (rr0, cc0)
    else:
        mask = np.ascontiguousarray(whole[bbox[0] : bbox[2], bbox[1] : bbox[3]])
        offset = (rr0 + bbox[0], cc0 + bbox[1])
    return WindowedMask(mask, offset, region, len(plan.tiles), touches_border=False)
