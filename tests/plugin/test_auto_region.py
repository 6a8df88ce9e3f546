"""AUTO-SEGMENT's region (plugin/jobs/auto_region.py) on napari's viewer model, no Qt: the rectangle
asked for, the clear refusals, and the window view that reads and pastes through it."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel

from plugin.jobs.auto_region import RegionView, region_rect
from plugin.jobs.auto_settings import DRAWN, VISIBLE, WHOLE
from plugin.view.coords import plane_at
from plugin.view.layers import BOUNDING_BOX

SHAPE = (3000, 4000)


@pytest.fixture
def scene():
    viewer = ViewerModel()
    image = viewer.add_image(np.zeros(SHAPE, np.uint8), scale=(0.5, 0.5), translate=(10.0, -4.0))
    return viewer, image, plane_at([0, 0], SHAPE, (0, 1))


def test_the_drawn_rectangle_is_read_in_image_pixels_and_a_missing_one_is_refused(scene) -> None:
    viewer, image, plane = scene
    assert region_rect(viewer, image, plane, WHOLE) is None
    with pytest.raises(ValueError, match="draw a rectangle"):
        region_rect(viewer, image, plane, DRAWN)
    boxes = viewer.add_shapes(name=BOUNDING_BOX)
    with pytest.raises(ValueError, match="draw a rectangle"):
        region_rect(viewer, image, plane, DRAWN)
    world = image.data_to_world
    boxes.add_rectangles(np.array([world([-50, -50]), world([20, 30])]))  # older one, partly off
    boxes.add_rectangles(np.array([world([100, 200]), world([399.6, 700])]))
    assert region_rect(viewer, image, plane, DRAWN) == (100, 200, 401, 701)  # the newest, pixels rounded out
    boxes.add_rectangles(np.array([world([5000, 5000]), world([5100, 5100])]))
    with pytest.raises(ValueError, match="does not overlap"):
        region_rect(viewer, image, plane, DRAWN)
    with pytest.raises(ValueError, match="unknown AUTO-SEGMENT region"):
        region_rect(viewer, image, plane, "everything")


def test_the_visible_region_follows_the_camera_and_stays_on_the_slice(scene) -> None:
    viewer, image, plane = scene
    viewer.camera.center = tuple(image.data_to_world([1500, 2000]))
    viewer.camera.zoom = 2.0  # 2 screen px per world unit, 0.5 world units per pixel: 1 px per pixel
    r0, c0, r1, c1 = region_rect(viewer, image, plane, VISIBLE)
    assert r0 < 1500 < r1 and c0 < 2000 < c1 and r1 - r0 < SHAPE[0]
    viewer.camera.zoom = 0.01  # zoomed far out: the whole slice, never beyond it
    assert region_rect(viewer, image, plane, VISIBLE) == (0, 0, *SHAPE)


def test_a_region_view_reads_its_window_and_pastes_back_at_its_origin() -> None:
    slide = np.arange(60 * 80).reshape(60, 80)
    window = RegionView(slide, (10, 20), (30, 40))
    assert window.shape == (30, 40) and window.dtype == slide.dtype
    np.testing.assert_array_equal(window[:, :], slide[10:40, 20:60])
    np.testing.assert_array_equal(window[5:7, 30:], slide[15:17, 50:60])
    labels = np.arange(30 * 40).reshape(30, 40)  # labels of the window, read in slide pixels
    back = RegionView(labels, (-10, -20), slide.shape)
    np.testing.assert_array_equal(back[12:14, 25:30], labels[2:4, 5:10])
    colour = RegionView(np.zeros((60, 80, 3)), (0, 0), (5, 5))
    assert colour.shape == (5, 5, 3) and colour[1:3, 1:3].shape == (2, 2, 3)
