"""Result labels as a pyramid (plugin/labels/pyramid.py) in a real viewer, against the stand-in worker.

The slice size above which the result layer is a pyramid is lowered to
1,024² (``PYRAMID_MIN_PIXELS``) so a 3,000² image gives a three-level
pyramid quickly; every other part is the real one: napari viewer under
Xvfb, broker and stand-in worker processes, the plugin's write path,
history and export. After each write level 0 must hold the exact ids
(the stand-in answers discs exactly) and every display level must equal
its recomputation from level 0.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

import plugin.labels.pyramid
from bench.discs import disc_image
from plugin._qt.export_widget import export_layer
from plugin.labels.edits import delete_labels, merge_labels
from plugin.labels.ops import LabelMode
from plugin.labels.pyramid import downsample_max, label_data
from plugin.view.layers import POINTS_MASK, PROMPT_POINTS
from plugin.view.picking import label_at
from tests.plugin.test_plugin_large_images import click, viewer_on  # noqa: F401 (fixture)
from tests.support.marks import GUI_TEST_MARKS

pytestmark = GUI_TEST_MARKS

SHAPE = (3000, 3000)
CENTRES = np.array([[1500.0, 1500.0], [1500.0, 1530.0], [2990.0, 2990.0]])
RADII = np.array([12.0, 12.0, 6.0])


@pytest.fixture(autouse=True)
def small_pyramids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin.labels.pyramid, "PYRAMID_MIN_PIXELS", 1024 * 1024)


def assert_levels_in_step(layer) -> np.ndarray:
    """Every display level equals its recomputation from level 0; returns level 0."""
    level0 = np.asarray(layer.data[0][:])
    expected = level0
    for k in range(1, len(layer.data)):
        expected = downsample_max(expected)
        np.testing.assert_array_equal(np.asarray(layer.data[k][:]), expected, err_msg=f"level {k}")
    return level0


def test_clicks_refine_modes_undo_delete_merge_and_export_on_a_pyramid_layer(
    viewer_on,  # noqa: F811
    qtbot,
    tmp_path: Path,
) -> None:
    image, truth = disc_image(SHAPE, CENTRES, RADII)
    viewer, _image_layer, widget, _backend = viewer_on(image)
    writers: list[str] = []  # the thread each click's store write ran on
    off_gui = widget.controller.results.off_gui
    widget.controller.results.off_gui = lambda work: off_gui(
        lambda: (writers.append(threading.current_thread().name), work())[1]
    )
    first = click(widget, qtbot, [1500.0, 1500.0])
    layer = viewer.layers[POINTS_MASK]
    assert layer.multiscale and len(layer.data) == 3 and layer.data.shape == SHAPE
    assert writers == ["sam2-store-write"]  # the window kept drawing while the store was written
    (a,) = first.label_ids
    np.testing.assert_array_equal(assert_levels_in_step(layer) == a, truth == 1)
    history = widget.controller.results.histories(layer)

    # union: label a grows by the second disc; undo and redo walk it back and forth
    widget.controller.set_mode(LabelMode.UNION, layer, a)
    viewer.layers[PROMPT_POINTS].data = np.empty((0, 2))
    click(widget, qtbot, [1500.0, 1530.0])
    np.testing.assert_array_equal(assert_levels_in_step(layer) == a, (truth == 1) | (truth == 2))
    assert history.undo()
    np.testing.assert_array_equal(assert_levels_in_step(layer) == a, truth == 1)
    assert history.redo()
    np.testing.assert_array_equal(assert_levels_in_step(layer) == a, (truth == 1) | (truth == 2))

    # intersection with the first disc: back to it; overwrite with the second: exactly that one
    widget.controller.set_mode(LabelMode.INTERSECTION, layer, a)
    viewer.layers[PROMPT_POINTS].data = np.empty((0, 2))
    click(widget, qtbot, [1500.0, 1500.0])
    np.testing.assert_array_equal(assert_levels_in_step(layer) == a, truth == 1)
    widget.controller.set_mode(LabelMode.OVERWRITE, layer, a)
    viewer.layers[PROMPT_POINTS].data = np.empty((0, 2))
    click(widget, qtbot, [1500.0, 1530.0])
    np.testing.assert_array_equal(assert_levels_in_step(layer) == a, truth == 2)

    # a 1-px-scale object at the far corner: its own id at level 0 and on every level
    widget.controller.set_mode(LabelMode.ADD)
    widget.controller.new_object()
    viewer.layers[PROMPT_POINTS].data = np.empty((0, 2))
    corner = click(widget, qtbot, [2990.0, 2990.0])
    (c,) = corner.label_ids
    level0 = assert_levels_in_step(layer)
    np.testing.assert_array_equal(level0 == c, truth == 3)
    for k in range(1, len(layer.data)):
        assert np.asarray(layer.data[k][2990 >> k, 2990 >> k]) == c

    # picking under the mouse reads the label (napari gives (level, value) on a pyramid)
    class Click:
        position = layer.data_to_world([1500, 1530])

    assert label_at(layer, Click()) == a

    # delete and merge are single undo steps, on every level; the Labels tab reads only the labels' box
    layer.metadata = {**layer.metadata, "label_names": {a: "left", c: "corner"}}
    widget.labels.layer_combo.set_layer(layer)
    where = widget.labels._box_of([c])
    assert where is not None and (where[0].stop - where[0].start) * (where[1].stop - where[1].start) <= 64**2
    delete_labels(history, [c], where)
    assert not (assert_levels_in_step(layer) == c).any()
    assert history.undo()
    np.testing.assert_array_equal(assert_levels_in_step(layer) == c, truth == 3)
    merge_labels(history, [c], a, widget.labels._box_of([c]))
    np.testing.assert_array_equal(assert_levels_in_step(layer) == a, (truth == 2) | (truth == 3))

    # "Edit here" from the Labels tab: the list stays on the layer (no recount of level 0), one undo step
    widget.labels.layer_combo.set_layer(layer)
    recounts, depth = widget.labels.watcher.recounts, history.undo_depth
    viewer.camera.center = tuple(layer.data_to_world([1500, 1500]))
    viewer.camera.zoom = 1.0
    widget.labels.toggle_edit_here()
    window = widget.labels.edit_window
    assert window is not None and window.layer in viewer.layers and widget.labels.layer is layer
    r0, c0, r1, c1 = window.rect
    assert r0 <= 1500 < r1 and c0 <= 1500 < c1 and max(r1 - r0, c1 - c0) <= 4096
    assert window.layer.mode == "pan_zoom"  # napari's brush is picked on the next event-loop turn
    qtbot.waitUntil(lambda: window.layer.mode == "paint", timeout=5000)
    window.layer.paint((1500 - r0, 1500 - c0), 77)
    widget.labels.toggle_edit_here()
    assert window.layer not in viewer.layers and widget.labels.edit_window is None
    assert np.asarray(layer.data[0][1500, 1500]) == 77 and history.undo_depth == depth + 1
    assert widget.labels.layer is layer and widget.labels.watcher.recounts == recounts

    # export reads level 0: the ids and names as written
    written = export_layer(layer, tmp_path / "pyramid.tif")
    saved = tifffile.imread(written[0])
    np.testing.assert_array_equal(saved, label_data(layer)[:])
    assert saved.shape == SHAPE


def test_edit_here_paints_a_window_of_a_pyramid_and_writes_it_back_as_one_undo_step(
    make_napari_viewer,
) -> None:
    """napari cannot paint a multiscale layer; "Edit here" opens a window of level 0 as an ordinary Labels
    layer placed over it, napari's own brush and fill paint there, and closing writes the changed pixels
    back (level 0 exact, display levels in step) as one step that undo and redo walk."""
    from plugin.labels.history import Histories
    from plugin.labels.ops import SliceEdit
    from plugin.view.coords import plane_at
    from plugin.view.edit_here import close_edit_window, open_edit_window
    from plugin.view.layers import ensure_labels, write_edit

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros(SHAPE, np.uint8), scale=(0.5, 0.5), translate=(10.0, -4.0))
    layer = ensure_labels(viewer, image, POINTS_MASK)
    assert layer.multiscale and not layer.editable  # napari's brush cannot paint it
    history = Histories()(layer)
    plane = plane_at([0, 0], SHAPE, (0, 1))
    rows, cols = np.nonzero(np.ones((20, 20), bool))
    write_edit(
        layer,
        plane,
        SliceEdit(rows + 2000, cols + 2100, np.zeros(400, np.uint32), np.full(400, 7, np.uint32)),
    )
    answer_elsewhere = SliceEdit(
        rows + 2500, cols + 2500, np.zeros(400, np.uint32), np.full(400, 9, np.uint32)
    )

    window = open_edit_window(viewer, layer, rect=(1990, 2090, 2290, 2390))
    assert window.layer.editable and viewer.layers.selection.active is window.layer
    assert window.layer.mode == "paint"  # at once by default
    np.testing.assert_array_equal(window.layer.data, np.asarray(layer.data[0][1990:2290, 2090:2390]))
    # it sits on the source's pixels: data (0, 0) of the window is the source's (1990, 2090)
    np.testing.assert_allclose(window.layer.data_to_world([0, 0]), layer.data_to_world([1990, 2090]))
    window.layer.selected_label = 12
    window.layer.paint((150, 150), 12)  # napari's brush (default size 10), window pixels (row, col)
    window.layer.fill((15, 15), 3)  # label 7's square, filled with 3 by napari's fill
    write_edit(layer, plane, answer_elsewhere)  # an answer arrives while the window is open
    painted = np.asarray(window.layer.data).copy()
    depth = history.undo_depth

    written = close_edit_window(viewer, window)
    assert window.layer not in viewer.layers and written > 400
    level0 = assert_levels_in_step(layer)
    np.testing.assert_array_equal(level0[1990:2290, 2090:2390][painted != 0], painted[painted != 0])
    assert (level0[2000:2020, 2100:2120] == 3).all() and level0[2140, 2240] == 12
    assert (level0[2500:2520, 2500:2520] == 9).all()  # kept: the window did not clobber it
    assert history.undo_depth == depth + 1  # one step
    assert history.undo()
    level0 = assert_levels_in_step(layer)
    assert (level0[2000:2020, 2100:2120] == 7).all() and not (level0 == 12).any()
    assert history.redo()
    assert assert_levels_in_step(layer)[2140, 2240] == 12


def test_pyramid_labels_sit_on_the_image_at_three_zoom_levels(make_napari_viewer, qtbot) -> None:
    """Screenshots of a shown viewer: bright squares of a pyramid image and the pyramid labels written on
    the same pixels cover the same screen pixels zoomed in (8 screen px per pixel, at the far corner), at
    1:1 and with the whole slide in view (a coarse level) - no offset at any zoom."""
    from plugin.labels.ops import SliceEdit
    from plugin.labels.pyramid import LabelPyramid
    from plugin.view.coords import plane_at
    from plugin.view.layers import ensure_labels, write_edit

    level0 = np.zeros(SHAPE, np.uint8)
    spots = [(r, c) for r in range(40, 3000, 300) for c in range(40, 3000, 300)] + [(2976, 2976)]
    for r, c in spots:
        level0[r : r + 24, c : c + 24] = 255
    levels = LabelPyramid([level0]).levels + []  # level 0 only, then the same block maximum as the labels
    while max(levels[-1].shape) > 1024:
        levels.append(downsample_max(levels[-1]))
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(levels, multiscale=True, contrast_limits=(0, 255), translate=(5.0, 3.0))
    labels = ensure_labels(viewer, image, POINTS_MASK)
    rows, cols = np.nonzero(level0)
    write_edit(
        labels,
        plane_at([0, 0], SHAPE, (0, 1)),
        SliceEdit(rows, cols, np.zeros(rows.size), np.ones(rows.size, np.uint32)),
    )
    labels.opacity = 1.0

    def shot(layer) -> np.ndarray:
        image.visible, labels.visible = layer is image, layer is labels
        qtbot.wait(300)
        return np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].max(axis=-1) > 60

    for zoom, centre in ((8.0, (2988.0, 2988.0)), (1.0, (1500.0, 1500.0)), (None, None)):
        if zoom is None:
            viewer.reset_view()
        else:
            viewer.camera.zoom = zoom
            viewer.camera.center = tuple(image.data_to_world(centre))
        bright, labelled = shot(image), shot(labels)
        assert bright.any() and labelled.any()
        overlap = (bright & labelled).sum() / (bright | labelled).sum()
        assert overlap >= 0.95, f"zoom {zoom}: labels cover {overlap:.3f} of the image's squares"


def test_tiled_auto_pastes_into_a_pyramid_off_the_gui_thread_as_one_undo_step(viewer_on, qtbot) -> None:  # noqa: F811
    """AUTO-SEGMENT in tiles on a pyramid layer: the store is written in a thread while the window keeps
    drawing (plugin/_qt/off_thread.py), every disc once and whole at level 0, display levels in step, and
    the paste is one undo step."""
    import threading

    from bench.discs import disc_scores, scattered_discs
    from plugin.jobs.controller import AUTO
    from plugin.view.layers import AUTO_MASK

    centres, radii = scattered_discs(SHAPE, spacing=90, radius_range=(6.0, 10.0), seed=3)
    image, truth = disc_image(SHAPE, centres, radii)
    viewer, _layer, widget, _backend = viewer_on(image, workers=2)
    threads: list[str] = []
    real = widget.controller.results.off_gui
    widget.controller.results.off_gui = lambda work: real(
        lambda: (threads.append(threading.current_thread().name), work())[1]
    )
    box = widget.auto_box
    box.tile_size.setValue(1000)
    box.tile_halo.setValue(64)
    steps: list[tuple[float | None, str, bool]] = []  # (fraction, text, written meanwhile by the thread)
    real_step = box.slice_task.step
    box.slice_task.step = lambda done, total, text: (
        steps.append((done, text, bool(threads))),
        real_step(done, total, text),
    )[1]
    box.toggle_slice()
    qtbot.waitUntil(lambda: widget.controller.applied.get(AUTO) is not None, timeout=120_000)
    qtbot.waitUntil(lambda: not box.slice_task.running, timeout=10_000)
    layer = viewer.layers[AUTO_MASK]
    assert layer.multiscale and threads == ["sam2-store-write"]
    # the paste's progress, one step per tile, dispatched by the writing thread, after the tiles' own
    last = next(text for _, text, _ in reversed(steps) if "writing the labels" in text)
    tiles = int(last.split(" of ")[1].split()[0])  # "AUTO-SEGMENT: writing the labels, k of N tiles…"
    qtbot.waitUntil(lambda: f"{tiles} of {tiles} tiles…" in steps[-1][1], timeout=5000)  # dispatched last
    sent = [i for i, (_, text, _) in enumerate(steps) if f"of {tiles} tiles of" in text]
    writing = [(i, done, text) for i, (done, text, _) in enumerate(steps) if "writing the labels" in text]
    assert tiles > 1 and sent and all(steps[i][2] for i, _, _ in writing)
    expected = [f"{k} of {tiles} tiles…" for k in range(1, tiles + 1)]
    assert [text.split(", ")[1] for _, _, text in writing] == expected
    assert [done for _, done, _ in writing] == pytest.approx([k / tiles for k in range(1, tiles + 1)])
    assert writing[0][0] > max(sent)
    level0 = assert_levels_in_step(layer)
    best, stray, duplicates = disc_scores(level0, truth)
    assert (best >= 0.9).all() and stray == 0 and duplicates == 0
    history = widget.controller.results.histories(layer)
    assert history.undo_depth == 1
    assert history.undo() and not assert_levels_in_step(layer).any()
    assert history.redo()
    np.testing.assert_array_equal(assert_levels_in_step(layer), level0)


def test_auto_over_a_drawn_rectangle_then_the_visible_region_sends_and_writes_only_there(
    viewer_on,  # noqa: F811
    qtbot,
) -> None:
    """AUTO's Region: only tiles covering the drawn rectangle (then the view) are sent; the discs inside
    are found whole, nothing outside is written."""
    from bench.discs import scattered_discs
    from plugin.jobs.auto_region import region_rect
    from plugin.jobs.auto_settings import DRAWN, VISIBLE
    from plugin.jobs.box_tiles import ONE
    from plugin.jobs.controller import AUTO, BOX
    from plugin.view.layers import AUTO_MASK, plane_of
    from protocol.geometry.grid import tile_grid
    from tests.plugin.test_plugin_large_images import sent_shapes

    centres, radii = scattered_discs(SHAPE, spacing=90, radius_range=(6.0, 10.0), seed=5)
    image, truth = disc_image(SHAPE, centres, radii)
    viewer, image_layer, widget, backend = viewer_on(image)
    box = widget.auto_box
    box.tile_size.setValue(512)
    box.tile_halo.setValue(64)
    slice_tiles = int(np.prod(tile_grid(SHAPE, 512, 64).grid_shape))

    def auto_in(rect: tuple[int, int, int, int], shapes_before: int) -> np.ndarray:
        previous = widget.controller.applied.get(AUTO)
        box.toggle_slice()
        qtbot.waitUntil(lambda: widget.controller.applied.get(AUTO) is not previous, timeout=60_000)
        qtbot.waitUntil(lambda: not box.slice_task.running, timeout=10_000)
        r0, c0, r1, c1 = rect
        rows, cols = tile_grid((r1 - r0, c1 - c0), 512, 64).grid_shape
        assert len(sent_shapes(backend)) - shapes_before == rows * cols < slice_tiles
        return assert_levels_in_step(viewer.layers[AUTO_MASK])

    def found_inside(level0: np.ndarray, rect: tuple[int, int, int, int]) -> int:
        """Every disc wholly inside ``rect`` is exactly one label of its own; returns how many discs."""
        r0, c0, r1, c1 = rect
        whole = (centres[:, 0] - radii > r0 + 1) & (centres[:, 0] + radii < r1 - 1)
        whole &= (centres[:, 1] - radii > c0 + 1) & (centres[:, 1] + radii < c1 - 1)
        for disc in np.flatnonzero(whole):
            row, col = (int(x) for x in centres[disc])
            window = np.s_[row - 12 : row + 13, col - 12 : col + 13]
            disc_pixels = truth[window] == truth[row, col]
            (label_id,) = np.unique(level0[window][disc_pixels])
            assert label_id and ((level0[window] == label_id) == disc_pixels).all()
        return int(whole.sum())

    # a drawn rectangle (the newest of the Bounding Box layer; it is also a box prompt, answered first)
    widget.controller.prompts.box_tiles.remembered = ONE  # as one request: no question box
    widget.controller.box_layer().add_rectangles(np.array([[600.0, 900.0], [1600.0, 1900.0]]))
    qtbot.waitUntil(lambda: widget.controller.applied.get(BOX) is not None, timeout=30_000)
    box.set_region(DRAWN)
    assert widget.controller.auto_settings.region == DRAWN
    drawn = (600, 900, 1601, 1901)
    level0 = auto_in(drawn, len(sent_shapes(backend)))
    outside = np.ones(SHAPE, bool)
    outside[drawn[0] : drawn[2], drawn[1] : drawn[3]] = False
    assert not level0[outside].any()
    assert found_inside(level0, drawn) > 100

    # the visible region: elsewhere on the slice; the drawn rectangle's labels stay as they were
    viewer.camera.center = tuple(image_layer.data_to_world([2500, 500]))
    viewer.camera.zoom = 1.0
    box.set_region(VISIBLE)
    visible = region_rect(viewer, image_layer, plane_of(viewer, image_layer, SHAPE), VISIBLE)
    assert visible is not None and visible[0] > drawn[2]
    before = level0.copy()
    level0 = auto_in(visible, len(sent_shapes(backend)))
    np.testing.assert_array_equal(level0[~outside], before[~outside])
    r0, c0, r1, c1 = visible
    outside[r0:r1, c0:c1] = False
    assert not level0[outside].any()
    assert found_inside(level0, visible) > 5


def test_counts_and_export_read_a_snapshot_off_the_gui_thread_while_edits_go_on(
    make_napari_viewer, qtbot, tmp_path: Path
) -> None:
    """The label list's full count and the Export box read a snapshot of a pyramid layer in a thread:
    an edit made meanwhile (on the GUI thread) is counted once and does not reach the file."""
    import threading

    from qtpy.QtCore import QTimer

    import plugin._qt.export_widget as export_widget
    from plugin._qt.off_thread import run_keeping_window_alive
    from plugin.labels.history import Histories
    from plugin.labels.watch import LabelWatcher
    from plugin.labels.writes import write_values
    from plugin.view.layers import ensure_labels

    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros(SHAPE, np.uint8))
    layer = ensure_labels(viewer, image, POINTS_MASK)
    threads: list[str] = []
    empty = LabelWatcher(Histories(), lambda: None, lambda work: threads.append("thread") or work())
    empty.watch(layer)  # a new layer: its store holds no chunk, counted here (no thread, no nested loop)
    assert threads == [] and empty.counts.as_dict() == {} and empty.recounts == 1
    empty.close()
    for r, c in [(100, 100), (100, 1100), (1100, 100), (1100, 1100), (2100, 2100)]:  # 5 of the 9 chunks
        rows, cols = np.mgrid[r : r + 10, c : c + 4]
        write_values(layer, (rows.ravel(), cols.ravel()), 5)  # 200 px of label 5

    def edit_meanwhile(work):
        """Runs ``work`` in the thread once an edit of 30 px of label 6 was made on the GUI thread."""
        edited = threading.Event()

        def edit() -> None:
            write_values(layer, (np.full(30, 2000), np.arange(30)), 6)
            edited.set()

        QTimer.singleShot(0, edit)

        def waiting():
            threads.append(threading.current_thread().name)
            assert edited.wait(10)
            return work()

        return run_keeping_window_alive(waiting)

    watcher = LabelWatcher(Histories(), lambda: None, edit_meanwhile)
    watcher.watch(layer)  # 5 M px stored: counted in the thread, the edit held and applied on top
    assert threads == ["sam2-store-write"] and watcher.counts.as_dict() == {5: 200, 6: 30}
    write_values(layer, (np.arange(4), np.zeros(4, int)), 5)  # a bbox write: followed, no recount
    assert watcher.recounts == 1 and watcher.counts.as_dict() == {5: 204, 6: 30}

    box = export_widget.ExportBox(viewer, lambda: layer)
    real, edited = export_widget.pixel_counts, threading.Event()

    def counts_after_an_edit(data):
        threads.append(threading.current_thread().name)
        assert edited.wait(10)
        return real(data)

    def edit() -> None:  # on the GUI thread while the export's thread waits: after the snapshot
        write_values(layer, (np.full(40, 2500), np.arange(40)), 7)
        edited.set()

    expected = np.asarray(layer.data[0][:])
    export_widget.pixel_counts = counts_after_an_edit
    QTimer.singleShot(0, edit)
    try:
        written = box.export(layer, tmp_path / "snapshot.tif")
    finally:
        export_widget.pixel_counts = real
    assert threads[-1] == "sam2-store-write" and edited.is_set()
    np.testing.assert_array_equal(tifffile.imread(written[0]), expected)  # as when Export was pressed
    assert (np.asarray(layer.data[0][2500, :40]) == 7).all()
