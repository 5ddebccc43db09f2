#!/usr/bin/env python3
"""Memory per idle TCP connection held by one `sockit serve` (issue 6, point 8).

Starts `sockit serve` on a free loopback port, reads its RSS, opens N idle connections
from this (other) process, waits until the server has accepted them all, reads its RSS
again, and prints bytes per connection. Loopback only; bounded in time.

usage: bench/idle-memory.py [N] [SOCKIT]   (default 19000, target/release/sockit)
The per-process open-file limit here is 20,000; raise it (ulimit -n, systemd
LimitNOFILE) to hold more on a real host.
"""
import os
import resource
import socket
import subprocess
import sys
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 19000
SOCKIT = sys.argv[2] if len(sys.argv) > 2 else "target/release/sockit"
DEADLINE = time.monotonic() + 120


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def server_connections(pid):
    """Open TCP sockets of the server process, minus its listener."""
    return len(os.listdir(f"/proc/{pid}/fd"))


soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
server = subprocess.Popen(
    [SOCKIT, "serve", "tcp://127.0.0.1:0", "-q", "--threads", "1", "--backlog", "4096"],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)))
try:
    line = server.stdout.readline()
    port = int(line.strip().rsplit(":", 1)[1])
    base_fds = server_connections(server.pid)
    time.sleep(0.2)
    before = rss_kib(server.pid)
    clients = []
    for _ in range(N):
        s = socket.create_connection(("127.0.0.1", port))
        clients.append(s)
    while server_connections(server.pid) - base_fds < N:
        if time.monotonic() > DEADLINE:
            raise SystemExit(f"server accepted only {server_connections(server.pid) - base_fds} of {N}")
        time.sleep(0.05)
    time.sleep(0.5)
    after = rss_kib(server.pid)
    per = (after - before) * 1024 / N
    print(f"idle connections: {N}")
    print(f"server RSS before: {before} KiB, after: {after} KiB")
    print(f"bytes per idle connection: {per:.0f} ({per / 1024:.2f} KiB)")
    # Still serving while holding them all:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
        probe.sendall(b"hello tcp server")
        print(f"a new client still gets: {probe.recv(1024).decode()}")
finally:
    server.terminate()
    server.wait(timeout=10)
