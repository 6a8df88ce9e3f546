"""Calibration kept on open (issue 23, item 3): a real viewer under Xvfb opens ImageJ and OME TIFFs
with the plugin's reader and keeps their pixel size, unit and z spacing; an image opened without it
gets one warning offering the file's calibration; an export in doubtful physical units warns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import NotificationSeverity, notification_manager

from plugin._qt.export_widget import ExportBox
from plugin._qt.widget import SamWidget
from plugin.io_hooks import get_reader
from tests.support.marks import GUI_TEST_MARKS
from tests.support.processes import free_endpoint

pytestmark = GUI_TEST_MARKS

PLUGIN = "napari-sam2-broker"


def units_of(layer) -> list[str]:
    return [str(u) for u in layer.units]


def imagej_tiff(path: Path, pixel_um: float = 0.5, shape=(40, 60), axes: str = "YX", **metadata) -> Path:
    data = np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape)
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / pixel_um, 1 / pixel_um),
        metadata={"unit": "um", "axes": axes, **metadata},
    )
    return path


def test_an_imagej_tiff_opens_with_its_pixel_size_and_unit(make_napari_viewer, tmp_path) -> None:
    path = imagej_tiff(tmp_path / "slide.tif")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert type(layer).__name__ == "Image" and layer.name == "slide"
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))
    assert units_of(layer) == ["micrometer", "micrometer"]
    np.testing.assert_array_equal(layer.data, tifffile.imread(path))


def test_an_imagej_stack_keeps_its_z_spacing_and_splits_channels(make_napari_viewer, tmp_path) -> None:
    viewer = make_napari_viewer()
    (stack,) = viewer.open(
        str(imagej_tiff(tmp_path / "z.tif", 0.25, (5, 30, 40), "ZYX", spacing=2.0)), plugin=PLUGIN
    )
    np.testing.assert_allclose(stack.scale, (2.0, 0.25, 0.25))
    assert units_of(stack) == ["micrometer"] * 3
    path = imagej_tiff(tmp_path / "zc.tif", 0.25, (4, 2, 30, 40), "ZCYX", spacing=1.5)
    channels = viewer.open(str(path), plugin=PLUGIN)
    assert len(channels) == 2
    for c, layer in enumerate(channels):
        np.testing.assert_allclose(layer.scale, (1.5, 0.25, 0.25))
        np.testing.assert_array_equal(layer.data, tifffile.imread(path)[:, c])


def test_an_ome_tiff_opens_with_its_physical_sizes(make_napari_viewer, tmp_path) -> None:
    path = tmp_path / "cells.ome.tif"
    data = np.random.default_rng(0).integers(0, 4000, (3, 32, 48), dtype=np.uint16)
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.325,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": 0.325,
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZ": 1.0,
            "PhysicalSizeZUnit": "µm",
        },
    )
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_allclose(layer.scale, (1.0, 0.325, 0.325))
    assert units_of(layer) == ["micrometer"] * 3
    np.testing.assert_array_equal(layer.data, data)


def test_a_tiff_without_a_pixel_size_is_left_to_napari(tmp_path) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((20, 20), np.uint8))
    assert get_reader(str(path)) is None


@pytest.fixture
def offline_widget(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setenv("SAM2_BROKER_ADDRESS", free_endpoint())
    monkeypatch.setenv("SAM2_EMBEDDED", "0")
    viewer = make_napari_viewer()
    widget = SamWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM2 Segmentation")
    return viewer, widget


def offers_since(seen: int) -> list:
    return [
        n
        for n in notification_manager.records[seen:]
        if n.severity == NotificationSeverity.WARNING and "shown in pixels" in n.message
    ]


def test_an_image_opened_in_pixels_gets_one_offer_to_apply_its_files_calibration(
    offline_widget, tmp_path, qtbot
) -> None:
    viewer, widget = offline_widget
    path = imagej_tiff(tmp_path / "slide.tif", 0.5, (5, 30, 40), "ZYX", spacing=2.0)
    seen = len(notification_manager.records)
    (layer,) = viewer.open(str(path), plugin="napari")  # napari's own reader drops the calibration
    assert tuple(layer.scale) == (1.0, 1.0, 1.0)
    qtbot.waitUntil(lambda: widget.controller.image is layer, timeout=5_000)
    (offer,) = offers_since(seen)
    assert "0.5 µm pixels, z spacing 2 µm" in offer.message
    other = viewer.add_image(np.zeros((10, 10)), name="other")  # another image, then back: no second offer
    widget.image_combo.set_layer(other)
    widget.image_combo.set_layer(layer)
    assert len(offers_since(seen)) == 1
    ((name, apply),) = offer.actions
    assert name == "Apply"
    apply(None)
    np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.5))
    assert units_of(layer) == ["micrometer"] * 3


def warnings_since(seen: int, text: str) -> list[str]:
    return [
        n.message
        for n in notification_manager.records[seen:]
        if n.severity == NotificationSeverity.WARNING and text in n.message
    ]


def test_an_export_in_doubtful_microns_warns(make_napari_viewer, tmp_path) -> None:
    viewer = make_napari_viewer()
    data = np.zeros((30, 40), np.uint16)
    data[5:10, 5:10] = 1
    labels = viewer.add_labels(data, name="cells", units="um")  # µm, but pixels of 1 µm
    box = ExportBox(viewer, lambda: labels)
    box.set_choice("measurements")
    seen = len(notification_manager.records)
    assert box.export(labels, tmp_path / "a")
    assert warnings_since(seen, "says its pixels are 1 µm")
    # labels in pixels over a calibrated image of their shape: the export is in pixels, and says so
    viewer.layers.remove(labels)
    viewer.add_image(np.zeros((30, 40)), name="slide", scale=(0.5, 0.5), units="um")
    plain = viewer.add_labels(data, name="plain")
    seen = len(notification_manager.records)
    assert box.export(plain, tmp_path / "b")
    assert warnings_since(seen, "the image slide has 0.5 x 0.5 micrometer pixels")
    calibrated = viewer.add_labels(data, name="fine", scale=(0.5, 0.5), units="um")
    seen = len(notification_manager.records)
    assert box.export(calibrated, tmp_path / "c")
    assert not warnings_since(seen, "Export of")
