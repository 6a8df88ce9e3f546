#!/usr/bin/env bash
# Start the broker, N SAM2 workers per GPU (one CPU worker without a GPU),
# and napari with the plugin. One log per process under --log-dir.
#
#   scripts/start_all.sh [--model sam2.1_hiera_tiny] [--checkpoint PATH]
#                        [--gpus all|none|0,1] [--workers-per-gpu N]
#                        [--frontend tcp://127.0.0.1:5555] [--backend tcp://127.0.0.1:5556]
#                        [--cache-mib 1024] [--log-dir logs] [--log-level INFO]
#                        [--random-weights] [--no-viewer]
#
# Policy when a child dies unexpectedly: everything is stopped and the
# script exits non-zero, naming the process and its log (a silent restart
# would hide a broken GPU or checkpoint). Ctrl-C stops every child cleanly.
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

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }
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
    --random-weights) random_weights=1; shift ;;
    --no-viewer) viewer=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "start_all: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$workers_per_gpu" in ''|*[!0-9]*|0) echo "start_all: --workers-per-gpu must be a positive integer" >&2; exit 2 ;; esac

say() { printf '[start_all] %s\n' "$*"; }

if [ $viewer -eq 1 ]; then "$root/scripts/setup_env.sh" --gui; else "$root/scripts/setup_env.sh"; fi
py=${VENV:-$root/.venv}/bin/python
mkdir -p "$log_dir"

# --- checkpoint -------------------------------------------------------------
worker_weights=()
if [ $random_weights -eq 1 ]; then
  say "WARNING: --random-weights: the model has random weights, masks will be MEANINGLESS (tests only)"
  worker_weights=(--random-weights)
else
  if [ -z "$checkpoint" ]; then
    if ! checkpoint=$("$py" -c "import sys; from workers.models import get_spec; print(get_spec(sys.argv[1]).default_checkpoint_path)" "$model" 2>&1); then
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
pids=()
names=()
stopping=0
stop_all() {
  stopping=1
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
on_signal() { say "stopping"; stop_all; exit 0; }
trap on_signal INT TERM
trap 'stop_all' EXIT

start() {  # start NAME CMD... : run in the background with its own log
  local name=$1; shift
  "$@" >> "$log_dir/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
  say "started $name (pid $!, log $log_dir/$name.log)"
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

: > "$log_dir/broker.log"
start broker "$py" -m broker --frontend "$frontend" --backend "$backend" --log-level "$log_level"
if ! wait_for_line "$log_dir/broker.log" "broker ready" 30 "${pids[0]}"; then
  say "the broker did not start; see $log_dir/broker.log"; tail -5 "$log_dir/broker.log" >&2; exit 1
fi

connect=${backend/0.0.0.0/127.0.0.1}
common=(--connect "$connect" --model "$model" --cache-mib "$cache_mib" --log-level "$log_level" "${worker_weights[@]}")
if [ ${#gpu_ids[@]} -eq 0 ]; then
  say "no GPU found: starting one CPU worker (interactive prompts work, encoding an image takes seconds)"
  : > "$log_dir/worker-cpu.log"
  start worker-cpu "$py" -m workers "${common[@]}" --device cpu --workers-per-host 1
else
  total=$((${#gpu_ids[@]} * workers_per_gpu))
  for gpu in "${gpu_ids[@]}"; do
    for n in $(seq 1 "$workers_per_gpu"); do
      name="worker-gpu$gpu-$n"
      : > "$log_dir/$name.log"
      CUDA_VISIBLE_DEVICES=$gpu start "$name" "$py" -m workers "${common[@]}" --device cuda \
        --workers-per-host "$total"
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
  SAM2_BROKER_ADDRESS=$frontend SAM2_MODEL=$model "$py" -m napari -w napari-sam2-broker \
    >> "$log_dir/napari.log" 2>&1 &
  pids+=($!)
  names+=(napari)
fi

# Wait for any child; napari closing is a normal end, anything else is not.
while true; do
  set +e
  wait -n "${pids[@]}"
  set -e
  [ $stopping -eq 1 ] && exit 0
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      if [ "${names[$i]}" = napari ]; then
        say "napari closed; stopping the backend"; stop_all; exit 0
      fi
      say "${names[$i]} exited unexpectedly; stopping everything (log: $log_dir/${names[$i]}.log)"
      tail -5 "$log_dir/${names[$i]}.log" >&2 || true
      stop_all; exit 1
    fi
  done
done
