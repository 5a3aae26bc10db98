#!/usr/bin/env bash
# A real SLURM cluster (scripts/slurm-local.sh: munged, slurmctld, slurmd on localhost, under this test's temporary
# directory) runs slurm/moesae-array.sbatch, filled by `moesae submit` (1) or by placeholder substitution (2):
#  1. `moesae submit` of two runs as a job array: both tasks complete with valid records; the same script submitted
#     again skips both; `moesae submit` again has nothing left to submit;
#  2. two longer runs: once both have a checkpoint, one task is cancelled (scancel) and the other's training process
#     is killed with SIGKILL; the array is submitted again and both runs resume from their checkpoints. Meanwhile
#     the pre-time-limit signal (USR1 to the batch script) is sent to one task: it checkpoints and requeues itself.
#     Every record ends complete and valid, no checkpoint or temporary file is left, and the first records are
#     untouched.
# Skipped (77) when the SLURM or munge programs are not installed; a cluster that does not come up is a failure.
# The daemons are always stopped on exit.
for c in munged slurmctld slurmd sbatch srun squeue scancel scontrol sinfo; do
  if ! command -v "$c" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$c" ]; then
    echo "skipped: '$c' is not installed (scripts/setup-deps.sh installs slurmctld slurmd slurm-client munge)"
    exit 77
  fi
done
source "$(dirname "$0")/common.bash"
t_start=$SECONDS
cluster="$tmp/slurm"
dump_logs() {
  local f
  for f in "$tmp"/logs/*.out; do [ -f "$f" ] && { echo "---- $f"; tail -n 40 "$f"; }; done
  for f in "$cluster"/log/slurmctld.log "$cluster"/log/slurmd.log; do
    [ -f "$f" ] && { echo "---- tail of $f"; tail -n 30 "$f"; }
  done
  [ -d "$tmp/out" ] && { echo "---- files"; find "$tmp/out" | sort; }
  [ -f "$cluster/slurm.conf" ] && { echo "---- squeue"; SLURM_CONF="$cluster/slurm.conf" squeue 2>&1; }
  return 0
}
cleanup() {
  local rc=$?
  trap - EXIT
  [ $rc -ne 0 ] && dump_logs
  bash "$root/scripts/slurm-local.sh" stop "$cluster" > "$tmp/stop.log" 2>&1 || cat "$tmp/stop.log"
  cd /
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# ---- the cluster (2 CPUs advertised whatever the machine has: the two tasks of each array must run together) -----
env_lines="$(bash "$root/scripts/slurm-local.sh" start "$cluster" --cpus 2 2> start.err)" ||
  { cat start.err; fail "the local SLURM cluster did not start (daemon logs above)"; }
eval "$env_lines"
[ "${SLURM_CONF:-}" = "$cluster/slurm.conf" ] || fail "slurm-local.sh start printed '$env_lines'"
sinfo -h -o '%P %T' | grep -q '^debug\* idle' || { sinfo; fail "partition debug is not idle"; }
bash "$root/scripts/slurm-local.sh" start "$cluster" > again.out 2>&1 || { cat again.out; fail "second start"; }
grep -q 'already running' again.out || { cat again.out; fail "a second start must see the running cluster"; }
echo "cluster up after $((SECONDS - t_start)) s"

# ---- the grid and the template ----------------------------------------------------------------------------------
cat > exp.yaml <<'YAML'
name: tiny
out: out/tiny
synthetic: {d: 16, features: 64, groups: 4, active: 3, tokens: 8000, seed: 2}
base:
  data: {eval_tokens: 1000}
  train: {steps: 50, batch_size: 256, log_every: 25, checkpoint_every: 10}
runs:
  - {name: a, model: {arch: topk, dict_size: 64, k: 4}}
  - {name: b, model: {arch: scale, dict_size: 64, experts: 4, active_experts: 2, k: 4}}
  - {name: long1, model: {arch: topk, dict_size: 256, k: 8},
     train: {steps: 20000, checkpoint_every: 300, log_every: 5000}}
  - {name: long2, model: {arch: topk, dict_size: 256, k: 8},
     train: {steps: 20000, checkpoint_every: 300, log_every: 5000}}
YAML
mkdir logs
out="$tmp/out/tiny"
# fill RUNS_FILE ARRAY OUTPUT: the substitution `moesae submit` performs
fill() {
  sed -e "s|@JOB_NAME@|mtest|g" -e "s|@ARRAY@|$2|g" -e "s|@LOG_DIR@|$tmp/logs|g" -e "s|@CPUS@|1|g" \
      -e "s|@TIME@|10|g" -e "s|@WORKDIR@|$tmp|g" -e "s|@MOESAE@|$moesae|g" -e "s|@GRID@|$tmp/exp.yaml|g" \
      -e "s|@RUNS_FILE@|$1|g" -e "s|@OUT_DIR@|$out|g" "$root/slurm/moesae-array.sbatch" > "$3"
  if grep -nE '@[A-Z_]+@' "$3"; then fail "placeholders left in the filled template"; fi
}
# wait_gone JOB SECONDS: until no task of the job is pending, running or completing
wait_gone() {
  local end=$((SECONDS + $2))
  while [ -n "$(squeue -h -j "$1" -o %i 2>/dev/null)" ]; do
    [ $SECONDS -lt $end ] || { squeue; fail "job $1 still queued/running after $2 s"; }
    sleep 0.2
  done
}
# states JOB: "TASK STATE EXITCODE" per array task, sorted by task
states() {
  scontrol -o show job "$1" |
    sed -E 's/.*ArrayTaskId=([^ ]+).* JobState=([^ ]+).* ExitCode=([^ ]+).*/\1 \2 \3/' | sort -n
}
# valid_record NAME STEPS: moesae eval --json works and the record's metrics end at the last step
valid_record() {
  "$moesae" --log-level warn eval "$out/$1.h5" --json > "eval-$1.json" || fail "moesae eval $1.h5"
  "$py" - "$out/$1.h5" "$2" "eval-$1.json" <<'PY' || fail "record $1 is not valid"
import h5py, json, sys
path, steps, ev = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3]))
assert ev["mse"] >= 0 and ev["l0"] > 0, ev
with h5py.File(path, "r") as f:
    assert "weights" in f and len(f["weights"]) > 0, list(f)
    s = f["metrics/step"][()]
    assert s[-1] == steps and all(s[1:] > s[:-1]), s
    assert abs(f["final"].attrs["mse"] - ev["mse"]) <= 1e-6 * max(1.0, ev["mse"]), (dict(f["final"].attrs), ev)
