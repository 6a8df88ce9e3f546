"""CurveZMQ: authorised clients and workers get in, everyone else gets nothing and is logged.

Real broker and worker processes, keys made by ``scripts/curve_keys.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from protocol.wire import mdp
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.errors import RequestTimeout, SecurityError
from protocol.wire.security import CurveClientKeys, CurveKeyPair, is_loopback_endpoint
from tests.support.broker_peers import BrokerHandle, start_broker
from tests.support.processes import (
    MODEL,
    PYTHON,
    REPO_ROOT,
    ProcessSpawner,
    free_tcp_port,
    log_text,
    wait_until,
)

SERVICE = MODEL.encode()
REFUSED_WAIT_S = 1.5
# A keyless peer's refusal reason: a mechanism mismatch, or, when the peer's side saw it first and
# hung up (under load), a failed handshake without detail (EPIPE): libzmq reports either.
KEYLESS_REASONS = ("does not use CURVE", "handshake failed: no detail")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``curve/`` with client alice, worker gpu1 authorised; ``intruders/`` with unlisted keys."""
    root = tmp_path_factory.mktemp("keys")
    script = [PYTHON, "scripts/curve_keys.py"]
    run = {"cwd": REPO_ROOT, "check": True, "capture_output": True, "text": True, "timeout": 60}
    out = subprocess.run([*script, str(root / "curve"), "--clients", "alice", "--workers", "gpu1"], **run)
    assert "authorized_clients: alice" in out.stdout and "authorized_workers: gpu1" in out.stdout
    subprocess.run([*script, str(root / "intruders"), "--clients", "mallory", "--workers", "rogue"], **run)
    return root


def client_keys(
    keys: Path, name: str = "alice", folder: str = "curve", server: str = "curve"
) -> CurveClientKeys:
    return CurveClientKeys.load(
        keys / folder / "clients" / f"{name}.key_secret", keys / server / "broker.key"
    )


def worker_keys(keys: Path, name: str = "gpu1", folder: str = "curve") -> CurveClientKeys:
    return CurveClientKeys.load(
        keys / folder / "workers" / f"{name}.key_secret", keys / "curve" / "broker.key"
    )


def curve_broker(spawn: ProcessSpawner, keys: Path, name: str = "broker") -> BrokerHandle:
    return start_broker(spawn, extra_args=["--curve-dir", str(keys / "curve")], name=name)


def sam_client(broker: BrokerHandle, curve: CurveClientKeys | bool, timeout_s: float = 10.0) -> SamClient:
    return SamClient(
        broker.frontend,
        MODEL,
        config=ClientConfig(timeout_s=timeout_s, retries=0),
        curve=False if curve is False else curve,  # type: ignore[arg-type]
    )


def services(broker: BrokerHandle, keys: Path) -> dict[str, dict[str, int]]:
    with sam_client(broker, client_keys(keys)) as client:
        return client.services(timeout_s=5.0)


