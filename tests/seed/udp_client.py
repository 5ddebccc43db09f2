# Client.py -- the note's UDP client, verbatim except that PORT comes from the first
# argument or $PORT (default 8000).

import os
import socket
import sys

HOST = '127.0.0.1'
PORT = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get('PORT', '8000'))

server_addr = (HOST, PORT)
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

outdata = 'hello udp server'
print('sendto ' + str(server_addr) + ': ' + outdata)
server.sendto(outdata.encode(), server_addr)

indata, addr = server.recvfrom(1024)
print('recvfrom ' + str(addr) + ': ' + indata.decode() + '\n')
