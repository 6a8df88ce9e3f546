"""A synthetic time-lapse with known tracks: moving discs, one division, one gap.

``(T, H, W)`` uint16 labels, 10 frames of 64 x 96 pixels:

* label 1: a disc moving right, frames 0-9;
* label 2: a disc moving down, frames 0-4; it divides at frame 5 into
* labels 3 and 4: discs drifting apart, frames 5-9 (parent 2);
* label 5: a still disc on frames 0-2 and 6-9 (a gap on frames 3-5).

:data:`EXPECTED` gives each track's CTC row ``(begin, end, parent label)``
after gap splitting (label 5's later part is a new id whose parent is 5).
"""

from __future__ import annotations

import numpy as np

N_FRAMES = 10
SHAPE = (64, 96)
LINEAGE = {3: 2, 4: 2}
"""Daughter label -> parent label."""
EXPECTED = {1: (0, 9, 0), 2: (0, 4, 0), 3: (5, 9, 2), 4: (5, 9, 2), 5: (0, 2, 0)}
"""Label -> (begin, end, parent label) of its first run; label 5 also has a run (6, 9) with parent 5."""
LATER_RUN = (6, 9)


MOVIE_FRAMES = 5
MOVIE_SIDE = 96
"""The GUI time-lapse tests' movies: MOVIE_FRAMES square frames of MOVIE_SIDE pixels."""


def movie_disc(centre: tuple[float, float], radius: float = 8.0) -> np.ndarray:
    """A bool (MOVIE_SIDE, MOVIE_SIDE) disc at ``centre`` (row, col)."""
    return disc((MOVIE_SIDE, MOVIE_SIDE), centre, radius)


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """A boolean disc of ``radius`` pixels at ``centre`` (row, col)."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def centres(frame: int) -> dict[int, tuple[float, float]]:
    """``{label: (row, col)}`` of the discs on ``frame``."""
    found: dict[int, tuple[float, float]] = {1: (12.0, 10.0 + 6 * frame)}
    if frame <= 4:
        found[2] = (24.0 + 3 * frame, 30.0)
    else:
        spread = 6.0 + 4.0 * (frame - 5)
        found[3] = (40.0, 30.0 - spread)
        found[4] = (40.0, 30.0 + spread)
    if frame <= 2 or frame >= 6:
        found[5] = (52.0, 80.0)
    return found


def timelapse() -> np.ndarray:
    """The ``(T, H, W)`` uint16 labels stack described above."""
    stack = np.zeros((N_FRAMES, *SHAPE), dtype=np.uint16)
    for t in range(N_FRAMES):
        for label, centre in centres(t).items():
            stack[t][disc(SHAPE, centre, 5.0)] = label
    return stack
