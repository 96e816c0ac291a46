#!/usr/bin/env python3
"""torch_sweep.py: the sqexp grid sweep written the way a researcher writes it in PyTorch, to
measure sqexp's speed-up against (issue 6). Same dump, same config grid, same protocols (attn with
causal masks, randq, probs), same metrics, the same methods (methods.md) -- but per-head Python
loops over layers, KV heads, grid points and sequences, with torch doing the math on the GPU:
dense T x T score matrices per sequence, torch.linalg.eigh for calibration, Python water-filling,
torch.bucketize for the codebooks. Random draws use torch generators (not sqexp's xoshiro), so
numbers agree with sqexp statistically, not bit for bit; this is a timing baseline.

usage: torch_sweep.py DUMP [--config configs/mistral.ini] [--layers N] [--heads N] [--repeat R]
                      [--sqexp-seconds S] [--device cuda]
       torch_sweep.py make-dump PATH [--tokens 24576] [--layers 32] [--device cuda]
Runs the first N stored layers (default 2) x all KV heads x the full grid and extrapolates its
time linearly to all stored layers and heads (the work per (layer, head) is the same). One-time
costs must not be extrapolated, so a first pass (CUDA context, cuBLAS/cuSOLVER handles, the
caching allocator, the page cache) is untimed; then R passes (default 2) are timed and the
fastest is the baseline. With --sqexp-seconds, prints the ratio to sqexp's wall time.
"""
import argparse
import configparser
import math
import sys
import time

import h5py
import numpy as np
import torch


# ---------------------------------------------------------------- config grid (methods.md)
def ilist(s, none_ok=False):
    out = []
    for x in s.split(","):
        x = x.strip()
        if x == "none" and none_ok:
            out.append(None)
        elif x in ("true", "false"):
            out.append(x == "true")
        else:
            out.append(int(x) if x.lstrip("-").isdigit() else float(x))
    return out


def read_grid(path):
    cp = configparser.ConfigParser(inline_comment_prefixes=(";",))
    cp.read(path)
    arms = [a.strip() for a in cp["run"].get("arms", "tq,sq,sq_paper_v1,lowrank").split(",")]
    grid = []
    if "tq" in arms:
        t = cp["tq"]
        for b in ilist(t.get("total_bits", "3")):
            for var in t.get("variant", "prod").split(","):
                for rot in t.get("rotation", "haar").split(","):
                    for cb in t.get("codebook", "beta").split(","):
                        grid.append(dict(arm="tq", b=b, variant=var.strip(), rot=rot.strip(), cb=cb.strip()))
    if "sq" in arms:
        s = cp["sq"]
        for b in ilist(s.get("total_bits", "3")):
            for nb in ilist(s.get("noise_bits", "none"), True):
                for tau in ilist(s.get("d_eff_variance", "0.9")):
                    for wf in ilist(s.get("use_water_fill", "true")):
                        for qjl in ilist(s.get("use_qjl", "false")):
                            grid.append(dict(arm="sq", b=b, nb=nb, tau=tau, wf=bool(wf), qjl=bool(qjl)))
    if "sq_paper_v1" in arms:
        for b in ilist(cp["sq_paper_v1"].get("total_bits", "3")):
            grid.append(dict(arm="sq_paper_v1", b=b))
    if "lowrank" in arms:
        lr = cp["lowrank"]
        for r in ilist(lr.get("rank", "0")):
            for tau in (ilist(lr.get("d_eff_variance", "0.9")) if r == 0 else [0.9]):
                grid.append(dict(arm="lowrank", rank=r, tau=tau))
    run = cp["run"]
    return grid, dict(randq=int(run.get("randq_queries", "8")), probs_last=int(run.get("probs_last", "4")),
                      topk=int(run.get("topk", "8")), seed=int(run.get("seed", "42")))


# ---------------------------------------------------------------- codebooks (Lloyd-Max)
_CB = {}


