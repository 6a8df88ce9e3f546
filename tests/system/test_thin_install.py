"""The thin client install: the wheel without extras, in its own virtual environment.

A biologist whose lab runs the workers on a GPU server installs
``pip install napari-sam2-broker`` and never gets torch. This test builds the
wheel from the working tree, installs it WITHOUT extras into a separate
virtual environment (``venv-thin/env`` in the user's cache folder, see
``THIN_DIR``: reused while the base dependencies and the Python stay the same,
by every clone on the machine, so a fresh CI clone does not resolve and install
napari's 300 packages again; the project itself is reinstalled from the fresh
wheel every run, under a lock held until the module's tests are done), and from there:

* checks that torch and sam2 cannot be imported, and that the project's
  packages come from the wheel (not from this checkout);
* checks that npe2 discovers the plugin from the wheel's ``napari.yaml``;
* segments a point prompt and runs ``sam2-batch`` against a broker and a
  random-weight worker started from the full environment;
* checks that the embedded backend and ``python -m workers`` start nothing
  and say in one line that they need the ``worker`` extra.

The first run on a machine downloads napari and its dependencies (about 600 MB
installed, 2 minutes with a warm pip cache); later runs, from any clone, take
seconds to set up.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from protocol.runtime.checkpoints import DEFAULT_MODEL

pytestmark = [pytest.mark.install, pytest.mark.model, pytest.mark.timeout(1500)]

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_HOME = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
THIN_DIR = CACHE_HOME / "napari-sam2-broker" / "venv-thin"
"""The thin venv's home, outside any clone: the base dependencies are the wheel's, not the checkout's."""
PACKAGES = ("broker", "workers", "plugin", "protocol", "batch")
WORKER_HINT = 'pip install "napari-sam2-broker[worker]"'
SIZE = 64


def _run(args: list[str], timeout_s: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, **kwargs)  # type: ignore[call-overload]


def _thin_env() -> dict[str, str]:
    """The environment of a process in the thin venv: nothing that could reach the full one."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONUNBUFFERED="1")
    env.pop("SAM2_EMBEDDED", None)
    return env


def _build_wheel(out: Path) -> Path:
    """Build the project's wheel from a copy of the working tree (no ``build/`` left in the checkout)."""
    src = out / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(
            REPO_ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    wheels = out / "wheels"
    done = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(src),
        ],
        timeout_s=300,
        env=_thin_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = wheels.glob("napari_sam2_broker-*.whl")
    return wheel


def _base_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines that no extra guards (what a plain install pulls)."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().splitlines()
    return sorted(
        line.split(":", 1)[1].strip()
        for line in lines
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    )


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One pytest session at a time (of any clone) builds, updates or uses the cached thin venv."""
    THIN_DIR.mkdir(parents=True, exist_ok=True)
    with open(THIN_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _thin_venv(wheel: Path) -> Path:
    """``THIN_DIR/env`` with the wheel installed without extras; its python.

    The venv is rebuilt from nothing when the base requirements or the
    Python (version, installation) change; otherwise only the project is reinstalled from
    ``wheel`` (``--force-reinstall --no-deps``: no stale module survives).
    """
    env_dir = THIN_DIR / "env"
    python = env_dir / "bin" / "python"
    key_text = json.dumps([sys.version, sys.base_prefix, platform.machine(), _base_requirements(wheel)])
    key = hashlib.sha256(key_text.encode()).hexdigest()
    stamp = THIN_DIR / "stamp"
    thin_env = _thin_env()
    if python.exists() and stamp.exists() and stamp.read_text() == key:
        done = _run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
            timeout_s=300,
            env=thin_env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return python
    stamp.unlink(missing_ok=True)
    shutil.rmtree(env_dir, ignore_errors=True)
    # The base interpreter of the full environment, without its site-packages.
    done = _run([sys.executable, "-m", "venv", str(env_dir)], timeout_s=300, env=thin_env)
    assert done.returncode == 0, done.stdout + done.stderr
    # --no-compile: no .pyc for all of napari's dependencies up front (a third of the install's time).
    install = [str(python), "-m", "pip", "install", "-q", "--no-compile", str(wheel)]
    done = _run(install, timeout_s=1200, env=thin_env)
    assert done.returncode == 0, "installing the wheel without extras failed:\n" + done.stdout + done.stderr
    stamp.write_text(key)
    return python


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def thin_python(wheel: Path) -> Iterator[Path]:
    """The thin venv's python with this checkout's wheel; the lock is held until the module's tests
    are done, so no other clone's session reinstalls its own wheel under them."""
    with _locked():
        yield _thin_venv(wheel)


