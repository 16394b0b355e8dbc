#!/usr/bin/python3
"""Write a tiny random Hugging Face style checkpoint for Grok-1 or Mixtral.

Usage:
  /usr/bin/python3 scripts/make-test-checkpoint.py OUT_DIR --arch grok|mixtral
      [--layout a|b] [--dtype bf16|f32] [--sharded] [--sparsity S] [--seed N]
      [--hidden 64] [--layers 2] [--heads 4] [--kv-heads 2] [--experts 4]
      [--top-k 2] [--ffn 128] [--vocab 256]

The weights depend only on --seed and the sizes: --layout, --dtype and
--sharded change how they are stored, never their values (bf16 rounds them),
so two checkpoints differing only in storage must give the same logits.
--sparsity S zeroes, in every expert matrix, the fraction S of entries with
the smallest magnitude, which is what a pruned checkpoint looks like.

Grok-1 layout a mimics keyfan/grok-1-hf (GrokForCausalLM, JAX parameter
paths, norms saved as .weight); layout b mimics hpcai-tech/grok-1
(Grok1ModelForCausalLM, norms saved as .scale).  Tensor names and shapes are
specified in docs/architectures.md.
"""
import argparse
import json
import os
import struct

import numpy as np


def random_weights(a, rng):
    """Role-keyed weights in one fixed draw order, whatever the storage layout."""
    H, F, E, V = a.hidden, a.ffn, a.experts, a.vocab
    D = H // a.heads
    grok = a.arch == "grok"

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm_scale():
        return (1.0 + normal((H,), 0.1)).astype(np.float32)

    w = {"embed": normal((V, H), 0.1)}
    for i in range(a.layers):
        for r in (("attn_norm", "post_attn_norm", "moe_norm", "post_moe_norm") if grok
                  else ("attn_norm", "moe_norm")):
            w[i, r] = norm_scale()
        w[i, "q"] = normal((a.heads * D, H), H ** -0.5)
        w[i, "k"] = normal((a.kv_heads * D, H), H ** -0.5)
        w[i, "v"] = normal((a.kv_heads * D, H), H ** -0.5)
        w[i, "o"] = normal((H, a.heads * D), (a.heads * D) ** -0.5)
        w[i, "router"] = normal((E, H), H ** -0.5)
        for e in range(E):
            w[i, e, "gate"] = normal((F, H), H ** -0.5)
            w[i, e, "up"] = normal((F, H), H ** -0.5)
            w[i, e, "down"] = normal((H, F), F ** -0.5)
    w["final_norm"] = norm_scale()
    if not grok:
        w["lm_head"] = normal((V, H), H ** -0.5)   # Mixtral is untied
    return w


def prune(w, sparsity):
    """Zero the smallest-magnitude fraction of every expert matrix."""
    for key, m in w.items():
        if isinstance(key, tuple) and len(key) == 3:
            n = int(sparsity * m.size)
            flat = m.reshape(-1)   # a view: zeroing it zeroes m
            flat[np.argsort(np.abs(flat), kind="stable")[:n]] = 0.0


def tensor_name(a, key):
    if a.arch == "mixtral":
        p, roles = "model.layers.{i}.", dict(
            attn_norm="input_layernorm.weight", moe_norm="post_attention_layernorm.weight",
            q="self_attn.q_proj.weight", k="self_attn.k_proj.weight",
            v="self_attn.v_proj.weight", o="self_attn.o_proj.weight",
            router="block_sparse_moe.gate.weight", gate="block_sparse_moe.experts.{e}.w1.weight",
            up="block_sparse_moe.experts.{e}.w3.weight",
            down="block_sparse_moe.experts.{e}.w2.weight")
        top = dict(embed="model.embed_tokens.weight", final_norm="model.norm.weight",
                   lm_head="lm_head.weight")
    elif a.layout == "a":
        p, roles = "transformer.decoder_layer.{i}.", dict(
            attn_norm="rms_norm.weight", post_attn_norm="rms_norm_1.weight",
            moe_norm="rms_norm_2.weight", post_moe_norm="rms_norm_3.weight",
            q="multi_head_attention.query.weight", k="multi_head_attention.key.weight",
            v="multi_head_attention.value.weight", o="multi_head_attention.linear.weight",
            router="router.weight", gate="moe.{e}.linear.weight",
            up="moe.{e}.linear_v.weight", down="moe.{e}.linear_1.weight")
        top = dict(embed="transformer.in_out_embed.weight",
                   final_norm="transformer.rms_norm.weight")
    else:
        p, roles = "model.layers.{i}.", dict(
            attn_norm="pre_attn_norm.scale", post_attn_norm="post_attn_norm.scale",
            moe_norm="pre_moe_norm.scale", post_moe_norm="post_moe_norm.scale",
            q="attn.q_proj.weight", k="attn.k_proj.weight", v="attn.v_proj.weight",
            o="attn.o_proj.weight", router="moe_block.gate.weight",
            gate="moe_block.experts.{e}.linear.weight",
            up="moe_block.experts.{e}.linear_v.weight",
            down="moe_block.experts.{e}.linear_1.weight")
        top = dict(embed="model.embed_tokens.weight", final_norm="model.norm.scale")
    if isinstance(key, str):
        return top[key]
    i, e, role = key if len(key) == 3 else (key[0], None, key[1])
    return (p + roles[role]).format(i=i, e=e)


