#!/usr/bin/env bash
# Regenerates the golden logits the model tests compare against: for each
# architecture, `lacuna synth` writes the tiny test checkpoint and the
# independent NumPy reference (scripts/reference-moe.py) computes its logits.
#   scripts/make-goldens.sh [path/to/lacuna]   (default build/release/bin/lacuna)
# Run it only when the synthetic checkpoint itself changes (the model tests
# say so); never to make a failing runtime pass.
set -euo pipefail
cd "$(dirname "$0")/.."
lacuna="${1:-build/release/bin/lacuna}"
out=tests/fixtures/golden
tokens="$(cat "$out/tokens.txt")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for arch in grok-1 mixtral; do
  "$lacuna" synth --arch "$arch" --preset tiny --seed 7 "$work/$arch" >/dev/null
  /usr/bin/python3 scripts/reference-moe.py "$work/$arch" --tokens "$tokens" --out "$out/$arch-tiny.logits"
  # FNV-1a 64 of the checkpoint: the test recomputes it to tell a changed
  # synthetic checkpoint (regenerate) from a runtime bug (fix the runtime).
  /usr/bin/python3 -c '
import sys
h = 0xcbf29ce484222325
for b in open(sys.argv[1], "rb").read():
    h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
print("%016x" % h)' "$work/$arch/model.safetensors" >"$out/$arch-tiny.checkpoint-fnv1a64"
done
echo "goldens written to $out"
