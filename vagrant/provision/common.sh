#!/usr/bin/env bash
# Every VM: chrony, Docker (no role label: the manager assigns roles), and
# for capture nodes the directories capture and Redis share (for queue
# replicas, Redis's).
#   common.sh ROLE IP MANAGER_IP NET QUEUES
set -euo pipefail
role="$1"
ip="$2"
manager_ip="$3"
net="$4"
queues="$5"
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
apt-get install -y -qq --no-install-recommends chrony docker.io ca-certificates >/dev/null

# Clocks (docs/DEPLOY.md). The manager follows the Debian pool and serves
# time to the private network; the others follow the manager first, so the
# nodes agree with each other closely even when the laptop sleeps.
if [ "$role" = manager ]; then
  cat >/etc/chrony/conf.d/voteswarm.conf <<CHRONY
# voteswarm: serve time to the other VMs.
allow ${net}.0/24
local stratum 10
CHRONY
else
  cat >/etc/chrony/conf.d/voteswarm.conf <<CHRONY
# voteswarm: the manager first, the Debian pool as a fallback.
server ${manager_ip} iburst prefer minpoll 4 maxpoll 6
CHRONY
fi
# Step the clock at once after a laptop's sleep rather than slewing for hours.
echo "makestep 1.0 -1" >>/etc/chrony/conf.d/voteswarm.conf
systemctl restart chrony
chronyc waitsync 12 0.5 || echo "common: clock not yet synced; chrony goes on trying"

# Docker, logs capped. No engine label: a node never says which role it
# has; the manager labels it from the Vagrantfile's address plan.
mkdir -p /etc/docker
cat >/etc/docker/daemon.json <<JSON
{"log-driver": "json-file", "log-opts": {"max-size": "20m", "max-file": "3"}}
JSON
systemctl enable docker
systemctl restart docker
usermod -aG docker vagrant

if [ "$role" = capture ]; then
  # Redis's append-only file and the socket shared by capture and Redis,
  # owned by the image's user (uid 10001; swarm/README.md).
  install -d -o 10001 -g 10001 -m 0700 /var/lib/voteswarm/redis /var/lib/voteswarm/redis-socket
elif [ "$role" = queue_replicas ]; then
  # The replicas' append-only files (issue 17): redisNN-replica binds
  # redis-replicaNN, and Swarm may place any queue's replica on any VM
  # labelled queue_replicas=true, so one directory per queue.
  for q in $(seq 1 "$queues"); do
    install -d -o 10001 -g 10001 -m 0700 "/var/lib/voteswarm/redis-replica$(printf %02d "$q")"
  done
fi
echo "common: $role at $ip ready"
