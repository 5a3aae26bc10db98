# Sourced by the tests/cli scripts that train under mpirun (named .bash so that ctest's *.sh glob does not run it).
# Expects $moesae (the CLI). Sets the mpirun environment (mpi_env.bash: Open MPI as root, more ranks than cores,
# shared memory), one thread per rank, a dead peer reported within 20 s; makes a temporary directory $tmp the working
# directory (removed on exit, with every process started from it); and defines:
#   fail MSG / show FILE
#   gtest_at_ranks BIN NAME N...        the MPI GoogleTest binary BIN (tests/mpi_gtest.h) at each rank count N; its
#                                       verdict line "NAME: N ranks: all tests passed on every rank" is required
#   train N LOG [ARGS...]               `moesae train $tmp/cfg.yaml ARGS` at N ranks into LOG; mpirun's status
#   two_run_grid NAME [LINE...]         grid.yaml: a TopK and a Scale run (20 steps on $tmp/acts.h5), out $tmp/NAME,
#                                       LINEs added to its base (e.g. "parallel: {expert_parallel: 1}")
#   kill_rank LABEL WATCHDOG [OPTS...]  kill -9 of rank 1 of a long `moesae train $tmp/cfg.yaml` at 3 ranks
#                                       (mpirun options OPTS); mpirun must exit non-zero within 40 s with no process
#                                       left; WATCHDOG=1: the collective timeout must be what ended it
source "$(dirname "${BASH_SOURCE[0]}")/mpi_env.bash"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MOESAE_COMM_TIMEOUT=20
t_start=$SECONDS
tmp="$(mktemp -d)"
bg_pid=""
cleanup() {
  local rc=$?
  trap - EXIT
  if [[ -n "$bg_pid" ]] && kill -0 "$bg_pid" 2>/dev/null; then kill -9 "$bg_pid" 2>/dev/null || true; fi
  for p in $(pgrep -f "$tmp/" 2>/dev/null || true); do kill -9 "$p" 2>/dev/null || true; done  # ours only
  cd /
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
cd "$tmp"
fail() { echo "FAIL: $*"; exit 1; }
show() { echo "---- $1"; tail -n 40 "$1"; }

train() {  # <ranks> <log> <args...>: moesae train under mpirun; returns mpirun's status
  local n="$1" log="$2"; shift 2
  timeout 60 mpirun -np "$n" "$moesae" train "$tmp/cfg.yaml" "$@" > "$log" 2>&1
}

two_run_grid() {  # <name> [base line...]: grid.yaml with a TopK and a Scale run of 20 steps on $tmp/acts.h5
  local name="$1"; shift
  {
    printf 'name: %s\nout: %s\nbase:\n' "$name" "$tmp/$name"
    printf '  data: {path: %s, eval_tokens: 1000}\n  model: {k: 4}\n' "$tmp/acts.h5"
    printf '  train: {steps: 20, batch_size: 96, lr: 1e-3, log_every: 10}\n'
    local line
    for line in "$@"; do printf '  %s\n' "$line"; done
    printf 'runs:\n  - name: topk\n    model: {arch: topk, dict_size: 64}\n'
    printf '  - name: scale\n    model: {arch: scale, dict_size: 256, experts: 8, active_experts: 2, feature_scaling: mean}\n'
  } > grid.yaml
}

gtest_at_ranks() {  # <binary> <verdict name> <ranks...>
  local bin="$1" name="$2" n t0 rc; shift 2
  for n in "$@"; do
    t0=$SECONDS
    rc=0
    timeout 120 mpirun -np "$n" "$bin" > "t$n.log" 2>&1 || rc=$?
    [[ $rc -eq 0 ]] || { show "t$n.log"; fail "$(basename "$bin") at $n ranks: rc $rc"; }
    grep -q "^$name: $n ranks: all tests passed on every rank" "t$n.log" || { show "t$n.log"; fail "no verdict at $n"; }
    echo "$(basename "$bin") at $n ranks: all tests passed on every rank ($((SECONDS - t0))s)"
  done
}

# (a) Open MPI's default: mpirun kills the job when a rank dies. (b) With orte_abort_on_non_zero_status 0 (like srun
# without --kill-on-bad-exit) only the collective watchdog can end the job: the others print the timeout error.
kill_rank() {  # <label> <watchdog: 0|1> [mpirun options...]
  local label="$1" watchdog="$2"; shift 2
  local log="$tmp/k$watchdog.log" t0=$SECONDS victim="" r rc=0 left how
  timeout 90 mpirun "$@" -np 3 "$moesae" train "$tmp/cfg.yaml" -o "$tmp/k$watchdog.h5" --set train.steps=10000000 \
    --set train.log_every=5 > "$log" 2>&1 &
  bg_pid=$!
  for _ in $(seq 1 300); do  # until rank 0 logs training progress (<= 30 s)
    grep -q 'step [0-9]*/10000000' "$log" && break
    kill -0 "$bg_pid" 2>/dev/null || { show "$log"; fail "$label: the long run ended before training"; }
    sleep 0.1
  done
  grep -q 'step [0-9]*/10000000' "$log" || { show "$log"; fail "$label: the long run never logged a step"; }
  for p in $(pgrep -f "$moesae train $tmp/cfg.yaml" || true); do  # the ranks (mpirun has no OMPI_COMM_WORLD_RANK)
    r="$(tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')"
    [[ "$r" == 1 ]] && victim="$p"
  done
  [[ -n "$victim" ]] || { ps -ef | grep -v grep | grep "$tmp" || true; fail "$label: rank 1's process not found"; }
  local t_kill=$SECONDS
  kill -9 "$victim"
  for _ in $(seq 1 400); do kill -0 "$bg_pid" 2>/dev/null || break; sleep 0.1; done  # <= 40 s
  if kill -0 "$bg_pid" 2>/dev/null; then show "$log"; fail "$label: mpirun still running 40 s after rank 1 was killed"; fi
  wait "$bg_pid" || rc=$?
  bg_pid=""
  [[ $rc -ne 0 && $rc -ne 124 ]] || { show "$log"; fail "$label: mpirun exited $rc after rank 1 was killed"; }
  sleep 0.5
  left="$(pgrep -f "$moesae train $tmp/cfg.yaml" || true)"
  [[ -z "$left" ]] || { ps -fp $left || true; fail "$label: moesae processes left after the kill: $left"; }
  local re='error: rank [02]: collective .* did not complete within 20 s \(a rank died or hangs\)'
  how="killed by mpirun"
  grep -Eq "$re" "$log" && how="$(grep -Eo "$re" "$log" | head -1)"
  if [[ $watchdog == 1 && "$how" == "killed by mpirun" ]]; then show "$log"; fail "$label: no collective timeout"; fi
  echo "$label: mpirun exited rc $rc $((SECONDS - t_kill))s after the kill ($how); no process left ($((SECONDS - t0))s)"
}
