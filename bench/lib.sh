# bench/lib.sh - helpers shared by the scripts in bench/ (sourced, not run).

# "busy total" jiffies of CPU $1.
cpu_ticks() {
  awk -v c="cpu$1" '$1 == c {busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6}' /proc/stat
}

# Busy percentage between two cpu_ticks readings.
busy_pct() {
  echo "$1 $2" | awk '{d = $4 - $2; printf "%.0f", (d > 0 ? 100 * ($3 - $1) / d : 0)}'
}

# Stops a background job and everything it started: $1 = its pid, which is its process
# group under `set -m`. TERM first, KILL after 2 s.
stop_group() {
  {
    kill -TERM -- "-$1"
    for _ in $(seq 1 20); do kill -0 "$1" || break; sleep 0.1; done
    kill -KILL -- "-$1"
    wait "$1"
  } 2>/dev/null
}

# A free port on 127.0.0.1 for $1 = tcp (default) | udp, never 8000 (the note's port).
free_port() {
  "${PYTHON:-python3}" - "${1:-tcp}" <<'EOF'
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
while True:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    if port != 8000:
        print(port)
        break
EOF
}

# Is something listening (tcp) or bound (udp) on port $2?
bound() {
  local hex
  hex=$(printf '%04X' "$2")
  if [ "$1" = tcp ]; then
    awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" {f = 1} END {exit !f}' /proc/net/tcp
  else
    awk -v p=":$hex" '$2 ~ p"$" {f = 1} END {exit !f}' /proc/net/udp
  fi
}

# Waits (bounded, 5 s) until port $2 of protocol $1 is bound (udp) or listens (tcp).
wait_bound() {
  for _ in $(seq 1 100); do bound "$1" "$2" && return 0; sleep 0.05; done
  return 1
}

# Is case $1 among the cases asked for (the array WANTED; empty means every case)?
wanted() {
  [ ${#WANTED[@]} -eq 0 ] && return 0
  local w
  for w in "${WANTED[@]}"; do [ "$w" = "$1" ] && return 0; done
  return 1
}

# The busy share (0 to 1) of a CPU between two cpu_ticks readings.
busy_share() {
  echo "$1 $2" | awk '{d = $4 - $2; printf "%.4f", (d > 0 ? ($3 - $1) / d : 0)}'
}

# Starts the run's output afresh: empties $OUT, makes $OUT/logs and the subdirectories of
# $OUT named in the arguments, and sets RAW to an empty $OUT/raw.tsv. Needs OUT.
fresh_out() {
  rm -rf "$OUT"
  mkdir -p "$OUT/logs"
  local dir
  for dir in "$@"; do mkdir -p "$OUT/$dir"; done
  RAW=$OUT/raw.tsv
  : >"$RAW"
}

# Sets SOCKIT to this repository's release build, building it, unless SOCKIT is given;
# stops the script when there is no binary there. Needs ROOT.
use_release_sockit() {
  if [ -z "${SOCKIT:-}" ]; then
    (cd "$ROOT" && cargo build --release -q) || exit 1
    SOCKIT=${CARGO_TARGET_DIR:-$ROOT/target}/release/sockit
  fi
  [ -x "$SOCKIT" ] || { echo "no sockit binary at $SOCKIT" >&2; exit 1; }
}

# Stops the script unless PEERS holds the measuring stick's C sources.
require_stick() {
  local f
  for f in loadgen.c refserver.c; do
    [ -f "$PEERS/$f" ] || { echo "no $PEERS/$f: set PEERS to the measuring stick's directory (../shared/peers)" >&2; exit 1; }
  done
}

# Compiles the stick's C load generator and C reference server into OUT.
build_stick() {
  cc -O2 -o "$OUT/loadgen" "$PEERS/loadgen.c" || exit 1
  cc -O2 -o "$OUT/refserver" "$PEERS/refserver.c" || exit 1
}
