"""Provenance of automatic results (issue 25): a layer made by AUTO-SEGMENT STACK records the
automatic-mask parameters and the tile grid, not prompts per label, and an export carries it.

The GUI test runs a real viewer under Xvfb with a real broker and the deterministic stand-in worker;
the tiled record is checked on a napari Labels model (a tiled slice needs no worker to be described).
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels

from bench.discs import disc_image
from plugin.jobs.auto import record_auto_run
from plugin.jobs.auto_settings import AutoSettings
from plugin.provenance_record import AUTO_RUN_KEY, auto_run_of, automatic_provenance
from plugin.view.layers import AUTO_MASK
from protocol.formats.provenance import Provenance
from protocol.formats.provenance_files import read_provenance
from protocol.geometry.grid import tile_grid
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import dock_widget
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

TIMEOUT_MS = 60_000


def test_a_tiled_run_records_its_parameters_and_grid_and_no_prompts() -> None:
    layer = Labels(np.zeros((2, 8, 8), np.uint16))
    settings = AutoSettings(points_per_side=8, min_area=12, tile_size=512, tile_halo=64)
    record_auto_run(layer, settings, (3000, 2000), tiled=True, stack=True)
    run = auto_run_of(layer.metadata)
    assert run is not None and run["operation"] == "tiled_auto"
    rows, cols = tile_grid((3000, 2000), 512, 64).grid_shape
    assert run["tile_grid"] == {
        "tile": 512,
        "halo": 64,
        "rows": rows,
        "cols": cols,
        "slice_shape": [3000, 2000],
    }
    record = automatic_provenance([0, 4, 7], run, model="sam2.1_hiera_tiny", source_path="/data/a.tif")
    back = Provenance.from_dict(record.to_dict())
    assert back.operation == "tiled_auto" and back.tile_grid == run["tile_grid"]
    assert back.parameters["points_per_side"] == 8 and back.parameters["min_area"] == 12
    assert back.parameters["link_stack"] is True
    assert back.prompts == {} and back.not_replayable == (4, 7)
    assert back.source_path == "/data/a.tif"
    layer.metadata = {AUTO_RUN_KEY: {"operation": "paint"}}
    assert auto_run_of(layer.metadata) is None  # malformed: an interactive record instead


@pytest.mark.parametrize("fmt", [pytest.param(f, marks=GUI_TEST_MARKS) for f in ("tiff", "ome-zarr")])
def test_auto_segment_stack_export_reads_back_its_parameters(
    make_napari_viewer, spawn: ProcessSpawner, qtbot, monkeypatch, tmp_path, fmt
) -> None:
    backend = StandinBackend(spawn, 1)
    centres, radii = np.array([[16.0, 16.0], [44.0, 40.0]]), np.array([8.0, 10.0])
    stack = np.stack([disc_image((64, 64), centres + [0.0, 2.0 * z], radii)[0] for z in range(3)])
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack")
    widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE)
    widget.controller.auto_settings = AutoSettings(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    widget.points_per_side.setValue(4)
    widget.auto_box.stack_button.click()
    qtbot.waitUntil(lambda: not widget.auto_box.stack_task.running, timeout=3 * TIMEOUT_MS)
    layer = viewer.layers[AUTO_MASK]
    assert layer.data.any()
    widget.export_box.set_choice(fmt)
    written = widget.export_box.export(layer, tmp_path / "auto")
    record = read_provenance(written[0])
    assert record is not None and record.operation == "auto" and record.model == SERVICE
    assert record.parameters["points_per_side"] == 4 and record.parameters["pred_iou_thresh"] == 0.0
    assert record.parameters["link_stack"] is True and record.tile_grid is None  # 64 px: not tiled
    assert record.prompts == {}
    assert set(record.not_replayable) == {int(i) for i in np.unique(layer.data) if i}


def test_the_record_carries_the_image_key_of_a_2d_image_and_the_source_path() -> None:
    from napari.layers import Image

    from plugin._qt.export_widget import layer_provenance
    from plugin.jobs.slice_prompts import SlicePrompts
    from protocol.wire.image_key import image_key

    pixels = (np.arange(48 * 64).reshape(48, 64) % 251).astype(np.uint16)
    image = Image(pixels, contrast_limits=(0, 250))
    labels = Labels(np.zeros((48, 64), np.uint16))
    labels.data[3:9, 4:10] = 5
    record = layer_provenance(labels, SlicePrompts(), "sam2.1_hiera_tiny", None, image)
    assert record.operation == "interactive" and record.not_replayable == (5,)
    key = image_key(pixels, (0.0, 250.0), "sam2.1_hiera_tiny")
    assert record.image_key == key and key.startswith("img-")
    other = layer_provenance(labels, SlicePrompts(), "another-model", None, image)
    assert other.image_key != key  # the key is the model's too
    stack = layer_provenance(
        Labels(np.zeros((2, 48, 64), np.uint16)), SlicePrompts(), "m", None, Image(np.stack([pixels] * 2))
    )
    assert stack.image_key is None  # one key per slice: none for the stack
