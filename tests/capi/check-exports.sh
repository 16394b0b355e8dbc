#!/usr/bin/env bash
# liblacuna.so must export exactly the functions include/lacuna.h declares.
#   check-exports.sh LIBRARY HEADER
set -euo pipefail
lib="$1" header="$2"
# Functions only: the version node (LACUNA_0) is an absolute symbol; names may carry @@LACUNA_0.
exported=$(nm -D --defined-only "$lib" | awk '$2 != "A" {sub(/@.*/, "", $3); print $3}' | sort)
declared=$(grep -E '^LACUNA_API ' "$header" | sed -E 's/.*[ *](lacuna_[a-z0-9_]+)\(.*/\1/' | sort)
if [ "$exported" != "$declared" ]; then
  echo "exported symbols differ from the header's functions (< exported, > declared):"
  diff <(echo "$exported") <(echo "$declared") || true
  exit 1
fi
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
abi=$(awk '/^#define LACUNA_ABI_VERSION/ {print $3}' "$header")
[ "$soname" = "liblacuna.so.$abi" ] || { echo "SONAME is $soname, want liblacuna.so.$abi"; exit 1; }
nm -D --defined-only "$lib" | grep -q ' A LACUNA_0$' || { echo "no LACUNA_0 version node"; exit 1; }
echo "$(echo "$exported" | wc -l) functions exported (version LACUNA_0), all declared in the header; SONAME $soname"