def to_bf16_bits(x):
    """float32 -> bf16 bit pattern, round to nearest even (finite inputs)."""
    u = x.astype("<f4").view("<u4")
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def write_safetensors(path, tensors, dtype):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, m in tensors:
        blob = (to_bf16_bits(m) if dtype == "bf16" else m.astype("<f4")).tobytes()
        header[name] = {"dtype": "BF16" if dtype == "bf16" else "F32",
                        "shape": list(m.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)   # the format allows space padding; keeps data aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)
    return offset


def config_json(a):
    D = a.hidden // a.heads
    common = dict(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn,
                  num_hidden_layers=a.layers, num_attention_heads=a.heads,
                  num_key_value_heads=a.kv_heads, num_experts_per_tok=a.top_k,
                  rms_norm_eps=1e-5, max_position_embeddings=4096,
                  torch_dtype="bfloat16" if a.dtype == "bf16" else "float32")
    if a.arch == "mixtral":
        return dict(architectures=["MixtralForCausalLM"], model_type="mixtral",
                    num_local_experts=a.experts, rope_theta=1e6, hidden_act="silu",
                    sliding_window=None, tie_word_embeddings=False, **common)
    grok = dict(embedding_multiplier_scale=78.38367176906169,
                output_multiplier_scale=0.5773502691896257,
                attn_output_multiplier=D ** -0.5, tie_word_embeddings=True, **common)
    if a.layout == "a":   # keyfan/grok-1-hf field names
        return dict(architectures=["GrokForCausalLM"], model_type="grok",
                    num_local_experts=a.experts, rope_theta=10000.0, **grok)
    # hpcai-tech/grok-1 field names; no rope_theta there, so the default is exercised
    return dict(architectures=["Grok1ModelForCausalLM"], model_type="grok-1",
                num_experts=a.experts, max_attn_value=30.0, **grok)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--arch", choices=("grok", "mixtral"), required=True)
    ap.add_argument("--layout", choices=("a", "b"), default="b", help="Grok-1 tensor names")
    ap.add_argument("--dtype", choices=("bf16", "f32"), default="f32")
    ap.add_argument("--sharded", action="store_true", help="two shards plus an index")
    ap.add_argument("--sparsity", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    for flag, default in (("hidden", 64), ("layers", 2), ("heads", 4), ("kv-heads", 2),
                          ("experts", 4), ("top-k", 2), ("ffn", 128), ("vocab", 256)):
        ap.add_argument("--" + flag, type=int, default=default)
    a = ap.parse_args()
    if not 0.0 <= a.sparsity < 1.0:
        ap.error("--sparsity must be in [0, 1)")
    if a.hidden % a.heads or a.heads % a.kv_heads or (a.hidden // a.heads) % 2:
        ap.error("need hidden % heads == 0, heads % kv-heads == 0 and an even head dim")

    w = random_weights(a, np.random.default_rng(a.seed))
    if a.sparsity:
        prune(w, a.sparsity)
    tensors = [(tensor_name(a, k), m) for k, m in w.items()]

    os.makedirs(a.out_dir, exist_ok=True)
    # Remove the other storage form so the reader cannot pick up a stale one.
    for stale in ("model.safetensors", "model.safetensors.index.json",
                  "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        if os.path.exists(os.path.join(a.out_dir, stale)):
            os.remove(os.path.join(a.out_dir, stale))
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(config_json(a), f, indent=2)
        f.write("\n")
    if a.sharded:
        half, weight_map, total = len(tensors) // 2, {}, 0
        for n, part in enumerate((tensors[:half], tensors[half:]), start=1):
            fname = f"model-{n:05d}-of-00002.safetensors"
            total += write_safetensors(os.path.join(a.out_dir, fname), part, a.dtype)
            weight_map.update({name: fname for name, _ in part})
        with open(os.path.join(a.out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
            f.write("\n")
    else:
        write_safetensors(os.path.join(a.out_dir, "model.safetensors"), tensors, a.dtype)


if __name__ == "__main__":
    main()
