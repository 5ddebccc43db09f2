#!/bin/sh
# The note's UDP reply for ncat -u -e / socat EXEC: read the 16-byte datagram, answer.
head -c 16 >/dev/null
printf 'hello udp client'
