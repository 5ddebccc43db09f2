#!/usr/bin/env bash
# bench/loadgen.sh - sockit bench against the C load generator, both driving the C
# reference server: how much load one core of each load generator produces (issue 22).
#
# The C server runs pinned to SRV_CPU; the load generator (C loadgen, then sockit bench
# --threads 1, the order flipping every round) runs pinned to LG_CPU. Per run: exchanges
# per second, and CPU µs per exchange on the load generator's core, two ways:
#   proc  the load generator process's own CPU (user + system) per exchange: C from its
#         lg_cpu_pct, sockit from its report (loadgen_cpu_percent): cpu share / rate
#   core  LG_CPU's busy share (softirq included: loopback delivery work lands there) per
#         exchange
# The summary gives the medians per case and the ratios sockit / C.
#
# Cases (arguments; default: all):
#   echo    50 persistent connections, 64-byte messages     C server: refserver echo
#   udp     32 outstanding datagrams, one socket each        C server: refserver udp
#   hello   50 concurrent connect/send/reply/close           C server: refserver hello
#
# env: PEERS   the directory with loadgen.c and refserver.c (default ../shared/peers
#              next to this repository)
#      ROUNDS  rounds per case (default 7)
#      DUR     measured seconds per run (default 3; C loadgen allows at most 10)
#      SOCKIT  the sockit binary (default: `cargo build --release` in this repository)
#      WORKDIR where the binaries, logs and raw results go (default ${TMPDIR:-/tmp}/sockit-loadgen)
#      LG_CPU / SRV_CPU  the CPUs for the load generator and the server (default 0 / 1)
# Smoke test: ROUNDS=1 DUR=1 bench/loadgen.sh echo
# Instruction and syscall counts per exchange: bench/loadgen_cost.sh.
# Traffic goes to 127.0.0.1 only, on free ports chosen at run time (never 8000); every run
# is bounded by `timeout`, and every server is stopped by its process group.
set -u
set -m # every background job gets its own process group (PGID == PID)

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
ROOT=$(dirname "$HERE")
PEERS=${PEERS:-$(dirname "$ROOT")/shared/peers}
ROUNDS=${ROUNDS:-7}
DUR=${DUR:-3}
LG_CPU=${LG_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/sockit-loadgen}
OUT=$WORKDIR/out
HOST=127.0.0.1

require_stick
use_release_sockit

fresh_out
build_stick

# case | C loadgen mode | concurrency | size | proto | C server mode | sockit bench flags
CASES=(
  "echo|echo-tcp|50|64|tcp|echo|-p echo -c 50 --size 64"
  "udp|udp|32|16|udp|udp|-p udp -c 32"
  "hello|hello-tcp|50|16|tcp|hello|-p hello -c 50"
)
WANTED=("$@")

# One run: appends "round case lg rate proc_us core_us" to $RAW.
run_one() {
  local round=$1 name=$2 lg=$3 mode=$4 conc=$5 size=$6 proto=$7 srv=$8 flags=$9
  local port log=$OUT/logs/$name-$lg.log
  port=$(free_port "$proto")
  echo "== round $round" >>"$log"
  taskset -c "$SRV_CPU" "$OUT/refserver" "$srv" "$port" "$HOST" >>"$log" 2>&1 &
  local pid=$!
  if ! wait_bound "$proto" "$port"; then
    echo "FAIL $name/$lg: the server did not start (see $log)" >&2
    stop_group "$pid"
    return
  fi
  local t0 t1 line rate cpu
  t0=$(cpu_ticks "$LG_CPU")
  if [ "$lg" = c ]; then
    line=$(timeout $((DUR + 20)) taskset -c "$LG_CPU" "$OUT/loadgen" "$mode" "$HOST" "$port" \
      "$conc" "$DUR" "$size" 2>>"$log")
    t1=$(cpu_ticks "$LG_CPU")
    rate=$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' <<<"$line")
    cpu=$(sed -n 's/.* lg_cpu_pct=\([0-9.]*\).*/\1/p' <<<"$line")
  else
    # shellcheck disable=SC2086 # $flags is a list of words
    line=$(timeout $((DUR + 20)) taskset -c "$LG_CPU" "$SOCKIT" bench "$proto://$HOST:$port" \
      $flags -d "${DUR}s" --warmup 500ms --threads 1 --json - 2>>"$log" |
      python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["exchanges_per_s"], r["loadgen_cpu_percent"])')
    t1=$(cpu_ticks "$LG_CPU")
    read -r rate cpu <<<"$line"
  fi
  stop_group "$pid"
  echo "$line" >>"$log"
  if [ -z "${rate:-}" ] || [ -z "${cpu:-}" ]; then
    echo "FAIL $name/$lg round $round: no result (see $log)" >&2
    return
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "$lg" "$rate" "$cpu" \
    "$(busy_share "$t0" "$t1")" >>"$RAW"
}

echo "load generators on CPU $LG_CPU, C server on CPU $SRV_CPU, ${DUR}s per run, $ROUNDS rounds per case"
for line in "${CASES[@]}"; do
  IFS='|' read -r name mode conc size proto srv flags <<<"$line"
  wanted "$name" || continue
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="c sockit"; else order="sockit c"; fi
    for lg in $order; do
      run_one "$round" "$name" "$lg" "$mode" "$conc" "$size" "$proto" "$srv" "$flags"
    done
    echo "  $name round $round done"
  done
done

python3 - "$RAW" <<'EOF' | tee "$OUT/summary.md"
import collections, statistics, sys
runs = collections.defaultdict(list)
for row in open(sys.argv[1]):
    _, case, lg, rate, cpu_pct, core = row.split("\t")
    rate, cpu_pct, core = float(rate), float(cpu_pct), float(core)
    if rate > 0:
        # CPU share of one core per exchange per second = seconds of CPU per exchange.
        runs[case, lg].append((rate, 1e6 * cpu_pct / 100 / rate, 1e6 * core / rate))
print("| case | load generator | exchanges/s | proc CPU µs/exchange | core CPU µs/exchange | runs |")
print("|---|---|---:|---:|---:|---:|")
medians = {}
for (case, lg), rows in sorted(runs.items()):
    m = [statistics.median(col) for col in zip(*rows)]
    medians[case, lg] = m
    print(f"| {case} | {lg} | {m[0]:.0f} | {m[1]:.2f} | {m[2]:.2f} | {len(rows)} |")
print()
print("| case | sockit/C exchanges/s | sockit/C proc CPU per exchange | sockit/C core CPU per exchange |")
print("|---|---:|---:|---:|")
for case in sorted({c for c, _ in runs}):
    s, c = medians.get((case, "sockit")), medians.get((case, "c"))
    if s and c:
        print(f"| {case} | {s[0] / c[0]:.2f} | {s[1] / c[1]:.2f} | {s[2] / c[2]:.2f} |")
EOF
