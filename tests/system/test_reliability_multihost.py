"""Separate hosts over TCP, built from Linux network namespaces.

Four namespaces stand in for four machines, wired to a bridge in a fifth
(the "switch"): the broker on one, a SAM2 worker on each of two others, the
client on the fourth. Everything goes over TCP on 10.77.0.0/24 addresses
that exist only inside these namespaces, with CurveZMQ on (the set-up the
README recommends for remote GPU machines). Then one worker's network link
goes down: the broker drops it, requests go to the other worker, and the
worker registers again once the link is back.

Needs root and ``ip`` (iproute2); skipped with the reason otherwise. The
namespaces are deleted at the end, also when the test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import MODEL, PYTHON, REPO_ROOT, ProcessSpawner, log_text, wait_until

pytestmark = pytest.mark.model

SUBNET = "10.77.0"
HOSTS = ("broker", "gpu1", "gpu2", "client")
FRONTEND = f"tcp://{SUBNET}.1:5555"
BACKEND = f"tcp://{SUBNET}.1:5556"
HEARTBEAT_S = 0.25


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@dataclass
class Network:
    """Namespace name per host, and each host's address."""

    names: dict[str, str]
    addresses: dict[str, str]

    def exec_args(self, host: str, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.names[host], *command]

    def link(self, host: str, state: str) -> None:
        result = _ip("-n", self.names[host], "link", "set", "eth0", state)
        assert result.returncode == 0, result.stderr


@pytest.fixture
def network(spawn: ProcessSpawner) -> Iterator[Network]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's `ip` (apt-get install -y iproute2)")
    tag = f"s2r{os.getpid() % 100000}"
    switch = f"{tag}-sw"
    names = {host: f"{tag}-{host}" for host in HOSTS}
    created: list[str] = []

    def cleanup() -> None:
        spawn.stop_all()  # processes first, so nothing holds a namespace
        for name in reversed(created):
            _ip("netns", "del", name)

    try:
        first = _ip("netns", "add", switch)
        if first.returncode != 0:
            pytest.skip(f"`ip netns add` is not allowed here: {first.stderr.strip()}")
        created.append(switch)
        steps = [
            ("-n", switch, "link", "add", "br0", "type", "bridge"),
            ("-n", switch, "link", "set", "br0", "up"),
        ]
        for command in steps:
            result = _ip(*command)
            if result.returncode != 0:
                pytest.skip(f"cannot build a bridge in a namespace: {result.stderr.strip()}")
        addresses = {}
        for index, host in enumerate(HOSTS, start=1):
            name = names[host]
            assert _ip("netns", "add", name).returncode == 0
            created.append(name)
            addresses[host] = f"{SUBNET}.{index}"
            for command in (
                (
                    "-n",
                    switch,
                    "link",
                    "add",
                    f"p{index}",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    name,
                ),
                ("-n", switch, "link", "set", f"p{index}", "master", "br0"),
                ("-n", switch, "link", "set", f"p{index}", "up"),
                ("-n", name, "addr", "add", f"{addresses[host]}/24", "dev", "eth0"),
                ("-n", name, "link", "set", "eth0", "up"),
                ("-n", name, "link", "set", "lo", "up"),
            ):
                result = _ip(*command)
                if result.returncode != 0:
                    pytest.skip(
                        f"cannot wire namespace {name} (ip {' '.join(command)}): {result.stderr.strip()}"
                    )
        net = Network(names, addresses)
        ping = subprocess.run(
            net.exec_args("client", "ping", "-c", "1", "-W", "2", addresses["broker"]),
            capture_output=True,
            timeout=30,
        )
        if shutil.which("ping") and ping.returncode != 0:
            pytest.skip(f"namespaces are wired but cannot reach each other: {ping.stdout!r}")
        yield net
    finally:
        cleanup()


