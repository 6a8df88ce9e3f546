"""A real single-node SLURM cluster for tests: Debian's ``slurm-wlm`` and ``munge``, run as root.

Everything lives in one temporary directory (``slurm.conf``, the munge key
and socket, spool and state directories, daemon logs) and on free ports, so
nothing under ``/etc`` is touched and a real cluster on the same machine is
not disturbed. Clients find it through ``SLURM_CONF`` (:meth:`SlurmCluster.env`).

The configuration is the smallest that runs jobs here: one node (this host's
``hostname -s`` at 127.0.0.1) in one partition, ``proctrack/linuxproc`` and
``task/none`` (no cgroups needed), ``select/cons_tres``, and ``KillWait=5``
so that SIGKILL follows SIGTERM within seconds. It starts in about a second.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from protocol.runtime.processes import free_tcp_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
KILL_WAIT_S = 5
START_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 20.0


def unavailable_reason() -> str | None:
    """Why a test cluster cannot run here (one line), or None when it can."""
    if os.geteuid() != 0:
        return "a test SLURM cluster runs its daemons as root; this user is not root"
    missing = [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None]
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} missing): scripts/setup_env.sh installs "
            "Debian's slurm-wlm and munge when run as root"
        )
    return None


class SlurmCluster:
    """munged, slurmctld and slurmd for one node, started and stopped by the test session.

    Args:
        base: an empty directory for the configuration, keys, state and logs.
        cpus: CPUs the node offers (more than the machine has is allowed:
            ``SlurmdParameters=config_overrides``; jobs are not bound to cores).
    """

    def __init__(self, base: Path, cpus: int) -> None:
        self.base = base
        self.cpus = cpus
        self.node = socket.gethostname().split(".")[0]
        self.partition = "debug"
        self.conf = base / "slurm.conf"
        self.munge_socket = base / "munge-run" / "munge.socket"
        self.logs = base / "log"
        self._pid_files = {
            "munged": base / "munge-run" / "munged.pid",
            "slurmctld": base / "slurmctld.pid",
            "slurmd": base / "slurmd.pid",
        }

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Write the configuration, start the three daemons and wait until the node is idle.

        Raises:
            RuntimeError: a daemon did not start or the node never became idle (logs included).
        """
        for sub in ("munge-etc", "munge-run", "spool", "state", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "munge-etc").chmod(0o700)
        (self.base / "munge-run").chmod(0o755)
        key = self.base / "munge-etc" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(self._config())
        self._run_daemon(
            [
                "munged", "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--log-file={self.logs / 'munged.log'}",
                f"--pid-file={self._pid_files['munged']}",
                f"--seed-file={self.base / 'munge-etc' / 'munged.seed'}",
            ]
        )  # fmt: skip
        self._run_daemon(["slurmctld", "-f", str(self.conf)])
        self._run_daemon(["slurmd", "-f", str(self.conf)])
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.node_state() == "idle":
                return
            time.sleep(0.25)
        raise RuntimeError(
            f"the test SLURM node never became idle (state {self.node_state()!r})\n{self.logs_text()}"
        )

    def stop(self) -> None:
        """Cancel every job, wait for its processes to end, then stop the daemons (never raises)."""
        try:
            if self.jobs():
                subprocess.run(
                    ["scancel", "--full", "--user=root"],
                    env=self.env(),
                    timeout=COMMAND_TIMEOUT_S,
                    check=False,
                )
                deadline = time.monotonic() + KILL_WAIT_S + 15
                while self.jobs() and time.monotonic() < deadline:
                    time.sleep(0.5)
        except (OSError, subprocess.SubprocessError):
            pass
        for name in ("slurmd", "slurmctld", "munged"):
            self._stop_daemon(name)

    # -- queries ------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment for SLURM commands (and jobs: sbatch passes it on) aimed at this cluster."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        return {**clean, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run a SLURM command against this cluster; raises on a non-zero exit."""
        return subprocess.run(
            list(args), env=self.env(), capture_output=True, text=True, timeout=timeout_s, check=True
        )

    def _query(self, *args: str) -> subprocess.CompletedProcess[str] | None:
        """Run a read-only SLURM command (any exit code), or None when it cannot run or times out."""
        try:
            return subprocess.run(
                list(args),
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None

    def node_state(self) -> str:
        done = self._query("sinfo", "-h", "-N", "-o", "%t")
        return done.stdout.strip() if done is not None else ""

    def jobs(self) -> list[str]:
        """``JOBID STATE`` of every job (array tasks one by one), or [] when none or unreachable."""
        done = self._query("squeue", "-h", "-r", "-o", "%i %T")
        if done is None or done.returncode != 0:
            return []
        return [line for line in done.stdout.splitlines() if line.strip()]

    def job_state(self, job: str) -> str:
        """A job's (or array task's, ``123_4``) state, e.g. RUNNING, PENDING; "" when gone."""
        for line in self.jobs():
            job_id, _, state = line.partition(" ")
            if job_id == job:
                return state
        return ""

    def show_job(self, job: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict (``Key=Value`` pairs; values without spaces)."""
        text = self.run("scontrol", "show", "job", "-o", job).stdout
        fields: dict[str, str] = {}
        for token in text.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        return fields

    def logs_text(self) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # -- internals ----------------------------------------------------------------------

    def _config(self) -> str:
        base = self.base
        return f"""\
# A one-node test cluster (tests/support/slurm_cluster.py); not for production.
ClusterName=sam2test
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
SlurmctldPort={free_tcp_port()}
SlurmdPort={free_tcp_port()}
StateSaveLocation={base / "state"}
SlurmdSpoolDir={base / "spool"}
SlurmctldPidFile={self._pid_files["slurmctld"]}
SlurmdPidFile={self._pid_files["slurmd"]}
SlurmctldLogFile={self.logs / "slurmctld.log"}
SlurmdLogFile={self.logs / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
KillWait={KILL_WAIT_S}
MinJobAge=300
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
InactiveLimit=0
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=2000 State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""

    def _run_daemon(self, args: list[str]) -> None:
        done = subprocess.run(
            args, env=self.env(), capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed to start (exit {done.returncode}): {done.stderr}\n{self.logs_text()}"
            )

    def _stop_daemon(self, name: str) -> None:
        pid_file = self._pid_files[name]
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
