"""Which optional parts of the distribution are installed, found without importing them.

The base install (``pip install napari-sam2-broker``: plugin, protocol,
broker, ``sam2-batch``) has no torch; running a SAM2 worker, or the plugin's
embedded local backend, needs the ``worker`` extra (torch, torchvision,
sam2). :func:`worker_extra_missing` says so in one line, without importing
torch (which takes seconds and gigabytes where it is installed).
"""

from __future__ import annotations

import importlib.util
import sys

WORKER_EXTRA_INSTALL = 'pip install "napari-sam2-broker[worker]"'
WORKER_PACKAGES = ("torch", "sam2")


def missing_worker_packages() -> list[str]:
    """The packages of the ``worker`` extra that cannot be imported here (empty when all can)."""
    return [name for name in WORKER_PACKAGES if importlib.util.find_spec(name) is None]


def worker_extra_missing(what: str) -> str | None:
    """One line saying that ``what`` (e.g. ``"a local backend"``) needs the worker extra, or None."""
    missing = missing_worker_packages()
    if not missing:
        return None
    return f"{what} needs {' and '.join(missing)}, which are not installed: {WORKER_EXTRA_INSTALL}"


def exit_without_worker_extra(what: str, code: int = 2) -> None:
    """Print :func:`worker_extra_missing`'s line on stderr and exit with ``code`` when it applies."""
    message = worker_extra_missing(what)
    if message is not None:
        print(message, file=sys.stderr)
        raise SystemExit(code)


SAM3_EXTRA_INSTALL = 'pip install "napari-sam2-broker[worker,sam3]" (scripts/setup_env.sh does it)'
SAM3_PACKAGES = (
    "sam3",
    "open_clip",
    "triton",
)  # open_clip: SAM 3's tokenizer vocabulary; triton: `import sam3`


def exit_without_sam3_extra(code: int = 2) -> None:
    """Exit with ``code`` and one line on stderr when the ``sam3`` extra a SAM 3 worker needs is missing."""
    missing = [name for name in SAM3_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"a SAM 3 worker needs {', '.join(missing)}, which are not installed: {SAM3_EXTRA_INSTALL}",
            file=sys.stderr,
        )
        raise SystemExit(code)
