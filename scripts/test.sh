#!/usr/bin/env bash
# Run the whole test suite on this machine: scripts/test.sh [pytest args...]
# Sets up the environment (including Xvfb and Qt's libraries), lints, then
# runs pytest twice, side by side: the backend and logic tests, and the napari
# GUI tests (marked "gui") under a virtual X display. They run in separate
# processes because the GUI's OpenGL (Mesa) and torch's triton each load their
# own LLVM, which can crash one process that holds both; side by side because
# the backend session mostly waits for the processes it starts (about 1.3 of
# 2 cores busy), so the GUI session's single core fits beside it.
set -euo pipefail
case "${1:-}" in
  -h|--help)
    cat <<'USAGE'
Usage: scripts/test.sh [pytest arguments...]

Set up the environment (.venv, Xvfb and Qt's libraries), run ruff and mypy, then pytest
twice, side by side: the backend and logic tests (-m "not gui") and the napari tests
(-m gui) under Xvfb (its output follows the backend's). Arguments go to both pytest
sessions, e.g.
  scripts/test.sh -k codec
Prints one combined line: "tests: N passed, N failed, N skipped".
USAGE
    exit 0 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/setup_env.sh" --gui
venv=${VENV:-$root/.venv}
export PATH="$venv/bin:$PATH"
export PYTHONUNBUFFERED=1
# Two threads per process keep several real workers from starving each other, and threads
# that wait for work sleep instead of spinning: with the cores shared by both sessions, a
# spinning OpenMP thread burns the time another process needs (a random-weight SAM2 encode:
# 8.5-9.8 s of CPU with two busy neighbours, 7.3 s with passive waits; the same when idle).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

# The hundreds of processes the tests start (workers, brokers, sam2-batch) compile this
# checkout's modules once, not each time (site-packages was compiled at install).
unset PYTHONDONTWRITEBYTECODE

echo "[test] ruff"
ruff check .
ruff format --check .

logs=$(mktemp -d)
mypy_pid="" gui_pid=""
stop_children() {
  local pid
  for pid in $mypy_pid $gui_pid; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$logs"
}
trap stop_children EXIT
# Types of the wire, the broker and the plugin's logic (its Qt widgets are left to ruff): about a
# minute of one core, run beside the backend tests; its result is checked before the GUI tests.
echo "[test] mypy (in the background; its output follows the backend tests)"
mypy protocol broker batch workers plugin/labels plugin/view plugin/jobs plugin/connection \
  plugin/export.py plugin/io_hooks.py >"$logs/mypy.txt" 2>&1 &
mypy_pid=$!
# The slowest tests of each session are listed at its end: what to shrink when CI grows.
args=(-q -p no:cacheprovider -ra --durations=15 "$@")
xvfb=()
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
  xvfb=(xvfb-run -a -s "-screen 0 1600x1200x24")
fi

set +e
echo "[test] pytest: napari GUI (in the background; its output follows the backend tests)"
"${xvfb[@]}" python -m pytest -m gui "${args[@]}" >"$logs/gui.log" 2>&1 &
gui_pid=$!
echo "[test] pytest: backend and logic"
python -m pytest -m "not gui" "${args[@]}" 2>&1 | tee "$logs/backend.log"
rc_backend=${PIPESTATUS[0]}
echo "[test] backend session: $SECONDS s since the start"
echo "[test] mypy"
wait "$mypy_pid"
rc_mypy=$?
mypy_pid=""
cat "$logs/mypy.txt"
echo "[test] pytest: napari GUI"
wait "$gui_pid"
rc_gui=$?
gui_pid=""
cat "$logs/gui.log"
echo "[test] GUI session: $SECONDS s since the start"
set -e

count() {  # count WORD: sum of "N WORD" over both sessions' summary lines (0 when absent)
  { grep -hE ' in [0-9.]+s' "$logs"/*.log || true; } | { grep -oE "[0-9]+ $1" || true; } \
    | awk '{s += $1} END {print s + 0}'
}
passed=$(count passed); failed=$(count failed); errors=$(count error); skipped=$(count skipped)
# pytest exits 5 when a session selects no test (e.g. "-k codec" matches no GUI test).
ok() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }
if [ "$rc_mypy" -eq 0 ] && ok "$rc_backend" && ok "$rc_gui" && [ "$passed" -gt 0 ]; then
  echo "tests: $passed passed, $((failed + errors)) failed, $skipped skipped"
  exit 0
fi
echo "[test] FAILED: mypy exit $rc_mypy, backend session exit $rc_backend, GUI session exit $rc_gui"
echo "tests: $passed passed, $((failed + errors)) failed, $skipped skipped"
exit 1
