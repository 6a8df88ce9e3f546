# One file on purpose: the plugin's fast pure-logic tests, one section per module, no viewer or backend.
"""Pure logic of the napari plugin: ids, label modes, names, coordinates, slicing, dtypes, export.

No viewer and no backend: napari layer *models* (Qt-free) are used where the
real ``world_to_data`` matters.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from plugin import export
from plugin.connection import backend
from plugin.labels import names as label_names
from plugin.labels import ops as label_ops
from plugin.labels.ops import LabelMode
from plugin.view import coords, image_slice, prompts
from protocol.wire import wire_image

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- label ids -----------------------------------------------------------------


def test_tracker_scans_once_and_never_reuses_ids() -> None:
    tracker = label_ops.LabelIdTracker()
    scans: list[int] = []

    def data_max() -> int:
        scans.append(1)
        return 7

    assert tracker.allocate("layer", data_max) == 8
    assert tracker.allocate("layer", data_max) == 9
    assert len(scans) == 1  # the full scan happens only on first use
    # the label with id 9 was deleted: its id still is not reused
    assert tracker.allocate("layer", lambda: 0, seen=3) == 10
    assert tracker.allocate("layer", data_max, count=5) == 11
    assert tracker.allocate("layer", data_max) == 16
    tracker.observe("layer", 40)  # the user painted label 40
    assert tracker.allocate("layer", data_max, seen=2) == 41
    assert tracker.allocate("other", lambda: 0) == 1


def test_tracker_refuses_ids_the_dtype_cannot_hold() -> None:
    tracker = label_ops.LabelIdTracker()
    with pytest.raises(label_ops.LabelIdOverflow):
        tracker.allocate("small", lambda: 255, max_id=label_ops.dtype_max_id(np.dtype(np.uint8)))


@FAST
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(0, 50)), min_size=1, max_size=30))
def test_tracker_ids_are_unique_and_above_everything_seen(ops: list[tuple[int, int]]) -> None:
    tracker = label_ops.LabelIdTracker()
    given_out: list[int] = []
    for count, seen in ops:
        first = tracker.allocate("k", lambda: 3, count=count, seen=seen)
        assert first > max([3, seen, *given_out])
        given_out.extend(range(first, first + count))
    assert len(given_out) == len(set(given_out))


# -- label modes -----------------------------------------------------------------

labels_2d = hnp.arrays(
    np.uint32, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 4)
)


@st.composite
def labels_and_mask(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    labels = draw(labels_2d)
    mask = draw(hnp.arrays(np.bool_, labels.shape))
    return labels, mask


def reference(labels: np.ndarray, mask: np.ndarray, label_id: int, mode: LabelMode) -> np.ndarray:
    """The modes written as whole-array numpy, the obvious way."""
    out = labels.copy()
    if mode in (LabelMode.ADD, LabelMode.UNION):
        out[mask] = label_id
    elif mode is LabelMode.INTERSECTION:
        out[(labels == label_id) & ~mask] = 0
    else:
        out[(labels == label_id) & ~mask] = 0
        out[mask] = label_id
    return out


@FAST
@given(labels_and_mask(), st.integers(1, 5), st.sampled_from(list(LabelMode)))
def test_compute_edit_matches_the_reference(case: tuple[np.ndarray, np.ndarray], label_id: int, mode) -> None:
    labels, mask = case
    edit, cumulative = label_ops.compute_edit(labels, mask, label_id, mode)
    result = labels.copy()
    edit.apply(result)
    np.testing.assert_array_equal(result, reference(labels, mask, label_id, mode))
    # the edit lists exactly the changed pixels, with their old values
    assert edit.size == int((result != labels).sum())
    np.testing.assert_array_equal(labels[edit.rows, edit.cols], edit.old)
    # a fresh object: the cumulative change equals the change
    np.testing.assert_array_equal(cumulative.new, edit.new)


def test_refine_modes_by_hand() -> None:
    labels = np.array(
        [
            [0, 1, 1, 0],
            [0, 1, 1, 2],
            [0, 0, 2, 2],
        ],
        dtype=np.uint32,
    )
    mask = np.array(
        [
            [0, 0, 1, 1],
            [0, 0, 1, 1],
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )

    def run(mode: LabelMode) -> np.ndarray:
        edit, _ = label_ops.compute_edit(labels, mask, 1, mode)
        out = labels.copy()
        edit.apply(out)
        return out

    np.testing.assert_array_equal(run(LabelMode.UNION), [[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 2, 2]])
    np.testing.assert_array_equal(run(LabelMode.INTERSECTION), [[0, 0, 1, 0], [0, 0, 1, 2], [0, 0, 2, 2]])
    np.testing.assert_array_equal(run(LabelMode.OVERWRITE), [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 2, 2]])


@FAST
@given(labels_and_mask(), st.data(), st.integers(1, 5), st.sampled_from(list(LabelMode)))
def test_a_newer_answer_replaces_the_previous_one_for_the_same_object(
    case: tuple[np.ndarray, np.ndarray], data: st.DataObject, label_id: int, mode: LabelMode
) -> None:
    labels, first_mask = case
    second_mask = data.draw(hnp.arrays(np.bool_, labels.shape))
    current = labels.copy()
    edit1, cumulative1 = label_ops.compute_edit(current, first_mask, label_id, mode)
    edit1.apply(current)
    edit2, _ = label_ops.compute_edit(current, second_mask, label_id, mode, previous=cumulative1)
    edit2.apply(current)
    # as if only the second answer had ever been written on the baseline
    np.testing.assert_array_equal(current, reference(labels, second_mask, label_id, mode))


def test_edits_touch_only_the_bounding_box() -> None:
    labels = np.zeros((50, 60), np.uint32)
    labels[0, 0] = 3
    mask = np.zeros_like(labels, dtype=bool)
    mask[20:25, 30:33] = True
    edit, _ = label_ops.compute_edit(labels, mask, 4, LabelMode.ADD)
    assert edit.size == 15
    assert edit.rows.min() == 20 and edit.rows.max() == 24
    assert edit.cols.min() == 30 and edit.cols.max() == 32


def test_empty_mask_changes_nothing_in_add_mode() -> None:
    labels = np.ones((5, 5), np.uint32)
    edit, _ = label_ops.compute_edit(labels, np.zeros((5, 5), bool), 2, LabelMode.ADD)
    assert edit.size == 0


def test_compute_paste_offsets_auto_ids_on_top() -> None:
    labels = np.array([[5, 5, 0], [0, 0, 0]], dtype=np.uint32)
    auto = np.array([[0, 1, 1], [2, 0, 0]], dtype=np.uint32)
    edit = label_ops.compute_paste(labels, auto, first_id=10)
    out = labels.copy()
    edit.apply(out)
    np.testing.assert_array_equal(out, [[5, 10, 10], [11, 0, 0]])
    with pytest.raises(label_ops.LabelIdOverflow):
        label_ops.compute_paste(labels.astype(np.uint8), auto, first_id=255)


def test_mask_shape_must_match() -> None:
    with pytest.raises(ValueError, match="same 2D shape"):
        label_ops.compute_edit(np.zeros((3, 3), np.uint32), np.zeros((3, 4), bool), 1, LabelMode.ADD)


# -- names --------------------------------------------------------------------------


def test_names_survive_json_metadata() -> None:
    names = label_names.with_name({}, 3, "  cell\nnucleus ")
    names = label_names.with_name(names, 1, "membrane")
    assert names == {1: "membrane", 3: "cell nucleus"}
    as_json = json.loads(json.dumps({label_names.METADATA_KEY: names}))  # int keys become str
    assert label_names.names_from_metadata(as_json) == names
    assert label_names.with_name(names, 1, " ") == {3: "cell nucleus"}
    assert label_names.features_table(names) == {"index": [1, 3], "name": ["membrane", "cell nucleus"]}
    with pytest.raises(ValueError):
        label_names.with_name(names, 0, "background")
    assert label_names.names_from_metadata({label_names.METADATA_KEY: {"x": "bad", "-1": "neg"}}) == {}


def test_anchor_is_the_centroid_or_a_pixel_of_the_region() -> None:
    labels = np.zeros((20, 20), np.int32)
    labels[2:6, 2:6] = 1  # square: centroid (3.5, 3.5)
    labels[10:20, 10] = 2  # a line
    labels[10, 10:20] = 2  # ... and another: an L whose centroid lies outside it
    anchors = label_names.label_anchors(labels, [1, 2, 9])
    assert anchors[1] == (3.5, 3.5)
    r, c = anchors[2]
    assert labels[int(r), int(c)] == 2
    assert 9 not in anchors


@FAST
@given(hnp.arrays(np.uint16, st.tuples(st.integers(1, 15), st.integers(1, 15)), elements=st.integers(0, 6)))
def test_anchors_lie_on_their_region(labels: np.ndarray) -> None:
    anchors = label_names.label_anchors(labels, [1, 2, 3, 4, 5, 6])
    assert set(anchors) == set(np.unique(labels).tolist()) - {0}
    for label_id, (r, c) in anchors.items():
        assert labels[int(round(r)), int(round(c))] == label_id


# -- coordinates ------------------------------------------------------------------------


@FAST
@given(st.integers(2, 5), st.data())
def test_displayed_axes_map_to_the_last_layer_axes(viewer_ndim: int, data: st.DataObject) -> None:
    layer_ndim = data.draw(st.integers(2, viewer_ndim))
    offset = viewer_ndim - layer_ndim
    pair = data.draw(st.lists(st.integers(offset, viewer_ndim - 1), min_size=2, max_size=2, unique=True))
    rows, cols = coords.layer_displayed_axes(pair, viewer_ndim, layer_ndim)
    assert rows < cols
    assert {rows + offset, cols + offset} == set(pair)


def test_displayed_axes_outside_the_layer_are_refused() -> None:
    with pytest.raises(ValueError, match="2D"):
        coords.layer_displayed_axes([0, 1], 4, 2)


@FAST
@given(
    scale=st.tuples(*[st.floats(0.1, 10)] * 3),
    translate=st.tuples(*[st.floats(-100, 100)] * 3),
    index=st.tuples(st.integers(0, 4), st.integers(0, 29), st.integers(0, 39)),
    offset=st.tuples(*[st.floats(-0.49, 0.49)] * 3),
)
def test_world_click_maps_to_the_slice_pixel(scale, translate, index, offset) -> None:
    from napari.layers import Image

    layer = Image(np.zeros((5, 30, 40), np.float32), scale=scale, translate=translate)
    data_point = np.add(index, offset)
    world = layer.data_to_world(data_point)
    back = layer.world_to_data(world)
    plane = coords.plane_at(back, layer.data.shape, (1, 2))
    assert plane.index == (index[0], None, None)
    row, col = coords.pixel_in_plane(back, plane)
    # wire coordinates: napari pixel centre i is wire position i + 0.5
    assert row == pytest.approx(index[1] + offset[1] + 0.5, abs=1e-6)
    assert col == pytest.approx(index[2] + offset[2] + 0.5, abs=1e-6)
    assert coords.inside((row, col), plane.size)


def test_plane_for_a_transposed_view_and_its_indices() -> None:
    plane = coords.plane_at([2.2, 5.0, 7.6], (4, 10, 12), (2, 0))
    assert (plane.row_axis, plane.col_axis, plane.index) == (0, 2, (None, 5, None))
    assert plane.size == (4, 12)
    assert plane.numpy_index() == (slice(None), 5, slice(None))
    idx = plane.nd_indices(np.array([1, 3]), np.array([0, 11]))
    np.testing.assert_array_equal(np.stack(idx), [[1, 3], [5, 5], [0, 11]])
    with pytest.raises(coords.OutsideImage):
        coords.plane_at([2.0, 10.4, 1.0], (4, 10, 12), (0, 2))


def test_box_is_clipped_to_the_image() -> None:
    plane = coords.plane_at([1, 0, 0], (3, 10, 20), (1, 2))
    corners = np.array([[1, -5, 2], [1, -5, 30], [1, 4, 30], [1, 4, 2]], float)
    assert coords.box_in_plane(corners, plane) == (0.0, 2.5, 4.5, 20.0)
    with pytest.raises(coords.OutsideImage):
        coords.box_in_plane(corners + [0, -20, 0], plane)


def test_points_prompt_keeps_only_points_on_the_slice_and_image() -> None:
    plane = coords.plane_at([2, 0, 0], (4, 10, 10), (1, 2))
    points = np.array([[2, 1, 1], [1, 5, 5], [2.3, 3, 4], [2, 12, 1], [2, -0.25, 0]])
    prompt = prompts.points_prompt(points, [1, 1, 0, 1, 1], plane)
    assert prompt.points == ((1.5, 1.5), (3.5, 4.5), (0.25, 0.5))
    assert prompt.point_labels == (1, 0, 1)
    assert prompt.params() == {
        "points": [[1.5, 1.5], [3.5, 4.5], [0.25, 0.5]],
        "point_labels": [1, 0, 1],
    }


def test_point_label_from_modifiers_and_toggle() -> None:
    assert prompts.point_label([], False) == prompts.POSITIVE
    assert prompts.point_label(["Shift"], False) == prompts.NEGATIVE
    assert prompts.point_label(["Alt"], False) == prompts.NEGATIVE
    assert prompts.point_label([], True) == prompts.NEGATIVE
    assert prompts.point_label(["Control"], True) == prompts.POSITIVE  # a modifier inverts the toggle


# -- slices and dtypes ----------------------------------------------------------------


def test_extract_slice_of_stacks_and_rgb() -> None:
    stack = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    plane = coords.plane_at([1, 0, 0], stack.shape, (1, 2))
    np.testing.assert_array_equal(image_slice.extract_slice(stack, plane, rgb=False), stack[1])
    rgb = np.zeros((2, 4, 5, 3), np.uint8)
    rgb[1, ..., 0] = 9
    plane = coords.plane_at([1, 0, 0], (2, 4, 5), (1, 2))
    out = image_slice.extract_slice(rgb, plane, rgb=True)
    assert out.shape == (4, 5, 3) and out[..., 0].min() == 9
    with pytest.raises(ValueError):
        image_slice.extract_slice(rgb, plane, rgb=False)


ANY_DTYPE = st.sampled_from(
    ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64", "float16", "float32"]
    + ["float64", ">u2", ">f8"]
)


@FAST
@given(
    ANY_DTYPE.flatmap(
        lambda dt: hnp.arrays(
            np.dtype(dt),
            st.one_of(
                st.tuples(st.integers(1, 8), st.integers(1, 8)),
                st.tuples(st.integers(1, 8), st.integers(1, 8), st.sampled_from([3, 4])),
            ),
        )
    ),
    st.one_of(st.none(), st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3))),
)
def test_to_wire_gives_an_allowed_dtype_and_sane_limits(pixels: np.ndarray, limits) -> None:
    wire = wire_image.to_wire(pixels, limits)
    assert wire.pixels.dtype.name in wire_image.WIRE_DTYPES
    assert wire.pixels.shape == pixels.shape
    assert wire.pixels.flags.c_contiguous and wire.pixels.dtype.byteorder in "=|<"
    if wire.pixels.dtype == np.uint8:
        assert wire.contrast_limits is None
    else:
        low, high = wire.contrast_limits
        assert np.isfinite([low, high]).all() and low < high
        if wire.pixels.dtype.kind == "f":
            assert np.isfinite(wire.pixels).all()
    stretched = pixels.dtype == np.uint8 and limits is not None and tuple(limits) != (0.0, 255.0)
    if pixels.dtype.name in {"uint8", "uint16", "int16", "int32", "uint32", "float32"} and not stretched:
        finite = np.isfinite(pixels.astype(float))  # allowed dtypes travel unchanged
        np.testing.assert_array_equal(wire.pixels.astype(float)[finite], pixels.astype(float)[finite])


def test_float64_becomes_float32_with_the_layer_limits() -> None:
    pixels = np.array([[0.0, 0.5], [np.nan, 2.0]])
    wire = wire_image.to_wire(pixels, (0.0, 1.0))
    assert wire.pixels.dtype == np.float32
    assert wire.contrast_limits == (0.0, 1.0)
    assert wire.pixels[1, 0] == 0.0  # NaN -> low limit
    assert wire_image.to_wire(np.ones((2, 2), bool), None).pixels.max() == 255
    with pytest.raises(ValueError):
        wire_image.to_wire(np.zeros((2, 2, 5), np.uint8), None)


# -- export ------------------------------------------------------------------------------


def test_export_round_trip_keeps_names_nd_and_transform(tmp_path) -> None:
    data = np.zeros((3, 16, 20), np.int64)
    data[1, 2:5, 3:7] = 1
    data[2, 8:10, 8:12] = 300
    names = {1: "cell nucleus", 300: "mitochondrion", 7: "absent"}
    written = export.write_labels(tmp_path / "cells", data, names, scale=(2, 0.5, 0.5), translate=(0, 1, 2))
    assert [p.name for p in written] == ["cells.tif", "cells.names.json", "cells.names.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temp files
    back = export.read_labels(written[0])
    np.testing.assert_array_equal(back.data, data)
    assert back.data.dtype == np.uint16
    assert back.names == names
    assert back.scale == (2.0, 0.5, 0.5) and back.translate == (0.0, 1.0, 2.0)
    with open(written[2], newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["id", "name", "pixel_count"],
        ["1", "cell nucleus", "12"],
        ["7", "absent", "0"],
        ["300", "mitochondrion", "8"],
    ]
    # the JSON file opens the same layer; without it the TIFF still carries the names
    assert export.read_labels(written[1]).names == names
    written[1].unlink()
    assert export.read_labels(written[0]).names == names
    assert export.is_labels_file(written[0])


def test_a_plain_tiff_is_not_ours(tmp_path) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((4, 4), np.uint8))
    assert not export.is_labels_file(tmp_path / "plain.tif")
    assert not export.is_labels_file(tmp_path / "missing.tif")


# -- backend helpers (no processes) -----------------------------------------------------


def test_local_addresses_and_model_choice() -> None:
    assert backend.is_local("tcp://127.0.0.1:5555")
    assert backend.is_local("tcp://localhost:1")
    assert not backend.is_local("tcp://10.0.0.2:5555")
    assert not backend.is_local("ipc:///tmp/x")
    services = {"sam2.1_hiera_large": {"workers": 2}, "sam2.1_hiera_tiny": {"workers": 0}}
    assert backend.choose_model(services, "sam2.1_hiera_tiny") == "sam2.1_hiera_large"
    assert backend.choose_model(services, "sam2.1_hiera_large") == "sam2.1_hiera_large"
    assert backend.choose_model({}, "x") is None


def test_status_text_says_what_a_user_needs() -> None:
    status = backend.BackendStatus(
        "tcp://h:1",
        {"m": {"workers": 2, "idle": 2, "queued": 0}},
        "m",
        {"device": "cpu", "random_weights": True},
    )
    assert status.connected
    text = status.describe()
    assert "2 worker(s) of m on cpu" in text and "CPU" in text and "RANDOM WEIGHTS" in text
    down = backend.BackendStatus("tcp://h:1", error="no broker answers")
    assert not down.connected and down.describe().startswith("Not connected: no broker")


def test_without_a_checkpoint_nothing_starts_and_the_user_is_told_how_to_get_one(monkeypatch) -> None:
    """A model whose checkpoint is missing and cannot be downloaded: no embedded backend."""
    monkeypatch.delenv("SAM2_RANDOM_WEIGHTS", raising=False)
    monkeypatch.delenv("SAM2_EMBEDDED", raising=False)
    address = backend.free_local_endpoint()
    model = "sam2.1_hiera_not_a_model"  # its download fails at once, without touching the network
    messages: list[str] = []
    status, local = backend.establish(address, model, messages.append)
    assert local is None and not status.connected
    assert f"python checkpoints/download.py {model}" in status.describe()
    assert "The download failed" in status.describe()
    assert any("Downloading" in m for m in messages)
    with pytest.raises(backend.ClientError):
        backend.probe(address, timeout_s=0.5)  # nothing was started there


def test_writing_an_answer_touches_one_slice_and_is_one_undo_step() -> None:
    from napari.layers import Labels

    from plugin.view.layers import write_edit

    layer = Labels(np.zeros((3, 8, 9), np.uint32))
    layer.data[2, 0, 0] = 7
    before = layer.data.copy()
    plane = coords.plane_at([1, 0, 0], layer.data.shape, (1, 2))
    mask = np.zeros((8, 9), bool)
    mask[2:4, 2:5] = True
    edit, _ = label_ops.compute_edit(layer.data[1], mask, 5, LabelMode.ADD)
    write_edit(layer, plane, edit)
    changed = np.argwhere(layer.data != before)
    assert set(changed[:, 0]) == {1} and len(changed) == 6
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)
