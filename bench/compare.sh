#!/usr/bin/env bash
# bench/compare.sh - sockit's server against other servers, under the same `sockit bench` load.
#
# One machine, one go: every server is started pinned to one CPU (taskset -c $SRV_CPU),
# `sockit bench` runs pinned to the other (taskset -c $LG_CPU), each case is repeated REPS
# times and the repetitions are interleaved (all cases once, then all again, ...), and the
# summary prints medians and each server's ratio to sockit.
#
# Servers: sockit; the note's own Python TCP and UDP servers (tests/seed/*.py, the blocking
# design); a Python asyncio server (bench/peers/asyncio_server.py); a plain tokio server
# (examples/plain_tokio.rs); ncat and socat set up to give the same replies
# (bench/peers/*.sh).
#
# The first rows are the head-of-line case the note is about: one idle client holds a
# connection open and sends nothing, while 10 others run the note's exchange (and, for
# sockit, the same 10 clients without the idle one: the rate it should keep).
#
# In the hello rows every server closes the connection after its reply, as the note's
# server does (sockit with --close): whoever closes first keeps the TIME_WAIT state, and
# putting it on the load generator's side would cost its core more than the server's work.
#
# env: DUR     measured seconds per run (default 3; fractions allowed)
#      WARMUP  warm-up seconds per run, not counted (default 0.5)
#      REPS    repetitions of every case (default 3)
#      ONLY    regex on the case name, e.g. ONLY='^(hol|udp)/'
#      SOCKIT  the sockit binary (default: `cargo build --release` in this repository)
#      TOKIO_PLAIN  the plain tokio server (default: built from examples/plain_tokio.rs)
#      WORKDIR where logs, JSON reports and the summary go (default ${TMPDIR:-/tmp}/sockit-compare)
#      LG_CPU / SRV_CPU  the CPUs for the load generator and the server (default 0 / 1)
#      PYTHON  (default python3)
# Smoke test: DUR=1 WARMUP=0.2 REPS=1 bench/compare.sh
# Traffic goes to 127.0.0.1 only, on free ports chosen at run time (never 8000); every run
# is bounded by `timeout`, and every server is stopped by its process group.
set -u
set -m # every background job gets its own process group (PGID == PID): stop forks too

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
ROOT=$(dirname "$HERE")
PEERS=$HERE/peers
SEED=$ROOT/tests/seed
DUR=${DUR:-3}
WARMUP=${WARMUP:-0.5}
REPS=${REPS:-3}
ONLY=${ONLY:-.}
PY=${PYTHON:-python3}
LG_CPU=${LG_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/sockit-compare}
OUT=$WORKDIR/out
HOST=127.0.0.1

for tool in taskset timeout "$PY" ncat socat; do
  command -v "$tool" >/dev/null || echo "WARNING: $tool not found; the cases that need it will fail" >&2
done
if [ "$(nproc)" -lt 2 ]; then
  echo "WARNING: fewer than 2 CPUs: server and load generator share one" >&2
  LG_CPU=0 SRV_CPU=0
fi
if [ -z "${SOCKIT:-}" ]; then
  echo "building sockit (release)..." >&2
  (cd "$ROOT" && cargo build --release --locked -q) || exit 1
  SOCKIT=${CARGO_TARGET_DIR:-$ROOT/target}/release/sockit
fi
[ -x "$SOCKIT" ] || { echo "no sockit binary at $SOCKIT" >&2; exit 1; }
# The plain tokio server (examples/plain_tokio.rs): "typical Rust", for comparison.
if [ -z "${TOKIO_PLAIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked -q --example plain_tokio) || exit 1
  TOKIO_PLAIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/plain_tokio
fi

fresh_out json

SOCAT_TCP="TCP4-LISTEN:\$PORT,bind=$HOST,fork,reuseaddr,backlog=128"
# name | load | connections | protocol | server command ($PORT is filled in per run)
CASES=(
  "hol/sockit|hol|10|tcp|$SOCKIT serve tcp://$HOST:\$PORT -q --close"
  "hol/sockit-no-idle|hol0|10|tcp|$SOCKIT serve tcp://$HOST:\$PORT -q --close"
  "hol/seed-py|hol|10|tcp|$PY $SEED/tcp_server.py \$PORT"
  "hol/asyncio-py|hol|10|tcp|$PY $PEERS/asyncio_server.py hello \$PORT"
  "hello/sockit|hello|50|tcp|$SOCKIT serve tcp://$HOST:\$PORT -q --close"
  "hello/seed-py|hello|50|tcp|$PY $SEED/tcp_server.py \$PORT"
  "hello/asyncio-py|hello|50|tcp|$PY $PEERS/asyncio_server.py hello \$PORT"
  "hello/tokio-plain|hello|50|tcp|$TOKIO_PLAIN hello $HOST:\$PORT"
  "hello/ncat|hello|50|tcp|ncat -lk $HOST \$PORT -e $PEERS/hello_tcp_reply.sh"
  "hello/socat|hello|50|tcp|socat $SOCAT_TCP EXEC:$PEERS/hello_tcp_reply.sh"
  "echo/sockit|echo|50|tcp|$SOCKIT serve tcp://$HOST:\$PORT -q --echo"
  "echo/asyncio-py|echo|50|tcp|$PY $PEERS/asyncio_server.py echo \$PORT"
  "echo/tokio-plain|echo|50|tcp|$TOKIO_PLAIN echo $HOST:\$PORT"
  "echo/ncat|echo|50|tcp|ncat -lk $HOST \$PORT -e /bin/cat"
  "echo/socat|echo|50|tcp|socat $SOCAT_TCP PIPE"
  "udp/sockit|udp|32|udp|$SOCKIT serve udp://$HOST:\$PORT -q"
  "udp/seed-py|udp|32|udp|$PY $SEED/udp_server.py \$PORT"
  "udp/tokio-plain|udp|32|udp|$TOKIO_PLAIN udp $HOST:\$PORT"
  "udp/asyncio-py|udp|32|udp|$PY $PEERS/asyncio_server.py udp \$PORT"
  "udp/ncat|udp|32|udp|ncat -u -lk $HOST \$PORT -e $PEERS/hello_udp_reply.sh"
  "udp/socat|udp|32|udp|socat -T 1 UDP4-RECVFROM:\$PORT,bind=$HOST,fork EXEC:$PEERS/hello_udp_reply.sh"
  "stream/sockit|stream|1|tcp|$SOCKIT serve tcp://$HOST:\$PORT -q --discard"
  "stream/asyncio-py|stream|1|tcp|$PY $PEERS/asyncio_server.py discard \$PORT"
  "stream/tokio-plain|stream|1|tcp|$TOKIO_PLAIN discard $HOST:\$PORT"
  "stream/ncat|stream|1|tcp|ncat -lk --recv-only $HOST \$PORT"
  "stream/socat|stream|1|tcp|socat -u $SOCAT_TCP OPEN:/dev/null,wronly"
)

# `sockit bench` arguments for each load.
bench_args() {
  case $1 in
    hol | hol0) echo "-p hello --timeout 1s" ;;
    hello) echo "-p hello" ;;
    echo) echo "-p echo -s 64" ;;
    udp) echo "-p udp --timeout 500ms" ;;
    stream) echo "-p stream -s 131072" ;;
  esac
}

