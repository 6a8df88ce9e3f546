"""The provenance record of each ``sam2-batch`` label file: model, checkpoint, settings, tile grid.

One ``info`` call per run gives the worker's model facts (checkpoint file
name and SHA-256 when the worker reports them; :func:`protocol.formats.provenance.model_facts`);
each file's record adds its source path and, for tiled runs, the tile grid
(tile size, halo, rows and columns of tiles). Written by
:mod:`batch.outputs` in each format's own place.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from protocol.formats.provenance import Provenance, tile_grid_record
from protocol.geometry.grid import tile_grid
from protocol.ops.requests import info
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import ClientError, ProtocolError

log = logging.getLogger(__name__)
INFO_TIMEOUT_S = 10.0


def service_info(broker: str, model: str) -> dict[str, Any]:
    """The ``info`` of one worker of ``model`` ({} with a warning when it does not answer)."""
    try:
        with SamClient(broker, model, config=ClientConfig(timeout_s=INFO_TIMEOUT_S, retries=0)) as client:
            return info(client)
    except (ClientError, ProtocolError) as e:
        log.warning("no info from model=%s (%s): provenance records the model name only", model, e)
        return {}


def batch_provenance(
    model: str,
    worker_info: dict[str, Any],
    source: Path,
    parameters: dict[str, Any],
    slice_shape: tuple[int, int] | None = None,
    tile_size: int | None = None,
    halo: int | None = None,
    op: str = "auto",
) -> Provenance:
    """The record of one input's labels (``tiled_<op>`` with the grid when ``tile_size`` is given;
    ``op``: ``auto`` or ``concept``)."""
    grid: dict[str, Any] | None = None
    if slice_shape is not None and tile_size is not None and halo is not None:
        grid_shape = tile_grid(slice_shape, tile_size, halo).grid_shape
        grid = tile_grid_record(tile_size, halo, grid_shape, slice_shape)
    return Provenance.from_info(
        f"tiled_{op}" if grid is not None else op,
        {"model": model, **worker_info},
        source_path=str(source),
        parameters=parameters,
        tile_grid=grid,
    )
