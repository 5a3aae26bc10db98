#!/usr/bin/env bash
# launch/moesae-mpirun and slurm/moesae-multinode.sbatch:
#  1. --dry-run: the mpirun command for rank counts below, at and above the cores (oversubscription, binding, the
#     OMP/OpenBLAS thread split, the map-by PE for multi-threaded ranks), the root-in-container variables exactly
#     when root, the -x forwarding of MOESAE_*/OMP_*/OPENBLAS_* and of -x VAR, a hostfile (slots counted, btl
#     tcp,self,vader unless OMPI_MCA_btl is set), MPICH's flags (-n, -f, -bind-to core:T), --quiet, and the errors
#     (no mpirun, bad options, a hostfile in the wrong format);
#  2. real runs of bench/comm_check (built next to moesae): 3 ranks on this machine, 2 ranks from a hostfile
#     (localhost slots=4), the printed --dry-run command run by the shell, and a failing rank failing the launch;
#  3. the sbatch template: bash -n, srun --mpi=pmix, --gpus-per-node (never per task), the USR1/requeue lines;
#     then, when the SLURM programs are installed, the template on a throwaway local cluster
#     (scripts/slurm-local.sh): 1 node x 2 tasks running comm_check through MOESAE_CMD, and 1 task training a tiny
#     run with moesae train (record written; submitted again: skipped). MOESAE_TEST_NO_SLURM=1 skips that part.
# Run by ctest as `bash launch_mpirun.sh /path/to/build/bin/moesae`; exit 77 (skipped) without mpirun.
set -euo pipefail
moesae="$(realpath "$1")"
bin="$(dirname "$moesae")"
check="$bin/comm_check"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
launcher="$root/launch/moesae-mpirun"
template="$root/slurm/moesae-multinode.sbatch"
command -v mpirun >/dev/null || { echo "skipped: mpirun not found (scripts/setup-deps.sh installs openmpi-bin)"; exit 77; }
mpirun --version 2>&1 | grep -q 'Open MPI' || { echo "skipped: this test expects Open MPI's mpirun"; exit 77; }
[[ -x "$check" ]] || { echo "FAIL: $check not built (MOESAE_BUILD_BENCH=ON builds it)"; exit 1; }
[[ -x "$launcher" ]] || { echo "FAIL: $launcher is not executable"; exit 1; }
t_start=$SECONDS
tmp="$(mktemp -d)"
cluster="$tmp/slurm"
cleanup() {
  local rc=$?
  trap - EXIT
  if [[ -f "$cluster/slurm.conf" ]]; then
    if [[ $rc -ne 0 ]]; then
      for f in "$tmp"/mn-*.out "$cluster"/log/slurmctld.log "$cluster"/log/slurmd.log; do
        [[ -f "$f" ]] && { echo "---- tail of $f"; tail -n 30 "$f"; }
      done
    fi
    bash "$root/scripts/slurm-local.sh" stop "$cluster" > "$tmp/stop.log" 2>&1 || cat "$tmp/stop.log"
  fi
  cd /
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
cd "$tmp"
fail() { echo "FAIL: $*"; exit 1; }

# ---- 1. --dry-run -----------------------------------------------------------------------------------------------------
# (in a subshell without the thread, btl and root settings that ctest and scripts/test.sh export)
(
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS OMPI_MCA_btl OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
unset MOESAE_COMM_TIMEOUT MOESAE_DATA
# dry CORES ARGS...: the printed command, as if this machine had CORES cores
dry() {
  local cores="$1"; shift
  MOESAE_MPIRUN_CORES="$cores" "$launcher" --dry-run "$@" 2> dry.err > dry.out ||
    { cat dry.err; fail "--dry-run $* exited non-zero"; }
  [[ "$(wc -l < dry.out)" -eq 1 ]] || { cat dry.out; fail "--dry-run $* must print one line"; }
  cat dry.out
}
has() { [[ " $1 " == *" $2 "* ]] || fail "expected '$2' in: $1"; }
hasnt() { [[ " $1 " != *" $2 "* ]] || fail "unexpected '$2' in: $1"; }
root_flags() {  # root: both variables in front of mpirun; otherwise neither
  if [[ "$(id -u)" == 0 ]]; then has "$1" "OMPI_ALLOW_RUN_AS_ROOT=1"; has "$1" "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
  else hasnt "$1" "OMPI_ALLOW_RUN_AS_ROOT=1"; hasnt "$1" "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"; fi
}

# more ranks than cores: oversubscribed, unbound, one thread each
c="$(dry 2 -n 3 -- "$check" --arg)"
has "$c" "mpirun -np 3"; has "$c" "--oversubscribe"; has "$c" "--bind-to none"; root_flags "$c"
has "$c" "OMP_NUM_THREADS=1"; has "$c" "OPENBLAS_NUM_THREADS=1"
has "$c" "-x OMP_NUM_THREADS"; has "$c" "-x OPENBLAS_NUM_THREADS"
[[ "$c" == *" $check --arg" ]] || fail "the command must end with the program and its arguments: $c"
grep -q '^moesae-mpirun: 3 ranks.*oversubscribed' dry.err || { cat dry.err; fail "no summary on stderr"; }
# as many ranks as cores: bound to cores, no oversubscription; the default -n is the number of cores
c="$(dry 2 -n 2 "$check")"
has "$c" "-np 2"; hasnt "$c" "--oversubscribe"; has "$c" "--bind-to core"; root_flags "$c"
[[ "$(dry 2 "$check")" == "$c" ]] || fail "the default -n must be the number of cores"
# 16 cores, 4 ranks: 4 threads each, each rank bound to its own 4 cores
c="$(dry 16 -n 4 "$check")"
has "$c" "OMP_NUM_THREADS=4"; has "$c" "OPENBLAS_NUM_THREADS=4"; has "$c" "--map-by slot:PE=4"; has "$c" "--bind-to core"
c="$(dry 16 -n 5 "$check")"
has "$c" "OMP_NUM_THREADS=3"; has "$c" "--map-by slot:PE=3"
# thread counts already set are kept (not overridden, still forwarded)
c="$(OMP_NUM_THREADS=7 dry 16 -n 4 "$check")"
hasnt "$c" "OMP_NUM_THREADS=4"; hasnt "$c" "OMP_NUM_THREADS=7"; has "$c" "-x OMP_NUM_THREADS"
has "$c" "OPENBLAS_NUM_THREADS=4"
# --bind
has "$(dry 16 -n 4 --bind socket "$check")" "--bind-to socket"
c="$(dry 16 -n 4 --bind none "$check")"; has "$c" "--bind-to none"; hasnt "$c" "--map-by"
has "$(dry 2 -n 4 --bind core "$check")" "--bind-to core:overload-allowed"
# forwarding: MOESAE_* variables, -x NAME and -x NAME=VALUE; the wrapper's own settings are not forwarded
c="$(MOESAE_COMM_TIMEOUT=9 MOESAE_DATA=/data FOO=1 dry 2 -n 2 -x FOO --export BAR=2 "$check")"
for v in MOESAE_COMM_TIMEOUT MOESAE_DATA FOO BAR; do has "$c" "-x $v"; done
hasnt "$c" "-x MOESAE_MPIRUN_CORES"
# a hostfile: its slots are the default -n; TCP between hosts unless OMPI_MCA_btl says otherwise
printf '# test hosts\nlocalhost slots=2\n' > hosts2
c="$(dry 2 --hostfile hosts2 "$check")"
has "$c" "-np 2"; has "$c" "--hostfile hosts2"; has "$c" "--mca btl tcp,self,vader"; has "$c" "--bind-to core"
hasnt "$c" "--oversubscribe"; root_flags "$c"
c="$(dry 2 -n 3 --hostfile hosts2 "$check")"
has "$c" "-np 3"; has "$c" "--oversubscribe"; has "$c" "--bind-to none"
c="$(OMPI_MCA_btl=self,vader MOESAE_MPIRUN_CORES=2 "$launcher" -q --dry-run --hostfile hosts2 "$check")"
hasnt "$c" "--mca"
# two hosts of 8 cores, 4 slots each: 8 ranks, 4 per host, 2 threads each
printf 'nodeA slots=4\nnodeB slots=4\n' > hosts8
c="$(dry 8 --hostfile hosts8 "$check")"
has "$c" "-np 8"; has "$c" "OMP_NUM_THREADS=2"; has "$c" "--map-by slot:PE=2"; hasnt "$c" "--oversubscribe"
# MPICH (hydra): -n, -f, -bind-to core:T; no Open MPI flags, no -x, no root variables
c="$(dry 16 --flavor mpich -n 4 "$check")"
has "$c" "mpirun -n 4"; has "$c" "-bind-to core:4"; has "$c" "OMP_NUM_THREADS=4"
for w in -np --oversubscribe --bind-to -x OMPI_ALLOW_RUN_AS_ROOT=1; do hasnt "$c" "$w"; done
printf 'localhost:2\n' > hosts-mpich
has "$(dry 2 --flavor mpich --hostfile hosts-mpich "$check")" "-f hosts-mpich"
# --quiet prints nothing on stderr
MOESAE_MPIRUN_CORES=2 "$launcher" -q --dry-run -n 2 "$check" > /dev/null 2> quiet.err
[[ ! -s quiet.err ]] || { cat quiet.err; fail "--quiet printed on stderr"; }
# errors: one line, exit 2, nothing run
expect_error() {  # <message part> <args...>
  local want="$1" rc=0; shift
  "$launcher" "$@" > err.out 2>&1 || rc=$?
  [[ $rc -eq 2 ]] && grep -qF -- "$want" err.out || { cat err.out; fail "'$*': expected exit 2 and '$want' (rc $rc)"; }
}
expect_error "install openmpi-bin (scripts/setup-deps.sh)" --mpirun "$tmp/no-such-mpirun" -n 2 "$check"
expect_error "install openmpi-bin (scripts/setup-deps.sh)" --mpirun "$tmp/no-such-mpirun" --dry-run -n 2 "$check"
expect_error "-n must be a positive integer" -n 0 "$check"
expect_error "--bind must be none, core or socket" --bind numa "$check"
expect_error "no command given" -n 2
expect_error "unknown option '--frobnicate'" --frobnicate "$check"
expect_error "hostfile '$tmp/missing' not found" --hostfile "$tmp/missing" "$check"
expect_error "MPICH reads one 'host:N' per line" --flavor mpich --dry-run --hostfile hosts2 "$check"
expect_error "command 'no-such-program-xyz' not found" -n 2 -- no-such-program-xyz
echo "dry-run checks OK after $((SECONDS - t_start)) s"
)

# ---- 2. real runs ----------------------------------------------------------------------------------------------------
# run_check N OUT ARGS...: the wrapper runs comm_check at N ranks; its report and the printed command are checked
run_check() {
  local n="$1" out="$2"; shift 2
  timeout 60 "$launcher" "$@" > "$out" 2>&1 || { cat "$out"; fail "moesae-mpirun $* exited non-zero"; }
  grep -q "^comm_check: mpi, $n ranks: [0-9]* checks passed" "$out" || { cat "$out"; fail "moesae-mpirun $*"; }
  grep -q "^moesae-mpirun: .*mpirun -np $n " "$out" || { cat "$out"; fail "the command was not printed"; }
  grep -h 'checks passed' "$out"
}
run_check 3 run3.out -n 3 -- "$check"
printf 'localhost slots=4\n' > hosts4
env -u OMPI_MCA_btl "$launcher" -n 2 --hostfile hosts4 -q --dry-run -- "$check" | grep -q -- '--mca btl tcp,self,vader' ||
  fail "the hostfile run must use btl tcp,self,vader"
(unset OMPI_MCA_btl; run_check 2 run2h.out -n 2 --hostfile "$tmp/hosts4" -- "$check")
# the printed command is a working shell command line
cmdline="$("$launcher" -q --dry-run -n 2 -- "$check")"
(eval "$cmdline") > eval.out 2>&1 || { cat eval.out; fail "the --dry-run command failed: $cmdline"; }
grep -q "^comm_check: mpi, 2 ranks: [0-9]* checks passed" eval.out || { cat eval.out; fail "the --dry-run command"; }
# one failing rank fails the launch (mpirun's exit status is the wrapper's)
rc=0
timeout 60 "$launcher" -q -n 3 -- "$check" --inject-failure 2 > inj.out 2>&1 || rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] && grep -q 'FAILED 1 of' inj.out || { cat inj.out; fail "injected failure: rc $rc"; }
echo "real runs OK after $((SECONDS - t_start)) s"