CLIENT_SCRIPT = """
import json, sys, time
import numpy as np
from protocol.wire.client import ClientConfig, SamClient
client = SamClient(sys.argv[1], sys.argv[2], config=ClientConfig(timeout_s=20, retries=1))
deadline = time.monotonic() + 120
while client.services().get(sys.argv[2], {}).get("workers", 0) < int(sys.argv[3]):
    if time.monotonic() > deadline:
        sys.exit("workers did not register")
    time.sleep(0.2)
pids = set()
for _ in range(20):
    pids.add(client.call("info").header["result"]["pid"])
array = np.arange(12, dtype=np.uint16).reshape(3, 4)
echo = client.call("echo", {"n": 1}, {"x": array})
print(json.dumps({"pids": sorted(pids), "echo_ok": bool((echo.arrays["x"] == array).all())}))
"""


def _run_client(network: Network, keys: Path, workers: int) -> dict[str, object]:
    env = {
        **os.environ,
        "SAM2_CURVE_CLIENT_KEY": str(keys / "clients" / "lab.key_secret"),
        "SAM2_CURVE_SERVER_KEY": str(keys / "broker.key"),
    }
    out = subprocess.run(
        network.exec_args("client", PYTHON, "-c", CLIENT_SCRIPT, FRONTEND, MODEL, str(workers)),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_broker_workers_and_client_on_four_hosts_over_tcp_with_curve(
    network: Network, spawn: ProcessSpawner, random_checkpoint: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "curve"
    subprocess.run(
        [PYTHON, "scripts/curve_keys.py", str(keys), "--clients", "lab", "--workers", "gpu1,gpu2"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    broker = spawn(
        network.exec_args(
            "broker", PYTHON, "-m", "broker", "--frontend", FRONTEND, "--backend", BACKEND,
            "--curve-dir", str(keys), "--heartbeat-interval-s", str(HEARTBEAT_S),
        ),
        "broker",
    )  # fmt: skip
    assert wait_until(lambda: "broker ready" in log_text(broker) or broker.poll() is not None, 30)
    assert "curve=on" in log_text(broker) and "WARNING binding" not in log_text(broker)
    workers = {
        host: spawn(
            network.exec_args(
                host,
                PYTHON,
                "-m",
                "workers",
                "--connect",
                BACKEND,
                "--model",
                MODEL,
                "--checkpoint",
                str(random_checkpoint),
                "--device",
                "cpu",
                "--threads",
                "1",
                "--heartbeat-interval-s",
                str(HEARTBEAT_S),
                "--curve-key",
                str(keys / "workers" / f"{host}.key_secret"),
                "--curve-server-key",
                str(keys / "broker.key"),
            ),
            host,
        )  # fmt: skip
        for host in ("gpu1", "gpu2")
    }

    served = _run_client(network, keys, workers=2)
    assert served["echo_ok"] is True
    assert served["pids"] == sorted(proc.pid for proc in workers.values())
    log = log_text(broker)
    for host in ("gpu1", "gpu2"):
        assert f"curve: admitted worker '{host}' from {network.addresses[host]} on the backend" in log
    assert f"curve: admitted client 'lab' from {network.addresses['client']} on the frontend" in log

    # gpu1's network drops: the broker forgets it within its liveness window...
    network.link("gpu1", "down")
    went_down = time.monotonic()
    assert wait_until(lambda: "reason=heartbeat expired" in log_text(broker), 10)
    assert time.monotonic() - went_down < HEARTBEAT_S * 3 + 2.0
    served = _run_client(network, keys, workers=1)
    assert served["pids"] == [workers["gpu2"].pid]
    # ...and it registers again once the link is back.
    network.link("gpu1", "up")
    back = time.monotonic()
    assert wait_until(lambda: log_text(broker).count("curve: admitted worker 'gpu1'") >= 2, 15), log_text(
        broker
    )
    assert time.monotonic() - back < 10
    served = _run_client(network, keys, workers=2)
    assert len(served["pids"]) == 2  # type: ignore[arg-type]
    assert all(proc.poll() is None for proc in (broker, *workers.values()))
