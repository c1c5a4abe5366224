#!/usr/bin/env bash
# Side-by-side KV benchmark: a 3-member etcd 3.4 cluster and a 3-server concord cluster on this machine,
# driven by the same load generator (kvbench, HTTP/1.1 keep-alive, closed loop). Installs nothing; needs
# `etcd` (Debian: apt-get install -y etcd-server) and curl. Prints markdown tables on stdout.
#
#   tests/bench/run.sh                        # both systems, full matrix
#   SYSTEMS=etcd tests/bench/run.sh           # only etcd (or SYSTEMS=concord)
#   DURATION=10s CLIENTS=1,16,64 VALUE_SIZE=100 KEYS=10000 tests/bench/run.sh
#   BENCH_DIR=/some/disk/dir tests/bench/run.sh   # where the data dirs go (default: a new dir in /var/tmp)
#
# etcd: 127.0.1.1-3, client port 2379, peer port 2380, data dirs on disk, default fsync behaviour.
# concord: 127.0.2.1-3, default ports (HTTP 8500, RPC 8300), release build, data dirs on disk, defaults.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SYSTEMS="${SYSTEMS:-etcd concord}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-1s}"
CLIENTS="${CLIENTS:-1,16,64}"
VALUE_SIZE="${VALUE_SIZE:-100}"
KEYS="${KEYS:-10000}"
# Read modes measured: etcd's default is linearizable (ReadIndex); concord's default is Consul's leader
# lease. Each side's linearizable mode is measured too, so like can be compared with like.
ETCD_READ_MODES="${ETCD_READ_MODES:-linearizable serializable}"
CONCORD_READ_MODES="${CONCORD_READ_MODES:-default consistent stale}"
BENCH_DIR="${BENCH_DIR:-$(mktemp -d /var/tmp/concord-bench.XXXXXX)}"
KEEP="${KEEP:-0}"   # KEEP=1 leaves the data dirs behind

log() { echo "run.sh: $*" >&2; }
die() { log "$*"; exit 1; }

command -v curl >/dev/null || die "curl is required"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  if [[ "$KEEP" != 1 ]]; then rm -rf "$BENCH_DIR"; else log "data and logs kept in $BENCH_DIR"; fi
}
trap cleanup EXIT

stop_all() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

# wait_for <seconds> <description> <command…>: polls the command every 200 ms until it succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $what (logs in $BENCH_DIR)"
    sleep 0.2
  done
}

log "building kvbench and concord (release)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
(cd "$ROOT" && cargo build --release --quiet -p concord-tests --bin kvbench -p concord --bin concord)
KVBENCH="$CARGO_TARGET_DIR/release/kvbench"
CONCORD="$CARGO_TARGET_DIR/release/concord"

kvbench() {
  "$KVBENCH" --endpoints "$1" --duration "$DURATION" --warmup "$WARMUP" --clients "$CLIENTS" \
    --value-size "$VALUE_SIZE" --keys "$KEYS" "${@:2}"
}

machine_facts() {
  echo "## Machine"
  echo
  echo "- CPU: $(nproc) × $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "- Memory: $(free -g | awk '/^Mem:/ {print $2}') GiB; kernel $(uname -r); $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "- Data dirs: $BENCH_DIR on $(df -h "$BENCH_DIR" | awk 'NR==2 {print $1}')"
  echo "- Load generator on the same machine; duration $DURATION per level after a $WARMUP warm-up; $VALUE_SIZE-byte values; $KEYS keys"
  echo
}

# The client address of the etcd leader (the member whose own ID is the leader ID it reports).
etcd_leader() {
  local i status
  for i in 1 2 3; do
    status=$(curl -sf -X POST -d '{}' "http://127.0.1.$i:2379/v3/maintenance/status") || continue
    if [[ "$(grep -o '"member_id":"[0-9]*"' <<<"$status" | cut -d'"' -f4)" == \
          "$(grep -o '"leader":"[0-9]*"' <<<"$status" | cut -d'"' -f4)" ]]; then
      echo "127.0.1.$i"
      return
    fi
  done
  echo unknown
}

run_etcd() {
  command -v etcd >/dev/null || die "etcd not found: apt-get install -y etcd-server (Debian's etcd 3.4)"
  log "$(etcd --version | head -1)"
  local cluster="" i
  for i in 1 2 3; do cluster+="${cluster:+,}e$i=http://127.0.1.$i:2380"; done
  for i in 1 2 3; do
    local ip="127.0.1.$i" dir="$BENCH_DIR/etcd/e$i"
    mkdir -p "$dir"
    etcd --name "e$i" --data-dir "$dir/data" \
      --listen-client-urls "http://$ip:2379" --advertise-client-urls "http://$ip:2379" \
      --listen-peer-urls "http://$ip:2380" --initial-advertise-peer-urls "http://$ip:2380" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token concord-bench \
      --log-level warn >"$dir/out.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 1 2 3; do
    wait_for 60 "etcd e$i to be healthy" sh -c "curl -sf http://127.0.1.$i:2379/health | grep -q '\"health\":\"true\"'"
  done
  local eps="127.0.1.1:2379,127.0.1.2:2379,127.0.1.3:2379" mode
  echo "### etcd $(etcd --version | head -1 | awk '{print $3}')"
  echo
  echo "Leader: $(etcd_leader). Endpoint order: $eps (one client uses the first)."
  echo
  kvbench "$eps" --target etcd --op put
  for mode in $ETCD_READ_MODES; do
    echo
    kvbench "$eps" --target etcd --op get --read-mode "$mode"
  done
  echo
  stop_all
}

concord_leader_agreed() {
  local a b c
  a=$(curl -sf http://127.0.2.1:8500/v1/status/leader) || return 1
  b=$(curl -sf http://127.0.2.2:8500/v1/status/leader) || return 1
  c=$(curl -sf http://127.0.2.3:8500/v1/status/leader) || return 1
  [[ "$a" != '""' && "$a" == "$b" && "$b" == "$c" ]]
}

run_concord() {
  log "$("$CONCORD" version | head -1)"
  local i j
  for i in 1 2 3; do
    local ip="127.0.2.$i" dir="$BENCH_DIR/concord/c$i" join=()
    mkdir -p "$dir/data"
    for j in 1 2 3; do [[ $j == "$i" ]] || join+=(-retry-join "127.0.2.$j"); done
    "$CONCORD" agent -server -bootstrap-expect 3 -data-dir "$dir/data" -node "c$i" \
      -bind "$ip" -client "$ip" -retry-interval 1s "${join[@]}" >"$dir/out.log" 2>&1 &
    PIDS+=($!)
  done
  wait_for 60 "the concord servers to agree on a leader" concord_leader_agreed
  local eps="127.0.2.1:8500,127.0.2.2:8500,127.0.2.3:8500" mode
  echo "### concord $("$CONCORD" version | head -1 | awk '{print $NF}')"
  echo
  echo "Leader: $(curl -sf http://127.0.2.1:8500/v1/status/leader | tr -d '"' | cut -d: -f1). Endpoint order: $eps (one client uses the first)."
  echo
  kvbench "$eps" --target concord --op put
  for mode in $CONCORD_READ_MODES; do
    echo
    kvbench "$eps" --target concord --op get --read-mode "$mode"
  done
  echo
  stop_all
}

mkdir -p "$BENCH_DIR"
machine_facts
for s in $SYSTEMS; do
  case "$s" in
    etcd) run_etcd ;;
    concord) run_concord ;;
    *) die "unknown system $s (etcd or concord)" ;;
  esac
done