# ---- 3. the sbatch template --------------------------------------------------------------------------------------
bash -n "$template" || fail "$template: syntax error"
grep -Eq '^#SBATCH --gpus-per-node=' "$template" || fail "the template must request --gpus-per-node"
grep -Eq '^#SBATCH --(gpus-per-task|gpu-bind)' "$template" && fail "the template must not bind one GPU per task"
for l in '--nodes=' '--ntasks-per-node=' '--cpus-per-task=' '--time=' '--requeue' '--signal=B:USR1@120'; do
  grep -q "^#SBATCH $l" "$template" || fail "the template lacks #SBATCH $l"
done
grep -q 'MOESAE_SRUN_MPI:-pmix' "$template" && grep -q 'srun --mpi=' "$template" && grep -q '^srun ' "$template" ||
  fail "the template must start the ranks with srun --mpi=pmix"
grep -q 'train.backend=cuda' "$template" || fail "the template must set train.backend=cuda for GPU runs"
grep -q 'OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK' "$template" || fail "OMP_NUM_THREADS must follow --cpus-per-task"
grep -q 'scontrol requeue' "$template" && grep -q 'trap on_usr1 USR1' "$template" || fail "no USR1 -> requeue handling"
echo "sbatch template: static checks OK"

slurm_ok=1
for c in munged slurmctld slurmd sbatch srun squeue scontrol sinfo; do
  command -v "$c" >/dev/null 2>&1 || [[ -x "/usr/sbin/$c" ]] || slurm_ok=0
