"""Export of a very large labels layer chunk by chunk (issue 22), without a viewer.

The thresholds are lowered (``PYRAMID_MIN_PIXELS`` to 512², the memory budget
to 8 MiB) so a 2,048² :class:`plugin.labels.pyramid.LabelPyramid` (16 MiB of
uint32) is a "very large" layer; the pyramid, the writers, the reader and the
files are the real ones. The labels are rectangles at known places with
known ids (one above 65,535), so every file is compared with level 0.
"""

from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

import plugin.labels.pyramid
import plugin.view.layers
from plugin.export import export_labels, read_any, read_labels
from plugin.io_hooks import write_labels_layer
from plugin.labels.pyramid import LabelPyramid
from plugin.labels.stats import pixel_counts
from protocol.formats.tiled_tiff import TIFF_TILE

SHAPE = (2048, 2048)
BUDGET = 8 << 20
RECTS = {  # label id: (row, col, rows, cols), the last one at the far corner
    3: (10, 20, 40, 70),
    9: (1000, 1010, 100, 30),
    70_000: (2040, 2040, 8, 8),
}
NAMES = {3: "nucleus", 70_000: "corner cell"}


@pytest.fixture(autouse=True)
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin.labels.pyramid, "PYRAMID_MIN_PIXELS", 512 * 512)
    monkeypatch.setattr(plugin.view.layers, "memory_budget", lambda *_args, **_kw: BUDGET)


def rect_pyramid(shape: tuple[int, int]) -> LabelPyramid:
    """An in-memory pyramid of ``shape`` holding :data:`RECTS` (clipped to it)."""
    pyramid = LabelPyramid.create(shape)
    for label_id, (r, c, h, w) in RECTS.items():
        block = np.full((min(h, shape[0] - r), min(w, shape[1] - c)), label_id, np.uint32)
        pyramid.write_block((r, c), block)
    return pyramid


@pytest.fixture(scope="module")
def pyramid() -> LabelPyramid:
    return rect_pyramid(SHAPE)


