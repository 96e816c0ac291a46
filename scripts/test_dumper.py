#!/usr/bin/env python3
"""Capture test for scripts/dump_activations.py (no download, CPU, ~1 min).

Builds a tiny randomly initialised Llama-style model from a config (2 layers, 4 query heads,
2 KV heads, head_dim 16, RoPE), dumps it with the real dumper (post-RoPE capture at the
attention interface, sdpa inside), and checks the dump against numbers the dumper never touches:
  1. dumped k, v == the keys/values the model itself caches (past_key_values), per sequence,
     from a separate eager-attention run of the same model;
  2. softmax(q Kᵀ/√D) V computed here from the dump (causal, GQA: query head g uses KV head
     g / (H_q/H_kv)) == the model's attention output (input of o_proj) to 1e-4;
  3. k_pre/q_pre rotated by the model's own RoPE == dumped k/q;
  4. the sequence table: offsets, q_offsets (queries for eval only), split, domain;
  5. with --dtype float16 / bfloat16, k equals the fp32 keys rounded to fp16 / bf16 bits;
  6. if SQEXP_BIN names an sqexp binary, `sqexp inspect` accepts the file.
Sequences have unequal lengths and batch size 2, so the right-padding path is exercised.
Prints one line per check and closes with 'N passed, N failed'; exit 1 on any failure.
"""
import os
import subprocess
import sys
import tempfile
import types

import h5py
import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dump_activations as da  # noqa: E402

TOL = 1e-4
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'}: {name}" + (f"  ({detail})" if detail else ""), flush=True)


class ByteTokenizer:
    """Test fixture: one token per UTF-8 byte (+3), BOS = 1, pad = 0."""
    bos_token_id, pad_token_id = 1, 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [b + 3 for b in text.encode("utf-8")]}


def tiny_model():
    torch.manual_seed(1234)
    cfg = transformers.LlamaConfig(vocab_size=260, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=16, max_position_embeddings=256, rope_theta=10000.0,
                                   attn_implementation="eager")
    model = transformers.LlamaForCausalLM(cfg).eval()
    # Larger-than-default weights so attention is far from uniform (a weak test otherwise).
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    return model


def write_texts(root):
    rng = np.random.default_rng(7)
    words = "alpha beta gamma delta key value query rope cache token head layer".split()
    for domain in ("prose", "code"):
        os.makedirs(os.path.join(root, domain))
        for i in range(4):
            n = [2, 9, 3, 12][i]  # some texts shorter than --max-tokens, some longer
            text = " ".join(rng.choice(words, n)) + (f"\ndef f{i}(x):\n    return x * {i}\n" if domain == "code" else ".")
            with open(os.path.join(root, domain, f"t{i}.txt"), "w") as f:
                f.write(text)


