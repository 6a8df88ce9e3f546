"""Sample data: real microscopy images that ship with scikit-image (no download)."""

from __future__ import annotations

from typing import Any

LayerData = tuple[Any, dict[str, Any], str]


def cell_sample() -> list[LayerData]:
    """scikit-image's ``cell``: a 660 x 550 uint8 grey micrograph of a single cell."""
    from skimage import data

    return [(data.cell(), {"name": "cell", "colormap": "gray"}, "image")]


def ihc_sample() -> list[LayerData]:
    """scikit-image's ``immunohistochemistry``: a 512 x 512 RGB micrograph of stained tissue."""
    from skimage import data

    return [(data.immunohistochemistry(), {"name": "immunohistochemistry", "rgb": True}, "image")]
