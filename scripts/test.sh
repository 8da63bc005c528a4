#!/usr/bin/env bash
# Installs what is missing, builds bluegreen twice (optimized, and with ASan+UBSan) and runs every
# test in both builds: unit tests, integration tests against real processes on loopback, and the
# replay of the fuzz seed corpora.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
# Paths relative to the checkout, so a fresh clone in another folder hits the same cache entries.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
JOBS="${JOBS:-$(nproc)}"

echo "== build (RelWithDebInfo)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$JOBS"

echo "== build (ASan+UBSan)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBLUEGREEN_SANITIZE=ON \
  -DBLUEGREEN_BENCH=OFF >/dev/null
cmake --build build-asan -j "$JOBS"

echo "== tests (ASan+UBSan)"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$JOBS" --timeout 600

echo "== tests (RelWithDebInfo)"
ctest --test-dir build --output-on-failure -j "$JOBS" --timeout 600
