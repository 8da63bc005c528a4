#!/usr/bin/env bash
# Installs what is missing, builds bluegreen three times (optimized, ASan+UBSan, TSan) and runs
# every test in the first two builds (unit tests, integration tests against real processes on
# loopback, the replay of the fuzz seed corpora) and the proxy's threading tests under TSan.
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

echo "== build (TSan) and the proxy's threading tests"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBLUEGREEN_TSAN=ON \
  -DBLUEGREEN_BENCH=OFF >/dev/null
# Only what the threading tests run: the proxy's tests, the binary and the test backend.
cmake --build build-tsan -j "$JOBS" --target proxy_test bluegreen test_backend
# The proxy runs as a child of the tests and inherits these options: a data race aborts it, and
# the test that drove it fails.
TSAN_OPTIONS=halt_on_error=1:exitcode=66 \
  ctest --test-dir build-tsan --output-on-failure -j "$JOBS" --timeout 600 \
  -R "SwapTest|LifecycleTest|DrainingTest|HealthTest|ConfigChangeTest|BalancingTest|RetryTest|BackendFaultTest|WorkersTest|EventLoopTest"

echo "== tests (RelWithDebInfo)"
ctest --test-dir build --output-on-failure -j "$JOBS" --timeout 600
