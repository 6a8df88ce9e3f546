"""The tile grid of a large slice: cores that partition it, windows with a halo.

Pure numpy, no napari, no network (runners: ``protocol/ops/tiled.py``).

:func:`tile_grid` cuts an (H, W) slice into tiles of at most ``tile_size`` px
(the model's input, so each is seen at native resolution). Each tile *owns* a
core; the cores partition the slice exactly. Its window is the core plus
``halo`` px on every side that is not the slice's border, widened to
``tile_size`` where the slice allows (more context, same cost).

All indices are (row, col); bounding boxes [r0, c0, r1, c1) end exclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TILE_SIZE = 1024
DEFAULT_HALO = 128


@dataclass(frozen=True)
class Tile:
    """One tile of a slice.

    Attributes:
        index: (tile_row, tile_col) in the grid.
        flat: row-major number of the tile (0 .. rows*cols - 1).
        window: [r0, c0, r1, c1) of the pixels sent, in slice pixels.
        core: [r0, c0, r1, c1) of the pixels this tile owns (inside ``window``).
    """

    index: tuple[int, int]
    flat: int
    window: tuple[int, int, int, int]
    core: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the window."""
        return self.window[2] - self.window[0], self.window[3] - self.window[1]

    @property
    def window_slices(self) -> tuple[slice, slice]:
        """Index of the window in the slice: ``source[tile.window_slices]``."""
        return slice(self.window[0], self.window[2]), slice(self.window[1], self.window[3])

    @property
    def core_slices(self) -> tuple[slice, slice]:
        """Index of the core in the slice."""
        return slice(self.core[0], self.core[2]), slice(self.core[1], self.core[3])

    @property
    def core_in_window(self) -> tuple[slice, slice]:
        """Index of the core in the tile's own labels."""
        r0, c0 = self.window[0], self.window[1]
        return (
            slice(self.core[0] - r0, self.core[2] - r0),
            slice(self.core[1] - c0, self.core[3] - c0),
        )


@dataclass(frozen=True)
class TileGrid:
    """The tiles of a slice of ``slice_shape`` (H, W), row-major in ``tiles``."""

    slice_shape: tuple[int, int]
    grid_shape: tuple[int, int]
    tiles: tuple[Tile, ...]
    tile_size: int
    halo: int

    def __len__(self) -> int:
        return len(self.tiles)

    def neighbours(self, tile: Tile) -> list[Tile]:
        """The up to 8 tiles around ``tile``."""
        rows, cols = self.grid_shape
        i, j = tile.index
        return [
            self.tiles[a * cols + b]
            for a in range(max(0, i - 1), min(rows, i + 2))
            for b in range(max(0, j - 1), min(cols, j + 2))
            if (a, b) != (i, j)
        ]


def _axis_parts(length: int, tile_size: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(window0, window1, core0, core1) along one axis."""
    if length <= tile_size:
        return [(0, length, 0, length)]
    # The fewest equal cores whose windows (core + halo inside the slice) fit in tile_size;
    # the first and last cores need a halo on one side only.
    n = max(2, math.ceil((length - 2 * halo) / (tile_size - 2 * halo)))
    while True:
        bounds = [(k * length) // n for k in range(n + 1)]
        spans = [min(length, bounds[k + 1] + halo) - max(0, bounds[k] - halo) for k in range(n)]
        if max(spans) <= tile_size:
            break
        n += 1
    parts = []
    for k in range(n):
        core0, core1 = bounds[k], bounds[k + 1]
        w0, w1 = max(0, core0 - halo), min(length, core1 + halo)
        extra = tile_size - (w1 - w0)  # widen to tile_size, keeping the core centred where possible
        w0 = max(0, w0 - extra // 2)
        w1 = min(length, w0 + tile_size)
        w0 = max(0, w1 - tile_size)
        parts.append((w0, w1, core0, core1))
    return parts


def tile_grid(
    slice_shape: Sequence[int], tile_size: int = DEFAULT_TILE_SIZE, halo: int = DEFAULT_HALO
) -> TileGrid:
    """Cut a slice of (H, W) into tiles of at most ``tile_size`` with ``halo`` px of overlap.

    A slice no larger than ``tile_size`` is one tile (window = core = the slice).

    Raises:
        ValueError: ``halo`` < 0 or ``tile_size`` <= 2 * halo, or an empty slice.
    """
    height, width = int(slice_shape[0]), int(slice_shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"slice must not be empty, got shape {(height, width)}")
    if halo < 0 or tile_size <= 2 * halo:
        raise ValueError(f"need 0 <= halo < tile_size / 2, got tile_size={tile_size}, halo={halo}")
    row_parts, col_parts = _axis_parts(height, tile_size, halo), _axis_parts(width, tile_size, halo)
    tiles = []
    for i, (wr0, wr1, cr0, cr1) in enumerate(row_parts):
        for j, (wc0, wc1, cc0, cc1) in enumerate(col_parts):
            tiles.append(Tile((i, j), i * len(col_parts) + j, (wr0, wc0, wr1, wc1), (cr0, cc0, cr1, cc1)))
    return TileGrid((height, width), (len(row_parts), len(col_parts)), tuple(tiles), tile_size, halo)
