#!/usr/bin/python3
"""A plain PyTorch GPT-2 forward for bench/bench_lm (the peer in its ratios).

Reads a Hugging Face GPT-2 model.safetensors (parsed by hand: an 8-byte header length, a JSON header, raw
little-endian tensors) and token ids (raw int32 [contexts, ctx]); runs the batched causal forward (LayerNorm, fused
qkv projection, softmax attention with a causal mask, tanh-GELU MLP, tied classifier) with torch; prints one JSON line
with tokens/s (best of --reps after one untimed run) and writes context 0's logits (float32) for the comparison.
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F


def load_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {info['dtype']}, this peer reads F32 only")
        a, b = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data, dtype=np.float32, count=(b - a) // 4, offset=a)
                                     .reshape(info["shape"]).copy())
    return out


def forward(w, ids, n_layer, n_head):
    N, T = ids.shape
    d = w["wte.weight"].shape[1]
    hd = d // n_head
    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(n_layer):
        p = f"h.{l}."
        h = F.layer_norm(x, (d,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], 1e-5)
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(d, dim=-1)
        q = q.view(N, T, n_head, hd).transpose(1, 2)
        k = k.view(N, T, n_head, hd).transpose(1, 2)
        v = v.view(N, T, n_head, hd).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd) + mask, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(N, T, d)
        x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = F.layer_norm(x, (d,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], 1e-5)
        m = F.gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"], approximate="tanh")
        x = x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (d,), w["ln_f.weight"], w["ln_f.bias"], 1e-5)
    return x @ w["wte.weight"].T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--contexts", type=int, required=True)
    ap.add_argument("--ctx", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--logits-out", required=True)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    w = load_safetensors(a.model)
    n_layer = sum(1 for k in w if k.endswith(".ln_1.weight"))
    ids = torch.from_numpy(np.fromfile(a.ids, dtype=np.int32).reshape(a.contexts, a.ctx).astype(np.int64))
    with torch.no_grad():
        logits = forward(w, ids, n_layer, a.heads)
        best = float("inf")
        for _ in range(a.reps):
            t0 = time.perf_counter()
            forward(w, ids, n_layer, a.heads)
            best = min(best, time.perf_counter() - t0)
    logits[0].numpy().astype(np.float32).tofile(a.logits_out)
    print(json.dumps({"tokens_per_s": a.contexts * a.ctx / best, "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
