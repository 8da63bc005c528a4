#!/usr/bin/env bash
# Starts and stops Podman's Docker-compatible API service for tests, isolated under a directory.
#
#   scripts/podman-service.sh start DIR   # prints the socket path (DIR/podman.sock) once it answers
#   scripts/podman-service.sh stop DIR
#
# `start` writes DIR/containers.conf (runc, cgroupfs, and default ulimits no higher than the
# caller's, which is what Podman needs to run containers as root here without systemd), and runs
#   CONTAINERS_CONF=DIR/containers.conf podman system service --time=0 unix://DIR/podman.sock
# in the background (pid in DIR/podman.pid, output in DIR/podman.log). It waits until GET /_ping
# answers. Only the engine configuration is isolated: images and containers live in the machine's
# default Podman storage, so images made with
#   CONTAINERS_CONF=DIR/containers.conf podman import|build ...
# are visible to the service. Starting a service that already runs under DIR just prints its socket.
#
# `stop` sends SIGTERM (SIGKILL after 10 s) and removes the socket and the pid file. Containers
# keep running when the service stops (each has its own conmon); remove them first.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

[[ $# -eq 2 ]] || usage
cmd=$1
dir=$2
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
sock="$dir/podman.sock"
pidfile="$dir/podman.pid"
log="$dir/podman.log"
conf="$dir/containers.conf"

ping_ok() {
  [[ -S $sock ]] && [[ $(curl -s --max-time 2 --unix-socket "$sock" http://d/_ping 2>/dev/null) == OK ]]
}

# True while the process runs. A zombie counts as gone: once the caller has exited, the service is
# reaped by PID 1, which can take a second.
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# The pid of the service started under DIR, if it still runs (and is not a reused pid).
running_pid() {
  local pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ -n $pid ]] && alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$sock" &&
    echo "$pid"
}

start() {
  command -v podman >/dev/null || { echo "podman is not installed (apt-get install -y podman runc)" >&2; exit 1; }
  command -v curl >/dev/null || { echo "curl is not installed (apt-get install -y curl)" >&2; exit 1; }
  if running_pid >/dev/null && ping_ok; then
    echo "$sock"
    return
  fi
  # The nofile and nproc limits must not exceed this shell's: a container cannot raise them.
  local nofile nproc
  nofile=$(ulimit -n); nproc=$(ulimit -u)
  [[ $nofile == unlimited || $nofile -gt 1024 ]] && nofile=1024
  [[ $nproc == unlimited || $nproc -gt 1024 ]] && nproc=1024
  cat >"$conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
EOF
  export CONTAINERS_CONF="$conf"
  rm -f "$sock"
  # Detached from the caller's stdio, so a caller reading our stdout sees EOF when we exit.
  setsid podman system service --time=0 "unix://$sock" </dev/null >"$log" 2>&1 &
  echo $! >"$pidfile"
  local pid=$!
  for _ in $(seq 300); do  # up to 30 s
    if ping_ok; then
      echo "$sock"
      return
    fi
    if ! alive "$pid"; then
      echo "podman system service exited; its log ($log):" >&2
      tail -n 20 "$log" >&2
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.1
  done
  echo "podman system service did not answer on $sock within 30 s; its log ($log):" >&2
  tail -n 20 "$log" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  exit 1
}

stop() {
  local pid
  if pid=$(running_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 200); do  # up to 10 s
      alive "$pid" || break
      sleep 0.05
    done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile" "$sock"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
