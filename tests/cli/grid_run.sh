#!/usr/bin/env bash
# A small synthetic grid end to end: `moesae plan` (ids, sizes from flops_match, status), `moesae run --jobs 2`
# (child processes, logs, a progress line; a rerun skips everything), a long run paused once its checkpoint exists
# while `moesae plan` and `moesae collect` look at it, killed with SIGKILL, then resumed to a valid record, and the
# collected files read with h5py. A malformed grid gives one error line naming the file, the line and the key.
source "$(dirname "$0")/common.bash"

cat > grid.yaml <<'YAML'
name: tinygrid
out: out/g
synthetic: {d: 16, features: 64, groups: 4, active: 3, tokens: 8000, seed: 3}
presets:
  fast: {train: {lr: 2e-3}}
base:
  data: {eval_tokens: 1000}
  model: {k: 4}
  train: {steps: 30, batch_size: 256, log_every: 10}
grid:
  model.k: [2, 4]
zip:
  - {model.arch: [topk, scale], model.experts: [1, 4], model.active_experts: [1, 2]}
flops_match: {reference: {model.arch: topk, model.dict_size: 64}, measure: encoder}
runs:
  - name: long
    preset: fast
    model: {arch: topk, dict_size: 512, k: 8}
    train: {steps: 2000, batch_size: 512, checkpoint_every: 100, log_every: 500}
YAML

# ---- plan: every run todo; flops_match sized the Scale points to 64 encoder rows per token (F = 64 E / e) --------
"$moesae" plan grid.yaml > plan1.txt 2> plan1.err || { cat plan1.txt plan1.err; exit 1; }
head -1 plan1.txt | grep -q '^tinygrid: 5 runs (5 todo); records in out/g/$' || { cat plan1.txt; exit 1; }
grep -Eq '^long +topk +512 +1 +1 +8 .* todo$' plan1.txt || { cat plan1.txt; echo "no plan row for long"; exit 1; }
for k in 2 4; do
  grep -Eq "^k$k-topk-E1-e1-F64-[0-9a-f]{8} +topk +64 +1 +1 +$k .* todo\$" plan1.txt &&
    grep -Eq "^k$k-scale-E4-e2-F128-[0-9a-f]{8} +scale +128 +4 +2 +$k .* todo\$" plan1.txt ||
    { cat plan1.txt; echo "no plan rows for k=$k"; exit 1; }
done
points=($(awk '$1 ~ /^k[24]-/ {print $1}' plan1.txt))
[ "${#points[@]}" = 4 ] || { cat plan1.txt; exit 1; }
"$moesae" plan grid.yaml > plan1b.txt 2>&1
[ "$(awk '{print $1}' plan1.txt | head -6)" = "$(awk '{print $1}' plan1b.txt | head -6)" ] ||
  { echo "ids changed between two plans"; exit 1; }

# ---- run --jobs 2: the four grid points in child processes, then a rerun that skips them ------------------------
only=()
for id in "${points[@]}"; do only+=(--only "$id"); done
"$moesae" run grid.yaml --jobs 2 "${only[@]}" > jobs.out 2> jobs.err || { cat jobs.out jobs.err; exit 1; }
for id in "${points[@]}"; do
  [ -f "out/g/$id.h5" ] && [ -f "out/g/logs/$id.log" ] && [ ! -e "out/g/$id.h5.lock" ] || { ls out/g; exit 1; }
  grep -q "wrote out/g/$id.h5" "out/g/logs/$id.log" || { cat "out/g/logs/$id.log"; exit 1; }
  grep -Eq "^$id +(topk|scale) " jobs.out || { cat jobs.out; echo "no table row for $id"; exit 1; }
done
grep -q 'tinygrid: 4 run(s) to train, 2 at a time' jobs.err || { cat jobs.err; exit 1; }
grep -q 'tinygrid: 4/4 runs done (0 skipped), 0 not finished | elapsed' jobs.err || { cat jobs.err; exit 1; }
grep -q '^long .*(no record)' jobs.out || { cat jobs.out; exit 1; }
"$moesae" run grid.yaml --jobs 2 "${only[@]}" > jobs2.out 2> jobs2.err || { cat jobs2.err; exit 1; }
[ "$(grep -c 'finished earlier' jobs2.err)" = 4 ] && ! grep -q 'started' jobs2.err || { cat jobs2.err; exit 1; }

# ---- the long run: killed (SIGKILL) once it has a checkpoint; plan and collect meanwhile -------------------------
"$moesae" run grid.yaml --only long > long1.log 2>&1 &
pid=$!
for _ in $(seq 1 600); do [ -f out/g/long.h5.ckpt.h5 ] && break; sleep 0.05; done
[ -f out/g/long.h5.ckpt.h5 ] || { kill -9 $pid; cat long1.log; echo "no checkpoint appeared"; exit 1; }
kill -STOP $pid  # paused mid-run (it still holds its lock), so that it cannot finish before the kill
"$moesae" plan grid.yaml > plan2.txt 2>&1
"$moesae" collect grid.yaml --out writing.h5 > collect1.txt 2>&1 || { cat collect1.txt; exit 1; }
kill -9 $pid
wait $pid 2>/dev/null || true
grep -Eq '^long .* running [0-9]+/2000$' plan2.txt || { cat plan2.txt long1.log; echo "long is not running"; exit 1; }
grep -q '^collected 4 of 5 runs into writing.h5$' collect1.txt &&
  grep -Eq '^missing: long \(running [0-9]+/2000\)$' collect1.txt || { cat collect1.txt; exit 1; }
