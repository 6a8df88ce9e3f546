"""Redrawing only what an answer changed, also on labels larger than the GPU's largest texture.

napari draws a single-resolution slice larger than ``GL_MAX_TEXTURE_SIZE``
(16,384 px on many GPUs and on Mesa) from a strided copy of it
(``data[::s, ::s]``, in ``VispyScalarFieldBaseLayer.downsample_texture``).
Its partial redraw of labels (``VispyLabelsLayer._on_partial_labels_update``,
after every ``data_setitem``, brush stroke or fill) then finds the texture's
shape unlike the slice's and redraws the whole slice instead: on a 20,000²
labels layer every answer cost seconds of GUI thread.

:func:`install` wraps that method so a strided texture is updated in place:
the changed rectangle's rows and columns that the texture holds (every
``s``-th) are taken from napari's already-coloured view and uploaded at
their place in the texture. Anything else (unstrided textures, 3D, contours,
a napari whose internals moved) goes to napari's own method unchanged. This
module is the only place that touches napari's vispy layers; it is tested
against the installed napari (``tests/plugin/test_plugin_large_images.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_ORIGINAL = "_sam2_original_partial_update"


def strided_patch(
    view: np.ndarray, offset: tuple[int, int], shape: tuple[int, int], stride: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The part of a strided texture (``view[::s_r, ::s_c]``) that a changed rectangle of ``view`` covers.

    Args:
        view: (H, W[, C]) the full-resolution coloured slice.
        offset: (row0, col0) of the changed rectangle in ``view``.
        shape: (rows, cols) of the changed rectangle.
        stride: (s_r, s_c) of the texture.

    Returns:
        ``(patch, texture offset)``: the texture's new pixels and where they go,
        or None when the rectangle holds none of the texture's pixels.
    """
    starts = [math.ceil(o / s) for o, s in zip(offset, stride, strict=True)]
    stops = [math.ceil((o + n) / s) for o, n, s in zip(offset, shape, stride, strict=True)]
    if any(b <= a for a, b in zip(starts, stops, strict=True)):
        return None
    (r0, c0), (r1, c1), (sr, sc) = starts, stops, stride
    return view[r0 * sr : (r1 - 1) * sr + 1 : sr, c0 * sc : (c1 - 1) * sc + 1 : sc], (r0, c0)


def _strided_update(vispy_layer: Any, event: Any) -> bool:
    """Update a strided labels texture in place; False when napari's own method should handle it."""
    layer = vispy_layer.layer
    if not layer.loaded or getattr(layer, "contour", 0) > 0 or len(event.offset) != 2:
        return False
    view = layer._slice.image.view
    texture_shape = tuple(vispy_layer.node._texture.shape[:2])
    if view.ndim < 2 or texture_shape == tuple(view.shape[:2]):
        return False
    displayed = list(layer._slice_input.displayed)
    stride = tuple(int(round(float(s))) for s in np.asarray(layer._transforms["tile2data"].scale)[displayed])
    if len(stride) != 2 or min(stride) < 1:
        return False
    if texture_shape != tuple(math.ceil(n / s) for n, s in zip(view.shape[:2], stride, strict=True)):
        return False  # not napari's strided copy: let napari redraw
    found = strided_patch(view, tuple(int(o) for o in event.offset), event.data.shape[:2], stride)  # type: ignore[arg-type]
    if found is not None:
        from napari._vispy.utils.gl import fix_data_dtype

        patch, at = found
        vispy_layer.node._texture.scale_and_set_data(fix_data_dtype(np.ascontiguousarray(patch)), offset=at)
        vispy_layer.node.update()
    return True


def install() -> bool:
    """Make napari's partial labels redraw work on strided textures (once per process).

    Returns:
        False when this napari has no such redraw to extend.
    """
    try:
        from napari._vispy.layers.labels import VispyLabelsLayer
    except ImportError:  # pragma: no cover - napari without vispy
        return False
    if hasattr(VispyLabelsLayer, _ORIGINAL):
        return True
    original: Callable[[Any, Any], None] | None = getattr(VispyLabelsLayer, "_on_partial_labels_update", None)
    if original is None:
        log.warning("napari has no partial labels redraw to extend; large labels redraw whole")
        return False

    def on_partial_labels_update(self: Any, event: Any) -> None:
        try:
            if _strided_update(self, event):
                return
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:  # napari's internals moved
            log.debug("strided labels redraw not possible (%s); napari redraws", e)
        original(self, event)

    setattr(VispyLabelsLayer, _ORIGINAL, original)
    VispyLabelsLayer._on_partial_labels_update = on_partial_labels_update
    return True
