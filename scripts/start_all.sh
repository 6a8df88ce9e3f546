#!/usr/bin/env bash
# Start the broker, N SAM2 workers per GPU (one CPU worker without a GPU),
# and napari with the plugin, then keep them running. One log per process
# under --log-dir, plus start_all.log with what this script did.
#
# Policy when a child dies: a dead worker or broker is restarted with a
# back-off (1, 2, 4 ... s, at most 30 s); after more than --max-restarts
# restarts of one process within 10 minutes it is left down, said loudly on
# stdout and in start_all.log, and everything else (napari with your unsaved
# labels, the other workers) keeps running. A backend crash never closes
# napari. Everything stops on Ctrl-C / SIGTERM, or when napari closes.
# --help lists the options.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

model=sam2.1_hiera_tiny
checkpoint=""
gpus=all
workers_per_gpu=1
frontend=tcp://127.0.0.1:5555
backend=tcp://127.0.0.1:5556
cache_mib=1024
log_dir=$root/logs
log_level=INFO
random_weights=0
viewer=1
max_restarts=5
restart_window_s=600

usage() {
  cat <<'USAGE'
Usage: scripts/start_all.sh [options]

Start a SAM2 backend (one broker, SAM2 workers) and napari with the SAM2
plugin connected to it. Dead workers and a dead broker are restarted (back-off
1, 2, 4 ... 30 s; at most --max-restarts restarts per process in 10 minutes);
napari is never closed by this script because a backend process died.
Ctrl-C (or SIGTERM) stops everything; closing napari stops the backend.

Options:
  --model NAME           SAM2 model = service name: sam2.1_hiera_tiny (default),
                         sam2.1_hiera_small, sam2.1_hiera_base_plus, sam2.1_hiera_large;
                         or standin-blobs: one deterministic stand-in worker on the CPU,
                         no torch, no checkpoint (demos; its masks are not SAM's)
  --checkpoint PATH      checkpoint file (default: checkpoints/<model file>, downloaded if missing)
  --gpus all|none|0,1    GPUs that get workers (default: all that nvidia-smi lists;
                         none, or no GPU: one CPU worker)
  --workers-per-gpu N    workers per GPU (default 1)
  --frontend ENDPOINT    where clients connect (default tcp://127.0.0.1:5555)
  --backend ENDPOINT     where workers connect (default tcp://127.0.0.1:5556)
  --cache-mib MIB        embedding cache of each worker (default 1024)
  --log-dir DIR          one log per process, plus start_all.log (default logs/)
  --log-level LEVEL      DEBUG, INFO (default), WARNING or ERROR
  --max-restarts N       restarts of one process within 10 minutes before it is
                         left down (default 5; 0: never restart)
  --random-weights       no checkpoint: random weights, MEANINGLESS masks (tests only)
  --no-viewer            server mode: backend only, no napari (runs until Ctrl-C/SIGTERM)
  -h, --help             show this help and exit

Examples:
  scripts/start_all.sh                                   # backend + napari on this machine
  scripts/start_all.sh --no-viewer --workers-per-gpu 2   # a shared GPU server
USAGE
}
need() { [ $# -ge 2 ] || { echo "start_all: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --model) need "$@"; model=$2; shift 2 ;;
    --checkpoint) need "$@"; checkpoint=$2; shift 2 ;;
    --gpus) need "$@"; gpus=$2; shift 2 ;;
    --workers-per-gpu) need "$@"; workers_per_gpu=$2; shift 2 ;;
    --frontend) need "$@"; frontend=$2; shift 2 ;;
    --backend) need "$@"; backend=$2; shift 2 ;;
    --cache-mib) need "$@"; cache_mib=$2; shift 2 ;;
    --log-dir) need "$@"; log_dir=$2; shift 2 ;;
    --log-level) need "$@"; log_level=$2; shift 2 ;;
    --max-restarts) need "$@"; max_restarts=$2; shift 2 ;;
    --random-weights) random_weights=1; shift ;;
    --no-viewer) viewer=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "start_all: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$workers_per_gpu" in ''|*[!0-9]*|0) echo "start_all: --workers-per-gpu must be a positive integer" >&2; exit 2 ;; esac
case "$max_restarts" in ''|*[!0-9]*) echo "start_all: --max-restarts must be an integer >= 0" >&2; exit 2 ;; esac

# No fork in say (printf's own clock, not $(date)): a Ctrl-C that lands while bash waits for a
# command substitution whose child exits normally is otherwise dropped, trap and all, and the
# supervisor would restart the workers that the same Ctrl-C stopped.
say() { printf '[start_all] %s\n' "$*"; [ -d "$log_dir" ] && printf '%(%F %T)T %s\n' -1 "$*" >> "$log_dir/start_all.log"; return 0; }

