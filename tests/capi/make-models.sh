#!/usr/bin/env bash
# The C API tests' models, made with the lacuna tool:
#   make-models.sh LACUNA OUT_DIR GOLDEN_DIR
# model.lacuna (bf16, pruned to 50 %), model-f32.lacuna (f32, unpruned),
# model-notok.lacuna (no tokenizer), truncated.lacuna, corrupted.lacuna (a
# flipped payload byte), and cpp.logits (`lacuna logits` on the golden tokens).
set -euo pipefail
lacuna="$1" out="$2" golden="$3"
rm -rf "$out"
mkdir -p "$out"
# The checkpoint the goldens come from (scripts/make-goldens.sh).
"$lacuna" synth --arch mixtral --preset tiny --seed 7 "$out/ckpt" >/dev/null
"$lacuna" convert "$out/ckpt" "$out/model.lacuna" --sparsity 0.5 >/dev/null
"$lacuna" convert "$out/ckpt" "$out/model-f32.lacuna" --dtype f32 --format dense >/dev/null
mkdir "$out/ckpt-notok"
cp "$out/ckpt/config.json" "$out/ckpt"/*.safetensors "$out/ckpt-notok/"
"$lacuna" convert "$out/ckpt-notok" "$out/model-notok.lacuna" >/dev/null 2>&1
"$lacuna" logits "$out/model.lacuna" --tokens "$(cat "$golden/tokens.txt")" --out "$out/cpp.logits"
size=$(stat -c %s "$out/model.lacuna")
head -c $((size / 2)) "$out/model.lacuna" >"$out/truncated.lacuna"
cp "$out/model.lacuna" "$out/corrupted.lacuna"
# The middle of the file lies in a weight's payload (the tensor table is at the end).
offset=$((size / 2))
byte=$(od -An -tu1 -j "$offset" -N1 "$out/model.lacuna" | tr -d ' ')
printf "$(printf '\\%03o' $(((byte + 1) % 256)))" | dd of="$out/corrupted.lacuna" bs=1 seek="$offset" conv=notrunc status=none
