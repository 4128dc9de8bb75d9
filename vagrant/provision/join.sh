#!/usr/bin/env bash
# Every VM but the manager: load the image and join the swarm with the
# token, both left by the manager in the synced folder.
#   join.sh IP MANAGER_IP
set -euo pipefail
ip="$1"
manager_ip="$2"
token_file=/voteswarm/vagrant/.swarm/worker-token
image_tar=/voteswarm/vagrant/.swarm/voteswarm-image.tar

# The image the manager built (no registry: provision/manager.sh says why).
# Loaded on every provision, so `vagrant provision` after a rebuild updates
# the nodes already in the swarm too.
if [ -s "$image_tar" ]; then
  docker load -q -i "$image_tar"
fi

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = active ]; then
  echo "join: already in the swarm"
  exit 0
fi
for _ in $(seq 60); do
  [ -s "$token_file" ] && break
  sleep 5
done
[ -s "$token_file" ] || { echo "join: no token in $token_file; is the manager up?" >&2; exit 1; }
docker swarm join --token "$(cat "$token_file")" --advertise-addr "$ip" "$manager_ip:2377"
echo "join: joined; the manager labels this node within 15 s"
