"""Command-line helpers shared by ``python -m broker``, ``python -m workers`` and ``sam2-batch``:
argparse value types and the logging set-up (each role keeps its own line format).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0 (NaN refused)."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0 (NaN refused)."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def setup_logging(
    level: str,
    log_file: Path | str | None,
    fmt: str,
    datefmt: str | None = None,
    filters: Sequence[logging.Filter] = (),
) -> None:
    """Log to stderr and, when given, to ``log_file`` (its folder created), replacing any earlier set-up.

    Args:
        level: a logging level name, e.g. ``"INFO"``.
        log_file: also append the lines to this file.
        fmt, datefmt: the role's line format (``logging.Formatter`` syntax).
        filters: added to every handler.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path))
    for handler in handlers:
        for log_filter in filters:
            handler.addFilter(log_filter)
    logging.basicConfig(level=level, format=fmt, datefmt=datefmt, handlers=handlers, force=True)
