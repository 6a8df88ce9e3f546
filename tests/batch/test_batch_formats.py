"""``sam2-batch --format tiff|ome-zarr|geojson``: the same segmentation in each format, resumable per format.

Runs the real ``python -m batch`` against a real broker and the deterministic
stand-in worker (bright discs are the right answer), so the test can check
what lands in each file, not only that a file exists.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import shapely
import tifffile

from batch.outputs import output_path, write_output
from plugin.formats import geojson, ngff
from tests.support.processes import PYTHON, REPO_ROOT, ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend
from tests.support.standin_worker import disc_image, scattered_discs

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
