"""``sam2-batch --format tiff|ome-zarr|geojson``: the same segmentation in each format, resumable per format.

Runs the real ``python -m batch`` against a real broker and the deterministic
stand-in worker (bright discs are the right answer), so the test can check
what lands in each file, not only that a file exists.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import shapely
import tifffile

from batch.outputs import output_path, write_output
from bench.discs import disc_image, scattered_discs
from plugin.export import read_any
from protocol.formats import geojson, imagej, ngff
from protocol.formats.geometry import Geometry
from tests.support.processes import PYTHON, REPO_ROOT, ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

SHAPE = (200, 240)


@pytest.fixture
def standin(spawn: ProcessSpawner) -> Callable[..., StandinBackend]:
    return lambda workers=1: StandinBackend(spawn, workers)


def _inputs(folder: Path) -> dict[str, np.ndarray]:
    """A single image and a 2-slice stack of bright discs; returns their true labels."""
    folder.mkdir(parents=True)
    truths = {}
    centres, radii = scattered_discs(SHAPE, spacing=60, radius_range=(8.0, 12.0), seed=3)
    image, truths["discs"] = disc_image(SHAPE, centres, radii)
    tifffile.imwrite(folder / "discs.tif", image)
    planes = [disc_image(SHAPE, *scattered_discs(SHAPE, spacing=70, seed=s)) for s in (4, 5)]
    tifffile.imwrite(folder / "stack.tif", np.stack([p[0] for p in planes]))
    truths["stack"] = np.stack([p[1] for p in planes])
    return truths


def _run(folder: Path, out: Path, backend: StandinBackend, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [str(folder), "--out", str(out), "--broker", backend.frontend, "--model", SERVICE]
    args += ["--points-per-side", "4", "--no-progress", *extra]
    return subprocess.run(
        [PYTHON, "-m", "batch", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=240
    )


def test_output_names_per_format(tmp_path: Path) -> None:
    tiff = tmp_path / "a_labels.tif"
    assert output_path(tiff, "tiff") == tiff
    assert output_path(tiff, "ome-zarr").name == "a_labels.ome.zarr"
    assert output_path(tiff, "geojson").name == "a_labels.geojson"
    with pytest.raises(ValueError, match="unknown output format"):
        output_path(tiff, "png")
    with pytest.raises(ValueError, match="NGFF and ImageJ hold 2 to 5"):
        write_output(tmp_path / "x.ome.zarr", np.zeros((1, 1, 1, 1, 1, 2, 2), np.uint32), "ome-zarr")
    assert not any(tmp_path.iterdir())


def test_batch_writes_each_format_and_resumes_per_format(tmp_path: Path, standin) -> None:
    backend = standin()
    folder, out = tmp_path / "in", tmp_path / "out"
    truths = _inputs(folder)

    first = _run(folder, out, backend, "--format", "ome-zarr")
    assert first.returncode == 0, first.stderr
    zarr_labels = {}
    for name, truth in truths.items():
        (saved,) = ngff.read_ngff_labels(out / f"{name}_labels.ome.zarr")
        assert saved.data.shape == truth.shape and saved.axes == ("yx" if truth.ndim == 2 else "zyx")
        for index in np.ndindex(*truth.shape[:-2]):  # one label per disc on each slice
            assert len(np.unique(saved.data[index])) - 1 == len(np.unique(truth[index])) - 1
        zarr_labels[name] = saved.data
    assert not (out / "discs_labels.tif").exists()

    again = _run(folder, out, backend, "--format", "ome-zarr")  # everything is there: skipped
    assert again.returncode == 0 and again.stderr.count("skip file=") == 2, again.stderr

    polygons = _run(folder, out, backend, "--format", "geojson")  # another format: computed again
    assert polygons.returncode == 0 and "skip file=" not in polygons.stderr, polygons.stderr
    document = json.loads((out / "stack_labels.geojson").read_text())
    stack = zarr_labels["stack"]
    assert len(document["features"]) == sum(len(np.unique(plane)) - 1 for plane in stack)
    for feature in document["features"]:
        props = feature["properties"]
        area = shapely.geometry.shape(feature["geometry"]).area
        assert area == np.count_nonzero(stack[props["z"]] == props["label_id"])
    np.testing.assert_array_equal(geojson.read_geojson(out / "stack_labels.geojson").data, stack)

    plain = _run(folder, out, backend)  # the default stays tiff
    assert plain.returncode == 0, plain.stderr
    np.testing.assert_array_equal(tifffile.imread(out / "discs_labels.tif"), zarr_labels["discs"])
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_labels_keep_the_pixel_size_of_a_calibrated_input(tmp_path: Path, standin) -> None:
    """A Fiji stack (0.5 x 0.25 µm, z step 2 µm): each format says so; a plain TIFF stays in pixels."""
    backend = standin()
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    planes = [disc_image(SHAPE, *scattered_discs(SHAPE, spacing=70, seed=s)) for s in (4, 5)]
    stack = np.stack([p[0] for p in planes])
    calibration = {"axes": "ZYX", "unit": "um", "spacing": 2.0}
    tifffile.imwrite(folder / "fiji.tif", stack, imagej=True, resolution=(2.0, 4.0), metadata=calibration)
    tifffile.imwrite(folder / "plain.tif", stack)

    zarr_run = _run(folder, out, backend, "--format", "ome-zarr")
    assert zarr_run.returncode == 0, zarr_run.stderr
    assert "pixel size file=" in zarr_run.stderr and ": 0.5x0.25 micrometer" in zarr_run.stderr
    (saved,) = ngff.read_ngff_labels(out / "fiji_labels.ome.zarr")
    assert saved.scale == (2.0, 0.25, 0.5) and saved.units == ("micrometer",) * 3
    (plain,) = ngff.read_ngff_labels(out / "plain_labels.ome.zarr")
    assert plain.scale == (1.0, 1.0, 1.0) and plain.units == (None, None, None)

    physical = _run(folder, out, backend, "--format", "geojson", "--coordinates", "physical")
    assert physical.returncode == 0, physical.stderr
    document = json.loads((out / "fiji_labels.geojson").read_text())
    for feature in document["features"]:  # each polygon's area: its pixels x 0.5 x 0.25 µm²
        props = feature["properties"]
        area = shapely.geometry.shape(feature["geometry"]).area
        assert area == pytest.approx(np.count_nonzero(saved.data[props["z"]] == props["label_id"]) * 0.125)
    back = geojson.read_geojson(out / "fiji_labels.geojson")
    np.testing.assert_array_equal(back.data, saved.data)
    assert back.scale == (2.0, 0.25, 0.5) and back.units == ("micrometer",) * 3

    tiff_run = _run(folder, out, backend)
    assert tiff_run.returncode == 0, tiff_run.stderr
    with tifffile.TiffFile(out / "fiji_labels.tif") as tif:
        assert imagej.calibration(tif) == {
            "pixel_width": pytest.approx(0.5),
            "pixel_height": pytest.approx(0.25),
            "unit": "micron",
            "spacing": 2.0,
            "finterval": None,
        }
        np.testing.assert_array_equal(tif.asarray(), saved.data)
    with tifffile.TiffFile(out / "plain_labels.tif") as tif:
        assert tif.is_imagej and "unit" not in (tif.imagej_metadata or {})  # Fiji: pixels
        assert tif.pages.first.tags["ResolutionUnit"].value == tifffile.RESUNIT.NONE


def test_a_calibrated_stack_gives_a_fiji_ready_tiff(tmp_path: Path, standin) -> None:
    """0.5 µm pixels, 2 µm z steps in: an ImageJ 16-bit hyperstack that Fiji shows in µm, and napari too."""
    backend = standin()
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    planes = [disc_image(SHAPE, *scattered_discs(SHAPE, spacing=70, seed=s)) for s in (4, 5)]
    calibration = {"axes": "ZYX", "unit": "um", "spacing": 2.0}
    stack = np.stack([p[0] for p in planes])
    tifffile.imwrite(folder / "cells.tif", stack, imagej=True, resolution=(2.0, 2.0), metadata=calibration)

    run = _run(folder, out, backend)
    assert run.returncode == 0, run.stderr
    assert "uint32 TIFF" not in run.stderr, run.stderr
    with tifffile.TiffFile(out / "cells_labels.tif") as tif:
        meta = tif.imagej_metadata or {}
        assert tif.is_imagej and tif.series[0].axes == "ZYX"
        assert meta["unit"] == "micron" and meta["spacing"] == 2.0
        x_res = tif.pages.first.tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(2.0)  # pixels per µm
        labels = tif.asarray()
    assert labels.dtype == np.uint16 and labels.shape == stack.shape
    for z, (_, truth) in enumerate(planes):  # one label per disc on each slice
        assert len(np.unique(labels[z])) == len(np.unique(truth))

    (back,) = read_any(out / "cells_labels.tif")  # the plugin's reader: napari gets the scale
    np.testing.assert_array_equal(back.data, labels)
    assert back.scale == (2.0, 0.5, 0.5) and back.units == ("micrometer",) * 3 and back.axes == "zyx"


def test_ids_beyond_16_bits_stay_uint32_with_resolution_tags(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    geometry = Geometry.from_layer(2, (0.5, 0.5), None, ("um", "um"))
    labels = np.zeros((40, 50), np.uint32)
    labels[5:20, 10:30] = 70_000
    with caplog.at_level(logging.WARNING, logger="batch.outputs"):
        write_output(tmp_path / "many_labels.tif", labels, "tiff", geometry)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "uint32 TIFF" in line and "without ImageJ calibration" in line
    with tifffile.TiffFile(tmp_path / "many_labels.tif") as tif:
        assert not tif.is_imagej
        assert tif.pages.first.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        np.testing.assert_array_equal(tif.asarray(), labels)
    assert [p.name for p in tmp_path.iterdir()] == ["many_labels.tif"]


def test_labels_written_tile_by_tile_keep_the_pixel_size(tmp_path: Path) -> None:
    from batch.large import LabelSink
    from protocol.formats.geometry import Geometry

    geometry = Geometry.from_layer(3, (2.0, 0.25, 0.5), None, ("um", "um", "um"))
    labels = np.zeros((2, 40, 50), np.uint32)
    labels[1, 5:20, 10:30] = 7
    for fmt in ("tiff", "ome-zarr"):
        path = output_path(tmp_path / "big_labels.tif", fmt)
        sink = LabelSink(path, labels.shape, fmt, max_in_memory_bytes=1, geometry=geometry)
        assert sink.on_disk
        for z, plane in enumerate(labels):  # plane by plane, as the runner writes a store on disk
            sink.array[z] = plane
        sink.commit()
    with tifffile.TiffFile(tmp_path / "big_labels.tif") as tif:
        x_res = tif.pages.first.tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(1e4 / 0.5)
    (saved,) = ngff.read_ngff_labels(tmp_path / "big_labels.ome.zarr")
    np.testing.assert_array_equal(saved.data, labels)
    assert saved.scale == (2.0, 0.25, 0.5) and saved.units == ("micrometer",) * 3
