#!/usr/bin/env bash
# bench/pairs.sh - sockit against the C reference server, in back-to-back pairs.
#
# The measuring stick (../shared/peers/run-baselines.sh) runs every server's case one after
# the other; on a machine that drifts by 10-25 % within minutes, a 1-3 % difference then
# hides in the noise. Here each pair runs the C server and sockit back to back under the
# stick's own C load generator, the order flips every pair, and what is summarised is the
# ratio within each pair: its median, its range, and how many pairs came out at or above
# 1.0. This is how the README's "alternating pairs" figures are measured.
#
# Cases (arguments; default: all):
#   echo    echo-tcp, 50 connections, 64-byte messages   C: refserver echo
#   hello   hello-tcp, 50 concurrent (the note's exchange) C: refserver hello; sockit --close
#   hello1  hello-tcp, one at a time                      (same servers)
#   hello1bp  hello1 with sockit --busy-poll 100us (polls before sleeping; opt-in)
#   udp     udp, 32 outstanding                           C: refserver udp (recvfrom)
#
# env: PEERS   the directory with loadgen.c and refserver.c (default ../shared/peers
#              next to this repository)
#      PAIRS   pairs per case (default 12)
#      DUR     measured seconds per run (default 3)
#      SOCKIT  the sockit binary (default: `cargo build --release` in this repository)
#      WORKDIR where the binaries, logs and raw results go (default ${TMPDIR:-/tmp}/sockit-pairs)
#      LG_CPU / SRV_CPU  the CPUs for the load generator and the server (default 0 / 1)
# Smoke test: PAIRS=1 DUR=1 bench/pairs.sh echo
# Traffic goes to 127.0.0.1 only, on free ports chosen at run time (never 8000); every run
# is bounded by `timeout`, and every server is stopped by its process group.
set -u
set -m # every background job gets its own process group (PGID == PID)

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
ROOT=$(dirname "$HERE")
PEERS=${PEERS:-$(dirname "$ROOT")/shared/peers}
PAIRS=${PAIRS:-12}
DUR=${DUR:-3}
LG_CPU=${LG_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/sockit-pairs}
OUT=$WORKDIR/out
HOST=127.0.0.1

require_stick
use_release_sockit

fresh_out
build_stick

# case | loadgen mode | concurrency | size | proto | C server | sockit server ($P = port)
CASES=(
  "echo|echo-tcp|50|64|tcp|$OUT/refserver echo \$P $HOST|$SOCKIT serve tcp://$HOST:\$P -q --echo"
  "hello|hello-tcp|50|16|tcp|$OUT/refserver hello \$P $HOST|$SOCKIT serve tcp://$HOST:\$P -q --close"
  "hello1|hello-tcp|1|16|tcp|$OUT/refserver hello \$P $HOST|$SOCKIT serve tcp://$HOST:\$P -q --close"
  "hello1bp|hello-tcp|1|16|tcp|$OUT/refserver hello \$P $HOST|$SOCKIT serve tcp://$HOST:\$P -q --close --busy-poll 100us"
  "udp|udp|32|16|udp|$OUT/refserver udp \$P $HOST|$SOCKIT serve udp://$HOST:\$P -q"
)
WANTED=("$@")


# One run: $1 = pair, $2 = case, $3 = server (c|sockit), $4 = command; appends to $RAW.
run_one() {
  local pair=$1 name=$2 server=$3 cmd=$4 mode=$5 conc=$6 size=$7 proto=$8
  local port log=$OUT/logs/$name-$server.log
  port=$(free_port "$proto")
  echo "== pair $pair" >>"$log"
  taskset -c "$SRV_CPU" bash -c "exec ${cmd//\$P/$port}" >>"$log" 2>&1 &
  local pid=$!
  if ! wait_bound "$proto" "$port"; then
    echo "FAIL $name/$server: the server did not start (see $log)" >&2
    stop_group "$pid"
    return
  fi
  local c1a c1b res
  c1a=$(cpu_ticks "$SRV_CPU")
  res=$(timeout $((DUR + 20)) taskset -c "$LG_CPU" "$OUT/loadgen" "$mode" "$HOST" "$port" \
    "$conc" "$DUR" "$size" 2>>"$log")
  c1b=$(cpu_ticks "$SRV_CPU")
  stop_group "$pid"
  printf '%s\t%s\t%s\t%s srv_busy=%s\n' "$pair" "$name" "$server" "$res" \
    "$(busy_share "$c1a" "$c1b")" >>"$RAW"
}

echo "loadgen on CPU $LG_CPU, servers on CPU $SRV_CPU, ${DUR}s per run, $PAIRS pairs per case"
for line in "${CASES[@]}"; do
  IFS='|' read -r name mode conc size proto c_cmd sockit_cmd <<<"$line"
  wanted "$name" || continue
  for pair in $(seq 1 "$PAIRS"); do
    if [ $((pair % 2)) -eq 1 ]; then
      run_one "$pair" "$name" c "$c_cmd" "$mode" "$conc" "$size" "$proto"
      run_one "$pair" "$name" sockit "$sockit_cmd" "$mode" "$conc" "$size" "$proto"
    else
      run_one "$pair" "$name" sockit "$sockit_cmd" "$mode" "$conc" "$size" "$proto"
      run_one "$pair" "$name" c "$c_cmd" "$mode" "$conc" "$size" "$proto"
    fi
    echo "  $name pair $pair done"
  done
done

python3 "$HERE/pairs_summary.py" "$RAW" | tee "$OUT/summary.md"