done
if [[ "${MOESAE_TEST_NO_SLURM:-0}" == 1 || $slurm_ok == 0 ]]; then
  echo "sbatch template on a local SLURM cluster: skipped (SLURM not installed, or MOESAE_TEST_NO_SLURM=1)"
  echo "launch_mpirun: OK in $((SECONDS - t_start)) s"
  exit 0
fi
env_lines="$(bash "$root/scripts/slurm-local.sh" start "$cluster" --cpus 2 2> start.err)" ||
  { cat start.err; fail "the local SLURM cluster did not start"; }
eval "$env_lines"
[[ "${SLURM_CONF:-}" == "$cluster/slurm.conf" ]] || fail "slurm-local.sh start printed '$env_lines'"
# a CPU job: the template without its GPU line (what its header says to do), one node
sed '/^#SBATCH --gpus-per-node=/d' "$template" > mn.sbatch
# submit NAME SBATCH-ARGS...: runs the job to its end (polling, faster than sbatch --wait); prints its exit code
submit() {
  local name="$1" jid end; shift
  jid="$(sbatch --parsable --job-name="$name" --output="$tmp/mn-$name.out" --time=5 --nodes=1 "$@" mn.sbatch)" ||
    fail "sbatch $name"
  end=$((SECONDS + 60))
  while [[ -n "$(squeue -h -j "$jid" -o %i 2>/dev/null)" ]]; do
    [[ $SECONDS -lt $end ]] || { squeue; fail "job $name ($jid) still queued/running after 60 s"; }
    sleep 0.2
  done
  scontrol -o show job "$jid" | sed -E 's/.* ExitCode=([^ ]+).*/\1/'
}
ec="$(MOESAE_CMD="$check" submit comm --ntasks-per-node=2 --cpus-per-task=1)"
[[ "$ec" == 0:0 ]] || { cat mn-comm.out; fail "the comm_check job ended with $ec"; }
grep -Eq '^[0-9]+: comm_check: mpi, 2 ranks: [0-9]+ checks passed' mn-comm.out ||
  { cat mn-comm.out; fail "comm_check did not pass at 2 ranks under srun"; }
