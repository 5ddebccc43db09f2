#!/usr/bin/env bash
# bench/anchors.sh - the relay and the TLS terminator against the relays people deploy:
# HAProxy, nginx's stream module, stunnel4 and socat, on the measuring stick's pinning.
#
# The relay (or terminator) runs alone on $SRV_CPU (default 1); the C reference server
# behind it and the load run on $LG_CPU (default 0). The headline figure is the relay
# core's busy time per operation ("relay µs/op"), because on two cores the load
# generator's core is usually the limit and a rate alone would compare the load, not the
# relay. Every case runs REPS times, the relays interleaved and their order rotated each
# repetition; the summary gives medians and each relay's ratio to the anchor of its case
# (HAProxy for TCP and TLS, nginx for UDP, which HAProxy does not relay).
#
# Cases (arguments; default: all):
#   echo       50 persistent connections, 64 B echo        sockit, haproxy, nginx, socat
#   hello      a new connection per exchange, 50 at once    sockit, haproxy, nginx
#   udp        UDP request/response, 32 outstanding         sockit, nginx, socat
#   tls-full   TLS, a full handshake per exchange           sockit, haproxy, nginx, stunnel
#   tls-resume TLS, a resumed handshake per exchange        sockit, haproxy, nginx, stunnel
#   tls-echo   TLS, 50 persistent connections, 64 B echo    sockit, haproxy, nginx, stunnel
# The TCP and UDP cases use the stick's C load generator; the TLS cases use
# `sockit bench tls://` (the C load generator has no TLS), the same load for every relay.
#
# env: PEERS   the directory with loadgen.c and refserver.c (default ../shared/peers)
#      REPS    repetitions (default 3)          DUR  measured seconds per run (default 3)
#      KEY     ec (ECDSA P-256, default) or rsa (RSA 2048) for the TLS cases
#      SOCKIT  the sockit binary (default: `cargo build --release` in this repository)
#      WORKDIR where configs, logs and raw results go (default ${TMPDIR:-/tmp}/sockit-anchors)
#      INSTALL=0  do not apt-get install missing relays (their cases then fail)
# Smoke test: REPS=1 DUR=1 bench/anchors.sh echo tls-full
# Traffic goes to 127.0.0.1 only, on free ports chosen at run time (never 8000); every run
# is bounded by `timeout`, and every process is stopped by its process group.
set -u
set -m # every background job gets its own process group (PGID == PID)

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
ROOT=$(dirname "$HERE")
PEERS=${PEERS:-$(dirname "$ROOT")/shared/peers}
REPS=${REPS:-3}
DUR=${DUR:-3}
KEY=${KEY:-ec}
LG_CPU=${LG_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
WORKDIR=${WORKDIR:-${TMPDIR:-/tmp}/sockit-anchors}
OUT=$WORKDIR/out
HOST=127.0.0.1
NGINX_MODULE=${NGINX_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}

install_relays() {
  local missing=()
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v nginx >/dev/null || missing+=(nginx-light)
  [ -f "$NGINX_MODULE" ] || missing+=(libnginx-mod-stream)
  command -v stunnel4 >/dev/null || missing+=(stunnel4)
  command -v socat >/dev/null || missing+=(socat)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "${INSTALL:-1}" = 0 ]; then
    echo "missing: ${missing[*]} (INSTALL=0: their cases will fail)" >&2
    return 0
  fi
  echo "installing ${missing[*]} with apt-get" >&2
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q >/dev/null &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}" >/dev/null ||
    { echo "could not install ${missing[*]}" >&2; exit 1; }
}

require_stick
install_relays
use_release_sockit

fresh_out
build_stick

# The terminators' certificate: for localhost and 127.0.0.1, an end-entity certificate the
# load trusts through SSL_CERT_FILE.
make_certificate() {
  local algo=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
  [ "$KEY" = rsa ] && algo=(-newkey rsa:2048)
  openssl req -x509 "${algo[@]}" -nodes -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null || exit 1
  cat "$OUT/cert.pem" "$OUT/key.pem" >"$OUT/combined.pem"
}
make_certificate

# A relay's configuration from its template in bench/anchors/: $1 = template, $2 = listen
# address (with nginx's "udp"/"ssl" suffix), $3 = backend port; prints the file's path.
configure() {
  local out=$OUT/${1%.*}-$RANDOM.${1##*.}
  sed -e "s|LISTEN|$2|; s|BACKEND|$HOST:$3|; s|CERT|$OUT/cert.pem|; s|KEY|$OUT/key.pem|" \
    -e "s|MODULE|$NGINX_MODULE|; s|PREFIX|$OUT|" "$HERE/anchors/$1" >"$out"
  # HAProxy wants the key inside the certificate's file.
  [ "${1%%-*}" = haproxy ] && sed -i "s|$OUT/cert.pem|$OUT/combined.pem|" "$out"
  echo "$out"
}

# The command that runs relay $1 for case $2 on port $3 in front of backend port $4.
relay_command() {
  local relay=$1 case=$2 port=$3 back=$4 tls=
  case $case in tls-*) tls=1 ;; esac
  case $relay in
    sockit)
      if [ "$case" = udp ]; then
        echo "$SOCKIT --threads 1 relay udp://$HOST:$port udp://$HOST:$back -q"
      elif [ -n "$tls" ]; then
        echo "$SOCKIT --threads 1 relay tls://$HOST:$port tcp://$HOST:$back --cert $OUT/cert.pem --key $OUT/key.pem -q"
      else
        echo "$SOCKIT --threads 1 relay tcp://$HOST:$port tcp://$HOST:$back -q"
      fi ;;
    haproxy)
      local t=haproxy-tcp.cfg
      [ -n "$tls" ] && t=haproxy-tls.cfg
      echo "haproxy -db -f $(configure $t "$HOST:$port" "$back")" ;;
    nginx)
      local listen="$HOST:$port"
      [ "$case" = udp ] && listen="$listen udp"
      [ -n "$tls" ] && listen="$listen ssl"
      echo "nginx -p $OUT -c $(configure nginx-stream.conf "$listen" "$back")" ;;
    stunnel)
      echo "stunnel4 $(configure stunnel.conf "$HOST:$port" "$back")" ;;
    socat)
      if [ "$case" = udp ]; then
        echo "socat UDP4-RECVFROM:$port,bind=$HOST,fork,reuseaddr UDP4:$HOST:$back"
      else
        echo "socat TCP4-LISTEN:$port,bind=$HOST,fork,reuseaddr,backlog=128 TCP4:$HOST:$back"
      fi ;;
  esac
}

