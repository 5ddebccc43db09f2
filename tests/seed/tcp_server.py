# Server.py -- the note's TCP server, verbatim except for where PORT comes from:
# the first argument or $PORT (default 8000), and port 0 is resolved after bind so a
# test can use a free port. Run with `python3 -u` to see lines as they are printed.

import os
import socket
import sys

HOST = '127.0.0.1'
PORT = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get('PORT', '8000'))

server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind((HOST, PORT))
PORT = server.getsockname()[1]
server.listen(5)

print('server start at: %s:%s' % (HOST, PORT))
print('wait for connection...' + '\n')

while True:
    conn, addr = server.accept()
    print('connected by ' + str(addr))

    indata = conn.recv(1024)
    print('receive: ' + indata.decode())

    outdata = 'hello tcp client'
    print('send: ' + outdata + '\n')
    conn.send(outdata.encode())
    conn.close()