class CurveWorker:
    """A bare MDP worker socket (READY + heartbeats) with optional CURVE keys."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, curve: CurveClientKeys | None) -> None:
        self.socket: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(self.socket)
        self.socket.connect(endpoint)
        self.socket.send_multipart(mdp.worker_message(mdp.W_READY, service=SERVICE), flags=zmq.NOBLOCK)

    def heard_anything(self, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            try:  # a refused connection leaves no pipe to queue into
                self.socket.send_multipart(mdp.worker_message(mdp.W_HEARTBEAT), flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
            if self.socket.poll(100):
                return True
        return False


def test_authorised_client_and_real_worker_work_over_curve(
    spawn: ProcessSpawner, keys: Path, random_checkpoint: Path
) -> None:
    broker = curve_broker(spawn, keys)
    assert "curve=on" in broker.log()
    worker = spawn(
        [
            PYTHON, "-m", "workers", "--connect", broker.backend, "--model", MODEL,
            "--checkpoint", str(random_checkpoint), "--device", "cpu", "--threads", "1",
            "--curve-key", str(keys / "curve" / "workers" / "gpu1.key_secret"),
            "--curve-server-key", str(keys / "curve" / "broker.key"),
        ],
        "worker",
    )  # fmt: skip
    assert wait_until(lambda: services(broker, keys).get(MODEL, {}).get("workers") == 1, 120), log_text(
        worker
    )
    with sam_client(broker, client_keys(keys), timeout_s=30) as client:
        info = client.call("info").header["result"]
        echo = client.call("echo", {"hello": "curve"})
    assert info["pid"] == worker.pid
    assert echo.header["result"]["params"] == {"hello": "curve"}
    log = broker.log()
    assert "curve: admitted worker 'gpu1' from 127.0.0.1 on the backend" in log
    assert "curve: admitted client 'alice' from 127.0.0.1 on the frontend" in log
    assert "refused" not in log


def test_client_from_the_environment_gets_in(spawn: ProcessSpawner, keys: Path) -> None:
    broker = curve_broker(spawn, keys)
    code = (
        "from protocol.wire.client import SamClient\n"
        f"print(SamClient({broker.frontend!r}).services(timeout_s=5.0))\n"
    )
    env_keys = {
        "SAM2_CURVE_CLIENT_KEY": str(keys / "curve" / "clients" / "alice.key_secret"),
        "SAM2_CURVE_SERVER_KEY": str(keys / "curve" / "broker.key"),
    }
    out = subprocess.run(
        [PYTHON, "-c", code], cwd=REPO_ROOT, env=env_keys, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{}"
    assert "admitted client 'alice'" in broker.log()


def test_client_without_a_key_gets_nothing_and_the_refusal_is_logged_once(
    spawn: ProcessSpawner, keys: Path
) -> None:
    broker = curve_broker(spawn, keys)
    started = time.monotonic()
    with sam_client(broker, False, timeout_s=REFUSED_WAIT_S) as client, pytest.raises(RequestTimeout):
        client.call("info")
    # libzmq retries the handshake every 100 ms; the broker reports it once, not per attempt.
    time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
    lines = [line for line in broker.log().splitlines() if "refused" in line]
    assert lines, broker.log()
    assert "refused a connection on the frontend" in lines[0]
    assert any(reason in lines[0] for reason in KEYLESS_REASONS), lines[0]
    assert len(lines) <= 2, lines
    assert "admitted" not in broker.log()


def test_client_with_an_unlisted_key_gets_nothing_and_its_key_is_logged(
    spawn: ProcessSpawner, keys: Path
) -> None:
    broker = curve_broker(spawn, keys)
    mallory = client_keys(keys, "mallory", folder="intruders")
    with sam_client(broker, mallory, timeout_s=REFUSED_WAIT_S) as client, pytest.raises(RequestTimeout):
        client.services(timeout_s=REFUSED_WAIT_S)
    expected = (
        f"curve: refused a client from 127.0.0.1 on the frontend: CURVE key "
        f"{mallory.keypair.public.decode()} is not in {keys / 'curve' / 'authorized_clients'}"
    )
    assert wait_until(lambda: expected in broker.log(), 5), broker.log()


def test_client_with_the_wrong_broker_key_gets_nothing(spawn: ProcessSpawner, keys: Path) -> None:
    broker = curve_broker(spawn, keys)
    wrong_server = client_keys(keys, "alice", server="intruders")
    with sam_client(broker, wrong_server, timeout_s=REFUSED_WAIT_S) as client, pytest.raises(RequestTimeout):
        client.services(timeout_s=REFUSED_WAIT_S)
    assert wait_until(lambda: "wrong broker public key" in broker.log(), 5), broker.log()


def test_workers_without_an_allowed_key_are_refused_and_logged(
    spawn: ProcessSpawner, keys: Path, ctx: zmq.Context[Any]
) -> None:
    broker = curve_broker(spawn, keys)
    rogue = CurveWorker(ctx, broker.backend, worker_keys(keys, "rogue", folder="intruders"))
    # A client key is not a worker key: alice may ask, not serve.
    alice_as_worker = CurveWorker(ctx, broker.backend, client_keys(keys))
    no_key = CurveWorker(ctx, broker.backend, None)
    for worker in (rogue, alice_as_worker, no_key):
        assert not worker.heard_anything(REFUSED_WAIT_S)
    assert services(broker, keys) == {}
    with sam_client(broker, client_keys(keys), timeout_s=10) as client:
        assert client.services() == {}
    alice_public = client_keys(keys).keypair.public.decode()
    expected = [
        f"refused a worker from 127.0.0.1 on the backend: CURVE key {rogue_key(keys)}",
        f"refused a worker from 127.0.0.1 on the backend: CURVE key {alice_public}",
        "refused a connection on the backend",
    ]

    def logged() -> bool:
        log = broker.log()
        return all(line in log for line in expected) and any(reason in log for reason in KEYLESS_REASONS)

    # the broker logs a refused handshake from its socket monitor, a moment after the refusal
    assert wait_until(logged, 10), broker.log()
    # An authorised worker on the same broker does get in.
    gpu1 = CurveWorker(ctx, broker.backend, worker_keys(keys))
    assert gpu1.heard_anything(5.0)
    assert wait_until(lambda: services(broker, keys).get(MODEL, {}).get("workers") == 1, 5)


def rogue_key(keys: Path) -> str:
    return CurveKeyPair.load(keys / "intruders" / "workers" / "rogue.key_secret").public.decode()


def test_revoking_a_key_refuses_the_next_connection(
    spawn: ProcessSpawner, keys: Path, tmp_path: Path
) -> None:
    curve_dir = tmp_path / "curve"
    shutil.copytree(keys / "curve", curve_dir)
    broker = start_broker(spawn, extra_args=["--curve-dir", str(curve_dir)])
    alice = CurveClientKeys.load(curve_dir / "clients" / "alice.key_secret", curve_dir / "broker.key")
    with sam_client(broker, alice) as client:
        assert client.services() == {}
    subprocess.run(
        [PYTHON, "scripts/curve_keys.py", str(curve_dir), "--revoke-client", "alice"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    with sam_client(broker, alice, timeout_s=REFUSED_WAIT_S) as client, pytest.raises(RequestTimeout):
        client.services(timeout_s=REFUSED_WAIT_S)
    assert "refused a client" in broker.log()


def test_non_loopback_bind_warns_only_without_curve(spawn: ProcessSpawner, keys: Path) -> None:
    plain = start_broker(spawn, extra_args=["--frontend", f"tcp://0.0.0.0:{free_tcp_port()}"], name="plain")
    assert "WARNING binding tcp://0.0.0.0:" in plain.log() and "no authentication" in plain.log()
    secured = start_broker(
        spawn,
        extra_args=["--frontend", f"tcp://0.0.0.0:{free_tcp_port()}", "--curve-dir", str(keys / "curve")],
        name="secured",
    )
    assert "WARNING binding" not in secured.log()
    assert "with CurveZMQ: encrypted, authorised keys only" in secured.log()


def test_unusable_keys_stop_broker_and_worker_with_exit_2(keys: Path, tmp_path: Path) -> None:
    broker = subprocess.run(
        [PYTHON, "-m", "broker", "--curve-dir", str(tmp_path / "nowhere")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert broker.returncode == 2 and "cannot use the CURVE keys" in broker.stderr
    public_only = keys / "curve" / "workers" / "gpu1.key"
    worker = subprocess.run(
        [
            PYTHON, "-m", "workers", "--random-weights", "--device", "cpu",
            "--curve-key", str(public_only), "--curve-server-key", str(keys / "curve" / "broker.key"),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode == 2 and "holds no secret key" in worker.stderr
    half = subprocess.run(
        [PYTHON, "-m", "workers", "--curve-key", str(public_only)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert half.returncode == 2 and "go together" in half.stderr


def test_key_files_are_validated_and_secrets_hidden(keys: Path, tmp_path: Path) -> None:
    pair = CurveKeyPair.load(keys / "curve" / "broker.key_secret")
    assert pair.secret.decode() not in repr(pair)
    assert (keys / "curve" / "broker.key_secret").stat().st_mode & 0o077 == 0
    bad = tmp_path / "bad.key"
    bad.write_text('curve\n    public-key = "tooshort"\n')
    with pytest.raises(SecurityError, match="40 Z85"):
        CurveClientKeys.load(keys / "curve" / "clients" / "alice.key_secret", bad)
    with pytest.raises(SecurityError, match="set both"):
        CurveClientKeys.from_env({"SAM2_CURVE_CLIENT_KEY": "x"})
    assert CurveClientKeys.from_env({}) is None
    assert is_loopback_endpoint("tcp://127.0.0.1:1") and not is_loopback_endpoint("tcp://*:1")
