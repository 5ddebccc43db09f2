#!/usr/bin/env python3
"""Soak clients for sockit: good and bad clients at once, for a set time, on loopback.

Run by bench/soak.sh, which starts the servers; this file only drives clients and
prints what happened to each kind. Every loop is bounded by the deadline; traffic goes
only to the loopback addresses given.

Kinds of client (per TCP connection unless noted):
  good       line echo, numbered requests, every reply checked; reconnects every 100
  silent     connects and says nothing (the idle timeout must close it)
  slow       trickles one byte a second of a line that never ends (message timeout)
  resetting  sends half a line, then resets the connection
  nonreader  sends requests and never reads the replies (the server must stop reading)
  burst      every few seconds, hundreds of connections at once, one exchange each
  udp good   one datagram at a time, waits for the echo (loss allowed: UDP under a flood)
  udp flood  datagrams as fast as one thread sends them

"lost" counts replies a good client did not get on a connection the server had already
answered on (so not a refusal at the door): it must be zero.
"""

import argparse
import asyncio
import json
import resource
import socket
import struct
import threading
import time


class Tally:
    """Counts for one kind of client."""

    def __init__(self):
        self.connections = 0
        self.requests = 0
        self.answered = 0
        self.refused = 0  # closed by the server before any reply (--max-conns refuse)
        self.timed_out = 0  # closed by the server while we stalled (what we wanted)
        self.reset = 0  # resets we caused
        self.lost = 0
        self.errors = 0  # anything unexpected, with a sample kept
        self.sample_error = ""

    def error(self, what):
        self.errors += 1
        if not self.sample_error:
            self.sample_error = what


async def good_client(host, port, ident, deadline, t: Tally):
    seq = 0
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, asyncio.TimeoutError) as e:
            t.error(f"connect: {e!r}")
            await asyncio.sleep(0.1)
            continue
        t.connections += 1
        answered_here = 0
        try:
            for _ in range(100):
                if time.monotonic() >= deadline:
                    break
                seq += 1
                line = f"good-{ident}-{seq}\n".encode()
                writer.write(line)
                t.requests += 1
                try:
                    await writer.drain()
                    reply = await asyncio.wait_for(reader.readline(), 10)
                except (ConnectionResetError, BrokenPipeError):
                    reply = b""
                if reply == line:
                    t.answered += 1
                    answered_here += 1
                elif reply == b"" and answered_here == 0:
                    t.refused += 1  # turned away at the door
                    break
                else:
                    t.lost += 1
                    t.error(f"expected {line!r}, got {reply!r}")
                    break
        except asyncio.TimeoutError:
            t.lost += 1
            t.error("no reply within 10 s")
        finally:
            writer.close()
        await asyncio.sleep(0)


