"""The note's server rewritten the way Python's own documentation suggests: asyncio.

usage: python3 asyncio_server.py MODE PORT
  MODE hello   : read one message, reply "hello tcp client", close (the note's exchange)
       echo    : send every read back until the client closes
       discard : read and drop everything
       udp     : reply "hello udp client" to every datagram
Listens on 127.0.0.1 only, with the stock event loop (no uvloop) and a listen backlog of
128, so the kernel queue is not what limits it. Used by bench/compare.sh as a peer.
"""
import asyncio
import sys

HOST = "127.0.0.1"
BACKLOG = 128


async def hello(reader, writer):
    try:
        await reader.read(1024)
        writer.write(b"hello tcp client")
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def discard(reader, writer):
    try:
        while await reader.read(262144):
            pass
    except ConnectionError:
        pass
    finally:
        writer.close()


class HelloUdp(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(b"hello udp client", addr)


async def main(mode, port):
    if mode == "udp":
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(HelloUdp, local_addr=(HOST, port))
        await asyncio.Event().wait()
        return
    handlers = {"hello": hello, "echo": echo, "discard": discard}
    server = await asyncio.start_server(handlers[mode], HOST, port, backlog=BACKLOG)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("hello", "echo", "discard", "udp"):
        sys.exit("usage: asyncio_server.py hello|echo|discard|udp PORT")
    try:
        asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    except KeyboardInterrupt:
        pass
