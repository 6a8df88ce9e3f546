"""Find all in a real napari viewer under Xvfb (issue 24): type the concept, press Find all.

A real broker and the deterministic stand-in worker, which answers ``concept`` with its bright
blobs scored by brightness (tests/support/concept_discs.py), on a small image: the new layer holds
exactly the bright discs, named after the prompt, with their scores; the dim ones are left out.
Then an exemplar box alone (no text) is sent and answered.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels

from bench.discs import disc_scores
from plugin.jobs.find_all import SCORES_KEY
from plugin.labels.names import names_from_metadata
from plugin.provenance_record import auto_run_of
from plugin.view.layers import BOUNDING_BOX
from tests.support.concept_discs import BRIGHT_SCORE, THRESHOLD, concept_discs
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import dock_widget
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

pytestmark = GUI_TEST_MARKS
TIMEOUT_MS = 60_000


def find_all(box, qtbot, text: str, layer_name: str) -> Labels:
    """Type ``text``, press Find all, wait for the run to end; the labels layer it wrote."""
    viewer = box.controller.viewer
    box.text.setText(text)
    box.find_button.click()
    qtbot.waitUntil(lambda: layer_name in viewer.layers and not box.task.running, timeout=TIMEOUT_MS)
    return viewer.layers[layer_name]


def test_find_all_writes_the_bright_discs_named_after_the_prompt_with_their_scores(
    make_napari_viewer, spawn: ProcessSpawner, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, bright, dim_count = concept_discs((400, 400), spacing=60, seed=5)
    backend = StandinBackend(spawn, 1)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="cells")
    widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE)
    box = widget.find_all_box
    qtbot.waitUntil(box.find_button.isEnabled, timeout=TIMEOUT_MS)  # the stand-in serves concept
    box.find_button.click()  # no text, no exemplar: refused, nothing written
    assert not box.task.running and "nucleus (Find all)" not in viewer.layers
    box.threshold.setValue(THRESHOLD)
    layer = find_all(box, qtbot, "nucleus", "nucleus (Find all)")
    labels = np.asarray(layer.data)
    iou, stray, duplicates = disc_scores(labels, bright)
    assert dim_count > 5 and int(bright.max()) > 5
    assert len(np.unique(labels)) - 1 == int(bright.max()) and stray == 0 and duplicates == 0
    assert iou.min() >= 0.9, iou.min()
    ids = [int(i) for i in np.unique(labels) if i]
    names = names_from_metadata(layer.metadata)
    assert sorted(names) == ids and set(names.values()) == {f"nucleus {k}" for k in range(1, len(ids) + 1)}
    assert set(layer.metadata[SCORES_KEY]) == set(ids)
    assert all(s == pytest.approx(BRIGHT_SCORE, abs=0.01) for s in layer.metadata[SCORES_KEY].values())
    assert layer.unique_id in widget.names.overlays  # the names are drawn on the canvas

    # no text, one exemplar box drawn in Bounding Box: the box alone says what to find
    viewer.add_shapes(
        [np.array([[10, 10], [10, 40], [40, 40], [40, 10]])], shape_type="rectangle", name=BOUNDING_BOX
    )
    box.exemplars.setChecked(True)
    by_example = find_all(box, qtbot, "", "exemplars (Find all)")
    assert len(np.unique(np.asarray(by_example.data))) - 1 == int(bright.max())
    assert set(names_from_metadata(by_example.metadata).values()) >= {"exemplars 1"}
    assert auto_run_of(by_example.metadata)["parameters"]["boxes"] == [[10.5, 10.5, 40.5, 40.5]]
