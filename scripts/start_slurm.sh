#!/usr/bin/env bash
# SAM2 workers on a SLURM cluster: one command starts the broker and submits
# the workers as a job array; SLURM places, requeues and stops them.
#
#   scripts/start_slurm.sh --partition gpu --gpus 8 --workers-per-gpu 2 --time 08:00:00
#
# What it does (run it on the login node, from a checkout on the shared filesystem):
#   1. the broker: on this login node in the background (--broker login, the
#      default) or as a small CPU job (--broker job); once up it writes the
#      address file RUN_DIR/broker.address (scripts/slurm/broker.sbatch);
#   2. the workers: `sbatch --array` of scripts/slurm/workers.sbatch, each task
#      with --gpus-per-task GPUs (--gres=gpu:K) and --workers-per-gpu workers
#      per GPU; each task waits for the address file, then registers its
#      workers with the broker; one log per task (RUN_DIR/logs/workers-%A_%a.log);
#   3. prints the address for napari (SAM2_BROKER_ADDRESS) and sam2-batch (--broker).
#
# Growing: run it again with --broker none to submit more tasks to the running
# broker (same --run-dir). Shrinking: scancel JOBID_TASK. --stop cancels the
# jobs this run directory recorded and stops its login-node broker.
#
# Workers drain on SIGTERM (scancel, preemption, time limit): no new request,
# the one held finished within --drain-grace-s or handed back to the broker,
# DISCONNECT, exit 0. SLURM sends SIGKILL KillWait seconds after SIGTERM, so
# the grace is fitted inside the cluster's KillWait (read from `scontrol show
# config`, less DRAIN_MARGIN_S for the hand-back and DISCONNECT; a larger
# --drain-grace-s is cut down with a warning; 0 s: the request goes back at
# once), and tasks get SIGTERM that long before their time limit
# (--signal=B:TERM@N). Array tasks are --requeue-able; --requeue-before S
# asks SLURM for SIGUSR1 S seconds before the time limit instead, and the
# task then requeues itself so that it comes back.
#
# The broker listens on every interface of its node: without --curve it
# refuses to start unless --insecure is given, and then warns here.
#
# --dry-run prints the exact sbatch commands (one per line, shell-quoted) and
# what else would run, and changes nothing. `--help` lists every option.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  cat <<EOF
usage: scripts/start_slurm.sh [options]

