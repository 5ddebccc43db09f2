# Client.py -- the note's TCP client, verbatim except that PORT comes from the first
# argument or $PORT (default 8000).

import os
import socket
import sys

HOST = '127.0.0.1'
PORT = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get('PORT', '8000'))

client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
client.connect((HOST, PORT))

outdata = 'hello tcp server'
print('send: ' + outdata)
client.send(outdata.encode())

indata = client.recv(1024)
print('receive: ' + indata.decode() + '\n')

client.close()
