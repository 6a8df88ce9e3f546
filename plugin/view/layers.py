"""The plugin's napari layers: prompt layers, result layers, slice access.

Uses napari's layer *models* only (no Qt). Layers made here share the
image's world transform (scale, translate, rotate, shear, affine) and units, so their
data coordinates are the image's; clicks are still mapped through
``data_to_world`` / ``world_to_data`` so any layer transform works.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from plugin.labels.history import run_here
from plugin.labels.names import METADATA_KEY
from plugin.labels.ops import SliceEdit
from plugin.labels.pyramid import LabelPyramid, label_data, needs_pyramid
from plugin.labels.writes import write_values
from plugin.view.coords import SlicePlane, layer_displayed_axes, plane_at
from plugin.view.prompts import NEGATIVE, POSITIVE

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels, Layer, Points, Shapes

PROMPT_POINTS = "Prompt Points"
BOUNDING_BOX = "Bounding Box"
POINTS_MASK = "Points_mask"
BOX_MASK = "Box_mask"
AUTO_MASK = "AutoSeg_mask"
POSITIVE_COLOUR = "#00ff00"
NEGATIVE_COLOUR = "#ff00ff"
POLARITY = "polarity"
"""Feature of prompt points: ``"positive"`` or ``"negative"`` (drives their colour)."""
POLARITY_NAMES = {POSITIVE: "positive", NEGATIVE: "negative"}


def spatial_shape(image: Image) -> tuple[int, ...]:
    """The image's shape without the RGB(A) channel axis (level 0 of a multiscale image)."""
    data = image.data[0] if image.multiscale else image.data
    shape = tuple(int(s) for s in data.shape)
    return shape[:-1] if image.rgb else shape


def base_data(image: Image) -> Any:
    """The full-resolution array of an image layer."""
    return image.data[0] if image.multiscale else image.data


def transform_of(layer: Layer) -> dict[str, Any]:
    """Keyword arguments that give a new layer ``layer``'s world transform and units.

    The units go along so that labels made on a calibrated image export in its
    units and napari sees one unit per axis across the layers.
    """
    return {
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine,
        "units": layer.units,
    }


def view_camera(viewer: napari.Viewer) -> Any:
    """The viewer's camera (``center``, ``zoom`` and their events): ``viewer.scene.camera`` from
    napari 0.9, where ``viewer.camera`` is deprecated; ``viewer.camera`` before."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def displayed_axes(viewer: napari.Viewer, layer: Layer) -> tuple[int, int]:
    """The layer's (row_axis, col_axis) in the current view; ValueError in 3D view."""
    if viewer.dims.ndisplay != 2:
        raise ValueError("segmentation works in the 2D view; switch napari to 2D")
    return layer_displayed_axes(viewer.dims.displayed, viewer.dims.ndim, layer.ndim)


def plane_of(viewer: napari.Viewer, layer: Layer, shape: tuple[int, ...]) -> SlicePlane:
    """The slice of ``layer`` shown now (``shape``: its spatial shape)."""
    point = layer.world_to_data(viewer.dims.point)
    return plane_at(point, shape, displayed_axes(viewer, layer))


def to_image_data(source: Layer, points: np.ndarray, image: Image) -> np.ndarray:
    """(N, ndim) data coordinates of ``source`` -> (N, image.ndim) data coordinates of ``image``."""
    points = np.atleast_2d(np.asarray(points, dtype=float))
    out = [image.world_to_data(source.data_to_world(p)) for p in points]
    return np.asarray(out, dtype=float).reshape(len(out), image.ndim)


def find_layer(viewer: napari.Viewer, name: str, kind: type) -> Any:
    layer = viewer.layers[name] if name in viewer.layers else None
    return layer if isinstance(layer, kind) else None


def fits_image(layer: Layer, image: Image) -> bool:
    """Whether ``layer`` has ``image``'s dimensions and world transform.

    A prompt layer that fits draws its points at the image's scale and maps
    them onto the image's pixels; one made for another image does not.
    """
    if layer.ndim != image.ndim:
        return False
    same = all(
        np.allclose(
            np.asarray(getattr(layer, name), dtype=float), np.asarray(getattr(image, name), dtype=float)
        )
        for name in ("scale", "translate", "rotate", "shear")
    )
    return same and bool(np.allclose(layer.affine.affine_matrix, image.affine.affine_matrix))


