"""The broker's command line: start-up line, log format, shutdown, bad settings."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import zmq

from broker.config import BrokerConfig, is_loopback_endpoint
from tests.support.broker_peers import DISCONNECT, RawWorker, start_broker, wait_for_workers
from tests.support.processes import ProcessSpawner, free_tcp_port, log_text

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} broker (DEBUG|INFO|WARNING|ERROR) ")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_disconnects_every_worker_and_exits_0(
    spawn: ProcessSpawner, ctx: zmq.Context[Any], signum: signal.Signals
) -> None:
    broker = start_broker(spawn)
    workers = [RawWorker(ctx, broker.backend, service) for service in (b"a", b"a", b"b")]
    for worker in workers:
        worker.ready()
    wait_for_workers(ctx, broker.frontend, "a", 2)
    wait_for_workers(ctx, broker.frontend, "b", 1)

    broker.proc.send_signal(signum)
    assert broker.proc.wait(timeout=10) == 0
    for worker in workers:
        assert worker.next_command(5) == DISCONNECT
    assert "broker stopped" in broker.log()


def test_log_lines_have_timestamp_and_role_and_go_to_the_log_file(
    spawn: ProcessSpawner, tmp_path: Path
) -> None:
    log_file = tmp_path / "broker-file.log"
    broker = start_broker(spawn, extra_args=["--log-file", str(log_file)])
    lines = broker.log().splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), lines
    ready = f"broker INFO broker ready frontend={broker.frontend} backend={broker.backend}"
    assert lines[-1].endswith(ready)
    assert "broker ready" in log_file.read_text()


def test_non_loopback_bind_warns(spawn: ProcessSpawner) -> None:
    broker = start_broker(spawn, extra_args=["--frontend", f"tcp://0.0.0.0:{free_tcp_port()}"])
    assert "WARNING binding tcp://0.0.0.0:" in broker.log()
    assert "no authentication" in broker.log()
    loopback = start_broker(spawn, name="loopback")
    assert "WARNING" not in loopback.log()


def test_bad_settings_and_busy_ports_exit_non_zero(spawn: ProcessSpawner) -> None:
    bad = spawn([sys.executable, "-m", "broker", "--heartbeat-liveness", "0"], "bad")
    assert bad.wait(timeout=30) == 2
    assert "heartbeat_liveness must be >= 1" in log_text(bad)

    first = start_broker(spawn, name="first")
    clash = spawn(
        [sys.executable, "-m", "broker", "--frontend", first.frontend, "--backend", first.backend], "clash"
    )
    assert clash.wait(timeout=30) == 1
    assert "cannot bind" in log_text(clash)
    assert first.proc.poll() is None


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.0.0.2:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/broker.sock", True),
        ("inproc://broker", True),
        ("tcp://*:5555", False),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://192.168.1.10:5555", False),
        ("tcp://eth0:5555", False),
    ],
)
def test_is_loopback_endpoint(endpoint: str, loopback: bool) -> None:
    assert is_loopback_endpoint(endpoint) is loopback


def test_config_rejects_nonsense() -> None:
    assert BrokerConfig().worker_expiry_s == 3.0
    with pytest.raises(ValueError, match="different endpoints"):
        BrokerConfig(frontend="tcp://127.0.0.1:1", backend="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="heartbeat_interval_s"):
        BrokerConfig(heartbeat_interval_s=0)
    with pytest.raises(ValueError, match="max_queue"):
        BrokerConfig(max_queue=0)
