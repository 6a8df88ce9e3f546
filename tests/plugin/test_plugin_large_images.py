"""The napari plugin on slices larger than the model's input, against the deterministic stand-in worker.

The stand-in worker (``python -m workers --model standin-blobs``) labels the bright component
under a prompt in what it is sent, looked at <= 1024 px: a disc comes back
exact only when the plugin sends a native-resolution window around the
click and pastes the answer at the window's offset. Real viewer under Xvfb,
real broker and worker processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zarr

from bench.discs import disc_image, disc_scores, scattered_discs
from plugin._qt.auto_widget import TILE_SIZE_KEY
from plugin._qt.encode_widget import PREFETCH_KEY
from plugin._qt.widget import SamWidget
from plugin.jobs.controller import AUTO, Applied
from plugin.provenance_record import auto_run_of
from plugin.user_settings import load, save
from plugin.view.layers import AUTO_MASK, POINTS_MASK, PROMPT_POINTS
from protocol.geometry.windows import Window, window_for_prompt
from tests.support.counting_array import CountingArray
from tests.support.marks import GUI_TEST_MARKS
from tests.support.plugin_helpers import click_point, dock_widget
from tests.support.processes import ProcessSpawner
from tests.support.standin_backend import SERVICE, StandinBackend

pytestmark = GUI_TEST_MARKS

TIMEOUT_MS = 60_000


def assert_peak_below_a_slice(run: Callable[[], None], shape: tuple[int, int]) -> None:
    """``run()`` allocates (traced by Python) less than 3/4 of one uint32 (H, W) slice at its peak."""
    import tracemalloc

    tracemalloc.start()
    try:
        run()
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    slice_bytes = shape[0] * shape[1] * 4
    assert peak < 3 * slice_bytes / 4, (
        f"peak traced {peak / 2**20:.1f} MiB on a {slice_bytes / 2**20:.0f} MiB slice"
    )


@pytest.fixture
def viewer_on(make_napari_viewer, spawn: ProcessSpawner, qtbot, monkeypatch) -> Callable[..., tuple]:
    """Factory: a viewer showing ``data``, a stand-in backend, and a connected SAM2 widget."""

    def factory(data: Any, workers: int = 1, **image_kwargs: Any) -> tuple:
        backend = StandinBackend(spawn, workers)
        # These tests count the images a click sends: no prefetch (tests/plugin/test_plugin_embed_ahead.py).
        save(PREFETCH_KEY, False)
        viewer = make_napari_viewer()
        layer = viewer.add_image(data, **image_kwargs)
        widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend, SERVICE)
        assert widget.controller.image is layer
        return viewer, layer, widget, backend

    return factory


def click(widget: SamWidget, qtbot, position: list[float]) -> Applied:
    """Add a prompt point (image data coordinates) and wait for its answer and an idle session."""
    return click_point(widget, qtbot, position, wait_idle_s=5, timeout_ms=TIMEOUT_MS)


def sent_shapes(backend: StandinBackend) -> list[list[int]]:
    with backend.client() as client:
        return list(client.call("info").header["result"]["image_shapes"])


def test_a_click_on_a_scaled_6000_slice_sends_a_window_and_writes_the_disc_exactly(viewer_on, qtbot) -> None:
    shape = (6000, 6000)
    centres = np.array([[4711.0, 5333.0], [4711.0, 5400.0], [300.0, 300.0]])
    image, truth = disc_image(shape, centres, np.array([9.0, 9.0, 9.0]))
    viewer, layer, widget, backend = viewer_on(image, scale=(0.5, 0.5), translate=(7.0, -3.0))
    applied = click(widget, qtbot, [4711.0, 5333.0])
    labels = np.asarray(viewer.layers[POINTS_MASK].data)
    (label_id,) = applied.label_ids
    np.testing.assert_array_equal(labels == label_id, truth == 1)  # exact: native resolution, right place
    assert applied.window is not None and (applied.window.rows, applied.window.cols) == (1024, 1024)
    assert applied.offset == (4702, 5324) and applied.answer is not None and applied.answer.shape == (18, 18)
    assert sent_shapes(backend) == [[1024, 1024]]  # never the 6000² slice
    # A second object nearby: a new id, same window (the worker's cached embedding), the first one kept.
    widget.controller.new_object()
    second = click(widget, qtbot, [4711.0, 5400.0])
    labels = np.asarray(viewer.layers[POINTS_MASK].data)
    assert second.window == applied.window and second.label_ids[0] > label_id
    np.testing.assert_array_equal(labels == second.label_ids[0], truth == 2)
    np.testing.assert_array_equal(labels == label_id, truth == 1)
    assert sent_shapes(backend) == [[1024, 1024]]


def test_a_click_on_slice_k_of_a_large_stack_writes_only_slice_k(viewer_on, qtbot) -> None:
    shape = (2600, 2600)
    image2d, truth = disc_image(shape, np.array([[2000.0, 700.0]]), np.array([12.0]))
    stack = np.zeros((3, *shape), dtype=np.uint8) + 20
    stack[1] = image2d
    viewer, layer, widget, _backend = viewer_on(stack, scale=(2.0, 0.5, 0.5))
    viewer.dims.set_point(0, 2.0)  # world z of slice 1
    applied = click(widget, qtbot, [1.0, 2000.0, 700.0])
    labels = np.asarray(viewer.layers[POINTS_MASK].data)
    (label_id,) = applied.label_ids
    np.testing.assert_array_equal(labels[1] == label_id, truth == 1)
    assert not labels[0].any() and not labels[2].any()


def test_a_disc_cut_by_the_first_window_comes_back_whole(viewer_on, qtbot) -> None:
    shape = (5000, 5000)
    image, truth = disc_image(shape, np.array([[2500.0, 2500.0]]), np.array([400.0]))
    viewer, _layer, widget, _backend = viewer_on(image)
    applied = click(widget, qtbot, [2500.0, 2150.0])  # near the disc's edge: 1024 px around it cut the disc
    labels = np.asarray(viewer.layers[POINTS_MASK].data)
    np.testing.assert_array_equal(labels == applied.label_ids[0], truth == 1)

    def holds_disc(win: Window) -> bool:
        return win.row0 <= 2100 and win.col0 <= 2100 and win.row1 >= 2901 and win.col1 >= 2901

    assert not holds_disc(window_for_prompt(shape, [[2500.5, 2150.5]]))  # the click's window cut the disc
    assert applied.window is not None and holds_disc(applied.window)  # the answer's window holds it


def test_a_20000_zarr_pyramid_is_read_window_by_window_and_labels_go_to_zarr(
    viewer_on, qtbot, monkeypatch
) -> None:
    """A 3-level multiscale image whose level 0 is a 20,000² uint16 zarr array: a click reads one window of
    level 0; the labels (1.6 GB in memory) are a zarr label pyramid on disk past the budget, and the user
    is told."""
    import plugin.view.layers

    monkeypatch.setattr(plugin.view.layers, "LABELS_BUDGET_BYTES", 256 * 1024**2)
    shape = (20000, 20000)
    level0 = zarr.create_array(store={}, shape=shape, chunks=(1024, 1024), dtype="uint16", fill_value=500)
    centre, radius = (15321.0, 4123.0), 11.0
    r0, c0 = int(centre[0]) - 20, int(centre[1]) - 20
    patch, truth_patch = disc_image((41, 41), np.array([[20.0, 20.0]]), np.array([radius]), dtype=np.uint16)
    patch = np.where(truth_patch > 0, 40000, 500).astype(np.uint16)
    level0[r0 : r0 + 41, c0 : c0 + 41] = patch
    counting = CountingArray(level0)
    levels = [counting, np.full((5000, 5000), 500, np.uint16), np.full((1250, 1250), 500, np.uint16)]
    notes: list[str] = []
    viewer, layer, widget, backend = viewer_on(levels, multiscale=True, contrast_limits=(0, 40000))
    assert layer.multiscale
    widget.controller.notify = lambda level, message: notes.append(message)
    counting.reads.clear()
    applied = click(widget, qtbot, list(centre))
    assert counting.reads and max(r[0] * r[1] for r in counting.reads) <= 1024 * 1024
    labels_layer = viewer.layers[POINTS_MASK]
    assert labels_layer.multiscale  # a label pyramid (plugin/labels/pyramid.py), level 0 exact
    level0 = labels_layer.data[0]
    assert isinstance(level0, zarr.Array) and level0.shape == shape
    assert any("zarr" in n for n in notes)
    (label_id,) = applied.label_ids
    written = np.asarray(level0[r0 : r0 + 41, c0 : c0 + 41])
    np.testing.assert_array_equal(written == label_id, truth_patch == 1)
    assert int((np.asarray(level0[r0 - 200 : r0 + 241, c0 - 200 : c0 + 241]) > 0).sum()) == int(
        (truth_patch == 1).sum()
    )
    assert sent_shapes(backend) == [[1024, 1024]]


def test_auto_segment_on_a_3000_slice_runs_in_tiles_and_finds_every_disc_once(viewer_on, qtbot) -> None:
    shape = (3000, 3000)
    centres, radii = scattered_discs(shape, spacing=60, radius_range=(6.0, 10.0), seed=7)
    image, truth = disc_image(shape, centres, radii)
    viewer, _layer, widget, backend = viewer_on(image, workers=2, scale=(0.5, 0.5), translate=(3.0, 4.0))
    box = widget.auto_box
    assert box.tiling.isChecked()  # on by default
    box.tile_size.setValue(1000)
    box.tile_halo.setValue(96)
    assert widget.controller.auto_settings.tile_size == 1000 and load(TILE_SIZE_KEY, 0) == 1000  # kept
    box.toggle_slice()
    qtbot.waitUntil(lambda: widget.controller.applied.get(AUTO) is not None, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: not box.slice_task.running, timeout=10_000)
    labels = np.asarray(viewer.layers[AUTO_MASK].data)
    best, stray, duplicates = disc_scores(labels, truth)
    assert (best >= 0.9).all() and stray == 0 and duplicates == 0  # every disc once, whole
    assert len(np.unique(labels[labels > 0])) == len(centres)
    shapes = sent_shapes(backend)
    assert shapes and all(max(s) <= 1000 + 2 * 96 for s in shapes)  # tiles, never the whole slice
    run = auto_run_of(viewer.layers[AUTO_MASK].metadata)  # what its exports' provenance records
    assert run is not None and run["operation"] == "tiled_auto"
    assert {k: run["tile_grid"][k] for k in ("tile", "halo", "slice_shape")} == {
        "tile": 1000,
        "halo": 96,
        "slice_shape": [3000, 3000],
    }


def test_auto_segment_stack_of_large_slices_keeps_one_id_per_disc_through_z(viewer_on, qtbot) -> None:
    shape = (1500, 1500)
    centres, radii = scattered_discs(shape, spacing=100, radius_range=(8.0, 12.0), seed=3)
    slices = [disc_image(shape, centres + [0.0, 2.0 * z], radii) for z in range(3)]  # drifting a little
    stack = np.stack([image for image, _truth in slices])
    viewer, _layer, widget, _backend = viewer_on(stack, workers=2)
    box = widget.auto_box
    assert box.link_stack.isChecked()  # on by default
    box.toggle_stack()
    qtbot.waitUntil(lambda: not box.stack_task.running, timeout=3 * TIMEOUT_MS)
    labels = np.asarray(viewer.layers[AUTO_MASK].data)
    for z, (_image, truth) in enumerate(slices):
        best, stray, duplicates = disc_scores(labels[z], truth)
        assert (best >= 0.9).all() and stray == 0 and duplicates == 0
    truths = [truth for _image, truth in slices]
    ids_per_disc = [{int(labels[z][t == k + 1][0]) for z, t in enumerate(truths)} for k in range(len(radii))]
    assert all(len(ids) == 1 for ids in ids_per_disc)  # one id through z
    assert len(np.unique(labels[labels > 0])) == len(centres)
    # "One id through z/t" off: every slice's objects get their own ids.
    viewer.layers.remove(AUTO_MASK)
    box.link_stack.setChecked(False)
    box.toggle_stack()
    qtbot.waitUntil(lambda: not box.stack_task.running, timeout=3 * TIMEOUT_MS)
    labels = np.asarray(viewer.layers[AUTO_MASK].data)
    assert len(np.unique(labels[labels > 0])) == 3 * len(centres)


def test_a_huge_single_resolution_image_gets_a_clear_warning() -> None:
    """The warning is computed from the layer's shape only. (napari itself reads a single-resolution slice
    whole to draw it, 2 GB and a minute here, hence a layer-like stand-in instead of an Image layer.)"""
    from types import SimpleNamespace

    import dask.array as da

    from plugin.view.layers import size_warning

    huge = CountingArray(da.zeros((30000, 30000), dtype=np.uint16, chunks=(4096, 4096)))
    layer = SimpleNamespace(data=huge, multiscale=False, rgb=False, name="mosaic")
    warning = size_warning(layer)  # type: ignore[arg-type]
    assert warning is not None and "30000 x 30000" in warning and "not a pyramid" in warning
    assert "zarr" in warning  # its labels (3.4 GiB) would not be held in memory
    assert not huge.reads
    pyramid = SimpleNamespace(data=[huge, huge], multiscale=True, rgb=False, name="pyramid")
    assert "not a pyramid" not in (size_warning(pyramid) or "")  # type: ignore[arg-type]


def test_real_sam2_worker_answers_a_windowed_click_on_a_2500_by_2000_image(
    make_napari_viewer, make_backend, qtbot, monkeypatch
) -> None:
    """Random weights: the mask is meaningless, so only what is deterministic is checked: the window sent,
    the answer's offset and shape inside it, and that the labels hold exactly the answer there."""
    backend = make_backend(workers=1)
    image, _truth = disc_image((2500, 2000), np.array([[1800.0, 300.0]]), np.array([40.0]))
    viewer = make_napari_viewer()
    viewer.add_image(image, scale=(0.5, 0.5))
    widget = dock_widget(viewer, qtbot, monkeypatch, backend.frontend)
    applied = click(widget, qtbot, [1800.0, 300.0])
    win = applied.window
    # Random-weight masks are arbitrary and often run into the window's border, so the window may have
    # grown (up to the whole slice, averaged down): what was sent is never larger than the model's input.
    assert win is not None and max(win.sent_shape) <= 1024 and win.slice_shape == (2500, 2000)
    assert win.row0 <= 1800 < win.row1 and win.col0 <= 300 < win.col1
    labels = np.asarray(viewer.layers[POINTS_MASK].data)
    assert not labels[: win.row0].any() and not labels[win.row1 :].any()
    assert not labels[:, : win.col0].any() and not labels[:, win.col1 :].any()
    if applied.label_ids:
        assert applied.answer is not None
        r0, c0 = applied.offset
        h, w = applied.answer.shape
        assert win.row0 <= r0 and r0 + h <= win.row1 and win.col0 <= c0 and c0 + w <= win.col1
        np.testing.assert_array_equal(labels[r0 : r0 + h, c0 : c0 + w] > 0, applied.answer)
        assert int((labels > 0).sum()) == int(applied.answer.sum())


