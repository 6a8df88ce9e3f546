"""``sam2-batch`` on images larger than the model's input, with the deterministic stand-in worker.

The stand-in (``python -m workers --model standin-blobs``) sees what it is sent at <= 1024 px,
like SAM, and labels bright discs, so the right answer is known: tiled, every
disc comes back once and whole; sent whole (``--no-tiling``), coarse. Stacks
keep one id per disc through the slices unless ``--per-slice-ids``. A label
image beyond ``--max-in-memory-mib`` is written tile by tile to a tiled
BigTIFF (or OME-Zarr) while the batch process's peak memory stays far below
the label image's size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from bench.discs import disc_image, disc_scores, scattered_discs
from tests.support.processes import REPO_ROOT, ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

# Runs the batch and prints its peak resident memory (KiB) as the last line: VmHWM of its own
# address space (ru_maxrss would include the parent's memory at the time of the fork).
RUN_AND_MEASURE = (
    "import json, re, sys\n"
    "from batch.__main__ import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    "print(json.dumps({'rc': code, 'maxrss_kib': hwm}))\n"
)


@pytest.fixture
def standin(spawn: ProcessSpawner) -> Callable[..., StandinBackend]:
    return lambda workers=2, delay_s=0.0: StandinBackend(spawn, workers, delay_s)


def _batch(backend: StandinBackend, *args: str, timeout_s: float = 300) -> dict[str, int]:
    """Run ``sam2-batch`` against the stand-in; return its exit code and peak RSS."""
    proc = subprocess.run(
        [sys.executable, "-c", RUN_AND_MEASURE, "--broker", backend.frontend, "--model", SERVICE,
         "--no-progress", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, proc.stderr[-4000:]
    return result


def test_batch_tiles_a_large_image_every_disc_once_and_whole(
    tmp_path: Path, standin: Callable[..., StandinBackend]
) -> None:
    shape = (3000, 3000)
    image, truth = disc_image(shape, *scattered_discs(shape, spacing=60, radius_range=(6.0, 10.0), seed=7))
    tifffile.imwrite(tmp_path / "discs.tif", image)
    backend = standin(workers=2)

    _batch(backend, str(tmp_path / "discs.tif"), "--out", str(tmp_path / "tiled"))
    labels = tifffile.imread(tmp_path / "tiled" / "discs_labels.tif")
    assert labels.dtype == np.uint16 and labels.shape == shape  # 2,401 ids: a Fiji-ready 16-bit TIFF
    iou, stray, duplicates = disc_scores(labels, truth)
    assert int(labels.max()) == int(truth.max()) == 49 * 49
    assert stray == 0 and duplicates == 0
    assert iou.min() >= 0.9, f"worst disc IoU {iou.min():.2f}"

    # Beyond the memory budget (34 MiB of uint32 labels, rows read from the uncompressed file, labels
    # through a temporary file, relabelled as the tiled BigTIFF is written): the same ids, pixel for pixel.
    _batch(
        backend, str(tmp_path / "discs.tif"), "--out", str(tmp_path / "bounded"), "--max-in-memory-mib", "16"
    )
    bounded = tifffile.imread(tmp_path / "bounded" / "discs_labels.tif")
    assert bounded.dtype == np.uint32 and np.array_equal(bounded, labels)

    # --no-tiling: the slice goes whole, the worker sees it 3x downsampled, the discs come back coarse.
    _batch(backend, str(tmp_path / "discs.tif"), "--out", str(tmp_path / "whole"), "--no-tiling")
    coarse = tifffile.imread(tmp_path / "whole" / "discs_labels.tif")
    coarse_iou, _, _ = disc_scores(coarse, truth)
    assert np.median(coarse_iou) < 0.85 and (coarse_iou >= 0.9).mean() < 0.5, np.median(coarse_iou)


def test_batch_stack_keeps_one_id_per_disc_unless_per_slice_ids(
    tmp_path: Path, standin: Callable[..., StandinBackend]
) -> None:
    shape = (1500, 1500)
    centres, radii = scattered_discs(shape, spacing=60, radius_range=(6.0, 10.0), seed=3)
    # Slice z lacks the first 5 * z discs, so per-slice numbering shifts while the discs stay put.
    planes, truths = [], []
    for z in range(3):
        image, truth = disc_image(shape, centres[5 * z :], radii[5 * z :])
        planes.append(image)
        truths.append(truth)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack(planes))
    backend = standin(workers=2)
    centre_index = tuple(np.round(centres[10:]).astype(int).T)  # discs present on every slice

    _batch(backend, str(tmp_path / "stack.tif"), "--out", str(tmp_path / "linked"))
    linked = tifffile.imread(tmp_path / "linked" / "stack_labels.tif")
    assert linked.shape == (3, *shape)
    for z in range(3):
        iou, stray, duplicates = disc_scores(linked[z], truths[z])
        assert iou.min() >= 0.9 and stray == 0 and duplicates == 0
    ids = np.stack([linked[z][centre_index] for z in range(3)])
    assert (ids > 0).all() and (ids[1] == ids[0]).all() and (ids[2] == ids[0]).all()
    assert len(np.unique(ids[0])) == ids.shape[1], "two discs share an id"
    # Labels beyond the budget (26 MiB): relabelled and linked through the temporary file, the same ids.
    _batch(
        backend, str(tmp_path / "stack.tif"), "--out", str(tmp_path / "bounded"), "--max-in-memory-mib", "8"
    )
    assert np.array_equal(tifffile.imread(tmp_path / "bounded" / "stack_labels.tif"), linked)

    _batch(backend, str(tmp_path / "stack.tif"), "--out", str(tmp_path / "per_slice"), "--per-slice-ids")
    per_slice = tifffile.imread(tmp_path / "per_slice" / "stack_labels.tif")
    ids = np.stack([per_slice[z][centre_index] for z in range(3)])
    assert (ids > 0).all() and (ids[1] != ids[0]).mean() > 0.5 and (ids[2] != ids[1]).mean() > 0.5
    assert all(int(per_slice[z].max()) == int(truths[z].max()) for z in range(3))


def test_batch_writes_labels_beyond_the_memory_budget_tile_by_tile(
    tmp_path: Path, standin: Callable[..., StandinBackend]
) -> None:
    shape = (10240, 10240)  # uint32 labels: 400 MiB; the batch's working set is a few tiles (~100 MiB)
    centres, radii = scattered_discs(shape, spacing=120, radius_range=(6.0, 10.0), seed=11)
    image, truth = disc_image(shape, centres, radii)
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(512, 512), compression="zlib")
    del image
    backend = standin(workers=2)

    measured = _batch(
        backend, str(tmp_path / "big.tif"), "--out", str(tmp_path / "out"), "--max-in-memory-mib", "16",
        "--in-flight", "2",
    )  # fmt: skip
    label_mib = truth.size * 4 / 2**20
    peak_mib = measured["maxrss_kib"] / 1024
    assert peak_mib < 0.75 * label_mib, f"peak RSS {peak_mib:.0f} MiB for {label_mib:.0f} MiB of labels"
    with tifffile.TiffFile(tmp_path / "out" / "big_labels.tif") as tif:
        page: Any = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and page.shape == shape
        labels = tif.asarray()
    assert not list((tmp_path / "out").glob(".*")), "a temporary store was left behind"
    iou, stray, duplicates = disc_scores(labels, truth)
    assert int(labels.max()) == int(truth.max())
    assert iou.min() >= 0.9 and stray == 0 and duplicates == 0


def test_batch_reads_an_ome_zarr_folder_and_writes_ngff_labels_tile_by_tile(
    tmp_path: Path, standin: Callable[..., StandinBackend]
) -> None:
    import zarr

    shape = (1500, 1500)
    image, truth = disc_image(shape, *scattered_discs(shape, spacing=60, radius_range=(6.0, 10.0), seed=5))
    root: Any = zarr.open_group(str(tmp_path / "cells.ome.zarr"), mode="w", zarr_format=2)
    root.create_array("0", data=image[None], chunks=(1, 512, 512))
    root.attrs["multiscales"] = [
        {"version": "0.4", "axes": [{"name": "c", "type": "channel"}, {"name": "y"}, {"name": "x"}],
         "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}]}
    ]  # fmt: skip
    backend = standin(workers=2)

    out = tmp_path / "out"
    _batch(backend, str(tmp_path / "cells.ome.zarr"), "--out", str(out), "--format", "ome-zarr",
           "--max-in-memory-mib", "1")  # fmt: skip
    labels_group: Any = zarr.open_group(str(out / "cells_labels.ome.zarr" / "labels"), mode="r")
    (name,) = list(labels_group.group_keys())
    first_level = labels_group[name].attrs["multiscales"][0]["datasets"][0]["path"]
    assert len(labels_group[name].attrs["multiscales"][0]["datasets"]) > 1, "no pyramid"
    level0 = np.asarray(labels_group[name][first_level][:])
    assert level0.shape == (1, *shape) and level0.dtype == np.uint32
    iou, stray, duplicates = disc_scores(level0[0], truth)
    assert iou.min() >= 0.9 and stray == 0 and duplicates == 0
    assert not list(out.glob(".*")), "a temporary store was left behind"