PY
}
# pid of the training process of run $1 (the srun task exec's moesae with exactly these arguments)
train_pid() {
  local p argv
  for p in /proc/[0-9]*; do
    mapfile -d '' -t argv 2>/dev/null < "$p/cmdline" || continue
    [ "${argv[*]:-}" = "$moesae run $tmp/exp.yaml --only $1" ] && { echo "${p#/proc/}"; return 0; }
  done
  return 1
}

# ---- 1. `moesae submit`: a two-run array, then the same array again ----------------------------------------------
"$moesae" --log-level warn submit exp.yaml --only a --only b --max-running 2 --cpus 1 --time 10 --job-name mtest \
  --log-dir "$tmp/logs" > submit1.out || { cat submit1.out; fail "moesae submit"; }
j1="$(sed -n 's/^submitted job \([0-9][0-9]*\): 2 runs of exp.yaml .*/\1/p' submit1.out)"
[ -n "$j1" ] || { cat submit1.out; fail "moesae submit printed no job id"; }
[ "$(cat "$out/slurm/tiny-runs.txt")" = "$(printf 'a\nb')" ] || fail "the runs file lists the wrong runs"
if grep -nE '@[A-Z_]+@' "$out/slurm/tiny.sbatch"; then fail "placeholders left in the submitted script"; fi
wait_gone "$j1" 60
all_done="$(printf '0 COMPLETED 0:0\n1 COMPLETED 0:0')"
[ "$(states "$j1")" = "$all_done" ] || { states "$j1"; fail "array 1 did not complete"; }
valid_record a 50
valid_record b 50
grep -q "wrote out/tiny/a.h5" "logs/mtest-${j1}_0.out" || fail "no 'wrote' line in the log of task 0"
grep -q "run 'b' finished" "logs/mtest-${j1}_1.out" || fail "no 'finished' line in the log of task 1"
sums="$(md5sum "$out/a.h5" "$out/b.h5")"
j1b="$(sbatch --parsable "$out/slurm/tiny.sbatch")"   # the same script again
wait_gone "$j1b" 60
[ "$(states "$j1b")" = "$all_done" ] || { states "$j1b"; fail "array 1 again"; }
for i in 0 1; do
  grep -q 'finished earlier' "logs/mtest-${j1b}_$i.out" || fail "task $i of the resubmission trained"
done
[ "$(md5sum "$out/a.h5" "$out/b.h5")" = "$sums" ] || fail "the resubmission changed a record"
"$moesae" --log-level warn submit exp.yaml --only a --only b > submit2.out || fail "moesae submit (nothing left)"
grep -q '^nothing to submit' submit2.out || { cat submit2.out; fail "moesae submit must find a and b finished"; }
echo "moesae submit: array of 2 runs + resubmission OK after $((SECONDS - t_start)) s"

# ---- 2. scancel one task, kill -9 the other's training process ---------------------------------------------------
printf '%s\n' long1 long2 > runs2.txt
fill "$tmp/runs2.txt" 0-1%2 job2.sbatch
j2="$(sbatch --parsable job2.sbatch)"
end=$((SECONDS + 60))
until [ -f "$out/long1.h5.ckpt.h5" ] && [ -f "$out/long2.h5.ckpt.h5" ]; do
  [ $SECONDS -lt $end ] || fail "no checkpoints of long1/long2 after 60 s"
  sleep 0.1