def _prompt_layer(viewer: napari.Viewer, name: str, kind: type, image: Image) -> Any:
    """The prompt layer ``name`` of type ``kind`` if it fits ``image`` (:func:`fits_image`), else None.

    One made for another image (other dimensions or transform) is removed,
    so that a new one can take its name.
    """
    layer = find_layer(viewer, name, kind)
    if layer is not None and not fits_image(layer, image):
        viewer.layers.remove(layer)
        return None
    return layer


LABELS_BUDGET_BYTES = 2 * 1024**3
"""Largest labels layer held in memory (also at most a quarter of the machine's RAM)."""
LABELS_CHUNK = 1024
"""Side of a zarr-backed labels layer's chunks (per slice)."""


def memory_budget(fraction: float = 0.25, cap: int | None = None) -> int:
    """Bytes a labels layer may take in memory: ``cap`` (default :data:`LABELS_BUDGET_BYTES`) or
    ``fraction`` of physical RAM, the smaller."""
    cap = LABELS_BUDGET_BYTES if cap is None else cap
    try:
        ram = int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return cap
    return min(cap, int(ram * fraction))


def new_labels_data(shape: tuple[int, ...], budget: int | None = None) -> tuple[Any, str | None]:
    """Zero uint32 labels of ``shape``: numpy when it fits ``budget``, else a zarr array on disk;
    a :class:`plugin.labels.pyramid.LabelPyramid` (its levels, a list) when a slice is larger than
    :data:`plugin.labels.pyramid.PYRAMID_MIN_PIXELS`.

    Returns:
        ``(data, note)``: an array, or a list of levels (level 0 first) for a multiscale
        layer; ``note`` says where data kept on disk lives (None in memory).
    """
    budget = memory_budget() if budget is None else budget
    nbytes = int(np.prod(shape, dtype=np.float64)) * 4
    if needs_pyramid(shape):
        if nbytes <= budget:  # chunks in memory, compressed; only those written exist
            return LabelPyramid.create(shape).levels, None
        pyramid, folder = LabelPyramid.create_on_disk(shape)
        return pyramid.levels, (
            f"The labels for this image would take {nbytes / 1024**3:.1f} GiB, more than the "
            f"{budget / 1024**3:.1f} GiB the plugin holds in memory: they are kept on disk in a zarr "
            f"pyramid at {folder}. Export them before closing napari."
        )
    if nbytes <= budget:
        return np.zeros(shape, dtype=np.uint32), None
    import zarr

    folder = tempfile.mkdtemp(prefix="sam2-labels-")
    chunks = (1,) * (len(shape) - 2) + tuple(min(LABELS_CHUNK, int(s)) for s in shape[-2:])
    array = zarr.create_array(store=folder, shape=shape, chunks=chunks, dtype="uint32", fill_value=0)
    note = (
        f"The labels for this image would take {nbytes / 1024**3:.1f} GiB, more than the "
        f"{budget / 1024**3:.1f} GiB the plugin holds in memory: they are kept on disk in a zarr array "
        f"at {folder} (chunks of {LABELS_CHUNK}²). Export them before closing napari."
    )
    return array, note


HUGE_SLICE_PIXELS = 8192 * 8192
"""A single-resolution slice above this many pixels is slow for napari to draw (it reads it whole)."""


def size_warning(image: Image) -> str | None:
    """What to tell the user about an image too large to handle comfortably, or None.

    The plugin itself reads only windows and tiles of any image; this is
    about napari drawing a huge single-resolution slice and about the
    labels layer's memory.
    """
    shape = spatial_shape(image)
    height, width = shape[-2:]
    notes = []
    if not image.multiscale and height * width > HUGE_SLICE_PIXELS:
        notes.append(
            f"{image.name} is {height} x {width} px per slice and not a pyramid: napari reads and draws "
            "each slice whole, which is slow. Open it as a multiscale image (an OME-Zarr pyramid with "
            "napari-ome-zarr, or a list of levels) so only what is on screen is read."
        )
    labels_bytes = int(np.prod(shape, dtype=np.float64)) * 4
    if labels_bytes > memory_budget():
        notes.append(
            f"Its labels would take {labels_bytes / 1024**3:.1f} GiB: they will be kept on disk in a zarr "
            "array. Segmenting reads only a window around each prompt (AUTO-SEGMENT: tiles)."
        )
    return " ".join(notes) or None


