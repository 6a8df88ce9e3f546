"""The Export box's dialog (issue 23, item 4): distinct default names for the two GeoJSON exports, and
a question before any existing file is replaced. A real viewer under Xvfb; the file dialog is replaced
by a function that answers as a user would, the question by :attr:`ExportBox.confirm_overwrite`, or a
real question box answered by a click.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QMessageBox

from plugin._qt.export_widget import ExportBox
from plugin._qt.name_widget import set_label_name
from tests.support.marks import GUI_TEST_MARKS

pytestmark = GUI_TEST_MARKS


class SaveDialog:
    """Stands for ``QFileDialog.getSaveFileName``: records the proposed path, answers ``answer`` or it."""

    def __init__(self) -> None:
        self.proposed: list[Path] = []
        self.answer: str | None = None

    def __call__(self, _parent, _title, start, _filter, **_options) -> tuple[str, str]:
        self.proposed.append(Path(start))
        return (self.answer or start), ""


@pytest.fixture
def scene(make_napari_viewer, monkeypatch, tmp_path):
    viewer = make_napari_viewer()
    data = np.zeros((40, 50), np.uint16)
    data[5:25, 5:30] = 4
    labels = viewer.add_labels(data, name="nuclei", scale=(0.5, 0.5), units="um")
    set_label_name(labels, 4, "cell nucleus")
    dialog = SaveDialog()
    monkeypatch.setattr("plugin._qt.export_widget.QFileDialog.getSaveFileName", dialog)
    monkeypatch.setattr("plugin._qt.export_widget.export_folder", lambda _viewer, _layer: tmp_path)
    box = ExportBox(viewer, lambda: labels)
    asked: list[list[Path]] = []
    answers: list[bool] = []

    def confirm(paths) -> bool:
        asked.append(list(paths))
        return answers.pop(0)

    box.confirm_overwrite = confirm
    return box, labels, dialog, asked, answers


def test_the_two_geojson_exports_propose_distinct_names_and_both_files_stay(scene, tmp_path) -> None:
    box, _labels, dialog, asked, _answers = scene
    box.set_choice("geojson")
    box.export_dialog()
    box.set_choice("geojson-physical")
    box.export_dialog()
    qupath, gis = dialog.proposed
    assert qupath.name == "nuclei.qupath.geojson" and gis.name == "nuclei.gis.geojson"
    assert qupath.is_file() and gis.is_file() and not asked  # nothing was there: nothing asked
    pixel, physical = (json.loads(p.read_text()) for p in (qupath, gis))
    assert pixel["features"][0]["geometry"] != physical["features"][0]["geometry"]


def test_an_existing_file_is_replaced_only_when_the_user_says_yes(scene, tmp_path) -> None:
    box, labels, _dialog, asked, answers = scene
    box.set_choice("geojson")
    box.export_dialog()
    target = tmp_path / "nuclei.qupath.geojson"
    before = target.read_bytes()
    labels.data[30:35, 30:35] = 7  # the labels change; exporting again would replace the file
    answers.append(False)
    box.export_dialog()
    assert asked == [[target]] and target.read_bytes() == before  # No: nothing written
    answers.append(True)
    box.export_dialog()
    assert len(asked) == 2 and target.read_bytes() != before  # Yes: replaced


def test_a_tiff_export_asks_when_only_its_names_sidecar_exists(scene, tmp_path) -> None:
    box, _labels, dialog, asked, answers = scene
    sidecar = tmp_path / "nuclei.names.json"
    sidecar.write_text("{}")
    box.set_choice("tiff")
    dialog.answer = str(tmp_path / "nuclei")  # typed without a suffix: the files get theirs
    answers.append(False)
    box.export_dialog()
    assert asked == [[sidecar]] and not (tmp_path / "nuclei.tif").exists() and sidecar.read_text() == "{}"


def test_the_real_question_box_defaults_to_no(scene, tmp_path, qtbot) -> None:
    box, _labels, _dialog, _asked, _answers = scene
    target = tmp_path / "nuclei.gis.geojson"
    target.write_text("kept")
    box.confirm_overwrite = ExportBox(box.viewer, box.layer_of).confirm_overwrite  # the real one
    seen: list[str] = []

    def answer() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QMessageBox):
            QTimer.singleShot(50, answer)
            return
        seen.append(dialog.text())
        dialog.defaultButton().click()  # Enter: the default answer

    QTimer.singleShot(50, answer)
    box.set_choice("geojson-physical")
    box.export_dialog()
    assert seen and str(target) in seen[0] and target.read_text() == "kept"
