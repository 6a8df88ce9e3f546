"""Workers as SLURM jobs, through a real one-node SLURM cluster (tests/support/slurm_cluster.py).

``scripts/start_slurm.sh`` starts the broker on this "login node" and submits
two CPU worker tasks (sam2.1 tiny, random weights) as a job array. The tests
then use them as a user would: ``info``, a point prompt and ``sam2-batch``
through the printed address; a task requeued the way ``--requeue-before``
does it comes back and registers again; ``scancel`` of the task serving a
long request leaves the client with exactly one FINAL, from the other task;
and ``--dry-run`` prints exactly what sbatch was given.

Skipped, saying why, only where a SLURM cluster cannot run (not root, or
Debian's slurm-wlm and munge not installed: scripts/setup_env.sh installs
them as root). Every wait is bounded; the cluster's daemons and jobs are
stopped at the end of the session even when a test fails.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zmq

from protocol.wire import codec
from protocol.wire.client import ClientConfig, SamClient
from protocol.wire.security import CurveClientKeys
from tests.support.broker_peers import RawClient, request_body, zmq_context
from tests.support.processes import MODEL, REPO_ROOT, free_tcp_port, wait_until
from tests.support.slurm_cluster import KILL_WAIT_S, SlurmCluster, unavailable_reason

pytestmark = [pytest.mark.model, pytest.mark.slurm]

LAUNCHER = REPO_ROOT / "scripts" / "start_slurm.sh"
DRAIN_MARGIN_S = 2.0  # start_slurm.sh keeps this much of KillWait to hand back and DISCONNECT
DRAIN_GRACE_S = KILL_WAIT_S - DRAIN_MARGIN_S  # the launcher's default: fitted inside the cluster's KillWait
BROKER_LIVENESS_S = 3.0  # the broker's defaults: heartbeat 1 s x liveness 3
REGISTER_TIMEOUT_S = 150.0  # two tasks importing torch and building the model on 2 busy cores
TIME_LIMIT_MIN = 10


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    # Two worker tasks and room for more; jobs are not bound to cores (task/none).
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), cpus=max(os.cpu_count() or 1, 4))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Launch:
    """One ``start_slurm.sh`` run: what it printed and what it submitted."""

    run_dir: Path
    frontend: str
    array_job: str
    stdout: str
    stderr: str
    dry_run: str
    curve_env: dict[str, str]

    @property
    def curve(self) -> CurveClientKeys:
        keys = CurveClientKeys.from_env(self.curve_env)
        assert keys is not None
        return keys

    def task_log(self, task: int) -> Path:
        return self.run_dir / "logs" / f"workers-{self.array_job}_{task}.log"

    def task_text(self, task: int) -> str:
        path = self.task_log(task)
        return path.read_text(errors="replace") if path.exists() else ""

    def broker_log(self) -> str:
        path = self.run_dir / "broker.log"
        return path.read_text(errors="replace") if path.exists() else ""


def launcher(cluster: SlurmCluster, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env(), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [str(LAUNCHER), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture(scope="module")
def launched(
    slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path
) -> Iterator[Launch]:
    """The broker on this node and a 2-task CPU worker array, as ``start_slurm.sh`` starts them."""
    run_dir = tmp_path_factory.mktemp("slurm-run")
    args = [
        "--cpu", "--tasks", "2", "--cpus-per-worker", "1",
        "--partition", slurm.partition, "--time", str(TIME_LIMIT_MIN), "--job-name", "sam2test",
        "--model", MODEL, "--checkpoint", str(random_checkpoint), "--requeue-before", "60",
        "--run-dir", str(run_dir), "--broker-host", "127.0.0.1",
        "--frontend-port", str(free_tcp_port()), "--backend-port", str(free_tcp_port()),
        "--wait-broker-s", "60", "--curve", str(run_dir / "curve"),
    ]  # fmt: skip
    dry = launcher(slurm, *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert not (run_dir / "jobs").exists() and not slurm.jobs(), "--dry-run submitted something"
    done = launcher(slurm, *args)
    try:
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        fitted = f"drain grace {DRAIN_GRACE_S:g} s: SLURM sends SIGKILL {KILL_WAIT_S:g} s (KillWait)"
        assert fitted in done.stderr, done.stderr
        match = re.search(r"^SAM2_BROKER_ADDRESS=(tcp://\S+)$", done.stdout, re.MULTILINE)
        assert match, done.stdout
        array_job = (run_dir / "jobs").read_text().split()[-1]
        keys = re.search(r"export (SAM2_CURVE_CLIENT_KEY)=(\S+) (SAM2_CURVE_SERVER_KEY)=(\S+)", done.stderr)
        assert keys, done.stderr
        curve_env = {keys.group(1): keys.group(2), keys.group(3): keys.group(4)}
        yield Launch(run_dir, match.group(1), array_job, done.stdout, done.stderr, dry.stdout, curve_env)
    finally:
        stop = launcher(slurm, "--stop", "--run-dir", str(run_dir), timeout_s=60)
        assert stop.returncode == 0, stop.stderr


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    with zmq_context() as context:
        yield context


class CurveClient(RawClient):
    """A bare DEALER MDP client with the launch's CURVE client keys."""

    def __init__(self, context: zmq.Context[Any], launch: Launch) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        launch.curve.apply(self.socket)
        self.socket.connect(launch.frontend)


