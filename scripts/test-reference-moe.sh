#!/bin/bash
# Self-checks for scripts/reference-moe.py, on tiny random checkpoints from
# scripts/make-test-checkpoint.py.  Writes only under a mktemp dir; exits
# non-zero if any check fails.  Takes a few seconds on one core.
set -u
here=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3                  # Debian's interpreter: it has python3-numpy
REF="$here/reference-moe.py"
MAKE="$here/make-test-checkpoint.py"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
TOKENS="5 17 42 99 3 200 7 1"        # vocab is 256 in every checkpoint below
passed=0 failed=0

ok()   { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }

make_ckpt() { local d=$1; shift; $PY "$MAKE" "$tmp/$d" --seed 7 "$@"; }
# run DIR [TOKENS]: logits to $tmp/DIR.bin, stderr to $tmp/DIR.err
run() { $PY "$REF" "$tmp/$1" --tokens "${2:-$TOKENS}" --out "$tmp/$1.bin" 2>"$tmp/$1.err"; }
same_bytes() { cmp -s "$tmp/$1.bin" "$tmp/$2.bin"; }

# close A B REL [ROWS]: the first ROWS rows agree within REL * max|logit of A|.
close() {
    $PY - "$tmp/$1.bin" "$tmp/$2.bin" "$3" "${4:-0}" <<'EOF'
import sys, numpy as np
a, b = (np.fromfile(p, "<f4").reshape(-1, 256) for p in sys.argv[1:3])
rows = int(sys.argv[4]) or len(a)
a, b = a[:rows], b[:rows]
err, scale = float(np.abs(a - b).max()), float(np.abs(a).max())
sys.exit(0 if np.isfinite(a).all() and err <= float(sys.argv[3]) * scale else 1)
EOF
}

# expect_error WHAT DIR TOKENS PATTERN: exit status 2, PATTERN on stderr, no traceback.
expect_error() {
    local what=$1 d=$2 tokens=$3 pattern=$4 rc=0
    $PY "$REF" "$tmp/$d" --tokens "$tokens" --out "$tmp/$d.bin" 2>"$tmp/$d.err" || rc=$?
    if [ "$rc" = 2 ] && grep -qF -- "$pattern" "$tmp/$d.err" && ! grep -q Traceback "$tmp/$d.err"; then
        ok "$what"
    else
        fail "$what (rc=$rc: $(head -c 300 "$tmp/$d.err"))"
    fi
}

# edit_json FILE PYTHON-EXPR-ON-j: rewrite a JSON file in place.
edit_json() { $PY -c "import json,sys; p=sys.argv[1]; j=json.load(open(p)); $2; json.dump(j, open(p,'w'))" "$1"; }

# --- runs and storage equivalence ---------------------------------------------
make_ckpt mix-f32 --arch mixtral
make_ckpt mix-f32-sh --arch mixtral --sharded
make_ckpt mix-bf16 --arch mixtral --dtype bf16 --sharded
for d in mix-f32 mix-f32-sh mix-bf16; do check "mixtral runs: $d" run $d; done
check "mixtral output is [8, 256] float32" test "$(stat -c %s "$tmp/mix-f32.bin")" = $((8 * 256 * 4))
check "mixtral summary line names arch and argmax" grep -q "arch=mixtral positions=8 .*argmax_last=" "$tmp/mix-f32.err"
check "mixtral sharded == unsharded (bit-identical)" same_bytes mix-f32 mix-f32-sh
check "mixtral bf16 storage close to f32" close mix-f32 mix-bf16 0.05

make_ckpt grok-a --arch grok --layout a
make_ckpt grok-b --arch grok --layout b
make_ckpt grok-b-sh --arch grok --layout b --sharded
make_ckpt grok-a-bf16 --arch grok --layout a --dtype bf16
for d in grok-a grok-b grok-b-sh grok-a-bf16; do check "grok-1 runs: $d" run $d; done
check "grok-1 layout a == layout b (bit-identical)" same_bytes grok-a grok-b
check "grok-1 sharded == unsharded (bit-identical)" same_bytes grok-b grok-b-sh
check "grok-1 bf16 storage close to f32" close grok-a grok-a-bf16 0.05
check "grok-1 summary line names layout" grep -q "arch=grok-1 layout=b" "$tmp/grok-b.err"

