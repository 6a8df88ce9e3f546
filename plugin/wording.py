"""Words for the user: counts with their plural, slices by their index (pure Python)."""

from __future__ import annotations

from collections.abc import Sequence

from plugin.view.coords import SlicePlane


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``"1 object"``, ``"2 objects"`` (``nouns``: an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def slice_text(plane: SlicePlane) -> str:
    """``"the image"`` for a 2D image, ``"slice 3"`` in a stack, ``"slice 2, 5"`` with more axes.

    The numbers are the data indices of the non-displayed axes, in axis order.
    """
    fixed = [str(i) for i in plane.index if i is not None]
    return f"slice {', '.join(fixed)}" if fixed else "the image"


def slices_text(indices: Sequence[int], shown: int = 8) -> str:
    """``"slice 5"``, ``"slices 25, 31"`` (the first ``shown`` indices, then ``…``)."""
    listed = ", ".join(str(i) for i in indices[:shown]) + ("…" if len(indices) > shown else "")
    return f"{'slice' if len(indices) == 1 else 'slices'} {listed}"
