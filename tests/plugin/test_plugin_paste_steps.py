"""Pasting a tiled AUTO-SEGMENT result into a labels layer: the GUI thread's cost.

A stitched large slice is pasted rectangle by rectangle (the tiles' cores);
napari redraws after a ``data_setitem`` unless told not to, and on a slice
larger than the GL texture that redraw is the whole slice (0.3 s on 8,192²,
31 s for a 121-core paste). The paste must redraw once, not per rectangle,
and stay one undo step.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Labels

from bench.discs import disc_image, scattered_discs
from plugin.jobs.results import Results
from plugin.view.coords import SlicePlane
from protocol.geometry.compressed import CompressedPlane
from protocol.geometry.grid import tile_grid
from tests.support.marks import GUI_TEST_MARKS

pytestmark = GUI_TEST_MARKS


def test_a_stitched_paste_redraws_once_and_is_one_undo_step(make_napari_viewer) -> None:
    shape = (2000, 1900)  # 3 x 3 tile cores
    _image, truth = disc_image(shape, *scattered_discs(shape, spacing=90))
    stitched = CompressedPlane(shape)
    for tile in tile_grid(shape).tiles:
        r0, c0, r1, c1 = tile.core
        stitched[r0:r1, c0:c1] = truth[r0:r1, c0:c1]
    assert len(stitched.rectangles) == 9
    viewer = make_napari_viewer()
    layer = viewer.add_layer(Labels(np.zeros(shape, dtype=np.uint32), name="auto"))
    redraws: list[object] = []
    layer.events.labels_update.connect(redraws.append)
    results = Results(lambda _level, _message: None)
    areas = np.bincount(truth.ravel())[1:].tolist()
    ids, pixels = results.paste_stitched(
        layer, SlicePlane(shape, 0, 1, (None, None)), stitched, stitched.rectangles, areas
    )

    assert len(redraws) == 1  # one redraw for nine rectangles written
    assert np.array_equal(layer.data, truth)  # ids 1..n on an empty layer, every disc whole
    assert len(ids) == int(truth.max()) and pixels == int(np.count_nonzero(truth))
    assert results.histories(layer).undo()  # one step removes the whole paste
    assert not layer.data.any()
