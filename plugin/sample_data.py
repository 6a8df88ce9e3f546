"""Sample data: a real microscopy image that ships with scikit-image (no download)."""

from __future__ import annotations

from typing import Any


def cell_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """scikit-image's ``cell``: a 660 x 550 uint8 fluorescence micrograph of a single cell."""
    from skimage import data

    image = data.cell()
    return [(image, {"name": "cell", "colormap": "gray"}, "image")]
