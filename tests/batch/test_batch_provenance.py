"""``sam2-batch`` outputs say how they were made: model, settings, source, and the tile grid when tiled.

Real ``python -m batch``, a real broker and the deterministic stand-in worker.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import tifffile

from bench.discs import disc_image, scattered_discs
from protocol.formats.provenance_files import read_provenance
from protocol.geometry.grid import tile_grid
from tests.support.processes import PYTHON, REPO_ROOT, ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

SHAPE = (200, 240)


@pytest.fixture
def standin(spawn: ProcessSpawner) -> Callable[..., StandinBackend]:
    return lambda workers=1: StandinBackend(spawn, workers)


def _run(folder: Path, out: Path, backend: StandinBackend, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [str(folder), "--out", str(out), "--broker", backend.frontend, "--model", SERVICE]
    args += ["--points-per-side", "4", "--no-progress", *extra]
    return subprocess.run(
        [PYTHON, "-m", "batch", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=240
    )


def test_every_batch_format_records_model_settings_source_and_tile_grid(tmp_path: Path, standin) -> None:
    backend = standin()
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    image, _ = disc_image(SHAPE, *scattered_discs(SHAPE, spacing=60, seed=3))
    tifffile.imwrite(folder / "discs.tif", image)

    whole = _run(folder, out, backend, "--no-tiling")
    assert whole.returncode == 0, whole.stderr
    record = read_provenance(out / "discs_labels.tif")
    assert record is not None and record.operation == "auto" and record.tile_grid is None
    assert record.model == SERVICE
    assert record.parameters["points_per_side"] == 4
    assert record.source_path == str(folder / "discs.tif")

    for fmt, name in (("ome-zarr", "discs_labels.ome.zarr"), ("geojson", "discs_labels.geojson")):
        done = _run(folder, out, backend, "--format", fmt, "--tile-size", "128", "--tile-halo", "16")
        assert done.returncode == 0, done.stderr
        tiled = read_provenance(out / name)
        assert tiled is not None and tiled.operation == "tiled_auto", name
        rows, cols = tile_grid(SHAPE, 128, 16).grid_shape
        assert (rows, cols) != (1, 1)
        expected = {"tile": 128, "halo": 16, "rows": rows, "cols": cols, "slice_shape": [200, 240]}
        assert tiled.tile_grid == expected