class ReadRecorder:
    """A chunked array-like (not numpy) over ``source`` that records the pixels of every read."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.shape, self.dtype, self.ndim = source.shape, source.dtype, len(source.shape)
        self.reads: list[int] = []

    def __getitem__(self, key: Any) -> np.ndarray:
        block = np.asarray(self.source[key])
        self.reads.append(block.size)
        return block


def test_save_as_tiff_of_a_pyramid_layer_is_a_tiled_bigtiff_reopened_lazily_with_names(
    pyramid: LabelPyramid, tmp_path: Path
) -> None:
    """File > Save Selected Layers (.tif) of a multiscale layer: written tile by tile from level 0."""
    meta = {
        "multiscale": True,
        "metadata": {"label_names": NAMES},
        "scale": (0.5, 0.25),
        "translate": (10.0, 0.0),
        "units": ("micrometer", "micrometer"),
    }
    written = [Path(p) for p in write_labels_layer(str(tmp_path / "slide.tif"), pyramid.levels, meta)]
    tif_path, json_path, csv_path = written
    with tifffile.TiffFile(tif_path) as tif:
        page = tif.pages.first
        assert tif.is_bigtiff and page.is_tiled and page.dtype == np.uint32
        assert (page.tilelength, page.tilewidth) == (TIFF_TILE, TIFF_TILE) and page.compression == 8  # zlib
        x_per_cm = page.tags["XResolution"].value
        assert x_per_cm[0] / x_per_cm[1] == pytest.approx(1e4 / 0.25)  # 0.25 µm pixels, as pixels per cm

    saved = read_labels(tif_path)  # 16 MiB > the 8 MiB budget: a zarr array over the tiles
    assert not isinstance(saved.data, np.ndarray) and saved.data.shape == SHAPE
    np.testing.assert_array_equal(saved.data[:], pyramid.levels[0][:])
    assert saved.names == NAMES and saved.scale == (0.5, 0.25) and saved.translate == (10.0, 0.0)

    with csv_path.open() as f:
        rows = {int(r["id"]): (r["name"], int(r["pixel_count"])) for r in csv.DictReader(f)}
    expected = {
        i: (NAMES.get(i, ""), min(h, SHAPE[0] - r) * min(w, SHAPE[1] - c))
        for i, (r, c, h, w) in RECTS.items()
    }
    assert rows == expected
    assert json.loads(json_path.read_text())["label_names"] == {str(k): v for k, v in NAMES.items()}
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_ome_zarr_export_reads_the_layer_chunk_by_chunk_and_reads_back_equal(
    pyramid: LabelPyramid, tmp_path: Path
) -> None:
    level0 = ReadRecorder(pyramid.levels[0])
    (store,) = export_labels("ome-zarr", tmp_path / "slide", level0, NAMES, title="slide")
    assert level0.reads and max(level0.reads) <= 1024 * 1024  # never the whole layer (4 M pixels)
    (saved,) = read_any(store)
    np.testing.assert_array_equal(np.asarray(saved.data), pyramid.levels[0][:])
    assert saved.names == NAMES


def test_counts_read_blocks_not_slices() -> None:
    data = np.zeros((3, 1500, 2500), np.uint16)
    data[1, 1400:, 2400:] = 7
    data[2, :3, :5] = 2
    recorder = ReadRecorder(data)
    assert pixel_counts(recorder) == {7: 100 * 100, 2: 15}
    assert max(recorder.reads) <= 1024 * 1024


def test_tiff_export_of_a_4096_square_layer_allocates_far_less_than_the_layer(tmp_path: Path) -> None:
    """64 MiB of uint32 labels: counting and writing hold a band (4 MiB), the two 1,024² chunks it
    crosses (4 MiB each) and the tiles being deflated (tracemalloc sees numpy's allocations), not
    the layer."""
    level0 = rect_pyramid((4096, 4096)).levels[0]
    tracemalloc.start()
    try:
        written = export_labels("tiff", tmp_path / "big.tif", level0, NAMES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"export peaked at {peak / 2**20:.1f} MiB"
    with tifffile.TiffFile(written[0]) as tif:
        assert tif.is_bigtiff and tif.pages.first.is_tiled
        assert int(tif.pages.first.asarray()[2040, 2040]) == 70_000


@pytest.mark.parametrize("fmt", ["geojson", "measurements", "ctc", "geff"])
def test_formats_that_read_the_whole_layer_refuse_one_above_the_budget_before_any_work(
    fmt: str, tmp_path: Path
) -> None:
    stack = ReadRecorder(np.zeros((2, 1500, 1500), np.uint32))  # 18 MiB > 8 MiB
    with pytest.raises(
        ValueError, match=r"take 17 MiB, more than the 8 MiB .* export them as TIFF or OME-Zarr"
    ):
        export_labels(fmt, tmp_path / "out", stack, {})
    assert stack.reads == [] and list(tmp_path.iterdir()) == []


def test_a_sam2_batch_tiled_bigtiff_above_the_budget_opens_lazily_with_its_pixel_size(
    pyramid: LabelPyramid, tmp_path: Path
) -> None:
    """``sam2-batch``'s labels beyond its budget (no names file): napari's reader gets a zarr array."""
    from plugin.io_hooks import get_reader
    from protocol.formats.geometry import Geometry
    from protocol.formats.tiled_tiff import write_tiled_tiff

    path = tmp_path / "slide_labels.tif"
    geometry = Geometry.from_layer(2, (0.5, 0.5), None, ("micrometer", "micrometer"), None)
    write_tiled_tiff(path, pyramid.levels[0], geometry=geometry)
    reader = get_reader(str(path))
    assert reader is not None
    ((data, kwargs, _kind),) = reader(str(path))
    assert not isinstance(data, np.ndarray) and tuple(kwargs["scale"]) == (0.5, 0.5)
    np.testing.assert_array_equal(data[2040:, 2040:], pyramid.levels[0][2040:, 2040:])


def test_background_tiles_are_deflated_once_and_read_back_as_zeros(tmp_path: Path) -> None:
    """Every all-background tile of the BigTIFF is the same deflated bytes (made once); a label in
    one tile, and a lookup table mapping background to background, change nothing else."""
    import zlib

    from protocol.formats.tiled_tiff import encoded_tiles, write_tiled_tiff, zero_tile

    labels = np.zeros((3 * TIFF_TILE, 2 * TIFF_TILE + 5), np.uint32)
    labels[TIFF_TILE + 3, 2 * TIFF_TILE + 4] = 6  # the middle row's edge tile (zero-padded)
    lut = np.arange(10, dtype=np.uint32) * 2
    tiles = list(encoded_tiles(labels, lut))
    assert len(tiles) == 9
    labelled = np.zeros((TIFF_TILE, TIFF_TILE), np.uint32)
    labelled[3, 4] = 12
    np.testing.assert_array_equal(
        np.frombuffer(zlib.decompress(tiles[5]), np.uint32).reshape(labelled.shape), labelled
    )
    assert all(tile is zero_tile() for k, tile in enumerate(tiles) if k != 5)
    assert np.frombuffer(zlib.decompress(zero_tile()), np.uint32).tolist() == [0] * TIFF_TILE**2
    write_tiled_tiff(tmp_path / "l.tif", labels, lut=lut)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "l.tif"), lut[labels])
    # A table that maps background to an id: no tile is background any more.
    shifted = list(encoded_tiles(labels, lut + 1))
    assert not any(tile is zero_tile() for tile in shifted)
