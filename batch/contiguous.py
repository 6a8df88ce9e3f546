"""Pixels stored contiguously in a file, read and written window by window, nothing else kept.

tifffile writes an uncompressed image as one strip, and its zarr view
(``imread(aszarr=True)``) then has one chunk: the whole image, decoded again
for every window a tile reads. :class:`ContiguousPixels` reads only the rows
of a window, each with one ``os.pread`` of its columns: no memory map (whose
pages would stay resident and count in the process's RSS) and no cache, so
the memory a read takes is the window it returns. :meth:`ContiguousPixels.create`
makes a zero-filled file of that layout that windows are written into with
``os.pwrite`` (the batch's temporary label store: no chunk is decompressed
and recompressed around a tile's core, as a zarr store would); its blocks
are allocated up front (``posix_fallocate``: a full disk fails before any
work is done, and a write into an allocated block costs a third of one that
allocates it), where the file system allows.

Arrays are (..., H, W) or (..., H, W, C), (row, col) order as stored.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


class ContiguousPixels:
    """An array-like over pixels stored contiguously (C order) in a file at ``offset``.

    Args:
        path: the file.
        offset: byte offset of the first pixel.
        shape: the stored shape, (..., H, W) or (..., H, W, C) with ``colour``.
        dtype: the stored dtype, with its byte order (read values come back in native order).
        colour: the last axis holds colour samples.

    Indexing: integers (or, to read, slices) for the leading axes, then slices
    (positive steps) for rows, columns and samples; e.g.
    ``pixels[3, 0:1024, 512:1536]`` or ``pixels[0, ::16, ::16]``. Writes
    (files from :meth:`create`): a grey window with steps of 1.
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        shape: tuple[int, ...],
        dtype: Any,
        colour: bool,
        writable: bool = False,
    ) -> None:
        self.path = path
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self._stored = np.dtype(dtype)
        self.dtype = self._stored.newbyteorder("=")
        self.ndim = len(self.shape)
        self._spatial = 3 if colour else 2
        # A file object, not a bare descriptor: copies of this array-like (dask makes some) share it,
        # and it is closed when the last of them goes.
        self._file = open(path, "r+b" if writable else "rb", buffering=0)

    @classmethod
    def create(cls, path: Path, shape: tuple[int, ...], dtype: Any) -> ContiguousPixels:
        """A new zero-filled file of (..., H, W) ``dtype`` pixels, open for reading and writing.

        Raises:
            OSError: not enough space on the file system for it (nothing is left behind).
        """
        size = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize
        with open(path, "wb") as handle:
            handle.truncate(size)
            try:
                os.posix_fallocate(handle.fileno(), 0, size)
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    path.unlink()
                    raise OSError(
                        e.errno, f"no space for {size / 2**30:.1f} GiB of temporary labels in {path.parent}"
                    ) from e
                # not supported here (EOPNOTSUPP, EINVAL): the file stays sparse, blocks come as written
        return cls(path, 0, shape, dtype, colour=False, writable=True)

    def close(self) -> None:
        """Close the file (further reads and writes fail)."""
        self._file.close()

    @property
    def _fd(self) -> int:
        return self._file.fileno()

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        lead = self.ndim - self._spatial
        for axis, k in enumerate(key[:lead]):  # a slice of planes (dask reads [0:1, r0:r1, c0:c1])
            if isinstance(k, slice):
                picks = range(*k.indices(self.shape[axis]))
                planes = [self[(*key[:axis], i, *key[axis + 1 :])] for i in picks]
                if planes:
                    return np.stack(planes)
                return np.empty((0, *self[(*key[:axis], 0, *key[axis + 1 :])].shape), self.dtype)
        plane, rows, cols, rest = self._window(key)
        item = self._stored.itemsize * (self.shape[-1] if self._spatial == 3 else 1)
        samples = self.shape[-1] if self._spatial == 3 else 1
        width = self.shape[self.ndim - self._spatial + 1]
        if cols.step == 1 and self._stored == self.dtype and len(rows) and len(cols):
            return self._read_rows(plane, rows, cols, rest)
        out = np.empty((len(rows), len(cols), samples), dtype=self.dtype)
        if len(rows) and len(cols):
            lo, span = cols[0], cols[-1] + 1 - cols[0]
            for k, r in enumerate(rows):
                raw = os.pread(self._fd, span * item, plane + (r * width + lo) * item)
                if len(raw) != span * item:
                    raise OSError(f"{self.path}: the file ends before row {r}")
                out[k] = np.frombuffer(raw, dtype=self._stored).reshape(span, samples)[:: cols.step]
        return out[..., rest[2]] if self._spatial == 3 else out[..., 0]

    def _read_rows(self, plane: int, rows: range, cols: range, rest: list[Any]) -> np.ndarray:
        """A window of whole column runs in native byte order: each row read straight into the result."""
        samples = self.shape[-1] if self._spatial == 3 else 1
        item = self._stored.itemsize * samples
        width = self.shape[self.ndim - self._spatial + 1]
        out = np.empty((len(rows), len(cols) * samples), dtype=self.dtype)
        span = len(cols) * item
        for k, r in enumerate(rows):
            if os.preadv(self._fd, [out[k]], plane + (r * width + cols.start) * item) != span:
                raise OSError(f"{self.path}: the file ends before row {r}")
        if self._spatial == 3:
            return out.reshape(len(rows), len(cols), samples)[..., rest[2]]
        return out

    def __setitem__(self, key: Any, value: Any) -> None:
        """Write a (rows, cols) window (grey files only, steps of 1)."""
        plane, rows, cols, _ = self._window(key)
        if self._spatial != 2 or rows.step != 1 or cols.step != 1:
            raise IndexError(f"writes take a grey window with steps of 1, got {key!r}")
        block = np.broadcast_to(np.asarray(value, dtype=self._stored), (len(rows), len(cols)))
        block = np.ascontiguousarray(block)
        width, item = self.shape[-1], self._stored.itemsize
        for k, r in enumerate(rows):
            os.pwrite(self._fd, block[k], plane + (r * width + cols.start) * item)

    def _window(self, key: Any) -> tuple[int, range, range, list[Any]]:
        """(byte offset of the indexed plane, rows, columns, the spatial keys) of an index."""
        key = key if isinstance(key, tuple) else (key,)
        lead = self.ndim - self._spatial
        if not lead <= len(key) <= self.ndim or not all(isinstance(k, (int, np.integer)) for k in key[:lead]):
            raise IndexError(f"index the leading {lead} axes with integers, then slices: got {key!r}")
        index = [int(k) for k in key[:lead]]
        if any(not -n <= i < n for i, n in zip(index, self.shape, strict=False)):
            raise IndexError(f"index {index} out of range for shape {self.shape}")
        index = [i % n for i, n in zip(index, self.shape, strict=False)]
        rest = list(key[lead:]) + [slice(None)] * (self._spatial - len(key[lead:]))
        if not all(isinstance(k, slice) for k in rest):
            raise IndexError(f"rows, columns and samples take slices, got {key!r}")
        height, width = self.shape[lead], self.shape[lead + 1]
        rows = range(*rest[0].indices(height))
        cols = range(*rest[1].indices(width))
        if rows.step < 0 or cols.step < 0:
            raise IndexError(f"negative steps are not supported: {key!r}")
        plane = self.offset
        for axis, i in enumerate(index):  # byte offset of the (H, W[, C]) plane
            plane += i * math.prod(self.shape[axis + 1 :]) * self._stored.itemsize
        return plane, rows, cols, rest


def contiguous_tiff(path: Path, colour: bool) -> ContiguousPixels | None:
    """:class:`ContiguousPixels` of a TIFF's first series when stored uncompressed in one run, else None."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        offset = series.dataoffset  # None unless uncompressed and stored in one run
        dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
        shape = tuple(series.shape)
    return None if offset is None else ContiguousPixels(path, offset, shape, dtype, colour)
