#!/usr/bin/env bash
# The Debian package, as `cpack -G DEB` makes it from a build directory: what it installs (the
# binary, the systemd unit, the docs and examples), its control data and maintainer scripts, that
# the packaged binary runs, and that systemd accepts the unit. Nothing is installed on this
# machine: the package is unpacked into a temporary directory.
# Usage: package_test.sh BUILD_DIR
set -euo pipefail
build_dir=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

(cd "$build_dir" && cpack -G DEB -B "$work/out" >"$work/cpack.log" 2>&1) ||
  { cat "$work/cpack.log" >&2; fail "cpack -G DEB failed"; }
deb=$(ls "$work"/out/bluegreen_*_amd64.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no bluegreen_*.deb in $work/out"
echo "package: $(basename "$deb") ($(stat -c %s "$deb") bytes)"

contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for path in ./usr/bin/bluegreen ./usr/lib/systemd/system/bluegreen.service \
  ./usr/share/doc/bluegreen/README.md ./usr/share/doc/bluegreen/docs/operating.md \
  ./usr/share/doc/bluegreen/docs/quickstart.md ./usr/share/doc/bluegreen/docs/api.md \
  ./usr/share/doc/bluegreen/examples/stack.yaml; do
  grep -qx -- "$path" <<<"$contents" || fail "the package lacks $path"
done
if grep -E '(_test|test_backend|/bench|\.a)$' <<<"$contents"; then fail "tests or build files packaged"; fi

control=$(dpkg-deb -f "$deb")
for field in "Package: bluegreen" "Section: admin" "Architecture: amd64"; do
  grep -qx -- "$field" <<<"$control" || fail "control lacks '$field'"
done
depends=$(dpkg-deb -f "$deb" Depends)
for dep in git adduser libsqlite3-0 libssl3 libyaml-cpp0.7; do
  grep -q -- "$dep" <<<"$depends" || fail "Depends lacks $dep: $depends"
done

dpkg-deb -e "$deb" "$work/control"
for script in postinst postrm; do
  [ -x "$work/control/$script" ] || fail "$script is missing or not executable"
  sh -n "$work/control/$script" || fail "$script is not valid sh"
done
grep -q "adduser --system" "$work/control/postinst" || fail "postinst creates no system user"

dpkg-deb -x "$deb" "$work/root"
version=$("$work/root/usr/bin/bluegreen" --version)
[ -n "$version" ] || fail "the packaged binary printed no version"
echo "packaged binary: $version"

unit="$work/root/usr/lib/systemd/system/bluegreen.service"
grep -qx "KillMode=process" "$unit" || fail "the unit would kill the proxy and tasks with serve"
grep -qx "User=bluegreen" "$unit" || fail "the unit does not run serve as the bluegreen user"
if command -v systemd-analyze >/dev/null; then
  sed "s|/usr/bin/bluegreen|$work/root/usr/bin/bluegreen|" "$unit" >"$work/bluegreen.service"
  out=$(systemd-analyze verify "$work/bluegreen.service" 2>&1) || true
  # Complaints about this machine (no systemd running, no such user here) are not the unit's.
  bad=$(grep -v -E "Failed to (connect|create)|not running|System has not been booted|bluegreen\.service: (Failed|Cannot).*(user|group)|^$" <<<"$out" || true)
  [ -z "$bad" ] || fail "systemd-analyze verify: $bad"
  echo "systemd-analyze verify: ok"
fi
echo "PASS"
