"""Shared helpers of the benchmarks: statistics, tables, results, processes, machine facts.

Every benchmark module has ``run(options) -> BenchResult`` and a ``main()``
that prints its tables and can write the result as JSON
(``--json PATH``), which ``run_all.py`` collects into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from protocol.runtime import processes
from protocol.runtime.checkpoints import DEFAULT_MODEL
from protocol.runtime.processes import free_endpoint, wait_for_log

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "bench" / "out"
PYTHON = sys.executable
MODEL = DEFAULT_MODEL


# ----------------------------------------------------------------------------
# statistics


@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements (same unit as the samples).

    Attributes:
        n: number of samples.
        median: the median (the number quoted everywhere).
        p10: 10th percentile.
        p90: 90th percentile.
    """

    n: int
    median: float
    p10: float
    p90: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        """Summarise ``samples`` (at least one)."""
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)
        return cls(len(ordered), statistics.median(ordered), _quantile(ordered, 0.1), _quantile(ordered, 0.9))

    def scaled(self, factor: float) -> Stats:
        """The same summary in another unit (e.g. seconds -> milliseconds)."""
        return Stats(self.n, self.median * factor, self.p10 * factor, self.p90 * factor)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds taken by ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table: fixed digits, thousands separated, ``-`` for None."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def fmt_range(stats: Stats, digits: int = 2) -> str:
    """``median [p10-p90]`` for a table cell."""
    return f"{stats.median:,.{digits}f} [{stats.p10:,.{digits}f}-{stats.p90:,.{digits}f}]"


# ----------------------------------------------------------------------------
# results


@dataclass
class Table:
    """One table of a benchmark: column names, rows of cells (already formatted), a note."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def add(self, *cells: object) -> None:
        """Append one row; cells are turned into strings."""
        if len(cells) != len(self.columns):
            raise ValueError(f"row has {len(cells)} cells, table {self.title!r} has {len(self.columns)}")
        self.rows.append([str(c) for c in cells])

    def to_text(self) -> str:
        """Aligned plain text for the terminal."""
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        lines = [f"== {self.title}"]
        lines.append("  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True)))
        lines.append("  ".join("-" * w for w in widths))
        for row in self.rows:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """A GitHub-flavoured markdown table with its title and note."""
        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


@dataclass
class Target:
    """One claim of the issue and what this run measured for it.

    Attributes:
        claim: what is compared, e.g. "repeat prompt: full path / predict".
        measured: the measured number, formatted.
        target: the target, formatted (e.g. "<= 1.10").
        met: True / False, or None when not measured on this machine.
    """

    claim: str
    measured: str
    target: str
    met: bool | None


@dataclass
class BenchResult:
    """Everything one benchmark reports."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def print(self) -> None:
        """Print the tables, notes and targets to stdout."""
        print(f"\n#### {self.title}")
        for table in self.tables:
            print(table.to_text())
            print()
        for note in self.notes:
            print(f"note: {note}")
        for target in self.targets:
            print(
                f"target: {target.claim}: {target.measured} (target {target.target}) -> {verdict(target.met)}"
            )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchResult:
        return cls(
            name=data["name"],
            title=data["title"],
            tables=[Table(**t) for t in data.get("tables", [])],
            targets=[Target(**t) for t in data.get("targets", [])],
            notes=list(data.get("notes", [])),
            elapsed_s=float(data.get("elapsed_s", 0.0)),
        )


def verdict(met: bool | None) -> str:
    """``met`` / ``NOT met`` / ``not measured``."""
    return {True: "met", False: "NOT met", None: "not measured"}[met]


