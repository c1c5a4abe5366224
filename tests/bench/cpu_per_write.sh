#!/usr/bin/env bash
# Cost of one durable KV PUT on a 3-server loopback concord cluster, as numbers that do not depend much on
# how busy the machine is: server CPU (user + system, all three servers, from /proc/<pid>/stat), system
# calls and context switches (perf tracepoints, all threads of the three servers) per acknowledged write.
# Wall-clock ops/s is printed too, but on a shared machine only the per-write figures compare across runs.
#
#   tests/bench/cpu_per_write.sh                      # 64 clients, 10 s, after a 2 s warm-up run
#   CLIENTS=16 DURATION=5s tests/bench/cpu_per_write.sh
#   PROFILE=1 tests/bench/cpu_per_write.sh            # also `perf record -g` each server (perf.<i>.data)
#   NO_BUILD=1 CONCORD=… KVBENCH=… tests/bench/cpu_per_write.sh   # binaries built elsewhere
#
# Servers: 127.0.5.1-3, default ports, data dirs on disk (BENCH_DIR, default a new dir in /var/tmp), the
# same command line as run.sh. "writes" is the growth of the KV index (X-Consul-Index), i.e. committed
# entries, counted over exactly the measured window.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLIENTS="${CLIENTS:-64}"
DURATION="${DURATION:-10s}"
BENCH_DIR="${BENCH_DIR:-$(mktemp -d /var/tmp/concord-cpw.XXXXXX)}"
PROFILE="${PROFILE:-0}"
NET="${NET:-127.0.5}"

log() { echo "cpu_per_write.sh: $*" >&2; }
die() { log "$*"; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ "${NO_BUILD:-0}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release --quiet -p concord-tests --bin kvbench -p concord --bin concord)
fi
CONCORD="${CONCORD:-$CARGO_TARGET_DIR/release/concord}"
KVBENCH="${KVBENCH:-$CARGO_TARGET_DIR/release/kvbench}"
command -v perf >/dev/null || die "perf is required (apt-get install -y linux-perf)"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ "${KEEP:-0}" == 1 ]] || rm -rf "$BENCH_DIR"
}
trap cleanup EXIT

for i in 1 2 3; do
  dir="$BENCH_DIR/c$i" join=()
  mkdir -p "$dir/data"
  for j in 1 2 3; do [[ $j == "$i" ]] || join+=(-retry-join "$NET.$j"); done
  "$CONCORD" agent -server -bootstrap-expect 3 -data-dir "$dir/data" -node "c$i" \
    -bind "$NET.$i" -client "$NET.$i" -retry-interval 1s "${join[@]}" >"$dir/out.log" 2>&1 &
  PIDS+=($!)
done
SERVERS=("${PIDS[@]}")

leader_agreed() {
  local a b c
  a=$(curl -sf "http://$NET.1:8500/v1/status/leader") || return 1
  b=$(curl -sf "http://$NET.2:8500/v1/status/leader") || return 1
  c=$(curl -sf "http://$NET.3:8500/v1/status/leader") || return 1
  [[ "$a" != '""' && "$a" == "$b" && "$b" == "$c" ]]
}
deadline=$((SECONDS + 60))
until leader_agreed; do
  ((SECONDS < deadline)) || die "no leader after 60 s (logs in $BENCH_DIR)"
  sleep 0.2
done
leader=$(curl -sf "http://$NET.1:8500/v1/status/leader" | tr -d '"' | cut -d: -f1)

eps="$NET.1:8500,$NET.2:8500,$NET.3:8500"
bench() { "$KVBENCH" --target concord --endpoints "$eps" --op put --clients "$CLIENTS" "$@"; }
kv_index() { curl -sf -o /dev/null -D - "http://$NET.1:8500/v1/kv/?keys&consistent" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-consul-index" {print $2}'; }
# utime + stime of a process (all its threads), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

bench --duration 2s --warmup 0s >/dev/null  # warm-up: connections, allocator, fjall memtables

declare -a before after
for k in 0 1 2; do before[k]=$(cpu_ticks "${SERVERS[k]}"); done
idx0=$(kv_index)
pidlist=$(IFS=,; echo "${SERVERS[*]}")
EVENTS=raw_syscalls:sys_enter,context-switches
for sc in read write writev readv recvfrom sendto recvmsg sendmsg epoll_wait epoll_pwait epoll_ctl futex fdatasync fsync pwrite64 pread64 sched_yield madvise mmap munmap brk; do
  [[ -d /sys/kernel/tracing/events/syscalls/sys_enter_$sc ]] && EVENTS+=",syscalls:sys_enter_$sc"
done
perf stat -x, -e "$EVENTS" -p "$pidlist" -o "$BENCH_DIR/perf-stat.csv" &
PERF_STAT=$!
REC=()
if [[ "$PROFILE" == 1 ]]; then
  for k in 0 1 2; do
    perf record -q -e cpu-clock -g -p "${SERVERS[k]}" -o "perf.$((k + 1)).data" 2>/dev/null &
    REC+=($!)
  done
fi
table=$(bench --duration "$DURATION" --warmup 0s)
kill -INT "$PERF_STAT" "${REC[@]}" 2>/dev/null || true
wait "$PERF_STAT" "${REC[@]}" 2>/dev/null || true
idx1=$(kv_index)
for k in 0 1 2; do after[k]=$(cpu_ticks "${SERVERS[k]}"); done

tck=$(getconf CLK_TCK)
writes=$((idx1 - idx0))
((writes > 0)) || die "no writes were committed"
syscalls=$(awk -F, '$3 ~ /raw_syscalls/ {print $1}' "$BENCH_DIR/perf-stat.csv")
switches=$(awk -F, '$3 ~ /context-switches/ {print $1}' "$BENCH_DIR/perf-stat.csv")
total=0 per=""
for k in 0 1 2; do
  d=$((after[k] - before[k]))
  total=$((total + d))
  per+=" c$((k + 1))=$(awk -v d="$d" -v t="$tck" -v w="$writes" 'BEGIN {printf "%.1f", d / t * 1e6 / w}')"
done
echo "$table" | grep -E '^\| concord' || echo "$table"
echo "leader $leader; clients $CLIENTS; duration $DURATION; load average $(cut -d' ' -f1-3 /proc/loadavg)"
awk -F, -v w="$writes" '$3 ~ /sys_enter_/ && $1 > 0 {sub("syscalls:sys_enter_", "", $3); out = out sprintf(" %s %.2f", $3, $1 / w)} END {print "syscalls per write by kind:" out}' "$BENCH_DIR/perf-stat.csv"
awk -v w="$writes" -v c="$total" -v t="$tck" -v s="$syscalls" -v x="$switches" -v per="$per" 'BEGIN {
  printf "writes %d; server CPU %.1f us/write (%s ); syscalls %.1f/write; context switches %.1f/write\n",
    w, c / t * 1e6 / w, per, s / w, x / w }'
