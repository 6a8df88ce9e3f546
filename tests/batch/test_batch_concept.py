"""``sam2-batch --concept`` (issue 24) with the deterministic stand-in worker, which answers
``concept`` with its bright blobs scored by brightness (tests/support/concept_discs.py): on a
4,096² slide (tile by tile) and a small image (one request), the threshold keeps exactly the
bright discs, once each; the summary and the provenance say what was asked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

from batch.__main__ import EXIT_USAGE, main
from batch.outputs import SUMMARY_NAME, read_summary
from bench.discs import disc_scores
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
    backend = StandinBackend(spawn, 3)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "batch", str(inputs), "--out", str(out), "--broker", backend.frontend,
         "--model", SERVICE, "--no-progress", "--concept", "nucleus", "--concept-threshold", str(THRESHOLD)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
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
