"""Child processes for tools and tests: free loopback endpoints, polling, processes with a log file each.

The one home of these helpers for ``tests/support``, ``bench/`` and ``scripts/``
(the soaks): each starts real subprocesses (a broker, workers, peers), writes
each one's output to its own log file, waits for a line in that log, and stops
every process it started, by its own process group, never by name.

Linux only where it reads ``/proc`` (:func:`alive`, :func:`rss_bytes`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

STOP_TIMEOUT_S = 5.0
"""Seconds a process gets after SIGTERM before SIGKILL."""
POLL_INTERVAL_S = 0.05


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_endpoint() -> str:
    """``tcp://127.0.0.1:PORT`` with a port that was free a moment ago."""
    return f"tcp://127.0.0.1:{free_tcp_port()}"


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = POLL_INTERVAL_S) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as ended; Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (Linux /proc).

    Raises:
        OSError: the process is gone.
        ValueError: its status has no ``VmRSS`` line (a zombie).
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


class LoggedProcess(subprocess.Popen[bytes]):
    """A child process whose stdout and stderr go to ``log_path`` (stdout may be a pipe instead)."""

    log_path: Path


def log_text(proc: LoggedProcess) -> str:
    """Everything ``proc`` has logged so far."""
    return proc.log_path.read_text(errors="replace")


def wait_for_log(proc: LoggedProcess, text: str, timeout_s: float) -> None:
    """Wait until ``text`` appears in ``proc``'s log.

    Raises:
        RuntimeError: the process exited first or the text did not appear in time (with the log's tail).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log_text(proc):
            return
        if proc.poll() is not None:
            break
        time.sleep(POLL_INTERVAL_S)
    if text in log_text(proc):
        return
    tail = log_text(proc)[-3000:]
    raise RuntimeError(f"process {proc.args!r} did not log {text!r} (exit {proc.poll()}):\n{tail}")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL after ``timeout_s``; reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout_s)
    if proc.stdout is not None:
        proc.stdout.close()


class Processes:
    """Starts real subprocesses with a log file each (``<log_dir>/<name>.log``) and stops all of them.

    Each child runs in its own session, so stopping it (SIGTERM, then SIGKILL)
    reaches its children too; only processes started here are ever signalled,
    by their own process group id. Use as a context manager or call
    :meth:`stop_all`; calling the object is :meth:`start`.

    Args:
        log_dir: folder of the log files (created).
        cwd: working directory of the children (default: this process's).
        truncate_logs: start each log afresh; by default a process started again
            under the same name appends to its log.
    """

    def __init__(self, log_dir: Path, *, cwd: Path | None = None, truncate_logs: bool = False) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        self.truncate_logs = truncate_logs
        self.procs: list[LoggedProcess] = []

    def start(
        self,
        args: Sequence[str],
        name: str,
        env: dict[str, str] | None = None,
        *,
        stdout_pipe: bool = False,
        cwd: Path | None = None,
    ) -> LoggedProcess:
        """Start ``args`` (unbuffered Python output) with ``env`` added to this process's environment.

        stderr, and stdout unless ``stdout_pipe``, go to ``<name>.log``.
        """
        log_path = self.log_dir / f"{name}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log_path, "wb" if self.truncate_logs else "ab") as log:
            proc = LoggedProcess(
                list(args),
                cwd=cwd or self.cwd,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                env=full_env,
                start_new_session=True,
            )
        proc.log_path = log_path
        self.procs.append(proc)
        return proc

    __call__ = start

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop one process (see :func:`stop`)."""
        stop(proc, timeout_s)

    def stop_all(self) -> None:
        """Stop every process started here: SIGTERM to all at once, then wait for each (see :func:`stop`)."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self.procs):
            stop(proc)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
