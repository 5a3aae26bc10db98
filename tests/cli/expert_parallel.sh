#!/usr/bin/env bash
# Expert parallelism under mpirun (src/parallel/expert_parallel.h; `moesae train` of a Switch or Scale SAE with
# more than one rank shards its experts by default):
#  1. tests/test_expert_parallel at 2, 3 and 4 ranks: one step and whole training runs against the 1-process
#     model (Switch, Scale with every Feature Scaling variant, the reference code's options, E = 7 uneven blocks,
#     2 x 2 layouts), checkpoints resumed exactly and in another layout;
#  2. `mpirun -np 3 moesae train` (default layout: experts over 3 ranks) against the data-parallel run of the same
#     config at 3 ranks (the same rows in the same steps): the same final weights up to summation order; the record
#     holds the whole model;
#  3. --stop-after 30 at 3 ranks: a manifest and 3 shard files; resume at 3: bitwise the straight 3-rank run; the
#     same checkpoint (copied with its shards) resumed at 2 ranks and on one process (resharded); no files left;
#  4. a 2 x 2 layout at 4 ranks (parallel.expert_parallel: 2) near the data-parallel run of the same rows; a TopK
#     SAE's dictionary sharded over 3 ranks (AuxK active) near its data-parallel run;
#     its checkpoint resumed data-parallel;
#  5. bad layouts, each one error line and a non-zero exit: expert_parallel that does not divide the ranks,
#     expert parallelism of a Gated SAE, more ranks than experts;
#  6. `mpirun -np 2 moesae run` of a grid with a TopK run (data-parallel) and a Scale run (expert-parallel);
#  7. kill -9 of rank 1 mid-training: mpirun exits non-zero, no moesae process left; also with Open MPI's abort off,
#     when only the collective watchdog (MOESAE_COMM_TIMEOUT=20) can end the job.
# Run by ctest as `bash expert_parallel.sh /path/to/build/bin/moesae`; exit 77 (skipped) without mpirun.
set -euo pipefail
moesae="$(realpath "$1")"
build="$(dirname "$(dirname "$moesae")")"
testbin="$build/tests/test_expert_parallel"
command -v mpirun >/dev/null || { echo "skipped: mpirun not found"; exit 77; }
/usr/bin/python3 -c 'import h5py, numpy' 2>/dev/null || { echo "skipped: needs /usr/bin/python3 with h5py and numpy"; exit 77; }
[[ -x "$testbin" ]] || { echo "FAIL: $testbin not built"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/mpi_job.bash"  # $tmp, fail, show, gtest_at_ranks, kill_rank
# compare <a.h5> <b.h5> <relative tolerance, 0 = bitwise>: every /weights dataset of two records.
compare() {
  /usr/bin/python3 - "$@" <<'PY'
import sys, h5py, numpy as np
a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
    assert sorted(fa["weights"]) == sorted(fb["weights"]), (list(fa["weights"]), list(fb["weights"]))
    worst = 0.0
    for name in fa["weights"]:
        x, y = fa["weights"][name][()], fb["weights"][name][()]
        assert x.shape == y.shape, (name, x.shape, y.shape)
        if tol == 0:
            assert x.tobytes() == y.tobytes(), f"/weights/{name} differs"
            continue
        if x.dtype.kind == "i":
            assert np.array_equal(x, y) or name == "tokens_since_fired", f"/weights/{name} differs"
            continue
        err = np.linalg.norm(x.astype(np.float64) - y) / max(np.linalg.norm(y.astype(np.float64)), 1e-30)
        worst = max(worst, err)
        assert err <= tol, f"/weights/{name}: relative error {err:.3g} > {tol}"
    print(f"largest relative weight error {worst:.2g}")
PY
}

# ---- 1. the GoogleTest binary at 2, 3, 4 ranks -------------------------------------------------------------------------
gtest_at_ranks "$testbin" expert_parallel 2 3 4

# ---- 2. moesae train at 3 ranks vs 1 process --------------------------------------------------------------------------
"$moesae" --log-level warn synth -o acts.h5 --d 16 --features 128 --tokens 20000 --seed 3
cat > cfg.yaml <<YAML
data: {path: $tmp/acts.h5, eval_tokens: 1000, shuffle_buffer: 2000, chunk_rows: 500}
model: {arch: scale, dict_size: 192, experts: 12, active_experts: 3, k: 4, feature_scaling: mean}
train: {steps: 60, batch_size: 96, log_every: 10, lr: 0.0005}
YAML
train 3 r.log -o r.h5 || { show r.log; fail "moesae train at 3 ranks"; }
grep -q 'experts sharded over 3 ranks (32 tokens each)' r.log || { show r.log; fail "not expert-parallel"; }
[[ "$(grep -c 'wrote r.h5' r.log)" == 1 ]] || { show r.log; fail "rank 0 (alone) must write the record"; }
[[ -f r.h5 && ! -e r.h5.ckpt.h5 ]] || { ls; fail "no record, or a checkpoint left"; }
/usr/bin/python3 - <<'PY' || fail "r.h5 does not hold the whole model"
import h5py
with h5py.File("r.h5", "r") as f:
    assert f["weights/W_dec"].shape == (192, 16) and f["weights/W_enc"].shape == (192, 16), f["weights/W_dec"].shape
    assert f["weights/omega"].shape == (12,), f["weights/omega"].shape
    assert list(f["metrics/step"][()]) == [10, 20, 30, 40, 50, 60]
PY
# Every rank reads its own shard of the file, so 3 ranks see other rows than 1 process; the 3-rank data-parallel
# run sees the same rows in the same steps, and computes the same training up to summation order.
train 3 dp.log -o dp.h5 --set parallel.expert_parallel=1 || { show dp.log; fail "the data-parallel comparison run"; }
grep -q 'data-parallel over 3 ranks' dp.log || { show dp.log; fail "parallel.expert_parallel=1 is not data-parallel"; }
msg="$(compare r.h5 dp.h5 1e-3)" || fail "expert-parallel and data-parallel runs of the same rows differ: $msg"
echo "moesae train, experts over 3 ranks vs data-parallel over 3 ranks (the same rows): $msg"

# ---- 3. stop and resume; resume in other layouts --------------------------------------------------------------------
train 3 s1.log -o s.h5 --stop-after 30 || { show s1.log; fail "--stop-after 30 at 3 ranks must exit 0"; }
[[ -f s.h5.ckpt.h5 && ! -e s.h5 ]] || { ls; fail "--stop-after must leave a checkpoint and no record"; }
for to in u v; do  # a checkpoint moves with its shard files
  for f in s.h5.ckpt.h5*; do cp "$f" "$to.h5.ckpt.h5${f#s.h5.ckpt.h5}"; done
done
/usr/bin/python3 - <<'PY' || fail "the 3-rank checkpoint is not a manifest with 3 shards"
import h5py
with h5py.File("s.h5.ckpt.h5", "r") as f:
    assert f.attrs["shard_count"] == 3 and f.attrs["shard_step"] == 30, dict(f.attrs)
    assert "W_enc" not in f["params"] and "W_r" in f["params"] and "b_pre" in f["params"], list(f["params"])
rows = 0
for i in range(3):
    with h5py.File(f"s.h5.ckpt.h5.step30.shard{i}of3", "r") as s:
        for g in ("params", "adam_m", "adam_v"):
            assert s[g]["W_enc"].attrs["first_row"] == rows and s[g]["W_enc"].attrs["full_rows"] == 192
            assert s[g]["omega"].attrs["full_rows"] == 12
        rows += s["params/W_enc"].shape[0]
assert rows == 192, rows
PY
echo "the 3-rank checkpoint: a manifest and 3 shard files (64 latents each)"
train 3 s2.log -o s.h5 || { show s2.log; fail "resume at 3 ranks"; }
grep -q "resumed from 's.h5.ckpt.h5' at step 30/60" s2.log || { show s2.log; fail "did not resume"; }
compare r.h5 s.h5 0 > /dev/null || fail "stop at 30 + resume at 3 ranks is not bitwise the straight run"
echo "stop at 30 and resume at 3 ranks: weights equal the straight run's bit for bit"
train 2 u.log -o u.h5 --stop-after 45 || { show u.log; fail "resuming the 3-rank checkpoint at 2 ranks"; }
grep -q "resumed from 'u.h5.ckpt.h5' at step 30/60" u.log && grep -q 'experts sharded over 2 ranks' u.log ||
  { show u.log; fail "2 ranks: did not resume expert-parallel"; }
[[ "$(ls u.h5.ckpt.h5.* | tr '\n' ' ')" == "u.h5.ckpt.h5.step45.shard0of2 u.h5.ckpt.h5.step45.shard1of2 " ]] ||
  { ls; fail "the 2-rank checkpoint at step 45 must replace the 3 shards of step 30 by 2"; }
mv u.h5.ckpt.h5.step45.shard1of2 lost
rc=0
train 2 ul.log -o u.h5 || rc=$?
[[ $rc -ne 0 ]] && grep -q "^error: .*is missing its shard file 'u.h5.ckpt.h5.step45.shard1of2'" ul.log ||
  { show ul.log; fail "a missing shard file must be one clear error (rc $rc)"; }
mv lost u.h5.ckpt.h5.step45.shard1of2
train 2 u2.log -o u.h5 || { show u2.log; fail "resuming at 2 ranks again"; }
grep -q "resumed from 'u.h5.ckpt.h5' at step 45/60" u2.log || { show u2.log; fail "did not resume at step 45"; }
"$moesae" train cfg.yaml -o v.h5 > v.log 2>&1 || { show v.log; fail "resuming the 3-rank checkpoint on one process"; }
grep -q "resumed from 'v.h5.ckpt.h5' at step 30/60" v.log || { show v.log; fail "1 process: did not resume"; }
[[ -f u.h5 && -f v.h5 && ! -e u.h5.ckpt.h5 && ! -e v.h5.ckpt.h5 ]] || { ls; fail "resumes: records missing"; }
left="$(ls | grep -c '\.ckpt\.h5' || true)"
[[ "$left" == 0 ]] || { ls; fail "checkpoint or shard files left after the runs finished"; }
echo "the 3-rank checkpoint resumed with the experts over 2 ranks (its step-45 checkpoint: 2 shards, a lost one a clear error) and on one process: all finished"

# ---- 4. a 2 x 2 layout at 4 ranks --------------------------------------------------------------------------------------
rc=0
timeout 60 mpirun -np 4 "$moesae" train cfg.yaml -o q.h5 --set parallel.expert_parallel=2 > q.log 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { show q.log; fail "2 x 2 at 4 ranks: rc $rc"; }
grep -q 'experts sharded over 2 ranks, 2 data-parallel replicas (24 tokens each)' q.log || { show q.log; fail "not 2 x 2"; }
timeout 60 mpirun -np 4 "$moesae" train cfg.yaml -o q4.h5 --set parallel.expert_parallel=1 > q4.log 2>&1 ||
  { show q4.log; fail "data-parallel at 4 ranks"; }
msg="$(compare q.h5 q4.h5 1e-3)" || fail "2 x 2 differs from data-parallel over the same 4 ranks: $msg"
echo "2 x 2 at 4 ranks vs data-parallel at 4 ranks: $msg"

# ---- 4b. a TopK SAE's dictionary sharded over 3 ranks ----------------------------------------------------------------
topk=(--set model.arch=topk --set model.experts=1 --set model.active_experts=1 --set model.feature_scaling=none
      --set model.dict_size=200 --set model.dead_threshold_tokens=500)
train 3 tk.log -o tk.h5 "${topk[@]}" --set parallel.expert_parallel=3 || { show tk.log; fail "sharded TopK at 3 ranks"; }
grep -q 'dictionary sharded over 3 ranks (32 tokens each)' tk.log || { show tk.log; fail "the dictionary is not sharded"; }
train 3 tkd.log -o tkd.h5 "${topk[@]}" || { show tkd.log; fail "data-parallel TopK at 3 ranks"; }
grep -q 'data-parallel over 3 ranks' tkd.log || { show tkd.log; fail "a TopK SAE is data-parallel by default"; }
msg="$(compare tk.h5 tkd.h5 1e-3)" || fail "the sharded TopK dictionary differs from data parallelism: $msg"
/usr/bin/python3 -c 'import h5py,sys; f=h5py.File("tk.h5","r"); sys.exit(0 if max(f["metrics/auxk"][()]) > 0 else 1)' ||
  fail "AuxK never ran in the sharded TopK run (no dead latents)"
echo "TopK, dictionary of 200 latents over 3 ranks (AuxK active) vs data-parallel at 3 ranks: $msg"
train 3 tks1.log -o tks.h5 "${topk[@]}" --set parallel.expert_parallel=3 --stop-after 30 ||
  { show tks1.log; fail "sharded TopK, --stop-after 30"; }
train 3 tks2.log -o tks.h5 "${topk[@]}" || { show tks2.log; fail "resuming the sharded TopK data-parallel"; }
grep -q "resumed from 'tks.h5.ckpt.h5' at step 30/60" tks2.log && grep -q 'data-parallel over 3 ranks' tks2.log ||
  { show tks2.log; fail "the sharded TopK checkpoint did not resume data-parallel"; }
echo "the sharded TopK's checkpoint resumed data-parallel (the layout is not part of a checkpoint's identity)"

# ---- 5. bad layouts -------------------------------------------------------------------------------------------------------
bad() {  # <ranks> <expected error> <--set ...>
  local n="$1" want="$2" rc=0; shift 2
  timeout 60 mpirun -np "$n" "$moesae" train cfg.yaml -o bad.h5 "$@" > bad.log 2>&1 || rc=$?
  [[ $rc -ne 0 && $rc -ne 124 ]] || { show bad.log; fail "$*: rc $rc"; }
  grep -q "^error: $want" bad.log || { show bad.log; fail "$*: no clear error ($want)"; }
  [[ "$(grep -c '^error:' bad.log)" == 1 ]] || { show bad.log; fail "$*: the error must be printed once (rank 0)"; }
  [[ ! -e bad.h5 && ! -e bad.h5.ckpt.h5 ]] || fail "$*: the failed run left files"
  echo "$n ranks, $*: '$(grep -m1 '^error:' bad.log)'"
}
bad 3 "parallel.expert_parallel is 2 but the job has 3 ranks" --set parallel.expert_parallel=2
bad 2 "parallel.expert_parallel is 2 but a gated SAE cannot be sharded" --set model.arch=gated --set model.experts=1 \
  --set model.active_experts=1 --set model.feature_scaling=none --set parallel.expert_parallel=2
bad 4 "expert parallelism over 4 ranks needs at least 4 experts" --set model.experts=2 --set model.dict_size=64 \
  --set model.active_experts=1

# ---- 6. moesae run at 2 ranks: one data-parallel run, one expert-parallel run ------------------------------------------
two_run_grid epgrid
rc=0
timeout 120 mpirun -np 2 "$moesae" run grid.yaml > grid.log 2>&1 || rc=$?
[[ $rc -eq 0 && -f epgrid/topk.h5 && -f epgrid/scale.h5 ]] || { show grid.log; fail "moesae run at 2 ranks: rc $rc"; }
grep -q 'data-parallel over 2 ranks' grid.log && grep -q 'experts sharded over 2 ranks' grid.log ||
  { show grid.log; fail "moesae run: expected one data-parallel and one expert-parallel run"; }
echo "moesae run at 2 ranks: topk data-parallel, scale expert-parallel, both recorded"

# ---- 7. kill -9 of rank 1 mid-training -------------------------------------------------------------------------------
kill_rank "kill -9 of rank 1 (experts over 3 ranks)" 0
kill_rank "kill -9 of rank 1 (experts over 3 ranks), orte_abort_on_non_zero_status 0" 1 \
  --mca orte_abort_on_non_zero_status 0

echo "expert_parallel: OK ($((SECONDS - t_start))s)"