grep -q 'moesae-multinode: srun --mpi=pmix --kill-on-bad-exit=1' mn-comm.out || { cat mn-comm.out; fail "srun line"; }
grep -q 'moesae-multinode: finished' mn-comm.out || fail "the comm_check job did not finish"
grep -h 'checks passed' mn-comm.out
# moesae train through the template: 1 task, then 2 tasks (one data-parallel run)
"$moesae" --log-level warn synth --out "$tmp/acts.h5" --d 16 --features 64 --tokens 4000 --seed 0 > /dev/null
printf 'data: {path: %s, eval_tokens: 500}\nmodel: {arch: topk, dict_size: 32, k: 4}\ntrain: {steps: 20, batch_size: 64}\n' \
  "$tmp/acts.h5" > cfg.yaml
run_train() {
  MOESAE_BIN="$moesae" MOESAE_CONFIG="$tmp/cfg.yaml" MOESAE_OUT="$tmp/runs/r.h5" MOESAE_SETS="train.log_every=10" \
    submit "train$1" --ntasks-per-node=1 --cpus-per-task=1
}
ec="$(run_train 1)"
[[ "$ec" == 0:0 && -f runs/r.h5 && ! -e runs/r.h5.ckpt.h5 ]] || { cat mn-train1.out; fail "moesae train job: $ec"; }
grep -q 'moesae-multinode: finished' mn-train1.out || { cat mn-train1.out; fail "the training job did not finish"; }
"$moesae" --log-level warn eval runs/r.h5 --json > /dev/null || fail "the record of the training job is not valid"
ec="$(run_train 2)"
[[ "$ec" == 0:0 ]] && grep -q 'already has its record' mn-train2.out || { cat mn-train2.out; fail "resubmission: $ec"; }
# 2 tasks: one data-parallel run (srun --mpi=pmix sets only PMIX_RANK; moesae must see a 2-rank job, not 2 runs)
ec="$(MOESAE_BIN="$moesae" MOESAE_CONFIG="$tmp/cfg.yaml" MOESAE_OUT="$tmp/runs/r2.h5" MOESAE_SETS="train.log_every=10" \
  submit train2r --ntasks-per-node=2 --cpus-per-task=1)"
