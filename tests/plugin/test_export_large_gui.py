"""The Export box on a pyramid result layer (issue 22), in a real viewer under Xvfb.

``PYRAMID_MIN_PIXELS`` is lowered to 512² so a 1,536² image gets a multiscale
result layer over a real :class:`plugin.labels.pyramid.LabelPyramid`. TIFF is
written tile by tile (a tiled BigTIFF read back equal to level 0, with names);
a format that reads the whole layer is refused above the memory budget with a
message naming the formats that work; running out of memory is a message too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import NotificationSeverity, notification_manager

import plugin._qt.export_widget
import plugin.export
import plugin.labels.pyramid
import plugin.view.layers
from plugin._qt.export_widget import ExportBox
from plugin._qt.name_widget import set_label_name
from plugin.export import read_labels
from plugin.labels.writes import write_values
from plugin.view.layers import POINTS_MASK, ensure_labels
from tests.support.marks import GUI_TEST_MARKS

pytestmark = GUI_TEST_MARKS


def errors_since(seen: int) -> list[str]:
    return [
        n.message for n in notification_manager.records[seen:] if n.severity == NotificationSeverity.ERROR
    ]


def test_export_box_writes_a_pyramid_layer_tile_by_tile_and_refuses_clearly_what_cannot_fit(
    make_napari_viewer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(plugin.labels.pyramid, "PYRAMID_MIN_PIXELS", 512 * 512)
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((1536, 1536), np.uint8), scale=(0.5, 0.5))
    layer = ensure_labels(viewer, image, POINTS_MASK)
    assert layer.multiscale
    rows, cols = np.mgrid[1500:1536, 700:760]
    write_values(layer, (rows.ravel(), cols.ravel()), 70_000)
    set_label_name(layer, 70_000, "edge cell")
    box = ExportBox(viewer, lambda: layer)

    recounts: list[object] = []  # the box counts the ids once; the TIFF's CSV takes those counts
    monkeypatch.setattr(plugin.export, "pixel_counts", lambda data: recounts.append(data) or {})
    box.set_choice("tiff")
    tif_path, _json, csv_path = box.export(layer, tmp_path / "slide.tif")
    assert recounts == [] and "70000,edge cell,2160" in csv_path.read_text()
    with tifffile.TiffFile(tif_path) as tif:
        assert tif.is_bigtiff and tif.pages.first.is_tiled
    saved = read_labels(tif_path)
    np.testing.assert_array_equal(np.asarray(saved.data), np.asarray(layer.data[0][:]))
    assert saved.names == {70_000: "edge cell"} and saved.scale == (0.5, 0.5)

    monkeypatch.setattr(plugin.view.layers, "memory_budget", lambda *_a, **_k: 1 << 20)
    box.set_choice("geojson")
    seen = len(notification_manager.records)
    assert box.export(layer, tmp_path / "slide.geojson") == []
    (refused,) = errors_since(seen)
    assert "take 9 MiB, more than the 1 MiB" in refused and "export them as TIFF or OME-Zarr" in refused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.names.csv", "slide.names.json", "slide.tif"]

    def out_of_memory(*_args, **_kwargs):  # what a format that reads the layer whole meets on a real slide
        raise MemoryError

    monkeypatch.setattr(plugin._qt.export_widget, "export_labels", out_of_memory)
    box.set_choice("measurements")
    seen = len(notification_manager.records)
    assert box.export(layer, tmp_path / "slide.csv") == []
    (message,) = errors_since(seen)
    assert "not enough memory" in message and "Nothing was written" in message
