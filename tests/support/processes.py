"""Test settings for real subprocesses: the repository root, the interpreter, the default model,
and a spawner whose children run in the repository root.

The helpers themselves (free endpoints, polling, logged processes) live in
``protocol/runtime/processes.py`` and are re-exported here for the tests;
pytest fixtures are in ``tests/conftest.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from protocol.runtime.checkpoints import DEFAULT_MODEL
from protocol.runtime.processes import (
    LoggedProcess,
    Processes,
    alive,
    free_endpoint,
    free_tcp_port,
    log_text,
    rss_bytes,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
MODEL = DEFAULT_MODEL

__all__ = [
    "MODEL",
    "PYTHON",
    "REPO_ROOT",
    "LoggedProcess",
    "ProcessSpawner",
    "alive",
    "free_endpoint",
    "free_tcp_port",
    "log_text",
    "rss_bytes",
    "wait_until",
]


class ProcessSpawner(Processes):
    """:class:`protocol.runtime.processes.Processes` with children in the repository root (so
    ``python -m broker`` runs this checkout's code); a process started again appends to its log."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir, cwd=REPO_ROOT)
