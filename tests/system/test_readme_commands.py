"""Every script the READMEs show runs as written (copied and pasted on a fresh clone).

The commands are read from the READMEs themselves: fenced code blocks and
inline code that starts with a script path. Each script must exist, be
executable in git (mode 100755, so a fresh clone can run ``scripts/x.sh``),
start with a shebang, and answer ``--help`` with a usage text (never its own
source lines). Cheap commands run for real.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT

READMES = [REPO_ROOT / "README.md", REPO_ROOT / "plugin" / "README.md"]
_FENCED = re.compile(r"```[^\n]*\n(.*?)```", re.S)
_INLINE = re.compile(r"`((?:\S*python3?\s+)?scripts/[^`]+)`")
_SCRIPT = re.compile(r"(?:(?P<python>\S*python3?)\s+)?(?P<path>scripts/[\w.-]+\.(?:sh|py))\b")
# lines of a script's source that a usage text never contains
_SOURCE_LINE = re.compile(
    r"^\s*(set -[euxo]|#!|if \[|fi$|esac$|done$|\w+=\$\(|import |from \w+ import )", re.M
)


def shown_commands() -> dict[str, set[bool]]:
    """``{script path: {written with python in front?}}`` for every script the READMEs show."""
    shown: dict[str, set[bool]] = {}
    for readme in READMES:
        text = readme.read_text()
        snippets = _FENCED.findall(text) + _INLINE.findall(text)
        for snippet in snippets:
            for match in _SCRIPT.finditer(snippet):
                shown.setdefault(match["path"], set()).add(match["python"] is not None)
    return shown


SHOWN = shown_commands()


def git_modes() -> dict[str, str]:
    listing = subprocess.run(
        ["git", "ls-files", "-s", "scripts"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {line.split("\t")[1]: line.split()[0] for line in listing.splitlines()}


def run(argv: list[str], timeout_s: float = 120.0, **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s, env=env, **kwargs
    )


def test_the_readmes_show_the_main_scripts() -> None:
    assert {"scripts/start_all.sh", "scripts/test.sh", "scripts/curve_keys.py"} <= set(SHOWN)


@pytest.mark.parametrize("script", sorted(SHOWN))
def test_a_shown_script_is_executable_in_git_and_answers_help(script: str) -> None:
    path = REPO_ROOT / script
    assert path.is_file(), f"the README shows {script}, which does not exist"
    assert git_modes().get(script) == "100755", (
        f"{script} is not executable in git (git update-index --chmod=+x)"
    )
    assert os.access(path, os.X_OK)
    assert path.read_text().startswith("#!"), f"{script} has no shebang line"
    for with_python in SHOWN[script]:
        argv = [sys.executable, script, "--help"] if with_python else [f"./{script}", "--help"]
        done = run(argv)
        assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr}"
        assert "usage" in done.stdout.lower(), done.stdout
        assert not _SOURCE_LINE.search(done.stdout), f"{script} --help prints its source:\n{done.stdout}"


def test_start_all_help_lists_every_option_it_accepts() -> None:
    source = (REPO_ROOT / "scripts" / "start_all.sh").read_text()
    accepted = set(re.findall(r"^\s+(--[\w-]+)\)", source, re.M))
    assert {"--no-viewer", "--random-weights", "--max-restarts", "--gpus"} <= accepted
    text = run(["./scripts/start_all.sh", "--help"]).stdout
    assert text.startswith("Usage: scripts/start_all.sh")
    assert [option for option in sorted(accepted) if option not in text] == []
    bad = run(["./scripts/start_all.sh", "--no-such-option"])
    assert bad.returncode == 2 and "unknown option --no-such-option (see --help)" in bad.stderr


def test_curve_keys_command_from_the_readme_makes_the_keys(tmp_path) -> None:
    # README: python scripts/curve_keys.py curve --clients alice,bob --workers gpu1,gpu2
    argv = [sys.executable, str(REPO_ROOT / "scripts" / "curve_keys.py"), "curve"]
    argv += ["--clients", "alice,bob", "--workers", "gpu1,gpu2"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    curve = tmp_path / "curve"
    assert (curve / "broker.key").is_file() and (curve / "broker.key_secret").is_file()
    assert (curve / "workers" / "gpu1.key_secret").is_file()
    assert (curve / "authorized_clients" / "bob.key").is_file()
