#!/usr/bin/env bash
# Installs the build into a fresh prefix and builds examples/generate.c
# against it the way users do: with pkg-config alone, with pkg-config --static
# (liblacuna.a), and with CMake's find_package(lacuna); runs each on a model.
#   test-install.sh BUILD_DIR SOURCE_DIR MODEL [EXTRA_FLAGS]
# EXTRA_FLAGS: the build's own C flags (a sanitizer's, which the library needs).
set -euo pipefail
build="$1" src="$2" model="$3" extra="${4:-}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
export PKG_CONFIG_PATH=$(dirname "$(find "$prefix" -name lacuna.pc)")
flags="-std=c11 -Wall -Wextra -Wpedantic -Werror $extra"
check_runs() {
  local out
  out=$("$@" "$model" "The old train" 8 2>&1) || { echo "$out"; exit 1; }
  grep -q "8 tokens generated" <<<"$out" || { echo "unexpected output: $out"; exit 1; }
}

# Shared: pkg-config alone; the loader finds liblacuna.so.0 through LD_LIBRARY_PATH.
cc $flags "$src/examples/generate.c" $(pkg-config --cflags --libs lacuna) -o "$work/generate-shared"
LD_LIBRARY_PATH="$(pkg-config --variable=libdir lacuna)" check_runs "$work/generate-shared"
echo "pkg-config (shared): built and ran"

# Static: the archive and the private dependencies pkg-config lists.
libdir=$(pkg-config --variable=libdir lacuna)
cc $flags "$src/examples/generate.c" $(pkg-config --cflags lacuna) "$libdir/liblacuna.a" \
  $(pkg-config --static --libs lacuna | sed 's/-llacuna//') -o "$work/generate-static"
if ldd "$work/generate-static" | grep -q liblacuna; then echo "the static build links liblacuna.so"; exit 1; fi
check_runs "$work/generate-static"
echo "pkg-config --static (liblacuna.a): built and ran"

# CMake: find_package(lacuna) and the lacuna::lacuna target.
mkdir "$work/consumer"
cat >"$work/consumer/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.25)
project(consumer C)
find_package(lacuna 0.1 REQUIRED)
add_executable(generate "$src/examples/generate.c")
target_link_libraries(generate PRIVATE lacuna::lacuna)
CMAKE
cmake -S "$work/consumer" -B "$work/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS="$extra" >/dev/null
cmake --build "$work/consumer/build" >/dev/null
check_runs "$work/consumer/build/generate"
echo "find_package(lacuna): built and ran"
