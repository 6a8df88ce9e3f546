"""Image embeddings on disk, shared by the workers of a host (or a shared filesystem).

A worker that encodes an image writes its :class:`workers.cache.EmbeddingEntry`
here; a restarted worker, another worker of the same model, or napari
reopened tomorrow then answers a click on that image without running the
image encoder (about 4 s on a CPU, 50-100 ms on a GPU) — reading 16 MiB
costs a few milliseconds.

Keys: an entry belongs to a *namespace* — the model (service) name, the
checkpoint's SHA-256 (or ``random-weights``), the preprocessing and the
embedding dtype — and, inside it, to an image key (which already hashes the
pixels, contrast limits and model). The file name is a hash of both.

Entry file (no pickle: raw tensor bytes behind a small JSON header)::

    b"SAM2EMB1"                      8-byte magic
    uint32 little-endian             length of the JSON header in bytes
    JSON header                      {"namespace", "image_key", "orig_hw": [H, W],
                                      "tensors": [{"shape": [...], "dtype": "float32"}, ...],
                                      "payload_bytes": n, "blake3": hex digest of the payload}
    payload                          the tensors' bytes, C order, one after another

The header is padded with spaces (valid JSON) so that the payload starts at a
multiple of 64 bytes: a reader maps the tensors onto the bytes it read
(``torch.frombuffer``, no copy). Files written before the padding are read
with a copy.

Tensors are stored exactly as the encoder left them (float32, or bfloat16
under CUDA bf16 autocast; no float16 rounding): a 1024² SAM2 entry is
image_embed (1, 256, 64, 64) + high-res features (1, 32, 256, 256) and
(1, 64, 128, 128) = 16 MiB in float32, 8 MiB in bfloat16.

Several writers: each writes a temporary file in the cache folder and renames
it into place (atomic on POSIX), so a reader sees a whole entry or none; two
workers writing the same key write the same bytes. Readers tolerate a file
that vanishes (eviction by another worker) and treat a file whose magic,
header, length or checksum is wrong as a miss: it is deleted and the image
is encoded again. Eviction: after each write, the least recently used
entries (file mtime, which a read bumps: atime is unreliable with
``relatime``/``noatime`` mounts) are deleted until the folder fits the bound.

A starting worker calls :meth:`DiskEmbeddingCache.recent` to read the most
recently used entries of its namespace into its memory cache before it
serves, so the first click after a restart on the images in use costs no
file read (the ``preloaded`` counter).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import torch

from protocol.runtime.paths import APP_DIR, user_base_cache_dir
from workers.cache import EmbeddingEntry

log = logging.getLogger(__name__)

MAGIC = b"SAM2EMB1"
SUFFIX = ".emb"
DEFAULT_LIMIT_GIB = 4.0
DIR_ENV = "SAM2_DISK_CACHE_DIR"
LIMIT_ENV = "SAM2_DISK_CACHE_GIB"
MAX_HEADER_BYTES = 64 * 1024
MAX_TENSORS = 8
PAYLOAD_ALIGN = 64  # bytes; the payload's offset in a file written now
MAX_SCANNED = 256  # entry headers read at most when looking for the recent entries of a namespace
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_LENGTH = struct.Struct("<I")


class CorruptEntry(ValueError):
    """An entry file that is not a whole, valid entry."""


def default_dir() -> Path:
    """``$SAM2_DISK_CACHE_DIR``, else ``<user cache>/napari-sam2-broker/embeddings``."""
    configured = os.environ.get(DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else user_base_cache_dir() / APP_DIR / "embeddings"


def default_limit_gib() -> float:
    """``$SAM2_DISK_CACHE_GIB`` (0 turns the disk cache off), else 4 GiB."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    try:
        return max(0.0, float(text)) if text else DEFAULT_LIMIT_GIB
    except ValueError:
        log.warning("ignoring %s=%r (not a number)", LIMIT_ENV, text)
        return DEFAULT_LIMIT_GIB


def namespace(model: str, checkpoint_sha256: str | None, preprocessing: str, dtype_name: str) -> str:
    """What makes two embeddings of the same image interchangeable: model, weights, preprocessing, dtype."""
    weights = checkpoint_sha256 or "random-weights"
    return f"{model}|{weights}|{preprocessing}|{dtype_name}"