# Seconds a run may take before `timeout` stops it: warm-up + duration + 20.
run_limit() {
  awk -v d="$DUR" -v w="$WARMUP" 'BEGIN {printf "%d", d + w + 20.999}'
}

run_case() { # $1 = rep, $2 = case line
  local name load conns proto cmd
  IFS='|' read -r name load conns proto cmd <<<"$2"
  local tag=${name//\//_}
  local log=$OUT/logs/$tag.log json=$OUT/json/$tag-rep$1.json
  local port
  port=$(free_port "$proto")
  cmd=${cmd//\$PORT/$port}
  echo "== rep $1 $name: $cmd" >>"$log"
  taskset -c "$SRV_CPU" bash -c "exec $cmd" >/dev/null 2>>"$log" &
  local spid=$!
  if ! wait_bound "$proto" "$port"; then
    echo "FAIL $name: the server did not start (see $log)" >&2
    stop_group "$spid"
    return
  fi
  local target="$proto://$HOST:$port"
  if [ "$load" = hol ]; then
    # The idle client: connects, sends nothing, keeps the connection open.
    exec 3<>"/dev/tcp/$HOST/$port"
    sleep 0.2 # let a blocking server accept it and block in recv() first
  fi
  local c0a c1a c0b c1b
  c0a=$(cpu_ticks "$LG_CPU")
  c1a=$(cpu_ticks "$SRV_CPU")
  # shellcheck disable=SC2046 # bench_args is a list of words
  timeout -k 5 "$(run_limit)" taskset -c "$LG_CPU" "$SOCKIT" bench "$target" \
    -c "$conns" -d "$DUR" --warmup "$WARMUP" $(bench_args "$load") --json "$json" \
    >>"$log" 2>&1
  c0b=$(cpu_ticks "$LG_CPU")
  c1b=$(cpu_ticks "$SRV_CPU")
  [ "$load" = hol ] && exec 3>&-
  stop_group "$spid"
  local cpu0 cpu1
  cpu0=$(busy_pct "$c0a" "$c0b")
  cpu1=$(busy_pct "$c1a" "$c1b")
  if [ ! -s "$json" ]; then
    echo "FAIL $name: no report (see $log)" >&2
    return
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$name" "$load" "$conns" "$json" "$cpu0" "$cpu1" >>"$RAW"
  "$PY" - "$json" "$1" "$name" "$cpu0" "$cpu1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
rate = f"{r['gbit_per_s']:.2f} Gbit/s" if r["pattern"] == "stream" else f"{r['exchanges_per_s']:,.0f}/s"
print(f"rep {sys.argv[2]} {sys.argv[3]:<18} {rate:>14}  p99 {r['latency_us']['p99']:>8} us"
      f"  errors {r['errors']['total']:>6}  cpu0 {sys.argv[4]}% cpu1 {sys.argv[5]}%")
EOF
  sleep 0.2
}

{
  echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(uname -sr)"
  echo "sockit: $("$SOCKIT" --version) ($SOCKIT)"
  echo "peers: $("$PY" --version 2>&1), $(ncat --version 2>&1 | head -1), $(socat -V 2>/dev/null | awk '/socat version/ {print "socat " $3; exit}')"
  echo "load: sockit bench on CPU $LG_CPU, servers on CPU $SRV_CPU, ${WARMUP}s warm-up + ${DUR}s measured, $REPS reps interleaved"
} | tee "$OUT/machine.txt"

for rep in $(seq 1 "$REPS"); do
  for c in "${CASES[@]}"; do
    [[ ${c%%|*} =~ $ONLY ]] || continue
    run_case "$rep" "$c"
  done
done
"$PY" "$HERE/summarize.py" "$RAW" "$OUT/machine.txt" | tee "$OUT/summary.md"
echo "raw reports: $OUT/json, logs: $OUT/logs" >&2
