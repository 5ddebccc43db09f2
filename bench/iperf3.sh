#!/usr/bin/env bash
# bench/iperf3.sh - sockit's throughput tests against iperf3 3.x on loopback, issue 21's rows:
#
#   tcp1-up    iperf3 -c H -t D            sockit bench tcp://H -d D -i 1s
#   tcp1-down  iperf3 -c H -t D -R         sockit bench tcp://H -d D -i 1s -R
#   tcp4-up    iperf3 -c H -t D -P 4       sockit bench tcp://H -d D -i 1s -c 4
#   tcp4-down  iperf3 -c H -t D -P 4 -R    sockit bench tcp://H -d D -i 1s -c 4 -R
#   udp1g      iperf3 -c H -t D -u -b 1G -l 1400   sockit bench udp://H -d D -b 1G --size 1400
#
# Each row: throughput (Gbit/s, the receiver's figure), the CPU time of client and server
# together per GB carried, and for UDP the loss, the jitter and the pacing error p99
# (|actual − scheduled| send time, from a packet capture on lo when tcpdump is there, for
# both tools alike: the same method for both, not each tool's own claim).
# One server of each kind (`iperf3 -s`, `sockit serve --perf`) serves every row.
#
# env: DUR     seconds per run (default 10)
#      REPS    repetitions of every row, interleaved (default 3)
#      SOCKIT  the sockit binary (default: `cargo build --release` here)
#      WORKDIR logs, JSON and captures (default ${TMPDIR:-/tmp}/sockit-iperf3)
#      CAPTURE 0 to skip the packet capture (default 1 when tcpdump is installed)
# Smoke test: DUR=1 REPS=1 bench/iperf3.sh
# Traffic goes to 127.0.0.1 only, on free ports; every run is bounded by `timeout`.
set -u
set -m

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
ROOT=$(dirname "$HERE")
DUR=${DUR:-10}
REPS=${REPS:-3}
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/sockit-iperf3}
CAPTURE=${CAPTURE:-1}
command -v tcpdump >/dev/null || CAPTURE=0
command -v iperf3 >/dev/null || { echo "iperf3 is not installed (apt-get install iperf3)"; exit 2; }
mkdir -p "$WORKDIR"
use_release_sockit
LIMIT=$((DUR + 30))

# CPU seconds (user + system) a process has used so far.
cpu_of() {
  awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12 + $13) / hz}' "/proc/$1/stat"
}

IPORT=$(free_port tcp)
SPORT=$(free_port tcp)
UPORT=$(free_port udp)
iperf3 -s -B 127.0.0.1 -p "$IPORT" >"$WORKDIR/iperf3-server.log" 2>&1 &
IPERF_PID=$!
"$SOCKIT" serve "tcp://127.0.0.1:$SPORT" --perf -q >"$WORKDIR/sockit-tcp.log" 2>&1 &
STCP_PID=$!
"$SOCKIT" serve "udp://127.0.0.1:$UPORT" --perf -q >"$WORKDIR/sockit-udp.log" 2>&1 &
SUDP_PID=$!
trap 'stop_group $IPERF_PID; stop_group $STCP_PID; stop_group $SUDP_PID' EXIT
wait_bound tcp "$IPORT" && wait_bound tcp "$SPORT" && wait_bound udp "$UPORT" || {
  echo "a server did not start; see $WORKDIR"; exit 1; }

# Starts a capture of UDP port $1 on lo into $2; prints its pid.
start_capture() {
  tcpdump -i lo -n -B 65536 -w "$2" "udp and dst port $1" >/dev/null 2>&1 &
  echo $!
  sleep 1
}

# The pacing error p99 in µs of the data packets of a capture ($1) at $2 bit/s of
# $3-byte datagrams: packet k is due at first + k × gap.
pacing_p99() {
  "${PYTHON:-python3}" - "$1" "$2" "$3" <<'EOF'
import struct, sys
path, rate, size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
data = open(path, "rb").read()
nano = data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
at, times = 24, []
while at + 16 <= len(data):
    sec, frac, incl, orig = struct.unpack(endian + "IIII", data[at:at + 16])
    at += 16 + incl
    if orig >= size:  # data datagrams only, not the tools' control packets
        times.append(sec + frac / (1e9 if nano else 1e6))
if len(times) < 2:
    print("n/a"); sys.exit()
gap = size * 8 / rate
errors = sorted(abs(t - (times[0] + k * gap)) for k, t in enumerate(times))
print(f"{errors[int(0.99 * (len(errors) - 1))] * 1e6:.1f}")
EOF
}

