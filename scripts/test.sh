#!/usr/bin/env bash
# Run the whole test suite on this machine: scripts/test.sh [pytest args...]
# Sets up the environment (including Xvfb and Qt's libraries), lints, then
# runs pytest under a virtual X display so napari can show real windows.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/setup_env.sh" --gui
venv=${VENV:-$root/.venv}
export PATH="$venv/bin:$PATH"
export PYTHONUNBUFFERED=1
# Two threads per process keep several real workers from starving each other.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

echo "[test] ruff"
ruff check .
ruff format --check .

echo "[test] pytest"
args=(-q -p no:cacheprovider -ra "$@")
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
  exec xvfb-run -a -s "-screen 0 1600x1200x24" python -m pytest "${args[@]}"
fi
exec python -m pytest "${args[@]}"