if [ $viewer -eq 1 ]; then "$root/scripts/setup_env.sh" --gui; else "$root/scripts/setup_env.sh"; fi
py=${VENV:-$root/.venv}/bin/python
mkdir -p "$log_dir"

# --- checkpoint -------------------------------------------------------------
worker_weights=()
standin=0
case "$model" in standin-*) standin=1 ;; esac  # family standin (workers/standin): no checkpoint, no GPU
if [ $standin -eq 1 ]; then
  say "model $model is a deterministic stand-in, not SAM: its masks label bright blobs (demos, tests)"
elif [ $random_weights -eq 1 ]; then
  say "WARNING: --random-weights: the model has random weights, masks will be MEANINGLESS (tests only)"
  worker_weights=(--random-weights)
else
  if [ -z "$checkpoint" ]; then
    if ! checkpoint=$("$py" -c "import sys; from workers.models import get_spec; print(get_spec(sys.argv[1]).checkpoint_path())" "$model" 2>&1); then
      say "unknown model $model: $checkpoint"; exit 2
    fi
  fi
  if [ ! -f "$checkpoint" ]; then
    say "no checkpoint at $checkpoint; downloading"
    if ! "$root/checkpoints/download.sh" "$model"; then
      say "could not get the $model checkpoint. Download it by hand (see checkpoints/README.md)"
      say "and pass --checkpoint PATH, or use --random-weights for a test run (meaningless masks)."
      exit 2
    fi
  fi
  worker_weights=(--checkpoint "$checkpoint")
fi

# --- devices ----------------------------------------------------------------
gpu_ids=()
if [ "$gpus" != none ] && command -v nvidia-smi >/dev/null 2>&1; then
  if [ "$gpus" = all ]; then
    mapfile -t gpu_ids < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
  else
    IFS=, read -r -a gpu_ids <<< "$gpus"
  fi
fi

# --- processes --------------------------------------------------------------
# Per process i: names[i], cmds[i] (the command, shell-quoted), pids[i],
# started[i] (SECONDS at start), delay[i] (next back-off), restart_at[i]
# (SECONDS when a pending restart is due, or empty), history[i] (SECONDS of
# each restart), done[i] (1 once given up).
names=(); cmds=(); pids=(); started=(); delay=(); restart_at=(); history=(); done=()
napari=-1
stopping=0
stop_all() {  # SIGTERM every child (napari too), SIGKILL what is left after 5 s; once
  [ $stopping -eq 1 ] && return 0
  stopping=1
  local pid alive
  for pid in "${pids[@]}" "$napari"; do [ "$pid" -gt 0 ] && kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}" "$napari"; do [ "$pid" -gt 0 ] && kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}" "$napari"; do [ "$pid" -gt 0 ] && kill -KILL "$pid" 2>/dev/null || true; done
}
on_signal() { say "stopping"; stop_all; exit 0; }
trap on_signal INT TERM
trap 'stop_all' EXIT

launch() {  # launch I: (re)start process I in the background, appending to its log
  local i=$1
  ( eval "exec ${cmds[$i]}" ) >> "$log_dir/${names[$i]}.log" 2>&1 < /dev/null &
  pids[i]=$!
  started[i]=$SECONDS
}

