"""The SAM 3 worker family: a small random-weight SAM 3 served by a real worker process behind a real
broker, asked through the client (``protocol/ops/concept.py``) on one 1,024² tile.

Random weights make the masks meaningless, so these tests check what does not depend on them: the
answer's form (labels, one score per instance), the score threshold, exemplar boxes, ``info``, and
the errors a user sees. One worker and one checkpoint serve the whole module (building and loading
SAM 3 is the slow part).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from batch.__main__ import main
from batch.outputs import SUMMARY_NAME, read_summary
from plugin.jobs.find_all import SCORES_KEY, FindAllRequest, concept_layer_name
from plugin.labels.names import names_from_metadata
from plugin.provenance_record import auto_run_of
from protocol.formats.provenance_files import read_provenance
from protocol.geometry.grid import DEFAULT_HALO, tile_grid
from protocol.ops.concept import ConceptAnswer, concept, concept_params
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import RemoteError
from protocol.wire.wire_image import to_wire
from tests.support.find_all_jobs import find_all_jobs
from tests.support.processes import PYTHON, ProcessSpawner, free_endpoint, log_text, wait_until
from tests.support.sam3_small import SERVICE, build_small_sam3

pytest.importorskip("sam3", reason="the sam3 extra is not installed (scripts/setup_env.sh installs it)")

pytestmark = pytest.mark.model
TILE = (1024, 1024)


@pytest.fixture(scope="session")
def small_sam3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model file of a small random SAM 3 checkpoint in Meta's layout, built once per session."""
    return build_small_sam3(tmp_path_factory.mktemp("sam3"))