def reference(model, ids):
    """Eager run of one sequence: cached k/v per layer and the o_proj inputs."""
    model.set_attn_implementation("eager")
    o_in = {}
    hooks = [layer.self_attn.o_proj.register_forward_pre_hook(
        lambda mod, args, i=i: o_in.__setitem__(i, args[0].detach().clone()))
        for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
    for h in hooks:
        h.remove()
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    kv = {i: (cache.layers[i].keys[0].transpose(0, 1).numpy(), cache.layers[i].values[0].transpose(0, 1).numpy())
          for i in range(len(model.model.layers))}
    return kv, {i: o_in[i][0].numpy() for i in o_in}


def attention_from_dump(q, k, v):
    """q [n,Hq,D], k/v [n,Hkv,D] -> causal GQA attention output [n, Hq*D], float64."""
    n, hq, d = q.shape
    group = hq // k.shape[1]
    out = np.zeros((n, hq, d))
    mask = np.triu(np.ones((n, n), dtype=bool), 1)
    for g in range(hq):
        kk, vv = k[:, g // group].astype(np.float64), v[:, g // group].astype(np.float64)
        s = q[:, g].astype(np.float64) @ kk.T / np.sqrt(d)
        s[mask] = -np.inf
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[:, g] = p @ vv
    return out.reshape(n, hq * d)


def dump(model, tmp, out, dtype, extra=()):
    argv = ["--model", "tiny-random-llama", "--model-id", "test:tiny-llama",
            "--texts", f"prose={tmp}/prose", "--texts", f"code={tmp}/code",
            "--calib-texts", "3", "--eval-texts", "2", "--max-tokens", "48", "--min-tokens", "8",
            "--per-file", "1", "--batch-size", "2", "--dtype", dtype, "-o", out, *extra]
    args = da.build_parser().parse_args(argv)
    return da.run(args, model=model, tok=ByteTokenizer())


def main():
    model = tiny_model()
    with tempfile.TemporaryDirectory() as tmp:
        write_texts(tmp)
        out32 = os.path.join(tmp, "tiny32.h5")
        seqs = dump(model, tmp, out32, "float32", ["--pre-rope"])
        lens = [len(s["ids"]) for s in seqs]
        check("sequences of unequal length (padding exercised)", len(set(lens)) > 1, f"lengths {lens}")
        f = h5py.File(out32, "r")
        off, qoff = f["sequences/offsets"][:], f["sequences/q_offsets"][:]
        split, dom = f["sequences/split"][:], f["sequences/domain"][:]
        check("sequence table", list(off) == list(np.concatenate([[0], np.cumsum(lens)]))
              and list(split) == [0, 0, 0, 1, 1] and list(dom) == [0, 1, 0, 0, 1]
              and all((qoff[s + 1] - qoff[s]) == (lens[s] if split[s] else 0) for s in range(len(lens))),
              f"offsets {off.tolist()} q_offsets {qoff.tolist()} split {split.tolist()}")
        check("root attributes", f.attrs["format"] == "sqexp-activations" and f.attrs["format_version"] == 1
              and f.attrs["n_q_heads"] == 4 and f.attrs["n_kv_heads"] == 2 and f.attrs["head_dim"] == 16
              and f.attrs["kq_post_rope"] == 1 and f.attrs["rope"] == "rope" and list(f.attrs["layers"]) == [0, 1])
        worst_k = worst_o = worst_rope = 0.0
        rotary = model.model.rotary_emb
        for s, ids in enumerate(s_["ids"] for s_ in seqs):
            kv, o_ref = reference(model, ids)
            a, b = off[s], off[s + 1]
            for layer in (0, 1):
                g = f[f"layers/{layer}"]
                k, v = g["k"][a:b], g["v"][a:b]
                worst_k = max(worst_k, np.abs(k - kv[layer][0]).max(), np.abs(v - kv[layer][1]).max())
                if qoff[s + 1] > qoff[s]:
                    q = g["q"][qoff[s]:qoff[s + 1]]
                    worst_o = max(worst_o, np.abs(attention_from_dump(q, k, v) - o_ref[layer]).max())
                    qp = torch.from_numpy(g["q_pre"][qoff[s]:qoff[s + 1]]).transpose(0, 1)[None]
                    kp = torch.from_numpy(g["k_pre"][a:b]).transpose(0, 1)[None]
                    cos, sin = rotary(kp, torch.arange(b - a)[None])
                    qr, kr = transformers.models.llama.modeling_llama.apply_rotary_pos_emb(qp, kp, cos, sin)
                    worst_rope = max(worst_rope, np.abs(qr[0].transpose(0, 1).numpy() - q).max(),
                                     np.abs(kr[0].transpose(0, 1).numpy() - k).max())
        check("dumped k, v == model's cached k, v", worst_k < 1e-5, f"max |diff| {worst_k:.2e}")
        check("softmax(qK^T/sqrt(D))V from dump == attention output", worst_o < TOL, f"max |diff| {worst_o:.2e}")
        check("RoPE(k_pre, q_pre) == dumped k, q", worst_rope < 1e-5, f"max |diff| {worst_rope:.2e}")
        k32 = f["layers/1/k"][:]
        f.close()

        out16 = os.path.join(tmp, "tiny16.h5")
        dump(model, tmp, out16, "float16")
        with h5py.File(out16, "r") as g:
            k16 = g["layers/1/k"][:]
            ok = g["layers/1/k"].dtype == np.float16 and g["layers/1/k"].compression == "gzip"
        check("float16 storage == fp32 keys rounded to fp16", ok and np.array_equal(k16, k32.astype(np.float16)))
        outbf = os.path.join(tmp, "tinybf.h5")
        dump(model, tmp, outbf, "bfloat16")
        with h5py.File(outbf, "r") as g:
            ds = g["layers/1/k"]
            bits = ds[:]
            ok = ds.dtype == np.uint16 and int(ds.attrs.get("bfloat16", 0)) == 1
        want = torch.from_numpy(k32).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        check("bfloat16 storage: uint16 bits + attribute bfloat16=1", ok and np.array_equal(bits, want))
        check("no .partial file left", not any(n.endswith(".partial") for n in os.listdir(tmp)))

        bad = da.main(["--model", "x.gguf", "--layers", "0", "-o", os.path.join(tmp, "x.h5")])
        check("missing model file: exit 2, nothing written", bad == 2 and not os.path.exists(os.path.join(tmp, "x.h5")))

        sqexp = os.environ.get("SQEXP_BIN")
        if sqexp:
            for path in (out16, outbf):
                r = subprocess.run([sqexp, "inspect", path], capture_output=True, text=True)
                check(f"sqexp inspect accepts {os.path.basename(path)}", r.returncode == 0,
                      (r.stdout + r.stderr).strip()[-300:] if r.returncode else "")
    n_fail = results.count(False)
    print(f"{len(results) - n_fail} passed, {n_fail} failed")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
