#!/usr/bin/env bash
# `moesae run` on a two-run experiment, then again: finished runs are skipped and their records left alone.
# `moesae train --stop-after N` leaves a checkpoint and no record; the rerun resumes from it and ends with the
# same record (weights bit for bit, metrics) as a run that was never stopped.
source "$(dirname "$0")/common.bash"

# ---- moesae run: two runs, then a rerun that skips both ---------------------------------------------------------
cat > exp.yaml <<'YAML'
name: tiny
out: out/tiny
synthetic: {d: 16, features: 64, groups: 4, active: 3, tokens: 8000, seed: 2}
base:
  data: {eval_tokens: 1000}
  train: {steps: 20, batch_size: 256, log_every: 10}
runs:
  - {name: topk, model: {arch: topk, dict_size: 64, k: 4}}
  - {name: scale, model: {arch: scale, dict_size: 64, experts: 4, active_experts: 2, k: 4}}
YAML
"$moesae" run exp.yaml > run1.log 2>&1 || { cat run1.log; exit 1; }
[ -f out/tiny/data.h5 ] && [ -f out/tiny/topk.h5 ] && [ -f out/tiny/scale.h5 ]
[ ! -e out/tiny/topk.h5.ckpt.h5 ] && [ ! -e out/tiny/scale.h5.ckpt.h5 ]
grep -Eq '^topk +topk +64 +1 +1 +4 ' run1.log || { cat run1.log; echo "no table row for topk"; exit 1; }
grep -Eq '^scale +scale +64 +4 +2 +4 ' run1.log || { cat run1.log; echo "no table row for scale"; exit 1; }
sums="$(md5sum out/tiny/*.h5)"
"$moesae" run exp.yaml > run2.log 2>&1 || { cat run2.log; exit 1; }
[ "$(grep -c 'finished earlier' run2.log)" = 2 ] || { cat run2.log; echo "the rerun must skip both runs"; exit 1; }
if grep -q 'step 10/20' run2.log; then cat run2.log; echo "the rerun trained again"; exit 1; fi
[ "$(md5sum out/tiny/*.h5)" = "$sums" ] || { echo "the rerun changed a record or the data"; exit 1; }
[ "$(ls out/tiny | sort | tr '\n' ' ')" = "data.h5 scale.h5 topk.h5 " ] || { ls out/tiny; exit 1; }

# ---- train --stop-after, then resume; compare with a straight run -----------------------------------------------
cat > run.yaml <<'YAML'
data: {path: out/tiny/data.h5, eval_tokens: 1000, shuffle_buffer: 2000, chunk_rows: 500}
model: {arch: scale, dict_size: 64, experts: 4, active_experts: 2, k: 4, feature_scaling: mean}
train: {steps: 40, batch_size: 256, log_every: 7, eval_every: 15}
YAML
"$moesae" --log-level warn train run.yaml --out straight.h5
"$moesae" train run.yaml --out split.h5 --stop-after 17 > stop.log 2>&1 || { cat stop.log; exit 1; }
grep -q 'stopped at step 17' stop.log || { cat stop.log; exit 1; }
[ -f split.h5.ckpt.h5 ] && [ ! -e split.h5 ] || { ls; echo "--stop-after must leave a checkpoint and no record"; exit 1; }
"$moesae" train run.yaml --out split.h5 > resume.log 2>&1 || { cat resume.log; exit 1; }
grep -q "resumed from 'split.h5.ckpt.h5' at step 17/40" resume.log || { cat resume.log; echo "no resume"; exit 1; }
[ -f split.h5 ] && [ ! -e split.h5.ckpt.h5 ]
"$py" - <<'PY'
import h5py, numpy as np
with h5py.File("straight.h5", "r") as a, h5py.File("split.h5", "r") as b:
    assert sorted(a["weights"]) == sorted(b["weights"]), (list(a["weights"]), list(b["weights"]))
    for name in a["weights"]:
        x, y = a["weights"][name][()], b["weights"][name][()]
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), f"/weights/{name} differs"
    assert list(b["metrics/step"][()]) == [7, 14, 21, 28, 35, 40], b["metrics/step"][()]
    for name in a["metrics"]:
        if name != "tokens_per_s":
            assert a["metrics"][name][()].tobytes() == b["metrics"][name][()].tobytes(), f"/metrics/{name} differs"
    assert list(b["eval/step"][()]) == [15, 30], b["eval/step"][()]
    assert a["config"].attrs["yaml"] == b["config"].attrs["yaml"]
print("resumed record equals the straight one")
PY
echo "run and resume OK"
