#!/usr/bin/env bash
# bench/relay.sh - relay throughput: iperf3 direct against iperf3 through a relay
# (sockit relay with its defaults, with --buffer 256 KiB, with --copy splice; the C
# reference relay bench/ref-relay.c copying and splicing; socat; ncat), one machine, one go.
#
# The C reference (blocking read/write through a 4 MiB buffer, or blocking splice through
# a 256 KiB pipe, a thread per direction, nothing else) stands for what a relay can get on
# this machine at all, as ../shared/peers' refserver.c does for servers: it is compiled
# into $WORKDIR with cc when the script starts.
#
# iperf3's client and server run pinned to one CPU ($LG_CPU, default 0), the relay pinned
# to the other ($RELAY_CPU, default 1), as bench/compare.sh pins load and server. Direct,
# iperf3 has that one CPU for both ends; through a relay the kernel work of the second TCP
# connection and the relay's own work land on the relay's CPU. Every case is repeated REPS
# times, interleaved (all cases once, then all again, ...), and the table prints medians,
# min/max, both CPUs' busy share and each case's ratio to iperf3 direct.
#
# A second table does the same with sockit's own load (`sockit bench -p stream` into
# `sockit serve --discard`), direct and through `sockit relay`.
#
# env: DUR     measured seconds per run (default 3)
#      OMIT    seconds of each run not counted, TCP's ramp-up (default 1)
#      REPS    repetitions of every case (default 5)
#      LEN     bytes per write (default 131072, iperf3's default for TCP)
#      ONLY    regex on the case name, e.g. ONLY='^iperf3/(direct|sockit)'
#      SOCKIT  the sockit binary (default: `cargo build --release` in this repository)
#      LG_CPU / RELAY_CPU  CPUs for the load (client and server) and for the relay
#      WORKDIR where logs, JSON reports and the summary go (default ${TMPDIR:-/tmp}/sockit-relay)
# Smoke test: DUR=1 OMIT=0 REPS=1 bench/relay.sh
# Traffic goes to 127.0.0.1 only, on free ports chosen at run time (never 8000); every run
# is bounded by `timeout`, and every process is stopped by its process group.
set -u
set -m # every background job gets its own process group (PGID == PID): stop forks too

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
ROOT=$(dirname "$HERE")
DUR=${DUR:-3}
OMIT=${OMIT:-1}
REPS=${REPS:-5}
LEN=${LEN:-131072}
ONLY=${ONLY:-.}
LG_CPU=${LG_CPU:-0}
RELAY_CPU=${RELAY_CPU:-1}
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/sockit-relay}
OUT=$WORKDIR/out
HOST=127.0.0.1

for tool in taskset timeout python3 iperf3 ncat socat cc; do
  command -v "$tool" >/dev/null || echo "WARNING: $tool not found; the cases that need it will fail" >&2
done
if [ "$(nproc)" -lt 2 ]; then
  echo "WARNING: fewer than 2 CPUs: relay and load share one" >&2
  LG_CPU=0 RELAY_CPU=0
fi
if [ -z "${SOCKIT:-}" ]; then
  echo "building sockit (release)..." >&2
  (cd "$ROOT" && cargo build --release --locked -q) || exit 1
  SOCKIT=${CARGO_TARGET_DIR:-$ROOT/target}/release/sockit
fi
[ -x "$SOCKIT" ] || { echo "no sockit binary at $SOCKIT" >&2; exit 1; }

fresh_out json
REF_RELAY=$OUT/ref-relay
cc -O2 -pthread -o "$REF_RELAY" "$HERE/ref-relay.c" \
  || echo "WARNING: bench/ref-relay.c did not compile; the c-* cases will fail" >&2

# name | load | relay command ("" for direct; $A = the relay's port, $P = the server's)
CASES=(
  "iperf3/direct|iperf3|"
  "iperf3/sockit|iperf3|$SOCKIT relay -q tcp://$HOST:\$A tcp://$HOST:\$P"
  "iperf3/sockit-256k|iperf3|$SOCKIT relay -q --buffer 262144 tcp://$HOST:\$A tcp://$HOST:\$P"
  "iperf3/sockit-splice|iperf3|$SOCKIT relay -q --copy splice --buffer 262144 tcp://$HOST:\$A tcp://$HOST:\$P"
  "iperf3/c-copy|iperf3|$REF_RELAY \$A \$P 4194304 copy"
  "iperf3/c-splice|iperf3|$REF_RELAY \$A \$P 262144 splice"
  "iperf3/socat|iperf3|socat TCP4-LISTEN:\$A,bind=$HOST,fork,reuseaddr TCP:$HOST:\$P"
  "iperf3/ncat|iperf3|ncat -lk $HOST \$A --sh-exec 'exec ncat $HOST \$P'"
  "sockit-bench/direct|bench|"
  "sockit-bench/sockit|bench|$SOCKIT relay -q tcp://$HOST:\$A tcp://$HOST:\$P"
)

# Seconds a run may take before `timeout` stops it.
run_limit() {
  awk -v d="$DUR" -v o="$OMIT" 'BEGIN {printf "%d", d + o + 20.999}'
}

