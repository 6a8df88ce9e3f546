"""``sam2-batch --concept`` (issue 24) with the deterministic stand-in worker, which answers
``concept`` with its bright blobs scored by brightness (tests/support/concept_discs.py): on a
4,096² slide (tile by tile) and a small image (one request), the threshold keeps exactly the
bright discs, once each; the summary and the provenance say what was asked; each label file has
its per-instance table (score, area, box) and its scores in its metadata."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from batch.__main__ import EXIT_USAGE, main
from batch.instances import INSTANCE_COLUMNS, instances_path
from batch.outputs import SUMMARY_NAME, read_summary
from bench.discs import disc_scores
from plugin.io_hooks import read_layers
from protocol.formats.imagej import PROPERTIES_KEY
from protocol.formats.labels_file import SCORES_KEY
from protocol.formats.provenance import read_sidecar, sidecar_path
from protocol.formats.provenance_files import read_provenance
from protocol.geometry.grid import DEFAULT_HALO, DEFAULT_TILE_SIZE, tile_grid
from tests.support.concept_discs import THRESHOLD, concept_discs
from tests.support.processes import REPO_ROOT, ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend


def test_concept_options_are_checked_before_anything_is_sent(
    tmp_path: Path, spawn: ProcessSpawner, capfd: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    nowhere = ["--broker", "tcp://127.0.0.1:9", "--out", out, str(tmp_path)]
    assert main([*nowhere, "--concept", "  "]) == EXIT_USAGE
    assert main([*nowhere, "--concept", "nucleus", "--concept-threshold", "1.5"]) == EXIT_USAGE
    assert main([*nowhere, "--concept-threshold", "0.5"]) == EXIT_USAGE
    assert not (tmp_path / "out").exists()
    # a model whose workers do not serve concept: refused at once, saying so, no label file
    tifffile.imwrite(tmp_path / "one.tif", concept_discs((256, 256), spacing=60, seed=1)[0])
    backend = StandinBackend(spawn, 1, worker_args=["--without-op", "concept"])
    args = ["--broker", backend.frontend, "--model", SERVICE, "--out", out, "--no-progress"]
    assert main([*args, "--concept", "nucleus", str(tmp_path / "one.tif")]) == EXIT_USAGE
    assert "does not serve 'concept'" in capfd.readouterr().err
    assert not list((tmp_path / "out").glob("*_labels*"))


def test_batch_concept_finds_the_bright_discs_of_a_4096_slide_and_a_small_image(
    tmp_path: Path, spawn: ProcessSpawner
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    slide, slide_bright, _ = concept_discs((4096, 4096))
    small, small_bright, small_dim = concept_discs((512, 512), spacing=60, seed=3)
    tifffile.imwrite(inputs / "slide.tif", slide)
    tifffile.imwrite(inputs / "small.tif", small)
    # a calibrated stack (x 0.5 µm, y 0.25 µm) of two shifted planes: linked ids, areas in µm²
    stack = np.stack([small[:256, :256], small[1:257, 1:257]])
    calibration = {"axes": "ZYX", "unit": "um", "spacing": 2.0}
    tifffile.imwrite(inputs / "stack.tif", stack, imagej=True, resolution=(2.0, 4.0), metadata=calibration)
    backend = StandinBackend(spawn, 3)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "batch", str(inputs), "--out", str(out), "--broker", backend.frontend,
        "--model", SERVICE, "--no-progress", "--concept", "nucleus", "--concept-threshold", str(THRESHOLD),
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name, bright in (("slide", slide_bright), ("small", small_bright)):
        labels = tifffile.imread(out / f"{name}_labels.tif")
        iou, stray, duplicates = disc_scores(labels, bright)
        assert int(labels.max()) == int(bright.max()), name
        assert stray == 0 and duplicates == 0 and iou.min() >= 0.9, (name, iou.min())
    assert small_dim > 5
    rows = {Path(row.file).name: row for row in read_summary(out / SUMMARY_NAME)}
    assert rows["slide.tif"].status == rows["small.tif"].status == "ok"
    assert int(rows["slide.tif"].objects) == int(slide_bright.max())
    tiled = read_provenance(out / "slide_labels.tif")
    assert tiled is not None and tiled.operation == "tiled_concept"
    assert tiled.parameters["text"] == "nucleus" and tiled.parameters["score_threshold"] == THRESHOLD
    grid = tile_grid((4096, 4096), DEFAULT_TILE_SIZE, DEFAULT_HALO).grid_shape
    assert (tiled.tile_grid["rows"], tiled.tile_grid["cols"]) == grid
    whole = read_provenance(out / "small_labels.tif")
    assert whole is not None and whole.operation == "concept" and whole.tile_grid is None

    # the per-instance tables: one row per instance (and slice) of the labels beside them
    tables = {name: _check_instances(out / f"{name}_labels.tif", area, unit) for name, area, unit in (
        ("slide", 1.0, "pixel"), ("small", 1.0, "pixel"), ("stack", 0.125, "micrometer"),
    )}  # fmt: skip
    assert {row["slice"] for row in tables["stack"]} == {"0", "1"}
    assert {row["slice"] for row in tables["slide"]} == {""}
    linked = {int(r["id"]) for r in tables["stack"] if r["slice"] == "0"}
    assert linked & {int(r["id"]) for r in tables["stack"] if r["slice"] == "1"}  # one id through z
    record = read_sidecar(sidecar_path(instances_path(out / "slide_labels.tif")))
    assert record.operation == "tiled_concept" and record.parameters["text"] == "nucleus"
    assert record.parameters["score_threshold"] == THRESHOLD

    # resumed: an input whose table is missing is redone (labels and table); the others are kept
    slide_table = instances_path(out / "slide_labels.tif")
    kept_ns = slide_table.stat().st_mtime_ns
    instances_path(out / "small_labels.tif").unlink()
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    assert slide_table.stat().st_mtime_ns == kept_ns
    assert _check_instances(out / "small_labels.tif", 1.0, "pixel") == tables["small"]


def _check_instances(label_path: Path, pixel_area: float, unit: str) -> list[dict[str, str]]:
    """The table beside ``label_path`` matches its labels row for row: ids, pixel counts, areas,
    bounding boxes (max exclusive); scores in [threshold, 1], also in the TIFF's metadata."""
    labels = tifffile.imread(label_path)
    planes = labels.reshape(-1, *labels.shape[-2:])
    with instances_path(label_path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == INSTANCE_COLUMNS
    with tifffile.TiffFile(label_path) as tif:
        facts = json.loads(tif.imagej_metadata["Properties"][PROPERTIES_KEY])
    stored = {int(k): v for k, v in facts[SCORES_KEY].items()}
    seen: dict[int, float] = {}
    for index, plane in enumerate(planes):
        name = str(index) if labels.ndim > 2 else ""
        mine = [row for row in rows if row["slice"] == name]
        ids = np.unique(plane[plane > 0])
        assert [int(row["id"]) for row in mine] == ids.tolist() and len(ids) > 3
        boxes, counts = ndimage.find_objects(plane), np.bincount(plane.ravel())
        for row in mine:
            label_id = int(row["id"])
            rows_box, cols_box = boxes[label_id - 1]
            box = (rows_box.start, cols_box.start, rows_box.stop, cols_box.stop)
            assert tuple(int(row[k]) for k in INSTANCE_COLUMNS[-4:]) == box
            assert int(row["pixel_count"]) == counts[label_id]
            assert float(row["area"]) == pytest.approx(counts[label_id] * pixel_area)
            assert row["unit"] == unit and row["prompt"] == "nucleus"
            assert THRESHOLD <= float(row["score"]) <= 1.0
            seen[label_id] = max(float(row["score"]), seen.get(label_id, 0.0))
    assert len(rows) == sum(len(np.unique(p[p > 0])) for p in planes)
    assert stored == pytest.approx(seen, abs=1e-4)
    return rows


def test_concept_scores_go_into_the_metadata_of_tiff_and_ome_zarr_label_files(tmp_path: Path) -> None:
    import zarr

    from batch.instances import scores_metadata
    from batch.outputs import write_output

    labels = np.zeros((2, 64, 64), dtype=np.uint32)
    labels[0, 5:9, 5:9], labels[1, 5:9, 5:9], labels[1, 30:40, 30:40] = 1, 1, 2
    metadata = scores_metadata([{1: 0.91}, {1: 0.95, 2: 0.8}])  # a linked id keeps its best score
    assert metadata == {SCORES_KEY: {"1": 0.95, "2": 0.8}}
    write_output(tmp_path / "a_labels.tif", labels, "tiff", metadata=metadata)
    with tifffile.TiffFile(tmp_path / "a_labels.tif") as tif:
        facts = json.loads(tif.imagej_metadata["Properties"][PROPERTIES_KEY])
    assert facts[SCORES_KEY] == metadata[SCORES_KEY] and facts["axes"]  # beside the geometry facts
    # opening the file with the plugin's reader gives the layer the scores where Find all keeps them
    ((_, kwargs, _),) = read_layers(str(tmp_path / "a_labels.tif"))
    assert kwargs["metadata"][SCORES_KEY] == {1: 0.95, 2: 0.8}
    for image in (None, labels):  # labels only, or with the image at the root
        store = tmp_path / f"{image is None}_labels.ome.zarr"
        write_output(store, labels, "ome-zarr", image=image, metadata=metadata)
        root = zarr.open_group(str(store), mode="r")
        assert root.attrs[SCORES_KEY] == metadata[SCORES_KEY]
        assert ("multiscales" in root.attrs) == (image is not None)
        ((_, kwargs, _),) = read_layers(str(store))
        assert kwargs["metadata"][SCORES_KEY] == {1: 0.95, 2: 0.8}