# One run: $1 = tool, $2 = row, $3 = rep. Prints a result line.
run_row() {
  local tool=$1 row=$2 rep=$3 json="$WORKDIR/$1-$2-$3.json" server_pid cap="" cap_pid=""
  local args=() udp=0
  case "$row" in
    tcp1-up) args=() ;;
    tcp1-down) args=(-R) ;;
    tcp4-up) args=(-c 4) ;;
    tcp4-down) args=(-c 4 -R) ;;
    udp1g) udp=1 ;;
  esac
  if [ "$tool" = iperf3 ]; then
    server_pid=$IPERF_PID
    [ "$row" = tcp4-up ] && args=(-P 4)
    [ "$row" = tcp4-down ] && args=(-P 4 -R)
    [ $udp = 1 ] && args=(-u -b 1G -l 1400)
  else
    server_pid=$STCP_PID
    [ $udp = 1 ] && server_pid=$SUDP_PID
  fi
  if [ $udp = 1 ] && [ "$CAPTURE" = 1 ]; then
    cap="$WORKDIR/$tool-$row-$rep.pcap"
    if [ "$tool" = iperf3 ]; then cap_pid=$(start_capture "$IPORT" "$cap"); else cap_pid=$(start_capture "$UPORT" "$cap"); fi
  fi
  local server_before client_cpu server_after
  server_before=$(cpu_of "$server_pid")
  local start_ns=$(date +%s%N)
  if [ "$tool" = iperf3 ]; then
    client_cpu=$( { /usr/bin/time -f "%U %S" timeout "$LIMIT" iperf3 -c 127.0.0.1 -p "$IPORT" -t "$DUR" -J "${args[@]}" >"$json"; } 2>&1 | tail -1 | awk '{print $1 + $2}')
  elif [ $udp = 1 ]; then
    client_cpu=$( { /usr/bin/time -f "%U %S" timeout "$LIMIT" "$SOCKIT" bench "udp://127.0.0.1:$UPORT" -d "${DUR}s" -i 1s -b 1G --size 1400 --json "$json" >/dev/null; } 2>&1 | tail -1 | awk '{print $1 + $2}')
  else
    client_cpu=$( { /usr/bin/time -f "%U %S" timeout "$LIMIT" "$SOCKIT" bench "tcp://127.0.0.1:$SPORT" -d "${DUR}s" -i 1s "${args[@]}" --json "$json" >/dev/null; } 2>&1 | tail -1 | awk '{print $1 + $2}')
  fi
  server_after=$(cpu_of "$server_pid")
  [ -n "$cap_pid" ] && { sleep 0.5; kill -INT "$cap_pid" 2>/dev/null; wait "$cap_pid" 2>/dev/null; }
  local pacing="n/a"
  [ -n "$cap" ] && [ -s "$cap" ] && pacing=$(pacing_p99 "$cap" 1e9 1400)
  "${PYTHON:-python3}" - "$tool" "$row" "$json" "$client_cpu" "$server_before" "$server_after" "$pacing" <<'EOF'
import json, sys
tool, row, path, client, before, after, pacing = sys.argv[1:]
cpu = float(client or 0) + float(after) - float(before)
text = open(path).read().strip().splitlines()
if tool == "iperf3":
    end = json.loads("\n".join(text))["end"]
    if row == "udp1g":
        s = end["sum"]
        bps, extra = s["bits_per_second"] * (1 - s["lost_percent"] / 100), f"loss {s['lost_percent']:.3f} %  jitter {s['jitter_ms'] * 1000:.1f} µs"
    else:
        bps, extra = end["sum_received"]["bits_per_second"], ""
else:
    end = json.loads(text[-1])
    bps = end["up_bits_per_second"] + end["down_bits_per_second"]
    extra = ""
    if row == "udp1g":
        udp = end["streams"][0]["udp"]
        r = udp["receiver"] or {"total": {"received": 0, "jitter_ns": 0}}
        sent, got = udp["sent"], r["total"]["received"]
        loss = 100 * (sent - got) / sent if sent else 0
        bps = bps * (got / sent if sent else 0)
        extra = f"loss {loss:.3f} %  jitter {r['total']['jitter_ns'] / 1000:.1f} µs  (own p99 {udp['pacing_error_p99_us']:.1f} µs)"
print(f"{tool:7} {row:10} {bps / 1e9:7.3f} Gbit/s  cpu {cpu:6.2f} s  pacing p99 {pacing} µs  {extra}")
EOF
}

echo "DUR=$DUR REPS=$REPS sockit=$SOCKIT iperf3=$(iperf3 --version | head -1)"
for rep in $(seq 1 "$REPS"); do
  for row in tcp1-up tcp1-down tcp4-up tcp4-down udp1g; do
    for tool in iperf3 sockit; do
      run_row "$tool" "$row" "$rep"
    done
  done
done | tee "$WORKDIR/summary.txt"
echo "(cpu: client + server CPU seconds for the run; divide by GB carried for CPU per byte)"