where the workers run
  --partition NAME        SLURM partition (default: the cluster's default)
  --account NAME          SLURM account to charge
  --time LIMIT            time limit of each worker task, e.g. 08:00:00 (default 04:00:00)
  --gpus N                GPUs in total (default 1); the array has N / --gpus-per-task tasks
  --gpus-per-task K       GPUs per array task (default 1)
  --gpu-request KIND      how tasks ask for GPUs: gres (--gres=gpu:K, default) or
                          gpus-per-task (--gpus-per-task=K)
  --workers-per-gpu M     workers per GPU (default 1); with --cpu: workers per task
  --cpus-per-worker C     CPU cores per worker (default 4); a task asks for C x its workers
  --mem SIZE              memory per task (sbatch --mem, e.g. 32G; default: the cluster's)
  --cpu                   CPU workers, no GPU request (tests, CPU-only clusters)
  --tasks N               array size with --cpu (default 1)
  --sbatch-arg ARG        one more sbatch option for the worker array, e.g. --qos=high (repeatable)
  --job-name NAME         prefix of the job names (default sam2)

what they serve
  --model NAME            sam2.1_hiera_tiny (default), _small, _base_plus or _large
  --checkpoint PATH       checkpoint file (default: checkpoints/<official file>)
  --random-weights        TESTS ONLY: no checkpoint, meaningless masks
  --drain-grace-s S       on SIGTERM, seconds a worker may finish its request (default: the
                          cluster's KillWait less 2 s; a larger value is cut down to that, with a
                          warning; 0: hand the request back at once)
  --worker-arg ARG        one more option for python -m workers (repeatable)

the broker
  --broker WHERE          login (default: on this node, in the background), job (a CPU job)
                          or none (use the broker already running for --run-dir)
  --broker-host NAME      host name workers and clients use to reach it
                          (default: this node's for login, the job's node for job)
  --frontend-port P       client port (default 5555)
  --backend-port P        worker port (default 5556)
  --broker-time LIMIT     time limit of the broker job (default: --time)
  --broker-arg ARG        one more option for python -m broker (repeatable)
  --curve DIR             CurveZMQ: create or reuse the key directory DIR (broker keypair,
                          a worker keypair "slurm-workers", a client keypair for \$USER);
                          secrets are 0600, readable only by you
  --insecure              start the broker without --curve anyway: it listens on every interface
                          of its node with no authentication or encryption (refused otherwise)
  --run-dir DIR           shared directory for the address file, logs and job ids
                          (default: logs/slurm in this checkout)
  --wait-broker-s S       how long tasks and this script wait for the broker (default 600)

SLURM behaviour
  --no-requeue            do not mark worker tasks requeue-able (default: --requeue)
  --requeue-before S      SIGUSR1 S seconds before the time limit; the task requeues itself
                          (default 0: off; SLURM only honours it to within a minute)

other
  --python PATH           the project's Python on the shared filesystem (default .venv/bin/python)
  --no-wait               do not wait for the broker's address before returning
  --dry-run               print the sbatch commands and what else would run; change nothing
  --stop                  cancel the jobs recorded in --run-dir and stop its login-node broker
  -h, --help              this text
EOF
}

say() { printf '[slurm] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

partition="" account="" time_limit="04:00:00" gpus=1 gpus_per_task=1 gpu_request=gres
workers_per_gpu=1 cpus_per_worker=4 mem="" cpu=0 tasks="" job_name=sam2
model=sam2.1_hiera_tiny checkpoint="" random_weights=0 drain_grace_s="" insecure=0
broker=login broker_host="" frontend_port=5555 backend_port=5556 broker_time="" curve=""
run_dir="$root/logs/slurm" wait_broker_s=600 requeue=1 requeue_before=0
python="$root/.venv/bin/python" wait=1 dry_run=0 stop=0
sbatch_extra=() worker_extra=() broker_extra=()

need() { [ $# -ge 2 ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --partition) need "$@"; partition=$2; shift 2 ;;
    --account) need "$@"; account=$2; shift 2 ;;
    --time) need "$@"; time_limit=$2; shift 2 ;;
    --gpus) need "$@"; gpus=$2; shift 2 ;;
    --gpus-per-task) need "$@"; gpus_per_task=$2; shift 2 ;;
    --gpu-request) need "$@"; gpu_request=$2; shift 2 ;;
    --workers-per-gpu) need "$@"; workers_per_gpu=$2; shift 2 ;;
    --cpus-per-worker) need "$@"; cpus_per_worker=$2; shift 2 ;;
    --mem) need "$@"; mem=$2; shift 2 ;;
    --cpu) cpu=1; shift ;;
    --tasks) need "$@"; tasks=$2; shift 2 ;;
    --sbatch-arg) need "$@"; sbatch_extra+=("$2"); shift 2 ;;
    --job-name) need "$@"; job_name=$2; shift 2 ;;
    --model) need "$@"; model=$2; shift 2 ;;
    --checkpoint) need "$@"; checkpoint=$2; shift 2 ;;
    --random-weights) random_weights=1; shift ;;
    --drain-grace-s) need "$@"; drain_grace_s=$2; shift 2 ;;
    --worker-arg) need "$@"; worker_extra+=("$2"); shift 2 ;;
    --broker) need "$@"; broker=$2; shift 2 ;;
    --broker-host) need "$@"; broker_host=$2; shift 2 ;;
    --frontend-port) need "$@"; frontend_port=$2; shift 2 ;;
    --backend-port) need "$@"; backend_port=$2; shift 2 ;;
    --broker-time) need "$@"; broker_time=$2; shift 2 ;;
    --broker-arg) need "$@"; broker_extra+=("$2"); shift 2 ;;
    --curve) need "$@"; curve=$2; shift 2 ;;
    --insecure) insecure=1; shift ;;
    --run-dir) need "$@"; run_dir=$2; shift 2 ;;
    --wait-broker-s) need "$@"; wait_broker_s=$2; shift 2 ;;
    --requeue) requeue=1; shift ;;
    --no-requeue) requeue=0; shift ;;
    --requeue-before) need "$@"; requeue_before=$2; shift 2 ;;
    --python) need "$@"; python=$2; shift 2 ;;
    --no-wait) wait=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    --stop) stop=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
for pair in "gpus:$gpus" "gpus-per-task:$gpus_per_task" "workers-per-gpu:$workers_per_gpu" \
  "cpus-per-worker:$cpus_per_worker" "frontend-port:$frontend_port" "backend-port:$backend_port"; do
  is_count "${pair#*:}" || die "--${pair%%:*} must be a positive integer (got '${pair#*:}')"
