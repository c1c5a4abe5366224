#!/usr/bin/env bash
# DNS benchmark: one release `concord agent -dev` on 127.0.3.1, 100 services × 10 instances registered
# through /v1/catalog/register (each instance on its own node), then dnsperf over UDP from the same machine.
# Installs nothing; needs `dnsperf` (Debian: apt-get install -y dnsperf) and curl. Prints one markdown table.
#
#   tests/bench/dns.sh                               # defaults below
#   DURATION=20 RATE=60000 tests/bench/dns.sh
#
# Two runs over the same query file (every service by A, SRV, a tag and RFC 2782, plus node names):
#   1. throughput: as fast as dnsperf can go with OUTSTANDING queries in flight (closed loop);
#   2. latency: an open loop at RATE queries per second, every answer's latency logged (-v), p50/p99/max.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION="${DURATION:-15}"
RATE="${RATE:-60000}"
OUTSTANDING="${OUTSTANDING:-100}"
SERVICES="${SERVICES:-100}"
INSTANCES="${INSTANCES:-10}"
IP=127.0.3.1
DNS_PORT=8600
HTTP_PORT=8500
WORK="$(mktemp -d /var/tmp/concord-dnsbench.XXXXXX)"

log() { echo "dns.sh: $*" >&2; }
die() { log "$*"; exit 1; }
command -v dnsperf >/dev/null || die "dnsperf is required (Debian: apt-get install -y dnsperf)"
command -v curl >/dev/null || die "curl is required"

PID=""
cleanup() {
  [[ -n "$PID" ]] && kill -9 "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

log "building concord (release)"
(cd "$ROOT" && cargo build --quiet --release -p concord)
BIN="$ROOT/target/release/concord"

"$BIN" agent -dev -bind "$IP" -client "$IP" -http-port "$HTTP_PORT" -dns-port "$DNS_PORT" \
  -server-port 8300 -serf-lan-port 0 -serf-wan-port 0 -log-level warn >"$WORK/agent.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  curl -sf "http://$IP:$HTTP_PORT/v1/status/leader" | grep -q ':' && break
  sleep 0.1
done
curl -sf "http://$IP:$HTTP_PORT/v1/status/leader" | grep -q ':' || die "agent did not start: $(cat "$WORK/agent.log")"

log "registering $SERVICES services × $INSTANCES instances"
for s in $(seq 0 $((SERVICES - 1))); do
  for i in $(seq 0 $((INSTANCES - 1))); do
    printf '{"Node":"node-%d-%d","Address":"10.%d.%d.1","Service":{"ID":"svc-%d","Service":"svc-%d","Port":%d,"Tags":["t%d"]}}\n' \
      "$s" "$i" "$s" "$i" "$s" "$s" $((20000 + i)) $((i % 2))
  done
done >"$WORK/regs"
# Ten registration loops in parallel.
split -n l/10 "$WORK/regs" "$WORK/part."
REG_PIDS=()
for part in "$WORK"/part.*; do
  (while read -r body; do
    curl -sf -o /dev/null -X PUT --data-binary "$body" "http://$IP:$HTTP_PORT/v1/catalog/register"
  done <"$part") &
  REG_PIDS+=($!)
done
wait "${REG_PIDS[@]}"
for _ in $(seq 1 100); do
  got=$(curl -sf "http://$IP:$HTTP_PORT/v1/catalog/services" | grep -o '"svc-[0-9]*"' | wc -l)
  [[ "$got" -ge "$SERVICES" ]] && break
  sleep 0.2
done
[[ "$got" -ge "$SERVICES" ]] || die "only $got of $SERVICES services registered"
last="svc-$((SERVICES - 1)).service.consul"
for _ in $(seq 1 100); do
  n=$(dig +short +tcp @"$IP" -p "$DNS_PORT" "$last" 2>/dev/null | wc -l || true)
  [[ "$n" -ge "$INSTANCES" ]] && break
  sleep 0.2
done

for s in $(seq 0 $((SERVICES - 1))); do
  echo "svc-$s.service.consul A"
  echo "svc-$s.service.consul SRV"
  echo "t1.svc-$s.service.consul A"
  echo "_svc-$s._tcp.service.consul SRV"
  echo "node-$s-0.node.consul A"
done >"$WORK/queries"

load() { cut -d' ' -f1-3 /proc/loadavg; }
log "load before: $(load)"
log "throughput run: $DURATION s, $OUTSTANDING outstanding"
dnsperf -s "$IP" -p "$DNS_PORT" -d "$WORK/queries" -l "$DURATION" -q "$OUTSTANDING" -c 4 -T 1 >"$WORK/max.out" 2>&1
max_qps=$(awk '/Queries per second/ {print $4}' "$WORK/max.out")
max_lost=$(awk '/Queries lost/ {print $3}' "$WORK/max.out")
max_avg=$(awk '/Average Latency/ {print $4}' "$WORK/max.out")
log "load after run 1: $(load)"

log "latency run: $DURATION s at $RATE qps"
dnsperf -s "$IP" -p "$DNS_PORT" -d "$WORK/queries" -l "$DURATION" -Q "$RATE" -q 1000 -c 4 -T 1 -v >"$WORK/rate.out" 2>&1
rate_qps=$(awk '/Queries per second/ {print $4}' "$WORK/rate.out")
rate_lost=$(awk '/Queries lost/ {print $3}' "$WORK/rate.out")
# Verbose lines: "> NOERROR <name> <type> <latency seconds>".
grep '^> ' "$WORK/rate.out" | awk '{print $NF}' | sort -g >"$WORK/lat"
count=$(wc -l <"$WORK/lat")
pct() { awk -v p="$1" -v n="$count" 'NR == int(n * p / 100 + 0.999999) {printf "%.3f", $1 * 1000; exit}' "$WORK/lat"; }
p50=$(pct 50)
p99=$(pct 99)
pmax=$(tail -1 "$WORK/lat" | awk '{printf "%.3f", $1 * 1000}')
rcodes=$(grep '^> ' "$WORK/rate.out" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')
log "load after run 2: $(load)"

echo "| run | queries/s | lost | latency |"
echo "|---|---|---|---|"
echo "| closed loop, $OUTSTANDING outstanding, ${DURATION} s | $max_qps | $max_lost | avg ${max_avg} s |"
echo "| open loop at $RATE/s, ${DURATION} s | $rate_qps | $rate_lost | p50 ${p50} ms, p99 ${p99} ms, max ${pmax} ms ($count answers: ${rcodes%, }) |"