done
pid2="$(train_pid long2)" || fail "no training process of long2 found"
kill -KILL "$pid2"
scancel "${j2}_0"
wait_gone "$j2" 60
st="$(states "$j2")"
echo "$st" | grep -q '^0 CANCELLED' || { echo "$st"; fail "task 0 should be CANCELLED"; }
echo "$st" | grep -Eq '^1 FAILED [1-9]' || { echo "$st"; fail "task 1 should have FAILED"; }
for r in long1 long2; do
  [ -f "$out/$r.h5.ckpt.h5" ] && [ ! -e "$out/$r.h5" ] ||
    { ls -l "$out"; fail "$r: expected a checkpoint and no record"; }
done
grep -q 'stopped at step' "logs/mtest-${j2}_0.out" ||
  { cat "logs/mtest-${j2}_0.out"; fail "the cancelled task did not checkpoint on SIGTERM"; }
echo "scancel + kill -9 OK after $((SECONDS - t_start)) s"

# ---- 3. resubmit: both resume; task 0 gets the pre-time-limit USR1, checkpoints and requeues itself ----------------
# what a SIGKILL in the middle of writing a checkpoint or a record leaves: the tasks must delete these
echo partial > "$out/long2.h5.ckpt.h5.tmp.999999"
echo partial > "$out/long1.h5.tmp.999998"
j3="$(sbatch --parsable job2.sbatch)"
log0="logs/mtest-${j3}_0.out"
end=$((SECONDS + 60))
# (moesae installs its SIGTERM handler right after the "training ..." line that follows "resumed from")
until grep -s -A1 "resumed from '.*long1.h5.ckpt.h5'" "$log0" | grep -q '^\[.*\] training '; do
  [ $SECONDS -lt $end ] || fail "long1 did not resume"
  sleep 0.05
done
scancel --batch --signal=USR1 "${j3}_0"
wait_gone "$j3" 90
[ "$(states "$j3")" = "$all_done" ] || { states "$j3"; fail "array 3 did not complete"; }
grep -q 'time limit near' "$log0" || fail "task 0 did not see USR1"
grep -q 'requeueing job' "$log0" || fail "task 0 did not requeue itself (did long1 finish before USR1?)"
grep -q 'stopped at step [0-9]* (signal); checkpoint written' "$log0" || fail "USR1 did not make long1 checkpoint"
grep -q 'attempt 2' "$log0" || fail "task 0 did not run a second time"
[ "$(grep -c "resumed from" "$log0")" -ge 2 ] || fail "the requeued task 0 did not resume"
grep -q "resumed from '.*long2.h5.ckpt.h5'" "logs/mtest-${j3}_1.out" || fail "long2 did not resume after kill -9"
grep -q "removing stale temporary file .*long1.h5.tmp.999998" "$log0" || fail "task 0 left a stale temporary file"
grep -q "removing stale temporary file .*long2.h5.ckpt.h5.tmp.999999" "logs/mtest-${j3}_1.out" ||
  fail "task 1 left a stale temporary file"
valid_record long1 20000
valid_record long2 20000
# long1 (stopped by scancel, then by USR1) and long2 (SIGKILLed) have the same configuration, and resuming is exact:
# their weights must be equal bit for bit
"$py" - "$out/long1.h5" "$out/long2.h5" <<'PY' || fail "long1 and long2 differ: a resume lost or corrupted state"
import h5py, sys
with h5py.File(sys.argv[1], "r") as a, h5py.File(sys.argv[2], "r") as b:
    assert sorted(a["weights"]) == sorted(b["weights"])
    for k in a["weights"]:
        assert a["weights"][k][()].tobytes() == b["weights"][k][()].tobytes(), f"/weights/{k} differs"
PY
[ "$(md5sum "$out/a.h5" "$out/b.h5")" = "$sums" ] || fail "records a/b changed"
left="$(cd "$out" && ls | grep -E '\.h5$' | sort | tr '\n' ' ')"   # (lock files or a logs/ folder may be there too)
[ "$left" = "a.h5 b.h5 data.h5 long1.h5 long2.h5 " ] || { ls -la "$out"; fail "unexpected .h5 files in $out: $left"; }
[ -z "$(find "$tmp" -name '*.tmp*' -o -name '*.ckpt.h5*')" ] ||
  { find "$tmp" -name '*.tmp*' -o -name '*.ckpt.h5*'; fail "temporary files or checkpoints left"; }
"$py" - "$out"/*.h5 <<'PY' || fail "an HDF5 file in $out does not open"
import h5py, sys
for path in sys.argv[1:]:
    with h5py.File(path, "r") as f:
        assert len(f) > 0, path
PY
echo "resume after scancel/kill -9 and USR1 requeue OK"

# ---- stop: no daemon of this cluster may survive ------------------------------------------------------------------
pids="$(cat "$cluster/run/slurmctld.pid" "$cluster/run/slurmd.pid" "$cluster/munge/munged.pid")"
bash "$root/scripts/slurm-local.sh" stop "$cluster" > stop.out 2>&1 || { cat stop.out; fail "stop"; }
for p in $pids; do
  if [ -d "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]; then
    fail "daemon $p survived stop"
  fi
done
bash "$root/scripts/slurm-local.sh" status "$cluster" > status.out 2>&1 && fail "status after stop must fail"
echo "slurm array OK in $((SECONDS - t_start)) s"
