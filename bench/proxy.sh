#!/usr/bin/env bash
# bench/proxy.sh - `sockit proxy` against the SOCKS servers people deploy, and against
# `sockit relay` for bulk data.
#
# The proxy (or relay) runs alone on $SRV_CPU (default 1); the server behind it and the
# load (`sockit bench`, which speaks SOCKS5 with --proxy) on $LG_CPU (default 0). Every case
# runs REPS times, the proxies interleaved and their order rotated each repetition.
#
# Cases (arguments; default: all):
#   tunnels  a new SOCKS5 tunnel per exchange (connect through the proxy, send, reply,
#            close), 50 at once: tunnels/s and proxy µs per tunnel
#            sockit proxy, microsocks, danted (the anchor: microsocks)
#   stream   one tunnel carrying a bulk stream into a discarding server: MB/s and proxy
#            µs per MB; sockit proxy against sockit relay (the anchor: the relay)
#   stream-pair  the same two streams at the same time, both on $SRV_CPU (their loads on
#            $LG_CPU): whatever else the machine does falls on both alike, so the ratio
#            holds where one-after-the-other runs drift apart. µs per MB here is each
#            process's own CPU time (utime + stime), not the core's busy share
#
# env: REPS (3), DUR (3), SOCKIT (default: `cargo build --release`), WORKDIR
#      (${TMPDIR:-/tmp}/sockit-proxy-bench), INSTALL=0 to skip apt-get for microsocks/danted.
# Smoke test: REPS=1 DUR=1 bench/proxy.sh
# Traffic goes to 127.0.0.1 only, on free ports chosen at run time (never 8000); every run
# is bounded by `timeout`, and every process is stopped by its process group.
set -u
set -m

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
ROOT=$(dirname "$HERE")
REPS=${REPS:-3}
DUR=${DUR:-3}
LG_CPU=${LG_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/sockit-proxy-bench}
OUT=$WORKDIR/out
HOST=127.0.0.1

if ! command -v microsocks >/dev/null || ! command -v danted >/dev/null; then
  if [ "${INSTALL:-1}" = 0 ]; then
    echo "microsocks or danted missing (INSTALL=0): their runs will fail" >&2
  else
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -q >/dev/null &&
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q microsocks dante-server >/dev/null ||
      { echo "could not install microsocks and dante-server" >&2; exit 1; }
  fi
fi
use_release_sockit
fresh_out

# The command for proxy $1 on port $2 (case $3; $4 = the backend's port, for the relay).
proxy_command() {
  case $1 in
    sockit) echo "$SOCKIT --threads 1 proxy tcp://$HOST:$2 --allow-to 127.0.0.0/8 -q" ;;
    relay) echo "$SOCKIT --threads 1 relay tcp://$HOST:$2 tcp://$HOST:$4 -q" ;;
    microsocks) echo "microsocks -i $HOST -p $2" ;;
    danted)
      cat >"$OUT/danted-$2.conf" <<CONF
logoutput: stderr
internal: $HOST port = $2
external: $HOST
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }
CONF
      echo "danted -f $OUT/danted-$2.conf -p $OUT/danted-$2.pid" ;;
  esac
}

# A process's CPU time so far (utime + stime, in jiffies): $1 = its pid.
process_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# The share (0 to 1) of one CPU's time that a process took: $1 $2 = its process_ticks
# before and after, then the CPU's two cpu_ticks readings (busy total, busy total).
process_share() {
  echo "$*" | awk '{d = $6 - $4; printf "%.4f", (d > 0 ? ($2 - $1) / d : 0)}'
}

