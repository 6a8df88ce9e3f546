"""The words the plugin shows: plurals and slice names ("1 object", never "1 objects" or
"slice (None, None)")."""

from __future__ import annotations

from plugin.view.coords import SlicePlane
from plugin.wording import plural, slice_text


def test_counts_take_the_right_plural() -> None:
    assert plural(1, "object") == "1 object"
    assert plural(0, "object") == "0 objects"
    assert plural(12, "slice") == "12 slices"
    assert plural(2, "mouse", "mice") == "2 mice"


def test_slices_are_named_by_their_index_never_by_none() -> None:
    assert slice_text(SlicePlane((64, 80), 0, 1, (None, None))) == "the image"
    assert slice_text(SlicePlane((5, 64, 80), 1, 2, (3, None, None))) == "slice 3"
    assert slice_text(SlicePlane((4, 64, 6, 80), 1, 3, (2, None, 5, None))) == "slice 2, 5"
