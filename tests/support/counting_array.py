"""An array-like that records every region read: proof that only windows, tiles or boxes are read."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class CountingArray:
    """Wraps an array (numpy, zarr, dask, a lazy plane); ``reads`` holds the shape of each region read.

    Thread-safe (tiles are read from several threads). Reading the whole array through
    ``np.asarray`` raises ``AssertionError``; reading it by ``[...]`` is recorded like any region.
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))
        self.reads: list[tuple[int, ...]] = []
        self._lock = threading.Lock()

    def __getitem__(self, key: Any) -> np.ndarray:
        value = np.asarray(self.array[key])
        with self._lock:
            self.reads.append(tuple(value.shape))
        return value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise AssertionError("the whole array was read")

    @property
    def areas(self) -> list[int]:
        """The pixels of each region read (rows x columns)."""
        with self._lock:
            return [int(np.prod(shape[:2])) for shape in self.reads]
