#!/usr/bin/env bash
# The README's first command: installs what bluegreen needs to build and run (Debian 12), builds
# it (optimized), puts it on the PATH (/usr/local/bin/bluegreen when run as root; otherwise it
# says where the binary is), and runs `bluegreen quickstart` with the arguments given (see
# docs/quickstart.md). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh --build-only
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target bluegreen

binary="$PWD/build/src/main/bluegreen"
if [ "$(id -u)" -eq 0 ]; then
  install -m 0755 "$binary" /usr/local/bin/bluegreen
  binary=/usr/local/bin/bluegreen
  echo "installed $binary"
else
  echo "bluegreen is $binary: add $(dirname "$binary") to your PATH for the next steps"
fi
# The sample app goes next to where the user stands, not into the checkout.
cd "${OLDPWD:-$HOME}"
exec "$binary" quickstart "$@"