def test_names_on_a_6000_slice_are_placed_from_at_most_2048_squared_pixels() -> None:
    from plugin.labels.names import label_anchors
    from plugin.view.name_overlay import bounded_anchors

    _image, truth = disc_image((6000, 6000), np.array([[4000.0, 4100.0]]), np.array([50.0]))
    labels = CountingArray(truth * 5)
    exact = label_anchors(truth * 5, [5])[5]
    zoomed = bounded_anchors(labels, [5], (3500, 3500, 4500, 4500))  # in view: read at full resolution
    assert zoomed == {5: exact} and labels.reads == [(1000, 1000)]
    whole = bounded_anchors(labels, [5], None)  # zoomed out: strided
    assert max(r[0] * r[1] for r in labels.reads) <= 2048 * 2048
    assert abs(whole[5][0] - exact[0]) <= 3 and abs(whole[5][1] - exact[1]) <= 3


def test_auto_segment_on_a_large_slice_never_holds_a_slice_sized_array(viewer_on, qtbot) -> None:
    """Tiled AUTO-SEGMENT stitches into compressed tile cores and pastes them core by core: the plugin's
    peak extra memory (traced) stays below one uint32 copy of the slice (~25 MiB: a few tiles against 64 MiB);
    the paste is one undo step."""
    from plugin.view.layers import ensure_labels

    shape = (4096, 4096)
    centres, radii = scattered_discs(shape, spacing=400, radius_range=(8.0, 12.0), seed=5)
    image, truth = disc_image(shape, centres, radii)
    viewer, layer, widget, _backend = viewer_on(image, workers=1)
    labels_layer = ensure_labels(viewer, layer, AUTO_MASK)
    labels_layer.data[:5, :5] = 77  # a label already there: kept (add without overwriting)
    box = widget.auto_box
    viewer.window.show()  # a hidden canvas has no texture: napari would redraw the whole slice per write
    qtbot.wait(300)

    def auto_slice() -> None:
        box.toggle_slice()
        qtbot.waitUntil(lambda: widget.controller.applied.get(AUTO) is not None, timeout=TIMEOUT_MS)
        qtbot.waitUntil(lambda: not box.slice_task.running, timeout=10_000)

    assert_peak_below_a_slice(auto_slice, shape)
    labels = np.asarray(labels_layer.data)
    assert (labels[:5, :5] == 77).all()
    best, stray, duplicates = disc_scores(np.where(labels == 77, 0, labels), truth)
    assert (best >= 0.9).all() and stray == 0 and duplicates == 0
    applied = widget.controller.applied[AUTO]
    assert len(applied.label_ids) == len(centres) and min(applied.label_ids) > 77
    history = widget.controller.histories(labels_layer)
    assert history.undo()  # one step undoes the whole run
    labels = np.asarray(labels_layer.data)
    assert int((labels > 0).sum()) == 25 and (labels[:5, :5] == 77).all()


