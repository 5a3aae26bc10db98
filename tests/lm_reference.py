#!/usr/bin/python3
"""Independent numpy reference for moesae's llama2.c runtime (tests/test_lm_llama.cpp runs it).

Reads a llama2.c checkpoint and tokenizer, tokenizes the first --docs documents of a text file (blank-line
separated), runs the Llama-2 forward in float64 over contexts of --ctx tokens and prints JSON:
{"ce": mean next-token CE, "predicted": n, "tokens": ids of the first document}. With --logits-out, the logits of
the first context ([T, vocab], float64 little-endian) are written there.
"""
import argparse
import json
import struct
import sys

import numpy as np


def load_model(path):
    raw = open(path, "rb").read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    w = np.frombuffer(raw, dtype="<f4", offset=28).astype(np.float64)
    hs = dim // n_heads
    kv = hs * n_kv
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        a = w[pos:pos + n].reshape(shape)
        pos += n
        return a

    m = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv, vocab=vocab, seq_len=seq_len)
    m["emb"] = take(vocab, dim)
    m["rms_att"] = take(n_layers, dim)
    m["wq"] = take(n_layers, dim, dim)
    m["wk"] = take(n_layers, kv, dim)
    m["wv"] = take(n_layers, kv, dim)
    m["wo"] = take(n_layers, dim, dim)
    m["rms_ffn"] = take(n_layers, dim)
    m["w1"] = take(n_layers, hidden, dim)
    m["w2"] = take(n_layers, dim, hidden)
    m["w3"] = take(n_layers, hidden, dim)
    m["rms_final"] = take(dim)
    take(seq_len * hs)  # RoPE tables (real + imag), recomputed below
    m["cls"] = m["emb"] if shared else take(vocab, dim)
    assert pos == w.size, (pos, w.size)
    return m


def rmsnorm(x, g):
    return g * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5)


def rotate(x, n_heads_here, hs):
    # x: [T, n_heads_here * hs]; complex rotation of pairs (2i, 2i+1) by pos * 10000^(-2i/hs)
    T = x.shape[0]
    xr = x.reshape(T, n_heads_here, hs // 2, 2)
    c = xr[..., 0] + 1j * xr[..., 1]
    freqs = 10000.0 ** (-np.arange(0, hs, 2) / hs)
    ang = np.arange(T)[:, None] * freqs[None, :]
    c = c * np.exp(1j * ang)[:, None, :]
    out = np.stack([c.real, c.imag], axis=-1)
    return out.reshape(T, -1)


def forward(m, tokens):
    T = len(tokens)
    dim, nh, nkv = m["dim"], m["n_heads"], m["n_kv"]
    hs = dim // nh
    x = m["emb"][tokens].copy()
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for l in range(m["n_layers"]):
        h = rmsnorm(x, m["rms_att"][l])
        q = rotate(h @ m["wq"][l].T, nh, hs).reshape(T, nh, hs)
        k = rotate(h @ m["wk"][l].T, nkv, hs).reshape(T, nkv, hs)
        v = (h @ m["wv"][l].T).reshape(T, nkv, hs)
        rep = nh // nkv
        k = np.repeat(k, rep, axis=1)
        v = np.repeat(v, rep, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hs) + mask
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        o = np.einsum("hts,shd->thd", s, v).reshape(T, dim)
        x = x + o @ m["wo"][l].T
        h = rmsnorm(x, m["rms_ffn"][l])
        a = h @ m["w1"][l].T
        g = a / (1 + np.exp(-a)) * (h @ m["w3"][l].T)
        x = x + g @ m["w2"][l].T
    return rmsnorm(x, m["rms_final"]) @ m["cls"].T


def load_tokenizer(path, vocab):
    raw = open(path, "rb").read()
    off = 4
    pieces, scores = [], []
    for _ in range(vocab):
        score, n = struct.unpack("<fi", raw[off:off + 8])
        off += 8
        pieces.append(raw[off:off + n])
        scores.append(score)
        off += n
    index = {}
    for i, p in enumerate(pieces):
        index.setdefault(p, i)
    return pieces, scores, index


def encode(tok, text):
    pieces, scores, index = tok
    ids = [1]
    data = text.encode("utf-8")
    if data:
        ids.append(index[b" "])
    for ch in text:  # one code point at a time
        b = ch.encode("utf-8")
        if b in index:
            ids.append(index[b])
        else:
            ids.extend(x + 3 for x in b)
    while True:
        best, where = None, None
        for i in range(len(ids) - 1):
            j = index.get(pieces[ids[i]] + pieces[ids[i + 1]])
            if j is not None and (best is None or scores[j] > scores[best]):
                best, where = j, i
        if best is None:
            break
        ids[where:where + 2] = [best]
    return ids


def documents(text):
    docs, cur = [], []
    for line in text.split("\n"):
        if line.strip(" \t\r") == "":
            docs.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    docs.append("\n".join(cur))
    return [d.strip(" \t\r\n") for d in docs if d.strip(" \t\r\n")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--docs", type=int, default=10)
    ap.add_argument("--ctx", type=int, default=64)
    ap.add_argument("--logits-out")
    args = ap.parse_args()
    m = load_model(args.model)
    tok = load_tokenizer(args.tokenizer, m["vocab"])
    docs = documents(open(args.text, encoding="utf-8").read())[: args.docs]
    total, n, first_tokens, first_logits = 0.0, 0, None, None
    for d in docs:
        ids = encode(tok, d)
        if first_tokens is None:
            first_tokens = ids
        for start in range(0, len(ids) - 1, args.ctx):
            win = ids[start:start + args.ctx]
            logits = forward(m, win)
            if first_logits is None:
                first_logits = logits
            for j in range(len(win)):
                if start + j + 1 >= len(ids):
                    break
                row = logits[j]
                mx = row.max()
                total += mx + np.log(np.exp(row - mx).sum()) - row[ids[start + j + 1]]
                n += 1
    if args.logits_out:
        first_logits.astype("<f8").tofile(args.logits_out)
    json.dump({"ce": total / n, "predicted": n, "tokens": first_tokens}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
