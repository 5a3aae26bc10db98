#!/usr/bin/env python3
"""numpy peer of bench/bench_eval: the same metric definitions (docs/metrics.md), written plainly in numpy, on the
inputs bench_eval wrote. Prints one JSON line: timings (seconds) and results, which bench_eval compares with its own.

  redundancy     W_dec [F, d] float32 (raw file): rows normalised, cosine blocks U[b] @ U.T (every block, the full
                 F x F product), diagonal excluded, row max; fraction of latents with max > threshold. Intra-expert:
                 U_g @ U_g.T per expert. Inter-expert: the same on the random groups of the permutation (raw int64
                 file) that bench_eval used.
  similarity     a sparse code ids [N, k] int32 (raw file; -1 = empty): Eq. A.3 by counting (np.bincount of the
                 latent ids: sum_f c_f (c_f - 1) / (N (N - 1) K)), and the Appendix D histogram of k_ij = |S_i ∩ S_j|
                 over all pairs i < j as a sparse product A A^T of the binary token x latent matrix (scipy.sparse, in row
                 blocks, upper triangle), the zero-overlap pairs being the rest.
"""
import argparse
import json
import time

import numpy as np


def unit_rows(w):
    n = np.sqrt((w.astype(np.float64) ** 2).sum(axis=1))
    n[n == 0] = 1.0
    return (w / n[:, None].astype(np.float32)).astype(np.float32)


def max_cosine_groups(u, groups, block):
    """Per row: max cosine to another row of the same group (groups: list of index arrays)."""
    best = np.empty(u.shape[0], dtype=np.float32)
    for g in groups:
        ug = u[g]
        for b0 in range(0, len(g), block):
            c = ug[b0:b0 + block] @ ug.T
            rows = np.arange(c.shape[0])
            c[rows, b0 + rows] = -np.inf
            best[g[b0:b0 + block]] = c.max(axis=1)
    return best


def redundancy(args):
    w = np.fromfile(args.w_dec, dtype=np.float32).reshape(args.latents, args.d)
    out = {}
    t = time.perf_counter()
    u = unit_rows(w)
    glob = max_cosine_groups(u, [np.arange(args.latents)], args.block)
    out["global_s"] = time.perf_counter() - t
    out["redundant"] = int((glob > args.threshold).sum())
    out["mean_max_cosine"] = float(glob.mean())
    n = args.latents // args.experts
    t = time.perf_counter()
    intra = max_cosine_groups(u, [np.arange(e * n, (e + 1) * n) for e in range(args.experts)], args.block)
    perm = np.fromfile(args.perm, dtype=np.int64)
    inter = max_cosine_groups(u, [perm[e * n:(e + 1) * n] for e in range(args.experts)], args.block)
    out["experts_s"] = time.perf_counter() - t
    out["intra_redundant"] = int((intra > args.threshold).sum())
    out["inter_redundant"] = int((inter > args.threshold).sum())
    out["max_cosine_sum"] = float(glob.astype(np.float64).sum())
    return out


def similarity(args):
    ids = np.fromfile(args.ids, dtype=np.int32).reshape(args.tokens, args.k)
    out = {}
    t = time.perf_counter()
    valid = ids >= 0
    c = np.bincount(ids[valid], minlength=args.latents).astype(np.int64)
    n = args.tokens
    out["eq_a3"] = float((c * (c - 1)).sum()) / (n * (n - 1) * args.k)
    out["eq_a3_s"] = time.perf_counter() - t
    try:
        import scipy.sparse as sp
    except ImportError:
        out["histogram_s"] = -1.0
        return out
    h = n if args.overlap_tokens <= 0 else min(n, args.overlap_tokens)
    t = time.perf_counter()
    sub, ok = ids[:h], valid[:h]
    rows = np.repeat(np.arange(h), args.k)[ok.ravel()]
    a = sp.csr_matrix((np.ones(rows.size, dtype=np.int32), (rows, sub[ok])), shape=(h, args.latents))
    a.sum_duplicates()
    a.data[:] = 1
    at = a.T.tocsr()
    hist = np.zeros(args.k + 1, dtype=np.int64)
    for b0 in range(0, h, args.row_block):
        g = (a[b0:b0 + args.row_block] @ at).tocoo()  # k_ij for the block's rows i against every j
        keep = g.col > g.row + b0  # pairs i < j
        hist += np.bincount(g.data[keep], minlength=args.k + 1)[:args.k + 1]
    hist[0] = h * (h - 1) // 2 - hist[1:].sum()
    out["histogram_s"] = time.perf_counter() - t
    out["histogram"] = hist.tolist()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--w-dec")
    p.add_argument("--perm")
    p.add_argument("--latents", type=int, required=True)
    p.add_argument("--d", type=int, default=0)
    p.add_argument("--experts", type=int, default=1)
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--block", type=int, default=2048)
    p.add_argument("--ids")
    p.add_argument("--tokens", type=int, default=0)
    p.add_argument("--k", type=int, default=0)
    p.add_argument("--overlap-tokens", type=int, default=0)
    p.add_argument("--row-block", type=int, default=1000)
    args = p.parse_args()
    out = {"numpy": np.__version__}
    if args.w_dec:
        out.update(redundancy(args))
    if args.ids:
        out.update(similarity(args))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