make_ckpt again --arch grok --layout b
check "checkpoints are deterministic from --seed" cmp -s "$tmp/again/model.safetensors" "$tmp/grok-b/model.safetensors"

# --- causality: a prefix gets the same logits at its positions ------------------
for d in mix-f32 grok-b; do
    cp -r "$tmp/$d" "$tmp/$d-prefix"
    run "$d-prefix" "5 17 42"
    check "causality: prefix logits match ($d)" close $d "$d-prefix" 1e-5 3
done

# --- the vectorised pass against naive float64 per-position loops ---------------
# Same config and tensor-name code, independent arithmetic: catches mask, GQA,
# RoPE and top-k gather mistakes.  Uneven GQA and top-3 of 4 on purpose.
make_ckpt naive-grok --arch grok --layout a --heads 8 --kv-heads 2 --top-k 3
make_ckpt naive-mix --arch mixtral --heads 8 --kv-heads 2 --top-k 3 --sharded
naive() {
    run "$1" && $PY - "$REF" "$tmp/$1" "$tmp/$1.bin" "$TOKENS" <<'EOF'
import importlib.util, json, math, sys, numpy as np
spec = importlib.util.spec_from_file_location("ref", sys.argv[1])
ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
d, toks = sys.argv[2], [int(t) for t in sys.argv[4].split()]
c = ref.Config(json.load(open(d + "/config.json")))
ck = ref.Checkpoint(d)
_, emb, fin, head, layers = ref.tensor_names(c, ck)
G = lambda spec: ck.get(*spec).astype(np.float64)
D, group = c.head_dim, c.heads // c.kv_heads
def norm(x, w): return x / math.sqrt(sum(v * v for v in x) / len(x) + c.eps) * w
def act(x):
    if c.act == "silu": return x / (1 + np.exp(-x))
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
def rot(v, pos):                      # RoPE written pair by pair
    out = np.zeros(D)
    for i in range(D // 2):
        a = pos / c.theta ** (2 * i / D)
        out[i] = v[i] * math.cos(a) - v[i + D // 2] * math.sin(a)
        out[i + D // 2] = v[i + D // 2] * math.cos(a) + v[i] * math.sin(a)
    return out
X = [G(emb)[t] * c.emb_mult for t in toks]
for L in layers:
    Wq, Wk, Wv, Wo = (G(L[r]) for r in "qkvo")
    hs = [norm(x, G(L["attn_norm"])) for x in X]
    K = [[rot((Wk @ h)[j * D:(j + 1) * D], p) for j in range(c.kv_heads)] for p, h in enumerate(hs)]
    V = [[(Wv @ h)[j * D:(j + 1) * D] for j in range(c.kv_heads)] for h in hs]
    nxt = []
    for p, h in enumerate(hs):
        heads = []
        for hd in range(c.heads):
            q, kv = rot((Wq @ h)[hd * D:(hd + 1) * D], p), hd // group
            s = np.array([q @ K[j][kv] for j in range(p + 1)]) * c.attn_mult
            if c.softcap: s = c.softcap * np.tanh(s / c.softcap)
            w = np.exp(s - s.max()); w /= w.sum()
            heads.append(sum(w[j] * V[j][kv] for j in range(p + 1)))
        a = Wo @ np.concatenate(heads)
        if c.post_norms: a = norm(a, G(L["post_attn_norm"]))
        x = X[p] + a
        hm = norm(x, G(L["moe_norm"]))
        lg = G(L["router"]) @ hm; pr = np.exp(lg - lg.max()); pr /= pr.sum()
        top = sorted(range(c.experts), key=lambda e: -pr[e])[:c.top_k]
        wt = [pr[e] for e in top]
        if c.renormalise: wt = [v / sum(wt) for v in wt]
        m = sum(v * (G(L["down"][e]) @ (act(G(L["gate"][e]) @ hm) * (G(L["up"][e]) @ hm)))
                for e, v in zip(top, wt))
        if c.post_norms: m = norm(m, G(L["post_moe_norm"]))
        nxt.append(x + m)
    X = nxt
want = np.array([G(head) @ norm(x, G(fin)) * c.out_mult for x in X])
got = np.fromfile(sys.argv[3], "<f4").reshape(len(toks), -1)
sys.exit(0 if np.abs(got - want).max() <= 1e-5 * np.abs(want).max() else 1)
EOF
}
check "naive float64 loops agree: grok-1 (8 heads, 2 kv, top-3)" naive naive-grok
check "naive float64 loops agree: mixtral (8 heads, 2 kv, top-3)" naive naive-mix

# --- sparsity -----------------------------------------------------------------
make_ckpt sparse --arch grok --layout b --sparsity 0.5
sparse_ok() {
    run sparse && ! same_bytes sparse grok-b && $PY - "$REF" "$tmp/sparse" <<'EOF'
import importlib.util, sys, numpy as np
spec = importlib.util.spec_from_file_location("ref", sys.argv[1])
ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
ck = ref.Checkpoint(sys.argv[2])
experts = [n for n in ck.where if ".experts." in n]
zero = [float((ck.where[n].load(n) == 0).mean()) for n in experts]
others = [float((ck.where[n].load(n) == 0).mean()) for n in ck.where if n not in experts]
sys.exit(0 if experts and all(z == 0.5 for z in zero) and max(others) == 0 else 1)
EOF
}
check "sparsity 0.5 zeroes half of each expert matrix only, logits change" sparse_ok

# --- clean refusals -------------------------------------------------------------
cp -r "$tmp/grok-b-sh" "$tmp/e-missing"
edit_json "$tmp/e-missing/model.safetensors.index.json" \
    'del j["weight_map"]["model.layers.1.moe_block.experts.3.linear_v.weight"]'
expect_error "missing expert tensor is named" e-missing "$TOKENS" \
    "missing tensor model.layers.1.moe_block.experts.3.linear_v.weight"

cp -r "$tmp/grok-b-sh" "$tmp/e-norm"
edit_json "$tmp/e-norm/model.safetensors.index.json" 'del j["weight_map"]["model.norm.scale"]'
expect_error "missing norm tensor is named" e-norm "$TOKENS" "missing tensor model.norm.weight (or model.norm.scale)"

cp -r "$tmp/mix-f32" "$tmp/e-shape"
edit_json "$tmp/e-shape/config.json" 'j["intermediate_size"] = 96'
expect_error "wrong shape is named" e-shape "$TOKENS" \
    "tensor model.layers.0.block_sparse_moe.experts.0.w1.weight has shape [128, 64], expected [96, 64]"

cp -r "$tmp/mix-f32" "$tmp/e-trunc"
truncate -s 100000 "$tmp/e-trunc/model.safetensors"
expect_error "truncated file is refused" e-trunc "$TOKENS" "corrupt safetensors file"

cp -r "$tmp/mix-f32" "$tmp/e-header"
printf '\xff\xff\xff\xff\x00\x00\x00\x00' | dd of="$tmp/e-header/model.safetensors" conv=notrunc status=none
expect_error "bad header length is refused" e-header "$TOKENS" "corrupt safetensors file"

cp -r "$tmp/mix-f32" "$tmp/e-arch"
edit_json "$tmp/e-arch/config.json" 'j["architectures"] = ["LlamaForCausalLM"]'
expect_error "unknown architecture is refused" e-arch "$TOKENS" "unsupported architecture 'LlamaForCausalLM'"

expect_error "token id == vocab is refused" grok-a "5 256" "token id 256 out of range [0, 256)"
expect_error "negative token id is refused" grok-a "5 -1" "token id -1 out of range"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
