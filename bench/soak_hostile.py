#!/usr/bin/env python3
"""Hostile-client soak (issue 20): each attack against its own sockit server, on loopback,
with honest clients alongside, while the server's RSS, descriptors and processes are
sampled. Every bound the README's "hostile clients" table promises is checked; the run
exits 1 on any breach, 0 when every bound held.

    python3 bench/soak_hostile.py [--seconds 60] [--sockit target/release/sockit] [--json F]
    bench/soak.sh --hostile [SECONDS]

--seconds is the whole run: each of the six attacks gets a sixth (at least 3 s).

Attacks (issue 20's items) and what must hold:
  chat        100 members that never read, one flooder, one honest writer and reader
              (--chat-memory 8M): peak RSS <= joined + room + slack; the reader gets the
              honest lines and is never cut off; RSS returns near its start after.
  exec        connect-read-close clients of a program that leaves a `setsid` child:
              processes <= 3 per program cap; none left 3 s after the clients stop, none
              3 s after SIGTERM with programs running.
  metrics     50 connections to the /metrics port that send nothing (each opened again
              half a second after the server closes it), a scraper every 100 ms: scrapes
              answered.
  per-source  one source (127.0.0.1) holding 500 connections (--max-conns-per-source
              100), honest exchanges from 127.0.0.2: every honest exchange served;
              descriptors bounded by the cap.
  udp-ports   a UDP relay flooded with one datagram from each of thousands of new source
              ports (127.0.0.1), an honest client at 127.0.0.2: answered; descriptors
              bounded by the sessions cap.
  amplify     1-byte datagrams to a 1,000-byte --reply with --amplification-limit 3:
              reply bytes <= 3x request bytes; an honest 400-byte requester is answered.

Every loop is bounded by its phase's deadline; traffic goes only to loopback.
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SLACK_KIB = 8 * 1024  # allocator slack on top of a promised memory bound
UDP_ANSWERED = 0.8  # share of honest datagrams answered (UDP may drop under a flood)
RSS_CEILING_KIB = 256 * 1024  # no server of this run may ever grow past this


def now():
    return time.monotonic()


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid):
    """Open files of the process: the union over its threads, since a thread of the fast
    lane keeps a descriptor table of its own (unshare(CLONE_FILES))."""
    files = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        table = f"/proc/{pid}/task/{tid}/fd"
        try:
            entries = os.listdir(table)
        except OSError:
            continue
        for fd in entries:
            try:
                files.add(os.readlink(f"{table}/{fd}"))
            except OSError:
                pass
    return len(files)


def processes_with(marker, exclude):
    found = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found += 1
        except OSError:
            pass
    return found


class Server:
    """A sockit process started with its output in files; ready once it printed its line."""

    def __init__(self, sockit, work, name, args):
        self.out_path = os.path.join(work, f"{name}.out")
        self.err_path = os.path.join(work, f"{name}.err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sockit, *args], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.addr = self.wait_for(self.out_path, r"server start at: (\S+)")

    def wait_for(self, path, pattern, seconds=15):
        deadline = now() + seconds
        while now() < deadline:
            with open(path, errors="replace") as f:
                found = re.search(pattern, f.read())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        with open(self.err_path, errors="replace") as f:
            raise SystemExit(f"soak: server did not start: {f.read()[-2000:]}")

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode


class Sampler(threading.Thread):
    """Peaks of a server's RSS and descriptors (and processes with a marker), every 50 ms."""

    def __init__(self, pid, marker=None):
        super().__init__(daemon=True)
        self.pid, self.marker = pid, marker
        self.peak_rss = self.peak_fds = self.peak_procs = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.peak_rss = max(self.peak_rss, rss_kib(self.pid))
            self.peak_fds = max(self.peak_fds, fd_count(self.pid))
            if self.marker:
                self.peak_procs = max(self.peak_procs, processes_with(self.marker, {self.pid}))
            self.done.wait(0.05)

    def stop(self):
        self.done.set()
        self.join()


