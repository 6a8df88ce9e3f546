"""Where this project keeps files on a machine: the checkpoint folder and the per-user cache.

Standard library only. :func:`checkpoint_dir`, first match wins:

1. ``$SAM2_CHECKPOINT_DIR`` when set;
2. the repository's ``checkpoints/`` when running from a source checkout
   (the folder that holds ``download.py``);
3. a per-user cache: ``$XDG_CACHE_HOME/napari-sam2-broker/checkpoints``
   (``~/.cache/napari-sam2-broker/checkpoints`` by default; on Windows under
   ``%LOCALAPPDATA%``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CHECKPOINT_DIR_ENV = "SAM2_CHECKPOINT_DIR"
APP_DIR = "napari-sam2-broker"
CACHE_SUBDIR = Path(APP_DIR) / "checkpoints"


def user_base_cache_dir() -> Path:
    """The per-user cache root: ``$XDG_CACHE_HOME`` (``~/.cache``), or ``%LOCALAPPDATA%`` on Windows."""
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def source_checkout() -> Path | None:
    """The repository root when this package runs from a source checkout, else None (a wheel)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "checkpoints" / "download.py").is_file() else None


def user_cache_dir() -> Path:
    """The per-user cache folder for checkpoints (see the module docstring)."""
    return user_base_cache_dir() / CACHE_SUBDIR


def checkpoint_dir() -> Path:
    """Where checkpoints are looked for and downloaded to (it may not exist yet)."""
    configured = os.environ.get(CHECKPOINT_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    root = source_checkout()
    return root / "checkpoints" if root is not None else user_cache_dir()
