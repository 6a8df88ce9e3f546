"""Every export format from the Labels tab's Export box and from ``File > Save Selected Layers``.

A real viewer (Xvfb): the Export box writes TIFF, OME-Zarr, GeoJSON (pixel
and physical coordinates) and the measurements CSV of a named labels stack
in microns; napari's save goes through the npe2 writers by extension; each
file reopens through the plugin's reader as a labels layer with its names,
scale and units.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from plugin._qt.export_widget import ExportBox
from plugin._qt.name_widget import set_label_name
from plugin.labels.names import METADATA_KEY
from tests.support.marks import GUI_TEST_MARKS

pytestmark = GUI_TEST_MARKS

PLUGIN = "napari-sam2-broker"
SCALE = (2.0, 0.25, 0.5)


@pytest.fixture
def scene(make_napari_viewer):
    viewer = make_napari_viewer()
    data = np.zeros((3, 40, 50), np.uint16)
    data[1, 5:25, 5:30] = 4
    data[1, 10:15, 10:15] = 0
    data[2, 30:38, 30:40] = 9
    image = np.random.default_rng(0).random(data.shape).astype(np.float32)
    viewer.add_image(image, name="cells", scale=SCALE, units="um")
    labels = viewer.add_labels(data, name="nuclei", scale=SCALE, units="um")
    set_label_name(labels, 4, "cell nucleus")
    set_label_name(labels, 9, "mitochondrion")
    return viewer, labels, data


def assert_reopens(viewer, path: Path, data: np.ndarray) -> None:
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert type(layer).__name__ == "Labels"
    np.testing.assert_array_equal(np.asarray(layer.data), data)
    assert layer.metadata[METADATA_KEY] == {4: "cell nucleus", 9: "mitochondrion"}
    np.testing.assert_allclose(layer.scale, SCALE)
    assert [str(u) for u in layer.units] == ["micrometer"] * 3
    viewer.layers.remove(layer)


def test_export_box_writes_each_format_and_napari_reopens_it(scene, tmp_path: Path) -> None:
    viewer, labels, data = scene
    box = ExportBox(viewer, lambda: labels)
    keys = ["tiff", "ome-zarr", "geojson", "geojson-physical", "measurements"]
    tracks = ["ctc", "geff"]  # time-lapse formats: tests/plugin/test_tracks_gui.py
    assert [box.format_combo.itemData(i) for i in range(box.format_combo.count())] == keys + tracks
    written = {}
    for key in keys:
        box.set_choice(key)
        written[key] = box.export(labels, tmp_path / key / "nuclei")
    assert [p.name for p in written["tiff"]] == ["nuclei.tif", "nuclei.names.json", "nuclei.names.csv"]
    assert [p.name for p in written["ome-zarr"]] == ["nuclei.ome.zarr"]
    assert [p.name for p in written["geojson"]] == ["nuclei.geojson"]
    assert [p.name for p in written["geojson-physical"]] == ["nuclei.geojson"]
    assert [p.name for p in written["measurements"]] == ["nuclei.measurements.csv"]
    for key in ("tiff", "ome-zarr", "geojson", "geojson-physical"):
        assert_reopens(viewer, written[key][0], data)
    # physical coordinates: the label's outer box (rows 5..25, cols 5..30) in microns
    pixel, physical = (json.loads(written[k][0].read_text()) for k in ("geojson", "geojson-physical"))
    assert pixel["features"][0]["properties"]["name"] == "cell nucleus"
    assert shapely.geometry.shape(pixel["features"][0]["geometry"]).bounds == (5, 5, 30, 25)
    bounds = shapely.geometry.shape(physical["features"][0]["geometry"]).bounds
    np.testing.assert_allclose(bounds, (5 * 0.5, 5 * 0.25, 30 * 0.5, 25 * 0.25))
    with open(written["measurements"][0], newline="") as f:
        rows = {(r["slice"], r["id"]): r for r in csv.DictReader(f)}
    image = viewer.layers["cells"].data
    assert float(rows[("1", "4")]["mean_intensity"]) == pytest.approx(image[1][data[1] == 4].mean(), rel=1e-5)
    assert float(rows[("all", "9")]["volume"]) == pytest.approx(80 * 2.0 * 0.25 * 0.5)
    assert rows[("1", "4")]["name"] == "cell nucleus"
    # a bad target is reported, not raised, and leaves nothing behind
    (tmp_path / "taken.ome.zarr").write_text("a file, not a store")
    box.set_choice("ome-zarr")
    assert box.export(labels, tmp_path / "taken.ome.zarr") == []


def test_save_selected_layers_picks_the_writer_by_extension(scene, tmp_path: Path) -> None:
    viewer, labels, data = scene
    viewer.layers.selection = {labels}
    for name in ("via.tif", "via.ome.zarr", "via.geojson"):
        saved = viewer.layers.save(str(tmp_path / name), selected=True, plugin=PLUGIN)
        assert Path(saved[0]).name == name
        assert_reopens(viewer, tmp_path / name, data)
        viewer.layers.selection = {labels}
    # measurements: with the image selected too, the CSV has its mean intensity
    viewer.layers.selection = {labels, viewer.layers["cells"]}
    (saved,) = viewer.layers.save(str(tmp_path / "via.csv"), selected=True, plugin=PLUGIN)
    header = Path(saved).read_text().splitlines()[0].split(",")
    assert header[:5] == ["id", "name", "slice", "pixel_count", "area"] and header[-1] == "mean_intensity"
    viewer.layers.selection = {labels}
    (saved,) = viewer.layers.save(str(tmp_path / "alone.csv"), selected=True, plugin=PLUGIN)
    with open(saved, newline="") as f:
        alone = list(csv.DictReader(f))
    assert alone and all(row["mean_intensity"] == "" for row in alone)  # same columns, no image: empty


def test_file_menu_save_selected_layers_offers_and_writes_each_format(scene, tmp_path, monkeypatch) -> None:
    """The real ``File > Save Selected Layers...`` action: our writers are in its list and write the file."""
    from napari._qt import qt_viewer

    viewer, labels, data = scene
    offered: list[list[str]] = []
    answer: dict[str, str] = {}

    def dialog(*_args, filter: str = "", **_kwargs):  # the user picks our entry and types a name
        entries = filter.split(";;")
        offered.append(entries)
        chosen = next(e for e in entries if e.startswith(f"SAM2 Segmentation {answer['writer']} ("))
        return answer["path"], chosen

    monkeypatch.setattr(qt_viewer.QFileDialog, "getSaveFileName", staticmethod(dialog))
    action = viewer.window.file_menu.findAction("napari.window.file.save_layers_dialog.selected")
    writers = {
        "via.tif": "labels with names (Fiji TIFF)",
        "via.ome.zarr": "labels with names (OME-Zarr)",
        "via.geojson": "labels as polygons (GeoJSON, QuPath)",
    }
    for name, writer in writers.items():
        viewer.layers.selection = {labels}
        answer.update(path=str(tmp_path / name), writer=writer)
        action.trigger()
        assert_reopens(viewer, tmp_path / name, data)
    viewer.layers.selection = {labels, viewer.layers["cells"]}
    answer.update(path=str(tmp_path / "via.csv"), writer="label measurements (CSV)")
    action.trigger()
    header = (tmp_path / "via.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["id", "name"] and header[-1] == "mean_intensity"
    assert len(offered) == 4


def test_labels_and_names_made_on_a_calibrated_image_share_its_units(make_napari_viewer, tmp_path) -> None:
    """Labels made for an image in µm and their names layer are in µm; so is their export."""
    from plugin._qt.name_widget import NameWidget
    from plugin.view.layers import ensure_labels

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((30, 40), np.float32), name="cells", scale=(0.5, 0.5), units="um")
    labels = ensure_labels(viewer, image, "nuclei")
    labels.data[5:10, 5:10] = 3
    set_label_name(labels, 3, "cell nucleus")
    NameWidget(viewer).attach(labels)
    assert [str(u) for u in labels.units] == ["micrometer"] * 2
    assert [str(u) for u in viewer.layers["nuclei names"].units] == ["micrometer"] * 2
    box = ExportBox(viewer, lambda: labels)
    box.set_choice("ome-zarr")
    (path,) = box.export(labels, tmp_path / "nuclei")
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert [str(u) for u in layer.units] == ["micrometer"] * 2 and tuple(layer.scale) == (0.5, 0.5)