done
[ -z "$drain_grace_s" ] || [[ "$drain_grace_s" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--drain-grace-s must be a number of seconds"
[[ "$wait_broker_s" =~ ^[0-9]+$ ]] || die "--wait-broker-s must be a whole number of seconds"
[[ "$requeue_before" =~ ^[0-9]+$ ]] || die "--requeue-before must be a whole number of seconds"
case "$broker" in login|job|none) ;; *) die "--broker must be login, job or none (got '$broker')" ;; esac
case "$gpu_request" in gres|gpus-per-task) ;; *) die "--gpu-request must be gres or gpus-per-task" ;; esac
[ "$frontend_port" != "$backend_port" ] || die "--frontend-port and --backend-port must differ"
run_dir=$(realpath -m "$run_dir")
[ $dry_run -eq 1 ] || mkdir -p "$run_dir"
address_file="$run_dir/broker.address"
jobs_file="$run_dir/jobs"
log_dir="$run_dir/logs"

# --- --stop ----------------------------------------------------------------------
if [ $stop -eq 1 ]; then
  if [ -s "$jobs_file" ]; then
    mapfile -t ids < "$jobs_file"
    say "scancel ${ids[*]}"
    [ $dry_run -eq 1 ] || scancel "${ids[@]}" || true
    [ $dry_run -eq 1 ] || rm -f "$jobs_file"
  fi
  if [ -s "$run_dir/broker.pid" ]; then
    pid=$(cat "$run_dir/broker.pid")
    say "stopping the login-node broker (process group $pid)"
    if [ $dry_run -eq 0 ]; then
      kill -TERM -- "-$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$run_dir/broker.pid"
    fi
  fi
  exit 0
fi

# --- array size and per-task resources --------------------------------------------
if [ $cpu -eq 1 ]; then
  tasks=${tasks:-1}
  is_count "$tasks" || die "--tasks must be a positive integer"
  workers_per_task=$workers_per_gpu
else
  [ -z "$tasks" ] || die "--tasks is for --cpu; with GPUs give --gpus (total) and --gpus-per-task"
  [ $((gpus % gpus_per_task)) -eq 0 ] || die "--gpus ($gpus) must be a multiple of --gpus-per-task ($gpus_per_task)"
  tasks=$((gpus / gpus_per_task))
  workers_per_task=$((gpus_per_task * workers_per_gpu))
fi
cpus_per_task=$((cpus_per_worker * workers_per_task))

[ -x "$python" ] || [ $dry_run -eq 1 ] || die "no Python at $python: run scripts/setup_env.sh on the shared filesystem first (or give --python)"
if [ $dry_run -eq 0 ]; then
  command -v sbatch >/dev/null 2>&1 || die "sbatch not found: run this on a SLURM login node"
fi

# --- the drain grace, inside SLURM's KillWait -------------------------------------------
DRAIN_MARGIN_S=2  # after the grace: hand back, DISCONNECT, the task's shutdown
kill_wait_s=$(timeout 10 scontrol show config 2>/dev/null | sed -n 's/^KillWait *= *\([0-9][0-9]*\) *sec.*/\1/p' | head -n 1 || true)
if [ -z "$kill_wait_s" ]; then
  kill_wait_s=30
  say "SLURM's KillWait unknown (scontrol show config did not answer): assuming its default, 30 s"
fi
fit_s=$((kill_wait_s > DRAIN_MARGIN_S ? kill_wait_s - DRAIN_MARGIN_S : 0))
if [ -z "$drain_grace_s" ]; then
  drain_grace_s=$fit_s
  say "drain grace ${drain_grace_s} s: SLURM sends SIGKILL ${kill_wait_s} s (KillWait) after SIGTERM; ${DRAIN_MARGIN_S} s are kept to hand back and DISCONNECT"
elif awk -v g="$drain_grace_s" -v f="$fit_s" 'BEGIN { exit !(g > f) }'; then
  say "WARNING: --drain-grace-s $drain_grace_s cannot fit: SLURM sends SIGKILL ${kill_wait_s} s (KillWait) after SIGTERM, and ${DRAIN_MARGIN_S} s are needed to hand back and DISCONNECT; using ${fit_s} s"
  drain_grace_s=$fit_s
