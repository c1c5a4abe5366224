#!/usr/bin/env bash
# DNS benchmark: one release `concord agent -dev` on 127.0.3.1, 100 services × 10 instances registered
# through /v1/catalog/register (each instance on its own node), then dnsperf over UDP from the same machine.
# Installs nothing; needs `dnsperf` (Debian: apt-get install -y dnsperf), dig and curl. Prints one markdown
# table: rate, losses, latency, and the CPU time the agent and dnsperf each used per query (from
# /proc/<pid>/stat and /usr/bin/time; 10 ms clock ticks, so read them over runs of several seconds).
#
#   tests/bench/dns.sh                               # defaults below
#   DURATION=20 RATE=60000 tests/bench/dns.sh
#   CONCORD_BIN=/tmp/concord-old tests/bench/dns.sh  # another binary, not built here
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
command -v dig >/dev/null || die "dig is required (Debian: apt-get install -y dnsutils)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is required (Debian: apt-get install -y time)"

PID=""
# Keeps the script's own exit status: `wait` on the killed agent returns 137, and as the last command of an
# && list under `set -e` it used to become the script's status after a successful run.
cleanup() {
  local rc=$?
  if [[ -n "$PID" ]]; then
    kill -9 "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

if [[ -n "${CONCORD_BIN:-}" ]]; then
  BIN="$CONCORD_BIN"   # e.g. an older build to compare with; nothing is built
else
  log "building concord (release)"
  (cd "$ROOT" && cargo build --quiet --release -p concord)
  BIN="$ROOT/target/release/concord"
fi

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
# The agent's user + system CPU time so far, in clock ticks (fields 14 and 15 of /proc/<pid>/stat; the
# command name in field 2 has no spaces here).
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
hz=$(getconf CLK_TCK)
# CPU microseconds per query: per_query <ticks> <queries completed>.
per_query() { awk -v t="$1" -v n="$2" -v hz="$hz" 'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }'; }
# dnsperf's own CPU: /usr/bin/time writes "user system" seconds to the file given.
dnsperf_cpu() { awk -v hz="$hz" '{printf "%.0f", ($1 + $2) * hz}' "$1"; }
completed() { awk '/Queries completed/ {print $3}' "$1"; }

load_before=$(load)
log "load before: $load_before"
log "throughput run: $DURATION s, $OUTSTANDING outstanding"
t0=$(ticks)
/usr/bin/time -f '%U %S' -o "$WORK/max.time" \
  dnsperf -s "$IP" -p "$DNS_PORT" -d "$WORK/queries" -l "$DURATION" -q "$OUTSTANDING" -c 4 -T 1 >"$WORK/max.out" 2>&1
max_ticks=$(($(ticks) - t0))
max_qps=$(awk '/Queries per second/ {print $4}' "$WORK/max.out")
max_lost=$(awk '/Queries lost/ {print $3}' "$WORK/max.out")
max_avg=$(awk '/Average Latency/ {printf "%.3f", $4 * 1000}' "$WORK/max.out")
max_cpu=$(per_query "$max_ticks" "$(completed "$WORK/max.out")")
max_client_cpu=$(per_query "$(dnsperf_cpu "$WORK/max.time")" "$(completed "$WORK/max.out")")
load_mid=$(load)
log "load after run 1: $load_mid"

log "latency run: $DURATION s at $RATE qps"
t0=$(ticks)
/usr/bin/time -f '%U %S' -o "$WORK/rate.time" \
  dnsperf -s "$IP" -p "$DNS_PORT" -d "$WORK/queries" -l "$DURATION" -Q "$RATE" -q 1000 -c 4 -T 1 -v >"$WORK/rate.out" 2>&1
rate_ticks=$(($(ticks) - t0))
rate_qps=$(awk '/Queries per second/ {print $4}' "$WORK/rate.out")
rate_lost=$(awk '/Queries lost/ {print $3}' "$WORK/rate.out")
rate_cpu=$(per_query "$rate_ticks" "$(completed "$WORK/rate.out")")
rate_client_cpu=$(per_query "$(dnsperf_cpu "$WORK/rate.time")" "$(completed "$WORK/rate.out")")
# Verbose lines: "> NOERROR <name> <type> <latency seconds>", or "> T <name> <type>" for a query that timed
# out (no latency: it is counted under "lost", not as a latency).
grep '^> ' "$WORK/rate.out" | awk '$2 != "T" {print $NF}' | sort -g >"$WORK/lat"
count=$(wc -l <"$WORK/lat")
pct() { awk -v p="$1" -v n="$count" 'NR == int(n * p / 100 + 0.999999) {printf "%.3f", $1 * 1000; exit}' "$WORK/lat"; }
p50=$(pct 50)
p99=$(pct 99)
pmax=$(tail -1 "$WORK/lat" | awk '{printf "%.3f", $1 * 1000}')
rcodes=$(grep '^> ' "$WORK/rate.out" | awk '{print ($2 == "T" ? "timed-out" : $2)}' | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')
load_after=$(load)
log "load after run 2: $load_after"

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "DNS benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, $(nproc) cores;" \
  "load average (1/5/15 min) before: $load_before, after run 1: $load_mid, after run 2: $load_after"
echo
echo "| run | queries/s | lost | latency | agent CPU/query | dnsperf CPU/query |"
echo "|---|---|---|---|---|---|"
echo "| closed loop, $OUTSTANDING outstanding, ${DURATION} s | $max_qps | $max_lost | avg ${max_avg} ms | ${max_cpu} µs | ${max_client_cpu} µs |"
echo "| open loop at $RATE/s, ${DURATION} s | $rate_qps | $rate_lost | p50 ${p50} ms, p99 ${p99} ms, max ${pmax} ms ($count answered; ${rcodes%, }) | ${rate_cpu} µs | ${rate_client_cpu} µs |"
