"""An OME-Zarr image pyramid opened with napari-ome-zarr, prompted through the plugin.

napari-ome-zarr gives napari a multiscale layer of dask arrays. A click must
read one native-resolution window of level 0 (never the whole slice) and the
answer must land exactly on the object, with the layer's physical scale.
Real viewer under Xvfb, real broker and the deterministic stand-in worker
(``python -m workers --model standin-blobs``), whose right answer is the disc.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.discs import disc_image
from plugin._qt.encode_widget import PREFETCH_KEY
from plugin.jobs.controller import POINTS
from plugin.user_settings import save
from plugin.view.layers import POINTS_MASK, PROMPT_POINTS
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import dock_widget
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

pytestmark = GUI_TEST_MARKS

SHAPE = (4096, 3072)
CENTRE = (2700.0, 1900.0)
RADIUS = 9.0
PIXEL_UM = 0.5


def _write_pyramid(path: Path) -> np.ndarray:
    """A 3-level (y, x) uint16 OME-Zarr image at ``path`` with one bright disc; returns the disc's mask."""
    ome_writer = pytest.importorskip("ome_zarr.writer")
    zarr = pytest.importorskip("zarr")
    _, truth = disc_image(SHAPE, np.array([CENTRE]), np.array([RADIUS]), dtype=np.uint16)
    image = np.where(truth > 0, 40000, 500).astype(np.uint16)
    group = zarr.open_group(str(path), mode="w")
    ome_writer.write_image(
        image, group, scale_factors=(2, 4), axes="yx", scale={"y": PIXEL_UM, "x": PIXEL_UM},
        axes_units={"y": "micrometer", "x": "micrometer"},
    )  # fmt: skip
    return truth == 1


def test_a_click_on_an_ome_zarr_pyramid_opened_with_napari_ome_zarr_sends_one_level0_window(
    make_napari_viewer, spawn: ProcessSpawner, qtbot, monkeypatch, tmp_path: Path
) -> None:
    pytest.importorskip("napari_ome_zarr")
    disc = _write_pyramid(tmp_path / "mosaic.ome.zarr")
    backend = StandinBackend(spawn, 1)
    # This test counts the images a click sends: no prefetch (tests/plugin/test_plugin_embed_ahead.py).
    save(PREFETCH_KEY, False)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "mosaic.ome.zarr"), plugin="napari-ome-zarr")
    assert layer.multiscale and len(layer.data) == 3 and tuple(layer.data[0].shape) == SHAPE
    assert type(layer.data[0]).__module__.startswith("dask")  # lazy: nothing read yet
    np.testing.assert_allclose(layer.scale, (PIXEL_UM, PIXEL_UM))
    layer.contrast_limits = (0, 40000)
    widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE)
    assert widget.controller.image is layer

    # The user clicks the disc: the prompt layer follows the image's scale, so its data are pixels.
    widget.start_points()
    prompts = viewer.layers[PROMPT_POINTS]
    np.testing.assert_allclose(prompts.scale, layer.scale)
    prompts.add([CENTRE[0] + 0.5, CENTRE[1] + 0.5])
    qtbot.waitUntil(lambda: widget.controller.applied.get(POINTS) is not None, timeout=60_000)
    widget.controller.session.wait_idle(5)
    applied = widget.controller.applied[POINTS]

    with backend.client() as client:
        sent = client.call("info").header["result"]["image_shapes"]
    assert sent == [[1024, 1024]]  # one native window of level 0, not the 4096 x 3072 slice
    labels = viewer.layers[POINTS_MASK]
    assert tuple(labels.data.shape) == SHAPE
    np.testing.assert_allclose(labels.scale, (PIXEL_UM, PIXEL_UM))
    (label_id,) = applied.label_ids
    written = np.asarray(labels.data) == label_id
    np.testing.assert_array_equal(written, disc)  # exact, at native resolution, where the user clicked