def test_auto_segment_stack_of_large_slices_never_holds_a_slice_sized_array(viewer_on, qtbot) -> None:
    """AUTO-SEGMENT STACK on 4,096² slices: tiles stitched compressed, slices linked band by band and pasted
    rectangle by rectangle, so the peak extra memory (traced) stays below one uint32 copy of a slice (~26 MiB
    against 64 MiB)."""
    from plugin.view.layers import ensure_labels

    shape = (4096, 4096)
    centres, radii = scattered_discs(shape, spacing=500, radius_range=(8.0, 12.0), seed=6)
    slices = [disc_image(shape, centres + [0.0, 3.0 * z], radii) for z in range(2)]
    stack = np.stack([image for image, _truth in slices])
    viewer, layer, widget, _backend = viewer_on(stack, workers=1)
    labels_layer = ensure_labels(viewer, layer, AUTO_MASK)
    box = widget.auto_box
    viewer.window.show()
    qtbot.wait(300)

    def auto_stack() -> None:
        box.toggle_stack()
        qtbot.waitUntil(lambda: not box.stack_task.running, timeout=2 * TIMEOUT_MS)

    assert_peak_below_a_slice(auto_stack, shape)
    labels = np.asarray(labels_layer.data)
    for z, (_image, truth) in enumerate(slices):
        best, stray, duplicates = disc_scores(labels[z], truth)
        assert (best >= 0.9).all() and stray == 0 and duplicates == 0
    ids = [
        {int(labels[z][truth == k + 1][0]) for z, (_i, truth) in enumerate(slices)} for k in range(len(radii))
    ]
    assert all(len(i) == 1 for i in ids)  # one id through z