def _thin(
    python: Path, args: list[str], cwd: Path, timeout_s: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` with the thin venv's ``python`` (its console scripts sit next to it) in ``cwd``."""
    return _run([str(python), *args], timeout_s=timeout_s, cwd=cwd, env=_thin_env())


def _free_local_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def test_the_wheel_declares_no_torch_and_carries_the_napari_manifest(wheel: Path) -> None:
    requirements = _base_requirements(wheel)
    names = {re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0].lower() for r in requirements}
    assert {"napari", "pyzmq", "blosc2", "numpy"} <= names
    assert not names & {"torch", "torchvision", "sam2", "pyqt6", "pyqt5", "pyside6", "pyside2"}, names
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        (entry_points,) = [n for n in files if n.endswith(".dist-info/entry_points.txt")]
        entries = archive.read(entry_points).decode()
    assert "plugin/napari.yaml" in files and "protocol/runtime/checkpoints.py" in files
    assert "napari-sam2-broker = plugin:napari.yaml" in entries
    for script in ("sam2-batch = batch.__main__:main", "sam2-broker = broker.__main__:main"):
        assert script in entries


SCRIPT = r"""
import importlib.util, json, sys
import numpy as np
import npe2
import plugin, protocol
from plugin.connection import backend
from protocol.wire.client import SamClient

frontend, model = sys.argv[1], sys.argv[2]
out = {name: importlib.util.find_spec(name) is not None for name in ("torch", "sam2")}
try:
    import torch  # noqa: F401
    out["import_torch"] = "imported"
except ModuleNotFoundError as e:
    out["import_torch"] = str(e)
out["plugin_file"] = plugin.__file__
out["protocol_file"] = protocol.__file__

pm = npe2.PluginManager.instance()
pm.discover()
manifest = pm.get_manifest("napari-sam2-broker")
out["manifest"] = [manifest.name, manifest.display_name, str(manifest.package_metadata.version)]
commands = manifest.contributions.commands
out["widget_command"] = [c.python_name for c in commands if c.id.endswith("make_widget")]

image = np.zeros((64, 64), np.uint8)
image[16:40, 20:44] = 200
with SamClient(frontend, model) as client:
    reply = client.call("segment", {"points": [[28, 32]], "point_labels": [1]}, image=image)
mask = reply.arrays["mask"]
out["mask"] = [str(mask.dtype), list(mask.shape)]
out["scores"] = reply.header["result"]["scores"]

status, local = backend.establish(frontend, model, lambda text: None)
out["remote"] = [status.connected, local is None, status.describe()]

messages = []
free = sys.argv[3]
status, local = backend.establish(free, model, messages.append)
out["embedded"] = [status.connected, local is None, status.describe(), messages]
print("RESULT " + json.dumps(out))
"""


def test_thin_install_segments_and_runs_sam2_batch_against_a_full_backend(
    thin_python: Path, make_backend, tmp_path: Path
) -> None:
    backend = make_backend(workers=1)
    free = _free_local_address()
    done = _thin(thin_python, ["-c", SCRIPT, backend.frontend, DEFAULT_MODEL, free], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))

    # No torch, no sam2, and the project comes from the wheel in the thin venv.
    assert out["torch"] is False and out["sam2"] is False
    assert "No module named 'torch'" in out["import_torch"]
    thin_root = THIN_DIR.resolve()
    for key in ("plugin_file", "protocol_file"):
        assert Path(out[key]).resolve().is_relative_to(thin_root), out[key]
    # npe2 finds the plugin through the wheel's entry point and napari.yaml.
    assert out["manifest"] == ["napari-sam2-broker", "SAM2 Segmentation", "0.1.0"]
    assert out["widget_command"] == ["plugin._qt.widget:SamWidget"]

    # A point prompt through the full environment's broker and worker.
    assert out["mask"] == ["bool", [SIZE, SIZE]]
    assert len(out["scores"]) == 3
    connected, no_local, text = out["remote"]
    assert connected and no_local and f"1 worker(s) of {DEFAULT_MODEL} on cpu" in text

    # No broker at a local address: the embedded backend starts nothing and says why in one line.
    connected, no_local, text, messages = out["embedded"]
    assert not connected and no_local
    assert (
        WORKER_HINT in text and "torch and sam2" in text and "\n" not in text.removeprefix("Not connected: ")
    )
    assert not any("Starting a local backend" in m for m in messages)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        host, port = free.removeprefix("tcp://").rsplit(":", 1)
        assert sock.connect_ex((host, int(port))) != 0  # nothing listens there

    # sam2-batch, the thin venv's console script, on a small image.
    image = np.zeros((SIZE, SIZE), np.uint16)
    image[10:30, 12:40] = 3000
    source = tmp_path / "in" / "plate.tif"
    source.parent.mkdir()
    tifffile.imwrite(source, image)
    batch = thin_python.parent / "sam2-batch"
    args = [
        str(source),
        "--out",
        str(tmp_path / "out"),
        "--broker",
        backend.frontend,
        "--model",
        DEFAULT_MODEL,
    ]
    args += [
        "--points-per-side",
        "4",
        "--pred-iou-thresh",
        "0",
        "--stability-score-thresh",
        "0",
        "--no-progress",
    ]
    done = _run([str(batch), *args], timeout_s=300, cwd=tmp_path, env=_thin_env())
    assert done.returncode == 0, done.stdout + done.stderr
    labels = tifffile.imread(tmp_path / "out" / "plate_labels.tif")
    assert labels.dtype == np.uint16 and labels.shape == (SIZE, SIZE) and labels.max() > 0
    summary = (tmp_path / "out" / "summary.csv").read_text()
    assert "plate.tif" in summary and ",ok," in summary


def test_thin_install_worker_says_it_needs_the_worker_extra(thin_python: Path, tmp_path: Path) -> None:
    bin_dir = thin_python.parent
    for command in (
        [str(thin_python), "-m", "workers", "--model", DEFAULT_MODEL],
        [str(bin_dir / "sam2-worker")],
    ):
        done = _run(command, timeout_s=60, cwd=tmp_path, env=_thin_env())
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and WORKER_HINT in lines[0] and "Traceback" not in done.stderr, done.stderr
    broker_help = _run([str(bin_dir / "sam2-broker"), "--help"], timeout_s=60, cwd=tmp_path, env=_thin_env())
    assert broker_help.returncode == 0 and "--frontend" in broker_help.stdout


def test_thin_install_runs_the_standin_model(thin_python: Path, tmp_path: Path) -> None:
    """The stand-in model needs no worker extra: its whole code path imports without torch."""
    done = _thin(thin_python, ["-m", "workers", "--model", "standin-blobs", "--help"], tmp_path, timeout_s=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--delay-s" in done.stdout and "Traceback" not in done.stderr, done.stdout + done.stderr
