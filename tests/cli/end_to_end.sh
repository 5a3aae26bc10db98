#!/usr/bin/env bash
# synth -> train -> eval --json -> export saelens, end to end through the CLI. The exported SAE (cfg.json +
# safetensors, parsed with numpy alone) is run in numpy on the held-out rows and must reproduce moesae's own MSE.
source "$(dirname "$0")/common.bash"

"$moesae" --log-level warn synth --out acts.h5 --d 16 --features 64 --groups 4 --active 3 --tokens 12000 --seed 5
cat > run.yaml <<'YAML'
data: {path: acts.h5, eval_tokens: 1500}
model: {arch: topk, dict_size: 64, k: 4}
train: {steps: 40, batch_size: 256, log_every: 10}
YAML
"$moesae" --log-level warn train run.yaml --out runs/topk.h5
[ -f runs/topk.h5 ] && [ ! -e runs/topk.h5.ckpt.h5 ]
[ -z "$(ls runs | grep -v '^topk.h5$' || true)" ] || { echo "stray files in runs/: $(ls runs)"; exit 1; }

"$moesae" --log-level warn eval runs/topk.h5 --json > eval.json
"$moesae" --log-level warn eval runs/topk.h5 --data acts.h5 --json > eval_data.json
"$moesae" --log-level warn export runs/topk.h5 --format saelens --out exported
[ -f exported/cfg.json ] && [ -f exported/sae_weights.safetensors ]
[ -z "$(ls exported | grep -v -e '^cfg.json$' -e '^sae_weights.safetensors$' || true)" ] || {
  echo "stray files in exported/: $(ls exported)"; exit 1; }

"$py" - <<'PY'
import json, struct
import h5py, numpy as np

ev = json.load(open("eval.json"))
assert ev == json.load(open("eval_data.json")), "eval --data with the run's own file must give the same numbers"
for key in ("mse", "fvu", "l0", "eval_tokens", "redundancy", "dead_fraction"):
    assert key in ev, f"eval --json lacks {key}: {sorted(ev)}"
assert ev["eval_tokens"] == 1500, ev["eval_tokens"]
assert ev["l0"] <= 4.0 + 1e-9, ev["l0"]
assert 0 < ev["fvu"] < 1, ev["fvu"]

with h5py.File("runs/topk.h5", "r") as f:
    assert f.attrs["format"] == "moesae-run-record" and f.attrs["status"] == "finished" and f.attrs["arch"] == "topk"
    steps = f["metrics/step"][()]
    assert list(steps) == [10, 20, 30, 40], steps
    final_mse = float(f["final"].attrs["mse"])
    W_dec_record = f["weights/W_dec"][()]
assert abs(final_mse - ev["mse"]) <= 1e-12 * max(1.0, final_mse), (final_mse, ev["mse"])

cfg = json.load(open("exported/cfg.json"))
assert cfg["architecture"] == "topk", cfg
assert cfg["d_in"] == 16 and cfg["d_sae"] == 64 and cfg["k"] == 4, cfg

# safetensors: u64 LE header length, JSON header, then the raw little-endian data.
raw = open("exported/sae_weights.safetensors", "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
header.pop("__metadata__", None)
want = {"W_enc": [16, 64], "W_dec": [64, 16], "b_enc": [64], "b_dec": [16]}
assert {k: v["shape"] for k, v in header.items()} == want, header
ends = sorted(tuple(v["data_offsets"]) for v in header.values())
assert ends[0][0] == 0 and ends[-1][1] == len(data), (ends, len(data))
assert all(a[1] == b[0] for a, b in zip(ends, ends[1:])), ends  # contiguous, no overlap
t = {}
for name, v in header.items():
    assert v["dtype"] == "F32", v
    lo, hi = v["data_offsets"]
    t[name] = np.frombuffer(data[lo:hi], dtype="<f4").reshape(v["shape"]).astype(np.float64)
assert np.array_equal(t["W_dec"], W_dec_record.astype(np.float64)), "exported W_dec differs from the record"
norms = np.linalg.norm(t["W_dec"], axis=1)
assert np.allclose(norms, 1, atol=1e-5), norms  # unit decoder rows

# Run the exported SAE in numpy on the held-out rows (the last eval_tokens rows).
with h5py.File("acts.h5", "r") as f:
    x = f["activations"][-1500:].astype(np.float64)
pre = np.maximum((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"], 0)
k = cfg["k"]
keep = np.argpartition(-pre, k - 1, axis=1)[:, :k]
z = np.zeros_like(pre)
np.put_along_axis(z, keep, np.take_along_axis(pre, keep, axis=1), axis=1)
x_hat = z @ t["W_dec"] + t["b_dec"]
mse = float(np.mean((x - x_hat) ** 2))
l0 = float(np.mean((z > 0).sum(axis=1)))
print(f"numpy mse {mse:.6g} vs moesae {ev['mse']:.6g}; numpy L0 {l0:.3f} vs {ev['l0']:.3f}")
assert abs(mse - ev["mse"]) <= 1e-4 * ev["mse"], (mse, ev["mse"])
assert abs(l0 - ev["l0"]) <= 1e-9, (l0, ev["l0"])
PY
echo "end to end OK"
