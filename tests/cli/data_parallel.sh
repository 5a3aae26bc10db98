#!/usr/bin/env bash
# Data parallelism under mpirun (src/parallel/data_parallel.h, `moesae train` with more than one rank):
#  1. tests/test_data_parallel (built into <build>/tests) at 2, 3 and 4 ranks: training parity of TopK, Switch,
#     Scale and Gated with a 1-process reference, the data cursor, the geometric-median init, a stop request on one
#     rank; rank 0's all-reduced verdict; and a failure planted on rank 1 (MOESAE_DP_TEST_FAIL_RANK) failing them all;
#  2. `mpirun -np 3 moesae train` on synthetic data writes a valid record (rank 0); the Scale SAE here is made
#     data-parallel with parallel.expert_parallel: 1 (expert parallelism, its default, is tests/cli/expert_parallel.sh);
#  3. --stop-after at 3 ranks leaves a checkpoint, resuming at 3 ranks finishes with the straight run's weights bit
#     for bit; resuming a 3-rank checkpoint at 2 ranks warns ("written by 3 rank(s)") and finishes;
#  4. a batch size that does not split over the ranks: one clear error, mpirun exits non-zero;
#  5. `mpirun -np 2 moesae run` of a 2-run experiment: both runs trained data-parallel one after the other, the
#     comparison table printed once (rank 0); run again, both are skipped;
#  6. kill -9 of one non-zero rank mid-training: mpirun exits non-zero within 40 s, no moesae process is left; once
#     with Open MPI killing the job, once with only the collective watchdog (MOESAE_COMM_TIMEOUT=20) to end it.
# Run by ctest as `bash data_parallel.sh /path/to/build/bin/moesae`; exit 77 (skipped) without mpirun.
set -euo pipefail
moesae="$(realpath "$1")"
build="$(dirname "$(dirname "$moesae")")"
testbin="$build/tests/test_data_parallel"
command -v mpirun >/dev/null || { echo "skipped: mpirun not found"; exit 77; }
[[ -x "$testbin" ]] || { echo "FAIL: $testbin not built"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/mpi_job.bash"  # $tmp, fail, show, gtest_at_ranks, kill_rank
unset MOESAE_DP_TEST_FAIL_RANK

# ---- 1. the GoogleTest binary at 2, 3, 4 ranks -------------------------------------------------------------------------
gtest_at_ranks "$testbin" data_parallel 2 3 4
rc=0
MOESAE_DP_TEST_FAIL_RANK=1 timeout 60 mpirun -np 3 "$testbin" --gtest_filter='Verdict.*' > inj.log 2>&1 || rc=$?
if [[ $rc -eq 0 || $rc -eq 124 ]] || ! grep -q '^data_parallel: 3 ranks: FAILED on rank(s) 1$' inj.log; then
  show inj.log; fail "a failure planted on rank 1 was not every rank's (rc $rc)"
fi
grep -q '^failure injected on rank 1' inj.log && grep -q '^\[rank 1\] FAILED Verdict.InjectedFailure' inj.log ||
  { show inj.log; fail "rank 1's failure was not printed"; }
echo "failure planted on rank 1: reported by rank 0, mpirun rc $rc"

# ---- 2. moesae train at 3 ranks ----------------------------------------------------------------------------------------
"$moesae" --log-level warn synth -o acts.h5 --d 16 --features 128 --tokens 20000 --seed 3
cat > cfg.yaml <<YAML
data: {path: $tmp/acts.h5, eval_tokens: 1000, shuffle_buffer: 2000, chunk_rows: 500}
model: {arch: scale, dict_size: 128, experts: 8, active_experts: 2, k: 4, feature_scaling: mean}
train: {steps: 60, batch_size: 96, log_every: 10, lr: 0.001}
parallel: {expert_parallel: 1}  # plain data parallelism (a Scale SAE is expert-parallel by default)
YAML
train 3 r.log -o r.h5 || { show r.log; fail "moesae train at 3 ranks"; }
grep -q 'data-parallel over 3 ranks (32 tokens each)' r.log || { show r.log; fail "not data-parallel"; }
[[ "$(grep -c 'wrote r.h5' r.log)" == 1 ]] || { show r.log; fail "rank 0 (alone) must write the record"; }
[[ -f r.h5 && ! -e r.h5.ckpt.h5 ]] || { ls; fail "no record, or a checkpoint left"; }
[[ "$(grep -c 'step 60/60' r.log)" == 1 ]] || { show r.log; fail "one progress log (rank 0's) expected"; }
have_py=0
/usr/bin/python3 -c 'import h5py, numpy' 2>/dev/null && have_py=1
if [[ $have_py == 1 ]]; then
  /usr/bin/python3 - <<'PY' || fail "r.h5 is not a valid record"
import h5py
with h5py.File("r.h5", "r") as f:
    fmt = f.attrs["format"]
    assert (fmt.decode() if isinstance(fmt, bytes) else fmt) == "moesae-run-record", fmt
    steps = list(f["metrics/step"][()])
    assert steps == [10, 20, 30, 40, 50, 60], steps
    assert {"W_dec", "b_pre", "omega"} <= set(f["weights"]), list(f["weights"])
    assert f["weights/W_dec"].shape == (128, 16), f["weights/W_dec"].shape
    assert f["final"].attrs["steps"] == 60 and 0 < f["final"].attrs["mse"] < 10, dict(f["final"].attrs)
PY
else
  "$moesae" eval r.h5 --json > r.json 2> r.err || { cat r.err; fail "moesae eval cannot read r.h5"; }
  grep -q '"mse"' r.json || { cat r.json; fail "moesae eval printed no mse"; }
fi
echo "moesae train at 3 ranks: record written ($((SECONDS - t_start))s so far)"

# ---- 3. stop and resume at 3 ranks; resume a 3-rank checkpoint at 2 ranks -----------------------------------------------
train 3 s1.log -o s.h5 --stop-after 30 || { show s1.log; fail "--stop-after 30 at 3 ranks must exit 0"; }
grep -q 'stopped at step 30' s1.log || { show s1.log; fail "no stop at step 30"; }
[[ -f s.h5.ckpt.h5 && ! -e s.h5 ]] || { ls; fail "--stop-after must leave a checkpoint and no record"; }
train 3 s2.log -o s.h5 || { show s2.log; fail "resume at 3 ranks"; }
grep -q "resumed from 's.h5.ckpt.h5' at step 30/60" s2.log || { show s2.log; fail "did not resume"; }
[[ -f s.h5 && ! -e s.h5.ckpt.h5 ]] || { ls; fail "resume: no record, or a checkpoint left"; }
if grep -q 'data cursor was written by' s2.log; then show s2.log; fail "same rank count: the cursor must be taken"; fi
if [[ $have_py == 1 ]]; then
  /usr/bin/python3 - <<'PY' || fail "the resumed record differs from the straight one"
import h5py
with h5py.File("r.h5", "r") as a, h5py.File("s.h5", "r") as b:
    for name in a["weights"]:
        assert a["weights"][name][()].tobytes() == b["weights"][name][()].tobytes(), f"/weights/{name} differs"
    for name in ("mse", "l0", "lb", "grad_norm"):
        assert a["metrics"][name][()].tobytes() == b["metrics"][name][()].tobytes(), f"/metrics/{name} differs"
PY
  echo "stop at 30 and resume at 3 ranks: weights equal the straight run's bit for bit"
else
  echo "stop at 30 and resume at 3 ranks: record written"
fi
train 3 u1.log -o u.h5 --stop-after 30 || { show u1.log; fail "--stop-after 30 at 3 ranks (for the 2-rank resume)"; }
train 2 u2.log -o u.h5 || { show u2.log; fail "resuming a 3-rank checkpoint at 2 ranks"; }
grep -q "resumed from 'u.h5.ckpt.h5' at step 30/60" u2.log || { show u2.log; fail "2 ranks: did not resume"; }
grep -q 'data cursor was written by 3 rank(s) and this run has 2' u2.log || { show u2.log; fail "no rank-count warning"; }
[[ -f u.h5 && ! -e u.h5.ckpt.h5 ]] || { ls; fail "2-rank resume: no record, or a checkpoint left"; }
echo "a 3-rank checkpoint resumed at 2 ranks: warned, finished"

# ---- 4. batch size not divisible by the rank count --------------------------------------------------------------------
rc=0
train 3 b.log -o b.h5 --set train.batch_size=100 || rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] || { show b.log; fail "batch_size 100 at 3 ranks: rc $rc"; }
grep -q '^error: train.batch_size 100 does not split evenly over 3 ranks (use a multiple of 3)' b.log ||
  { show b.log; fail "no clear error for batch_size 100 at 3 ranks"; }
