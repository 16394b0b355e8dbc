#!/usr/bin/python3
"""Independent NumPy reference forward pass for Grok-1 and Mixtral checkpoints.

Usage:
  /usr/bin/python3 scripts/reference-moe.py MODEL_DIR --tokens "1 2 3" --out FILE
  /usr/bin/python3 scripts/reference-moe.py MODEL_DIR --tokens "1 2 3" --input-norms FILE.json [--window N]

Reads a Hugging Face style checkpoint (config.json + model.safetensors, or shards
listed in model.safetensors.index.json), runs one causal pass over the tokens
starting at position 0 and writes the logits of every position as raw
little-endian float32, shape [positions, vocab], row-major.

With --input-norms it runs the tokens in windows of N that do not overlap (each
from position 0) and writes, per linear weight under Lacuna's names
("layers.0.q", "layers.1.expert.3.gate_up"), the L2 norm of each input channel
over the tokens that weight multiplied: Wanda's calibration statistics.

Everything is computed in float32, whatever the storage dtype.  The formulas and
their public sources are in docs/architectures.md; this file is the executable
form of that document, so keep the two in step.

Exit status: 0 on success, 2 on any refused input (bad arch, missing tensor,
wrong shape, corrupt file, token out of range).
"""
import argparse
import json
import math
import mmap
import os
import sys

import numpy as np


class RefError(Exception):
    """A refused input: reported as one line on stderr, exit status 2."""


# ----------------------------------------------------------------------------
# safetensors, parsed by hand so the reference shares no loader with Lacuna.

_DTYPES = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2)}