def test_intersection_on_a_large_slice_reads_only_the_labels_box(viewer_on, qtbot, monkeypatch) -> None:
    """Refining a label on a 6000² slice clears it outside the new mask wherever it was painted, reading
    only the union of the label's box (kept from every change) and the answer's."""
    import plugin.jobs.segment
    from plugin.labels.ops import LabelMode

    shape = (6000, 6000)
    image, truth = disc_image(shape, np.array([[3000.0, 3000.0]]), np.array([30.0]))
    viewer, _layer, widget, _backend = viewer_on(image)
    first = click(widget, qtbot, [3000.0, 3000.0])
    (label_id,) = first.label_ids
    labels_layer = viewer.layers[POINTS_MASK]
    labels_layer.data_setitem((np.array([3100, 3101]), np.array([3200, 3200])), label_id)  # painted by hand
    reads: list[int] = []
    real = plugin.jobs.segment.compute_edit_at

    def recording(labels: Any, *args: Any) -> Any:
        class Reads:
            shape, dtype = labels.shape, labels.dtype

            def __getitem__(self, key: Any) -> np.ndarray:
                value = labels[key]
                reads.append(int(value.size))
                return value

        return real(Reads(), *args)

    monkeypatch.setattr(plugin.jobs.segment, "compute_edit_at", recording)
    widget.controller.set_mode(LabelMode.INTERSECTION, labels_layer, label_id)
    viewer.layers[PROMPT_POINTS].data = np.empty((0, 2))
    click(widget, qtbot, [3000.0, 3000.0])
    labels = np.asarray(labels_layer.data)
    np.testing.assert_array_equal(labels == label_id, truth == 1)  # the hand-painted pixels are gone
    assert reads and max(reads) <= 250 * 250  # the disc (61²) to the painted pixels, never 6000²


