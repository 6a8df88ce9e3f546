"""LRU cache of image embeddings, keyed by image key and bounded in bytes.

An entry is exactly what ``SAM2ImagePredictor.set_image`` leaves behind for
one image: the image embedding (1, 256, 64, 64), the high-resolution
features ((1, 32, 256, 256), (1, 64, 128, 128)) (float32, or bfloat16 under
CUDA autocast, on the model's device) and the image's (H, W). Restoring an
entry makes ``predict`` work without running the image encoder. Reading and
writing that predictor state is :mod:`workers.sam2_internals`' job (sam2's
private members). About 16 MiB per entry in float32.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from workers.sam2_internals import capture_embedding, restore_embedding


@dataclass(frozen=True)
class EmbeddingEntry:
    """The predictor state of one embedded image.

    Attributes:
        image_embed: (1, 256, 64, 64) tensor on the model's device.
        high_res_feats: the predictor's high-resolution features, ((1, 32, 256, 256), (1, 64, 128, 128)).
        orig_hw: (H, W) of the image that was embedded, in pixels.
    """

    image_embed: torch.Tensor
    high_res_feats: tuple[torch.Tensor, ...]
    orig_hw: tuple[int, int]

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors of this entry."""
        tensors = (self.image_embed, *self.high_res_feats)
        return sum(t.numel() * t.element_size() for t in tensors)

    @classmethod
    def from_predictor(cls, predictor: Any) -> EmbeddingEntry:
        """Capture the state of a ``SAM2ImagePredictor`` after ``set_image`` of one image.

        Raises:
            RuntimeError: no single image is set.
        """
        return cls(*capture_embedding(predictor))

    def restore_into(self, predictor: Any) -> None:
        """Make ``predictor`` hold this embedding, exactly as ``set_image`` would have left it."""
        restore_embedding(predictor, self.image_embed, self.high_res_feats, self.orig_hw)


class EmbeddingCache:
    """Least-recently-used :class:`EmbeddingEntry` store with a byte budget.

    ``get`` counts hits and misses and marks the entry as most recently used;
    ``put`` evicts the least recently used entries until the new one fits.
    An entry larger than the whole budget is not stored.
    """

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 0:
            raise ValueError(f"cache limit must be >= 0 bytes, got {limit_bytes}")
        self.limit_bytes = limit_bytes
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[str, EmbeddingEntry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Membership without touching counters or recency."""
        return key in self._entries

    @property
    def nbytes(self) -> int:
        """Bytes held by all entries."""
        return self._bytes

    def get(self, key: str) -> EmbeddingEntry | None:
        """The entry for ``key`` (a hit, now most recently used) or ``None`` (a miss)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: EmbeddingEntry) -> bool:
        """Store ``entry`` under ``key`` as most recently used; return whether it was stored."""
        self.discard(key)
        size = entry.nbytes
        if size > self.limit_bytes:
            return False
        while self._entries and self._bytes + size > self.limit_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.nbytes
            self.evictions += 1
        self._entries[key] = entry
        self._bytes += size
        return True

    def discard(self, key: str) -> None:
        """Remove ``key`` if present."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes

    def clear(self) -> None:
        """Remove every entry (counters are kept)."""
        self._entries.clear()
        self._bytes = 0

    def stats(self) -> dict[str, int]:
        """``entries``, ``bytes``, ``limit_bytes``, ``hits``, ``misses``, ``evictions`` (for ``info``)."""
        return {
            "entries": len(self._entries),
            "bytes": self._bytes,
            "limit_bytes": self.limit_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }
