"""Windows of a large slice around a prompt: placement, snapping, the way back."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.geometry.windows import (
    Window,
    block_mean,
    grow_window,
    mask_bbox,
    prompt_extent,
    touched_inner_sides,
    window_for_prompt,
)


def test_a_click_gets_a_model_sized_native_window_that_holds_it_with_context() -> None:
    window = window_for_prompt((6000, 5000), [[4000.5, 3000.5]])
    assert (window.rows, window.cols, window.factor) == (1024, 1024, 1)
    assert window.sent_shape == (1024, 1024)
    # The click lies well inside: at least a quarter window from each side.
    assert window.row0 + 256 <= 4000.5 <= window.row1 - 256
    assert window.col0 + 256 <= 3000.5 <= window.col1 - 256


def test_nearby_clicks_share_one_window_so_one_embedding() -> None:
    clicks = [[4000.5, 3000.5], [4050.5, 3080.5], [3950.5, 2990.5], [4100.5, 2950.5]]
    windows = {window_for_prompt((6000, 5000), [c]) for c in clicks}
    assert len(windows) == 1
    # Origins lie on a grid of half the window, so a click far away does not reuse it.
    (window,) = windows
    assert window.row0 % 512 == 0 and window.col0 % 512 == 0
    assert window_for_prompt((6000, 5000), [[1000.5, 1000.5]]) != window


def test_windows_stay_inside_the_slice_and_small_slices_are_sent_whole() -> None:
    corner = window_for_prompt((6000, 5000), [[5999.5, 4999.5]])
    assert (corner.row1, corner.col1) == (6000, 5000) and corner.rows == 1024
    assert corner.inner_sides() == ("top", "left")
    thin = window_for_prompt((300, 5000), [[10.5, 2500.5]])
    assert (thin.row0, thin.rows, thin.cols) == (0, 300, 1024)
    small = window_for_prompt((800, 600), [[10.5, 10.5]])
    assert small.is_whole_slice and small.factor == 1 and small.inner_sides() == ()


def test_a_prompt_larger_than_the_model_input_is_block_averaged_down_to_it() -> None:
    box = [1000.0, 1000.0, 2600.0, 2200.0]
    window = window_for_prompt((6000, 6000), box=box)
    assert window.factor == 2 and (window.rows, window.cols) == (2048, 2048)
    assert window.sent_shape == (1024, 1024)
    assert window.row0 <= 1000 and window.row1 >= 2600 and window.col0 <= 1000 and window.col1 >= 2200
    sent_box = window.box_to_window(box)
    np.testing.assert_allclose(sent_box * 2 + [window.row0, window.col0] * 2, box)


def test_prompts_map_into_the_window_and_masks_back_exactly() -> None:
    window = Window(1536, 512, 1024, 1024, 1, (6000, 6000))
    np.testing.assert_allclose(window.points_to_window([[1600.5, 700.5]]), [[64.5, 188.5]])
    sent = np.zeros((1024, 1024), dtype=bool)
    sent[64, 188] = True
    native = window.mask_to_native(sent)
    rows, cols = np.nonzero(native)
    assert (rows[0] + window.row0, cols[0] + window.col0) == (1600, 700)
    # Factor 3: each sent pixel is a 3x3 block, cropped to the window.
    coarse = Window(0, 0, 1000, 700, 3, (1000, 700))
    assert coarse.sent_shape == (334, 234)
    sent = np.zeros(coarse.sent_shape, dtype=bool)
    sent[-1, -1] = True
    back = coarse.mask_to_native(sent)
    assert back.shape == (1000, 700) and back.sum() == 1 * 1  # last block: rows 999..999, cols 699..699
    with pytest.raises(ValueError, match="does not match"):
        coarse.mask_to_native(np.zeros((10, 10), dtype=bool))


def test_block_mean_keeps_dtype_and_averages_ragged_edges() -> None:
    image = np.arange(35, dtype=np.uint16).reshape(5, 7)
    small = block_mean(image, 2)
    assert small.dtype == np.uint16 and small.shape == (3, 4)
    assert small[0, 0] == 4  # mean of 0, 1, 7, 8
    assert small[0, 3] == 10  # the cut-short column: mean of 6, 13 = 9.5, rounded to even
    rgb = np.zeros((4, 4, 3), dtype=np.float32)
    rgb[:2, :2] = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(block_mean(rgb, 2)[0, 0], [1.0, 2.0, 3.0])


def test_window_read_touches_only_the_window() -> None:
    reads: list[tuple[slice, ...]] = []

    class Counting:
        shape = (6000, 6000)
        dtype = np.uint16

        def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
            reads.append(key)
            return np.ones((key[0].stop - key[0].start, key[1].stop - key[1].start), dtype=np.uint16)

    window = window_for_prompt((6000, 6000), [[3000.5, 3000.5]])
    assert window.read(Counting()).shape == (1024, 1024)
    assert reads == [window.slices]


def test_a_mask_on_an_inner_side_asks_for_a_window_that_holds_it() -> None:
    window = Window(1024, 1024, 1024, 1024, 1, (6000, 6000))
    native = np.zeros((1024, 1024), dtype=bool)
    native[900:1024, 300:400] = True  # runs out through the bottom
    assert touched_inner_sides(window, native) == ("bottom",)
    region = prompt_extent([[1024 + 950.5, 1024 + 350.5]])
    grown = grow_window(window, native, region)
    assert grown is not None and grown != window
    assert grown.row1 >= 1024 + 1024 + 200  # past the old bottom, by a quarter window
    assert grown.row0 <= 1024 + 900 and grown.col0 <= 1024 + 300 and grown.col1 >= 1024 + 400
    inside = np.zeros((1024, 1024), dtype=bool)
    inside[400:500, 400:500] = True
    assert touched_inner_sides(window, inside) == () and grow_window(window, inside, region) is None


def test_the_slice_border_is_not_an_inner_side() -> None:
    window = Window(0, 0, 1024, 1024, 1, (6000, 6000))
    native = np.zeros((1024, 1024), dtype=bool)
    native[0:50, 0:50] = True  # touches the slice's own top-left corner
    assert touched_inner_sides(window, native) == ()
    assert mask_bbox(native) == (0, 0, 50, 50)
    assert mask_bbox(np.zeros((4, 4), dtype=bool)) is None


def test_bad_prompts_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="points or a box"):
        window_for_prompt((2000, 2000))
    with pytest.raises(ValueError, match="finite"):
        window_for_prompt((2000, 2000), [[np.nan, 3.0]])
    with pytest.raises(ValueError, match="outside"):
        Window(1500, 0, 1024, 1024, 1, (2000, 2000))