def base_parser(description: str) -> argparse.ArgumentParser:
    """Options every benchmark module takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="a fast smoke run (fewer repeats, smaller sizes)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    return parser


def finish(result: BenchResult, started_s: float, json_path: Path | None) -> BenchResult:
    """Stamp the elapsed time, print the result and optionally write it as JSON."""
    result.elapsed_s = time.monotonic() - started_s
    result.print()
    print(f"({result.name}: {result.elapsed_s:.1f} s)")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result.to_json(), indent=1))
    return result


def quick_main(run: Callable[..., BenchResult], description: str, argv: Sequence[str] | None = None) -> int:
    """``main()`` of a benchmark whose only options are ``--quick`` and ``--json``."""
    args = base_parser(description).parse_args(argv)
    started = time.monotonic()
    finish(run(quick=args.quick), started, args.json)
    return 0


# ----------------------------------------------------------------------------
# processes


class Processes(processes.Processes):
    """:class:`protocol.runtime.processes.Processes` for a benchmark: children run in the repository root
    (or the ``cwd`` given to ``start``), logs in ``bench/out/logs``, each log fresh per run."""

    def __init__(self, log_dir: Path = OUT_DIR / "logs") -> None:
        super().__init__(log_dir, cwd=REPO_ROOT, truncate_logs=True)


def start_broker(
    procs: Processes, name: str = "broker", tree: Path | None = None, options: Sequence[str] = ()
) -> tuple[str, str, Any]:
    """Start ``python -m broker`` on free loopback ports; return (frontend, backend, process).

    It logs at INFO: one line per worker event, nothing per request.
    ``tree``: run the ``broker`` and ``protocol`` packages of another checkout
    (e.g. a copy from before an optimisation) instead of this one.
    ``options``: more broker options (e.g. ``--heartbeat-interval-s``).
    """
    frontend, backend = free_endpoint(), free_endpoint()
    args = [PYTHON, "-m", "broker", "--frontend", frontend, "--backend", backend, "--log-level", "INFO"]
    proc = procs.start([*args, *options], name, cwd=tree)
    wait_for_log(proc, "broker ready", 30)
    return frontend, backend, proc


def start_sam_worker(
    procs: Processes,
    backend: str,
    checkpoint: Path,
    *,
    name: str = "worker",
    model: str = MODEL,
    device: str = "cpu",
    threads: int | None = None,
    cache_mib: float = 1024.0,
    wait: bool = True,
    tree: Path | None = None,
    options: Sequence[str] = (),
) -> Any:
    """Start ``python -m workers`` (a real SAM2 worker) and wait for its ready line.

    ``tree``: run the packages of another checkout instead of this one.
    ``options``: more worker options (e.g. ``--heartbeat-interval-s``).
    """
    args = [
        PYTHON, "-m", "workers",
        "--connect", backend,
        "--model", model,
        "--checkpoint", str(checkpoint),
        "--device", device,
        "--cache-mib", str(cache_mib),
        "--log-level", "INFO",
    ]  # fmt: skip
    if threads is not None:
        args += ["--threads", str(threads)]
    proc = procs.start([*args, *options], name, cwd=tree)
    if wait:
        wait_for_log(proc, "worker ready", 300)
    return proc


def start_peer(procs: Processes, mode: str, *args: str, name: str, stdout_pipe: bool = False) -> Any:
    """Start one light peer of ``bench/peers.py``."""
    return procs.start([PYTHON, "-m", "bench.peers", mode, *args], name, stdout_pipe=stdout_pipe)


def wait_for_workers(frontend: str, service: str, count: int, timeout_s: float = 60.0) -> None:
    """Ask the broker (``mmi.services``) until ``service`` has ``count`` registered workers.

    Raises:
        RuntimeError: not within ``timeout_s``.
    """
    from protocol.wire.client import SamClient

    deadline = time.monotonic() + timeout_s
    seen = -1
    with SamClient(frontend, service) as client:
        while time.monotonic() < deadline:
            try:
                seen = client.services(timeout_s=2.0).get(service, {}).get("workers", 0)
            except Exception:
                seen = -1
            if seen >= count:
                return
            time.sleep(0.1)
    raise RuntimeError(f"service {service!r} has {seen} workers, expected {count}, after {timeout_s} s")


def ensure_checkpoint(model: str = MODEL) -> Path:
    """A random-weight checkpoint of ``model`` under ``bench/out/ckpt`` (built once).

    Random weights cost exactly the compute of real ones; the masks are meaningless.
    """
    path = OUT_DIR / "ckpt" / f"{model}_random.pt"
    if not path.is_file():
        build_random_checkpoint(model, path, timeout_s=600)
    return path


def build_random_checkpoint(model: str, out: Path, timeout_s: float) -> Path:
    """Write a random-weight checkpoint of ``model`` in the official layout to ``out`` with
    ``scripts/make_random_checkpoint.py``; return ``out``.

    Raises:
        subprocess.CalledProcessError, subprocess.TimeoutExpired: the script failed or took too long.
    """
    subprocess.run(
        [PYTHON, "scripts/make_random_checkpoint.py", "--model", model, "--out", str(out)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=timeout_s,
    )
    return out


def minor_faults(pid: int) -> int | None:
    """Minor page faults of process ``pid`` so far (Linux's /proc; None elsewhere or once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
    except OSError:
        return None
    return int(fields[7])  # minflt, field 10 of proc(5)


# ----------------------------------------------------------------------------
# machine facts


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str:
    """Short commit hash, with ``+dirty`` when the working tree has changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info() -> dict[str, str]:
    """Date, machine and the versions that matter, for the head of RESULTS.md."""
    import psutil
    import zmq

    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except ImportError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_revision(),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "sam2": _version("sam2"),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "blosc2": _version("blosc2"),
        "flask": _version("flask"),
        "scikit-image": _version("scikit-image"),
    }


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """``items`` in consecutive pieces of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
