#!/usr/bin/env bash
# bench/loadgen_cost.sh - what one exchange costs the load generator, sockit bench against
# the C load generator, both driving the C reference server (issue 22): user-space
# instructions (callgrind) and system calls (strace -c -f) per exchange.
#
# Instructions: each load generator runs under callgrind twice, for SHORT and LONG
# measured seconds; (Ir(LONG) - Ir(SHORT)) / (exchanges(LONG) - exchanges(SHORT)) is the
# cost of one more exchange, without start-up and report. That difference is noisy (the
# warm-up's exchanges vary from run to run) and leaves out work that grows faster than
# the run (the C load generator sorts every latency at the end), so the whole LONG run's
# Ir over all its exchanges (warm-up included, scaled as below) is shown beside it. Build sockit with symbols for
# reading the profiles: CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release.
# System calls: one run under strace -c -f; every call the process made (warm-up
# included) over the exchanges of the whole run (the measured ones scaled by
# (warm-up + DUR) / DUR: both load generators warm up for 0.5 s).
# Instruction counts do not depend on the machine's load; the system calls barely do.
#
# Cases (arguments; default: all): echo (50 connections, 64 B), udp (32 outstanding),
# hello (50 concurrent connect/send/reply/close).
# env: PEERS, SOCKIT, WORKDIR (default ${TMPDIR:-/tmp}/sockit-loadgen-cost), LG_CPU, SRV_CPU
#      as in bench/loadgen.sh; SHORT / LONG (default 1 / 2 s), DUR (strace, default 2 s);
#      SOCKIT_FLAGS: more flags for sockit bench (`--engine tasks` measures the task engine).
# The callgrind profiles stay in $WORKDIR/out (callgrind_annotate FILE).
set -u
set -m

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
ROOT=$(dirname "$HERE")
PEERS=${PEERS:-$(dirname "$ROOT")/shared/peers}
SHORT=${SHORT:-1}
LONG=${LONG:-2}
DUR=${DUR:-2}
LG_CPU=${LG_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/sockit-loadgen-cost}
OUT=$WORKDIR/out
HOST=127.0.0.1
WARMUP=0.5

for tool in valgrind strace; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
if [ -z "${SOCKIT:-}" ]; then
  (cd "$ROOT" && CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release -q) || exit 1
  SOCKIT=${CARGO_TARGET_DIR:-$ROOT/target}/release/sockit
fi
[ -x "$SOCKIT" ] || { echo "no sockit binary at $SOCKIT" >&2; exit 1; }
rm -rf "$OUT"
mkdir -p "$OUT"
cc -O2 -g -o "$OUT/loadgen" "$PEERS/loadgen.c" || exit 1
cc -O2 -o "$OUT/refserver" "$PEERS/refserver.c" || exit 1

CASES=(
  "echo|echo-tcp|50|64|tcp|echo|-p echo -c 50 --size 64"
  "udp|udp|32|16|udp|udp|-p udp -c 32"
  "hello|hello-tcp|50|16|tcp|hello|-p hello -c 50"
)
WANTED=("$@")

# Runs load generator $1 (c|sockit) for $2 seconds against port $3, under the command
# prefix in $WRAP; prints the measured exchanges.
drive() {
  local lg=$1 secs=$2 port=$3
  if [ "$lg" = c ]; then
    # shellcheck disable=SC2086
    timeout 300 taskset -c "$LG_CPU" $WRAP "$OUT/loadgen" "$mode" "$HOST" "$port" "$conc" \
      "$secs" "$size" 2>/dev/null | sed -n 's/.* done=\([0-9]*\).*/\1/p'
  else
    # shellcheck disable=SC2086
    timeout 300 taskset -c "$LG_CPU" $WRAP "$SOCKIT" bench "$proto://$HOST:$port" $flags \
      -d "${secs}s" --warmup "${WARMUP}s" --threads 1 --timeout 10s ${SOCKIT_FLAGS:-} --json - 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["exchanges"])'
  fi
}

# Ir in a callgrind output file.
instructions() {
  sed -n 's/^summary: \([0-9]*\).*/\1/p' "$1"
}

echo "| case | load generator | instructions per added exchange | instructions/exchange, whole run | syscalls/exchange | top syscalls per exchange |"
echo "|---|---|---:|---:|---:|---|"
for line in "${CASES[@]}"; do
  IFS='|' read -r name mode conc size proto srv flags <<<"$line"
  wanted "$name" || continue
  port=$(free_port "$proto")
  taskset -c "$SRV_CPU" "$OUT/refserver" "$srv" "$port" "$HOST" >"$OUT/$name-server.log" 2>&1 &
  pid=$!
  wait_bound "$proto" "$port" || { echo "FAIL $name: the server did not start" >&2; stop_group "$pid"; continue; }
  for lg in c sockit; do
    declare -A done_at=()
    for secs in "$SHORT" "$LONG"; do
      WRAP="valgrind --tool=callgrind --callgrind-out-file=$OUT/$name-$lg-$secs.callgrind"
      done_at[$secs]=$(drive "$lg" "$secs" "$port")
    done
    ir=$(python3 -c 'import sys; a, b, x, y = map(float, sys.argv[1:]); print(f"{(b - a) / max(y - x, 1):.0f}")' \
      "$(instructions "$OUT/$name-$lg-$SHORT.callgrind")" "$(instructions "$OUT/$name-$lg-$LONG.callgrind")" \
      "${done_at[$SHORT]:-0}" "${done_at[$LONG]:-0}")
    whole=$(python3 -c 'import sys; ir, done, secs, warm = map(float, sys.argv[1:]); print(f"{ir / max(done * (secs + warm) / secs, 1):.0f}")' \
      "$(instructions "$OUT/$name-$lg-$LONG.callgrind")" "${done_at[$LONG]:-0}" "$LONG" "$WARMUP")
    WRAP="strace -c -f -o $OUT/$name-$lg.strace"
    measured=$(drive "$lg" "$DUR" "$port")
    python3 - "$OUT/$name-$lg.strace" "${measured:-0}" "$DUR" "$WARMUP" "$name" "$lg" "$ir" "$whole" <<'EOF'
import sys
path, measured, dur, warmup, name, lg, ir, whole = sys.argv[1:]
exchanges = float(measured) * (float(dur) + float(warmup)) / float(dur)
calls, total = {}, 0
for row in open(path):
    cols = row.split()
    if len(cols) >= 5 and cols[0][0].isdigit() and cols[-1] != "total":
        calls[cols[-1]] = int(cols[3])
        total += int(cols[3])
per = lambda n: n / max(exchanges, 1)
top = ", ".join(f"{k} {per(v):.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])[:6])
print(f"| {name} | {lg} | {ir} | {whole} | {per(total):.2f} | {top} |")
EOF
  done
  stop_group "$pid"
done