def lloyd(bits, density, lo, hi, iters=200):
    """Lloyd-Max centroids/boundaries for a density on [lo, hi] (fine grid, numpy)."""
    key = (bits, density.__name__ if hasattr(density, "__name__") else str(density), lo, hi)
    if key in _CB:
        return _CB[key]
    x = np.linspace(lo, hi, 20001)
    w = density(x)
    w = w / w.sum()
    n = 2 ** bits
    c = np.interp(np.linspace(0.5 / n, 1 - 0.5 / n, n), np.cumsum(w), x)
    for _ in range(iters):
        b = (c[1:] + c[:-1]) / 2
        idx = np.searchsorted(b, x)
        num = np.bincount(idx, weights=w * x, minlength=n)
        den = np.bincount(idx, weights=w, minlength=n)
        c = np.where(den > 0, num / np.maximum(den, 1e-300), c)
    b = (c[1:] + c[:-1]) / 2
    _CB[key] = (c, b)
    return c, b


def gauss_cb(bits):
    def gauss(x):
        return np.exp(-x * x / 2)
    return lloyd(bits, gauss, -8.0, 8.0)


def beta_cb(bits, D):
    def beta(x, D=D):
        return np.clip(1 - x * x, 0, None) ** ((D - 3) / 2)
    beta.__name__ = "beta%d" % D
    return lloyd(bits, beta, -1.0, 1.0)


def quantize(y, bits, scale, dev):
    """Per-coordinate scalar quantisation: y [n, D], bits [D] ints, scale [D]. Returns y^."""
    out = torch.zeros_like(y)
    for b in sorted(set(int(v) for v in bits)):
        cols = [i for i in range(len(bits)) if int(bits[i]) == b]
        ci = torch.tensor(cols, device=dev)
        if b == 0:
            continue
        if b == 16:
            out[:, ci] = y[:, ci].half().float()
            continue
        c, bd = gauss_cb(b)
        c = torch.tensor(c, device=dev, dtype=torch.float32)
        bd = torch.tensor(bd, device=dev, dtype=torch.float32)
        s = scale[ci]
        idx = torch.bucketize((y[:, ci] / s).contiguous(), bd, right=True)
        out[:, ci] = c[idx] * s
    return out


# ---------------------------------------------------------------- methods
def calibrate(x):
    """x [n, D] float32 -> eigenvalues (desc, clamped) and eigenvectors (rows), as methods.md §1."""
    C = (x.double().T @ x.double()) / x.shape[0]
    lam, E = torch.linalg.eigh(C)
    lam = lam.flip(0).clamp(min=0)
    E = E.flip(1).T.contiguous()
    sgn = torch.sign(E.gather(1, E.abs().argmax(1, keepdim=True)))
    E = E * torch.where(sgn == 0, torch.ones_like(sgn), sgn)
    return lam, E.float()


def d_eff(lam, tau):
    D = lam.numel()
    tot = lam.sum().item()
    if tot <= 1e-12:
        return 2
    cum = torch.cumsum(lam, 0) / tot
    d = int((cum < tau).sum().item()) + 1
    return min(max(d, 2), D - 2)


def water_fill(lam, d, budget, lo, hi):
    bits = [lo] * d
    l = [max(float(v), 1e-12) for v in lam[:d]]
    for _ in range(budget - d * lo):
        best, bi = -1.0, -1
        for i in range(d):
            if bits[i] < hi and l[i] / 4 ** bits[i] > best:
                best, bi = l[i] / 4 ** bits[i], i
        bits[bi] += 1
    return bits


def haar(D, gen, dev):
    A = torch.randn(D, D, generator=gen, device=dev, dtype=torch.float64)
    Q, R = torch.linalg.qr(A)
    return (Q * torch.sign(torch.diagonal(R))).float()