class Honest:
    """Latencies and failures of honest exchanges."""

    def __init__(self):
        self.latencies, self.failed, self.sample = [], 0, ""

    def ok(self, started):
        self.latencies.append(now() - started)

    def fail(self, why):
        self.failed += 1
        self.sample = self.sample or why

    @property
    def served(self):
        return len(self.latencies)

    def figures(self):
        if not self.latencies:
            return {"served": 0, "failed": self.failed, "p50_ms": None, "p99_ms": None}
        ordered = sorted(self.latencies)
        return {"served": len(ordered), "failed": self.failed,
                "p50_ms": round(statistics.median(ordered) * 1000, 2),
                "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2)}


def tcp(addr, source="127.0.0.1", timeout=10, rcvbuf=None):
    host, port = addr.rsplit(":", 1)
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect((host, int(port)))
    return s


def udp_addr(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def run_threads(targets):
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    return threads


def join_all(threads, deadline):
    for t in threads:
        t.join(max(0.1, deadline + 15 - now()))


# -- the attacks --------------------------------------------------------------------------

def attack_chat(ctx, seconds):
    server = Server(ctx.sockit, ctx.work, "chat",
                    ["serve", "tcp://127.0.0.1:0", "--chat", "--chat-memory", "8M", "-q"])
    start_rss = rss_kib(server.pid)
    base_fds = fd_count(server.pid)
    sleepers = [tcp(server.addr, rcvbuf=4096) for _ in range(100)]
    writer, reader = tcp(server.addr), tcp(server.addr)
    settle = now() + 10
    while fd_count(server.pid) < base_fds + 102 and now() < settle:
        time.sleep(0.02)
    joined = rss_kib(server.pid)
    sampler = Sampler(server.pid)
    sampler.start()
    deadline = now() + seconds
    counts = {"sent": 0, "got": 0, "reader_closed": False, "flood_lines": 0}

    def flood():
        line = b"f" * 99 + b"\n"
        flooder = None
        while now() < deadline:
            try:
                if flooder is None:
                    flooder = tcp(server.addr, timeout=1)
                    threading.Thread(target=drain, args=(flooder,), daemon=True).start()
                flooder.sendall(line * 100)
                counts["flood_lines"] += 100
            except OSError:
                flooder = None

    def drain(s):
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass

    def write():
        while now() < deadline:
            writer.sendall(f"honest-{counts['sent']}\n".encode())
            counts["sent"] += 1
            time.sleep(0.05)

    def read():
        reader.settimeout(1)
        pending = b""
        while now() < deadline + 3 and counts["got"] < counts["sent"] or now() < deadline:
            try:
                chunk = reader.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                counts["reader_closed"] = True
                return
            if not chunk:
                counts["reader_closed"] = True
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            counts["got"] += sum(1 for l in lines if b"honest-" in l)

    join_all(run_threads([flood, write, read]), deadline)
    sampler.stop()
    for s in sleepers + [writer, reader]:
        s.close()
    settle = now() + 10
    end_rss = rss_kib(server.pid)
    while end_rss > joined + SLACK_KIB and now() < settle:
        time.sleep(0.1)
        end_rss = rss_kib(server.pid)
    server.stop()
    breaches = []
    room = 8 * 1024
    if sampler.peak_rss > joined + room + SLACK_KIB:
        breaches.append(f"peak RSS {sampler.peak_rss} KiB > {joined} + {room} + {SLACK_KIB}")
    if counts["reader_closed"]:
        breaches.append("the honest reader was cut off")
    if counts["got"] < counts["sent"] * 0.95:
        breaches.append(f"the honest reader got {counts['got']} of {counts['sent']} lines")
    if end_rss > joined + SLACK_KIB:
        breaches.append(f"RSS {end_rss} KiB after everyone left > {joined} + {SLACK_KIB}")
    return {"rss_start_kib": start_rss, "rss_joined_kib": joined, "rss_peak_kib": sampler.peak_rss,
            "rss_end_kib": end_rss, "fds_peak": sampler.peak_fds, "flood_lines": counts["flood_lines"],
            "honest": {"sent": counts["sent"], "got": counts["got"]}}, breaches, sampler


def attack_exec(ctx, seconds):
    marker = f"000{os.getpid()}7"
    program = f"setsid sleep 30.{marker} & echo hi; sleep 31.{marker}"
    server = Server(ctx.sockit, ctx.work, "exec",
                    ["serve", "tcp://127.0.0.1:0", "--sh-exec", program, "-q"])
    sampler = Sampler(server.pid, marker)
    sampler.start()
    deadline = now() + seconds
    honest = Honest()

    def client():
        while now() < deadline:
            started = now()
            try:
                with tcp(server.addr) as s:
                    hi = s.recv(3)
                if hi == b"hi\n":
                    honest.ok(started)
                else:
                    honest.fail(f"got {hi!r}")
            except OSError as e:
                honest.fail(repr(e))

    join_all(run_threads([client] * 8), deadline)
    left_after_clients = wait_processes_gone(marker, server.pid, 3)
    # Programs running when the server is told to stop must go with it.
    held = []
    for _ in range(5):
        s = tcp(server.addr)
        s.recv(3)
        held.append(s)
    server.stop()
    left_after_shutdown = wait_processes_gone(marker, server.pid, 3)
    for s in held:
        s.close()
    sampler.stop()
    breaches = []
    cap = 100  # the default cap on programs at once for TCP
    if sampler.peak_procs > 3 * cap:
        breaches.append(f"{sampler.peak_procs} program processes at once > 3 x {cap}")
    if left_after_clients:
        breaches.append(f"{left_after_clients} program processes left 3 s after the clients went")
    if left_after_shutdown:
        breaches.append(f"{left_after_shutdown} program processes left 3 s after SIGTERM")
    if honest.served == 0:
        breaches.append("no client got its program's output")
    return {"rss_peak_kib": sampler.peak_rss, "fds_peak": sampler.peak_fds,
            "procs_peak": sampler.peak_procs, "procs_left": left_after_clients + left_after_shutdown,
            "honest": honest.figures()}, breaches, sampler


def wait_processes_gone(marker, server_pid, seconds):
    deadline = now() + seconds
    left = processes_with(marker, {server_pid})
    while left and now() < deadline:
        time.sleep(0.05)
        left = processes_with(marker, {server_pid})
    return left


def attack_metrics(ctx, seconds):
    server = Server(ctx.sockit, ctx.work, "metrics",
                    ["serve", "tcp://127.0.0.1:0", "--metrics", "127.0.0.1:0", "-q"])
    metrics = server.wait_for(server.err_path, r"metrics: http://(\S+)/metrics")
    sampler = Sampler(server.pid)
    sampler.start()
    deadline = now() + seconds
    honest = Honest()

    def idle():
        # Held until the server closes it, then opened again half a second later.
        while now() < deadline:
            try:
                with tcp(metrics, timeout=max(0.1, deadline - now())) as s:
                    s.recv(1)
            except OSError:
                pass
            time.sleep(0.5)

    def scrape():
        while now() < deadline:
            started = now()
            try:
                with tcp(metrics, timeout=2) as s:
                    s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                    got = b""
                    while chunk := s.recv(65536):
                        got += chunk
                if b"sockit_connections_accepted_total" in got:
                    honest.ok(started)
                else:
                    honest.fail(f"answer {got[:60]!r}")
            except OSError as e:
                honest.fail(repr(e))
            time.sleep(0.1)

    join_all(run_threads([idle] * 50 + [scrape]), deadline)
    sampler.stop()
    server.stop()
    breaches = []
    total = honest.served + honest.failed
    if total == 0 or honest.served < total * 0.95:
        breaches.append(f"{honest.served} of {total} scrapes answered ({honest.sample})")
    return {"rss_peak_kib": sampler.peak_rss, "fds_peak": sampler.peak_fds,
            "honest": honest.figures()}, breaches, sampler


def attack_per_source(ctx, seconds):
    cap = 100
    server = Server(ctx.sockit, ctx.work, "per-source",
                    ["serve", "tcp://127.0.0.1:0", "--reply", "pong", "--max-conns-per-source",
                     str(cap), "-q"])
    sampler = Sampler(server.pid)
    sampler.start()
    deadline = now() + seconds
    honest = Honest()
    flood = {}

    def flooding():
        held = []
        while now() < deadline:
            held = [s for s in held if alive(s)]
            while len(held) < 500 and now() < deadline:
                try:
                    held.append(tcp(server.addr, timeout=1))
                except OSError as e:
                    flood["error"] = repr(e)
                    break
            flood["held_peak"] = max(flood.get("held_peak", 0), len(held))
            time.sleep(0.2)
        flood["held_peak"] = max(flood.get("held_peak", 0), len(held))
        for s in held:
            s.close()

    def exchange():
        while now() < deadline:
            started = now()
            try:
                with tcp(server.addr, source="127.0.0.2", timeout=5) as s:
                    s.sendall(b"ping")
                    got = s.recv(4)
                if got == b"pong":
                    honest.ok(started)
                else:
                    honest.fail(f"got {got!r}")
            except OSError as e:
                honest.fail(repr(e))

    join_all(run_threads([flooding, exchange, exchange]), deadline)
    sampler.stop()
    server.stop()
    breaches = []
    if honest.failed or honest.served == 0:
        breaches.append(f"honest exchanges: {honest.served} served, {honest.failed} failed ({honest.sample})")
    fds_bound = cap + 2 + 64
    if sampler.peak_fds > fds_bound:
        breaches.append(f"{sampler.peak_fds} descriptors > {fds_bound}")
    return {"rss_peak_kib": sampler.peak_rss, "fds_peak": sampler.peak_fds, "flood": flood,
            "honest": honest.figures()}, breaches, sampler


def alive(s):
    """Whether a held connection is still open (the server closes refused ones)."""
    try:
        s.setblocking(False)
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def attack_udp_ports(ctx, seconds):
    echo = Server(ctx.sockit, ctx.work, "udp-echo", ["serve", "udp://127.0.0.1:0", "--echo", "-q"])
    sessions, per_source = 1024, 256
    relay = Server(ctx.sockit, ctx.work, "udp-relay",
                   ["relay", "udp://127.0.0.1:0", f"udp://{echo.addr}", "--max-sessions",
                    str(sessions), "--max-conns-per-source", str(per_source), "-q"])
    sampler = Sampler(relay.pid)
    sampler.start()
    deadline = now() + seconds
    honest = Honest()
    flood = {"ports": 0}
    target = udp_addr(relay.addr)

    def spray():
        # About 1,000 new source ports a second: the session table (1,024) is full within
        # the phase's first seconds, at a rate even a debug build keeps up with.
        while now() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.sendto(b"x", target)
            flood["ports"] += 1
            if flood["ports"] % 10 == 0:
                time.sleep(0.01)

    def ask():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
            s.settimeout(1)
            i = 0
            while now() < deadline:
                i += 1
                started = now()
                s.sendto(f"honest-{i}".encode(), target)
                try:
                    while (got := s.recv(2048)) != f"honest-{i}".encode():
                        pass
                    honest.ok(started)
                except OSError as e:
                    honest.fail(repr(e))
                time.sleep(0.05)

    join_all(run_threads([spray, ask]), deadline)
    sampler.stop()
    relay.stop()
    echo.stop()
    breaches = []
    total = honest.served + honest.failed
    if total == 0 or honest.served < total * UDP_ANSWERED:
        breaches.append(f"honest datagrams: {honest.served} of {total} answered")
    fds_bound = sessions + 64
    if sampler.peak_fds > fds_bound:
        breaches.append(f"{sampler.peak_fds} descriptors > {fds_bound}")
    return {"rss_peak_kib": sampler.peak_rss, "fds_peak": sampler.peak_fds,
            "flood_ports": flood["ports"], "honest": honest.figures()}, breaches, sampler


def attack_amplify(ctx, seconds):
    factor, reply = 3, 1000
    server = Server(ctx.sockit, ctx.work, "amplify",
                    ["serve", "udp://127.0.0.1:0", "--reply", "r" * reply,
                     "--amplification-limit", str(factor), "-q"])
    sampler = Sampler(server.pid)
    sampler.start()
    deadline = now() + seconds
    honest = Honest()
    counts = {"sent": 0, "received": 0}
    target = udp_addr(server.addr)
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    attacker.bind(("127.0.0.1", 0))

    def send():
        while now() < deadline:
            attacker.sendto(b"x", target)
            counts["sent"] += 1
            if counts["sent"] % 64 == 0:
                time.sleep(0.001)

    def count():
        attacker.settimeout(0.5)
        while now() < deadline + 1:
            try:
                counts["received"] += len(attacker.recv(4096))
            except socket.timeout:
                continue
            except OSError:
                return

    def ask():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.2", 0))
            s.settimeout(1)
            while now() < deadline:
                started = now()
                s.sendto(b"q" * 400, target)
                try:
                    if len(s.recv(4096)) == reply:
                        honest.ok(started)
                    else:
                        honest.fail("short reply")
                except OSError as e:
                    honest.fail(repr(e))
                time.sleep(0.05)

    join_all(run_threads([send, count, ask]), deadline)
    attacker.close()
    sampler.stop()
    server.stop()
    breaches = []
    if counts["received"] > factor * counts["sent"]:
        breaches.append(f"{counts['received']} reply bytes for {counts['sent']} request bytes"
                        f" > {factor}x")
    total = honest.served + honest.failed
    if total == 0 or honest.served < total * UDP_ANSWERED:
        breaches.append(f"honest requests: {honest.served} of {total} answered")
    return {"rss_peak_kib": sampler.peak_rss, "fds_peak": sampler.peak_fds,
            "request_bytes": counts["sent"], "reply_bytes": counts["received"],
            "honest": honest.figures()}, breaches, sampler


ATTACKS = [("chat", attack_chat), ("exec", attack_exec), ("metrics", attack_metrics),
           ("per-source", attack_per_source), ("udp-ports", attack_udp_ports),
           ("amplify", attack_amplify)]


class Context:
    def __init__(self, sockit, work):
        self.sockit, self.work = sockit, work


def default_sockit():
    for build in ["release", "debug"]:
        path = os.path.join("target", build, "sockit")
        if os.access(path, os.X_OK):
            return path
    raise SystemExit("soak: no sockit binary: build one or pass --sockit")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--sockit", default=os.environ.get("SOCKIT") or None)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--only", action="append", help="run only this attack (repeatable)")
    args = parser.parse_args()
    sockit = args.sockit or default_sockit()
    attacks = [a for a in ATTACKS if not args.only or a[0] in args.only]
    phase = max(3.0, args.seconds / max(1, len(attacks)))
    print(f"soak: {len(attacks)} attacks, {phase:.0f} s each, against {sockit}")
    report, breached = {}, False
    with tempfile.TemporaryDirectory() as work:
        ctx = Context(sockit, work)
        for name, attack in attacks:
            figures, breaches, sampler = attack(ctx, phase)
            if sampler.peak_rss > RSS_CEILING_KIB:
                breaches.append(f"peak RSS {sampler.peak_rss} KiB > {RSS_CEILING_KIB}")
            figures["breaches"] = breaches
            report[name] = figures
            breached |= bool(breaches)
            verdict = "held" if not breaches else "BREACH: " + "; ".join(breaches)
            shown = {k: v for k, v in figures.items() if k != "breaches"}
            print(f"  {name:<11} {verdict}\n              {json.dumps(shown)}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print("soak: every bound held" if not breached else "soak: a bound was breached")
    sys.exit(1 if breached else 0)


if __name__ == "__main__":
    main()