run_case() { # $1 = rep, $2 = case line
  local name load cmd
  IFS='|' read -r name load cmd <<<"$2"
  local tag=${name//\//_}
  local log=$OUT/logs/$tag.log json=$OUT/json/$tag-rep$1.json
  local server_port relay_port target_port
  server_port=$(free_port)
  echo "== rep $1 $name" >>"$log"
  if [ "$load" = iperf3 ]; then
    taskset -c "$LG_CPU" iperf3 -s -B "$HOST" -p "$server_port" >>"$log" 2>&1 &
  else
    taskset -c "$LG_CPU" "$SOCKIT" serve "tcp://$HOST:$server_port" --discard -q >>"$log" 2>&1 &
  fi
  local server_pid=$! relay_pid=
  if ! wait_bound tcp "$server_port"; then
    echo "FAIL $name: the server did not start (see $log)" >&2
    stop_group "$server_pid"
    return
  fi
  target_port=$server_port
  if [ -n "$cmd" ]; then
    relay_port=$(free_port)
    cmd=${cmd//\$A/$relay_port}
    cmd=${cmd//\$P/$server_port}
    echo "relay: $cmd" >>"$log"
    taskset -c "$RELAY_CPU" bash -c "exec $cmd" >>"$log" 2>&1 &
    relay_pid=$!
    if ! wait_bound tcp "$relay_port"; then
      echo "FAIL $name: the relay did not start (see $log)" >&2
      stop_group "$relay_pid"
      stop_group "$server_pid"
      return
    fi
    target_port=$relay_port
  fi
  local c0a c1a c0b c1b
  c0a=$(cpu_ticks "$LG_CPU")
  c1a=$(cpu_ticks "$RELAY_CPU")
  if [ "$load" = iperf3 ]; then
    timeout -k 5 "$(run_limit)" taskset -c "$LG_CPU" iperf3 -c "$HOST" -p "$target_port" \
      -t "$DUR" -O "$OMIT" -l "$LEN" -J >"$json" 2>>"$log"
  else
    timeout -k 5 "$(run_limit)" taskset -c "$LG_CPU" "$SOCKIT" bench "tcp://$HOST:$target_port" \
      -p stream -s "$LEN" -c 1 --threads 1 -d "$DUR" --warmup "$OMIT" --json "$json" >>"$log" 2>&1
  fi
  c0b=$(cpu_ticks "$LG_CPU")
  c1b=$(cpu_ticks "$RELAY_CPU")
  [ -n "$relay_pid" ] && stop_group "$relay_pid"
  stop_group "$server_pid"
  local cpu0 cpu1 gbit
  cpu0=$(busy_pct "$c0a" "$c0b")
  cpu1=$(busy_pct "$c1a" "$c1b")
  gbit=$(python3 - "$json" "$load" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    if sys.argv[2] == "iperf3":
        print(f"{r['end']['sum_received']['bits_per_second'] / 1e9:.3f}")
    else:
        print(f"{r['gbit_per_s']:.3f}")
except Exception:
    print("")
EOF
)
  if [ -z "$gbit" ]; then
    echo "FAIL $name: no result (see $log and $json)" >&2
    return
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$name" "$gbit" "$cpu0" "$cpu1" >>"$RAW"
  printf 'rep %s %-28s %7s Gbit/s  cpu%s %s%%  cpu%s %s%%\n' \
    "$1" "$name" "$gbit" "$LG_CPU" "$cpu0" "$RELAY_CPU" "$cpu1"
  sleep 0.2
}

{
  echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(uname -sr)"
  echo "sockit: $("$SOCKIT" --version) ($SOCKIT)"
  echo "peers: $(iperf3 --version 2>&1 | head -1 | awk '{print $1, $2}'), $(ncat --version 2>&1 | head -1), $(socat -V 2>/dev/null | awk '/socat version/ {print "socat " $3; exit}')"
  echo "load: client and server on CPU $LG_CPU, relay on CPU $RELAY_CPU; ${DUR}s measured after ${OMIT}s, writes of $LEN bytes, $REPS reps interleaved"
} | tee "$OUT/machine.txt"

for rep in $(seq 1 "$REPS"); do
  for c in "${CASES[@]}"; do
    [[ ${c%%|*} =~ $ONLY ]] || continue
    run_case "$rep" "$c"
  done
done

python3 - "$RAW" "$LG_CPU" "$RELAY_CPU" <<'EOF' | tee "$OUT/summary.md"
import statistics, sys
from collections import defaultdict

rows = defaultdict(list)
order = []
for line in open(sys.argv[1]):
    rep, name, gbit, cpu0, cpu1 = line.rstrip("\n").split("\t")
    if name not in rows:
        order.append(name)
    rows[name].append((float(gbit), int(cpu0), int(cpu1)))
lg, relay = sys.argv[2], sys.argv[3]
for load in ("iperf3", "sockit-bench"):
    names = [n for n in order if n.startswith(load + "/")]
    if not names:
        continue
    direct = rows.get(f"{load}/direct")
    base = statistics.median(g for g, _, _ in direct) if direct else None
    print()
    print(f"| {load}: case | Gbit/s (median) | min – max | ratio to direct | CPU {lg} busy | CPU {relay} busy | runs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        runs = rows[name]
        med = statistics.median(g for g, _, _ in runs)
        ratio = f"{med / base:.2f}" if base else "-"
        c0 = statistics.median(c for _, c, _ in runs)
        c1 = statistics.median(c for _, _, c in runs)
        print(f"| {name.split('/', 1)[1]} | {med:.2f} | {min(g for g, _, _ in runs):.2f} – "
              f"{max(g for g, _, _ in runs):.2f} | {ratio} | {c0:.0f} % | {c1:.0f} % | {len(runs)} |")
EOF
echo "raw results: $RAW, reports: $OUT/json, logs: $OUT/logs" >&2
