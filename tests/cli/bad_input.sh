#!/usr/bin/env bash
# Bad input through the CLI: each case must exit non-zero with exactly one "error: ..." line (the last on stderr, after
# any progress lines), naming the
# key or file at fault; leave no partial record, temporary file or checkpoint behind; and leave the record already
# at --out byte for byte as it was.
source "$(dirname "$0")/common.bash"

"$moesae" --log-level warn synth --out acts.h5 --d 16 --features 64 --groups 4 --active 3 --tokens 6000 --seed 4
cat > run.yaml <<'YAML'
data: {path: acts.h5, eval_tokens: 1000}
model: {arch: topk, dict_size: 64, k: 4}
train: {steps: 10, batch_size: 128, log_every: 5}
YAML
"$moesae" --log-level warn train run.yaml --out rec.h5
cp rec.h5 pristine.h5

# Bad data files, made with h5py.
"$py" - <<'PY'
import shutil, h5py, numpy as np
shutil.copy("acts.h5", "nan.h5")
with h5py.File("nan.h5", "r+") as f:
    f["activations"][123, 5] = np.nan                       # in the training rows
shutil.copy("acts.h5", "inf_eval.h5")
with h5py.File("inf_eval.h5", "r+") as f:
    f["activations"][5500, 2] = np.inf                      # in the held-out rows (the last 1000)
with h5py.File("one_d.h5", "w") as f:
    f["activations"] = np.zeros(6000, np.float32)
with h5py.File("ints.h5", "w") as f:
    f["activations"] = np.zeros((6000, 16), np.int32)
with h5py.File("d32.h5", "w") as f:
    f["activations"] = np.random.default_rng(0).standard_normal((3000, 32)).astype(np.float32)
PY
printf 'this is not HDF5\n' > text.h5
expected_files="$(ls | sort)"
checks=0

# expect_error NAME TEXT CMD...: CMD fails with one stderr line "error: ..." that contains TEXT, and leaves the
# directory (and rec.h5) as it was.
expect_error() {
  local name="$1" text="$2"
  shift 2
  local rc=0
  "$@" > "$name.out" 2> "$name.err" || rc=$?
  local err
  err="$(cat "$name.err")"
  rm -f "$name.out" "$name.err"
  if [ "$rc" = 0 ]; then echo "FAIL $name: exit status 0"; exit 1; fi
  # Progress lines may come first (they go to stderr); the error is one line, the last one.
  if [ "$(printf '%s\n' "$err" | grep -c '^error: ')" != 1 ] || [ "$(printf '%s\n' "$err" | tail -1 | cut -c1-7)" != "error: " ]; then
    printf 'FAIL %s: stderr must end with exactly one "error: ..." line, got:\n%s\n' "$name" "$err"; exit 1
  fi
  err="$(printf '%s\n' "$err" | tail -1)"
  if [ "${err#*"$text"}" = "$err" ]; then
    printf 'FAIL %s: expected the error to contain "%s", got:\n%s\n' "$name" "$text" "$err"; exit 1
  fi
  cmp -s rec.h5 pristine.h5 || { echo "FAIL $name: the existing record was modified"; exit 1; }
  if [ "$(ls | sort)" != "$expected_files" ]; then
    printf 'FAIL %s: files left behind or removed:\n%s\n' "$name" "$(diff <(echo "$expected_files") <(ls | sort) || true)"
    exit 1
  fi
  echo "ok   $name: $err"
  checks=$((checks + 1))
}

# Configuration.
printf 'data: {path: acts.h5, eval_tokens: 1000}\nmodel: {arch: topk, dict_size: 64, k: 4}\ntrain: {steps: 10, log_evry: 5}\n' > cfg_key.yaml
printf 'data: {path: acts.h5}\nmodel:\n  arch: topk\n  dict_size: 64\n  k: abc\n' > cfg_type.yaml
printf 'data: {path: acts.h5\nmodel: [arch: topk\n' > cfg_yaml.yaml
printf 'name: x\nruns:\n  - {name: a, model: {dict_size: 64}}\nbogus: 1\n' > exp_key.yaml
expected_files="$(ls | sort)"
expect_error unknown-key "cfg_key.yaml:3: unknown key 'train.log_evry' (did you mean 'log_every'?)" \
  "$moesae" train cfg_key.yaml --out rec.h5
expect_error wrong-type "cfg_type.yaml:5: model.k: expected an integer, got 'abc'" "$moesae" train cfg_type.yaml --out rec.h5
expect_error wrong-type-override "override 'model.k=abc': model.k: expected an integer, got 'abc'" \
  "$moesae" train run.yaml --set model.k=abc --out rec.h5
expect_error malformed-yaml "cfg_yaml.yaml:2" "$moesae" train cfg_yaml.yaml --out rec.h5
expect_error missing-config "nope.yaml" "$moesae" train nope.yaml --out rec.h5
expect_error experiment-unknown-key "exp_key.yaml:4: unknown key 'bogus'" "$moesae" run exp_key.yaml
expect_error k-above-candidates "model.k (100) exceeds the candidate latents per token" \
  "$moesae" train run.yaml --set model.k=100 --out rec.h5
expect_error k-above-candidates-scale "model.k (20) exceeds the candidate latents per token" \
  "$moesae" train run.yaml --set model.arch=scale --set model.experts=4 --set model.k=20 --out rec.h5
