#!/usr/bin/env python
"""Run every benchmark and write ``bench/RESULTS.md``.

    .venv/bin/python bench/run_all.py              # everything (~40 min on a 2-core CPU machine)
    .venv/bin/python bench/run_all.py --quick      # a smoke run (~2-3 min); writes bench/out/RESULTS-quick.md
    .venv/bin/python bench/run_all.py --only codec,broker
    .venv/bin/python bench/run_all.py --gpu        # on a machine with CUDA: benchmark 7 too
    .venv/bin/python bench/run_all.py --only internals --reuse   # rerun one, keep the others' last results

Each benchmark runs as its own process (``python -m bench.bench_<name>
--json ...``), so one that fails does not stop the others and none inherits
another's threads or memory. Timings on a shared machine are noisy: every
comparison is a ratio measured within one run, numbers are medians, and the
CPU use of other processes is recorded next to each benchmark.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

try:
    from bench.common import OUT_DIR, PYTHON, REPO_ROOT, BenchResult, machine_info, verdict
except ImportError:  # run as a script: python bench/run_all.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.common import OUT_DIR, PYTHON, REPO_ROOT, BenchResult, machine_info, verdict

# name -> (module, extra arguments); in the order they run and appear.
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "prompt": ("bench.bench_prompt", []),
    "v1": ("bench.bench_v1", []),
    "broker": ("bench.bench_broker", []),
    "scaling": ("bench.bench_scaling", []),
    "codec": ("bench.bench_codec", []),
    "memory": ("bench.bench_memory", []),
    "internals": ("bench.bench_internals", []),
    "disk_cache": ("bench.bench_disk_cache", []),
    "batch": ("bench.batch_throughput", []),
    "gpu": ("bench.bench_prompt", ["--device", "cuda", "--models", "sam2.1_hiera_tiny,sam2.1_hiera_large"]),
    "napari": ("bench.bench_napari", []),
    "large": ("bench.bench_large", []),
}
OPTIMISATIONS = REPO_ROOT / "bench" / "OPTIMISATIONS.md"


def background_cpu_percent(seconds: float = 1.0) -> float:
    """CPU use of the whole machine over ``seconds`` while no benchmark runs (100 = all cores busy)."""
    import psutil

    return float(psutil.cpu_percent(interval=seconds))


def wait_until_quiet(limit_percent: float, max_wait_s: float) -> float:
    """Wait (up to ``max_wait_s``) until other processes use less than ``limit_percent`` of the CPU."""
    deadline = time.monotonic() + max_wait_s
    load = background_cpu_percent(2.0)
    while load > limit_percent and time.monotonic() < deadline:
        print(f"[run_all] machine busy ({load:.0f}% CPU used by other processes); waiting", flush=True)
        time.sleep(10)
        load = background_cpu_percent(2.0)
    return load


def run_one(name: str, quick: bool, results_dir: Path) -> tuple[BenchResult | None, str]:
    """Run one benchmark in its own process; return its result (None if it failed) and its output."""
    module, extra = BENCHMARKS[name]
    json_path = results_dir / f"{name}.json"
    json_path.unlink(missing_ok=True)
    args = [PYTHON, "-m", module, *extra, "--json", str(json_path)] + (["--quick"] if quick else [])
    print(f"[run_all] {name}: {' '.join(args[1:])}", flush=True)
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    proc.wait()
    output = "".join(lines)
    (results_dir / f"{name}.out").write_text(output)
    if proc.returncode != 0 or not json_path.is_file():
        return None, output
    return BenchResult.from_json(json.loads(json_path.read_text())), output


def reuse_results(results_dir: Path, names: list[str]) -> dict[str, BenchResult]:
    """The last saved result of each of ``names`` that has one, with a note saying when it was taken."""
    reused = {}
    for name in names:
        path = results_dir / f"{name}.json"
        if not path.is_file():
            continue
        result = BenchResult.from_json(json.loads(path.read_text()))
        taken = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(path.stat().st_mtime))
        result.notes.insert(0, f"From the previous run's saved result ({taken}), not rerun this time.")
        reused[name] = result
    return reused


def write_results(
    path: Path,
    results: dict[str, BenchResult | None],
    outputs: dict[str, str],
    loads: dict[str, float],
    info: dict[str, str],
    command: str,
    elapsed_s: float,
) -> None:
    """The markdown report: machine, versions, targets, every table, the optimisations."""
    lines = ["# Benchmark results", ""]
    lines.append(
        f"Written by `{command}` on {info['date']} in {elapsed_s / 60:.1f} min. Timings are medians; every "
        "comparison is measured within one run (ratios, alternating calls). Models have random weights "
        "(no checkpoint can be downloaded here): the compute is that of real weights, the masks are "
        "meaningless."
    )
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    for key in ("date", "commit", "cpu", "cores", "ram", "gpu", "os"):
        lines.append(f"| {key} | {info[key]} |")
    versions = ", ".join(
        f"{k} {info[k]}" for k in ("python", "numpy", "torch", "sam2", "pyzmq", "libzmq", "blosc2", "flask")
    )
    lines.append(f"| versions | {versions}, scikit-image {info['scikit-image']} |")
    lines.append(
        "| CPU used by other processes before each benchmark | "
        + ", ".join(f"{name} {load:.0f}%" for name, load in loads.items())
        + " |"
    )
    lines += [
        "",
        "## Targets",
        "",
        "| benchmark | claim | measured | target | verdict |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        if result is None:
            lines.append(f"| {name} | (benchmark failed: see its output below) | - | - | not measured |")
            continue
        for target in result.targets:
            mark = {True: "met", False: "**NOT met**", None: "not measured"}[target.met]
            number = result.title.split(".")[0]
            lines.append(f"| {number} | {target.claim} | {target.measured} | {target.target} | {mark} |")
    for name, result in results.items():
        if result is None:
            lines += ["", f"## {name}: failed", "", "```", outputs.get(name, "")[-4000:], "```"]
            continue
        lines += ["", f"## {result.title}", ""]
        for note in result.notes:
            lines += [f"*{note}*", ""]
        for table in result.tables:
            lines += [table.to_markdown(), ""]
        lines.append(f"({result.elapsed_s:.0f} s)")
    if OPTIMISATIONS.is_file():
        lines += ["", OPTIMISATIONS.read_text().rstrip()]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fast smoke run with small sizes and few repeats"
    )
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="benchmark 7 on CUDA (default: when torch sees a CUDA device; else recorded as not measured)",
    )
    parser.add_argument("--out", type=Path, default=None, help="where to write the report")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each benchmark wait up to this long for other processes to leave the CPU idle",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take the benchmarks not run now from the last run's bench/out/results/*.json (noted as such)",
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; known: {', '.join(BENCHMARKS)}")
    if args.gpu is False and "gpu" in names:
        names.remove("gpu")
    results_dir = OUT_DIR / ("results-quick" if args.quick else "results")
    reused = reuse_results(results_dir, [n for n in BENCHMARKS if n not in names]) if args.reuse else {}
    everything = set(names) | set(reused) >= set(BENCHMARKS) - {"gpu"}
    out = args.out or (
        REPO_ROOT / "bench" / "RESULTS.md"
        if everything and not args.quick
        else OUT_DIR / ("RESULTS-quick.md" if args.quick else "RESULTS-partial.md")
    )
    results_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    info = machine_info()
    results: dict[str, BenchResult | None] = dict(reused)
    outputs: dict[str, str] = {}
    loads: dict[str, float] = {}
    for name in names:
        if args.wait_quiet > 0:
            loads[name] = wait_until_quiet(25.0, args.wait_quiet)
        else:
            loads[name] = background_cpu_percent()
        results[name], outputs[name] = run_one(name, args.quick, results_dir)
    results = {name: results[name] for name in BENCHMARKS if name in results}  # the report's order
    command = "bench/run_all.py" + (" " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else "")
    write_results(out, results, outputs, loads, info, command, time.monotonic() - started)
    print(f"\n[run_all] wrote {out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out}")
    for name, result in results.items():
        if result is None:
            print(f"[run_all] {name}: FAILED")
            continue
        for target in result.targets:
            print(
                f"[run_all] {target.claim}: {target.measured} (target {target.target}): {verdict(target.met)}"
            )
    return 0 if all(r is not None for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
