"""The pixel size a TIFF carries (ImageJ, OME, resolution tags), as `sam2-batch` reads its inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from protocol.formats.tiff_geometry import tiff_geometry

STACK = np.zeros((3, 20, 30), np.uint16)


def geometry_of(path: Path):
    with tifffile.TiffFile(path) as tif:
        return tiff_geometry(tif)


def test_imagej_calibration_with_z_spacing_and_frame_interval(tmp_path: Path) -> None:
    path = tmp_path / "fiji.tif"
    metadata = {"axes": "ZYX", "unit": "\\u00B5m", "spacing": 2.0}  # Fiji writes µm escaped
    tifffile.imwrite(path, STACK, imagej=True, resolution=(1 / 0.5, 1 / 0.25), metadata=metadata)
    geometry = geometry_of(path)
    assert geometry.axes == "zyx" and geometry.scale == (2.0, 0.25, 0.5)
    assert geometry.units == ("micrometer",) * 3
    movie = tmp_path / "movie.tif"
    metadata = {"axes": "TYX", "unit": "nm", "finterval": 1.5}
    tifffile.imwrite(movie, STACK, imagej=True, resolution=(1 / 65, 1 / 65), metadata=metadata)
    geometry = geometry_of(movie)
    assert geometry.axes == "tyx" and geometry.units == ("second", "nanometer", "nanometer")
    np.testing.assert_allclose(geometry.scale, (1.5, 65, 65))


def test_ome_physical_sizes(tmp_path: Path) -> None:
    path = tmp_path / "a.ome.tif"
    sizes = {"PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "PhysicalSizeZ": 3.0}
    tifffile.imwrite(path, STACK, ome=True, metadata={"axes": "ZYX", **sizes, "PhysicalSizeZUnit": "nm"})
    geometry = geometry_of(path)
    assert geometry.scale == (3.0, 0.65, 0.65)
    assert geometry.units == ("nanometer", "micrometer", "micrometer")  # µm: OME's default unit


@pytest.mark.parametrize(
    ("resolution", "unit", "expected_um"),
    [
        ((25_000, 25_000), "CENTIMETER", 0.4),
        ((2_540, 2_540), "INCH", 10.0),
        ((1000, 1000), "MILLIMETER", 1.0),
    ],
)
def test_resolution_tags_in_length_units(tmp_path: Path, resolution, unit, expected_um) -> None:
    path = tmp_path / "scan.tif"
    tifffile.imwrite(path, np.zeros((20, 30, 3), np.uint8), photometric="rgb", resolution=resolution,
                     resolutionunit=unit)  # fmt: skip
    geometry = geometry_of(path)
    assert geometry.axes == "yx" and geometry.units == ("micrometer", "micrometer")
    np.testing.assert_allclose(geometry.scale, (expected_um, expected_um))


def test_no_pixel_size_means_pixel_units(tmp_path: Path) -> None:
    cases = {
        "plain.tif": {},
        "editor.tif": {"resolution": (72, 72), "resolutionunit": "INCH"},  # a placeholder, not a size
        "unitless.tif": {"resolution": (4, 4), "resolutionunit": "NONE"},
    }
    for name, kwargs in cases.items():
        tifffile.imwrite(tmp_path / name, STACK[0], **kwargs)
        geometry = geometry_of(tmp_path / name)
        assert geometry.scale == (1.0, 1.0) and geometry.units == (None, None), name
    tifffile.imwrite(tmp_path / "ij.tif", STACK, imagej=True, resolution=(2, 2), metadata={"axes": "ZYX"})
    assert geometry_of(tmp_path / "ij.tif").units == (None, None, None)  # ImageJ without a unit