fi
if awk -v g="$drain_grace_s" 'BEGIN { exit !(g == 0) }'; then
  say "no request can finish within KillWait (${kill_wait_s} s): on SIGTERM a worker hands its request back at once"
fi
term_before_s=$(awk -v g="$drain_grace_s" -v m="$DRAIN_MARGIN_S" 'BEGIN { n = int(g); if (n < g) n++; print n + m }')

# --- the broker's exposure ---------------------------------------------------------------
if [ "$broker" != none ] && [ -z "$curve" ]; then
  if [ $insecure -eq 0 ]; then
    die "the broker would listen on every interface of its node (ports $frontend_port and $backend_port) without CurveZMQ: anyone who reaches the node could send requests or register as a worker, and images travel in clear. Use --curve DIR (recommended), or --insecure to accept that"
  fi
  say "WARNING: --insecure: the broker listens on every interface of its node (ports $frontend_port and $backend_port) with no authentication and no encryption; use --curve DIR on a shared cluster"
fi

# --- CurveZMQ keys -------------------------------------------------------------------
curve_worker_args=()
if [ -n "$curve" ]; then
  curve=$(realpath -m "$curve")
  client_name=$(printf '%s' "${USER:-$(id -un)}" | tr -c 'A-Za-z0-9_.-' '_')
  if [ $dry_run -eq 0 ]; then
    "$python" "$root/scripts/curve_keys.py" "$curve" --workers slurm-workers --clients "$client_name" >&2
    chmod 700 "$curve"
    find "$curve" -name '*.key_secret' -exec chmod 600 {} +
  fi
  curve_worker_args=(--curve-key "$curve/workers/slurm-workers.key_secret" --curve-server-key "$curve/broker.key")
fi

# --- commands ----------------------------------------------------------------------------
common=()
[ -n "$partition" ] && common+=("--partition=$partition")
[ -n "$account" ] && common+=("--account=$account")

worker_args=(--model "$model" --drain-grace-s "$drain_grace_s")
[ -n "$checkpoint" ] && worker_args+=(--checkpoint "$(realpath -m "$checkpoint")")
[ $random_weights -eq 1 ] && worker_args+=(--random-weights)
worker_args+=("${curve_worker_args[@]}" "${worker_extra[@]}")

broker_cmd=(--python "$python" --address-file "$address_file" --log "$run_dir/broker.log"
  --frontend-port "$frontend_port" --backend-port "$backend_port")
[ -n "$broker_host" ] && broker_cmd+=(--host "$broker_host")
[ -n "$curve" ] && broker_cmd+=(--curve-dir "$curve")
[ -z "$curve" ] && broker_cmd+=(--insecure)
[ ${#broker_extra[@]} -gt 0 ] && broker_cmd+=(-- "${broker_extra[@]}")

broker_sbatch=(sbatch --parsable "${common[@]}" "--job-name=$job_name-broker" "--time=${broker_time:-$time_limit}"
  "--chdir=$root" "--output=$log_dir/broker-%j.log" "$root/scripts/slurm/broker.sbatch" "${broker_cmd[@]}")

workers_sbatch=(sbatch --parsable "${common[@]}" "--job-name=$job_name-workers" "--time=$time_limit"
  "--array=0-$((tasks - 1))" --ntasks=1 "--cpus-per-task=$cpus_per_task")
if [ $cpu -eq 0 ]; then
  if [ "$gpu_request" = gres ]; then workers_sbatch+=("--gres=gpu:$gpus_per_task")
  else workers_sbatch+=("--gpus-per-task=$gpus_per_task"); fi
fi
[ -n "$mem" ] && workers_sbatch+=("--mem=$mem")
[ $requeue -eq 1 ] && workers_sbatch+=(--requeue) || workers_sbatch+=(--no-requeue)
# one --signal per job: the requeue signal, or SIGTERM early enough for the drain before the time limit
if [ "$requeue_before" -gt 0 ]; then workers_sbatch+=("--signal=B:USR1@$requeue_before")
else workers_sbatch+=("--signal=B:TERM@$term_before_s"); fi
workers_sbatch+=(--open-mode=append "--chdir=$root" "--output=$log_dir/workers-%A_%a.log")
workers_sbatch+=("${sbatch_extra[@]}")
# the job id of a broker job, once known, goes here (see below)
dependency_at=${#workers_sbatch[@]}
script_args=("$root/scripts/slurm/workers.sbatch" --python "$python" --address-file "$address_file"
  --workers-per-gpu "$workers_per_gpu" --wait-broker-s "$wait_broker_s")
[ $cpu -eq 1 ] && script_args+=(--cpu)
script_args+=(-- "${worker_args[@]}")

quoted() { local out; printf -v out '%q ' "$@"; printf '%s\n' "${out% }"; }

if [ $dry_run -eq 1 ]; then
  case "$broker" in
    login) printf '# on this node: '; quoted setsid nohup bash "$root/scripts/slurm/broker.sbatch" "${broker_cmd[@]}" ;;
    job) quoted "${broker_sbatch[@]}"
         workers_sbatch+=("--dependency=after:BROKER_JOB_ID") ;;
    none) echo "# using the broker of $address_file" ;;
  esac
  quoted "${workers_sbatch[@]}" "${script_args[@]}"
  exit 0