def make_plan(g, D, lamk, Ek, lamv, Ev, layer, head, seed, dev):
    """Returns dict with key/value encoders: functions x -> (x^, score key) per method."""
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed + 1000 * layer + head)
    P = dict()
    if g["arm"] == "tq":
        rot = haar(D, gen, dev)
        b = g["b"]
        cbfun = (lambda bb: beta_cb(bb, D)) if g["cb"] == "beta" else \
            (lambda bb: tuple(v / math.sqrt(D) for v in gauss_cb(bb)))

        def mse(x, bb):
            n = x.norm(dim=1, keepdim=True)
            u = x / n.clamp(min=1e-30)
            y = u @ rot.T
            if bb == 0:
                return torch.zeros_like(x), n
            c, bd = cbfun(bb)
            c = torch.tensor(c, device=dev, dtype=torch.float32)
            bd = torch.tensor(bd, device=dev, dtype=torch.float32)
            yh = c[torch.bucketize(y.contiguous(), bd, right=True)]
            nh = n.half().float()
            return (yh @ rot) * nh, nh

        S = torch.randn(D, D, generator=gen, device=dev)
        if g["variant"] == "prod":
            def enc_k(x):
                xh, _ = mse(x, b - 1)
                r = x - xh
                sg = torch.where(r @ S.T < 0, -1.0, 1.0)
                rn = r.norm(dim=1, keepdim=True).half().float()
                return xh, xh + math.sqrt(math.pi / 2) / D * rn * (sg @ S)
        else:
            def enc_k(x):
                xh, _ = mse(x, b)
                return xh, xh
        P["k"] = enc_k
        P["v"] = lambda x: mse(x, b)[0]
        return P
    if g["arm"] in ("sq", "lowrank"):
        dk, dv = d_eff(lamk, g["tau"]), d_eff(lamv, g["tau"])
    if g["arm"] == "lowrank":
        rk = g["rank"] or dk
        rv = g["rank"] or dv

        def lr(E, r):
            def f(x):
                y = x @ E.T
                y[:, r:] = 0
                return y.half().float() @ E
            return f
        fk = lr(Ek, rk)
        P["k"] = lambda x: (lambda xh: (xh, xh))(fk(x))
        P["v"] = lr(Ev, rv)
        return P
    if g["arm"] == "sq_paper_v1":
        b = g["b"]
        scale = torch.full((D,), 1 / math.sqrt(D), device=dev)

        def v1(x, bb):
            n = x.norm(dim=1, keepdim=True)
            y = (x / n.clamp(min=1e-30)) @ Ek.T
            yh = quantize(y, [bb] * D, scale, dev)
            return (yh @ Ek) * n.half().float()
        P["k"] = lambda x: (lambda xh: (xh, xh))(v1(x, b - 1))
        P["v"] = lambda x: v1(x, b)
        return P
    # sq (the seed engine's semantics, methods.md §4)
    b, nb = g["b"], g["nb"]
    if nb is not None:
        blow = max(1, nb)
        bhigh = b + 1
    else:
        blow = max(1, int(round(b - dk / D)))
        bhigh = blow + 1
    mse_hi = max(bhigh - 1, 1)

    def side(lam, E, d, hi_bits, lo_bits):
        sig = torch.sqrt(torch.clamp(lam.float(), min=1.0 / D))
        if g["wf"] and d > 1:
            sb = water_fill(lam, d, d * hi_bits, 1, hi_bits + 2)
            ssc = torch.sqrt(torch.clamp(lam[:d].float(), min=1e-8))
        else:
            sb = [hi_bits] * d
            ssc = torch.full((d,), math.sqrt(max(lam[:d].mean().item(), 1e-8)), device=dev)
        bits = sb + [lo_bits] * (D - d)
        scale = torch.cat([ssc, sig[d:]])
        return lambda x: quantize(x @ E.T, bits, scale, dev) @ E

    fk = side(lamk, Ek, dk, mse_hi, blow)
    fv = side(lamv, Ev, dv, bhigh, blow)
    if g["qjl"]:
        Ssem = torch.randn(dk, D, generator=gen, device=dev)

        def enc_k(x):
            xh = fk(x)
            r = x - xh
            sg = torch.where(r @ Ssem.T < 0, -1.0, 1.0)
            rn = r.norm(dim=1, keepdim=True).half().float()
            return xh, xh + math.sqrt(math.pi / 2) / dk * rn * (sg @ Ssem)
        P["k"] = enc_k
    else:
        P["k"] = lambda x: (lambda xh: (xh, xh))(fk(x))
    P["v"] = fv
    return P


def cosr(a, b):
    num = (a * b).sum(-1)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(den > 0, num / den.clamp(min=1e-30), torch.zeros_like(num))


