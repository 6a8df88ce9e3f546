"""End this process when the process that started it is gone (``--parent-pid``).

Used by ``python -m broker`` and ``python -m workers`` when napari's plugin
(or ``scripts/start_all.sh``) starts them: if the parent dies, however it
dies (closed, aborted, SIGKILLed), its broker and worker must not live on
holding a port and gigabytes of model.

Two lines of defence, both ending in the process's own SIGTERM handler (a
clean stop: a worker sends DISCONNECT, a broker closes its sockets):

* On Linux, ``prctl(PR_SET_PDEATHSIG, SIGUSR2)`` makes the kernel signal us
  at once when the parent dies. The kernel sends it when the *thread* that
  spawned us ends, too (the plugin starts processes from short-lived
  threads), so the handler only acts when the parent is really gone.
* A daemon thread checks every ``interval_s`` (all platforms).

The parent counts as gone when this process was re-parented (``getppid()``
changed from ``parent_pid``), or, when ``parent_pid`` was not our direct
parent, when no process has that pid any more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
DEATH_SIGNAL = signal.SIGUSR2
GRACE_S = 10.0
"""Seconds the SIGTERM handler gets to stop cleanly before the process exits hard."""


def pid_exists(pid: int) -> bool:
    """Whether a process with ``pid`` exists (a zombie counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ParentWatch:
    """Stop this process (SIGTERM to itself) when ``parent_pid`` is gone.

    Args:
        parent_pid: the pid to outlive no longer than ``interval_s``.
        interval_s: seconds between checks by the daemon thread.
        grace_s: after the SIGTERM, seconds before ``os._exit(1)`` if the process is still up.
    """

    def __init__(self, parent_pid: int, interval_s: float = 1.0, grace_s: float = GRACE_S) -> None:
        self.parent_pid = parent_pid
        self.interval_s = interval_s
        self.grace_s = grace_s
        self._direct = os.getppid() == parent_pid
        self._fired = threading.Event()

    def parent_gone(self) -> bool:
        if self._direct:
            return os.getppid() != self.parent_pid
        return not pid_exists(self.parent_pid)

    def start(self) -> None:
        """Arm the kernel's parent-death signal (Linux) and start the checking thread."""
        if sys.platform.startswith("linux") and self._direct:
            self._arm_death_signal()
        threading.Thread(target=self._run, name="parent-watch", daemon=True).start()
        if self.parent_gone():  # died before we were watching
            self._stop_self()

    def _arm_death_signal(self) -> None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            signal.signal(DEATH_SIGNAL, self._on_death_signal)
            if libc.prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0) != 0:
                log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError, ValueError) as e:  # no libc/prctl, or not the main thread
            log.debug("no parent-death signal (%s); the watch thread remains", e)

    def _on_death_signal(self, _signum: int, _frame: FrameType | None) -> None:
        if self.parent_gone():
            self._stop_self()

    def _run(self) -> None:
        while not self._fired.is_set():
            if self.parent_gone():
                self._stop_self()
                return
            time.sleep(self.interval_s)

    def _stop_self(self) -> None:
        if self._fired.is_set():
            return
        self._fired.set()
        log.warning("parent process %d is gone: stopping", self.parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=self._exit_late, name="parent-watch-exit", daemon=True).start()

    def _exit_late(self) -> None:
        time.sleep(self.grace_s)
        log.error("still running %.0f s after the parent died: exiting now", self.grace_s)
        logging.shutdown()
        os._exit(1)


def watch_parent(parent_pid: int | None, interval_s: float = 1.0) -> ParentWatch | None:
    """Start a :class:`ParentWatch` for ``parent_pid`` (None or 0: do nothing).

    Call it from the main thread, before long work such as loading a model,
    so a parent that dies meanwhile is noticed.
    """
    if not parent_pid:
        return None
    watch = ParentWatch(parent_pid, interval_s)
    watch.start()
    return watch
