#!/usr/bin/env python3
"""Dump the keys, values and queries a causal LM's attention consumes, in the sqexp activation
dump format (docs/dump-format.md).

Capture point: a custom attention function registered in transformers' AttentionInterface. The
model's own attention module calls it with the query/key/value tensors exactly as attention
consumes them (after RoPE, before GQA repetition); it records them and then calls the stock
sdpa/eager implementation, so the forward pass is unchanged. RoPE is never re-implemented here.
Optional pre-RoPE k/q come from forward hooks on k_proj/q_proj (or k_norm/q_norm where the model
normalises per head before RoPE).

Sequences: each domain is a folder of text files (data/text/<domain>/); every file is tokenised
and cut into windows of --max-tokens tokens (BOS prepended when the tokenizer has one). The
calibration and evaluation sequences are spread round-robin over the domains; evaluation windows
come from files no calibration window came from.

The file is written to OUT.partial while the model runs (one forward pass per batch, each layer's
slice written straight into its chunked, compressed dataset) and renamed to OUT at the end, so
RAM holds one batch of activations, never the whole dump.

Example:
  .venv/bin/python scripts/dump_activations.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      --layers 0:30:4 --calib-texts 16 --eval-texts 8 --max-tokens 512 -o data/smollm2-135m.h5
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import sys
import time

import h5py
import numpy as np

FORMAT_NAME = "sqexp-activations"
FORMAT_VERSION = 1
CHUNK_TOKENS = 4096
DEFAULT_TEXTS = ["prose=data/text/prose", "code=data/text/code"]


class InputError(Exception):
    """Bad input from the user: reported as one line, exit 2."""


def sha256_of(path, block=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(block)
            if not b:
                return h.hexdigest()
            h.update(b)


def parse_layers(spec, n_layers):
    """Same grammar as sqexp's --layers: "all", "0:32:4" (stop exclusive), "4:8", "3", or a
    comma-separated mix. Returns a sorted list without duplicates, checked against n_layers."""
    if spec in (None, "", "all"):
        return list(range(n_layers))
    out = set()
    for part in spec.split(","):
        try:
            nums = [int(x) for x in part.split(":")]
        except ValueError:
            raise InputError(f"--layers: cannot parse '{part}' (expected N, A:B or A:B:STEP)")
        if len(nums) == 1:
            rng = [nums[0]]
        elif len(nums) in (2, 3) and (len(nums) == 2 or nums[2] > 0):
            rng = range(nums[0], nums[1], nums[2] if len(nums) == 3 else 1)
        else:
            raise InputError(f"--layers: cannot parse '{part}' (expected N, A:B or A:B:STEP, STEP > 0)")
        for layer in rng:
            if not 0 <= layer < n_layers:
                raise InputError(f"--layers: layer {layer} outside [0, {n_layers}) of this model")
            out.add(layer)
    if not out:
        raise InputError(f"--layers: '{spec}' selects no layer")
    return sorted(out)


# ----------------------------------------------------------------------------------------------
# Text sources

def read_licences(folder):
    """Optional SOURCES.tsv in a text folder: file<TAB>licence<TAB>origin per line."""
    path = os.path.join(folder, "SOURCES.tsv")
    table = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                cols = line.rstrip("\n").split("\t")
                table[cols[0]] = {"licence": cols[1] if len(cols) > 1 else "",
                                  "origin": cols[2] if len(cols) > 2 else ""}
    return table


def domain_windows(tok, folder, max_tokens, min_tokens, per_file):
    """All windows of one domain: list of (file, token_start, ids), files in name order."""
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: text folder not found")
    files = sorted(f for f in os.listdir(folder)
                   if os.path.isfile(os.path.join(folder, f)) and f not in ("SOURCES.tsv", "README.md"))
    if not files:
        raise InputError(f"{folder}: no text files")
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    body = max_tokens - len(bos)
    windows = []
    for name in files:
        path = os.path.join(folder, name)
        with open(path, encoding="utf-8", errors="strict") as f:
            text = f.read()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        taken = 0
        for start in range(0, len(ids), body):
            piece = ids[start:start + body]
            if len(piece) + len(bos) < min_tokens or (per_file and taken >= per_file):
                break
            windows.append((path, start, bos + piece))
            taken += 1
    return windows


def select_sequences(tok, domains, n_calib, n_eval, max_tokens, min_tokens, per_file):
    """Round-robin over domains: calibration first, then evaluation from files unused by
    calibration. Returns a list of dicts (domain index, split, file, token_start, ids)."""
    per_domain = []
    for d, (name, folder) in enumerate(domains):
        per_domain.append(domain_windows(tok, folder, max_tokens, min_tokens, per_file))
    nd = len(domains)
    want = lambda n, d: n // nd + (1 if d < n % nd else 0)
    calib, evals = [[] for _ in domains], [[] for _ in domains]
    for d, wins in enumerate(per_domain):
        calib[d] = wins[:want(n_calib, d)]
        used = {w[0] for w in calib[d]}
        evals[d] = [w for w in wins[len(calib[d]):] if w[0] not in used][:want(n_eval, d)]
        name, folder = domains[d]
        if len(calib[d]) < want(n_calib, d) or len(evals[d]) < want(n_eval, d):
            raise InputError(f"{folder}: domain '{name}' has too little text: {len(calib[d])} calibration "
                             f"and {len(evals[d])} evaluation windows of {min_tokens}..{max_tokens} tokens "
                             f"(wanted {want(n_calib, d)} and {want(n_eval, d)}); add text, lower the counts "
                             f"or --max-tokens")
    seqs = []
    for split, lists in ((0, calib), (1, evals)):
        for i in range(max(len(x) for x in lists)):
            for d in range(nd):
                if i < len(lists[d]):
                    path, start, ids = lists[d][i]
                    seqs.append({"domain": d, "split": split, "file": path, "token_start": start, "ids": ids})
    return seqs


# ----------------------------------------------------------------------------------------------
# Model and capture

def load_model(args, torch, transformers):
    # The forward pass runs in --compute-dtype (float32 by default); --dtype is only the storage.
    dtype = getattr(torch, args.compute_dtype)
    if args.model.endswith(".gguf"):
        if not os.path.isfile(args.model):
            raise InputError(f"{args.model}: GGUF file not found (scripts/fetch_models.sh assembles it)")
        folder, name = os.path.split(os.path.abspath(args.model))
        kw = {"gguf_file": name}
        src = folder
    else:
        kw, src = {}, args.model
    tok = transformers.AutoTokenizer.from_pretrained(src, **kw)
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=dtype, **kw)
    model.to(args.device).eval()
    return tok, model


def attention_modules(model):
    """layer index -> attention module, for every decoder layer."""
    mods = {}
    for m in model.modules():
        idx = getattr(m, "layer_idx", None)
        if idx is not None and hasattr(m, "k_proj") and hasattr(m, "q_proj"):
            mods[int(idx)] = m
    return mods


class Capture:
    """Registered as an attention implementation: records q, k, v per layer, then delegates."""

    def __init__(self, torch, transformers, inner, layers, pre_rope, model):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.llama.modeling_llama import eager_attention_forward
        self.inner = eager_attention_forward if inner == "eager" else ALL_ATTENTION_FUNCTIONS["sdpa"]
        self.layers = set(layers)
        self.store = {}
        self.torch = torch
        self.name = "sqexp_capture_" + inner
        transformers.AttentionInterface.register(self.name, self)
        self.hooks = []
        if pre_rope:
            mods = attention_modules(model)
            for layer in layers:
                m = mods[layer]
                # Where the model normalises per head before RoPE (Qwen3, OLMo2-style k_norm), the
                # normalised tensor is what RoPE rotates.
                for kind in ("k", "q"):
                    src = getattr(m, f"{kind}_norm", None) or getattr(m, f"{kind}_proj")
                    self.hooks.append(src.register_forward_hook(self._pre_hook(layer, kind, m.head_dim)))

    def _pre_hook(self, layer, kind, head_dim):
        def hook(mod, inp, out):
            b, t = out.shape[0], out.shape[1]
            # [B, T, H*D] (proj) or [B, T, H, D] (norm) -> [B, T, H, D]
            self.store[(layer, kind + "_pre")] = out.detach().reshape(b, t, -1, head_dim)
        return hook

    def __call__(self, module, query, key, value, attention_mask, **kw):
        layer = int(module.layer_idx)
        if layer in self.layers:
            # [B, H, T, D] -> [B, T, H, D]: token-major, as the dump stores them.
            self.store[(layer, "q")] = query.detach().transpose(1, 2)
            self.store[(layer, "k")] = key.detach().transpose(1, 2)
            self.store[(layer, "v")] = value.detach().transpose(1, 2)
        return self.inner(module, query, key, value, attention_mask, **kw)


# ----------------------------------------------------------------------------------------------
# Writer

def to_storage(torch, x, dtype):
    """float32 torch tensor -> numpy array in the storage dtype (bfloat16 as uint16 bits)."""
    if dtype == "float32":
        return x.float().cpu().numpy()
    if dtype == "float16":
        return x.to(torch.float16).cpu().numpy()
    return x.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)


class DumpWriter:
    def __init__(self, path, hdr, seqs, layers, n_q_heads, n_kv_heads, head_dim, dtype, queries, pre_rope):
        self.final, self.path = path, path + ".partial"
        self.dtype, self.layers = dtype, layers
        lens = [len(s["ids"]) for s in seqs]
        self.offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        qlens = [n if (queries == "all" or s["split"] == 1) else 0 for n, s in zip(lens, seqs)]
        self.q_offsets = np.concatenate([[0], np.cumsum(qlens)]).astype(np.int64)
        T, Tq = int(self.offsets[-1]), int(self.q_offsets[-1])
        npdt = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}[dtype]
        item = np.dtype(npdt).itemsize
        # The chunk cache must hold a whole chunk of the widest dataset so that batches filling one
        # chunk piecewise never recompress it (w0 = 1: evict fully written chunks first).
        widest = max(n_q_heads, n_kv_heads) * head_dim * item * CHUNK_TOKENS
        self.f = h5py.File(self.path, "w", rdcc_nbytes=2 * widest + (1 << 20), rdcc_w0=1.0)
        for k, v in hdr.items():
            self.f.attrs[k] = v
        g = self.f.create_group("sequences")
        g.create_dataset("offsets", data=self.offsets)
        g.create_dataset("q_offsets", data=self.q_offsets)
        g.create_dataset("split", data=np.array([s["split"] for s in seqs], dtype=np.uint8))
        g.create_dataset("domain", data=np.array([s["domain"] for s in seqs], dtype=np.int32))
        self.ds = {}
        names = [("k", T, n_kv_heads), ("v", T, n_kv_heads), ("q", Tq, n_q_heads)]
        if pre_rope:
            names += [("k_pre", T, n_kv_heads), ("q_pre", Tq, n_q_heads)]
        lg = self.f.create_group("layers")
        for layer in layers:
            g2 = lg.create_group(str(layer))
            for name, rows, heads in names:
                shape = (rows, heads, head_dim)
                chunks = (max(1, min(rows, CHUNK_TOKENS)), heads, head_dim)
                ds = g2.create_dataset(name, shape=shape, dtype=npdt, chunks=chunks,
                                       compression="gzip", compression_opts=4, shuffle=True)
                if dtype == "bfloat16":
                    ds.attrs["bfloat16"] = np.int32(1)
                self.ds[(layer, name)] = ds
        self.nonfinite = 0

    def set_domain_names(self, names):
        self.f["sequences"].attrs["domain_names"] = ",".join(names)

    def write(self, torch, store, batch_idx, batch_lens, seqs):
        """Write the captured tensors of one batch (sequences batch_idx, right-padded)."""
        for (layer, name), x in store.items():
            ds = self.ds[(layer, name)]
            is_q = name.startswith("q")
            for row, (s, n) in enumerate(zip(batch_idx, batch_lens)):
                off = self.q_offsets if is_q else self.offsets
                a, b = int(off[s]), int(off[s + 1])
                if a == b:
                    continue
                piece = x[row, :n]
                if not torch.isfinite(piece).all():
                    self.nonfinite += int((~torch.isfinite(piece)).sum())
                data = to_storage(torch, piece, self.dtype)
                if self.dtype == "float16" and not np.isfinite(data).all():
                    self.nonfinite += int((~np.isfinite(data)).sum())
                ds[a:b] = data

    def finish(self):
        self.f.close()
        os.replace(self.path, self.final)

    def abort(self):
        try:
            self.f.close()
        finally:
            if os.path.exists(self.path):
                os.remove(self.path)


# ----------------------------------------------------------------------------------------------

def model_description(args, model):
    info = {"path": args.model, "source": args.model_source}
    if os.path.isfile(args.model):
        info.update(file=os.path.basename(args.model), size=os.path.getsize(args.model),
                    sha256=sha256_of(args.model))
    cfg = model.config
    info.update(architecture=type(model).__name__, model_type=cfg.model_type,
                torch_dtype_forward=args.compute_dtype)
    return info


def default_model_id(args, model):
    if args.model_id:
        return args.model_id
    name = getattr(model.config, "name_or_path", "") or os.path.basename(args.model)
    return os.path.basename(args.model) if args.model.endswith(".gguf") else name


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF model dir / id, or a .gguf file")
    p.add_argument("--model-id", help="model_id attribute (default: from the file name)")
    p.add_argument("--model-source", default="",
                   help="where the model file came from (recorded in the provenance)")
    p.add_argument("--texts", action="append", metavar="DOMAIN=DIR",
                   help=f"a text domain (repeatable; default {' '.join(DEFAULT_TEXTS)})")
    p.add_argument("--calib-texts", type=int, default=16, help="calibration sequences in all (16)")
    p.add_argument("--eval-texts", type=int, default=8, help="evaluation sequences in all (8)")
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per sequence, BOS included (512)")
    p.add_argument("--min-tokens", type=int, default=0, help="shortest sequence kept (default max-tokens)")
    p.add_argument("--per-file", type=int, default=2, help="windows taken from one file at most (2; 0: all)")
    p.add_argument("--layers", default="all", help='"all", "0:30:4", "0,4,8", ... (all)')
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16",
                   help="storage dtype (float16)")
    p.add_argument("--compute-dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="dtype of the forward pass (float32; bfloat16 halves a 7B model's RAM)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--queries", choices=["eval", "all"], default="eval",
                   help="store queries for evaluation sequences only, or for all")
    p.add_argument("--pre-rope", action="store_true", help="also store k_pre / q_pre")
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                   help="attention implementation the capture delegates to")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("-o", "--output", required=True)
    return p


def run(args, model=None, tok=None):
    """Dump. model/tok may be passed in (the capture test builds a random model)."""
    import torch
    import transformers
    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.calib_texts < 0 or args.eval_texts < 0 or args.calib_texts + args.eval_texts == 0:
        raise InputError("--calib-texts/--eval-texts: need at least one sequence in all")
    if args.max_tokens < 2:
        raise InputError("--max-tokens: must be >= 2")
    if args.batch_size < 1:
        raise InputError("--batch-size: must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no CUDA device")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise InputError(f"{args.output}: folder {out_dir} does not exist")
    domains = []
    for spec in args.texts or DEFAULT_TEXTS:
        if "=" not in spec:
            raise InputError(f"--texts: '{spec}' is not DOMAIN=DIR")
        name, folder = spec.split("=", 1)
        if not name or "," in name:
            raise InputError(f"--texts: bad domain name '{name}'")
        domains.append((name, folder))

    if model is None:
        tok, model = load_model(args, torch, transformers)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_layers = int(cfg.num_hidden_layers)
    n_q = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_q)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_q)
    layers = parse_layers(args.layers, n_layers)
    min_tokens = args.min_tokens or args.max_tokens
    seqs = select_sequences(tok, domains, args.calib_texts, args.eval_texts, args.max_tokens,
                            min_tokens, args.per_file)

    cap = Capture(torch, transformers, args.attn, layers, args.pre_rope, model)
    model.set_attn_implementation(cap.name)

    licences = {name: read_licences(folder) for name, folder in domains}
    text_files = {}
    for s in seqs:
        if s["file"] not in text_files:
            dname = domains[s["domain"]][0]
            lic = licences[dname].get(os.path.basename(s["file"]), {})
            text_files[s["file"]] = {"file": s["file"], "domain": dname, "sha256": sha256_of(s["file"]),
                                     "licence": lic.get("licence", ""), "origin": lic.get("origin", "")}
    rope_theta = getattr(cfg, "rope_theta", None)
    if rope_theta is None:
        rope_theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta")
    provenance = {
        "tool": "scripts/dump_activations.py",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv),
        "model": model_description(args, model),
        "capture": "post-RoPE q/k and v at transformers' attention interface (before GQA repeat); "
                   f"delegates to {args.attn}; forward in {args.compute_dtype}",
        "rope_theta": rope_theta,
        "storage_dtype": args.dtype,
        "tokenizer": type(tok).__name__,
        "texts": list(text_files.values()),
        "sequences": [{"domain": domains[s["domain"]][0], "split": s["split"], "file": s["file"],
                       "token_start": s["token_start"], "n_tokens": len(s["ids"])} for s in seqs],
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__,
                     "h5py": h5py.__version__},
        "device": args.device,
    }
    hdr = {
        "format": FORMAT_NAME,
        "format_version": np.int32(FORMAT_VERSION),
        "model_id": default_model_id(args, model),
        "n_layers": np.int32(n_layers),
        "n_q_heads": np.int32(n_q),
        "n_kv_heads": np.int32(n_kv),
        "head_dim": np.int32(head_dim),
        "rope": "rope" if rope_theta is not None else "none",
        "kq_post_rope": np.int32(1),
        "dtype": args.dtype,
        "layers": np.array(layers, dtype=np.int32),
        "provenance": json.dumps(provenance, indent=1),
    }
    w = DumpWriter(args.output, hdr, seqs, layers, n_q, n_kv, head_dim, args.dtype, args.queries,
                   args.pre_rope)
    try:
        w.set_domain_names([d[0] for d in domains])
        order = list(range(len(seqs)))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        total = int(w.offsets[-1])
        bar = tqdm(total=total, unit="tok", disable=not sys.stderr.isatty())
        t0 = time.time()
        with torch.inference_mode():
            for i in range(0, len(order), args.batch_size):
                idx = order[i:i + args.batch_size]
                lens = [len(seqs[s]["ids"]) for s in idx]
                width = max(lens)
                # Right padding: under the causal mask a real token never sees a pad token, and
                # positions of real tokens stay 0..n-1, so the padded batch equals one-by-one runs.
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, s in enumerate(idx):
                    ids[r, :lens[r]] = torch.tensor(seqs[s]["ids"])
                    mask[r, :lens[r]] = 1
                cap.store.clear()
                # logits_to_keep=1: the LM head over every position is wasted work here.
                model(input_ids=ids.to(args.device), attention_mask=mask.to(args.device), use_cache=False,
                      logits_to_keep=1)
                missing = {(l, n) for l in layers for n in ("k", "v", "q")} - set(cap.store)
                if missing:
                    raise RuntimeError(f"capture saw no attention call for {sorted(missing)[:4]}; "
                                       "this model does not use transformers' attention interface")
                w.write(torch, cap.store, idx, lens, seqs)
                bar.update(sum(lens))
                if bar.disable:
                    done = int(w.offsets[idx[-1] + 1])
                    if done * 10 // total > (done - sum(lens)) * 10 // total or done == total:
                        rate = done / max(time.time() - t0, 1e-9)
                        print(f"dump_activations: {done}/{total} tokens, {rate:.0f} tok/s", file=sys.stderr,
                              flush=True)
        bar.close()
        if w.nonfinite:
            raise InputError(f"{args.output}: {w.nonfinite} non-finite values in {args.dtype} "
                             "(overflow?); use --dtype bfloat16 or float32")
        w.finish()
    except BaseException:
        w.abort()
        raise
    finally:
        for h in cap.hooks:
            h.remove()
    n_tok = int(w.offsets[-1])
    n_q_rows = int(w.q_offsets[-1])
    print(f"{args.output}: {len(seqs)} sequences ({sum(s['split'] == 0 for s in seqs)} calib, "
          f"{sum(s['split'] == 1 for s in seqs)} eval), {n_tok} tokens, {n_q_rows} query rows, "
          f"layers {layers[0]}..{layers[-1]} ({len(layers)}), {os.path.getsize(args.output)} bytes",
          file=sys.stderr)
    return seqs


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except InputError as e:
        print(f"dump_activations: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