def registered(context: zmq.Context[Any], launch: Launch) -> int:
    """Workers of MODEL the broker lists (``mmi.services``)."""
    client = CurveClient(context, launch)
    try:
        client.request(b"mmi.services", [])
        _, body = client.final(5.0)
    finally:
        client.close()
    listing: dict[str, dict[str, int]] = json.loads(body[0])["services"]
    return int(listing.get(MODEL, {}).get("workers", 0))


def wait_registered(context: zmq.Context[Any], launch: Launch, count: int, timeout_s: float) -> None:
    ok = wait_until(lambda: registered(context, launch) == count, timeout_s, interval_s=0.5)
    assert ok, (
        f"{registered(context, launch)} workers registered, wanted {count}\n"
        f"--- task 0\n{launch.task_text(0)[-3000:]}\n--- task 1\n{launch.task_text(1)[-3000:]}"
    )


def _image(seed: int, size: int = 64) -> np.ndarray:
    """A grey uint8 image with a bright disk, (size, size)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    disk = (rows - size / 2) ** 2 + (cols - size / 3) ** 2 < (size / 5) ** 2
    return (rng.integers(0, 60, (size, size)) + 150 * disk).astype(np.uint8)


# ---------------------------------------------------------------------------------------------


def test_dry_run_prints_what_sbatch_was_given(slurm: SlurmCluster, launched: Launch) -> None:
    commands = [shlex.split(line) for line in launched.dry_run.splitlines() if line.startswith("sbatch ")]
    assert len(commands) == 1, launched.dry_run  # the broker runs on this node: one sbatch, the array
    sbatch = commands[0]
    script = str(REPO_ROOT / "scripts" / "slurm" / "workers.sbatch")
    at = sbatch.index(script)
    options, command = sbatch[1:at], sbatch[at:]
    job = slurm.show_job(f"{launched.array_job}_0")
    text = slurm.run("scontrol", "show", "job", "-o", f"{launched.array_job}_0").stdout
    shown_command = text.split(" Command=", 1)[1].split(" WorkDir=", 1)[0]
    assert shown_command.split(" ") == command

    tasks = {line.split()[0] for line in slurm.jobs() if line.startswith(f"{launched.array_job}_")}
    expected = {
        "--job-name": lambda v: job["JobName"] == v,
        "--partition": lambda v: job["Partition"] == v,
        "--time": lambda v: job["TimeLimit"] == f"00:{int(v):02d}:00",
        "--array": lambda v: v == "0-1" and tasks == {f"{launched.array_job}_0", f"{launched.array_job}_1"},
        "--ntasks": lambda v: job["NumTasks"] == v,
        "--cpus-per-task": lambda v: job["CPUs/Task"] == v,
        "--requeue": lambda v: job["Requeue"] == "1",
        "--chdir": lambda v: job["WorkDir"] == v,
        "--output": lambda v: (
            job["StdOut"] == v.replace("%A", launched.array_job).replace("%a", job["ArrayTaskId"])
        ),
    }
    not_shown_by_scontrol = {"--parsable", "--open-mode", "--signal"}
    for option in options:
        name, _, value = option.partition("=")
        if name in not_shown_by_scontrol:
            continue
        assert name in expected, f"the dry run gives sbatch {option}, which this test does not compare"
        assert expected[name](value), f"{option} vs scontrol: {job}"
    assert "--signal=B:USR1@60" in options and "--open-mode=append" in options and "--requeue" in options


def test_two_tasks_register_and_serve_info_points_and_batch(
    launched: Launch, zctx: zmq.Context[Any], tmp_path: Path
) -> None:
    wait_registered(zctx, launched, 2, REGISTER_TIMEOUT_S)
    assert "napari:     SAM2_BROKER_ADDRESS=" + launched.frontend in launched.stderr
    assert f"sam2-batch --broker {launched.frontend}" in launched.stderr
    assert "ssh -N -L" in launched.stderr
    config = ClientConfig(timeout_s=120, retries=0)
    with SamClient(launched.frontend, MODEL, config=config, curve=launched.curve) as client:
        info = client.call("info").header["result"]
        assert info["model"] == MODEL and info["device"] == "cpu"
        image = _image(1)
        reply = client.call("segment", {"points": [[30, 20]], "point_labels": [1]}, image=image)
        assert reply.arrays["mask"].shape == image.shape and reply.arrays["mask"].dtype == np.bool_

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i in range(2):  # one for each worker: both are idle, so each gets one
        tifffile.imwrite(folder / f"img{i}.tif", _image(10 + i))
    batch = subprocess.run(
        [
            sys.executable, "-m", "batch", str(folder), "--out", str(out),
            "--broker", launched.frontend, "--model", MODEL, "--points-per-side", "2",
            "--timeout-s", "120", "--no-progress",
        ],
        cwd=REPO_ROOT, env={**os.environ, **launched.curve_env}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert batch.returncode == 0, batch.stderr
    with (out / "summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["ok"] * 2, rows
    request_ids = [row["request_id"] for row in rows]
    for task in (0, 1):
        text = launched.task_text(task)
        served = [r for r in request_ids if f"request_id={r} op=auto status=ok" in text]
        assert served, f"task {task} served none of {request_ids}:\n{text[-2000:]}"


def test_curve_keys_are_private_and_required(launched: Launch, zctx: zmq.Context[Any]) -> None:
    curve_dir = launched.run_dir / "curve"
    assert stat.S_IMODE(curve_dir.stat().st_mode) == 0o700
    secrets = sorted(curve_dir.rglob("*.key_secret"))
    assert len(secrets) == 3 and {p.name for p in secrets} >= {
        "broker.key_secret",
        "slurm-workers.key_secret",
    }
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets), secrets
    worker_key = (
        f"--curve-key {curve_dir}/workers/slurm-workers.key_secret --curve-server-key {curve_dir}/broker.key"
    )
    assert worker_key in launched.dry_run
    assert "curve=on" in launched.broker_log()
    stranger = RawClient(zctx, launched.frontend)  # no keys: the broker never answers
    stranger.request(b"mmi.services", [])
    assert stranger.recv(2.0) is None
    stranger.close()


def test_task_requeued_before_its_time_limit_comes_back_and_registers_again(
    slurm: SlurmCluster, launched: Launch, zctx: zmq.Context[Any]
) -> None:
    wait_registered(zctx, launched, 2, REGISTER_TIMEOUT_S)
    task = f"{launched.array_job}_0"
    ready_before = launched.task_text(0).count("worker ready")
    # What --requeue-before makes SLURM send that long before the time limit.
    slurm.run("scancel", "--batch", "--signal=USR1", task)
    assert wait_until(lambda: "requeueing this task" in launched.task_text(0), 15), launched.task_text(0)
    assert wait_until(lambda: slurm.job_state(task) == "PENDING", 30), slurm.jobs()
    wait_registered(zctx, launched, 1, 15)
    assert "all workers stopped" in launched.task_text(0)
    # SLURM holds a requeued job for about two minutes (its BeginTime); a user's
    # job just waits. The test lifts the hold instead, after 2 s: slurmd refuses
    # to launch a job whose credential is from the second its last run was killed.
    time.sleep(2.0)
    slurm.run("scontrol", "update", f"JobId={task}", "StartTime=now")
    assert wait_until(lambda: slurm.job_state(task) == "RUNNING", 30), slurm.jobs()
    wait_registered(zctx, launched, 2, REGISTER_TIMEOUT_S)
    text = launched.task_text(0)
    assert "(restart 1," in text and text.count("worker ready") == ready_before + 1


def test_scancel_during_a_long_request_hands_it_to_the_other_task(
    slurm: SlurmCluster, launched: Launch, zctx: zmq.Context[Any]
) -> None:
    wait_registered(zctx, launched, 2, REGISTER_TIMEOUT_S)
    client = CurveClient(zctx, launched)
    sleep_s = 8.0
    client.request(MODEL.encode(), request_body("long-slurm", op="sleep", params={"seconds": sleep_s}))
    started = "request_id=long-slurm op=sleep started"
    assert wait_until(lambda: any(started in launched.task_text(t) for t in (0, 1)), 30)
    holder = next(t for t in (0, 1) if started in launched.task_text(t))
    other = 1 - holder
    slurm.run("scancel", f"{launched.array_job}_{holder}")
    cancelled = time.monotonic()

    requeued = (
        "requeue request_id=long-slurm service=sam2.1_hiera_tiny attempts=1 reason=worker sent DISCONNECT"
    )
    assert wait_until(lambda: requeued in launched.broker_log(), DRAIN_GRACE_S + BROKER_LIVENESS_S + 2)
    assert time.monotonic() - cancelled < DRAIN_GRACE_S + BROKER_LIVENESS_S + 2
    partials, body = client.final(sleep_s + DRAIN_GRACE_S + BROKER_LIVENESS_S + 10)
    assert partials == [] and client.recv(1.0) is None, "more than one reply"
    reply = codec.decode(body)
    assert reply.status == codec.STATUS_OK and reply.header["result"]["slept_s"] >= sleep_s
    # answered by the other task within the grace + the broker's liveness + one request
    assert time.monotonic() - cancelled < DRAIN_GRACE_S + BROKER_LIVENESS_S + sleep_s + 2
    assert "request_id=long-slurm op=sleep status=ok" in launched.task_text(other)
    holder_text = launched.task_text(holder)
    handed_back = f"grace period of {DRAIN_GRACE_S:g} s over: handing back 1 unfinished request(s)"
    assert handed_back in holder_text
    assert wait_until(lambda: "all workers stopped" in launched.task_text(holder), 10), holder_text
    holder_text = launched.task_text(holder)  # DISCONNECT went out before the task ended (no SIGKILL)
    assert holder_text.rindex("sending DISCONNECT") < holder_text.rindex("all workers stopped"), holder_text
    wait_registered(zctx, launched, 1, 10)
    client.close()


def test_dry_run_for_gpus_and_a_broker_job(tmp_path: Path) -> None:
    """No cluster needed: the GPU request, array size and CPU count, and the broker job's dependency."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = subprocess.run(
        [
            str(LAUNCHER), "--dry-run", "--gpus", "8", "--gpus-per-task", "2", "--workers-per-gpu", "3",
            "--cpus-per-worker", "2", "--broker", "job", "--account", "lab", "--time", "08:00:00",
            "--run-dir", str(tmp_path), "--insecure",
        ],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    broker, workers = [shlex.split(line) for line in done.stdout.splitlines() if line.startswith("sbatch ")]
    # no cluster to ask: SLURM's default KillWait (30 s), less the margin; SIGTERM that long before the limit
    assert workers[workers.index("--drain-grace-s") + 1] == "28" and "--signal=B:TERM@30" in workers
    assert "--insecure" in broker and "WARNING: --insecure" in done.stderr
    assert str(REPO_ROOT / "scripts" / "slurm" / "broker.sbatch") in broker and "--account=lab" in broker
    for option in ("--array=0-3", "--gres=gpu:2", "--cpus-per-task=12", "--requeue", "--account=lab"):
        assert option in workers, workers
    assert "--dependency=after:BROKER_JOB_ID" in workers and "--cpu" not in workers
    assert workers[workers.index("--workers-per-gpu") + 1] == "3"
    assert not list(tmp_path.iterdir()), "--dry-run wrote files"

    other = subprocess.run(
        [
            str(LAUNCHER), "--dry-run", "--gpus", "2", "--gpu-request", "gpus-per-task",
            "--run-dir", str(tmp_path), "--curve", str(tmp_path / "curve"), "--drain-grace-s", "45",
        ],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "--gpus-per-task=1" in other.stdout and "--gres" not in other.stdout, other.stdout
    assert "WARNING: --drain-grace-s 45 cannot fit" in other.stderr and "--drain-grace-s 28" in other.stdout
    assert "--insecure" not in other.stdout
    exposed = subprocess.run(
        [str(LAUNCHER), "--dry-run", "--gpus", "2", "--run-dir", str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert exposed.returncode == 2 and "without CurveZMQ" in exposed.stderr and "--insecure" in exposed.stderr
    bad = subprocess.run(
        [str(LAUNCHER), "--dry-run", "--gpus", "3", "--gpus-per-task", "2", "--run-dir", str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2 and "multiple of --gpus-per-task" in bad.stderr


def test_help_lists_every_option_the_launcher_accepts() -> None:
    source = LAUNCHER.read_text()
    accepted = set(re.findall(r"^\s+(--[\w-]+)\)", source, re.M))
    assert {"--partition", "--account", "--time", "--gpus", "--curve", "--dry-run", "--broker"} <= accepted
    text = subprocess.run([str(LAUNCHER), "--help"], capture_output=True, text=True, timeout=30).stdout
    assert text.startswith("usage: scripts/start_slurm.sh")
    assert [option for option in sorted(accepted) if option not in text] == []
    bad = subprocess.run([str(LAUNCHER), "--no-such-option"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown option: --no-such-option" in bad.stderr


def test_each_worker_of_a_gpu_task_sees_only_its_gpu(tmp_path: Path) -> None:
    """No cluster needed: the job script as SLURM runs it on a node with GPUs 2 and 3 allocated.

    A stand-in for Python records how each worker was started and waits for SIGTERM.
    """
    fake_python = tmp_path / "python"
    fake_python.write_text(
        "#!/usr/bin/env bash\n"
        'echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-} $*" > "$(dirname "$0")/started.$$"\n'
        "trap 'exit 0' TERM\n"
        "while :; do sleep 0.1; done\n"
    )
    fake_python.chmod(0o755)
    address = tmp_path / "broker.address"
    address.write_text("SAM2_BROKER_ADDRESS=tcp://login1:5555\nSAM2_BROKER_BACKEND=tcp://login1:5556\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_"))},
        "CUDA_VISIBLE_DEVICES": "2,3",
        "SLURM_CPUS_PER_TASK": "16",
        "SLURM_ARRAY_JOB_ID": "77",
        "SLURM_ARRAY_TASK_ID": "1",
    }
    script = REPO_ROOT / "scripts" / "slurm" / "workers.sbatch"
    args = ["bash", str(script), "--python", str(fake_python), "--address-file", str(address)]
    args += ["--workers-per-gpu", "2", "--", "--model", MODEL]
    task = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_until(lambda: len(list(tmp_path.glob("started.*"))) == 4, 20)
        time.sleep(0.2)  # let every stand-in finish writing its line
        task.send_signal(signal.SIGTERM)
        output, _ = task.communicate(timeout=20)
    finally:
        if task.poll() is None:
            task.kill()
            task.wait(timeout=10)
    assert task.returncode == 0, output
    lines = sorted(p.read_text().strip() for p in tmp_path.glob("started.*"))
    expected = "-m workers --connect tcp://login1:5556 --device cuda:0 --threads 4 --model sam2.1_hiera_tiny"
    assert lines == [f"CUDA_VISIBLE_DEVICES={gpu} {expected}" for gpu in ("2", "2", "3", "3")], lines
    assert "task 77_1: got SIGTERM: draining 4 worker(s)" in output and "all workers stopped" in output
