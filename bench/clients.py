#!/usr/bin/env python3
"""Opens COUNT connections to a server and holds them: idle (connect only) or nonreader
(send requests until the server stops reading, never read a reply). Then, while they are
all held, prints `held N` and (with --rss-of PID) the server's VmRSS as `rss KIB`.

Used by bench/memory.sh. Loopback only; bounded by COUNT and --hold seconds.
"""

import argparse
import resource
import socket
import time


def server_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--kind", choices=["idle", "nonreader"], default="idle")
    p.add_argument("--hold", type=float, default=3, help="seconds to hold them before measuring")
    p.add_argument("--rss-of", type=int, help="server pid whose RSS to report")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = args.addr.rsplit(":", 1)
    port = int(port)

    held, pushed = [], 0
    chunk = b"n" * 1023 + b"\n"
    for _ in range(args.count):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if args.kind == "nonreader":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            s.settimeout(10)
            s.connect((host, port))
        except OSError as e:
            print(f"stopped at {len(held)}: {e}")
            break
        if args.kind == "nonreader":
            s.setblocking(False)
            sent = 0
            stalls = 0
            while sent < 256 * 1024 and stalls < 3:
                try:
                    sent += s.send(chunk)
                except BlockingIOError:
                    stalls += 1
                    time.sleep(0.001)
            pushed += sent
        held.append(s)
    time.sleep(args.hold)
    print(f"held {len(held)}")
    if args.rss_of:
        print(f"rss {server_rss(args.rss_of)}")
    if args.kind == "nonreader":
        print(f"pushed ({pushed / 2**20:.0f} MiB sent by the clients, never read back)")
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
