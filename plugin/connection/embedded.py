"""An embedded backend: a broker and one worker started as subprocesses of this napari.

No Qt, no napari; blocking functions meant for a worker thread.
:class:`LocalBackend` runs a broker and one worker (``python -m broker``,
``python -m workers``) for users who have not started a server. The plugin
never imports ``broker`` or ``workers``; it only starts them. It restarts a
process that dies (:mod:`plugin.connection.restart_policy`), and both end with
this process (``--parent-pid``), however it ends. :func:`find_checkpoint` /
:func:`download_checkpoint` locate or fetch the weights
(:mod:`protocol.runtime.checkpoints`). It needs the ``worker`` extra (torch,
sam2); without it (:func:`local_backend_missing`) nothing is started.

Environment: ``SAM2_CHECKPOINT_DIR``, ``SAM2_RANDOM_WEIGHTS=1`` (tests: random
weights), ``SAM2_DEVICE`` (the worker's device, default ``auto``).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from plugin.connection.probe import free_local_endpoint, probe
from plugin.connection.restart_policy import RestartPolicy
from protocol.runtime import checkpoints
from protocol.runtime.extras import worker_extra_missing
from protocol.wire.errors import ClientError, ProtocolError


def env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in {"1", "true", "yes", "on"}


def local_backend_missing() -> str | None:
    """Why this environment cannot run an embedded backend (one line), or None when it can.

    Looks for torch and sam2 without importing them (a thin client install has neither).
    """
    message = worker_extra_missing("a local backend")
    return None if message is None else f"{message}, or enter the address of a running broker"


def find_checkpoint(model: str) -> Path:
    """Where the worker looks for ``model``'s weights (it may not exist yet)."""
    return checkpoints.checkpoint_path(model)


def how_to_get_checkpoint(model: str, path: Path) -> str:
    return (
        f"no {model} checkpoint at {path}. Download it with `{checkpoints.download_command(model)}` "
        f"(or copy the file there by hand; see checkpoints/README.md), then press Connect."
    )


