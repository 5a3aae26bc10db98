#!/usr/bin/env bash
# analysis/summarize_runs.py reads real run records (Markdown and CSV) and rejects a file that is not a record.
source "$(dirname "$0")/common.bash"
"$moesae" --log-level warn synth --out acts.h5 --d 16 --features 64 --groups 4 --active 3 --tokens 20000 --seed 3
cat > run.yaml <<'YAML'
data: {path: acts.h5, eval_tokens: 2000}
model: {arch: topk, dict_size: 64, k: 4}
train: {steps: 20, batch_size: 256, log_every: 10}
YAML
"$moesae" --log-level warn train run.yaml --out runs/topk.h5
"$moesae" --log-level warn train run.yaml --set model.arch=scale --set model.experts=4 --set model.active_experts=2 \
  --out runs/scale.h5
md="$("$py" "$root/analysis/summarize_runs.py" runs/)"
echo "$md"
grep -q "| topk | topk | 64 | 1 | 1 | 4 |" <<<"$md"
grep -q "| scale | scale | 64 | 4 | 2 | 4 |" <<<"$md"
csv="$("$py" "$root/analysis/summarize_runs.py" --csv --metrics mse,l0 runs/scale.h5)"
[ "$(head -1 <<<"$csv")" = "run,arch,F,E,e,k,mse,l0" ]
[ "$(tail -1 <<<"$csv" | cut -d, -f8)" = "4.0" ]
if "$py" "$root/analysis/summarize_runs.py" acts.h5 2>err.txt; then
  echo "a non-record must be rejected"; exit 1
fi
grep -q "is not a moesae run record" err.txt
echo "analysis summary OK"