# ---------------------------------------------------------------- a fast synthetic dump (GPU)
def make_dump(path, tokens, seq_len, calib_frac, n_layers, Hq, Hkv, D, seed, dev):
    """Write a Mistral-shaped synthetic dump (docs/dump-format.md) generated on the GPU, with the
    structure `sqexp synth` documents (src/synth.h): per (layer, KV head) keys = a few dominant
    directions in the lowest-frequency RoPE pairs plus a power-law tail in a random orthonormal
    basis, values a flatter spectrum in their own basis, the group's queries fixed mixtures of the
    dominant key directions + per-token jitter + noise, RoPE (theta 10000) on keys and queries.
    float16, stored uncompressed: `sqexp synth` (gzip level 4, one core) takes ~9 minutes for
    this size on the GPU machine, which does not fit one 10-minute call with the sweep; this takes
    seconds. Not bit-identical to `sqexp synth` (different generator), same shapes and kind."""
    import json
    g = torch.Generator(device=dev)
    g.manual_seed(seed)
    n_seq = (tokens + seq_len - 1) // seq_len
    off = np.minimum(np.arange(n_seq + 1, dtype=np.int64) * seq_len, tokens)
    n_cal = int(round(calib_frac * n_seq))
    n_cal = min(max(n_cal, 1), n_seq - 1)
    split = np.array([0] * n_cal + [1] * (n_seq - n_cal), dtype=np.uint8)
    lens = off[1:] - off[:-1]
    qoff = np.concatenate([[0], np.cumsum(np.where(split == 1, lens, 0))]).astype(np.int64)
    pos = torch.from_numpy(np.concatenate([np.arange(l) for l in lens])).to(dev).float()
    qtok = torch.from_numpy(np.concatenate([np.arange(off[s], off[s + 1]) for s in range(n_seq) if split[s]])).to(dev)
    half = D // 2
    inv = 10000.0 ** (-2.0 * torch.arange(half, device=dev).float() / D)

    def rope(x, p):  # x [T, H, D], p [T]
        a = p[:, None] * inv[None, :]
        c, s_ = torch.cos(a)[:, None, :], torch.sin(a)[:, None, :]
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * c - x2 * s_, x1 * s_ + x2 * c], -1)

    tmp = path + ".partial"
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = "sqexp-activations"
        f.attrs["format_version"] = 1
        f.attrs["model_id"] = "synthetic:mistral-7b (torch_sweep.py make-dump)"
        f.attrs["n_layers"] = n_layers
        f.attrs["n_q_heads"] = Hq
        f.attrs["n_kv_heads"] = Hkv
        f.attrs["head_dim"] = D
        f.attrs["rope"] = "rope"
        f.attrs["kq_post_rope"] = 1
        f.attrs["dtype"] = "float16"
        f.attrs["layers"] = np.arange(n_layers, dtype=np.int32)
        f.attrs["provenance"] = json.dumps({"tool": "scripts/torch_sweep.py make-dump", "seed": seed,
                                            "tokens": tokens, "seq_len": seq_len, "calib_frac": calib_frac})
        sq = f.create_group("sequences")
        sq["offsets"] = off
        sq["split"] = split
        sq["q_offsets"] = qoff
        G = Hq // Hkv
        lowfreq = torch.cat([torch.arange(half - 8, half), torch.arange(D - 8, D)]).to(dev)
        for L in range(n_layers):
            n_dom = 3 + L % 4
            K = torch.empty(tokens, Hkv, D, device=dev)
            V = torch.empty(tokens, Hkv, D, device=dev)
            Qe = torch.empty(len(qtok), Hq, D, device=dev)
            for h in range(Hkv):
                A = torch.randn(D, D, generator=g, device=dev)
                mask = torch.zeros(D, device=dev)
                mask[lowfreq] = 1
                A[:, :n_dom] *= mask[:, None]
                B, _ = torch.linalg.qr(A)                      # columns: basis, dominant first
                lam = torch.cat([torch.linspace(30, 8, n_dom, device=dev),
                                 0.5 / (torch.arange(D - n_dom, device=dev).float() + 1) ** 1.1])
                z = torch.randn(tokens, D, generator=g, device=dev) * lam.sqrt()
                K[:, h] = z @ B.T
                Bv, _ = torch.linalg.qr(torch.randn(D, D, generator=g, device=dev))
                lv = 1.0 / (torch.arange(D, device=dev).float() + 1) ** 0.5
                V[:, h] = (torch.randn(tokens, D, generator=g, device=dev) * lv.sqrt()) @ Bv.T
                for gi in range(G):
                    mix = torch.randn(n_dom, generator=g, device=dev)
                    coef = mix[None, :] * (1 + 0.3 * torch.randn(len(qtok), n_dom, generator=g, device=dev))
                    Qe[:, h * G + gi] = coef @ B[:, :n_dom].T * 2 + 0.5 * torch.randn(len(qtok), D, generator=g, device=dev)
            K = rope(K, pos)
            Qe = rope(Qe, pos[qtok])
            grp = f.create_group(f"layers/{L}")
            grp["k"] = K.half().cpu().numpy()
            grp["v"] = V.half().cpu().numpy()
            grp["q"] = Qe.half().cpu().numpy()
    import os
    os.replace(tmp, path)
    print(f"make-dump: {path}: {n_layers} layers, {tokens} tokens ({n_cal} calibration / {n_seq - n_cal} "
          f"evaluation sequences of {seq_len})")


