"""An answer on a huge slice touches only the mask's box (and, when refining, the refined label's box).

napari layer models without a viewer; labels layers of 20,000² backed by a
lazily allocated zarr array, read through an array-like that records every
region, so a read of the slice would show.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import zarr
from napari.layers import Labels

from plugin.jobs.results import Results
from plugin.labels.ops import NOWHERE, LabelMode, compute_edit, compute_edit_at
from plugin.labels.stats import LabelBoxes
from plugin.view.coords import plane_at
from plugin.view.image_slice import LazyPlane
from plugin.view.layers import write_edit
from tests.support.counting_array import CountingArray

SIDE = 20_000


def huge_layer(depth: int = 1) -> Labels:
    """(20,000, 20,000, depth) zarr-backed labels; the plugin's slices are (0, 1) planes, so napari's
    own view (the last two axes) stays small."""
    store = zarr.create_array(
        store={}, shape=(SIDE, SIDE, depth), chunks=(1024, 1024, 1), dtype="uint32", fill_value=0
    )
    return Labels(store)


def plane_of(layer: Labels, index: int) -> Any:
    """The (row, col) = (axis 0, axis 1) slice at ``index`` on axis 2."""
    return plane_at([0, 0, index], layer.data.shape, (0, 1))


def disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return yy**2 + xx**2 <= radius**2


def answer(
    results: Results,
    layer: Labels,
    plane: Any,
    mask: np.ndarray,
    offset: tuple[int, int],
    mode: LabelMode,
    label_id: int | None = None,
) -> tuple[int, CountingArray]:
    """One windowed answer as the controller writes it; returns (label id, what was read)."""
    labels = CountingArray(LazyPlane(layer.data, plane))
    if label_id is None:
        r0, c0 = offset
        label_id = results.allocate(layer, labels[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]])
    box = results.label_box(layer, plane, label_id) if mode is not LabelMode.ADD else None
    edit, _ = compute_edit_at(labels, mask, offset, label_id, mode, None, results.only_background, box)
    write_edit(layer, plane, edit)
    results.wrote(layer)
    return label_id, labels


def test_an_answer_on_a_20000_slice_reads_only_its_box() -> None:
    layer = huge_layer()
    plane = plane_of(layer, 0)
    results = Results(lambda *_: None)
    mask = disc(20)
    label_id, labels = answer(results, layer, plane, mask, (15_000, 4_000), LabelMode.ADD)
    assert max(labels.areas) <= mask.size
    assert int((np.asarray(layer.data[14_900:15_100, 3_900:4_100, 0]) == label_id).sum()) == int(mask.sum())


def test_refining_a_label_reads_only_its_box_and_the_masks() -> None:
    """Intersection and overwrite clear the refined label outside the new mask, wherever it is on the slice
    (written by the plugin or painted with the brush), reading only the union of their boxes."""
    for mode in (LabelMode.INTERSECTION, LabelMode.OVERWRITE):
        layer = huge_layer(depth=2)
        plane = plane_of(layer, 1)
        results = Results(lambda *_: None)
        label_id, _ = answer(results, layer, plane, disc(20), (15_000, 4_000), LabelMode.ADD)
        layer.brush_size = 1  # one pixel: napari paints in its own displayed axes (1, 2)
        layer.n_edit_dimensions = 2
        layer.paint((15_300, 4_500, 1), label_id)  # the user paints the label a little further away
        layer.paint((2_000, 2_000, 0), label_id)  # and on another slice
        box = results.label_box(layer, plane, label_id)
        assert box is not None and box[0] <= 15_000 and box[3] >= 4_501 and box[2] - box[0] < 400
        new_mask = disc(10)
        _, labels = answer(results, layer, plane, new_mask, (15_010, 4_010), mode, label_id)
        assert max(labels.areas) <= (box[2] - box[0]) * (box[3] - box[1])  # never the slice
        region = np.asarray(layer.data[14_900:15_400, 3_900:4_600, 1])
        assert int((region == label_id).sum()) == int(new_mask.sum())  # the brushed pixels are cleared
        assert (np.asarray(layer.data[1_990:2_010, 1_990:2_010, 0]) == label_id).any()  # other slice kept
        assert results.label_box(layer, plane_of(layer, 0), 999) == NOWHERE


def test_label_boxes_survive_undo_and_are_dropped_when_the_data_is_replaced() -> None:
    layer = Labels(np.zeros((3000, 3000), np.uint32))
    plane = plane_at([0, 0], layer.data.shape, (0, 1))
    results = Results(lambda *_: None)
    label_id, _ = answer(results, layer, plane, disc(5), (100, 100), LabelMode.ADD)
    other, _ = answer(results, layer, plane, disc(5), (2000, 2000), LabelMode.ADD)
    mask = np.zeros((11, 11), bool)
    mask[:, :] = True
    answer(results, layer, plane, mask, (2000, 2000), LabelMode.UNION, label_id)  # takes over `other`
    assert results.histories(layer).undo()  # `other` comes back where the union was
    box = results.label_box(layer, plane, other)
    assert box is not None and box[0] <= 2000 and box[2] >= 2011
    layer.data = np.full((3000, 3000), 7, np.uint32)
    assert results.label_box(layer, plane, 7) is None  # not known any more: the caller scans


def test_a_label_box_gives_the_same_edit_as_scanning_the_slice() -> None:
    rng = np.random.default_rng(4)
    labels = np.zeros((600, 700), np.uint32)
    labels[100:140, 200:260] = 3
    labels[500:520, 30:90] = 3
    labels[300:400, 300:400] = 5
    mask = rng.random((50, 60)) > 0.3
    boxes = LabelBoxes(labels.shape)
    rows, cols = np.nonzero(labels)
    boxes.extend((rows, cols), labels[rows, cols])
    box = boxes.box_on(3, 0, 1, (None, None))
    assert box == (100, 30, 520, 260)
    for mode in (LabelMode.INTERSECTION, LabelMode.OVERWRITE, LabelMode.UNION):
        full = np.zeros(labels.shape, bool)
        full[120:170, 230:290] = mask
        expected, _ = compute_edit(labels, full, 3, mode)
        got, _ = compute_edit_at(labels, mask, (120, 230), 3, mode, label_box=box)
        for name in ("rows", "cols", "old", "new"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))


def exact_boxes(shape: tuple[int, ...], stack_axes: list[int], writes) -> dict:
    """{label: {place on the stack axes: (lo, hi)}}: every pixel each label ever held, box by box."""
    boxes: dict = {}
    for index, values in writes:
        points = np.stack([np.asarray(i).ravel() for i in index])
        values = np.asarray(values).ravel().reshape(-1, points.shape[1])
        for row in values:
            for k in range(points.shape[1]):
                if row[k]:
                    place = tuple(int(points[a, k]) for a in stack_axes)
                    lo, hi = boxes.setdefault(int(row[k]), {}).get(place, (points[:, k], points[:, k] + 1))
                    boxes[int(row[k])][place] = (
                        np.minimum(lo, points[:, k]),
                        np.maximum(hi, points[:, k] + 1),
                    )
    return boxes


@pytest.mark.parametrize("shape", [(40, 50), (3, 40, 50)])
def test_label_boxes_hold_exactly_the_pixels_written_one_place_or_many(shape: tuple[int, ...]) -> None:
    """One place (a 2D layer, one slice of a stack: element-wise minima and maxima, dense and sparse
    large ids) and many places at once (sorted): the boxes are the exact boxes of every pixel written."""
    rng = np.random.default_rng(11)
    boxes = LabelBoxes(shape)
    writes = []
    for trial in range(40):
        n = int(rng.integers(1, 200))
        index = [rng.integers(0, size, n) for size in shape]
        if len(shape) == 3 and trial % 2:
            index[0] = np.full(n, int(rng.integers(0, shape[0])))  # one slice of the stack
        ids = rng.integers(0, 6, n) if trial % 3 else rng.integers(0, 2**31, n) * (rng.random(n) > 0.3)
        old = rng.integers(0, 6, n) * (rng.random(n) > 0.5)
        values = np.concatenate([old, ids]).astype(np.uint32)  # before and after, as napari's atoms
        boxes.extend(tuple(index), values)
        writes.append((tuple(index), values))
    expected = exact_boxes(shape, boxes.stack_axes, writes)
    assert len(boxes) == len(expected)
    for label, places in expected.items():
        found = boxes._boxes[label]
        assert sorted(found) == sorted(places)
        for place, (lo, hi) in places.items():
            np.testing.assert_array_equal(found[place][0], lo)
            np.testing.assert_array_equal(found[place][1], hi)


def test_a_strided_texture_patch_is_what_a_strided_copy_of_the_changed_slice_holds() -> None:
    from plugin.view.napari_redraw import strided_patch

    rng = np.random.default_rng(2)
    for stride in ((2, 2), (3, 1), (2, 5)):
        view = rng.integers(0, 255, (61, 47), dtype=np.uint8)
        texture = view[:: stride[0], :: stride[1]].copy()
        for _ in range(30):
            r0, c0 = int(rng.integers(0, 60)), int(rng.integers(0, 46))
            h, w = int(rng.integers(1, 62 - r0)), int(rng.integers(1, 48 - c0))
            view[r0 : r0 + h, c0 : c0 + w] = rng.integers(0, 255, (h, w), dtype=np.uint8)
            found = strided_patch(view, (r0, c0), (h, w), stride)
            if found is not None:
                patch, (t0, u0) = found
                texture[t0 : t0 + patch.shape[0], u0 : u0 + patch.shape[1]] = patch
            np.testing.assert_array_equal(texture, view[:: stride[0], :: stride[1]])


def test_kept_objects_renumber_as_drop_small_objects_does() -> None:
    from plugin.labels.ops import Relabelled, drop_small_objects, kept_objects
    from protocol.geometry.compressed import CompressedPlane

    rng = np.random.default_rng(9)
    objects = rng.integers(0, 30, (200, 300)).astype(np.uint32)
    areas = np.bincount(objects.ravel(), minlength=30)[1:]
    stored = CompressedPlane(objects.shape)
    stored[0:100, 0:300] = objects[:100]
    stored[100:200, 0:300] = objects[100:]
    for min_area in (0, 1900, 2100, 10**6):
        expected = drop_small_objects(objects, min_area)
        view = Relabelled(stored, kept_objects(areas, min_area))
        np.testing.assert_array_equal(view[0:200, 0:300], expected)
        np.testing.assert_array_equal(view[50:120, 10:20], expected[50:120, 10:20])