# case | load | concurrency | size | proto | backend mode | relays
CASES=(
  "echo|echo-tcp|50|64|tcp|echo|sockit haproxy nginx socat"
  "hello|hello-tcp|50|16|tcp|hello|sockit haproxy nginx"
  "udp|udp|32|16|udp|udp|sockit nginx socat"
  "tls-full|tls-hello|50|16|tcp|hello|sockit haproxy nginx stunnel"
  "tls-resume|tls-hello|50|16|tcp|hello|sockit haproxy nginx stunnel"
  "tls-echo|tls-echo|50|64|tcp|echo|sockit haproxy nginx stunnel"
)
WANTED=("$@")

# The load for one run; prints the C load generator's key=value line (or the same keys
# from sockit bench's JSON report for the TLS cases, with `resumed`: the percentage of
# handshakes that resumed a session, which shows the tls-resume case measures what it says).
run_load() {
  local case=$1 mode=$2 conc=$3 size=$4 port=$5 log=$6
  case $mode in
    tls-*)
      local pattern=${mode#tls-} resume=--no-resume
      [ "$case" = tls-resume ] && resume=
      SSL_CERT_FILE=$OUT/cert.pem timeout $((DUR + 20)) taskset -c "$LG_CPU" "$SOCKIT" bench \
        "tls://localhost:$port" --pattern "$pattern" -c "$conc" --size "$size" -d "${DUR}s" \
        --warmup 0.5s $resume --json "$OUT/last.json" >>"$log" 2>&1
      python3 -c "import json,sys; d=json.load(open(sys.argv[1])); h=d.get('tls_handshakes') or {}; n=h.get('full',0)+h.get('resumed',0); print(f\"done={d['exchanges']} rate={d['exchanges']/$DUR:.1f} errors={d.get('errors',{}).get('total',0)} resumed={100*h.get('resumed',0)/n if n else 0:.1f}\")" \
        "$OUT/last.json" 2>>"$log"
      rm -f "$OUT/last.json" ;;
    *)
      timeout $((DUR + 20)) taskset -c "$LG_CPU" "$OUT/loadgen" "$mode" "$HOST" "$port" \
        "$conc" "$DUR" "$size" 2>>"$log" ;;
  esac
}

# One run of relay $3 in case $2, repetition $1; appends a line to $RAW.
run_one() {
  local rep=$1 case=$2 relay=$3 mode=$4 conc=$5 size=$6 proto=$7 backend=$8
  local log=$OUT/logs/$case-$relay.log port back bpid rpid
  port=$(free_port "$proto")
  back=$(free_port "$proto")
  echo "== rep $rep" >>"$log"
  taskset -c "$LG_CPU" "$OUT/refserver" "$backend" "$back" "$HOST" >>"$log" 2>&1 &
  bpid=$!
  taskset -c "$SRV_CPU" bash -c "exec $(relay_command "$relay" "$case" "$port" "$back")" >>"$log" 2>&1 &
  rpid=$!
  if ! wait_bound "$proto" "$back" || ! wait_bound "$proto" "$port"; then
    echo "FAIL $case/$relay: the relay or its backend did not start (see $log)" >&2
    stop_group "$rpid"; stop_group "$bpid"
    return
  fi
  local c1a c1b res
  c1a=$(cpu_ticks "$SRV_CPU")
  res=$(run_load "$case" "$mode" "$conc" "$size" "$port" "$log")
  c1b=$(cpu_ticks "$SRV_CPU")
  stop_group "$rpid"
  stop_group "$bpid"
  printf '%s\t%s\t%s\t%s srv_busy=%s\n' "$rep" "$case" "$relay" "$res" \
    "$(busy_share "$c1a" "$c1b")" >>"$RAW"
}

echo "load on CPU $LG_CPU, relays on CPU $SRV_CPU, ${DUR}s per run, $REPS repetitions, $KEY key"
for line in "${CASES[@]}"; do
  IFS='|' read -r case mode conc size proto backend relays <<<"$line"
  wanted "$case" || continue
  read -r -a order <<<"$relays"
  for rep in $(seq 1 "$REPS"); do
    for relay in "${order[@]}"; do
      run_one "$rep" "$case" "$relay" "$mode" "$conc" "$size" "$proto" "$backend"
    done
    order=("${order[@]:1}" "${order[0]}") # rotate: each relay goes first in turn
    echo "  $case rep $rep done"
  done
done

python3 "$HERE/anchors_summary.py" "$RAW" | tee "$OUT/summary.md"
