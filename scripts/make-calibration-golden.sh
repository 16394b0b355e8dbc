#!/usr/bin/env bash
# Regenerates tests/fixtures/kjv-moe/calibration-norms.json: Wanda's
# calibration statistics (the L2 norm of each input channel of every linear
# weight) for the trained test model over the first 512 tokens of its
# calibration text, in windows of 256, computed by the independent NumPy
# reference (scripts/reference-moe.py). The tokens are SentencePiece's own
# (Debian's python3-sentencepiece), BOS first, and are stored with the norms.
# Run it only when the committed model or its calibration text changes.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/fixtures/kjv-moe
tokens="$(/usr/bin/python3 -c '
import sys
import sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1] + "/tokenizer.model")
ids = [sp.bos_id()] + sp.encode(open(sys.argv[1] + "/calibration.txt").read())
print(" ".join(map(str, ids[:512])))' "$dir")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 scripts/reference-moe.py "$dir" --tokens "$tokens" --input-norms "$work/norms.json" --window 256
# Seven significant digits: the file stays small, the test's tolerance is far wider.
/usr/bin/python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
d["norms"] = {k: [float("%.7g" % v) for v in vs] for k, vs in sorted(d["norms"].items())}
json.dump(d, open(sys.argv[2], "w"), separators=(",", ":"))' "$work/norms.json" "$dir/calibration-norms.json"
echo "wrote $dir/calibration-norms.json"
