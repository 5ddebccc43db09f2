#!/bin/sh
# The note's TCP reply for ncat -e / socat EXEC: read the 16-byte request, answer.
head -c 16 >/dev/null
printf 'hello tcp client'