# ---------------------------------------------------------------- the sweep
def main():
    if len(sys.argv) > 1 and sys.argv[1] == "make-dump":
        ap = argparse.ArgumentParser(prog="torch_sweep.py make-dump")
        ap.add_argument("cmd")
        ap.add_argument("path")
        ap.add_argument("--tokens", type=int, default=24576)
        ap.add_argument("--seq-len", type=int, default=1024)
        ap.add_argument("--calib-frac", type=float, default=0.34)
        ap.add_argument("--layers", type=int, default=32)
        ap.add_argument("--seed", type=int, default=42)
        ap.add_argument("--device", default="cuda")
        a = ap.parse_args()
        t0 = time.time()
        make_dump(a.path, a.tokens, a.seq_len, a.calib_frac, a.layers, 32, 8, 128, a.seed, torch.device(a.device))
        print(f"make-dump: {time.time() - t0:.1f} s")
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--config", default="configs/mistral.ini")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=0)
    ap.add_argument("--sqexp-seconds", type=float, default=0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    dev = torch.device(a.device)
    grid, run = read_grid(a.config)
    f = h5py.File(a.dump, "r")
    Hq, Hkv, D = int(f.attrs["n_q_heads"]), int(f.attrs["n_kv_heads"]), int(f.attrs["head_dim"])
    layers = list(np.atleast_1d(f.attrs["layers"]))
    off = f["sequences/offsets"][:]
    split = f["sequences/split"][:]
    qoff = f["sequences/q_offsets"][:]
    G = Hq // Hkv
    cal = [s for s in range(len(split)) if split[s] == 0]
    ev = [s for s in range(len(split)) if split[s] == 1]
    n_layers = min(a.layers, len(layers))
    n_heads = a.heads or Hkv
    print(f"torch sweep: {len(grid)} grid points x {n_layers} of {len(layers)} layers x {n_heads} KV heads, "
          f"{sum(off[s+1]-off[s] for s in ev)} eval / {sum(off[s+1]-off[s] for s in cal)} calib tokens, "
          f"{torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'cpu'}", flush=True)
    times = []
    for rep in range(1 + max(a.repeat, 1)):
        t_start = time.time()
        rows = sweep_subset(a, f, dev, grid, run, layers, n_layers, n_heads, off, qoff, cal, ev, G, D)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.time() - t_start
        print(f"pass {rep}: {t:.2f} s" + (" (warm-up, untimed)" if rep == 0 else ""), flush=True)
        if rep > 0:
            times.append(t)
    elapsed = min(times)
    full = elapsed * len(layers) / n_layers * Hkv / n_heads
    by_arm = {}
    for r in rows:
        by_arm.setdefault(r[2]["arm"], []).append(r[3])
    print("mean attn cos by arm: " + "  ".join(f"{k} {np.mean(v):.4f}" for k, v in by_arm.items()))
    print(f"torch sweep: {n_layers} layers x {n_heads} heads in {elapsed:.1f} s (fastest of "
          f"{', '.join(f'{t:.2f}' for t in times)} s after a warm-up pass) -> all {len(layers)} layers x "
          f"{Hkv} heads extrapolated linearly: {full:.0f} s")
    if a.sqexp_seconds > 0:
        print(f"sqexp run (full grid, all layers): {a.sqexp_seconds:.1f} s -> speed-up {full / a.sqexp_seconds:.1f}x")


def sweep_subset(a, f, dev, grid, run, layers, n_layers, n_heads, off, qoff, cal, ev, G, D):
    """The timed work: n_layers x n_heads x the grid, as a researcher's loops; returns the rows."""
    rows = []
    for li in range(n_layers):
        L = layers[li]
        t_layer = time.time()
        g5 = f[f"layers/{L}"]
        K = torch.from_numpy(g5["k"][:].astype(np.float32)).to(dev)
        V = torch.from_numpy(g5["v"][:].astype(np.float32)).to(dev)
        Q = torch.from_numpy(g5["q"][:].astype(np.float32)).to(dev)
        cal_idx = torch.cat([torch.arange(off[s], off[s + 1]) for s in cal]).to(dev)
        for h in range(n_heads):
            lamk, Ek = calibrate(K[cal_idx, h])
            lamv, Ev = calibrate(V[cal_idx, h])
            # reference per sequence (computed once per head)
            ref = []
            for s in ev:
                k = K[off[s]:off[s + 1], h]
                v = V[off[s]:off[s + 1], h]
                q = Q[qoff[s]:qoff[s + 1], h * G:(h + 1) * G].transpose(0, 1)  # [G, T, D]
                T = k.shape[0]
                mask = torch.ones(T, T, device=dev, dtype=torch.bool).tril()
                sc = (q @ k.T).masked_fill(~mask, float("-inf"))
                p = torch.softmax(sc / math.sqrt(D), -1)
                gen = torch.Generator(device=dev)
                gen.manual_seed(run["seed"] + 1000 * int(L) + h)
                rq = torch.randn(run["randq"], D, generator=gen, device=dev)
                pr = torch.softmax((rq @ k.T) / math.sqrt(D), -1)
                ref.append((k, v, q, mask, sc, p, p @ v, rq, pr @ v))
            for gp in grid:
                P = make_plan(gp, D, lamk, Ek, lamv, Ev, int(L), h, run["seed"], dev)
                acc = dict(attn=0.0, n=0, randq=0.0, nr=0, probs=0.0, ns=0, topk=0.0, kc=0.0, vc=0.0,
                           ssum=0.0, shsum=0.0, ss=0.0, ssh=0.0, npairs=0)
                for (k, v, q, mask, sc, p, o, rq, orq) in ref:
                    kh, keff = P["k"](k)
                    vh = P["v"](v)
                    acc["kc"] += cosr(k, kh).sum().item()
                    acc["vc"] += cosr(v, vh).sum().item()
                    sch = (q @ keff.T).masked_fill(~mask, float("-inf"))
                    ph = torch.softmax(sch / math.sqrt(D), -1)
                    oh = ph @ vh
                    acc["attn"] += cosr(o, oh).sum().item()
                    acc["n"] += o.shape[0] * o.shape[1]
                    s_, h_ = sc[:, mask], sch[:, mask]
                    acc["ssum"] += s_.sum().item()
                    acc["shsum"] += h_.sum().item()
                    acc["ss"] += (s_ * s_).sum().item()
                    acc["ssh"] += (s_ * h_).sum().item()
                    acc["npairs"] += s_.numel()
                    kk = min(run["topk"], p.shape[-1])
                    t1 = p.topk(kk, -1).indices
                    t2 = ph.topk(kk, -1).indices
                    hit = (t1.unsqueeze(-1) == t2.unsqueeze(-2)).any(-1).float().sum(-1)
                    denom = torch.clamp(torch.arange(1, p.shape[1] + 1, device=dev), max=run["topk"])
                    acc["topk"] += (hit / denom).sum().item()
                    P4 = min(run["probs_last"], p.shape[1])
                    acc["probs"] += cosr(p[:, -P4:].reshape(1, -1), ph[:, -P4:].reshape(1, -1)).item()
                    acc["ns"] += 1
                    prh = torch.softmax((rq @ keff.T) / math.sqrt(D), -1)
                    acc["randq"] += cosr(orq, prh @ vh).sum().item()
                    acc["nr"] += rq.shape[0]
                N = acc["npairs"]
                slope = (N * acc["ssh"] - acc["ssum"] * acc["shsum"]) / max(N * acc["ss"] - acc["ssum"] ** 2, 1e-30)
                rows.append((int(L), h, gp, acc["attn"] / acc["n"], acc["randq"] / acc["nr"], acc["probs"] / acc["ns"],
                             acc["topk"] / acc["n"], (acc["shsum"] - acc["ssum"]) / N, slope))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        print(f"layer {L}: {time.time() - t_layer:.1f} s ({n_heads} heads x {len(grid)} points)", flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