expect_error dict-not-divisible "model.dict_size (64) must be divisible by model.experts (5)" \
  "$moesae" train run.yaml --set model.arch=scale --set model.experts=5 --out rec.h5

# Data.
expect_error missing-data-file "data.path: activation file 'nope.h5' does not exist" \
  "$moesae" train run.yaml --set data.path=nope.h5 --out rec.h5
expect_error not-hdf5 "'text.h5': not an HDF5 file" "$moesae" train run.yaml --set data.path=text.h5 --out rec.h5
expect_error missing-dataset "'acts.h5': no dataset 'acts'" "$moesae" train run.yaml --set data.dataset=acts --out rec.h5
expect_error d-mismatch "model.d is 32 but 'acts.h5' has d=16" "$moesae" train run.yaml --set model.d=32 --out rec.h5
expect_error nan-in-training-rows "non-finite value in 'nan.h5' dataset 'activations'" \
  "$moesae" train run.yaml --set data.path=nan.h5 --out rec.h5
# A bad held-out row is found after the last step: the finished training stays in the checkpoint (so a repaired
# file only needs the evaluation); the record is untouched.
expected_files="$(printf '%s\nrec.h5.ckpt.h5\n' "$expected_files" | sort)"
expect_error inf-in-held-out-rows "(first at row 5500, column 2: inf)" \
  "$moesae" train run.yaml --set data.path=inf_eval.h5 --out rec.h5
rm rec.h5.ckpt.h5
expected_files="$(ls | sort)"
expect_error one-d-dataset "'one_d.h5': dataset 'activations' is 1-D" "$moesae" train run.yaml --set data.path=one_d.h5 --out rec.h5
expect_error int-dataset "'ints.h5': dataset 'activations' holds i32" "$moesae" train run.yaml --set data.path=ints.h5 --out rec.h5
expect_error no-eval-rows "no held-out tokens" \
  "$moesae" train run.yaml --set data.eval_tokens=0 --set data.eval_fraction=0 --out rec.h5

# eval and export.
expect_error eval-missing-record "nope.h5" "$moesae" eval nope.h5
expect_error eval-not-a-record "'acts.h5' is not a moesae run record" "$moesae" eval acts.h5
expect_error eval-d-mismatch "'d32.h5': dataset 'activations' has d=32 but the SAE expects d=16" \
  "$moesae" eval rec.h5 --data d32.h5
expect_error eval-nan "non-finite value in 'inf_eval.h5'" "$moesae" eval rec.h5 --data inf_eval.h5
expect_error export-missing-record "nope.h5" "$moesae" export nope.h5 --format saelens --out exported
expect_error export-not-a-record "'acts.h5' is not a moesae run record" "$moesae" export acts.h5 --format saelens --out exported
expect_error export-onto-a-file "cannot export to 'acts.h5': it exists and is not a directory" \
  "$moesae" export rec.h5 --format saelens --out acts.h5

# Language-model inputs (the LM files are looked up on the data search path; these fail before any work).
expect_error lm-model-missing "nowhere/model.bin" "$moesae" train run.yaml --set lm.model=nowhere/model.bin --out rec.h5
expect_error lm-bad-format "lm.text_format 'csv' is not a text format" \
  "$moesae" train run.yaml --set lm.model=x.bin --set lm.text_format=csv --out rec.h5
expect_error eval-lm-missing "nowhere/model.bin" "$moesae" eval rec.h5 --lm nowhere/model.bin
expect_error lm-loss-splice-without-sae "--mode splice needs --sae" "$moesae" lm loss --mode splice --model acts.h5
expect_error lm-extract-format "text format 'csv' is not known" \
  "$moesae" lm extract --model acts.h5 --format csv --text run.yaml --layer 0 --ctx 8 --out lm.h5
expect_error lm-not-a-checkpoint "checkpoint 'text.h5'" "$moesae" lm loss --model text.h5 --tokenizer text.h5

# An experiment whose middle run fails: the others still run; the exit status and one stderr line say which failed.
cat > exp.yaml <<'YAML'
name: e
out: exp_out
base: {data: {path: acts.h5, eval_tokens: 1000}, train: {steps: 5, batch_size: 128}}
runs:
  - {name: good, model: {arch: topk, dict_size: 64, k: 4}}
  - {name: bad, data: {path: nan.h5}, model: {arch: topk, dict_size: 64, k: 4}}
  - {name: good2, model: {arch: topk, dict_size: 64, k: 8}}
YAML
rc=0
"$moesae" run exp.yaml > exp.out 2> exp.err || rc=$?
[ "$rc" != 0 ] || { echo "FAIL experiment-with-a-failing-run: exit status 0"; exit 1; }
[ "$(tail -1 exp.err)" = "error: 1 run(s) of 'exp.yaml' did not finish: bad (see the log above)" ] &&
  [ "$(grep -c '^error: ' exp.err)" = 1 ] || { echo "FAIL experiment-with-a-failing-run: stderr:"; cat exp.err; exit 1; }
grep -q "run 'bad' failed: non-finite value in 'nan.h5'" exp.err || { cat exp.err; exit 1; }
grep -q "^good " exp.out || { echo "FAIL experiment-with-a-failing-run: no table on stdout"; cat exp.out; exit 1; }
[ "$(ls exp_out | sort | tr '\n' ' ')" = "good.h5 good2.h5 " ] || { ls exp_out; exit 1; }
checks=$((checks + 1))

echo "bad input OK ($checks cases)"
