#!/usr/bin/env bash
# Soak test: a TCP and a UDP sockit server under mixed good and bad clients for a set
# time on loopback, then SIGTERM; prints what was served, refused, timed out and lost.
# Not part of `cargo test` (it runs for minutes and uses both cores).
#
#   bench/soak.sh [SECONDS]          default 60
#   SOCKIT=target/debug/sockit bench/soak.sh 30
#   bench/soak.sh --hostile [SECONDS]   issue 20's attacks, each bound checked
#                                       (bench/soak_hostile.py; .ci/run runs it)
#
# Exit status: 0 when nothing was lost and both servers drained and exited 0 (with
# --hostile: 0 when every bound held, 1 on a breach).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--hostile" ]; then
  if [ -z "${SOCKIT:-}" ]; then
    cargo build --release --quiet
    SOCKIT=target/release/sockit
  fi
  exec python3 bench/soak_hostile.py --seconds "${2:-60}" --sockit "$SOCKIT"
fi

SECONDS_TO_RUN="${1:-60}"
IDLE=5
if [ -z "${SOCKIT:-}" ]; then
  cargo build --release --quiet
  SOCKIT=target/release/sockit
fi
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Raise our own descriptor limit: the servers inherit it (several thousand sockets).
ulimit -n "$(ulimit -Hn)"

# start NAME ARGS...: starts a server, waits for its listening and metrics lines.
start() {
  local name="$1"; shift
  "$SOCKIT" serve "$@" --metrics 127.0.0.1:0 -q >"$work/$name.out" 2>"$work/$name.err" &
  pids+=("$!")
  eval "${name}_pid=$!"
  for _ in $(seq 1 500); do
    if grep -q "server start at" "$work/$name.out" && grep -q "metrics: http" "$work/$name.err"; then
      eval "${name}_addr=$(sed -n 's/^server start at: //p' "$work/$name.out")"
      eval "${name}_metrics=$(grep -o 'http://[^ ]*' "$work/$name.err" | head -1)"
      return
    fi
    sleep 0.02
  done
  echo "soak: $name did not start" >&2; cat "$work/$name.err" >&2; exit 1
}

start tcp tcp://127.0.0.1:0 --echo --framing line --idle-timeout "${IDLE}s" \
  --message-timeout 3s --max-conns 900 --max-conns-mode refuse --backlog 4096
start udp udp://127.0.0.1:0 --echo

# Sample the TCP server's memory once a second.
(
  peak=0
  while kill -0 "$tcp_pid" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$tcp_pid/status" 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" >"$work/peak"
    sleep 1
  done
) &
sampler=$!

echo "soak: ${SECONDS_TO_RUN}s against tcp://$tcp_addr and udp://$udp_addr ($SOCKIT)"
started=$(date +%s)
python3 bench/soak.py --tcp "$tcp_addr" --udp "$udp_addr" --seconds "$SECONDS_TO_RUN" \
  --idle "$IDLE" >"$work/clients.json"
elapsed=$(( $(date +%s) - started ))

tcp_metrics_text="$(curl -s "$tcp_metrics" 2>/dev/null || python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())" "$tcp_metrics")"
udp_metrics_text="$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())" "$udp_metrics")"
echo "$tcp_metrics_text" >"$work/tcp.metrics"
echo "$udp_metrics_text" >"$work/udp.metrics"

kill -TERM "$tcp_pid" "$udp_pid"
tcp_status=0; udp_status=0
wait "$tcp_pid" || tcp_status=$?
wait "$udp_pid" || udp_status=$?
kill "$sampler" 2>/dev/null || true
pids=()

python3 - "$work" "$elapsed" "$tcp_status" "$udp_status" <<'EOF'
import json, sys
work, elapsed, tcp_status, udp_status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
clients = json.load(open(f"{work}/clients.json"))

def metrics(name):
    out = {}
    for line in open(f"{work}/{name}.metrics"):
        if line.startswith("#") or not line.strip():
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out

tcp, udp = metrics("tcp"), metrics("udp")
def m(d, name, **labels):
    labels = {"transport": labels.pop("transport", "tcp"), **labels}
    key = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    return int(d.get(key, 0))

print(f"\nclients ({elapsed}s)  connections  requests  answered  refused  timed-out  resets  lost  unexpected")
lost = 0
for kind in ["good", "burst", "silent", "slow", "nonreader", "resetting", "udp good"]:
    c = clients[kind]
    lost += c["lost"] if kind != "udp good" else 0
    print(f"  {kind:<12} {c['connections']:>11} {c['requests']:>9} {c['answered']:>9} {c['refused']:>8}"
          f" {c['timed_out']:>10} {c['reset']:>7} {c['lost']:>5} {c['errors']:>11}")
    if c["sample_error"]:
        print(f"      e.g. {c['sample_error']}")
print(f"  udp flood    {clients['udp flood']['datagrams']} datagrams sent")

kinds = ["reset", "timeout", "tls", "proxy_header", "line_too_long", "slow_reader", "program", "io"]
print("\nTCP server (from /metrics just before SIGTERM):")
print(f"  accepted {m(tcp,'sockit_connections_accepted_total')}, refused {m(tcp,'sockit_connections_refused_total')},"
      f" timed out {m(tcp,'sockit_connections_timed_out_total')}, still open {m(tcp,'sockit_connections_active')}")
print(f"  messages {m(tcp,'sockit_messages_received_total')} in / {m(tcp,'sockit_messages_sent_total')} out,"
      f" bytes {m(tcp,'sockit_received_bytes_total')} in / {m(tcp,'sockit_sent_bytes_total')} out")
print("  errors by kind: " + ", ".join(f"{k} {m(tcp,'sockit_errors_total',kind=k)}" for k in kinds
                                         if m(tcp,'sockit_errors_total',kind=k)))
try:
    peak = int(open(f"{work}/peak").read())
    print(f"  peak RSS {peak / 1024:.1f} MiB")
except OSError:
    pass
print(f"UDP server: {m(udp,'sockit_messages_received_total',transport='udp')} datagrams answered")
for name in ["tcp", "udp"]:
    summary = [l for l in open(f"{work}/{name}.err") if l.startswith("summary:")]
    print(f"{name} exit: {summary[-1].strip() if summary else '(no summary)'}")
print(f"\nlost: {lost}   server exits: tcp {tcp_status}, udp {udp_status}")
sys.exit(0 if lost == 0 and tcp_status == 0 and udp_status == 0 else 1)
EOF