async def wait_closed_by_server(reader, limit):
    """Reads until the server closes; True if it did within `limit` seconds."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), limit)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except asyncio.TimeoutError:
        return False


async def silent_client(host, port, deadline, t: Tally, limit):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            t.error(f"connect: {e!r}")
            await asyncio.sleep(0.5)
            continue
        t.connections += 1
        remaining = max(0.1, deadline - time.monotonic())
        if await wait_closed_by_server(reader, min(limit, remaining + limit)):
            t.timed_out += 1
        elif time.monotonic() < deadline:
            t.error("a silent client was not closed by the idle timeout")
        writer.close()


async def slow_client(host, port, deadline, t: Tally, limit):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            t.error(f"connect: {e!r}")
            await asyncio.sleep(0.5)
            continue
        t.connections += 1
        closed = False
        started = time.monotonic()
        try:
            while time.monotonic() - started < limit:
                writer.write(b"x")  # a line that never ends, one byte a second
                await writer.drain()
                if await wait_closed_by_server(reader, 1.0):
                    closed = True
                    break
        except (ConnectionResetError, BrokenPipeError):
            closed = True
        if closed:
            t.timed_out += 1
        elif time.monotonic() < deadline:
            t.error("a slow client was not closed by the message timeout")
        writer.close()


async def resetting_client(host, port, deadline, t: Tally):
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            t.error(f"connect: {e!r}")
            await asyncio.sleep(0.1)
            continue
        t.connections += 1
        writer.write(b"half a li")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        t.reset += 1
        await asyncio.sleep(0.05)


def nonreader_thread(host, port, deadline, t: Tally, lock, limit):
    """Blocking sockets in a thread: asyncio would buffer our writes for us."""
    chunk = b"r" * 1023 + b"\n"
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=10)
        except OSError as e:
            with lock:
                t.error(f"connect: {e!r}")
            time.sleep(0.5)
            continue
        with lock:
            t.connections += 1
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(limit)
        closed = False
        try:
            while time.monotonic() < deadline + limit:
                s.sendall(chunk)  # blocks once the server stops reading us
        except (socket.timeout, TimeoutError):
            pass  # our send blocked for `limit`: the server stopped reading, as it must
        except (ConnectionResetError, BrokenPipeError):
            closed = True
        if not closed:
            # The server gives up on a reply nobody reads within its idle timeout.
            s.settimeout(limit)
            try:
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
                closed = True
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            except (socket.timeout, TimeoutError):
                pass
        with lock:
            if closed:
                t.timed_out += 1
        s.close()


async def burst(host, port, deadline, t: Tally, size, every):
    async def one(i):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, asyncio.TimeoutError) as e:
            t.error(f"connect: {e!r}")
            return
        t.connections += 1
        line = f"burst-{i}\n".encode()
        try:
            writer.write(line)
            t.requests += 1
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), 10)
            if reply == line:
                t.answered += 1
            elif reply == b"":
                t.refused += 1
            else:
                t.lost += 1
                t.error(f"burst reply {reply!r}")
        except (ConnectionResetError, BrokenPipeError):
            t.refused += 1
        except asyncio.TimeoutError:
            t.lost += 1
            t.error("burst: no reply within 10 s")
        finally:
            writer.close()

    while time.monotonic() + every < deadline:
        await asyncio.gather(*(one(i) for i in range(size)))
        await asyncio.sleep(every)


def udp_flood_thread(host, port, deadline, counter):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    payload = b"f" * 512
    n = 0
    while time.monotonic() < deadline:
        try:
            s.sendto(payload, (host, port))
            n += 1
        except BlockingIOError:
            time.sleep(0.0005)
        except OSError:
            pass
    counter["flood"] = n


def udp_good_thread(host, port, deadline, t: Tally, lock):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    seq = 0
    while time.monotonic() < deadline:
        seq += 1
        msg = f"udp-{seq}".encode()
        s.sendto(msg, (host, port))
        try:
            while True:
                data, _ = s.recvfrom(65536)
                if data == msg:
                    with lock:
                        t.requests += 1
                        t.answered += 1
                    break
        except (socket.timeout, TimeoutError):
            with lock:
                t.requests += 1  # dropped under the flood: UDP may lose, TCP may not


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tcp", required=True, help="HOST:PORT of the line-echo TCP server")
    p.add_argument("--udp", required=True, help="HOST:PORT of the UDP echo server")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--idle", type=float, default=5, help="the server's --idle-timeout")
    p.add_argument("--good", type=int, default=50)
    p.add_argument("--silent", type=int, default=300)
    p.add_argument("--slow", type=int, default=50)
    p.add_argument("--resetting", type=int, default=20)
    p.add_argument("--nonreaders", type=int, default=100)
    p.add_argument("--burst", type=int, default=500)
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    th, tp = args.tcp.rsplit(":", 1)
    uh, up = args.udp.rsplit(":", 1)
    tp, up = int(tp), int(up)
    deadline = time.monotonic() + args.seconds
    limit = args.idle + 10  # how long a stalled client waits for the server to close it

    kinds = {k: Tally() for k in
             ["good", "silent", "slow", "resetting", "nonreader", "burst", "udp good"]}
    lock = threading.Lock()
    udp_counts = {}
    threads = [threading.Thread(target=nonreader_thread,
                                args=(th, tp, deadline, kinds["nonreader"], lock, limit))
               for _ in range(args.nonreaders)]
    threads.append(threading.Thread(target=udp_flood_thread, args=(uh, up, deadline, udp_counts)))
    threads.append(threading.Thread(target=udp_good_thread,
                                    args=(uh, up, deadline, kinds["udp good"], lock)))
    for t in threads:
        t.start()
    tasks = [good_client(th, tp, i, deadline, kinds["good"]) for i in range(args.good)]
    tasks += [silent_client(th, tp, deadline, kinds["silent"], limit) for _ in range(args.silent)]
    tasks += [slow_client(th, tp, deadline, kinds["slow"], limit) for _ in range(args.slow)]
    tasks += [resetting_client(th, tp, deadline, kinds["resetting"]) for _ in range(args.resetting)]
    tasks.append(burst(th, tp, deadline, kinds["burst"], args.burst, 5))
    await asyncio.gather(*tasks)
    for t in threads:
        t.join(timeout=limit + 5)

    report = {k: vars(v) for k, v in kinds.items()}
    report["udp flood"] = {"datagrams": udp_counts.get("flood", 0)}
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
