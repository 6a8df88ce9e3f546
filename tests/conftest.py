"""Shared fixtures: real subprocesses that are always cleaned up, a random-weight
SAM2 checkpoint built once and shared by the sessions, real backends and ZeroMQ contexts.

The helpers they use live in ``tests/support/``; test modules import those
from there, never from this file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bench.common import OUT_DIR, build_random_checkpoint
from tests.support.backend import Backend, running_backend
from tests.support.broker_peers import BrokerHandle, ThreadedWorker, start_broker, zmq_context
from tests.support.processes import MODEL, REPO_ROOT, ProcessSpawner


@pytest.fixture(autouse=True)
def plugin_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin's saved settings (plugin/user_settings.py) go to a file of the test's own,
    so no test reads or changes the user's (or another test's) AUTO-SEGMENT settings."""
    path = tmp_path / "sam2-plugin-settings.ini"
    monkeypatch.setenv("SAM2_SETTINGS", str(path))
    return path


@pytest.fixture(autouse=True, scope="session")
def no_disk_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Workers started by tests keep embeddings in memory only (``SAM2_DISK_CACHE_GIB=0``), so no
    test finds another test's (or an earlier run's) embeddings on disk; disk-cache tests opt in
    (``monkeypatch.setenv`` of both variables, or ``--disk-cache-dir`` and ``--disk-cache-gib``).

    Session-scoped, so that the workers of module- and session-scoped fixtures (started before any
    test's own ``monkeypatch``) get it too; a folder of the session's own, in case one turns it on."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAM2_DISK_CACHE_GIB", "0")
        patch.setenv("SAM2_DISK_CACHE_DIR", str(tmp_path_factory.mktemp("embeddings")))
        yield


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[ProcessSpawner]:
    spawner = ProcessSpawner(tmp_path)
    yield spawner
    spawner.stop_all()


@pytest.fixture(scope="session")
def random_checkpoint() -> Path:
    """A random-weight sam2.1 tiny checkpoint in the official layout (seeded: the same weights every
    time), built once under ``bench/out/ckpt/`` (git-ignored) for each version of torch, sam2 and the
    code that builds it (``workers/models.py``), so the backend and the GUI test sessions share one
    build (seconds of torch import, model build and saving). Nothing here imports torch: the GUI
    session must not (see scripts/test.sh).

    It is loaded through exactly the code path of a downloaded checkpoint. The file is written
    atomically (``workers.models.write_random_checkpoint``), so concurrent sessions never read half.
    """
    versions = "-".join(f"{name}-{importlib.metadata.version(name)}" for name in ("torch", "sam2"))
    builder = hashlib.sha256((REPO_ROOT / "workers" / "models.py").read_bytes()).hexdigest()[:12]
    out = OUT_DIR / "ckpt" / f"tests-{versions}-{builder}" / f"{MODEL}_random.pt"
    return out if out.is_file() else build_random_checkpoint(MODEL, out, timeout_s=300)


@pytest.fixture
def make_backend(spawn: ProcessSpawner, random_checkpoint: Path) -> Callable[..., Backend]:
    """Factory: ``make_backend(workers=1)`` starts a broker and that many workers
    (:meth:`Backend.add_workers`: a lone worker gets two torch threads, several share the cores)."""

    def factory(
        workers: int = 1, heartbeat_interval_s: float = 0.25, service_wait_s: float | None = None
    ) -> Backend:
        backend = Backend(spawn, random_checkpoint, heartbeat_interval_s, service_wait_s)
        backend.add_workers(workers)
        return backend

    return factory


@pytest.fixture(scope="module")
def module_backend(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path) -> Iterator[Backend]:
    """A broker and one real SAM2 worker (two torch threads) shared by a module's tests, for tests
    that neither kill nor reconfigure it (a SAM2 worker takes seconds to start: torch import, model
    build). A test that reads the worker's counters reads them before and after its own requests."""
    with running_backend(tmp_path_factory.mktemp("module-backend"), random_checkpoint) as backend:
        yield backend


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context for the test's own sockets, destroyed without lingering."""
    with zmq_context() as context:
        yield context


@pytest.fixture
def broker(spawn: ProcessSpawner) -> BrokerHandle:
    """``python -m broker`` with the test heartbeat settings (tests/support/broker_peers.py)."""
    return start_broker(spawn)


@pytest.fixture
def workers() -> Iterator[list[ThreadedWorker]]:
    """Append in-thread MDP workers here; they are stopped after the test."""
    started: list[ThreadedWorker] = []
    yield started
    for worker in started:
        worker.stop()
