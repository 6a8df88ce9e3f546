#!/usr/bin/env bash
# Create or refresh the project's virtual environment, idempotently.
#
#   scripts/setup_env.sh [--gui]    (--gui also installs the Debian packages
#                                    that napari/Qt need, e.g. Xvfb for tests)
#
# Environment: VENV (default .venv), PYTHON (default python3).
# A stamp file skips the pip work when nothing it depends on changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${VENV:-$root/.venv}
python=${PYTHON:-python3}
want_gui=0
case "${1:-}" in
  --gui) want_gui=1 ;;
  -h|--help)
    cat <<'USAGE'
Usage: scripts/setup_env.sh [--gui]

Create or refresh the virtual environment (VENV, default .venv; PYTHON, default
python3) with everything the project needs; a no-op when nothing changed.
  --gui   also install the Debian packages napari and Qt need (Xvfb for tests)
USAGE
    exit 0 ;;
esac

say() { printf '[setup] %s\n' "$*"; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      say "missing Debian packages (${missing[*]}) and no root: install them, then rerun"; return 1
    fi
  fi
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if [ $want_gui -eq 1 ] && command -v apt-get >/dev/null 2>&1; then
  apt_install xvfb xauth libgl1-mesa-dri libegl1 libgl1 libxkbcommon-x11-0 libxkbcommon0 \
    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
    libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 \
    libfontconfig1 libglib2.0-0 iproute2
  # tests/system/test_slurm.py runs a one-node SLURM cluster of its own (its own
  # slurm.conf, munge key and ports; the system's services are not configured)
  apt_install slurm-wlm munge || say "no SLURM: tests/system/test_slurm.py will be skipped"
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)

stamp="$venv/.sam2-broker-stamp"
digest=$(cat pyproject.toml scripts/constraints.txt scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ] && "$venv/bin/python" -c "import sam2, torch, zmq, blosc2, napari, PyQt6, importlib.util as u; assert u.find_spec('sam3')" 2>/dev/null; then
  say "environment up to date ($venv)"
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
"${pip[@]}" install -q --upgrade pip wheel setuptools
# Bytecode is compiled once at the end, on every core: pip compiles its ~19,000 modules on one
# (87 s here).
pip+=(install --no-compile)
# Order matters (DESIGN.md): the full torch build with its torchvision first,
# then sam2 built against it without CUDA extensions.
say "installing torch and torchvision (large download on the first run)"
"${pip[@]}" -q -c scripts/constraints.txt torch torchvision
if ! "$venv/bin/python" -c "import sam2" 2>/dev/null; then
  say "installing sam2"
  SAM2_BUILD_CUDA=0 "${pip[@]}" -q --no-build-isolation -c scripts/constraints.txt sam2
fi
# The full environment: the base install (plugin, protocol, broker, sam2-batch), the
# worker extra (torch, torchvision, sam2: already there from the steps above), the sam3
# extra (SAM 3 workers; the tests serve a small random SAM 3; numpy < 2.4 by its pins, see
# constraints.txt), and the test extra, which brings PyQt6 (the base install pins no Qt
# binding; napari needs one).
say "installing the project, its worker and sam3 extras and its test tools"
"${pip[@]}" -q -c scripts/constraints.txt -e ".[worker,sam3,test,bench]"
say "compiling the installed modules"
site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# As pip does: a module that does not compile (a Python 2 example in a package's tests) is skipped.
"$venv/bin/python" -W ignore -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
echo "$digest" > "$stamp"
say "environment ready ($venv)"
