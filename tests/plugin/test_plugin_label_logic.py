"""Label control, undo/redo, stacks, events log: pure logic and napari layer models (no Qt, no backend).

The undo tests drive a real napari ``Labels`` model through the plugin's
own write paths (``compute_edit`` + ``write_edit`` for answers in every
mode, ``delete_labels`` / ``merge_labels``), 25 steps deep, and check every
intermediate state, names included, on the way back and forth.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from plugin.connection.latest_only import LatestOnly
from plugin.events_log import CONNECT, ERROR, REQUEST, EventLog
from plugin.labels import stats as label_stats
from plugin.labels.edits import delete_labels, merge_labels
from plugin.labels.history import Histories, LabelHistory, atom_changes, set_names
from plugin.labels.names import METADATA_KEY, names_from_metadata
from plugin.labels.ops import LabelMode, compute_edit
from plugin.labels.watch import LabelWatcher
from plugin.view import coords, image_slice
from plugin.view.layers import write_edit
from protocol.wire import wire_image
from tests.support.processes import wait_until

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def label_stacks(dtype: Any, largest: tuple[int, int, int], max_id: int) -> st.SearchStrategy[np.ndarray]:
    """(Z, H, W) label stacks of ``dtype``, each side 1 .. its ``largest``, ids 0 .. ``max_id``."""
    shapes = st.tuples(*(st.integers(1, n) for n in largest))
    return hnp.arrays(dtype, shapes, elements=st.integers(0, max_id))


# -- counts ------------------------------------------------------------------------------------


@FAST
@given(label_stacks(np.uint16, (6, 7, 5), 9))
def test_slab_counts_equal_a_plain_count(data: np.ndarray) -> None:
    expected = {int(i): int((data == i).sum()) for i in np.unique(data) if i}
    assert label_stats.pixel_counts(data, slab_voxels=7) == expected
    assert label_stats.pixel_counts(data) == expected


def test_huge_ids_are_counted_without_a_huge_bincount() -> None:
    data = np.array([[0, 2**31, 2**31], [5, 0, 2**31]], dtype=np.uint32)
    assert label_stats.pixel_counts(data) == {5: 1, 2**31: 3}


@FAST
@given(st.data())
def test_counts_follow_changes_without_a_rescan(draw: st.DataObject) -> None:
    data = draw.draw(hnp.arrays(np.uint8, (5, 6), elements=st.integers(0, 4)))
    counts = label_stats.LabelCounts(label_stats.pixel_counts(data))
    for _ in range(4):
        mask = draw.draw(hnp.arrays(np.bool_, data.shape))
        value = draw.draw(st.integers(0, 6))
        old = data[mask].copy()
        data[mask] = value
        counts.apply(old, value if draw.draw(st.booleans()) else np.full(old.shape, value))
        assert counts.as_dict() == label_stats.pixel_counts(data)


def test_rows_list_present_and_named_labels() -> None:
    rows = label_stats.label_rows({3: 10, 1: 4}, {1: "nucleus", 7: "lost"})
    assert [(r.label_id, r.name, r.pixels) for r in rows] == [(1, "nucleus", 4), (3, "", 10), (7, "lost", 0)]


# -- where a label is --------------------------------------------------------------------------


def test_locate_prefers_the_current_slice_then_the_first_one() -> None:
    data = np.zeros((4, 5, 6, 7), np.uint32)
    data[2, 3, 1, 1] = 9
    data[3, 0, 2, 2] = 9
    data[1, 4, 0, 0] = 5
    here = (3, 0, None, None)
    assert label_stats.locate(data, 9, (2, 3), here) == here  # on the shown slice: stay
    assert label_stats.locate(data, 9, (2, 3), (0, 0, None, None)) == (2, 3, None, None)
    assert label_stats.locate(data, 5, (2, 3), (0, 0, None, None)) == (1, 4, None, None)
    assert label_stats.locate(data, 4, (2, 3), (0, 0, None, None)) is None
    # a transposed view: rows along axis 1, columns along axis 3, slices along axes 0 and 2
    assert label_stats.locate(data, 5, (1, 3), (0, None, 3, None)) == (1, None, 0, None)
    assert label_stats.locate(data[0, 0], 0, (0, 1), (None, None)) == (None, None)  # 2D


# -- delete and merge plans ---------------------------------------------------------------------


@FAST
@given(
    label_stacks(np.uint32, (5, 6, 6), 5),
    st.sets(st.integers(1, 5), min_size=1, max_size=3),
    st.integers(1, 6),
)
def test_plans_change_exactly_the_chosen_labels(data: np.ndarray, ids: set[int], target: int) -> None:
    deleted = data.copy()
    change = label_stats.plan_delete(data, ids, slab_voxels=5)
    deleted[change.indices] = change.new
    np.testing.assert_array_equal(deleted, np.where(np.isin(data, list(ids)), 0, data))
    merged = data.copy()
    change = label_stats.plan_merge(data, ids, target, slab_voxels=5)
    merged[change.indices] = change.new
    np.testing.assert_array_equal(merged, np.where(np.isin(data, list(ids)), target, data))
    assert change.size == int(np.isin(data, list(ids - {target})).sum())


def test_names_after_delete_and_merge() -> None:
    names = {1: "cell", 2: "debris", 4: "nucleus"}
    assert label_stats.names_after_delete(names, [2, 9]) == {1: "cell", 4: "nucleus"}
    assert label_stats.names_after_merge(names, [2, 4], 1) == {1: "cell"}  # the target keeps its name
    assert label_stats.names_after_merge(names, [2, 4], 3) == {
        1: "cell",
        3: "debris",
    }  # unnamed target inherits
    with pytest.raises(ValueError):
        label_stats.plan_merge(np.zeros((2, 2), np.uint8), [1], 0)


# -- undo / redo (napari Labels model) --------------------------------------------------------------


def _layer(shape: tuple[int, ...] = (3, 24, 24)):
    from napari.layers import Labels

    layer = Labels(np.zeros(shape, np.uint32), metadata={METADATA_KEY: {}})
    return layer


def _answer(
    layer, history: LabelHistory, plane: coords.SlicePlane, mask: np.ndarray, label_id: int, mode: LabelMode
) -> None:
    """Write one answer exactly as the controller does (one step)."""
    labels2d = np.asarray(layer.data[plane.numpy_index()])
    edit, _ = compute_edit(labels2d, mask, label_id, mode)
    write_edit(layer, plane, edit)


def test_25_steps_of_every_kind_undo_and_redo_with_names() -> None:
    layer = _layer()
    history = LabelHistory(layer)
    rng = np.random.default_rng(3)
    states = [(layer.data.copy(), names_from_metadata(layer.metadata))]
    kinds = ["add", "union", "intersection", "overwrite", "add", "merge", "add", "delete"]
    made = dict.fromkeys(kinds, 0)
    next_id, attempt = 1, 0
    while len(states) <= 25:
        kind = kinds[attempt % len(kinds)] if next_id > 3 else "add"
        attempt += 1
        depth = history.undo_depth
        present = [int(i) for i in np.unique(layer.data) if i]
        if kind == "delete":
            delete_labels(history, present[-1:])
        elif kind == "merge":
            merge_labels(history, present[1:2], present[0])
        else:
            if kind == "add":
                label_id, z = next_id, attempt % 3
                next_id += 1
            else:  # refine a label on a slice where it is
                label_id = int(rng.choice(present))
                z = int(np.flatnonzero((layer.data == label_id).any(axis=(1, 2)))[0])
            plane = coords.plane_at([z, 0, 0], layer.data.shape, (1, 2))
            labels2d = layer.data[plane.numpy_index()]
            mask = np.zeros((24, 24), bool)
            r, c = rng.integers(0, 16, 2)
            mask[r : r + 8, c : c + 8] = True
            if kind != "add":
                mask |= np.roll(labels2d == label_id, 2, axis=1)  # overlapping: every mode changes pixels
            _answer(layer, history, plane, mask, label_id, LabelMode(kind))
            set_names(layer, {**names_from_metadata(layer.metadata), label_id: f"object {label_id}"})
        if history.undo_depth > depth:
            made[kind] += 1
            states.append((layer.data.copy(), names_from_metadata(layer.metadata)))
    assert history.undo_depth == 25 and min(made.values()) >= 2, made
    for data, names in reversed(states[:-1]):
        assert history.undo()
        np.testing.assert_array_equal(layer.data, data)
        # every label present has the name it had then (deleted and merged names come back)
        present = {int(i) for i in np.unique(data) if i}
        now = names_from_metadata(layer.metadata)
        assert {i: now.get(i) for i in present} == {i: names.get(i) for i in present}
    assert not history.undo() and not layer.data.any()
    for data, names in states[1:]:
        assert history.redo()
        np.testing.assert_array_equal(layer.data, data)
        present = {int(i) for i in np.unique(data) if i}
        now = names_from_metadata(layer.metadata)
        assert {i: now.get(i) for i in present} == {i: names.get(i) for i in present}
    assert not history.redo()


def test_a_deleted_labels_name_comes_back_on_undo_and_goes_on_redo() -> None:
    layer = _layer((2, 10, 10))
    layer.data[0, :3, :3] = 1
    layer.data[1, 5:, 5:] = 2
    set_names(layer, {1: "cell", 2: "debris"})
    history = LabelHistory(layer)
    assert delete_labels(history, [2]) == 25
    assert names_from_metadata(layer.metadata) == {1: "cell"}
    assert merge_labels(history, [1], 7) == 9
    assert names_from_metadata(layer.metadata) == {7: "cell"}
    assert history.undo() and names_from_metadata(layer.metadata) == {1: "cell"}
    assert history.undo() and names_from_metadata(layer.metadata) == {1: "cell", 2: "debris"}
    assert (layer.data == 2).sum() == 25
    set_names(layer, {**names_from_metadata(layer.metadata), 5: "renamed meanwhile"})
    assert history.redo() and names_from_metadata(layer.metadata) == {1: "cell", 5: "renamed meanwhile"}
    assert history.redo() and names_from_metadata(layer.metadata) == {7: "cell", 5: "renamed meanwhile"}
    # a brush stroke (napari's own history) in between undoes in order with the plugin's edits
    layer.data_setitem((np.array([0]), np.array([9]), np.array([9])), 3)
    assert history.undo() and layer.data[0, 9, 9] == 0
    assert history.undo() and names_from_metadata(layer.metadata) == {1: "cell", 5: "renamed meanwhile"}


def test_ctrl_z_on_the_layer_goes_through_the_plugin_history() -> None:
    layer = _layer((1, 6, 6))
    layer.data[0, 0, 0] = 4
    set_names(layer, {4: "cell"})
    histories = Histories()
    history = histories(layer)
    assert histories(layer) is history
    delete_labels(history, [4])
    bound = [layer.keymap[k] for k in layer.keymap if str(k) in ("Ctrl+Z", "Control+Z")]
    assert bound, layer.keymap
    bound[0](layer)  # what napari calls for Ctrl+Z with the layer active
    assert layer.data[0, 0, 0] == 4 and names_from_metadata(layer.metadata) == {4: "cell"}


def test_squash_makes_slice_by_slice_writes_one_step() -> None:
    layer = _layer((4, 8, 8))
    history = LabelHistory(layer)
    steps = []
    for z in range(4):
        plane = coords.plane_at([z, 0, 0], layer.data.shape, (1, 2))
        mask = np.zeros((8, 8), bool)
        mask[z : z + 2, 1:3] = True
        with history.capture() as captured:
            _answer(layer, history, plane, mask, 5, LabelMode.ADD)
        steps.extend(captured)
    assert history.undo_depth == 4 and history.squash(steps)
    assert history.undo_depth == 1
    history.undo()
    assert not layer.data.any()
    history.redo()
    assert (layer.data == 5).sum() == 16
    assert not history.squash(steps)  # no longer the newest steps: left alone


def test_atom_changes_of_masked_paint_and_setitem() -> None:
    layer = _layer((6, 6))
    layer.data_setitem((np.array([0, 1]), np.array([0, 1])), 3)
    layer.paint((4, 4), 2)  # brush: a masked paint atom
    steps = list(layer._undo_history)
    assert atom_changes(steps[0], undoing=False)[0][1].tolist() == [3, 3]
    old, new = atom_changes(steps[1], undoing=True)[0]
    assert set(old.tolist()) == {2} and set(new.tolist()) == {0, 3}  # the brush covered a 3


def test_watcher_counts_follow_edits_undo_and_replacement() -> None:
    layer = _layer((2, 8, 8))
    histories = Histories()
    changes: list[int] = []
    watcher = LabelWatcher(histories, lambda: changes.append(1))
    watcher.watch(layer)
    history = histories(layer)
    plane = coords.plane_at([1, 0, 0], layer.data.shape, (1, 2))
    mask = np.zeros((8, 8), bool)
    mask[:2, :3] = True
    _answer(layer, history, plane, mask, 2, LabelMode.ADD)
    layer.paint((0, 6, 6), 9)  # the brush
    assert watcher.counts.as_dict() == label_stats.pixel_counts(layer.data)
    delete_labels(history, [2])
    history.undo()
    history.undo()
    assert watcher.counts.as_dict() == label_stats.pixel_counts(layer.data) == {2: 6}
    assert watcher.recounts == 1  # all by changes, no rescans
    layer.data = np.ones((2, 8, 8), np.uint32)
    assert watcher.counts.as_dict() == {1: 128} and watcher.recounts == 2
    watcher.close()


# -- stacks -----------------------------------------------------------------------------------------


def test_stack_slices_match_single_slices_for_any_view() -> None:
    data = np.arange(4 * 5 * 6 * 7, dtype=np.uint16).reshape(4, 5, 6, 7)
    for displayed, point in (((2, 3), [1, 2, 0, 0]), ((1, 3), [1, 0, 3, 0]), ((0, 2), [0, 4, 0, 5])):
        plane = coords.plane_at(point, data.shape, displayed)
        axis = image_slice.stack_axis(plane)
        assert axis == min(a for a in range(4) if a not in displayed)
        stack = image_slice.extract_stack(data, plane, axis, rgb=False)
        for z in range(stack.shape[0]):
            np.testing.assert_array_equal(
                stack[z], image_slice.extract_slice(data, image_slice.plane_on(plane, axis, z), False)
            )
    rgb = np.zeros((3, 4, 5, 3), np.uint8)
    plane = coords.plane_at([2, 0, 0], rgb.shape[:-1], (1, 2))
    assert image_slice.extract_stack(rgb, plane, 0, rgb=True).shape == (3, 4, 5, 3)
    assert image_slice.stack_axis(coords.plane_at([0, 0], (4, 5), (0, 1))) is None
    wire = wire_image.stack_to_wire(data[:, 0].astype(np.float64), (0, 100))
    assert wire.pixels.dtype == np.float32 and wire.contrast_limits == (0.0, 100.0) and wire.frames == 4
    assert wire.size == (6, 7)


# -- events log -------------------------------------------------------------------------------------


def test_events_log_keeps_the_newest_first_and_is_thread_safe() -> None:
    ticks = iter(range(10_000))
    log = EventLog(capacity=50, clock=lambda: float(next(ticks)))
    seen = []
    log.listeners.append(seen.append)
    log.record(CONNECT, detail="tcp://127.0.0.1:5555")
    threads = [
        threading.Thread(
            target=lambda k=k: [log.record(REQUEST, "segment", f"r{k}-{i}", 12.5) for i in range(30)]
        )
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.record(ERROR, "segment", "abc", 3.0, detail="no_worker:   no   worker")
    recent = log.recent()
    assert len(recent) == 50 and len(seen) == 122
    assert recent[0].kind == ERROR and recent[0].detail == "no_worker: no worker"
    assert [e.time_s for e in recent] == sorted((e.time_s for e in recent), reverse=True)
    assert recent[1].row()[1:5] == (
        "request",
        "segment",
        recent[1].request_id[:8],
        "12",
    )  # 12.5 ms rounds half to even
    with pytest.raises(ValueError):
        log.record("reboot")


# -- latest-only runner ------------------------------------------------------------


def test_latest_only_delivers_only_newest_and_runs_one_at_a_time() -> None:
    runner: LatestOnly[int] = LatestOnly()
    gate = threading.Event()
    running = 0
    max_running = 0
    started: list[int] = []
    lock = threading.Lock()

    def job(i: int):
        def run() -> int:
            nonlocal running, max_running
            with lock:
                running += 1
                max_running = max(max_running, running)
                started.append(i)
            if i == 0:
                gate.wait(5)
            with lock:
                running -= 1
            return i

        return run

    delivered: list[int] = []
    runner.submit(job(0), delivered.append)
    assert wait_until(lambda: started == [0], 5)  # job 0 is in flight
    for i in range(1, 5):
        runner.submit(job(i), delivered.append)
    gate.set()
    assert runner.wait_idle(5)
    assert delivered == [4]  # job 0 finished but was superseded; 1-3 never ran
    assert started == [0, 4]
    assert max_running == 1
    assert runner.superseded == 4


def test_latest_only_delivers_errors_of_the_newest_job() -> None:
    runner: LatestOnly[int] = LatestOnly()
    errors: list[Exception] = []

    def fail() -> int:
        raise ValueError("backend said no")

    runner.submit(fail, lambda r: None, errors.append)
    assert runner.wait_idle(5)
    assert [str(e) for e in errors] == ["backend said no"]
