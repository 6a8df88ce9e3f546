"""A long task's progress (plugin/_qt/qt_helpers.py: TaskProgress): the widget's bar and napari's.

napari's progress bar runs a nested event loop at each update
(``QApplication.processEvents``), and making it adds a bar to the activity
dock. So it is made on the turn after the task starts (not in the turn that
also makes the task's result layer) and shows the newest step at most every
``NAPARI_PROGRESS_EVERY_S``, while the widget's own bar follows every step.
"""

from __future__ import annotations

from qtpy.QtWidgets import QProgressBar, QPushButton

from plugin._qt.qt_helpers import NAPARI_PROGRESS_EVERY_S, TaskProgress
from tests.support.marks import GUI_TEST_MARKS

pytestmark = GUI_TEST_MARKS


def test_napari_progress_comes_a_turn_later_and_shows_the_newest_step_at_a_bounded_rate(qtbot) -> None:
    button, bar = QPushButton("Go"), QProgressBar()
    task = TaskProgress(button, bar, "Go", "Cancel Go")
    cancelled: list[bool] = []
    task.start("Going", lambda: cancelled.append(True))
    assert task.running and task.progress is None and button.text() == "Cancel Go" and not bar.isHidden()
    task.step(0, 100, "step 0")  # before napari's bar exists: kept, shown when it is made
    qtbot.waitUntil(lambda: task.progress is not None, timeout=2000)
    progress = task.progress
    assert progress.desc.startswith("step 0") and progress.total == 100

    shown: list[str] = []
    progress.events.description.connect(lambda event: shown.append(event.value))
    for k in range(1, 201):  # 200 steps in one turn: the widget follows each, napari's at most once
        task.step(k, 200, f"step {k}")
        assert bar.format() == f"step {k}" and bar.value() == 5 * k
    assert len(shown) <= 1
    qtbot.waitUntil(lambda: shown[-1:] == ["step 200"], timeout=int(4000 * NAPARI_PROGRESS_EVERY_S) + 2000)
    assert progress.n == 200 and progress.total == 200 and len(shown) <= 2

    progress.cancel()  # napari's cancel button
    assert cancelled == [True]
    task.finish()
    assert not task.running and task.progress is None and bar.isHidden() and button.text() == "Go"

    task.start("Going", lambda: None)  # started and finished in one turn: no napari bar at all
    task.finish()
    qtbot.wait(50)
    assert task.progress is None and not task.running
