#!/bin/bash
# The swarm node's init: make /sys and the cgroup controllers writable (the
# container is not --privileged, which fails on a machine whose capability
# bounding set lacks CAP_SYS_RESOURCE; scripts/swarm.sh gives it every other
# capability instead), then run dockerd in the foreground, offline.
set -euo pipefail

mount -o remount,rw /sys
# Each controller is a read-only bind mount of the container's own cgroup:
# remount the bind (its flags), not the cgroup filesystem (that is busy).
for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
  if mountpoint -q "$d"; then
    mount -o remount,rw,bind "$d"
  fi
done

# Nothing may ever be pulled: without this variable `docker service create`
# tries to pull even with --no-resolve-image; the proxy on a closed port is
# the safety net for anything else that would reach out.
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
export HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=
exec dockerd --host unix:///var/run/docker.sock "$@"
