"""What users of such tools expect: "Add without overwriting", a minimum object area,
and uint8 images sent as they are shown (narrowed contrast limits applied). Pure logic here;
the widget side is in tests/plugin/test_plugin_first_run.py."""

from __future__ import annotations

import numpy as np

from plugin.labels.ops import LabelMode, compute_edit, compute_paste, drop_small_objects
from protocol.wire.image_key import image_key
from protocol.wire.wire_image import stack_to_wire, to_wire
from workers.prep import prepare_image

MODEL = "sam2.1_hiera_tiny"


def labels_with_a_cell() -> np.ndarray:
    labels = np.zeros((20, 20), np.uint32)
    labels[2:12, 2:12] = 1  # label 1: 100 pixels
    return labels


def test_a_new_object_fills_only_background_when_asked() -> None:
    labels = labels_with_a_cell()
    mask = np.zeros((20, 20), bool)
    mask[8:16, 8:16] = True  # overlaps label 1 on 16 pixels
    edit, cumulative = compute_edit(labels, mask, 2, LabelMode.ADD, only_background=True)
    edit.apply(labels)
    assert (labels == 1).sum() == 100  # label 1 keeps every pixel
    np.testing.assert_array_equal(labels == 2, mask & (labels_with_a_cell() == 0))
    bigger = np.zeros((20, 20), bool)
    bigger[8:18, 8:18] = True  # the next answer for the same object replaces it, still around label 1
    edit, _ = compute_edit(labels, bigger, 2, LabelMode.ADD, cumulative, only_background=True)
    edit.apply(labels)
    assert (labels == 1).sum() == 100
    np.testing.assert_array_equal(labels == 2, bigger & (labels_with_a_cell() == 0))
    painted = labels_with_a_cell()  # without the option the object paints over label 1, as before
    compute_edit(painted, mask, 2, LabelMode.ADD)[0].apply(painted)
    assert (painted == 1).sum() == 84 and (painted == 2).sum() == 64


def test_auto_segment_results_fill_only_background_when_asked() -> None:
    labels = labels_with_a_cell()
    objects = np.zeros((20, 20), np.uint32)
    objects[0:6, 0:6] = 1  # partly over label 1
    objects[14:20, 14:20] = 2  # on background
    objects[4:8, 4:8] = 3  # entirely inside label 1: nothing of it is written
    edit = compute_paste(labels, objects, 10, only_background=True)
    edit.apply(labels)
    assert (labels == 1).sum() == 100
    assert set(np.unique(edit.new)) == {10, 11}
    assert (labels == 10).sum() == 36 - 16 and (labels == 11).sum() == 36 and not (labels == 12).any()


def test_small_objects_are_dropped_and_the_rest_renumbered() -> None:
    objects = np.zeros((10, 10), np.uint32)
    objects[0:5, 0:5] = 1  # 25 px
    objects[6:7, 6:8] = 2  # 2 px
    objects[8:10, 0:10] = 3  # 20 px
    kept = drop_small_objects(objects, 10)
    assert kept.dtype == objects.dtype
    assert set(np.unique(kept)) == {0, 1, 2}
    np.testing.assert_array_equal(kept == 1, objects == 1)
    np.testing.assert_array_equal(kept == 2, objects == 3)
    assert drop_small_objects(objects, 0) is objects and drop_small_objects(objects, 2) is objects
    assert not drop_small_objects(objects, 1000).any()


def test_uint8_with_narrowed_contrast_is_sent_as_shown() -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    shown = to_wire(pixels, (50.0, 100.0))
    assert shown.pixels.dtype == np.uint8 and shown.contrast_limits is None
    assert shown.pixels[pixels <= 50].max() == 0 and shown.pixels[pixels >= 100].min() == 255
    # exactly what the worker makes of the same limits on a wider dtype
    np.testing.assert_array_equal(
        shown.pixels, prepare_image(pixels.astype(np.uint16), (50.0, 100.0))[..., 0]
    )
    full = to_wire(pixels, (0.0, 255.0))  # the full range: sent untouched, as before
    np.testing.assert_array_equal(full.pixels, pixels)
    np.testing.assert_array_equal(to_wire(pixels, None).pixels, pixels)
    keys = {
        image_key(w.pixels, w.contrast_limits, MODEL) for w in (shown, full, to_wire(pixels, (0.0, 200.0)))
    }
    assert len(keys) == 3  # the image key changes with the limits, as for uint16
    stack = stack_to_wire(np.stack([pixels, pixels]), (50.0, 100.0))  # propagation sees the same
    np.testing.assert_array_equal(stack.pixels[1], shown.pixels)