def warm_up_labels(then: Callable[[], None] | None = None) -> threading.Thread:
    """Import, off the GUI thread, what napari's first Labels layer imports (its colormap: ``skimage.color``).

    Creating the first result layer otherwise pays that import (1.3 s measured under load,
    bench/RESULTS.md) on the GUI thread, at the user's first click. ``skimage.color`` is a
    lazy package: importing it loads nothing, so the function napari calls (``lab2rgb``) is
    looked up here, which imports its module and the ~400 modules under it. ``then`` is
    called on the thread once the imports are done (or failed).
    """

    def load() -> None:
        with contextlib.suppress(ImportError, AttributeError):
            import skimage.color

            _ = skimage.color.lab2rgb  # lazy_loader imports skimage.color.colorconv here
        if then is not None:
            then()

    thread = threading.Thread(target=load, name="sam2-warm-up-labels", daemon=True)
    thread.start()
    return thread


TEXT_METRIC_CHARS = "ÅÉÑŐjgpqy "
"""The characters vispy's Text visual measures before its first draw (``_text_to_vbo``: ascender,
descender, space width), whatever the text: each is rasterised and turned into a distance field
on the GUI thread the first time (about 0.1 s for the ten)."""


def warm_up_text_glyphs(viewer: napari.Viewer) -> bool:
    """Load, now, the glyphs napari's first text visual loads at its first draw; False if napari has none.

    Every Points and Shapes layer has a text visual, so the first prompt layer (or the first
    label names layer) otherwise pays this inside its own stall. The glyphs live in the
    canvas's font atlas (napari's ``QtFontManager``, private: reached through the real viewer
    behind napari's plugin proxy, looked up defensively; nothing is done when it is not there).
    """
    viewer = getattr(viewer, "__wrapped__", viewer)  # a plugin's viewer is napari's public-only proxy
    canvas = getattr(getattr(getattr(viewer, "window", None), "_qt_viewer", None), "canvas", None)
    info = getattr(canvas, "_font_info", None)
    get_font = getattr(getattr(info, "font_manager", None), "get_font", None)
    face = getattr(info, "face", None)
    if get_font is None or face is None:
        return False
    font = get_font(face)
    for char in TEXT_METRIC_CHARS:
        font[char]
    return True


EDIT_TOOL_OVERLAYS = {"polygon": "polygon", "brush_stroke": "paint"}
"""napari's per-layer overlays of a Labels layer's drawing tools, and the mode that uses each."""


def defer_tool_overlays(layer: Labels) -> None:
    """Have napari build ``layer``'s polygon and brush-stroke visuals when their tool is first picked.

    napari creates the vispy visuals of every *visible* layer overlay when the layer is added
    (lines, polygons, markers and their shaders): for these two, a third to a half of adding a
    Labels layer in a shown viewer (bench/RESULTS.md), paid on the GUI thread for tools most
    result layers never use, and never on a multiscale layer, which napari does not let the user
    edit. An overlay that is not visible gets its visual once it becomes visible, so the two are
    hidden here and shown when the layer's mode first becomes their tool (napari enables an
    overlay on its mode change before that event reaches this callback). Call before
    ``add_layer``. A napari without these overlays is left as it is.
    """
    overlays = getattr(layer, "_overlays", None)  # napari's private per-layer overlays
    if overlays is None:
        return
    waiting = {
        name: mode
        for name, mode in EDIT_TOOL_OVERLAYS.items()
        if name in overlays and getattr(overlays[name], "visible", False)
    }
    if not waiting:
        return
    for name in waiting:
        overlays[name].visible = False

    def on_mode(event: Any = None) -> None:
        mode = str(layer.mode)
        for name, tool in list(waiting.items()):
            if mode == tool:
                overlays[name].visible = True
                del waiting[name]
        if not waiting:
            layer.events.mode.disconnect(on_mode)

    layer.events.mode.connect(on_mode)
    if str(layer.mode) in waiting.values():
        on_mode()


def ensure_labels(
    viewer: napari.Viewer, image: Image, name: str, notify: Callable[[str, str], None] | None = None
) -> Labels:
    """The result layer ``name`` for ``image`` (same spatial shape and transform), created if needed.

    A layer called ``name`` of another shape (made for another image) is left
    alone; the result then goes to ``"name (image name)"``. A new layer is
    the image's level-0 shape; above 8,192² per slice it is a multiscale layer over a
    :class:`plugin.labels.pyramid.LabelPyramid` (only what is on screen is read, and
    creating it reads nothing); when that does not fit in memory
    (:func:`new_labels_data`) it is zarr-backed on disk and ``notify`` says so.
    """
    from napari.layers import Labels

    shape = spatial_shape(image)
    for candidate in (name, f"{name} ({image.name})"):
        layer = find_layer(viewer, candidate, Labels)
        if layer is not None and tuple(layer.data.shape) == shape:
            return layer
        if candidate not in viewer.layers:
            break
    data, note = new_labels_data(shape)
    if note is not None and notify is not None:
        notify("warning", note)
    labels = Labels(
        data,
        multiscale=isinstance(data, list),
        name=candidate,
        metadata={METADATA_KEY: {}},
        opacity=0.6,
        **transform_of(image),
    )
    defer_tool_overlays(labels)
    active = viewer.layers.selection.active
    viewer.add_layer(labels)
    viewer.layers.selection.active = active  # the user keeps clicking prompts, not painting labels
    return labels


