#!/usr/bin/env bash
# bench/tls_client_cost.sh - what one full TLS handshake costs sockit's load generator.
#
# For each sockit binary given, runs `sockit bench tls://` with one connection at a time
# and a new connection (a full handshake, no resumption) per exchange against a sockit TLS
# server with an ECDSA P-256 certificate, and prints:
#   * µs of the load generator's CPU (user + system, from wait4's rusage) per handshake,
#     from a native run of DUR seconds;
#   * instructions per handshake from callgrind: the difference between a run of SHORT and
#     one of LONG seconds, divided by the difference in handshakes, so start-up work
#     (building the client configuration once, loading roots) is not counted per handshake.
# and, for comparison, `openssl s_time -new`'s CPU per handshake against the same server.
#
#   bench/tls_client_cost.sh target/release/sockit [/path/to/an/older/sockit ...]
#
# env: DUR (default 5), SHORT / LONG (callgrind seconds, default 5 / 15), CPU (default 0),
#      WORKDIR (default ${TMPDIR:-/tmp}/sockit-tls-cost). The server is the first binary.
# Build with symbols if you want to read the callgrind files: cargo build --profile profiling.
# Traffic goes to 127.0.0.1 only; every run is bounded by `timeout`.
set -u
set -m

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
[ $# -ge 1 ] || { echo "usage: bench/tls_client_cost.sh SOCKIT [SOCKIT ...]" >&2; exit 2; }
DUR=${DUR:-5}
SHORT=${SHORT:-5}
LONG=${LONG:-15}
CPU=${CPU:-0}
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/sockit-tls-cost}
mkdir -p "$WORKDIR"
for tool in valgrind openssl python3 taskset timeout; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$WORKDIR/key.pem" -out "$WORKDIR/cert.pem" -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -addext basicConstraints=critical,CA:FALSE 2>/dev/null || exit 1
PORT=$(free_port tcp)
taskset -c 1 "$1" serve "tls://127.0.0.1:$PORT" --cert "$WORKDIR/cert.pem" \
  --key "$WORKDIR/key.pem" -q >"$WORKDIR/server.log" 2>&1 &
SERVER=$!
trap 'stop_group $SERVER' EXIT
wait_bound tcp "$PORT" || { echo "the server did not start (see $WORKDIR/server.log)" >&2; exit 1; }

# Runs `$@` and prints "<exchanges> <cpu seconds>" (exchanges from the JSON report).
run_counted() {
  python3 - "$WORKDIR/run.json" "$@" <<'PY'
import json, os, subprocess, sys
report, argv = sys.argv[1], sys.argv[2:]
child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
exchanges = json.load(open(report))["exchanges"] if os.path.exists(report) else 0
print(exchanges, usage.ru_utime + usage.ru_stime)
PY
}

# The bench command line for binary $1 over $2 seconds (resumption off where the binary
# has the flag; binaries without it never resume).
bench_args() {
  local resume=()
  "$1" bench --help 2>/dev/null | grep -q -- --no-resume && resume=(--no-resume)
  echo "$1" bench "tls://localhost:$PORT" -p hello -c 1 -d "${2}s" --warmup 0s "${resume[@]}" \
    --json "$WORKDIR/run.json"
}

# Instructions (callgrind's Ir) of the bench run in $2 seconds for binary $1, then its
# exchanges: "<Ir> <exchanges>".
callgrind_run() {
  local out=$WORKDIR/callgrind.$RANDOM
  rm -f "$WORKDIR/run.json"
  # shellcheck disable=SC2046
  SSL_CERT_FILE=$WORKDIR/cert.pem timeout $(($2 * 60 + 120)) valgrind --tool=callgrind \
    --callgrind-out-file="$out" $(bench_args "$1" "$2") >/dev/null 2>&1
  local ir
  ir=$(awk '/^summary:/ {print $2}' "$out")
  echo "$ir $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['exchanges'])" "$WORKDIR/run.json")"
}

printf 'client\tµs CPU per handshake\thandshakes/s\tinstructions per handshake\n'
for bin in "$@"; do
  rm -f "$WORKDIR/run.json"
  # shellcheck disable=SC2046
  read -r ex cpu < <(SSL_CERT_FILE=$WORKDIR/cert.pem run_counted taskset -c "$CPU" timeout $((DUR + 30)) $(bench_args "$bin" "$DUR"))
  read -r ir1 ex1 < <(callgrind_run "$bin" "$SHORT")
  read -r ir2 ex2 < <(callgrind_run "$bin" "$LONG")
  python3 - "$bin" "$ex" "$cpu" "$DUR" "$ir1" "$ex1" "$ir2" "$ex2" <<'PY'
import sys
name, ex, cpu, dur, ir1, ex1, ir2, ex2 = sys.argv[1:]
ex, cpu, dur = int(ex), float(cpu), float(dur)
ir1, ex1, ir2, ex2 = int(ir1), int(ex1), int(ir2), int(ex2)
per_ir = (ir2 - ir1) / (ex2 - ex1) if ex2 > ex1 else float("nan")
print(f"{name}\t{cpu * 1e6 / ex if ex else float('nan'):.0f}\t{ex / dur:.0f}\t{per_ir:,.0f}")
PY
done

# openssl s_time: full handshakes (-new) for DUR seconds. Its first line counts user CPU
# only ("N connections in Xs;"), its second real time ("N connections in T real seconds").
SSL_CERT_FILE=$WORKDIR/cert.pem taskset -c "$CPU" timeout $((DUR + 30)) openssl s_time \
  -connect "127.0.0.1:$PORT" -new -time "$DUR" 2>/dev/null |
  awk '/connections in .*s;/ {n = $1; s = $4; sub(/s;/, "", s)}
       /real seconds/ {rate = $1 / $4}
       END {if (n > 0) printf "openssl s_time -new (user CPU only)\t%.0f\t%.0f\t-\n", s * 1e6 / n, rate}'
