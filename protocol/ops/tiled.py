"""Automatic segmentation of a slice of any size: tiles fanned out over every worker, stitched.

:func:`tiled_auto` cuts an (H, W) slice into tiles of the model's input with
a halo (:func:`protocol.geometry.grid.tile_grid`), sends each tile as one ``auto``
request, keeps :data:`~protocol.ops.fan_out.REQUESTS_PER_WORKER` requests in flight per
worker the broker has for the service (:func:`protocol.ops.fan_out.fan_out`: one
:class:`~protocol.wire.client.SamClient` per thread; the broker routes them; ``sam2-batch``
uses the same policy), and stitches the tile labels into one label image as they
arrive (:class:`protocol.geometry.stitch.TileStitcher`: the per-pixel part,
``prepare``, in the thread that received the tile, so it spreads over the
client's cores; numbering and merging on the calling thread). A slice no larger than the
tile size is one request, answered as is.

:func:`tiled_auto_stack` does the same for every slice of a stack and links
the slices, so one object keeps one id through z or time.

The source is any array-like with numpy slicing (numpy, zarr, dask, napari
layer data): only each tile's window is read, in the thread that sends it.
The output may be a numpy or zarr array; only one tile's core is written at
a time. So neither the slice nor its labels need to fit in memory.

Every tile of a slice is sent with the same contrast limits (given, or
estimated once from a strided sample of the slice), so that a tile of
background is not stretched into noise.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocol.geometry.grid import DEFAULT_HALO, DEFAULT_TILE_SIZE, Tile, tile_grid
from protocol.geometry.link import DEFAULT_LINK_IOU, PlaneView, StackLinker
from protocol.geometry.stitch import DEFAULT_MERGE_IOU, PreparedTile, StitchResult, TileStitcher
from protocol.ops import requests as ops
from protocol.ops.concept import concept
from protocol.ops.fan_out import REQUESTS_PER_WORKER, fan_out
from protocol.wire.client import SamClient
from protocol.wire.wire_image import stack_contrast_limits, to_wire

log = logging.getLogger(__name__)

# Pixels read to estimate a slice's contrast limits (a strided sample).
CONTRAST_SAMPLE_PIXELS = 1 << 20


@dataclass(frozen=True)
class TiledAutoResult:
    """What :func:`tiled_auto` wrote into its output.

    Attributes:
        num_objects: labels 1..n in the output.
        areas: pixels of label i at ``areas[i - 1]``.
        tiles: tiles in the grid.
        tiles_done: tiles answered and stitched (fewer than ``tiles`` only when cancelled).
        in_flight: requests kept in flight.
        seconds: wall time of the whole run.
        cancelled: the run stopped early because ``cancel`` was set.
        request_ids: the request id of each tile answered, in grid (row-major,
            sending) order, to find the tiles in the broker and worker logs.
        resends: tile requests sent again (lost broker connections, timeouts).
        scores: ``concept`` only: the score of label i at ``scores[i - 1]``, the highest
            score of its pieces when tiles merged it (:class:`~protocol.geometry.stitch.TileStitcher`);
            empty for ``auto``.
        lut: ``relabel=False`` only: uint32 (nodes,), the final id of each value ``out`` holds
            (``final = lut[out]``, :attr:`~protocol.geometry.stitch.StitchResult.lut`); None: ``out``
            holds the final ids.
    """

    num_objects: int
    areas: list[int]
    tiles: int
    tiles_done: int
    in_flight: int
    seconds: float
    cancelled: bool
    request_ids: tuple[str, ...] = ()
    resends: int = 0
    scores: tuple[float, ...] = ()
    lut: np.ndarray | None = None


def sample_contrast_limits(
    source: Any, max_pixels: int = CONTRAST_SAMPLE_PIXELS
) -> tuple[float, float] | None:
    """The 1st and 99th percentiles of an (H, W[, C]) slice, from a strided sample of at most ~``max_pixels``.

    The sample is one strided read (no larger than a tile by default).

    ``None`` for uint8 and bool slices (sent as they are) and flat ones.
    """
    if np.dtype(source.dtype) in (np.uint8, np.bool_):
        return None
    height, width = int(source.shape[0]), int(source.shape[1])
    step = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
    sample = np.asarray(source[::step, ::step])
    return stack_contrast_limits(sample)


def tiled_auto(
    source: Any,
    out: Any,
    client_factory: Callable[[], SamClient],
    params: Mapping[str, Any] | None = None,
    *,
    contrast_limits: tuple[float, float] | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    halo: int = DEFAULT_HALO,
    merge_iou: float = DEFAULT_MERGE_IOU,
    in_flight: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    timeout_s: float | None = None,
    op: str = "auto",
    relabel: bool = True,
) -> TiledAutoResult:
    """Segment an (H, W[, C]) slice automatically, tile by tile, over all workers.

    Args:
        source: (H, W) grey or (H, W, 3|4) colour array-like with numpy
            slicing; only tile windows are read.
        out: (H, W) uint32 zero-filled output (numpy or zarr array); gets
            labels 0 = background, 1..n.
        client_factory: makes one connected client per sending thread, e.g.
            ``lambda: SamClient(endpoint, service)``.
        params: ``auto``'s parameters (protocol/README.md), the same for every tile.
        contrast_limits: (low, high) for non-uint8 pixels; ``None``: the
            slice's 1st/99th percentiles (:func:`sample_contrast_limits`).
        tile_size: tile side in pixels (the model's input: tiles are seen at native resolution).
        halo: overlap in pixels between neighbouring tiles; objects cut by a
            core border are matched there. Should exceed the largest object's radius.
        merge_iou: IoU in the overlap from which two tile objects are one.
        in_flight: requests at once; ``None``: :data:`~protocol.ops.fan_out.REQUESTS_PER_WORKER` x the
            broker's worker count for the service.
        on_progress: ``on_progress(tiles_done, tiles_total)`` after each stitched tile
            (on the calling thread).
        cancel: set it to stop: no new tile is sent, tiles in flight are
            cancelled (``mmi.cancel``); what was stitched so far stays in ``out``.
        timeout_s: silence allowed per tile request (default: the client's).
        op: ``auto``, or ``concept`` (SAM 3: every instance of a text concept; ``params``
            from :func:`protocol.ops.concept.concept_params`, text only: exemplar boxes
            belong to one window, not to every tile).
        relabel: False: ``out`` keeps the stitcher's node numbers and the result's ``lut`` maps
            them to the final ids, for a caller that reads ``out`` once more anyway (a label file
            written tile by tile applies it as it reads: no second write and read of every core).

    Returns:
        :class:`TiledAutoResult`.

    Raises:
        RemoteError, RequestTimeout, AnswerError: a tile failed (the other
            tiles are cancelled first).
        ValueError: shapes of ``source`` and ``out`` do not match.
    """
    started = time.monotonic()
    height, width = int(source.shape[0]), int(source.shape[1])
    if tuple(int(s) for s in out.shape) != (height, width):
        raise ValueError(f"output of shape {tuple(out.shape)} does not match the slice {(height, width)}")
    grid = tile_grid((height, width), tile_size, halo)
    stitcher = TileStitcher(out, grid, merge_iou=merge_iou)
    stop = cancel if cancel is not None else threading.Event()
    if contrast_limits is None:
        contrast_limits = sample_contrast_limits(source)
    auto_params = dict(params or {})
    if op not in ("auto", "concept"):
        raise ValueError(f"tiled op must be auto or concept, got {op!r}")
    if op == "concept" and auto_params.get("boxes"):
        raise ValueError("a tiled concept takes a text prompt only (exemplar boxes belong to one window)")

    request_ids: dict[int, str] = {}

    def send(client: SamClient, tile: Tile, halt: threading.Event) -> tuple[PreparedTile, str]:
        image = to_wire(np.asarray(source[tile.window_slices]), contrast_limits)
        if op == "concept":
            found = concept(client, image, auto_params, cancel=halt, timeout_s=timeout_s)
            # the per-pixel part of stitching, here in the receiving thread
            return stitcher.prepare(tile, found.labels, found.scores), found.request_id
        answer = ops.auto(client, image, auto_params, cancel=halt, timeout_s=timeout_s)
        return stitcher.prepare(tile, answer.labels), answer.request_id

    def stitch(tile: Tile, sent: tuple[PreparedTile, str]) -> None:
        prepared, request_id = sent
        stitcher.add_prepared(prepared)
        request_ids[tile.flat] = request_id
        log.debug("tile %s window=%s request_id=%s", tile.index, tile.window, request_id)
        if on_progress is not None:
            on_progress(stitcher.tiles_done, len(grid))

    run = fan_out(
        grid.tiles, client_factory, send, stitch,
        in_flight=in_flight, per_worker=REQUESTS_PER_WORKER, cancel=stop,
    )  # fmt: skip
    stitched: StitchResult = stitcher.finish(relabel)
    return TiledAutoResult(
        num_objects=stitched.num_objects,
        areas=stitched.areas,
        tiles=len(grid),
        tiles_done=stitched.tiles_done,
        in_flight=run.in_flight,
        seconds=time.monotonic() - started,
        cancelled=stop.is_set(),
        request_ids=tuple(request_ids[flat] for flat in sorted(request_ids)),
        resends=run.resends,
        scores=tuple(stitched.scores),
        lut=stitched.lut,
    )


@dataclass(frozen=True)
class StackAutoResult:
    """What :func:`tiled_auto_stack` wrote.

    Attributes:
        slices: one :class:`TiledAutoResult` per slice done (ids there are per slice, before linking).
        num_ids: ids used in the whole output (1..num_ids; with linking, one per object through z).
        cancelled: the run stopped early because ``cancel`` was set.
        scores: ``concept`` only: per slice done, ``{final id: score}`` of its instances (the ids
            of the output, after linking); empty dicts for ``auto``.
    """

    slices: list[TiledAutoResult]
    num_ids: int
    cancelled: bool
    scores: list[dict[int, float]] = field(default_factory=list)


def tiled_auto_stack(
    stack: Any,
    out: Any,
    client_factory: Callable[[], SamClient],
    params: Mapping[str, Any] | None = None,
    *,
    link: bool = True,
    link_iou: float = DEFAULT_LINK_IOU,
    contrast_limits: tuple[float, float] | None = None,
    on_progress: Callable[[int, int, int, int], None] | None = None,
    cancel: threading.Event | None = None,
    **tiling: Any,
) -> StackAutoResult:
    """:func:`tiled_auto` on every slice of a (Z, H, W[, C]) stack, linking slices by overlap.

    Each slice is segmented into ``out[z]`` and then relabelled in place
    (:class:`protocol.geometry.link.StackLinker`): with ``link`` an object keeps
    one id through z (IoU >= ``link_iou`` with the previous slice), without
    it the ids of each slice are 1..n. Slices are read and written through
    :class:`protocol.geometry.link.PlaneView`, so a zarr stack is touched tile by tile.

    Args:
        stack: (Z, H, W) or (Z, H, W, 3|4) array-like.
        out: (Z, H, W) uint32 zero-filled output.
        client_factory, params, contrast_limits: as :func:`tiled_auto`
            (``None`` limits: each slice's own percentiles).
        on_progress: ``on_progress(slice_index, slices, tiles_done, tiles)``.
        cancel: stops after the tiles in flight; finished slices stay linked.
        **tiling: ``tile_size``, ``halo``, ``merge_iou``, ``in_flight``, ``timeout_s``.
    """
    depth = int(stack.shape[0])
    if tuple(int(s) for s in out.shape) != tuple(int(s) for s in stack.shape[:3]):
        raise ValueError(f"output of shape {tuple(out.shape)} does not match the stack {tuple(stack.shape)}")
    linker = StackLinker(link=link, iou_threshold=link_iou)
    done: list[TiledAutoResult] = []
    scores: list[dict[int, float]] = []
    stop = cancel if cancel is not None else threading.Event()
    for z in range(depth):
        if stop.is_set():
            break
        plane = PlaneView(out, z)

        def progress(tiles_done: int, tiles: int, z: int = z) -> None:
            if on_progress is not None:
                on_progress(z, depth, tiles_done, tiles)

        result = tiled_auto(
            PlaneView(stack, z),
            plane,
            client_factory,
            params,
            contrast_limits=contrast_limits,
            on_progress=progress,
            cancel=stop,
            **tiling,
        )
        done.append(result)
        linker.add(plane, plane)
        scores.append(linker.final_scores(result.scores))
    return StackAutoResult(done, linker.next_id - 1, stop.is_set(), scores)