def ensure_points(viewer: napari.Viewer, image: Image) -> tuple[Points, bool]:
    """The ``Prompt Points`` layer (created when missing); returns (layer, created)."""
    from napari.layers import Points

    layer = _prompt_layer(viewer, PROMPT_POINTS, Points, image)
    if layer is not None:
        return layer, False
    height, width = spatial_shape(image)[-2:]
    features = pd.DataFrame({POLARITY: pd.Categorical([], categories=["negative", "positive"])})
    layer = Points(
        np.empty((0, image.ndim)),
        ndim=image.ndim,
        name=PROMPT_POINTS,
        features=features,
        face_color=POLARITY,
        face_color_cycle=[NEGATIVE_COLOUR, POSITIVE_COLOUR],
        border_color="white",
        size=max(4.0, 0.015 * max(height, width)),
        out_of_slice_display=False,
        **transform_of(image),
    )
    layer.feature_defaults[POLARITY] = POLARITY_NAMES[POSITIVE]
    viewer.add_layer(layer)
    return layer, True


def ensure_box(viewer: napari.Viewer, image: Image) -> tuple[Shapes, bool]:
    """The ``Bounding Box`` layer (created when missing); returns (layer, created)."""
    from napari.layers import Shapes

    layer = _prompt_layer(viewer, BOUNDING_BOX, Shapes, image)
    if layer is not None:
        return layer, False
    height, width = spatial_shape(image)[-2:]
    layer = Shapes(
        ndim=image.ndim,
        name=BOUNDING_BOX,
        edge_color="yellow",
        face_color="transparent",
        edge_width=max(1.0, 0.004 * max(height, width)),
        **transform_of(image),
    )
    viewer.add_layer(layer)
    return layer, True


def point_labels(layer: Points) -> list[int]:
    """1 / 0 per point of a prompt layer (missing feature: positive)."""
    if POLARITY not in layer.features:
        return [POSITIVE] * len(layer.data)
    return [NEGATIVE if v == POLARITY_NAMES[NEGATIVE] else POSITIVE for v in layer.features[POLARITY]]


def slice_view(layer: Labels, plane: SlicePlane) -> np.ndarray:
    """(H, W) labels of ``plane``: a view for numpy data (no copy of the nD array)."""
    return np.asarray(label_data(layer)[plane.numpy_index()])


def write_edit(
    layer: Labels,
    plane: SlicePlane,
    edit: SliceEdit,
    refresh: bool = True,
    off_gui: Callable[[Callable[[], Any]], Any] = run_here,
) -> None:
    """Write a slice edit into the nD labels layer: changed pixels only, one undo step, partial refresh.

    Goes through the plugin's one write path (:func:`plugin.labels.writes.write_values`),
    so single-scale and pyramid layers are written, undone and counted alike.

    Args:
        refresh: redraw now. Many writes in a row pass False to all but the last: the
            redraw covers every change since the last one, and on a slice larger than
            the GL texture napari redraws the whole slice for each (0.3 s on 8,192²).
        off_gui: runs a pyramid's store write (:func:`plugin.labels.writes.write_values`).
    """
    if edit.size == 0:
        return
    indices, values = plane.nd_indices(edit.rows, edit.cols), edit.new.astype(layer.data.dtype)
    write_values(layer, indices, values, refresh, off_gui)


def show_slice(viewer: napari.Viewer, layer: Layer, index: tuple[int | None, ...]) -> None:
    """Move the viewer to the slice of ``layer`` whose non-displayed axes have ``index``.

    Args:
        index: one entry per layer axis: a data index on non-displayed axes,
            ``None`` on displayed ones (as :attr:`plugin.view.coords.SlicePlane.index`).
    """
    current = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    target = current.copy()
    fixed = [a for a, i in enumerate(index) if i is not None]
    for axis, value in enumerate(index):
        if value is not None:
            target[axis] = float(value)
    world = np.asarray(layer.data_to_world(target), dtype=float)
    offset = viewer.dims.ndim - layer.ndim
    axes = [a + offset for a in fixed]
    if axes:
        viewer.dims.set_point(axes, [float(world[a]) for a in fixed])