def download_checkpoint(
    model: str,
    timeout_s: float = 1800.0,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[bool, str]:
    """Download ``model``'s checkpoint (:func:`protocol.runtime.checkpoints.download`); (success, why not).

    ``progress(done_bytes, total_bytes)`` is called after each MiB; ``cancel``
    or ``timeout_s`` stop the download and leave no partial file.
    """
    deadline = time.monotonic() + timeout_s

    def should_stop() -> bool:
        return time.monotonic() > deadline or (cancel is not None and cancel.is_set())

    try:
        checkpoints.download(model, progress=progress, should_stop=should_stop)
    except checkpoints.DownloadError as e:
        return False, str(e)
    return True, ""


class LocalBackend:
    """A broker and one worker started as subprocesses of this napari, restarted when they die.

    Both get ``--parent-pid`` (this process), so they stop by themselves when
    napari ends, however it ends. After :meth:`supervise`, a daemon thread
    restarts a process that died (back-off and limit of
    :class:`plugin.connection.restart_policy.RestartPolicy`) and tells ``listeners``:
    ``listener(text, up)``, ``up`` False while a process is down or being
    restarted (``text`` says what happens), True once the worker is
    registered again. Listeners are called on that thread.

    Args:
        frontend: the client endpoint to bind (local TCP).
        model: service name to serve.
        log_dir: where ``broker.log`` and ``worker.log`` go (a temp dir by default).
    """

    NAMES = ("broker", "worker")
    POLL_S = 0.25

    def __init__(self, frontend: str, model: str, log_dir: Path | None = None) -> None:
        self.frontend = frontend
        self.model = model
        self.backend = free_local_endpoint()
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="napari-sam2-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.listeners: list[Callable[[str, bool], None]] = []
        self.restarts = {name: RestartPolicy() for name in self.NAMES}
        self.given_up: set[str] = set()
        self.problem: str | None = None
        """Why the backend cannot serve now (a process down, restarting, or given up), else None."""
        self._args: dict[str, list[str]] = {}
        self._started_at: dict[str, float] = {}
        self._restart_at: dict[str, float] = {}
        self._ready_after: int | None = None  # worker log size at the last restart; None: not waiting
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        atexit.register(self.stop)

    def _spawn(self, name: str, args: list[str]) -> None:
        self._args[name] = args
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, *args, "--parent-pid", str(os.getpid())],
                cwd=self.log_dir,  # not the user's folder: nothing there may shadow our packages
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        self._started_at[name] = time.monotonic()

    def start(self, checkpoint: Path | None, device: str = "auto") -> None:
        """Start the broker and the worker (``checkpoint`` None: random weights, tests only)."""
        self._spawn("broker", ["-m", "broker", "--frontend", self.frontend, "--backend", self.backend])
        weights = ["--random-weights"] if checkpoint is None else ["--checkpoint", str(checkpoint)]
        args = ["-m", "workers", "--connect", self.backend, "--model", self.model, "--device", device]
        self._spawn("worker", [*args, *weights])

    def log_tail(self, name: str, lines: int = 4) -> str:
        path = self.log_dir / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def failure(self) -> str | None:
        """Why the backend died (a process exited), or None while it runs."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                return f"the embedded {name} exited ({code}); log {self.log_dir / (name + '.log')}:\n" + (
                    self.log_tail(name)
                )
        return None

    def wait_ready(
        self,
        timeout_s: float,
        tick: Callable[[float], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> str | None:
        """Wait until the broker lists a worker of our model; return an error text or None."""
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < timeout_s:
            if cancel is not None and cancel.is_set():
                return "cancelled"
            failure = self.failure()
            if failure:
                return failure
            try:
                if probe(self.frontend, timeout_s=1.0).get(self.model, {}).get("workers", 0) > 0:
                    return None
            except (ClientError, ProtocolError):
                pass
            if tick is not None:
                tick(elapsed)
            time.sleep(0.5)
        return f"the embedded backend was not ready after {timeout_s:.0f} s (logs in {self.log_dir})"

    @property
    def running(self) -> bool:
        """Whether the backend runs or is being brought back (False once a restart limit was reached)."""
        if not self.procs or self.given_up:
            return False
        if self._monitor is not None and self._monitor.is_alive():
            return True
        return all(p.poll() is None for p in self.procs.values())

    @property
    def recovering(self) -> bool:
        """Whether a process is down, waiting to restart, or restarted and not serving yet."""
        return self.problem is not None and not self.given_up

    # -- supervision --------------------------------------------------------------------

    def supervise(self) -> None:
        """Start restarting processes that die (call once the backend is ready)."""
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name="sam2-local-backend", daemon=True)
            self._monitor.start()

    def _emit(self, text: str, up: bool) -> None:
        self.problem = None if up else text
        for listener in list(self.listeners):
            listener(text, up)

    def _watch(self) -> None:
        while not self._stopping.wait(self.POLL_S):
            with self._lock:
                if self._stopping.is_set():
                    return
                events = [self._check(name, time.monotonic()) for name in self.NAMES]
                if self._ready_after is not None and self._serving_again():
                    self._ready_after = None
                    events.append((f"The embedded {self.model} worker is back.", True))
            for event in events:
                if event is not None:
                    self._emit(*event)

    def _check(self, name: str, now: float) -> tuple[str, bool] | None:
        """Notice a death of ``name`` or restart it when its back-off is over; the event to report."""
        proc = self.procs.get(name)
        if proc is None or name in self.given_up:
            return None
        code = proc.poll()
        if code is None:
            return None
        policy = self.restarts[name]
        log_path = self.log_dir / f"{name}.log"
        if name not in self._restart_at:
            delay = policy.on_exit(now, now - self._started_at.get(name, now))
            if delay is None:
                self.given_up.add(name)
                return (
                    f"the embedded {name} died {policy.max_restarts + 1} times within "
                    f"{policy.window_s / 60:.0f} minutes (last exit code {code}); not restarting it. "
                    f"Log {log_path}:\n{self.log_tail(name)}\nPress Connect to start a new local backend.",
                    False,
                )
            self._restart_at[name] = now + delay
            return (
                f"the embedded {name} exited (code {code}); restarting it in {delay:.0f} s "
                f"({policy.describe_attempt()}, log {log_path})…",
                False,
            )
        if now < self._restart_at[name]:
            return None
        del self._restart_at[name]
        attempt = policy.describe_attempt()
        policy.on_restart(now)
        self._ready_after = self._log_size("worker")
        self._spawn(name, self._args[name])
        return f"restarting the embedded {name} ({attempt}): loading the model…", False

    def _log_size(self, name: str) -> int:
        try:
            return (self.log_dir / f"{name}.log").stat().st_size
        except OSError:
            return 0

    def _serving_again(self) -> bool:
        """After a restart: all processes up, the worker says ready, and the broker lists exactly it."""
        if self._restart_at or any(p.poll() is not None for p in self.procs.values()):
            return False
        try:
            with open(self.log_dir / "worker.log", "rb") as log:
                log.seek(self._ready_after or 0)
                if b"worker ready" not in log.read():
                    return False
            services = probe(self.frontend, timeout_s=1.0)
        except (OSError, ClientError, ProtocolError):
            return False
        return services.get(self.model, {}).get("workers", 0) == 1

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop supervising; SIGTERM the worker then the broker, SIGKILL what is left after ``timeout_s``."""
        self._stopping.set()
        with self._lock:
            for name in ("worker", "broker"):
                proc = self.procs.get(name)
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=timeout_s)
            self.procs.clear()
        atexit.unregister(self.stop)


def start_local(
    address: str,
    model: str,
    report: Callable[[str], None],
    ready_timeout_s: float = 300.0,
    cancel: threading.Event | None = None,
) -> tuple[LocalBackend | None, str | None]:
    """Start an embedded backend serving ``model`` at ``address``; return (backend, error)."""
    missing = local_backend_missing()
    if missing is not None:
        return None, f"no broker answers at {address}, and {missing}"
    checkpoint: Path | None = None
    if env_flag("SAM2_RANDOM_WEIGHTS"):
        report("Starting a local backend with RANDOM weights (SAM2_RANDOM_WEIGHTS=1: test mode)…")
    else:
        report(f"No broker at {address}; looking for the {model} checkpoint…")
        checkpoint = find_checkpoint(model)
        if not checkpoint.is_file():
            report(f"Downloading the {model} checkpoint (one time, ~150-900 MB)…")
            ok, output = download_checkpoint(
                model,
                cancel=cancel,
                progress=lambda done, total: report(
                    f"Downloading the {model} checkpoint… {done >> 20} / {total >> 20 or '?'} MiB"
                ),
            )
            if not ok or not checkpoint.is_file():
                detail = f"\nThe download failed: {output}" if output else ""
                return None, how_to_get_checkpoint(model, checkpoint) + detail
    local = LocalBackend(address, model)
    local.start(checkpoint, device=os.environ.get("SAM2_DEVICE", "").strip() or "auto")
    report(f"Starting a local backend (broker + 1 {model} worker); logs in {local.log_dir}…")
    error = local.wait_ready(
        ready_timeout_s,
        tick=lambda s: report(f"Starting a local backend: loading the model… {s:.0f} s"),
        cancel=cancel,
    )
    if error is not None:
        local.stop()
        return None, error
    local.supervise()
    return local, None
