#!/usr/bin/env bash
# Installs the Debian 12 packages bluegreen needs to build, test and benchmark, and the npm
# packages of the console's browser test (tests/browser). Safe to run again: it installs only what
# is missing and says nothing more when all is there. With --build-only: just what building and
# running bluegreen needs (scripts/quickstart.sh), not the test, fuzzing and benchmark tools.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git curl
  libboost1.81-dev                         # Asio: event loops, sockets, timers, signals
  libyaml-cpp-dev nlohmann-json3-dev       # config files and JSON APIs
  libspdlog-dev libfmt-dev libcli11-dev    # logging, formatting, command line
  libsqlite3-dev libssl-dev                # the state store; SHA-256 and HMAC for tokens
  libgtest-dev libgmock-dev                # the build includes the tests' targets
)
TEST_PACKAGES=(
  clang libclang-rt-14-dev llvm            # sanitizers and libFuzzer
  podman runc                              # the container runtime's integration tests
  libbenchmark-dev
  haproxy nginx wrk                        # benchmark references and load generator
  chromium                                 # the web console's browser test (headless)
)
PACKAGES=("${BUILD_PACKAGES[@]}")
if [ "${1:-}" != "--build-only" ]; then PACKAGES+=("${TEST_PACKAGES[@]}"); fi
if [ "${1:-}" != "--build-only" ] && ! command -v node >/dev/null 2>&1; then
  # Node.js 20 or newer runs the browser test (playwright-core); Debian's nodejs only when there
  # is no node at all (a machine may have a newer one from elsewhere).
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The benchmarks start their own haproxy and nginx; the packaged services are not needed.
  for svc in haproxy nginx; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
      $SUDO systemctl stop "$svc" || true
    fi
  done
fi

# The browser test's npm packages, exactly as package-lock.json pins them. A copy of the lock file
# that `npm ci` installed from is kept in node_modules: while it equals the lock file, nothing to do.
browser=tests/browser
stamp="$browser/node_modules/.installed-package-lock.json"
if [ "${1:-}" != "--build-only" ] && ! cmp -s "$browser/package-lock.json" "$stamp" 2>/dev/null; then
  echo "install-deps: npm ci in $browser"
  (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$browser/package-lock.json" "$stamp"
fi
if [ ${#missing[@]} -eq 0 ]; then echo "install-deps: everything is installed"; fi
