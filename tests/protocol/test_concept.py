"""The ``concept`` op's client side (protocol/ops/concept.py) and concept prompts tiled over a
4,096² slide
(scores through the stitch, the threshold in every tile), with the deterministic stand-in worker
(which answers ``concept`` with its blobs, scored by brightness)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from bench.discs import disc_image, disc_scores, scattered_discs
from protocol.ops.concept import concept, concept_params
from protocol.ops.tiled import tiled_auto
from protocol.wire.errors import RemoteError
from protocol.wire.wire_image import to_wire
from tests.support.concept_discs import BRIGHT_SCORE, THRESHOLD, concept_discs
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import StandinBackend


@pytest.fixture
def standin(spawn: ProcessSpawner) -> Callable[..., StandinBackend]:
    return lambda workers=3, delay_s=0.0: StandinBackend(spawn, workers, delay_s)


def test_concept_params_are_checked_before_sending() -> None:
    assert concept_params(" nucleus ") == {"text": "nucleus", "score_threshold": 0.5}
    boxed = concept_params(boxes=[(1, 2, 10, 20)], box_labels=[0], score_threshold=0.7)
    assert boxed == {"score_threshold": 0.7, "boxes": [[1.0, 2.0, 10.0, 20.0]], "box_labels": [0]}
    for bad in (
        {},
        {"text": ""},
        {"text": "x" * 201},
        {"text": "a", "score_threshold": 1.5},
        {"boxes": [(5, 5, 5, 9)]},
        {"boxes": [(1, 2, 3, 4)], "box_labels": [2]},
        {"boxes": [(1, 2, 3, 4)] * 17},
    ):
        with pytest.raises(ValueError):
            concept_params(**bad)


def test_concept_finds_every_disc_of_a_window_with_a_score_each(
    standin: Callable[..., StandinBackend],
) -> None:
    shape = (600, 800)
    image, truth = disc_image(shape, *scattered_discs(shape, spacing=80, radius_range=(8.0, 12.0), seed=3))
    backend = standin(workers=1)
    with backend.client() as client:
        answer = concept(client, to_wire(image, None), concept_params("nucleus"))
        with pytest.raises(RemoteError, match="needs a 'text' prompt and/or exemplar 'boxes'"):
            client.call("concept", {"score_threshold": 0.5}, image=image)
    assert answer.num_objects == int(truth.max()) and answer.scores.shape == (answer.num_objects,)
    iou, stray, duplicates = disc_scores(answer.labels, truth)
    assert stray == 0 and duplicates == 0 and iou.min() >= 0.9


def test_concept_tiled_over_a_4096_slide_finds_every_bright_disc_once_with_its_score(
    standin: Callable[..., StandinBackend],
) -> None:
    """Scores survive stitching (a merged disc keeps its pieces' highest score) and the threshold
    applies in every tile: the dim discs (score ~0.63) are left out, the bright ones (~0.90) kept."""
    shape = (4096, 4096)
    image, bright, dim_count = concept_discs(shape)
    backend = standin(workers=3)
    out = np.zeros(shape, dtype=np.uint32)
    params = concept_params("nucleus", score_threshold=THRESHOLD)
    result = tiled_auto(image, out, backend.client, params, op="concept")
    assert result.tiles == result.tiles_done and result.tiles > 16 and not result.cancelled
    iou, stray, duplicates = disc_scores(out, bright)
    assert dim_count > 100 and result.num_objects == int(bright.max())
    assert stray == 0 and duplicates == 0 and iou.min() >= 0.9, f"worst disc IoU {iou.min():.2f}"
    assert result.scores == pytest.approx([BRIGHT_SCORE] * result.num_objects, abs=0.01)
    with pytest.raises(ValueError, match="text prompt only"):
        tiled_auto(image, out, backend.client, concept_params("x", boxes=[(0, 0, 9, 9)]), op="concept")
