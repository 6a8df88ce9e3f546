"""The two soak scripts, small: mixed requests while SAM2 workers are SIGKILLed and
restarted (``scripts/soak_faults.py``), and a short fuzz run (``scripts/soak_fuzz.py``).
The full runs (2,000 requests; 100,000 messages) are run by hand; their figures are in README.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import PYTHON, REPO_ROOT

pytestmark = pytest.mark.model


def _figure(output: str, label: str) -> int:
    match = re.search(rf"^\s*{re.escape(label)}\s+(\d+)", output, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{output}"
    return int(match.group(1))


def test_soak_with_worker_kills_loses_nothing(random_checkpoint: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            PYTHON, "scripts/soak_faults.py", "--requests", "200", "--clients", "4", "--workers", "2",
            "--kill-every-s", "2", "--segment-share", "0.01",
            "--checkpoint", str(random_checkpoint), "--log-dir", str(tmp_path),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    kills = int(re.search(r"(\d+) SIGKILLs", out).group(1))  # type: ignore[union-attr]
    assert kills >= 2, out
    assert _figure(out, "sent") == 200
    assert _figure(out, "succeeded") + _figure(out, "failed with a clear error") == 200
    assert _figure(out, "duplicate FINALs") == _figure(out, "misrouted FINALs") == 0
    assert _figure(out, "wrong results") == 0
    assert re.search(r"lost \(no FINAL in \S+ s\)\s+0$", out, re.MULTILINE), out
    assert "soak: PASS" in out


def test_fuzz_soak_short_run(random_checkpoint: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            PYTHON, "scripts/soak_fuzz.py", "--messages", "2000", "--check-every", "500",
            "--checkpoint", str(random_checkpoint), "--log-dir", str(tmp_path),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert re.search(r"^fuzz: 2000 messages", out, re.MULTILINE), out
    assert _figure(out, "crashes") == 0
    assert "FAILED" not in out and "fuzz: PASS" in out
    assert re.search(r"RSS broker\s+before [\d.]+ MiB, after [\d.]+ MiB", out), out
