"""Divisions of a time-lapse labels layer: ``{daughter label: parent label}`` kept in the layer's metadata.

Stored under :data:`LINEAGE_KEY` as ``{"3": 2, "4": 2}`` (JSON keys are text),
so it survives the plugin's TIFF/JSON save and reopen and reaches every
tracking export (Cell Tracking Challenge, GEFF: :mod:`protocol.formats.tracks`).
Pure Python: no Qt, no napari.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugin.labels.metadata_entries import label_entries

LINEAGE_KEY = "label_lineage"


def lineage_from_metadata(metadata: Mapping[str, Any] | None) -> dict[int, int]:
    """``{daughter: parent}`` from layer metadata; malformed entries (non-integer, self-parent) skipped."""
    lineage: dict[int, int] = {}
    for daughter, value in label_entries(metadata, LINEAGE_KEY):
        try:
            parent = int(value)
        except (TypeError, ValueError):
            continue
        if parent > 0 and daughter != parent:
            lineage[daughter] = parent
    return lineage


def lineage_metadata(lineage: Mapping[int, int]) -> dict[str, int]:
    """The metadata form of ``lineage`` (text keys, sorted)."""
    return {str(d): int(p) for d, p in sorted(lineage.items())}
