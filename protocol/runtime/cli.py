"""Command-line helpers shared by ``python -m broker``, ``python -m workers`` and ``sam2-batch``:
argparse value types, the options every role declares alike (logging, parent watch, a worker's
heartbeats) and the logging set-up (each role keeps its own line format).
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


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
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


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_log_options(parser: argparse.ArgumentParser, log_file: bool = True) -> None:
    """``--log-level`` (one of :data:`LOG_LEVELS`, default INFO) and, unless ``log_file`` is false,
    ``--log-file PATH`` (a :class:`~pathlib.Path`, default None), for :func:`setup_logging`."""
    parser.add_argument("--log-level", default="INFO", choices=list(LOG_LEVELS))
    if log_file:
        parser.add_argument("--log-file", type=Path, default=None, help="also write the log to this file")


def add_parent_pid_option(parser: argparse.ArgumentParser) -> None:
    """``--parent-pid PID`` (default None), for :func:`protocol.runtime.parent.watch_parent`."""
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="stop (as on SIGTERM) within about a second once this process is gone "
        "(the napari plugin and start_all.sh pass their own pid)",
    )


def add_worker_heartbeat_options(parser: argparse.ArgumentParser) -> None:
    """A worker's ``--heartbeat-interval-s`` (> 0, default 1.0), ``--heartbeat-liveness`` (>= 1, 3)."""
    parser.add_argument(
        "--heartbeat-interval-s", type=positive_float, default=1.0, help="seconds between heartbeats"
    )
    parser.add_argument(
        "--heartbeat-liveness",
        type=positive_int,
        default=3,
        help="missed heartbeats before the broker is dead",
    )


def add_drain_grace_option(parser: argparse.ArgumentParser, default_s: float) -> None:
    """A worker's ``--drain-grace-s`` (>= 0, default ``default_s``): on SIGTERM, how long the request
    held may take to finish before it goes back to the broker (``workers/worker.py``, "Draining")."""
    parser.add_argument(
        "--drain-grace-s",
        type=non_negative_float,
        default=default_s,
        help="on SIGTERM, seconds the request being computed may take to finish before it is handed "
        "back to the broker; one not expected to finish within them goes back at once (keep it below "
        f"SLURM's KillWait, often 30 s; default {default_s:g})",
    )


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
