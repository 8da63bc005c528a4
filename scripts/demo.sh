#!/usr/bin/env bash
# Runs the data plane with the example config: installs what is missing, builds, starts three small
# demo backends (blue on 9001 and 9003, green on 9002) and `bluegreen proxy` in the foreground.
# Production: http://127.0.0.1:8000/   test: http://127.0.0.1:8001/   admin: http://127.0.0.1:9901/v1/state
# Swap the two listeners:  curl -X POST 127.0.0.1:9901/v1/swap -d '{"listeners":["production","test"]}'
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target bluegreen test_backend

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 0' INT TERM
for spec in blue:9001 green:9002 blue:9003; do
  build/tests/support/test_backend --listen "127.0.0.1:${spec#*:}" --name "${spec%%:*}" >/dev/null &
  pids+=($!)
done

cat <<MSG
bluegreen proxy (Ctrl-C stops everything)
  production  http://127.0.0.1:8000/   -> target group blue
  test        http://127.0.0.1:8001/   -> target group green
  admin       http://127.0.0.1:9901/v1/state
  swap        curl -X POST 127.0.0.1:9901/v1/swap -d '{"listeners":["production","test"]}'
MSG
build/src/main/bluegreen proxy --config examples/proxy.yaml &
pids+=($!)
wait "$!"
