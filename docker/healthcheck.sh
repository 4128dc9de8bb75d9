#!/bin/bash
# The image's HEALTHCHECK: GET /healthz on the port this container's server
# listens on, with bash alone (the final image has no curl or wget; bash is
# part of every Debian system, and its /dev/tcp is enough for one request).
#
# The port comes from the same variables the binaries read:
#   worker:  METRICS_LISTEN (its /healthz, /readyz, /metrics)
#   capture and results: LISTEN
#   none set: 8080 (capture's default, the image's default command).
# The deploy files set LISTEN or METRICS_LISTEN for every role explicitly.
# Exit 0 when the answer is 200, 1 otherwise (Docker's contract).
set -u

addr="${METRICS_LISTEN:-${LISTEN:-0.0.0.0:8080}}"
port="${addr##*:}"

exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3 || exit 1
# Status line: HTTP/1.x 200 OK
read -r -t 2 _ code _ <&3 || exit 1
[ "${code}" = 200 ] || exit 1
