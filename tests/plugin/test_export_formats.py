"""Export formats for the next tool: ImageJ/Fiji TIFF, OME-Zarr (NGFF), GeoJSON, measurements CSV.

Each file is read back the way the next tool reads it (tifffile for Fiji's
calibration, ome-zarr-models for the NGFF schema, napari-ome-zarr, shapely
for GeoJSON) and by this plugin's reader, with names and scale.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
import tifffile

from plugin import export, io_hooks
from plugin.labels.names import METADATA_KEY
from protocol.formats import geojson, imagej, measure, ngff
from protocol.formats.geometry import Geometry
from protocol.runtime import atomic
from tests.support.processes import PYTHON, REPO_ROOT, wait_until

NAMES = {3: "cell nucleus", 9: "mitochondrion"}
MICRONS: dict[str, Any] = {"scale": (2.0, 0.25, 0.5), "units": ("um", "um", "um")}
"""The (z, y, x) pixel size in µm that the calibrated exports are given."""


def stack() -> np.ndarray:
    """(z, rows, cols) labels: 3 has a hole on slice 1, 9 is split in two parts on slice 2."""
    data = np.zeros((3, 40, 50), np.uint16)
    data[1, 5:25, 5:30] = 3
    data[1, 10:15, 10:15] = 0  # a hole
    data[2, 2:6, 2:6] = 3
    data[2, 30:35, 5:12] = 9
    data[2, 30:38, 30:40] = 9  # a second part
    return data


def micron_geometry(ndim: int = 3) -> Geometry:
    return Geometry.from_layer(ndim, (2.0, 0.25, 0.5)[-ndim:], (10.0, 5.0, 3.0)[-ndim:], ("um",) * ndim)


# -- ImageJ / Fiji TIFF ----------------------------------------------------------------------


def test_tiff_carries_fiji_calibration_and_names(tmp_path: Path) -> None:
    data = stack()
    written = export.write_labels(
        tmp_path / "cells", data, NAMES, (2.0, 0.25, 0.5), (10.0, 5.0, 3.0), ("um", "um", "um")
    )
    with tifffile.TiffFile(written[0]) as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX"
        calibration = imagej.calibration(tif)
        info = tif.imagej_metadata["Info"]
        properties = tif.imagej_metadata["Properties"]
    # what Fiji's Image > Properties shows: µm (ImageJ spells it "micron"), 0.5 x 0.25 µm pixels, 2 µm z step
    assert calibration["unit"] == "micron"
    assert calibration["pixel_width"] == pytest.approx(0.5) and calibration["pixel_height"] == pytest.approx(
        0.25
    )
    assert calibration["spacing"] == pytest.approx(2.0)
    assert "label 3: cell nucleus" in info and "label 9: mitochondrion" in info
    assert properties["label.3"] == "cell nucleus"
    written[1].unlink()  # without the names JSON the TIFF alone restores everything
    back = export.read_labels(written[0])
    np.testing.assert_array_equal(back.data, data)
    assert back.names == NAMES
    assert back.scale == (2.0, 0.25, 0.5) and back.translate == (10.0, 5.0, 3.0)
    assert back.units == ("micrometer",) * 3 and back.axes == "zyx"


def test_tiff_time_series_has_frame_interval(tmp_path: Path) -> None:
    data = np.zeros((4, 8, 8), np.uint8)
    data[:, 2:4, 2:4] = 1
    written = export.write_labels(
        tmp_path / "movie.tif", data, {1: "cell"}, (1.5, 1, 1), None, ("s", "um", "um")
    )
    with tifffile.TiffFile(written[0]) as tif:
        assert tif.series[0].axes == "TYX"
        assert imagej.calibration(tif)["finterval"] == pytest.approx(1.5)
        assert tif.imagej_metadata["tunit"] == "sec"
    assert export.read_labels(written[0]).axes == "tyx"


def test_tiff_large_ids_stay_exact(tmp_path: Path) -> None:
    data = np.zeros((6, 7), np.uint32)
    data[1, 1], data[2, 2] = 70_000, (1 << 24)  # float32 in ImageJ, still exact
    path = export.write_labels(tmp_path / "big.tif", data, {70_000: "far"})[0]
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.pages.first.dtype == np.float32
    np.testing.assert_array_equal(export.read_labels(path).data, data)
    data[3, 3] = (1 << 24) + 1  # beyond float32: a plain TIFF, not ImageJ, but nothing lost
    path = export.write_labels(tmp_path / "huge.tif", data, {70_000: "far"})[0]
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_imagej
    back = export.read_labels(path)
    np.testing.assert_array_equal(back.data, data)
    assert back.names == {70_000: "far"}


def test_tiff_saved_again_by_fiji_keeps_names_from_the_json(tmp_path: Path) -> None:
    data = stack()
    tif, names_json, _ = export.write_labels(tmp_path / "cells.tif", data, NAMES, (2.0, 0.25, 0.5))
    # Fiji's File > Save As > Tiff of a 32-bit label image: ImageJ metadata of its own, none of ours
    tifffile.imwrite(tif, data.astype(np.float32), imagej=True, metadata={"axes": "ZYX"})
    assert export.is_labels_file(tif)  # the names JSON beside it says so
    back = export.read_labels(tif)
    np.testing.assert_array_equal(back.data, data)
    assert back.data.dtype.kind == "u" and back.names == NAMES and back.scale == (2.0, 0.25, 0.5)


# -- OME-Zarr (NGFF) -------------------------------------------------------------------------


def test_ome_zarr_is_valid_ngff_with_names_units_and_scale(tmp_path: Path) -> None:
    import zarr
    from ome_zarr_models.v04 import ImageLabel, Labels

    data = np.zeros((2, 600, 520), np.uint32)
    data[1, 100:300, 50:250] = 3
    data[0, 0:10, 0:10] = 9
    store = export.export_labels(
        "ome-zarr",
        tmp_path / "cells",
        data,
        NAMES,
        translate=(10.0, 5.0, 3.0),
        **MICRONS,
        title="nuclei",
    )[0]
    assert store.name == "cells.ome.zarr"
    root = zarr.open_group(str(store), mode="r")
    Labels.from_zarr(root["labels"])  # raises unless the metadata follows the NGFF 0.4 schema
    label_image = ImageLabel.from_zarr(root["labels/nuclei"])
    attrs = label_image.attributes.model_dump(by_alias=True, exclude_none=True)
    multiscale = attrs["multiscales"][0]
    assert [(a["name"], a.get("unit")) for a in multiscale["axes"]] == [
        ("z", "micrometer"),
        ("y", "micrometer"),
        ("x", "micrometer"),
    ]
    assert len(multiscale["datasets"]) == 2  # full resolution, then y/x halved (>= 256 px)
    first = multiscale["datasets"][0]["coordinateTransformations"]
    assert first[0] == {"type": "scale", "scale": [2.0, 0.25, 0.5]}
    assert first[1] == {"type": "translation", "translation": [10.0, 5.0, 3.0]}
    properties = attrs["image-label"]["properties"]
    assert [(p["label-value"], p["name"]) for p in properties] == [(3, "cell nucleus"), (9, "mitochondrion")]
    (back,) = ngff.read_ngff_labels(store)
    np.testing.assert_array_equal(back.data, data)
    assert back.names == NAMES and back.title == "nuclei"
    assert back.scale == (2.0, 0.25, 0.5) and back.translate == (10.0, 5.0, 3.0)
    assert back.units == ("micrometer",) * 3


def test_ome_zarr_without_known_units_says_none(tmp_path: Path) -> None:
    data = np.zeros((32, 40), np.uint8)
    data[3:9, 4:20] = 1
    store = ngff.write_ngff_labels(tmp_path / "plain.zarr", data, {}, Geometry.plain(2))
    attrs = json.loads((store / "labels" / "labels" / ".zattrs").read_text())
    assert all("unit" not in axis for axis in attrs["multiscales"][0]["axes"])
    assert attrs["image-label"]["properties"] == []
    (back,) = ngff.read_ngff_labels(store)
    assert back.units == (None, None)
    np.testing.assert_array_equal(back.data, data)


def test_napari_ome_zarr_reads_our_labels_with_names(tmp_path: Path) -> None:
    reader_module = pytest.importorskip("napari_ome_zarr._reader")
    data = stack()
    store = ngff.write_ngff_labels(tmp_path / "cells.ome.zarr", data, NAMES, micron_geometry(), name="nuclei")
    reader = reader_module.napari_get_reader(str(store / "labels"))
    assert reader is not None
    (layer,) = reader(str(store / "labels"))
    pyramid, meta, layer_type = layer
    assert layer_type == "labels"
    np.testing.assert_array_equal(np.asarray(pyramid[0]), data)
    assert dict(zip(meta["properties"]["index"], meta["properties"]["name"], strict=True)) == NAMES
    np.testing.assert_allclose(meta["scale"], [2.0, 0.25, 0.5])
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_zarr_directory_swap_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "cells.ome.zarr"
    first = np.zeros((8, 8), np.uint8)
    first[1:3, 1:3] = 1
    ngff.write_ngff_labels(target, first, {1: "first"}, Geometry.plain(2))
    with pytest.raises(RuntimeError), atomic.atomic_dir(target) as tmp:
        (tmp / "half-written").write_text("x")
        raise RuntimeError("the writer fails midway")
    (back,) = ngff.read_ngff_labels(target)  # the previous store is untouched
    assert back.names == {1: "first"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.ome.zarr"]
    second = first * 2
    ngff.write_ngff_labels(target, second, {2: "second"}, Geometry.plain(2))
    (back,) = ngff.read_ngff_labels(target)
    assert back.names == {2: "second"}
    np.testing.assert_array_equal(back.data, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.ome.zarr"]


ZARR_WRITER = """
import sys
import numpy as np
from protocol.formats.geometry import Geometry
from protocol.formats.ngff import write_ngff_labels
base = np.random.default_rng(0).integers(1, 200, (700, 700)).astype(np.uint16)
version = 0
while True:
    write_ngff_labels(sys.argv[1], base + version, {1: f"version {version}"}, Geometry.plain(2))
    print(version, flush=True)
    version += 1
