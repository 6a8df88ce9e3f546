"""Per-label entries kept in a layer's metadata (names, lineage): read back defensively.

Metadata comes back from files and from other plugins, so an entry may be
anything; readers take only what parses and skip the rest.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def label_entries(metadata: Mapping[str, Any] | None, key: str) -> Iterator[tuple[int, Any]]:
    """``(label id, value)`` of the mapping stored under ``key`` (text keys, one per label).

    Missing metadata or a non-mapping entry yields nothing; keys that are not
    integers, and ids <= 0 (the background), are skipped.
    """
    raw = (metadata or {}).get(key) or {}
    if not isinstance(raw, Mapping):
        return
    for text, value in raw.items():
        try:
            label_id = int(text)
        except (TypeError, ValueError):
            continue
        if label_id > 0:
            yield label_id, value
