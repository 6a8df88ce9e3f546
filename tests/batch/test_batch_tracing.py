"""``sam2-batch`` finds OME-Zarr images in a folder and writes traceable summary rows (issue 23, items 8, 10).

A folder's ``*.ome.zarr`` / ``*.zarr`` sub-folders are inputs like its TIFFs;
a slice segmented as tiles names its tiles' requests in ``summary.csv``
(``N tiles: FIRST..LAST``), ids that the broker's log shows.
"""

from __future__ import annotations

import csv
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from batch.inputs import discover
from batch.outputs import request_ids_text
from bench.discs import disc_image, scattered_discs
from tests.support.processes import REPO_ROOT, ProcessSpawner, log_text
from tests.support.standin_backend import SERVICE, StandinBackend

REQUEST_ID = "[0-9a-f]{32}"


def write_ome_zarr(path: Path, image: np.ndarray) -> None:
    """A minimal NGFF 0.4 image (c, y, x) of one channel, as other tools write them."""
    import zarr

    root: Any = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("0", data=image[None], chunks=(1, 512, 512))
    root.attrs["multiscales"] = [
        {"version": "0.4", "axes": [{"name": "c", "type": "channel"}, {"name": "y"}, {"name": "x"}],
         "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]}
    ]  # fmt: skip


def test_a_folder_contributes_its_ome_zarr_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "plate"
    folder.mkdir()
    tifffile.imwrite(folder / "b.tif", np.zeros((8, 8), np.uint8))
    (folder / "a.ome.zarr").mkdir()
    (folder / "c.zarr").mkdir()
    (folder / "notes").mkdir()  # a plain sub-folder is not searched
    (folder / "readme.txt").write_text("not an image")
    with caplog.at_level(logging.INFO, logger="batch.inputs"):
        assert discover([folder]) == [folder / "a.ome.zarr", folder / "b.tif", folder / "c.zarr"]
    assert "2 entries are not inputs" in caplog.text and "notes/, readme.txt" in caplog.text


def test_request_ids_text() -> None:
    assert request_ids_text([]) == ""
    assert request_ids_text(["a"]) == "a"
    assert request_ids_text(["a", "b", "c"]) == "3 tiles: a..c"


def test_a_folder_with_an_ome_zarr_is_segmented_and_each_row_names_its_requests(
    tmp_path: Path, spawn: ProcessSpawner
) -> None:
    folder = tmp_path / "plate"
    folder.mkdir()
    shape = (1500, 1500)  # 2 x 2 tiles of 1024 with a 128 px halo
    centres, radii = scattered_discs(shape, spacing=60, radius_range=(6.0, 10.0), seed=5)
    image, _ = disc_image(shape, centres, radii)
    write_ome_zarr(folder / "cells.ome.zarr", image)
    small, _ = disc_image((200, 200), centres[:4] % 180 + 10, radii[:4])
    tifffile.imwrite(folder / "small.tif", small)
    backend = StandinBackend(spawn, 2, broker_args=["--log-level", "DEBUG"])

    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "batch", str(folder), "--out", str(out), "--broker", backend.frontend,
         "--model", SERVICE, "--no-progress", "--format", "ome-zarr"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "cells_labels.ome.zarr").is_dir() and (out / "small_labels.ome.zarr").is_dir()
    with (out / "summary.csv").open(newline="") as handle:
        rows = {Path(row["file"]).name: row for row in csv.DictReader(handle)}
    assert set(rows) == {"cells.ome.zarr", "small.tif"}
    assert all(row["status"] == "ok" for row in rows.values()), rows
    tiled = re.fullmatch(f"4 tiles: ({REQUEST_ID})\\.\\.({REQUEST_ID})", rows["cells.ome.zarr"]["request_id"])
    assert tiled is not None, rows["cells.ome.zarr"]
    assert re.fullmatch(REQUEST_ID, rows["small.tif"]["request_id"]), rows["small.tif"]
    broker_log = log_text(backend.brokers[0])
    for request_id in (*tiled.groups(), rows["small.tif"]["request_id"]):
        assert f"request_id={request_id}" in broker_log, request_id
    assert f"request_ids={rows['cells.ome.zarr']['request_id']}" in proc.stderr
