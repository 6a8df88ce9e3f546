"""Find all (issue 24): the job's logic on napari's layer models (no Qt window) with real stand-in
workers behind a real broker, on a 4,096² slide whose right answer is known.

The stand-in answers ``concept`` with its bright blobs, each scored by its brightness
(tests/support/concept_discs.py): with the threshold between the dim and the bright discs'
scores, exactly the bright discs must come back, once each, named after the prompt, with their
scores, as one undo step, with the provenance of a tiled concept run.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.discs import disc_scores
from plugin.jobs.find_all import SCORES_KEY, FindAllRequest, concept_layer_name, exemplar_boxes, keep_above
from plugin.labels.names import names_from_metadata
from plugin.provenance_record import auto_run_of, automatic_provenance
from plugin.view.coords import SlicePlane
from protocol.formats.provenance import Provenance
from protocol.geometry.grid import tile_grid
from tests.support.concept_discs import BRIGHT_SCORE, THRESHOLD, concept_discs
from tests.support.find_all_jobs import find_all_jobs
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend


def test_keep_above_drops_low_scores_and_empty_instances_keeping_order() -> None:
    lut = keep_above([0.9, 0.2, 0.75, 0.8], [10, 10, 0, 5], 0.5)
    assert lut.tolist() == [0, 1, 0, 0, 2]


def test_exemplar_boxes_are_the_boxes_on_the_shown_slice_in_row_col_order() -> None:
    from napari.layers import Image, Shapes

    image = Image(np.zeros((3, 40, 60), np.uint8))
    boxes = Shapes(
        [
            np.array([[1, 5, 10], [1, 5, 30], [1, 15, 30], [1, 15, 10]]),
            np.array([[2, 0, 0], [2, 0, 9], [2, 9, 9], [2, 9, 0]]),
        ],
        shape_type=["rectangle", "rectangle"],
    )
    plane = SlicePlane((3, 40, 60), 1, 2, (1, None, None))
    # as a box prompt is sent (half a pixel: centres to edges); the slice-2 box is left out
    assert exemplar_boxes(boxes, image, plane) == [(5.5, 10.5, 15.5, 30.5)]
    assert exemplar_boxes(None, image, plane) == []


def test_find_all_on_a_4096_slide_writes_the_bright_discs_named_and_scored_in_one_undo_step(
    spawn: ProcessSpawner,
) -> None:
    shape = (4096, 4096)
    image, bright, dim_count = concept_discs(shape)
    backend = StandinBackend(spawn, 3)
    with find_all_jobs(image, backend.frontend, SERVICE) as harness:
        jobs, notes, outcome = harness.controller.find_all, harness.notes, []
        # empty text and no exemplar: a clear message, nothing sent
        assert not jobs.run(FindAllRequest("  ", THRESHOLD), lambda *_: None, outcome.append)
        assert notes[-1][0] == "warning" and "type what to find" in notes[-1][1]
        # exemplar boxes on a slide that goes tile by tile: refused, nothing sent
        box = [np.array([[10, 10], [40, 40]])]
        harness.viewer.add_shapes(box, shape_type="rectangle", name="Bounding Box")
        assert not jobs.run(FindAllRequest("nucleus", THRESHOLD, True), lambda *_: None, outcome.append)
        assert "tile by tile" in notes[-1][1] and not outcome

        request = FindAllRequest(" nucleus ", THRESHOLD)
        progress: list[float | None] = []
        outcome = harness.find_all(request, lambda fraction, _text: progress.append(fraction))
        assert outcome == [True], notes
    controller = harness.controller
    layer = harness.viewer.layers[concept_layer_name(request)]
    assert layer.name == "nucleus (Find all)"
    labels = np.asarray(layer.data)
    iou, stray, duplicates = disc_scores(labels, bright)
    count = int(bright.max())
    assert dim_count > 100 and len(np.unique(labels)) - 1 == count
    assert stray == 0 and duplicates == 0 and iou.min() >= 0.9, f"worst disc IoU {iou.min():.2f}"
    grid = tile_grid(shape, controller.auto_settings.tile_size, controller.auto_settings.tile_halo)
    assert progress[-1] == 1.0 and len(progress) > len(grid) // 2  # tile by tile
    ids = sorted(int(i) for i in np.unique(labels) if i)
    names = names_from_metadata(layer.metadata)
    assert set(names) == set(ids) and sorted(names.values()) == sorted(
        f"nucleus {k}" for k in range(1, count + 1)
    )
    scores = layer.metadata[SCORES_KEY]
    assert set(scores) == set(ids) and all(
        v == pytest.approx(BRIGHT_SCORE, abs=0.01) for v in scores.values()
    )
    run = auto_run_of(layer.metadata)
    assert run is not None and run["operation"] == "tiled_concept"
    assert run["parameters"]["text"] == "nucleus" and run["parameters"]["score_threshold"] == THRESHOLD
    assert (run["tile_grid"]["rows"], run["tile_grid"]["cols"]) == grid.grid_shape
    record = Provenance.from_dict(
        automatic_provenance(ids, run, model=SERVICE).to_dict()
    )  # what exports write
    assert record.operation == "tiled_concept" and record.parameters["text"] == "nucleus"
    by_op = [info["counters"]["by_op"].get("concept", 0) for info in backend.infos().values()]
    assert sum(by_op) == len(grid)  # the two refused runs sent nothing
    # one undo step takes pixels, names and scores away together
    assert controller.histories(layer).undo()
    assert not np.asarray(layer.data).any() and not names_from_metadata(layer.metadata)
    assert SCORES_KEY not in layer.metadata