start() {  # start NAME CMD...: a new supervised process with its own log
  local name=$1; shift
  local i=${#names[@]}
  names[i]=$name; cmds[i]=$(printf '%q ' "$@"); delay[i]=1; restart_at[i]=""; history[i]=""; done[i]=0
  : > "$log_dir/$name.log"
  launch "$i"
  say "started $name (pid ${pids[$i]}, log $log_dir/$name.log)"
}

wait_for_line() {  # wait_for_line LOG PATTERN SECONDS PID
  local deadline=$((SECONDS + $3))
  while [ $SECONDS -lt $deadline ]; do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$4" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

# Processes stop by themselves if this script is killed (-9) and cannot stop them.
watch=(--parent-pid $$)
start broker "$py" -m broker --frontend "$frontend" --backend "$backend" --log-level "$log_level" "${watch[@]}"
if ! wait_for_line "$log_dir/broker.log" "broker ready" 30 "${pids[0]}"; then
  say "the broker did not start; see $log_dir/broker.log"; tail -5 "$log_dir/broker.log" >&2; exit 1
fi

connect=${backend/0.0.0.0/127.0.0.1}
common=(--connect "$connect" --model "$model" --log-level "$log_level" "${watch[@]}")
if [ $standin -eq 1 ]; then
  start worker-standin "$py" -m workers "${common[@]}"
elif [ ${#gpu_ids[@]} -eq 0 ]; then
  say "no GPU found: starting one CPU worker (interactive prompts work, encoding an image takes seconds)"
  start worker-cpu "$py" -m workers "${common[@]}" --cache-mib "$cache_mib" "${worker_weights[@]}" \
    --device cpu --workers-per-host 1
else
  total=$((${#gpu_ids[@]} * workers_per_gpu))
  for gpu in "${gpu_ids[@]}"; do
    for n in $(seq 1 "$workers_per_gpu"); do
      start "worker-gpu$gpu-$n" env CUDA_VISIBLE_DEVICES="$gpu" "$py" -m workers "${common[@]}" \
        --cache-mib "$cache_mib" "${worker_weights[@]}" --device cuda --workers-per-host "$total"
    done
  done
fi
for i in "${!pids[@]}"; do
  [ "${names[$i]}" = broker ] && continue
  if ! wait_for_line "$log_dir/${names[$i]}.log" "worker ready" 300 "${pids[$i]}"; then
    say "${names[$i]} did not start; see $log_dir/${names[$i]}.log"; tail -5 "$log_dir/${names[$i]}.log" >&2; exit 1
  fi
done
say "backend ready: clients connect to $frontend (model $model, ${#pids[@]} processes)"

if [ $viewer -eq 1 ]; then
  say "opening napari with the SAM2 plugin"
  # SAM2_VIEWER_CMD replaces the napari command (tests use a stand-in viewer).
  SAM2_BROKER_ADDRESS=$frontend SAM2_MODEL=$model SAM2_EMBEDDED=0 \
    bash -c "${SAM2_VIEWER_CMD:-exec \"\$0\" -m napari -w napari-sam2-broker}" "$py" \
    >> "$log_dir/napari.log" 2>&1 < /dev/null &
  napari=$!
  say "napari running (pid $napari, log $log_dir/napari.log)"
fi

on_exit() {  # on_exit I CODE: process I died; schedule its restart, or give up on it
  local i=$1 code=$2 name=${names[$1]} now=$SECONDS recent="" t n
  [ $((now - started[i])) -ge 60 ] && delay[i]=1  # it had been up a while: start the back-off over
  for t in ${history[$i]}; do [ $((now - t)) -lt $restart_window_s ] && recent+="$t "; done
  history[i]=$recent
  n=$(wc -w <<< "$recent")
  if [ "$n" -ge "$max_restarts" ]; then
    done[i]=1
    say "ERROR: $name (pid ${pids[$i]}) exited with status $code after $n restarts within" \
      "$((restart_window_s / 60)) minutes; NOT restarting it again (log: $log_dir/$name.log)." \
      "Everything else keeps running; fix the cause, then restart start_all.sh."
    tail -5 "$log_dir/$name.log" >&2 || true
    return
  fi
  restart_at[i]=$((now + delay[i]))
  say "$name (pid ${pids[$i]}) exited with status $code; restarting it in ${delay[$i]} s" \
    "(restart $((n + 1))/$max_restarts within $((restart_window_s / 60)) minutes; log: $log_dir/$name.log)"
  tail -3 "$log_dir/$name.log" >&2 || true
  delay[i]=$((delay[i] * 2 > 30 ? 30 : delay[i] * 2))
}

# Supervise: restart what dies, until a signal or napari closes.
while true; do
  sleep 0.5 & wait $! || true  # a short sleep that a signal interrupts at once
  [ $stopping -eq 1 ] && exit 0
  if [ "$napari" -gt 0 ] && ! kill -0 "$napari" 2>/dev/null; then
    say "napari closed; stopping the backend"; stop_all; exit 0
  fi
  for i in "${!names[@]}"; do
    [ "${done[$i]}" -eq 1 ] && continue
    if [ -n "${restart_at[$i]}" ]; then
      if [ $SECONDS -ge "${restart_at[$i]}" ]; then
        restart_at[i]=""
        history[i]+="$SECONDS "
        launch "$i"
        say "restarted ${names[$i]} (pid ${pids[$i]})"
      fi
    elif ! kill -0 "${pids[$i]}" 2>/dev/null; then
      code=0; wait "${pids[$i]}" 2>/dev/null || code=$?
      on_exit "$i" "$code"
    fi
  done
  if [ $viewer -eq 0 ] && ! [[ " ${done[*]} " =~ " 0 " ]]; then
    say "ERROR: every backend process was given up; exiting"; exit 1
  fi
done