# MB/s from a `sockit bench --json` report ($1), or 0.
stream_rate() {
  python3 -c "
import json, sys
print(f\"{json.load(open(sys.argv[1]))['bytes_per_s'] / 1e6:.1f}\")
" "$1" 2>/dev/null || echo 0
}

# One run of case stream-pair: the relay's and the proxy's streams at the same time;
# appends one line for each to $RAW, srv_busy being the process's own CPU share.
run_pair() {
  local rep=$1 log=$OUT/logs/stream-pair.log
  local rport pport rback pback rb pb relay proxy
  rport=$(free_port tcp); pport=$(free_port tcp)
  rback=$(free_port tcp); pback=$(free_port tcp)
  echo "== rep $rep" >>"$log"
  taskset -c "$LG_CPU" "$SOCKIT" --threads 1 serve "tcp://$HOST:$rback" --discard -q >>"$log" 2>&1 &
  rb=$!
  taskset -c "$LG_CPU" "$SOCKIT" --threads 1 serve "tcp://$HOST:$pback" --discard -q >>"$log" 2>&1 &
  pb=$!
  taskset -c "$SRV_CPU" bash -c "exec $(proxy_command relay "$rport" stream "$rback")" >>"$log" 2>&1 &
  relay=$!
  taskset -c "$SRV_CPU" bash -c "exec $(proxy_command sockit "$pport" stream "$pback")" >>"$log" 2>&1 &
  proxy=$!
  local port
  for port in "$rback" "$pback" "$rport" "$pport"; do
    if ! wait_bound tcp "$port"; then
      echo "FAIL stream-pair: did not start (see $log)" >&2
      stop_group "$relay"; stop_group "$proxy"; stop_group "$rb"; stop_group "$pb"
      return
    fi
  done
  local c1a c1b ra rz pa pz
  c1a=$(cpu_ticks "$SRV_CPU"); ra=$(process_ticks "$relay"); pa=$(process_ticks "$proxy")
  timeout $((DUR + 20)) taskset -c "$LG_CPU" "$SOCKIT" bench "tcp://$HOST:$rport" -p stream -c 1 \
    -d "${DUR}s" --warmup 0.5s --json "$OUT/pair-relay.json" >>"$log" 2>&1 &
  local load_relay=$!
  timeout $((DUR + 20)) taskset -c "$LG_CPU" "$SOCKIT" bench "tcp://$HOST:$pback" \
    --proxy "socks5://$HOST:$pport" -p stream -c 1 \
    -d "${DUR}s" --warmup 0.5s --json "$OUT/pair-sockit.json" >>"$log" 2>&1
  wait "$load_relay"
  c1b=$(cpu_ticks "$SRV_CPU"); rz=$(process_ticks "$relay"); pz=$(process_ticks "$proxy")
  stop_group "$relay"; stop_group "$proxy"; stop_group "$rb"; stop_group "$pb"
  printf '%s\t%s\t%s\trate=%s srv_busy=%s\n' "$rep" stream-pair sockit \
    "$(stream_rate "$OUT/pair-sockit.json")" "$(process_share "$pa" "$pz" "$c1a" "$c1b")" >>"$RAW"
  printf '%s\t%s\t%s\trate=%s srv_busy=%s\n' "$rep" stream-pair relay \
    "$(stream_rate "$OUT/pair-relay.json")" "$(process_share "$ra" "$rz" "$c1a" "$c1b")" >>"$RAW"
  rm -f "$OUT/pair-relay.json" "$OUT/pair-sockit.json"
}

# One run; appends "rep case proxy rate=… srv_busy=…" to $RAW (rate: tunnels/s, or MB/s).
run_one() {
  local rep=$1 case=$2 proxy=$3 log=$OUT/logs/$2-$3.log port back bpid ppid
  port=$(free_port tcp)
  back=$(free_port tcp)
  echo "== rep $rep" >>"$log"
  if [ "$case" = tunnels ]; then
    taskset -c "$LG_CPU" "$SOCKIT" --threads 1 serve "tcp://$HOST:$back" --close -q >>"$log" 2>&1 &
  else
    taskset -c "$LG_CPU" "$SOCKIT" --threads 1 serve "tcp://$HOST:$back" --discard -q >>"$log" 2>&1 &
  fi
  bpid=$!
  taskset -c "$SRV_CPU" bash -c "exec $(proxy_command "$proxy" "$port" "$case" "$back")" >>"$log" 2>&1 &
  ppid=$!
  if ! wait_bound tcp "$back" || ! wait_bound tcp "$port"; then
    echo "FAIL $case/$proxy: did not start (see $log)" >&2
    stop_group "$ppid"; stop_group "$bpid"
    return
  fi
  local target=tcp://$HOST:$back via=(--proxy "socks5://$HOST:$port") load=(-p hello -c 50)
  [ "$proxy" = relay ] && { target=tcp://$HOST:$port; via=(); }
  [ "$case" = stream ] && load=(-p stream -c 1)
  local c1a c1b
  c1a=$(cpu_ticks "$SRV_CPU")
  timeout $((DUR + 20)) taskset -c "$LG_CPU" "$SOCKIT" bench "$target" "${via[@]}" "${load[@]}" \
    -d "${DUR}s" --warmup 0.5s --json "$OUT/last.json" >>"$log" 2>&1
  c1b=$(cpu_ticks "$SRV_CPU")
  stop_group "$ppid"
  stop_group "$bpid"
  local rate
  rate=$(python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
print(f\"{d['bytes_per_s'] / 1e6:.1f}\" if sys.argv[2] == 'stream' else f\"{d['exchanges_per_s']:.1f}\")
" "$OUT/last.json" "$case" 2>>"$log" || echo 0)
  rm -f "$OUT/last.json"
  printf '%s\t%s\t%s\trate=%s srv_busy=%s\n' "$rep" "$case" "$proxy" "$rate" \
    "$(busy_share "$c1a" "$c1b")" >>"$RAW"
}

CASES=(
  "tunnels|sockit microsocks danted"
  "stream|sockit relay"
  "stream-pair|pair"
)
WANTED=("$@")
echo "load and backend on CPU $LG_CPU, proxies on CPU $SRV_CPU, ${DUR}s per run, $REPS repetitions"
for line in "${CASES[@]}"; do
  IFS='|' read -r case proxies <<<"$line"
  wanted "$case" || continue
  read -r -a order <<<"$proxies"
  for rep in $(seq 1 "$REPS"); do
    for proxy in "${order[@]}"; do
      if [ "$proxy" = pair ]; then
        run_pair "$rep"
      else
        run_one "$rep" "$case" "$proxy"
      fi
    done
    order=("${order[@]:1}" "${order[0]}")
    echo "  $case rep $rep done"
  done
done
echo "(tunnels: ops = tunnels; stream, stream-pair: ops = MB)"
python3 "$HERE/anchors_summary.py" "$RAW" microsocks relay | tee "$OUT/summary.md"
