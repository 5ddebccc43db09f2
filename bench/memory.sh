#!/usr/bin/env bash
# Memory per connection, measured: server RSS (VmRSS) before and after N idle clients,
# then N clients that send requests and never read the replies, and the most
# connections held at once. Loopback only; not part of `cargo test`.
#
#   bench/memory.sh [IDLE [NONREADERS]]    defaults 10000 and 2000
#   bench/memory.sh 19900 0                the most this machine's 20,000-descriptor
#                                          limit allows in one server process
#   SOCKIT=target/debug/sockit bench/memory.sh 1000 1000
#   SERVE_EXTRA="--threads 1" bench/memory.sh 0 2000   more flags for the server
#
# Non-readers are fewer by default: each parks up to ~200 KiB in kernel socket buffers
# (not in sockit's memory), and thousands of them press on the kernel's TCP memory.
set -euo pipefail
cd "$(dirname "$0")/.."

IDLE="${1:-10000}"
NONREADERS="${2:-2000}"
if [ -z "${SOCKIT:-}" ]; then
  cargo build --release --quiet
  SOCKIT=target/release/sockit
fi
ulimit -n "$(ulimit -Hn)"
work="$(mktemp -d)"
server=""
cleanup() { [ -n "$server" ] && kill -KILL "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# measure KIND N: one fresh server, N clients of KIND held by clients.py, RSS delta.
measure() {
  local kind="$1" N="$2"
  "$SOCKIT" serve tcp://127.0.0.1:0 --echo --idle-timeout 0 --backlog 4096 -q \
    >"$work/out" 2>"$work/err" &
  server=$!
  for _ in $(seq 1 500); do grep -q "server start at" "$work/out" && break; sleep 0.02; done
  local addr
  addr=$(sed -n 's/^server start at: //p' "$work/out")
  # Warm up (first connection, allocator arenas), then the baseline.
  python3 bench/clients.py --addr "$addr" --count 10 --kind "$kind" --hold 0 >/dev/null
  local before after held
  before=$(rss "$server")
  python3 bench/clients.py --addr "$addr" --count "$N" --kind "$kind" --hold 3 \
    --rss-of "$server" >"$work/clients"
  held=$(sed -n 's/^held //p' "$work/clients")
  after=$(sed -n 's/^rss //p' "$work/clients")
  echo "$kind: $held connections held; server RSS $before KiB -> $after KiB;" \
    "$(python3 -c "print(f'{($after-$before)/$held:.1f}')") KiB per connection" \
    "$(sed -n 's/^pushed //p' "$work/clients")"
  kill -TERM "$server"; wait "$server" || true; server=""
}

echo "sockit: $SOCKIT; descriptor limit $(ulimit -n)"
[ "$IDLE" -gt 0 ] && measure idle "$IDLE"
[ "$NONREADERS" -gt 0 ] && measure nonreader "$NONREADERS"
exit 0