[[ "$ec" == 0:0 && -f runs/r2.h5 ]] || { cat mn-train2r.out; fail "2-task moesae train job: $ec"; }
grep -q 'data-parallel over 2 ranks' mn-train2r.out || { cat mn-train2r.out; fail "2 tasks did not train data-parallel"; }
[[ "$(grep -c 'wrote .*r2.h5' mn-train2r.out)" == 1 ]] || { cat mn-train2r.out; fail "2 tasks: not one record write"; }
# the time-limit warning (USR1 to the batch script): the run checkpoints and the job requeues itself
printf 'data: {path: %s, eval_tokens: 500}\nmodel: {arch: topk, dict_size: 32, k: 4}\ntrain: {steps: 5000000, batch_size: 64, log_every: 1000000}\n' \
  "$tmp/acts.h5" > long.yaml
jid="$(MOESAE_BIN="$moesae" MOESAE_CONFIG="$tmp/long.yaml" MOESAE_OUT="$tmp/runs/long.h5" sbatch --parsable \
       --job-name=long --output="$tmp/mn-long.out" --time=5 --nodes=1 --ntasks-per-node=1 --cpus-per-task=1 mn.sbatch)"
end=$((SECONDS + 30))
until grep -sq '^\[.*\] training ' mn-long.out; do   # moesae handles SIGTERM from its "training ..." line on
  [[ $SECONDS -lt $end ]] || { cat mn-long.out; fail "the long run did not start training"; }
  sleep 0.1
done
scancel --batch --signal=USR1 "$jid"
end=$((SECONDS + 30))
until grep -sq 'requeueing job' mn-long.out; do
  [[ $SECONDS -lt $end ]] || { cat mn-long.out; fail "USR1 did not make the job requeue itself"; }
  sleep 0.1
done
scancel "$jid"
grep -q 'time limit near' mn-long.out && grep -q 'stopped at step [0-9]* (signal); checkpoint written' mn-long.out &&
  [[ -f runs/long.h5.ckpt.h5 && ! -e runs/long.h5 ]] || { cat mn-long.out; ls runs; fail "USR1: no checkpoint"; }
echo "sbatch template on a local SLURM cluster OK"
echo "launch_mpirun: OK in $((SECONDS - t_start)) s"