def test_an_answer_on_labels_wider_than_the_largest_texture_redraws_only_its_box(
    make_napari_viewer, qtbot
) -> None:
    """napari draws labels wider than GL_MAX_TEXTURE_SIZE from a strided copy; a write must not redraw the
    whole slice (seconds per answer on 20,000²) but patch the texture (plugin.view.napari_redraw)."""
    from napari._vispy.utils.gl import get_max_texture_sizes

    from plugin.labels.ops import SliceEdit
    from plugin.view import napari_redraw
    from plugin.view.coords import plane_at
    from plugin.view.layers import write_edit

    assert napari_redraw.install()
    longest = int(get_max_texture_sizes()[0]) + 100
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_labels(np.zeros((longest, 64), np.uint32))
    qtbot.wait(200)
    visual = viewer.window._qt_viewer.canvas.layer_to_visual[layer]
    assert tuple(visual.node._texture.shape[:2]) == ((longest + 1) // 2, 64)  # napari's strided copy
    full: list[int] = []
    real_refresh = layer.refresh
    layer.refresh = lambda *a, **k: (full.append(1), real_refresh(*a, **k))  # type: ignore[method-assign]
    plane = plane_at([0, 0], layer.data.shape, (0, 1))
    rows, cols = np.nonzero(np.ones((9, 9), bool))
    write_edit(
        layer, plane, SliceEdit(rows + 100, cols + 5, np.zeros(81, np.uint32), np.full(81, 4, np.uint32))
    )
    assert full == []
    assert (np.asarray(layer.data[100:109, 5:14]) == 4).all()