[[ ! -e b.h5 && ! -e b.h5.ckpt.h5 ]] || fail "the failed run left files"
echo "batch_size 100 at 3 ranks: '$(grep -m1 '^error:' b.log)' ($(grep -c '^error:' b.log) error line(s)), rc $rc"

# ---- 5. kill -9 of one rank mid-training --------------------------------------------------------------------------------
# ---- 5. moesae run (an experiment file) at 2 ranks -------------------------------------------------------------------
t0=$SECONDS
two_run_grid dpgrid "parallel: {expert_parallel: 1}"
rc=0
timeout 120 mpirun -np 2 "$moesae" run grid.yaml > grid1.log 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { show grid1.log; fail "moesae run at 2 ranks: rc $rc"; }
[[ -f "$tmp/dpgrid/topk.h5" && -f "$tmp/dpgrid/scale.h5" ]] || { show grid1.log; fail "moesae run: records missing"; }
[[ "$(grep -c 'data-parallel over 2 ranks' grid1.log)" == 2 ]] || { show grid1.log; fail "moesae run: not data-parallel"; }
[[ "$(grep -c 'final metrics on held-out tokens' grid1.log)" == 1 ]] || { show grid1.log; fail "table not printed once"; }
timeout 60 mpirun -np 2 "$moesae" run grid.yaml > grid2.log 2>&1 || { show grid2.log; fail "moesae run again"; }
[[ "$(grep -c 'finished earlier' grid2.log)" == 2 ]] || { show grid2.log; fail "moesae run again: not skipped"; }
echo "moesae run at 2 ranks: 2 runs data-parallel, table printed once, rerun skips both ($((SECONDS - t0))s)"

kill_rank "kill -9 of rank 1" 0
kill_rank "kill -9 of rank 1, orte_abort_on_non_zero_status 0" 1 --mca orte_abort_on_non_zero_status 0

echo "data_parallel: OK ($((SECONDS - t_start))s)"