"""


def test_zarr_writer_killed_mid_write_leaves_a_whole_store(tmp_path: Path) -> None:
    target = tmp_path / "cells.ome.zarr"
    base = np.random.default_rng(0).integers(1, 200, (700, 700)).astype(np.uint16)
    for delay_s in (0.05, 0.3):
        log = tmp_path / "writer.log"
        with open(log, "wb") as out:
            writer = subprocess.Popen([PYTHON, "-c", ZARR_WRITER, str(target)], cwd=REPO_ROOT, stdout=out)
        try:
            assert wait_until(lambda log=log: log.read_text().strip() != "", 120), (
                "writer never finished a store"
            )
            wait_until(lambda: False, delay_s)  # somewhere inside a later write
        finally:
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait(10)
        (back,) = ngff.read_ngff_labels(target)
        offset = back.data.astype(np.int64) - base
        version = int(offset.flat[0])
        assert (offset == version).all(), "the store mixes two versions"
        assert back.names == {1: f"version {version}"}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert all(name.endswith(".tmp") for name in leftovers), leftovers


# -- GeoJSON ---------------------------------------------------------------------------------


def test_geojson_polygons_match_pixel_counts_with_holes_and_parts(tmp_path: Path) -> None:
    data = stack()
    path = export.export_labels("geojson", tmp_path / "cells", data, NAMES, **MICRONS)[0]
    assert path.name == "cells.geojson"
    document = json.loads(path.read_text())
    assert document["type"] == "FeatureCollection"
    seen = {}
    for feature in document["features"]:
        props = feature["properties"]
        shape = shapely.geometry.shape(feature["geometry"])
        assert shape.is_valid
        z, label_id = props["z"], props["label_id"]
        assert shape.area == np.count_nonzero(data[z] == label_id)  # pixel-edge polygons: exact
        assert props["objectType"] == "annotation"
        assert props["name"] == NAMES[label_id] and props["classification"]["name"] == NAMES[label_id]
        assert feature["geometry"]["plane"] == {"c": -1, "z": z, "t": 0}
        seen[(z, label_id)] = shape
    assert sorted(seen) == [(1, 3), (2, 3), (2, 9)]
    assert len(seen[(1, 3)].interiors) == 1  # the hole is kept
    assert seen[(2, 9)].geom_type == "MultiPolygon" and len(seen[(2, 9)].geoms) == 2
    assert seen[(1, 3)].bounds == (5.0, 5.0, 30.0, 25.0)  # (x, y) = (col, row) pixel edges
    back = geojson.read_geojson(path)
    np.testing.assert_array_equal(back.data, data)
    assert back.names == NAMES and back.scale == (2.0, 0.25, 0.5)


def test_geojson_in_physical_coordinates(tmp_path: Path) -> None:
    data = stack()[1]
    geometry = micron_geometry(2)  # 0.25 um rows, 0.5 um columns, corner at (x, y) = (3, 5) um
    path = geojson.write_geojson(tmp_path / "um.geojson", data, NAMES, geometry, coordinates="physical")
    (feature,) = json.loads(path.read_text())["features"]
    shape = shapely.geometry.shape(feature["geometry"])
    assert shape.area == pytest.approx(np.count_nonzero(data == 3) * 0.25 * 0.5)
    assert shape.bounds == pytest.approx((3 + 5 * 0.5, 5 + 5 * 0.25, 3 + 30 * 0.5, 5 + 25 * 0.25))
    back = geojson.read_geojson(path)
    np.testing.assert_array_equal(back.data, data)
    assert back.translate == (5.0, 3.0)


def test_geojson_from_qupath_opens_as_labels_with_class_names(tmp_path: Path) -> None:
    qupath = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "b8a3c3b0",
                "geometry": {"type": "Polygon", "coordinates": [[[2, 1], [6, 1], [6, 4], [2, 4], [2, 1]]]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tumor", "color": [200, 0, 0]},
                },
            },
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[10, 10], [12, 10], [12, 12], [10, 12], [10, 10]]],
                },
                "properties": {"objectType": "annotation"},
            },
        ],
    }
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(qupath))
    assert io_hooks.get_reader(str(path)) is io_hooks.read_layers
    ((data, kwargs, kind),) = io_hooks.read_layers(str(path))
    assert kind == "labels" and data.shape == (12, 12)
    assert np.count_nonzero(data == 1) == 12 and np.count_nonzero(data == 2) == 4
    assert kwargs["metadata"][METADATA_KEY] == {1: "Tumor"}
    path.write_text(json.dumps(qupath["features"]))  # exported without "Export as FeatureCollection"
    ((again, _, _),) = io_hooks.read_layers(str(path))
    np.testing.assert_array_equal(again, data)


# -- measurements ----------------------------------------------------------------------------


def test_measurements_per_label_and_slice_in_microns(tmp_path: Path) -> None:
    data = stack()
    image = np.random.default_rng(2).random(data.shape)
    path = export.export_labels(
        "measurements",
        tmp_path / "cells",
        data,
        NAMES,
        image=image,
        **MICRONS,
    )[0]
    assert path.name == "cells.measurements.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    by_key = {(r["slice"], int(r["id"])): r for r in rows}
    assert sorted(by_key) == [("1", 3), ("2", 3), ("2", 9), ("all", 3), ("all", 9)]
    row = by_key[("1", 3)]
    mask = data[1] == 3
    assert row["name"] == "cell nucleus" and int(row["pixel_count"]) == mask.sum() == 475
    assert float(row["area"]) == pytest.approx(475 * 0.25 * 0.5) and row["unit"] == "micrometer"
    rr, cc = np.nonzero(mask)
    assert float(row["centroid_row"]) == pytest.approx(rr.mean()) and float(
        row["centroid_col"]
    ) == pytest.approx(cc.mean())
    assert float(row["centroid_x"]) == pytest.approx((cc.mean() + 0.5) * 0.5)
    assert (row["bbox_min_row"], row["bbox_min_col"], row["bbox_max_row"], row["bbox_max_col"]) == (
        "5",
        "5",
        "25",
        "30",
    )
    assert float(row["mean_intensity"]) == pytest.approx(image[1][mask].mean())
    volume = by_key[("all", 3)]
    assert int(volume["pixel_count"]) == np.count_nonzero(data == 3)
    assert float(volume["volume"]) == pytest.approx(np.count_nonzero(data == 3) * 2.0 * 0.25 * 0.5)
    assert volume["area"] == "" and (volume["bbox_min_z"], volume["bbox_max_z"]) == ("1", "3")


def test_measurements_reject_an_image_of_another_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not match"):
        measure.write_measurements(tmp_path / "m.csv", stack(), NAMES, micron_geometry(), np.zeros((3, 5, 5)))
    assert not (tmp_path / "m.csv").exists()


def test_rgb_image_gives_a_mean_per_channel() -> None:
    data = stack()[1]
    rgb = np.zeros((*data.shape, 3), np.uint8)
    rgb[..., 1] = 100
    (row,) = measure.measure(data, NAMES, Geometry.plain(2), rgb)
    assert (row["mean_intensity_0"], row["mean_intensity_1"], row["mean_intensity_2"]) == (0.0, 100.0, 0.0)
    assert "slice" not in row and row["unit"] == "pixel"
    assert row["mean_intensity"] == pytest.approx(100.0 / 3)  # the mean of the channels


# -- the npe2 reader --------------------------------------------------------------------------


def test_reader_opens_every_format_with_names_and_scale(tmp_path: Path) -> None:
    data = stack()
    facts = {"scale": (2.0, 0.25, 0.5), "translate": (10.0, 5.0, 3.0), "units": ("um",) * 3}
    meta = {"name": "nuclei", "metadata": {METADATA_KEY: NAMES}, **facts}
    paths = [
        io_hooks.write_labels_layer(str(tmp_path / "a.tif"), data, meta)[0],
        io_hooks.write_ngff_layer(str(tmp_path / "b.ome.zarr"), data, meta)[0],
        io_hooks.write_geojson_layer(str(tmp_path / "c.geojson"), data, meta)[0],
    ]
    for path in paths:
        assert io_hooks.get_reader(path) is io_hooks.read_layers, path
        ((back, kwargs, kind),) = io_hooks.read_layers(path)
        assert kind == "labels"
        np.testing.assert_array_equal(back, data)
        assert kwargs["metadata"][METADATA_KEY] == NAMES
        assert list(kwargs["features"]["name"]) == ["cell nucleus", "mitochondrion"]
        assert tuple(kwargs["scale"]) == facts["scale"], path
        assert kwargs["units"] == ("micrometer",) * 3
    assert io_hooks.get_reader(str(tmp_path)) is None  # a plain folder is not ours
    (tmp_path / "other.geojson.txt").write_text("{}")
    assert io_hooks.get_reader(str(tmp_path / "other.geojson.txt")) is None