@dataclass
class DiskCounters:
    """``hits``, ``misses``, ``writes``, ``evictions``, ``corrupt`` (entries found damaged), ``errors``,
    ``preloaded`` (entries read at start-up by :meth:`DiskEmbeddingCache.recent`)."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    evictions: int = 0
    corrupt: int = 0
    errors: int = 0
    preloaded: int = 0


class DiskEmbeddingCache:
    """Embedding entries as files in ``directory``, at most ``limit_bytes`` in all (LRU by mtime).

    Args:
        directory: the cache folder (created when missing); may be shared.
        limit_bytes: bound on the total size of the entry files.
        space: this worker's :func:`namespace`.
    """

    def __init__(self, directory: Path, limit_bytes: int, space: str) -> None:
        if limit_bytes <= 0:
            raise ValueError(f"disk cache limit must be > 0 bytes, got {limit_bytes}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.limit_bytes = limit_bytes
        self.namespace = space
        self.counters = DiskCounters()

    def path_for(self, image_key: str) -> Path:
        """The entry file of ``image_key`` in this namespace."""
        digest = hashlib.sha256(f"{self.namespace}\0{image_key}".encode()).hexdigest()[:40]
        return self.directory / f"{digest}{SUFFIX}"

    # -- reading ----------------------------------------------------------------

    def get(self, image_key: str, device: torch.device | str = "cpu") -> EmbeddingEntry | None:
        """The entry of ``image_key`` with its tensors on ``device``, or None (a miss).

        A damaged file counts as ``corrupt``, is deleted and is a miss.
        """
        entry = self._load(self.path_for(image_key), image_key, device)
        if entry is None:
            self.counters.misses += 1
        else:
            self.counters.hits += 1
        return entry

    def recent(self, count: int, device: torch.device | str = "cpu") -> list[tuple[str, EmbeddingEntry]]:
        """Up to ``count`` entries of this namespace, most recently used first, as ``(image_key, entry)``.

        For a starting worker's memory cache. Reads the headers of at most
        :data:`MAX_SCANNED` files; does not change the entries' recency.
        """
        found: list[tuple[str, EmbeddingEntry]] = []
        if count <= 0:
            return found
        for _, _, path in sorted(self._files(), reverse=True)[:MAX_SCANNED]:
            image_key = self._image_key_of(Path(path))
            if image_key is None:
                continue
            entry = self._load(Path(path), image_key, device, touch=False)
            if entry is not None:
                found.append((image_key, entry))
                self.counters.preloaded += 1
                if len(found) == count:
                    break
        return found

    def _image_key_of(self, path: Path) -> str | None:
        """The image key in ``path``'s header when the entry is of this namespace, else None."""
        try:
            with open(path, "rb") as f:
                head = f.read(len(MAGIC) + _LENGTH.size)
                if len(head) < len(MAGIC) + _LENGTH.size or not head.startswith(MAGIC):
                    return None
                (header_len,) = _LENGTH.unpack_from(head, len(MAGIC))
                if header_len > MAX_HEADER_BYTES:
                    return None
                header = json.loads(f.read(header_len))
        except (OSError, ValueError):
            return None
        if not isinstance(header, dict) or header.get("namespace") != self.namespace:
            return None
        key = header.get("image_key")
        return key if isinstance(key, str) else None

    def _load(
        self, path: Path, image_key: str, device: torch.device | str, touch: bool = True
    ) -> EmbeddingEntry | None:
        """Read and check ``path``; None when it is missing, unreadable or damaged (then deleted)."""
        try:
            with open(path, "rb") as f:
                data = bytearray(os.fstat(f.fileno()).st_size)  # one buffer: the tensors map onto it
                if f.readinto(data) != len(data):
                    raise OSError("the file changed size while being read")
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("disk cache: cannot read %s: %s", path, e)
            self.counters.errors += 1
            return None
        try:
            entry = self._decode(data, image_key, device)
        except CorruptEntry as e:
            log.warning("disk cache: %s is damaged (%s); deleting it, the image is encoded again", path, e)
            self.counters.corrupt += 1
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        if touch:
            with contextlib.suppress(OSError):  # most recently used: eviction goes by mtime
                os.utime(path)
        return entry

    def _decode(self, data: bytearray, image_key: str, device: torch.device | str) -> EmbeddingEntry:
        if len(data) < len(MAGIC) + _LENGTH.size or not data.startswith(MAGIC):
            raise CorruptEntry("no entry magic")
        (header_len,) = _LENGTH.unpack_from(data, len(MAGIC))
        start = len(MAGIC) + _LENGTH.size
        if header_len > MAX_HEADER_BYTES or start + header_len > len(data):
            raise CorruptEntry(f"header length {header_len} does not fit the file")
        try:
            header: Any = json.loads(data[start : start + header_len])
            tensors = header["tensors"]
            orig_hw = (int(header["orig_hw"][0]), int(header["orig_hw"][1]))
            payload_bytes = int(header["payload_bytes"])
            checksum = str(header["blake3"])
            specs = [(tuple(int(n) for n in t["shape"]), DTYPES[t["dtype"]]) for t in tensors]
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise CorruptEntry(f"bad header: {type(e).__name__}: {e}") from None
        if header.get("namespace") != self.namespace or header.get("image_key") != image_key:
            raise CorruptEntry("the header names another namespace or image key")  # a hash collision
        payload = memoryview(data)[start + header_len :]
        if len(payload) != payload_bytes:
            raise CorruptEntry(f"payload is {len(payload)} bytes, header says {payload_bytes} (truncated?)")
        if blake3.blake3(payload).hexdigest() != checksum:
            raise CorruptEntry("payload checksum mismatch")
        if not 2 <= len(specs) <= MAX_TENSORS:
            raise CorruptEntry(f"{len(specs)} tensors")
        out: list[torch.Tensor] = []
        offset = 0
        for shape, dtype in specs:
            count = 1
            for n in shape:
                count *= n
            nbytes = count * torch.empty((), dtype=dtype).element_size()
            if offset + nbytes > len(payload):
                raise CorruptEntry("tensor sizes exceed the payload")
            at = start + header_len + offset
            if at % PAYLOAD_ALIGN == 0:  # maps onto ``data``, no copy
                raw = torch.frombuffer(data, dtype=torch.uint8, count=nbytes, offset=at)
            else:  # an entry written before the payload was aligned
                raw = torch.frombuffer(bytearray(payload[offset : offset + nbytes]), dtype=torch.uint8)
            out.append(raw.view(dtype).reshape(shape).to(device))
            offset += nbytes
        if offset != len(payload):
            raise CorruptEntry("tensor sizes do not add up to the payload")
        return EmbeddingEntry(out[0], tuple(out[1:]), orig_hw)

    # -- writing ----------------------------------------------------------------

    def put(self, image_key: str, entry: EmbeddingEntry) -> bool:
        """Write ``entry`` (temporary file, then rename), then evict down to the bound; False on failure."""
        tensors = [entry.image_embed, *entry.high_res_feats]
        names = {dtype: name for name, dtype in DTYPES.items()}
        try:
            chunks = [t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes() for t in tensors]
            specs = [{"shape": list(t.shape), "dtype": names[t.dtype]} for t in tensors]
        except (KeyError, RuntimeError) as e:
            log.warning("disk cache: cannot store an entry of %s: %s", image_key, e)
            self.counters.errors += 1
            return False
        payload = b"".join(chunks)
        header = json.dumps(
            {
                "namespace": self.namespace,
                "image_key": image_key,
                "orig_hw": list(entry.orig_hw),
                "tensors": specs,
                "payload_bytes": len(payload),
                "blake3": blake3.blake3(payload).hexdigest(),
            }
        ).encode()
        header += b" " * (-(len(MAGIC) + _LENGTH.size + len(header)) % PAYLOAD_ALIGN)
        if len(MAGIC) + _LENGTH.size + len(header) + len(payload) > self.limit_bytes:
            return False
        path = self.path_for(image_key)
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(MAGIC + _LENGTH.pack(len(header)) + header)
                    f.write(payload)
                os.replace(tmp_name, path)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        except OSError as e:
            log.warning("disk cache: cannot write %s: %s", path, e)
            self.counters.errors += 1
            return False
        self.counters.writes += 1
        self.evict()
        return True

    def _files(self) -> list[tuple[int, int, str]]:
        """``(mtime_ns, size, path)`` of every entry file in the folder."""
        files: list[tuple[int, int, str]] = []
        with os.scandir(self.directory) as it:
            for item in it:
                if not item.name.endswith(SUFFIX):
                    continue
                try:
                    stat = item.stat()
                except FileNotFoundError:  # evicted by another worker meanwhile
                    continue
                files.append((stat.st_mtime_ns, stat.st_size, item.path))
        return files

    def evict(self) -> None:
        """Delete the least recently used entries until the folder's entries fit ``limit_bytes``."""
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= self.limit_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                self.counters.evictions += 1
            total -= size

    def stats(self) -> dict[str, Any]:
        """Counters plus ``dir`` and ``limit_bytes`` (for ``info``)."""
        return {"dir": str(self.directory), "limit_bytes": self.limit_bytes, **vars(self.counters)}
