# bench/lib.sh - helpers shared by bench/compare.sh and bench/relay.sh (sourced, not run).

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