class SafeTensorFile:
    def __init__(self, path):
        self.path = path
        try:
            fd = open(path, "rb")
        except OSError as e:
            raise RefError(f"cannot open {path}: {e.strerror}")
        size = os.fstat(fd.fileno()).st_size
        if size < 8:
            raise RefError(f"corrupt safetensors file {path}: shorter than 8 bytes")
        self.map = mmap.mmap(fd.fileno(), 0, access=mmap.ACCESS_READ)
        fd.close()
        n = int.from_bytes(self.map[:8], "little")
        if n > size - 8:
            raise RefError(f"corrupt safetensors file {path}: header length {n} "
                           f"exceeds file size {size}")
        try:
            header = json.loads(bytes(self.map[8:8 + n]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RefError(f"corrupt safetensors file {path}: bad header JSON ({e})")
        if not isinstance(header, dict):
            raise RefError(f"corrupt safetensors file {path}: header is not an object")
        self.base = 8 + n
        self.entries = {}
        for name, e in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype, shape = e["dtype"], [int(d) for d in e["shape"]]
                begin, end = (int(v) for v in e["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise RefError(f"corrupt safetensors file {path}: bad entry for tensor {name}")
            if not 0 <= begin <= end <= size - self.base:
                raise RefError(f"corrupt safetensors file {path}: tensor {name} data "
                               f"[{begin}, {end}) lies outside the file")
            if dtype in _DTYPES and end - begin != math.prod(shape) * _DTYPES[dtype][1]:
                raise RefError(f"corrupt safetensors file {path}: tensor {name} has "
                               f"{end - begin} bytes for shape {shape} {dtype}")
            self.entries[name] = (dtype, shape, begin, end)

    def load(self, name):
        dtype, shape, begin, end = self.entries[name]
        if dtype not in _DTYPES:
            raise RefError(f"tensor {name} has unsupported dtype {dtype} "
                           f"(supported: F32, F16, BF16)")
        raw = np.frombuffer(self.map, dtype=_DTYPES[dtype][0],
                            count=math.prod(shape), offset=self.base + begin)
        if dtype == "BF16":
            # bf16 is the top half of an IEEE float32: widen by shifting left 16.
            out = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            out = raw.astype(np.float32)
        return out.reshape(shape)


class Checkpoint:
    """All tensors of a model dir; data is read lazily, one tensor at a time."""

    def __init__(self, model_dir):
        index = os.path.join(model_dir, "model.safetensors.index.json")
        single = os.path.join(model_dir, "model.safetensors")
        self.where = {}
        if os.path.exists(index):
            try:
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise RefError(f"cannot read {index}: {e}")
            files = {}
            for name, fname in weight_map.items():
                if fname not in files:
                    files[fname] = SafeTensorFile(os.path.join(model_dir, fname))
                if name not in files[fname].entries:
                    raise RefError(f"tensor {name} is listed in {index} but absent from {fname}")
                self.where[name] = files[fname]
        elif os.path.exists(single):
            f = SafeTensorFile(single)
            self.where = {name: f for name in f.entries}
        else:
            raise RefError(f"{model_dir} has neither model.safetensors nor "
                           f"model.safetensors.index.json")

    def has(self, name):
        return name in self.where

    def check(self, name, shape):
        if name not in self.where:
            raise RefError(f"missing tensor {name}")
        got = self.where[name].entries[name][1]
        if list(got) != list(shape):
            raise RefError(f"tensor {name} has shape {list(got)}, expected {list(shape)}")

    def get(self, name, shape):
        self.check(name, shape)
        return self.where[name].load(name)


# ----------------------------------------------------------------------------
# Configuration: one namespace for both architectures, so the forward pass is
# written once and the differences are data.

GROK_ARCHS = ("Grok1ModelForCausalLM", "GrokForCausalLM")
MIXTRAL_ARCHS = ("MixtralForCausalLM",)


def _field(cfg, *names, default=None):
    for n in names:
        if cfg.get(n) is not None:
            v = cfg[n]
            # xai-org/grok-1 pytorch/configuration_grok_1.py stores
            # output_multiplier_scale with a stray trailing comma, i.e. as a
            # 1-tuple, which serialises as a one-element list.
            if isinstance(v, list) and len(v) == 1:
                v = v[0]
            return v
    return default


def _rope_theta(cfg, default):
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling")
    if isinstance(params, dict):
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            raise RefError(f"RoPE scaling type {kind!r} is not supported")
        if params.get("rope_theta") is not None:
            return float(params["rope_theta"])
    return float(_field(cfg, "rope_theta", default=default))


class Config:
    def __init__(self, cfg):
        archs = cfg.get("architectures") or [None]
        self.arch_name = archs[0]
        if self.arch_name in GROK_ARCHS:
            self.arch = "grok-1"
        elif self.arch_name in MIXTRAL_ARCHS:
            self.arch = "mixtral"
        else:
            raise RefError(f"unsupported architecture {self.arch_name!r}; supported: "
                           f"{', '.join(MIXTRAL_ARCHS + GROK_ARCHS)}")
        grok = self.arch == "grok-1"
        # Defaults: Grok-1 from xai-org/grok-1 run.py (what the released
        # weights were run with), Mixtral from transformers' MixtralConfig.
        d = dict(vocab=131072, hidden=6144, ffn=32768, layers=64, heads=48,
                 experts=8, theta=10000.0) if grok else \
            dict(vocab=32000, hidden=4096, ffn=14336, layers=32, heads=32,
                 experts=8, theta=1000000.0)
        self.vocab = int(_field(cfg, "vocab_size", default=d["vocab"]))
        self.hidden = int(_field(cfg, "hidden_size", default=d["hidden"]))
        self.ffn = int(_field(cfg, "intermediate_size", default=d["ffn"]))
        self.layers = int(_field(cfg, "num_hidden_layers", default=d["layers"]))
        self.heads = int(_field(cfg, "num_attention_heads", default=d["heads"]))
        # HF semantics: an absent key takes the class default (8); an explicit
        # null means multi-head attention (MixtralConfig.__post_init__ and the
        # Grok ports' "backward compatibility" branch).
        kv = cfg.get("num_key_value_heads", 8)
        self.kv_heads = int(self.heads if kv is None else kv)
        self.head_dim = int(_field(cfg, "head_dim", default=self.hidden // self.heads))
        # hpcai-tech/grok-1 says num_experts, keyfan/grok-1-hf and Mixtral say
        # num_local_experts (MixtralConfig aliases num_experts to it).
        order = ("num_experts", "num_local_experts") if grok else \
            ("num_local_experts", "num_experts")
        self.experts = int(_field(cfg, *order, default=d["experts"]))
        self.top_k = int(_field(cfg, "num_experts_per_tok", default=2))
        self.eps = float(_field(cfg, "rms_norm_eps", default=1e-5))
        self.theta = _rope_theta(cfg, d["theta"])
        self.tied = bool(_field(cfg, "tie_word_embeddings", default=grok))
        if grok:
            self.emb_mult = float(_field(cfg, "embedding_multiplier_scale",
                                         default=78.38367176906169))
            self.out_mult = float(_field(cfg, "output_multiplier_scale",
                                         default=0.5773502691896257))
            self.attn_mult = float(_field(cfg, "attn_output_multiplier",
                                          default=0.08838834764831845))
            self.softcap = float(_field(cfg, "max_attn_value", default=30.0))
            self.renormalise = False      # JAX MoELayer uses raw top-k softmax probs
            self.act = "gelu_tanh"        # jax.nn.gelu default approximate=True
            self.post_norms = True
            self.window = None
        else:
            self.emb_mult = self.out_mult = 1.0
            self.attn_mult = self.head_dim ** -0.5
            self.softcap = None
            self.renormalise = True
            act = _field(cfg, "hidden_act", default="silu")
            if act != "silu":
                raise RefError(f"Mixtral hidden_act {act!r} is not supported (only silu)")
            self.act = "silu"
            self.post_norms = False
            w = _field(cfg, "sliding_window", default=None)
            self.window = int(w) if w is not None else None
        if self.heads % self.kv_heads or self.head_dim % 2:
            raise RefError(f"bad head configuration: {self.heads} heads, "
                           f"{self.kv_heads} kv heads, head_dim {self.head_dim}")
        if not 1 <= self.top_k <= self.experts:
            raise RefError(f"num_experts_per_tok {self.top_k} outside 1..{self.experts}")


# ----------------------------------------------------------------------------
# Tensor names.  Each layer maps role -> (name, shape); the forward pass asks
# for roles only.

def tensor_names(c, ckpt):
    H, F, E, V = c.hidden, c.ffn, c.experts, c.vocab
    q_out, kv_out = c.heads * c.head_dim, c.kv_heads * c.head_dim

    def norm(base):
        # Norm scales are saved as ".weight" by most ports but as ".scale"
        # by hpcai-tech/grok-1 (its RMSNorm parameter is called scale).
        # Accepting both everywhere costs nothing and keeps one code path.
        for suffix in (".weight", ".scale"):
            if ckpt.has(base + suffix):
                return base + suffix
        raise RefError(f"missing tensor {base}.weight (or {base}.scale)")

    if c.arch == "mixtral":
        layout = "hf"
        embed, final = "model.embed_tokens.weight", norm("model.norm")
        pre = "model.layers.{i}."
        roles = dict(q="self_attn.q_proj.weight", k="self_attn.k_proj.weight",
                     v="self_attn.v_proj.weight", o="self_attn.o_proj.weight",
                     router="block_sparse_moe.gate.weight",
                     gate="block_sparse_moe.experts.{e}.w1.weight",
                     up="block_sparse_moe.experts.{e}.w3.weight",
                     down="block_sparse_moe.experts.{e}.w2.weight")
        norms = dict(attn_norm="input_layernorm", moe_norm="post_attention_layernorm")
    elif ckpt.has("transformer.in_out_embed.weight"):
        # Layout (a): keyfan/grok-1-hf, i.e. the JAX parameter paths with "/" -> ".".
        layout = "a"
        embed, final = "transformer.in_out_embed.weight", norm("transformer.rms_norm")
        pre = "transformer.decoder_layer.{i}."
        roles = dict(q="multi_head_attention.query.weight", k="multi_head_attention.key.weight",
                     v="multi_head_attention.value.weight", o="multi_head_attention.linear.weight",
                     router="router.weight", gate="moe.{e}.linear.weight",
                     up="moe.{e}.linear_v.weight", down="moe.{e}.linear_1.weight")
        norms = dict(attn_norm="rms_norm", post_attn_norm="rms_norm_1",
                     moe_norm="rms_norm_2", post_moe_norm="rms_norm_3")
    elif ckpt.has("model.embed_tokens.weight"):
        # Layout (b): hpcai-tech/grok-1 (Grok1ModelForCausalLM).
        layout = "b"
        embed, final = "model.embed_tokens.weight", norm("model.norm")
        pre = "model.layers.{i}."
        roles = dict(q="attn.q_proj.weight", k="attn.k_proj.weight", v="attn.v_proj.weight",
                     o="attn.o_proj.weight", router="moe_block.gate.weight",
                     gate="moe_block.experts.{e}.linear.weight",
                     up="moe_block.experts.{e}.linear_v.weight",
                     down="moe_block.experts.{e}.linear_1.weight")
        norms = dict(attn_norm="pre_attn_norm", post_attn_norm="post_attn_norm",
                     moe_norm="pre_moe_norm", post_moe_norm="post_moe_norm")
    else:
        raise RefError("cannot tell the Grok-1 tensor layout: neither "
                       "transformer.in_out_embed.weight nor model.embed_tokens.weight present")

    shapes = dict(q=(q_out, H), k=(kv_out, H), v=(kv_out, H), o=(H, q_out),
                  router=(E, H), gate=(F, H), up=(F, H), down=(H, F))
    layers = []
    for i in range(c.layers):
        p = pre.format(i=i)
        layer = {r: (p + n, shapes[r]) for r, n in roles.items() if "{e}" not in n}
        for r in ("gate", "up", "down"):
            layer[r] = [(p + roles[r].format(e=e), shapes[r]) for e in range(E)]
        for r, n in norms.items():
            layer[r] = (norm(p + n), (H,))
        layers.append(layer)

    # Tied output: the JAX reference always decodes with the input embedding;
    # HF ports tie lm_head to it when tie_word_embeddings is true.
    head = embed if c.tied or not ckpt.has("lm_head.weight") else "lm_head.weight"
    return layout, (embed, (V, H)), (final, (H,)), (head, (V, H)), layers


# ----------------------------------------------------------------------------
# The forward pass.

def rms_norm(x, w, eps):
    return x * (1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps))) * w


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def activation(kind, x):
    if kind == "gelu_tanh":
        c = np.float32(math.sqrt(2.0 / math.pi))
        return np.float32(0.5) * x * (1 + np.tanh(c * (x + np.float32(0.044715) * x * x * x)))
    # silu written as x*sigmoid(x) via tanh: identical maths, no exp overflow.
    return x * np.float32(0.5) * (1 + np.tanh(np.float32(0.5) * x))


def rope(x, theta):
    """Rotate-half RoPE over the whole head.  x: [T, heads, D], positions 0..T-1."""
    T, _, D = x.shape
    inv_freq = np.float32(1.0) / (np.float32(theta) ** (np.arange(0, D, 2, dtype=np.float32)
                                                        / np.float32(D)))
    angle = np.arange(T, dtype=np.float32)[:, None] * inv_freq[None, :]
    angle = np.concatenate([angle, angle], axis=-1)[:, None, :]
    rotated = np.concatenate([-x[..., D // 2:], x[..., :D // 2]], axis=-1)
    return x * np.cos(angle) + rotated * np.sin(angle)


def attention(c, h, wq, wk, wv, wo, seen):
    T, D = h.shape[0], c.head_dim
    for role in ("q", "k", "v"):
        seen(role, h)
    q = rope((h @ wq.T).reshape(T, c.heads, D), c.theta)
    k = rope((h @ wk.T).reshape(T, c.kv_heads, D), c.theta)
    v = (h @ wv.T).reshape(T, c.kv_heads, D)
    # GQA: query head j reads kv head j // (heads / kv_heads).
    group = c.heads // c.kv_heads
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    scores = np.einsum("thd,shd->hts", q, k) * np.float32(c.attn_mult)
    if c.softcap is not None:
        scores = np.float32(c.softcap) * np.tanh(scores / np.float32(c.softcap))
    qi, ki = np.arange(T)[:, None], np.arange(T)[None, :]
    allowed = ki <= qi
    if c.window is not None:
        allowed &= ki > qi - c.window
    scores = np.where(allowed[None], scores, np.float32(-np.inf))
    out = np.einsum("hts,shd->thd", softmax(scores), v).reshape(T, c.heads * D)
    seen("o", out)
    return out @ wo.T


def moe(c, h, ckpt, layer, seen):
    probs = softmax(h @ ckpt.get(*layer["router"]).T)               # [T, E]
    # Stable sort: equal probabilities pick the lower expert index first.
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :c.top_k]   # [T, k]
    weight = np.take_along_axis(probs, top, axis=-1)
    if c.renormalise:
        weight = weight / np.sum(weight, axis=-1, keepdims=True)
    out = np.zeros_like(h)
    for e in range(c.experts):
        rows, slot = np.nonzero(top == e)
        if rows.size == 0:
            continue
        x = h[rows]
        y = activation(c.act, x @ ckpt.get(*layer["gate"][e]).T) * (x @ ckpt.get(*layer["up"][e]).T)
        seen(f"expert.{e}.gate_up", x)
        seen(f"expert.{e}.down", y)
        out[rows] += weight[rows, slot][:, None] * (y @ ckpt.get(*layer["down"][e]).T)
    return out


def forward(c, ckpt, names, tokens, seen=lambda name, x: None):
    """Logits of every position; seen(weight name, input rows) for each product."""
    _, embed, final, head, layers = names
    x = ckpt.get(*embed)[tokens] * np.float32(c.emb_mult)
    for i, layer in enumerate(layers):
        def seen_here(role, rows, i=i):
            seen(f"layers.{i}.{role}", rows)
        a = attention(c, rms_norm(x, ckpt.get(*layer["attn_norm"]), c.eps),
                      *(ckpt.get(*layer[r]) for r in ("q", "k", "v", "o")), seen_here)
        if c.post_norms:
            a = rms_norm(a, ckpt.get(*layer["post_attn_norm"]), c.eps)
        x = x + a
        m = moe(c, rms_norm(x, ckpt.get(*layer["moe_norm"]), c.eps), ckpt, layer, seen_here)
        if c.post_norms:
            m = rms_norm(m, ckpt.get(*layer["post_moe_norm"]), c.eps)
        x = x + m
    x = rms_norm(x, ckpt.get(*final), c.eps)
    return (x @ ckpt.get(*head).T) * np.float32(c.out_mult)


def input_norms(c, ckpt, names, tokens, window):
    """{"norms": {weight: [L2 norm per input channel]}, "tokens_seen": {weight: n}}."""
    squares, seen_count = {}, {}

    def seen(name, rows):
        rows = rows.astype(np.float64)
        squares[name] = squares.get(name, 0) + np.sum(rows * rows, axis=0)
        seen_count[name] = seen_count.get(name, 0) + rows.shape[0]

    for begin in range(0, len(tokens), window):
        forward(c, ckpt, names, tokens[begin:begin + window], seen)
    return {"norms": {k: np.sqrt(v).tolist() for k, v in squares.items()}, "tokens_seen": seen_count}


def check_all(ckpt, names):
    """Validate every name and shape from headers alone, before any arithmetic."""
    _, embed, final, head, layers = names
    for spec in (embed, final, head):
        ckpt.check(*spec)
    for layer in layers:
        for v in layer.values():
            for spec in (v if isinstance(v, list) else [v]):
                ckpt.check(*spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--tokens", required=True, help='token ids, e.g. "1 2 3"')
    ap.add_argument("--out", help="output file: float32 [positions, vocab]")
    ap.add_argument("--input-norms", help="output file: JSON of per-weight input channel norms")
    ap.add_argument("--window", type=int, default=256, help="--input-norms: tokens per window")
    args = ap.parse_args()
    if bool(args.out) == bool(args.input_norms):
        ap.error("give one of --out and --input-norms")
    try:
        try:
            with open(os.path.join(args.model_dir, "config.json")) as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            raise RefError(f"cannot read config.json: {e}")
        try:
            c = Config(cfg)
        except (TypeError, ValueError, ZeroDivisionError) as e:
            raise RefError(f"bad value in config.json: {e}")
        try:
            tokens = np.array([int(t) for t in args.tokens.replace(",", " ").split()],
                              dtype=np.int64)
        except ValueError:
            raise RefError(f"--tokens must be integers, got {args.tokens!r}")
        if tokens.size == 0:
            raise RefError("--tokens is empty")
        bad = tokens[(tokens < 0) | (tokens >= c.vocab)]
        if bad.size:
            raise RefError(f"token id {int(bad[0])} out of range [0, {c.vocab})")
        ckpt = Checkpoint(args.model_dir)
        names = tensor_names(c, ckpt)
        check_all(ckpt, names)
        if args.input_norms:
            if args.window < 1:
                raise RefError("--window must be at least 1")
            result = input_norms(c, ckpt, names, tokens, args.window)
            result.update(tokens=tokens.tolist(), window=args.window)
            with open(args.input_norms, "w") as f:
                json.dump(result, f)
            print(f"reference-moe: input norms of {len(result['norms'])} weights over {len(tokens)} tokens",
                  file=sys.stderr)
            return 0
        logits = forward(c, ckpt, names, tokens).astype("<f4")
        logits.tofile(args.out)
    except RefError as e:
        print(f"reference-moe: error: {e}", file=sys.stderr)
        return 2
    layout = "" if c.arch == "mixtral" else f" layout={names[0]}"
    print(f"reference-moe: arch={c.arch}{layout} positions={len(tokens)} vocab={c.vocab} "
          f"compute=float32 argmax_last={int(np.argmax(logits[-1]))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
