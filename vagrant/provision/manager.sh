#!/usr/bin/env bash
# The manager VM: form the swarm, leave the join token for the others, run
# a registry, build the image, keep node labels in step with the nodes'
# roles, create the secrets and deploy swarm/stack.yml.
#   manager.sh IP WORKERS
set -euo pipefail
ip="$1"
workers="$2"
repo=/voteswarm
image=127.0.0.1:5000/voteswarm:latest

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  docker swarm init --advertise-addr "$ip"
fi
install -d -m 0700 "$repo/vagrant/.swarm"
docker swarm join-token -q worker >"$repo/vagrant/.swarm/worker-token"

# Labels: each node's engine label voteswarm.role (set by common.sh) becomes
# the node label <role>=true that stack.yml constrains on; the manager is the
# edge. A timer repeats it for nodes that join later.
install -m 0755 /dev/stdin /usr/local/sbin/voteswarm-label <<'LABEL'
#!/usr/bin/env bash
set -euo pipefail
for node in $(docker node ls -q); do
  want="$(docker node inspect -f '{{index .Description.Engine.Labels "voteswarm.role"}}' "$node")"
  [ "$want" = manager ] && want=edge
  [ -n "$want" ] || continue
  # One label per role (stack.yml): <role>=true.
  have="$(docker node inspect -f "{{index .Spec.Labels \"$want\"}}" "$node")"
  if [ "$have" != true ]; then
    docker node update --label-add "$want=true" "$node" >/dev/null
    echo "voteswarm-label: $node $want=true"
  fi
done
LABEL
cat >/etc/systemd/system/voteswarm-label.service <<'UNIT'
[Unit]
Description=voteswarm: node labels from engine labels
After=docker.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/voteswarm-label
UNIT
cat >/etc/systemd/system/voteswarm-label.timer <<'UNIT'
[Unit]
Description=voteswarm: keep node labels in step
[Timer]
OnBootSec=15s
OnUnitActiveSec=15s
[Install]
WantedBy=timers.target
UNIT
systemctl daemon-reload
systemctl enable --now voteswarm-label.timer
/usr/local/sbin/voteswarm-label

# A registry on the swarm, so every node pulls the image it builds here
# (127.0.0.1:5000 through the routing mesh; Docker trusts localhost).
if ! docker service inspect registry >/dev/null 2>&1; then
  docker service create --name registry --publish published=5000,target=5000 \
    --constraint node.role==manager --mount type=volume,source=registry,target=/var/lib/registry \
    registry:2 >/dev/null
fi
for _ in $(seq 60); do
  curl -sf http://127.0.0.1:5000/v2/ >/dev/null && break
  sleep 2
done

# The image, from the repository (a Rust release build: several minutes).
# VOTESWARM_IMAGE in the environment of `vagrant provision` skips the build.
if [ -n "${VOTESWARM_IMAGE:-}" ]; then
  image="$VOTESWARM_IMAGE"
else
  DOCKER_BUILDKIT=1 docker build -t "$image" "$repo"
  docker push "$image"
fi

VOTESWARM_IMAGE="$image" "$repo/swarm/create-services.sh" --secrets-only
# Small VMs: a smaller Redis than production's 2 GiB, and CPU limits within
# the VMs' CPUs (a limit above them is rejected: 1 CPU for capture and
# workers, 2 for the store).
(cd "$repo/swarm" && VOTESWARM_IMAGE="$image" WORKERS="$workers" \
  REDIS_MAXMEMORY=256mb REDIS_MEMORY_LIMIT=512M QUEUE_LIMIT=1000000 \
  CAPTURE_CPUS=1 WORKER_CPUS=1 POSTGRES_CPUS=2 \
  docker stack deploy -c stack.yml voteswarm)
echo "manager: stack deployed; the other VMs join next. Vote at http://localhost:8080/, results at http://localhost:8081/"
