#!/usr/bin/python3
"""Straightforward PyTorch training steps for bench/bench_train_step and bench/bench_cuda (the peer in their ratios).

TopK SAE: dense encoder, ReLU, top-k, dense decode of the scattered code, MSE, backward, Adam.
Scale SAE as the reference code computes it: every expert's encoder densely for every token, masked to the top-e
experts, global top-k, weighted dense decode, load-balancing loss, backward, Adam.
Reads the same activations (raw float32 [N, d]) the C++ benchmark uses; prints one JSON line of tokens/s.

--device cpu (default) is what bench_train_step runs: fastest timed step, output unchanged. --device cuda (or
cuda:N) runs the same steps on a GPU, synchronising (torch.cuda.synchronize) before and after each timed step;
--stat median reports the median timed step (bench_cuda's statistic) and --precision picks the float32 matmul mode
(fp32: exact float32 GEMMs, tf32: tensor-core TF32, the peer of moesae's gemm precisions of the same names).
"""
import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch


def timed_steps(step, steps, warmup, sync=None, stat="best"):
    """Seconds of the fastest (stat "best") or median (stat "median") of `steps` timed steps, after `warmup`
    untimed ones, as the C++ side measures. `sync` (torch.cuda.synchronize on a GPU) runs before the clock starts
    and before it is read, so a step's time includes all of its queued device work."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if sync:
            sync()
        t0 = time.perf_counter()
        step()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    if stat == "median":
        return statistics.median(times)
    return min(times)


def topk_sae(x, F, k, lr):
    d, dev = x.shape[1], x.device
    W_enc = torch.nn.Parameter(torch.empty(F, d, device=dev).uniform_(-d ** -0.5, d ** -0.5))
    W_dec = torch.nn.Parameter(W_enc.detach().clone() / W_enc.detach().norm(dim=1, keepdim=True))
    b_pre = torch.nn.Parameter(torch.zeros(d, device=dev))
    opt = torch.optim.Adam([W_enc, W_dec, b_pre], lr=lr)

    def step():
        opt.zero_grad()
        pre = torch.relu((x - b_pre) @ W_enc.T)
        vals, idx = pre.topk(k, dim=1)
        z = torch.zeros_like(pre).scatter(1, idx, vals)
        x_hat = z @ W_dec + b_pre
        loss = (x - x_hat).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([W_enc, W_dec, b_pre], 1.0)
        opt.step()
    return step


def scale_sae_dense(x, F, E, e, k, lr):
    d, dev = x.shape[1], x.device
    n = F // E
    W_enc = torch.nn.Parameter(torch.empty(F, d, device=dev).uniform_(-d ** -0.5, d ** -0.5))
    W_dec = torch.nn.Parameter(W_enc.detach().clone() / W_enc.detach().norm(dim=1, keepdim=True))
    W_r = torch.nn.Parameter(torch.empty(E, d, device=dev).uniform_(-d ** -0.5, d ** -0.5))
    b_pre = torch.nn.Parameter(torch.zeros(d, device=dev))
    omega = torch.nn.Parameter(torch.zeros(E, device=dev))
    params = [W_enc, W_dec, W_r, b_pre, omega]
    opt = torch.optim.Adam(params, lr=lr)

    def step():
        opt.zero_grad()
        p = torch.softmax((x - b_pre) @ W_r.T, dim=1)
        top_p, top_i = p.topk(e, dim=1)
        W = W_enc.view(E, n, d)
        mean = W.mean(dim=1, keepdim=True)
        W_hat = (mean + (1 + omega.view(E, 1, 1)) * (W - mean)).reshape(F, d)
        pre = torch.relu((x - b_pre) @ W_hat.T)                      # all experts, densely
        mask = torch.zeros_like(p).scatter(1, top_i, top_p)          # weight p_i on the chosen experts
        weights = mask.repeat_interleave(n, dim=1)
        masked = pre * (weights > 0)
        vals, idx = masked.topk(k, dim=1)
        z = torch.zeros_like(pre).scatter(1, idx, vals) * weights
        x_hat = z @ W_dec + b_pre
        frac = torch.zeros(E, device=dev).scatter_add(0, top_i.flatten(),
                                                      torch.ones(top_i.numel(), device=dev)) / top_i.numel()
        lb = E * (frac * p.mean(dim=0)).sum()
        loss = (x - x_hat).pow(2).mean() + 3.0 * lb
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--acts", required=True)
    ap.add_argument("--d", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--dict-size", type=int, required=True)
    ap.add_argument("--experts", type=int, required=True)
    ap.add_argument("--active", type=int, required=True)
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--which", default="topk,scale")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("--stat", choices=["best", "median"], default="best",
                    help="statistic over the timed steps (default: best, the fastest step)")
    ap.add_argument("--precision", choices=["fp32", "tf32"], default="fp32",
                    help="float32 matmul mode on a GPU: fp32 (exact) or tf32 (tensor cores); cuda only")
    a = ap.parse_args()
    gpu = a.device != "cpu"
    if gpu:
        if not a.device.startswith("cuda"):
            sys.exit(f"torch_reference.py: unknown --device '{a.device}' (expected cpu, cuda or cuda:N)")
        if not torch.cuda.is_available():
            sys.exit(f"torch_reference.py: --device {a.device} requested but torch {torch.__version__} sees no "
                     f"usable CUDA device (torch.cuda.is_available() is False; built for CUDA "
                     f"{torch.version.cuda or 'none: a CPU-only build'})")
        device = torch.device(a.device)
        if device.index is not None:  # plain "cuda": the current device (set_device wants an index)
            torch.cuda.set_device(device.index)
        torch.set_float32_matmul_precision("highest" if a.precision == "fp32" else "high")
        sync = torch.cuda.synchronize
    else:
        if a.precision != "fp32":
            sys.exit("torch_reference.py: --precision applies to --device cuda only")
        device = torch.device("cpu")
        sync = None
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.from_numpy(np.fromfile(a.acts, dtype=np.float32).reshape(-1, a.d)[: a.batch].copy()).to(device)
    lr = 2e-4 / (a.dict_size / 2 ** 14) ** 0.5
    out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if gpu:
        out.update({"device": str(device), "gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                    "precision": a.precision})
    if gpu or a.stat != "best":
        out["stat"] = a.stat
    if "topk" in a.which:
        t = timed_steps(topk_sae(x, a.dict_size, a.k, lr), a.steps, a.warmup, sync, a.stat)
        out["topk_tokens_per_s"] = a.batch / t
    if "scale" in a.which:
        t = timed_steps(scale_sae_dense(x, a.dict_size, a.experts, a.active, a.k, lr), a.steps, a.warmup, sync,
                        a.stat)
        out["scale_dense_tokens_per_s"] = a.batch / t
    print(json.dumps(out))


if __name__ == "__main__":
    main()
