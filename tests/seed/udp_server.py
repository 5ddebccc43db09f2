# Server.py -- the note's UDP server, verbatim except for where PORT comes from:
# the first argument or $PORT (default 8000), and port 0 is resolved after bind so a
# test can use a free port. Run with `python3 -u` to see lines as they are printed.

import os
import socket
import sys

HOST = '127.0.0.1'
PORT = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get('PORT', '8000'))

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((HOST, PORT))
PORT = s.getsockname()[1]

print('server start at: %s:%s' % (HOST, PORT))
print('wait for connection...' + '\n')

while True:
    indata, addr = s.recvfrom(1024)
    print('recvfrom ' + str(addr) + ': ' + indata.decode())

    outdata = 'hello udp client'
    print('sendto ' + str(addr) + ': ' + outdata + '\n')
    s.sendto(outdata.encode(), addr)
