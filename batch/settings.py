"""What a batch is asked to do and what it did: :class:`BatchSettings`, :class:`BatchReport`.

Also the probe that finds the broker's workers for the model before anything is
read (:func:`broker_workers`); :mod:`batch.runner` runs the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch.concept import AUTO, CONCEPT, ConceptPrompt
from batch.large import DEFAULT_MAX_IN_MEMORY_BYTES
from batch.shards import Shard
from protocol.geometry.grid import DEFAULT_HALO, DEFAULT_TILE_SIZE
from protocol.runtime.checkpoints import DEFAULT_MODEL
from protocol.wire.automask import AutoMaskParams
from protocol.wire.client import SamClient
from protocol.wire.errors import ProtocolError, RequestTimeout
from protocol.wire.mdp import DEFAULT_FRONTEND

PROBE_TIMEOUT_S = 5.0


class ConnectionFailure(Exception):
    """No broker answered, or it has no worker for the model."""


@dataclass(frozen=True)
class BatchSettings:
    """How to run a batch.

    Attributes:
        broker: the broker's client endpoint.
        model: the service (model name) to ask.
        auto_mask: ``auto``'s parameters (the shared schema and its defaults,
            :class:`protocol.wire.automask.AutoMaskParams`).
        in_flight: requests sent at once; None: :func:`protocol.ops.fan_out.requests_in_flight`
            (2 x the workers the broker reports).
        timeout_s: silence allowed per request before it counts as lost
            (``auto`` reports progress about once a second, which resets it).
        contrast_limits: (low, high) for every non-uint8 input; None: each
            image's own 1st-99th percentiles (a stack's over all its slices).
        overwrite: redo inputs whose label file already exists.
        output_format: ``tiff``, ``ome-zarr`` or ``geojson`` (see :mod:`batch.outputs`).
        coordinates: GeoJSON ``pixel`` (QuPath) or ``physical`` coordinates (the input's pixel size).
        progress: show a progress bar (only on a terminal).
        tiling: segment slices larger than ``tile_size`` as tiles at native resolution
            (off: each slice is one request, seen downsampled by the model).
        tile_size: tile side in pixels (the model's input).
        tile_halo: overlap of neighbouring tiles in pixels (above the largest object's radius).
        link_slices: one id per object through a stack's slices (off: each slice's ids 1..n).
        max_in_memory_bytes: inputs and uint32 label images larger than this are read
            lazily and written tile by tile.
        root_image: OME-Zarr outputs hold the source image at their root (off: labels only).
        shard: do only this shard's share of the inputs (:mod:`batch.shards`), None: all of them.
        concept: every instance of this concept (``concept`` op, :mod:`batch.concept`) instead of
            automatic masks; None: ``auto``.
    """

    broker: str = DEFAULT_FRONTEND
    model: str = DEFAULT_MODEL
    auto_mask: AutoMaskParams = field(default_factory=AutoMaskParams)
    in_flight: int | None = None
    timeout_s: float = 600.0
    contrast_limits: tuple[float, float] | None = None
    overwrite: bool = False
    progress: bool = True
    output_format: str = "tiff"
    coordinates: str = "pixel"
    tiling: bool = True
    tile_size: int = DEFAULT_TILE_SIZE
    tile_halo: int = DEFAULT_HALO
    link_slices: bool = True
    max_in_memory_bytes: int = DEFAULT_MAX_IN_MEMORY_BYTES
    root_image: bool = True
    shard: Shard | None = None
    concept: ConceptPrompt | None = None

    @property
    def op(self) -> str:
        """The op of every request: ``auto``, or ``concept`` with :attr:`concept`."""
        return AUTO if self.concept is None else CONCEPT

    def auto_params(self) -> dict[str, Any]:
        """The params of every request, ``auto``'s or ``concept``'s (contrast limits go separately)."""
        return self.auto_mask.to_params() if self.concept is None else self.concept.params()


@dataclass
class BatchReport:
    """What a batch did (files are inputs; a stack counts once, its slices in ``slices``)."""

    files: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    slices: int = 0
    failed_slices: int = 0
    in_flight: int = 0
    seconds: float = 0.0
    summary: Path | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0


def broker_workers(settings: BatchSettings) -> int:
    """Number of workers the broker has for ``settings.model``.

    Raises:
        ConnectionFailure: no broker answered within a few seconds, or it has no such worker.
    """
    try:
        with SamClient(settings.broker, settings.model) as client:
            listing = client.services(timeout_s=PROBE_TIMEOUT_S)
    except (RequestTimeout, ProtocolError) as e:
        raise ConnectionFailure(f"no broker answered at {settings.broker}: {e}") from e
    workers = int(listing.get(settings.model, {}).get("workers", 0))
    if workers < 1:
        known = ", ".join(sorted(name for name, entry in listing.items() if entry.get("workers"))) or "none"
        raise ConnectionFailure(
            f"the broker at {settings.broker} has no worker for model {settings.model!r} "
            f"(models with workers: {known})"
        )
    return workers