fi

mkdir -p "$log_dir"
# --- the broker --------------------------------------------------------------------------
case "$broker" in
  login)
    if [ -s "$run_dir/broker.pid" ] && kill -0 "$(cat "$run_dir/broker.pid")" 2>/dev/null; then
      die "a broker for $run_dir is already running (pid $(cat "$run_dir/broker.pid")): use --broker none to add workers, or --stop"
    fi
    rm -f "$address_file"
    setsid nohup bash "$root/scripts/slurm/broker.sbatch" "${broker_cmd[@]}" \
      >> "$log_dir/broker-login.log" 2>&1 < /dev/null &
    echo $! > "$run_dir/broker.pid"
    say "broker starting on this node (pid $!, log $log_dir/broker-login.log)"
    ;;
  job)
    rm -f "$address_file"
    broker_job=$("${broker_sbatch[@]}")
    broker_job=${broker_job%%;*}
    echo "$broker_job" >> "$jobs_file"
    say "broker job $broker_job submitted"
    workers_sbatch=("${workers_sbatch[@]:0:$dependency_at}" "--dependency=after:$broker_job" "${workers_sbatch[@]:$dependency_at}")
    ;;
  none)
    [ -s "$address_file" ] || die "no broker address in $address_file: start one first (--broker login or job)"
    ;;
esac

# --- the workers -------------------------------------------------------------------------
array_job=$("${workers_sbatch[@]}" "${script_args[@]}")
array_job=${array_job%%;*}
echo "$array_job" >> "$jobs_file"
say "worker array $array_job submitted: $tasks task(s) x $workers_per_task worker(s), logs $log_dir/workers-${array_job}_N.log"

# --- where to connect ----------------------------------------------------------------------
if [ $wait -eq 0 ]; then
  say "not waiting: the address will be in $address_file once the broker is up"
  exit 0
fi
for _ in $(seq $((wait_broker_s * 10))); do
  [ -s "$address_file" ] && break
  if [ "$broker" = login ] && ! kill -0 "$(cat "$run_dir/broker.pid")" 2>/dev/null; then
    die "the broker stopped: see $log_dir/broker-login.log and $run_dir/broker.log"
  fi
  sleep 0.1
done
[ -s "$address_file" ] || die "no broker address after ${wait_broker_s}s in $address_file (broker job pending?)"
address=$(sed -n 's/^SAM2_BROKER_ADDRESS=//p' "$address_file" | tail -n 1)
host=$(sed -n 's/^SAM2_BROKER_HOST=//p' "$address_file" | tail -n 1)
echo "SAM2_BROKER_ADDRESS=$address"
cat >&2 <<EOF
[slurm] broker: clients $address, workers $(sed -n 's/^SAM2_BROKER_BACKEND=//p' "$address_file" | tail -n 1)
[slurm]   napari:     SAM2_BROKER_ADDRESS=$address napari
[slurm]   sam2-batch: sam2-batch --broker $address --model $model IMAGES --out OUT
[slurm]   workers:    squeue -j $array_job; more: $0 --broker none --run-dir $run_dir ...; fewer: scancel ${array_job}_N
[slurm]   from a laptop: ssh -N -L $frontend_port:$host:$frontend_port LOGIN-NODE, then tcp://127.0.0.1:$frontend_port
[slurm]   stop:       $0 --stop --run-dir $run_dir
EOF
if [ -n "$curve" ]; then
  echo "[slurm]   CurveZMQ: export SAM2_CURVE_CLIENT_KEY=$curve/clients/$client_name.key_secret SAM2_CURVE_SERVER_KEY=$curve/broker.key" >&2
fi
