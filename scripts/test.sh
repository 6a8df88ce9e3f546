#!/usr/bin/env bash
# Run the whole test suite on this machine: scripts/test.sh [pytest args...]
# Sets up the environment (including Xvfb and Qt's libraries), lints, then
# runs three pytest sessions side by side: the backend and logic tests in two
# halves (tests/system and tests/batch; the rest), and the napari GUI tests
# (marked "gui") under a virtual X display. The GUI tests run in a process of
# their own because the GUI's OpenGL (Mesa) and torch's triton each load their
# own LLVM, which can crash one process that holds both. Side by side because
# each session spends much of its time waiting for the processes it starts
# (heartbeats, liveness windows, start-ups): with two sessions the two cores
# were still idle a fifth of the time. Given test paths, the backend tests run
# as one session.
set -euo pipefail
case "${1:-}" in
  -h|--help)
    cat <<'USAGE'
Usage: scripts/test.sh [pytest arguments...]

Set up the environment (.venv, Xvfb and Qt's libraries), run ruff and mypy, then three
pytest sessions side by side: the backend and logic tests (-m "not gui") in two halves,
tests/system with tests/batch and the rest, and the napari tests (-m gui) under Xvfb.
Their output follows, session after session. Arguments go to every pytest session, e.g.
  scripts/test.sh -k codec
With test paths among them (scripts/test.sh tests/broker), the backend tests run as one
session.
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
# Two threads per process keep several real workers from starving each other.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# The hundreds of processes the tests start (workers, brokers, sam2-batch) compile this
# checkout's modules once, not each time (site-packages was compiled at install).
unset PYTHONDONTWRITEBYTECODE

echo "[test] ruff"
ruff check .
ruff format --check .

logs=$(mktemp -d)
mypy_pid="" gui_pid="" half_pid=""
stop_children() {
  local pid
  for pid in $mypy_pid $gui_pid $half_pid; do  # a background session is a subshell: its pytest too
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
  done
  rm -rf "$logs"
}
trap stop_children EXIT
# Types of the wire, the broker and the plugin's logic (its Qt widgets are left to ruff): about a
# minute of one core, run beside the tests; its result is checked at the end.
echo "[test] mypy (in the background; its output follows the tests)"
mypy protocol broker batch workers plugin/labels plugin/view plugin/jobs plugin/connection \
  plugin/export.py plugin/io_hooks.py >"$logs/mypy.txt" 2>&1 &
mypy_pid=$!
# The slowest tests of each session are listed at its end: what to shrink when CI grows.
args=(-q -p no:cacheprovider -ra --durations=15 "$@")
xvfb=()
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null 2>&1; then
  xvfb=(xvfb-run -a -s "-screen 0 1600x1200x24")
fi
# Test paths given (a file, a folder, a test id): one backend session runs them.
halves=1
for arg in "$@"; do
  if [[ "$arg" == *::* ]] || { [[ "$arg" != -* ]] && [ -e "$arg" ]; }; then halves=0; fi
done
half_tests=(tests/system tests/batch)

set +e
background() {  # background NAME COMMAND...: run a session, its output to NAME.log, "rc seconds" to NAME.rc
  local name=$1
  shift
  ( "$@" >"$logs/$name.log" 2>&1; echo "$? $SECONDS" >"$logs/$name.rc" ) &
}
echo "[test] pytest: napari GUI (in the background; its output follows)"
background gui "${xvfb[@]}" python -m pytest -m gui "${args[@]}"
gui_pid=$!
backend_args=("${args[@]}")
if [ "$halves" -eq 1 ]; then
  echo "[test] pytest: backend, ${half_tests[*]} (in the background; its output follows)"
  background system python -m pytest -m "not gui" "${half_tests[@]}" "${args[@]}"
  half_pid=$!
  for path in "${half_tests[@]}"; do backend_args+=("--ignore=$path"); done
fi
echo "[test] pytest: backend and logic${half_pid:+ (the rest)}"
python -m pytest -m "not gui" "${backend_args[@]}" 2>&1 | tee "$logs/backend.log"
rc_backend=${PIPESTATUS[0]}
echo "[test] backend session: $SECONDS s since the start"
wait $half_pid $gui_pid
half_pid="" gui_pid=""
session() {  # session NAME TITLE: print a background session's output; its exit status is in rc_NAME
  local rc=1 ended="?"
  [ -f "$logs/$1.rc" ] && read -r rc ended <"$logs/$1.rc"
  echo "[test] pytest: $2"
  cat "$logs/$1.log" 2>/dev/null || echo "[test] (the $2 session did not run)"
  echo "[test] $2 session: $ended s since the start"
  printf -v "rc_$1" '%s' "$rc"
}
rc_system=0
if [ "$halves" -eq 1 ]; then session system "backend, ${half_tests[*]}"; fi
session gui "napari GUI"
echo "[test] mypy"
wait "$mypy_pid"
rc_mypy=$?
mypy_pid=""
cat "$logs/mypy.txt"
set -e

count() {  # count WORD: sum of "N WORD" over the sessions' summary lines (0 when absent)
  { grep -hE ' in [0-9.]+s' "$logs"/*.log || true; } | { grep -oE "[0-9]+ $1" || true; } \
    | awk '{s += $1} END {print s + 0}'
}
passed=$(count passed); failed=$(count failed); errors=$(count error); skipped=$(count skipped)
# pytest exits 5 when a session selects no test (e.g. "-k codec" matches no GUI test).
ok() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }
if [ "$rc_mypy" -eq 0 ] && ok "$rc_backend" && ok "$rc_system" && ok "$rc_gui" && [ "$passed" -gt 0 ]; then
  echo "tests: $passed passed, $((failed + errors)) failed, $skipped skipped"
  exit 0
fi
echo "[test] FAILED: mypy exit $rc_mypy, backend sessions exit $rc_backend and $rc_system," \
  "GUI session exit $rc_gui"
echo "tests: $passed passed, $((failed + errors)) failed, $skipped skipped"
exit 1