[ ! -e out/g/long.h5 ] && [ -f out/g/long.h5.ckpt.h5 ] || { ls out/g; echo "the killed run left a record"; exit 1; }
"$moesae" plan grid.yaml > plan3.txt 2>&1
grep -Eq '^long .* partial [0-9]+/2000$' plan3.txt || { cat plan3.txt; exit 1; }

# ---- rerun: resumes from the checkpoint, finishes with a valid record --------------------------------------------
"$moesae" run grid.yaml > resume.out 2> resume.err || { cat resume.out resume.err; exit 1; }
grep -Eq "resumed from 'out/g/long.h5.ckpt.h5' at step [1-9][0-9]*/2000" resume.err || { cat resume.err; exit 1; }
[ "$(grep -c 'finished earlier' resume.err)" = 4 ] || { cat resume.err; exit 1; }
[ -f out/g/long.h5 ] && [ ! -e out/g/long.h5.ckpt.h5 ] && [ ! -e out/g/long.h5.lock ] || { ls out/g; exit 1; }
"$moesae" plan grid.yaml > plan4.txt 2>&1
[ "$(grep -c ' done$' plan4.txt)" = 5 ] || { cat plan4.txt; exit 1; }
"$moesae" collect grid.yaml --out grid.h5 > collect2.txt 2>&1 || { cat collect2.txt; exit 1; }
grep -q '^collected 5 of 5 runs into grid.h5$' collect2.txt || { cat collect2.txt; exit 1; }

"$py" - "${points[@]}" <<'PY'
import sys, h5py, numpy as np
points = sys.argv[1:]
ids = ["long"] + points
# Every record is complete and valid.
for i in ids:
    with h5py.File(f"out/g/{i}.h5", "r") as f:
        assert f.attrs["format"] == "moesae-run-record" and f.attrs["status"] == "finished", i
        assert np.isfinite(f["final"].attrs["mse"]), i
        steps = 2000 if i == "long" else 30
        assert f["final"].attrs["steps"] == steps and f["metrics/step"][-1] == steps, i
# The collection made while `long` was training: four rows finished, long listed with its state and NaN metrics.
with h5py.File("writing.h5", "r") as f:
    t = f["table"]
    assert f.attrs["format"] == "moesae-grid-collection" and f.attrs["collected"] == 4 and f.attrs["runs"] == 5
    rows = dict(zip(t["id"].asstr()[()], t["status"].asstr()[()]))
    assert rows["long"].startswith("running "), rows
    assert all(rows[p] == "finished" for p in points), rows
    mse = dict(zip(t["id"].asstr()[()], t["mse"][()]))
    assert np.isnan(mse["long"]) and all(np.isfinite(mse[p]) for p in points), mse
    assert sorted(f["runs"]) == sorted(points)
# The final collection: every run, its settings, costs and final metrics.
with h5py.File("grid.h5", "r") as f:
    t = f["table"]
    assert t.attrs["rows"] == 5
    cols = t.attrs["columns"].split(",")
    assert cols[:4] == ["id", "status", "record", "arch"], cols
    assert all(len(t[c]) == 5 for c in cols)
    table = {c: (t[c].asstr()[()] if t[c].dtype.kind == "O" else t[c][()]) for c in cols}
    assert list(table["id"]) == ids, table["id"]
    assert all(s == "finished" for s in table["status"])
    for i, arch in enumerate(table["arch"]):  # flops_match sizes the grid points, not the named run
        want = 512 if ids[i] == "long" else {"topk": 64, "scale": 128}[arch]
        assert table["dict_size"][i] == want, (ids[i], table["dict_size"][i])
    assert list(table["model.k"][1:]) == [2, 2, 4, 4] and table["model.k"].dtype == np.float64
    assert np.all(table["flops_per_token"] > 0) and np.all(table["params"] > 0) and np.all(table["d"] == 16)
    assert np.all(np.isfinite(table["mse"])) and np.all(np.isfinite(table["fvu"]))
    for i in ids:
        g = f["runs"][i]
        assert "model:" in g["config"].attrs["yaml"] and g["final"].attrs["mse"] == table["mse"][ids.index(i)]
print("grid collection OK")
PY

# ---- a malformed grid: one error line with the file, the line and the key ---------------------------------------
printf 'name: bad\nbase: {model: {dict_size: 16}}\ngrid:\n  model.kk: [1, 2]\n' > bad.yaml
rc=0
"$moesae" plan bad.yaml > bad.out 2> bad.err || rc=$?
[ "$rc" = 1 ] && [ "$(cat bad.err)" = "error: bad.yaml:4: grid key 'model.kk': unknown key 'model.kk' (did you mean 'k'?)" ] ||
  { echo "rc=$rc"; cat bad.err; exit 1; }
echo "grid run OK"