@pytest.fixture(scope="module")
def sam3_backend(small_sam3: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker and one SAM 3 worker serving the small model; yields the client endpoint."""
    spawner = ProcessSpawner(tmp_path_factory.mktemp("sam3-backend"))
    frontend, backend = free_endpoint(), free_endpoint()
    try:
        broker = spawner([PYTHON, "-m", "broker", "--frontend", frontend, "--backend", backend], "broker")
        assert wait_until(lambda: "broker ready" in log_text(broker), 30), log_text(broker)
        worker = spawner(
            [PYTHON, "-m", "workers", "--model-file", str(small_sam3), "--model", SERVICE,
             "--connect", backend, "--threads", "2", "--log-level", "DEBUG"],
            "sam3-worker",
        )  # fmt: skip
        ready = wait_until(lambda: "worker ready" in log_text(worker) or worker.poll() is not None, 300)
        assert ready and worker.poll() is None, log_text(worker)
        assert "SAM 3 is a GPU model" in log_text(worker)  # the CPU warning a user sees
        yield frontend
    finally:
        spawner.stop_all()


def _client(frontend: str) -> SamClient:
    return SamClient(frontend, SERVICE, config=ClientConfig(timeout_s=240, retries=0))


def _well_formed(answer: ConceptAnswer, threshold: float) -> None:
    assert answer.labels.dtype == np.uint32 and answer.labels.shape == TILE
    assert answer.scores.dtype == np.float32 and answer.scores.shape == (answer.num_objects,)
    assert int(answer.labels.max()) == answer.num_objects
    assert np.all(answer.scores >= threshold) and np.all(answer.scores <= 1.0)
    assert np.all(np.diff(answer.scores) <= 0), "labels come in decreasing score"
    present = set(np.unique(answer.labels).tolist())
    assert set(range(1, answer.num_objects + 1)) <= present, "every label 1..n has pixels"


def test_concept_by_text_and_by_exemplar_box_honours_the_threshold(sam3_backend: str) -> None:
    rng = np.random.default_rng(1)
    tile = (rng.random(TILE) * 60).astype(np.uint8)
    tile[300:420, 500:640] = 220  # something box-shaped to point an exemplar at
    image = to_wire(tile, None)
    with _client(sam3_backend) as client:
        everything = concept(client, image, concept_params("nucleus", score_threshold=0.0))
        _well_formed(everything, 0.0)
        assert everything.num_objects > 1, "random SAM 3 scores every query above 0"
        middle = float(everything.scores[everything.num_objects // 2])
        some = concept(client, image, concept_params("nucleus", score_threshold=middle))
        _well_formed(some, middle)
        # the instances scoring >= the threshold, the same as without it (higher scores paint first)
        np.testing.assert_array_equal(some.scores, everything.scores[everything.scores >= middle])
        assert some.num_objects < everything.num_objects
        nothing = concept(client, image, concept_params("nucleus", score_threshold=1.0))
        assert nothing.num_objects == 0 and not nothing.labels.any()
        boxed = concept(client, image, concept_params(boxes=[(300, 500, 420, 640)], score_threshold=0.0))
        _well_formed(boxed, 0.0)
        both = concept(client, image, concept_params("cell", boxes=[(300, 500, 420, 640)], box_labels=[0]))
        _well_formed(both, 0.5)
        with pytest.raises(RemoteError, match=r"score_threshold.*\[0\.0, 1\.0\]"):
            client.call("concept", {"text": "nucleus", "score_threshold": 1.01}, image=tile)
        with pytest.raises(RemoteError, match="outside the image"):
            client.call("concept", {"boxes": [[0, 0, 2000, 10]]}, image=tile)
        info = client.call("info", {}).header["result"]
    assert info["family"] == "sam3" and info["ops"] == ["info", "concept"]
    assert info["preprocessing"] == "sam3" and info["checkpoint"] == "sam3_small.pt"
    assert len(info["checkpoint_sha256"]) == 64
    assert info["counters"]["encoder_runs"] == 1, "one image: the backbone ran once, then its cache served"


def test_a_missing_sam3_checkpoint_says_how_to_get_the_gated_weights(tmp_path: Path) -> None:
    gone = tmp_path / "sam3.pt"
    result = subprocess.run(
        [PYTHON, "-m", "workers", "--model", "sam3", "--checkpoint", str(gone), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 2, result.stderr
    assert f"checkpoint for sam3 not found at {gone}" in result.stderr
    assert "huggingface.co/facebook/sam3" in result.stderr


SLIDE = (4096, 4096)


def test_concept_over_a_4096_slide_tile_by_tile_from_sam2_batch_and_find_all(
    sam3_backend: str, tmp_path: Path
) -> None:
    """The small SAM 3 over a slide larger than a tile, as a user runs it: ``sam2-batch --concept``
    and napari's Find all (its job on napari's layer model). Random weights: the instances are
    meaningless, so what is checked is that every tile was asked and answered, the stitched labels
    are a valid label image whose instances are each named after the prompt and scored at or above
    the threshold, and the provenance records a tiled concept run with its grid."""

    rng = np.random.default_rng(5)
    slide = (rng.random(SLIDE) * 60).astype(np.uint8)
    for r in range(200, SLIDE[0], 700):
        slide[r : r + 90, r // 2 : r // 2 + 120] = 220
    # 2,176² tiles: still tile by tile (2 x 2 of them, stitched), few enough for CI's CPU budget
    tile, halo = 2176, DEFAULT_HALO
    grid = tile_grid(SLIDE, tile, halo)
    assert len(grid) > 1
    threshold = 0.2

    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "slide.tif", slide)
    out = tmp_path / "out"
    code = main(
        [str(tmp_path / "in"), "--out", str(out), "--broker", sam3_backend, "--model", SERVICE,
         "--no-progress", "--concept", "nucleus", "--concept-threshold", str(threshold),
         "--tile-size", str(tile), "--tile-halo", str(halo)]
    )  # fmt: skip
    assert code == 0
    labels = tifffile.imread(out / "slide_labels.tif")
    assert labels.shape == SLIDE and labels.dtype.kind == "u"  # the smallest unsigned type Fiji reads
    (row,) = read_summary(out / SUMMARY_NAME)
    assert row.status == "ok" and int(row.objects) == len(np.unique(labels)) - 1
    record = read_provenance(out / "slide_labels.tif")
    assert record is not None and record.operation == "tiled_concept" and record.model == SERVICE
    assert (record.tile_grid["rows"], record.tile_grid["cols"]) == grid.grid_shape

    request = FindAllRequest("nucleus", threshold)
    with find_all_jobs(slide, sam3_backend, SERVICE, tile_size=tile, tile_halo=halo) as harness:
        assert harness.find_all(request, timeout_s=600) == [True], harness.notes
    layer = harness.viewer.layers[concept_layer_name(request)]
    found = np.asarray(layer.data)
    ids = sorted(int(i) for i in np.unique(found) if i)
    assert set(names_from_metadata(layer.metadata)) == set(ids)
    assert all(name.startswith("nucleus") for name in names_from_metadata(layer.metadata).values())
    scores = layer.metadata.get(SCORES_KEY, {})
    assert set(scores) == set(ids) and all(threshold <= v <= 1.0 for v in scores.values())
    run = auto_run_of(layer.metadata)
    assert run is not None and run["operation"] == "tiled_concept"
    assert (run["tile_grid"]["rows"], run["tile_grid"]["cols"]) == grid.grid_shape
    with _client(sam3_backend) as client:
        info = client.call("info", {}).header["result"]
    # both runs asked every tile (plus the module's earlier single-tile requests)
    assert info["counters"]["by_op"]["concept"] >= 2 * len(grid)
