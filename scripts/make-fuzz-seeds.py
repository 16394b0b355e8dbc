#!/usr/bin/python3
"""Write the fuzz targets' seed inputs into tests/fuzz/corpus (docs/fuzzing.md).

Usage:
  /usr/bin/python3 scripts/make-fuzz-seeds.py [--lacuna build/release/bin/lacuna]

checkpoint: micro checkpoints (hidden 8, one layer, two experts, vocabulary
16) of each architecture and layout, one of them sharded, packed as the
target reads them (a conversion byte, then each file as the index of its
name, a u32 length and its bytes).
model-file: those checkpoints converted by `lacuna convert` in each dtype
and format, and one with a 512-token vocabulary and the `tiny` preset's
tokenizer. The request and batch seeds are written by hand in the corpus
and left alone here. Seeds are a few KB each, so they are committed; each
run writes them with other bytes (a model's metadata records the
directory it was converted from).
"""
import argparse
import os
import shutil
import struct
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
MICRO = ["--hidden", "8", "--layers", "1", "--heads", "2", "--kv-heads", "1",
         "--experts", "2", "--top-k", "2", "--ffn", "8", "--vocab", "16"]
# (name, make-test-checkpoint arguments)
CHECKPOINTS = [("mixtral", ["--arch", "mixtral"]),
               ("mixtral-sharded", ["--arch", "mixtral", "--sharded"]),
               ("grok-a", ["--arch", "grok", "--layout", "a"]),
               ("grok-b", ["--arch", "grok", "--layout", "b", "--sparsity", "0.5"])]
# The checkpoint target's conversion byte: dtype (f32 0, bf16 1, int8 2) | 4
# to prune to 50 % | format (dense 0, csr 1, bitmap 2, bsr 3; 7 auto) << 3.
CONVERSIONS = {"f32-dense": 0 | 0 << 3, "bf16-csr-pruned": 1 | 4 | 1 << 3,
               "int8-bitmap-pruned": 2 | 4 | 2 << 3, "bf16-bsr": 1 | 3 << 3, "int8-auto": 2 | 7 << 3}
# The same conversions for `lacuna convert`, whose outputs seed model-file.
CONVERT_FLAGS = {"f32-dense": ["--dtype", "f32", "--format", "dense"],
                 "bf16-csr-pruned": ["--dtype", "bf16", "--format", "csr", "--sparsity", "0.5"],
                 "int8-bitmap-pruned": ["--dtype", "int8", "--format", "bitmap", "--sparsity", "0.5"],
                 "bf16-bsr": ["--dtype", "bf16", "--format", "bsr"],
                 "int8-auto": ["--dtype", "int8"]}


# The checkpoint target's file names, in the order of their index byte.
FILES = ["config.json", "model.safetensors", "model.safetensors.index.json",
         "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tokenizer.model"]


def packed(hf, choice):
    out = bytes([choice])
    for i, name in enumerate(FILES):
        path = os.path.join(hf, name)
        if os.path.exists(path):
            data = open(path, "rb").read()
            out += bytes([i]) + struct.pack("<I", len(data)) + data
    return out


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, "seed-" + name), "wb") as f:
        f.write(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lacuna", default=os.path.join(ROOT, "build", "release", "bin", "lacuna"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in CHECKPOINTS:
            hf = os.path.join(tmp, name)
            subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "make-test-checkpoint.py"), hf,
                            "--dtype", "bf16"] + args + MICRO, check=True)
            for conversion, choice in CONVERSIONS.items():
                write("checkpoint", f"{name}-{conversion}", packed(hf, choice))
                if "--sharded" in args:
                    continue  # the same model as unsharded
                out = os.path.join(tmp, f"{name}-{conversion}.lacuna")
                subprocess.run([a.lacuna, "convert", hf, out] + CONVERT_FLAGS[conversion], check=True, stdout=subprocess.DEVNULL)
                write("model-file", f"{name}-{conversion}", open(out, "rb").read())
        # One model with a SentencePiece tokenizer (the synthetic `tiny`
        # preset's, 512 pieces), so the fuzzer reaches its loader too.
        tiny, hf = os.path.join(tmp, "tiny"), os.path.join(tmp, "with-tokenizer")
        subprocess.run([a.lacuna, "synth", "--arch", "mixtral", "--preset", "tiny", tiny], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "make-test-checkpoint.py"), hf, "--arch", "mixtral",
                        "--dtype", "bf16"] + MICRO[:-1] + ["512"], check=True)
        shutil.copy(os.path.join(tiny, "tokenizer.model"), hf)
        out = os.path.join(tmp, "with-tokenizer.lacuna")
        subprocess.run([a.lacuna, "convert", hf, out] + CONVERT_FLAGS["int8-auto"], check=True, stdout=subprocess.DEVNULL)
        write("model-file", "mixtral-tokenizer-int8-auto", open(out, "rb").read())
        write("checkpoint", "mixtral-tokenizer-int8-auto", packed(hf, CONVERSIONS["int8-auto"]))


if __name__ == "__main__":
    main()
