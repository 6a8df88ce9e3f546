"""SHA-256 of checkpoint files, computed once and remembered by (path, size, mtime).

A 3.4 GB checkpoint takes seconds to hash; a worker that starts many times a
day must not pay that at every start. :func:`file_sha256` keeps a small JSON
cache, ``sha256.json`` in the per-user cache folder
(``$XDG_CACHE_HOME/napari-sam2-broker/``, see
:func:`protocol.runtime.paths.user_base_cache_dir`), keyed by the file's
resolved path and valid only while its size and mtime (ns) are unchanged.
The cache is rewritten atomically (:mod:`protocol.runtime.atomic`); two
workers updating it at once may lose one entry, which costs one more hash,
never a wrong digest. A damaged cache file is ignored and replaced.

Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from protocol.runtime.atomic import atomic_file
from protocol.runtime.paths import APP_DIR, user_base_cache_dir

log = logging.getLogger(__name__)

CACHE_FILE_NAME = "sha256.json"
_CHUNK = 8 << 20


@dataclass(frozen=True)
class Digest:
    """The SHA-256 of one file.

    Attributes:
        sha256: 64 lowercase hex digits.
        cached: True when it came from the cache (the file was not read).
    """

    sha256: str
    cached: bool


class DigestMismatch(RuntimeError):
    """A file whose SHA-256 is not the pinned one."""


def default_cache_file() -> Path:
    """``<user cache>/sha256.json`` (next to the per-user checkpoint folder)."""
    return user_base_cache_dir() / APP_DIR / CACHE_FILE_NAME


def _read_cache(cache_file: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(cache_file.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("ignoring the damaged digest cache %s: %s", cache_file, e)
        return {}
    return data if isinstance(data, dict) else {}


def hash_file(path: Path) -> str:
    """SHA-256 of the bytes of ``path`` (reads the whole file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path | str, cache_file: Path | None = None) -> Digest:
    """The SHA-256 of ``path``, from the cache when its size and mtime are unchanged.

    Args:
        path: the file.
        cache_file: the JSON cache (default :func:`default_cache_file`).

    Raises:
        OSError: the file cannot be read.
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    cache_path = cache_file if cache_file is not None else default_cache_file()
    key = str(resolved)
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = _read_cache(cache_path)
    known = cache.get(key)
    if isinstance(known, dict) and all(known.get(k) == v for k, v in stamp.items()):
        sha = known.get("sha256")
        if isinstance(sha, str) and len(sha) == 64:
            return Digest(sha, cached=True)
    sha256 = hash_file(resolved)
    cache = _read_cache(cache_path)  # re-read: another worker may have added entries meanwhile
    cache[key] = {**stamp, "sha256": sha256}
    try:
        with atomic_file(cache_path) as tmp:
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    except OSError as e:  # a read-only cache folder costs a hash per start, nothing else
        log.warning("could not update the digest cache %s: %s", cache_path, e)
    return Digest(sha256, cached=False)


def check_pinned(path: Path, digest: str, pinned: str, what: str) -> None:
    """Raise :class:`DigestMismatch` when ``pinned`` is set and differs from ``digest``."""
    if pinned and digest.lower() != pinned.lower():
        raise DigestMismatch(
            f"{what}: checkpoint {path} has SHA-256 {digest}, but the registry pins {pinned}; "
            "the file is damaged, another version, or the pin is wrong (re-download it, or fix "
            "'sha256' in the model file)"
        )
