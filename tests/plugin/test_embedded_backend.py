"""The plugin's embedded backend (:class:`plugin.connection.backend.LocalBackend`) with real processes.

* It never outlives the process that started it: a napari (here a plain
  Python process) SIGKILLed takes its broker and worker with it.
* The restart policy it follows (back-off and limit) is checked as logic.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plugin.connection.backend import LocalBackend, probe
from plugin.connection.restart_policy import RestartPolicy
from tests.support.processes import MODEL, REPO_ROOT, alive, free_endpoint, wait_until


def test_restart_policy_backs_off_and_gives_up_after_five_restarts_in_ten_minutes() -> None:
    policy = RestartPolicy()
    now = 1000.0
    delays = []
    for _ in range(5):
        delay = policy.on_exit(now, up_s=2.0)
        assert delay is not None
        delays.append(delay)
        now += delay
        policy.on_restart(now)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert policy.on_exit(now + 1, up_s=1.0) is None  # a sixth death within 10 minutes: give up
    # ten minutes later the old restarts no longer count; a long run restarts the back-off
    assert policy.on_exit(now + 700, up_s=120.0) == 1.0
    capped = RestartPolicy(max_restarts=100)
    assert [capped.on_exit(0.0, 0.0) for _ in range(7)][-2:] == [30.0, 30.0]


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from plugin.connection.backend import LocalBackend
    local = LocalBackend(sys.argv[1], sys.argv[2], log_dir=Path(sys.argv[3]))
    local.start(None, device="cpu")
    print(json.dumps({name: proc.pid for name, proc in local.procs.items()}), flush=True)
    time.sleep(600)
    """
)


@pytest.mark.model
def test_embedded_broker_and_worker_end_when_their_napari_process_is_killed(tmp_path) -> None:
    """A napari killed with SIGKILL cannot stop its backend: the backend notices and stops itself."""
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD, free_endpoint(), MODEL, str(tmp_path)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    pids: dict[str, int] = {}
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        assert set(pids) == {"broker", "worker"}
        # both are up and watching (the worker logs its device once its watch is armed)
        assert wait_until(lambda: "broker ready" in (tmp_path / "broker.log").read_text(), 60, 0.2)
        assert wait_until(lambda: "model=" in (tmp_path / "worker.log").read_text(), 120, 0.2)
        assert all(alive(pid) for pid in pids.values())
        assert f"--parent-pid {parent.pid}" in Path(f"/proc/{pids['worker']}/cmdline").read_text().replace(
            "\0", " "
        )

        parent.kill()
        parent.wait(10)
        killed = time.monotonic()
        assert wait_until(lambda: not any(alive(pid) for pid in pids.values()), 15, 0.1), (
            tmp_path / "broker.log"
        ).read_text() + (tmp_path / "worker.log").read_text()
        assert time.monotonic() - killed < 15
        assert "parent process" in (tmp_path / "broker.log").read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in pids.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_embedded_broker_is_restarted_then_given_up_past_its_limit_and_listeners_hear_it(tmp_path) -> None:
    """Only a broker (no model needed): killed once it comes back, killed again it is left down."""
    local = LocalBackend(free_endpoint(), MODEL, log_dir=tmp_path)
    local.restarts["broker"] = RestartPolicy(max_restarts=1, first_delay_s=0.2)
    heard: list[tuple[str, bool]] = []
    local.listeners.append(lambda text, up: heard.append((text, up)))
    local._spawn("broker", ["-m", "broker", "--frontend", local.frontend, "--backend", local.backend])
    try:
        first = local.procs["broker"]
        assert wait_until(lambda: "broker ready" in (tmp_path / "broker.log").read_text(), 60, 0.1)
        local.supervise()
        first.kill()
        assert wait_until(lambda: local.procs["broker"] is not first, 10, 0.05)
        assert local.recovering and local.running
        assert "restarting it in 0 s (attempt 1/1" in heard[0][0] and heard[0][1] is False
        assert "restarting the embedded broker (attempt 1/1)" in heard[1][0]
        assert wait_until(lambda: (tmp_path / "broker.log").read_text().count("broker ready") == 2, 60, 0.1)
        assert probe(local.frontend) == {}  # the new broker answers on the same address

        local.procs["broker"].kill()
        assert wait_until(lambda: not local.running, 10, 0.05)
        assert "broker" in local.given_up and not local.recovering
        assert "died 2 times within 10 minutes" in heard[-1][0] and "Press Connect" in heard[-1][0]
        assert local.problem == heard[-1][0]
    finally:
        local.stop()
