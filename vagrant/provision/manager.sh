#!/usr/bin/env bash
# The manager VM: form the swarm, leave the join token for the others,
# build the image and leave it for them too, keep node labels in step with
# the nodes' roles, and create the secrets and the services
# (swarm/create-services.sh, one queue per capture VM).
#   manager.sh IP WORKERS QUEUE_REPLICAS ACK_REPLICAS ADDRESS=ROLE[=NN]...
set -euo pipefail
ip="$1"
workers="$2"
queue_replicas="$3"
ack_replicas="$4"
shift 4
# The Vagrantfile's address plan, one "address role [queue]" a line (a
# capture VM's queue number NN: redisNN runs on it), for the labelling
# timer.
install -d -m 0755 /etc/voteswarm
printf '%s\n' "$@" | tr '=' ' ' >/etc/voteswarm/roles
queues="$(awk '$2 == "capture"' /etc/voteswarm/roles | wc -l)"
repo=/voteswarm
image=voteswarm:vagrant
# The built image, for the other VMs to `docker load` (join.sh): the synced
# folder already carries the join token, so it is as trusted as the swarm.
image_tar="$repo/vagrant/.swarm/voteswarm-image.tar"

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  docker swarm init --advertise-addr "$ip"
fi
install -d -m 0700 "$repo/vagrant/.swarm"
docker swarm join-token -q worker >"$repo/vagrant/.swarm/worker-token"

# Labels: the node labels <role>=true that stack.yml constrains on come from
# the address plan (/etc/voteswarm/roles) and the address Docker records
# for each node (the source of its connection to the manager), never from
# the node itself: a VM that could say `store` would get the database
# password. The manager is the edge; a node not in the plan loses its
# labels. A timer repeats it for nodes that join later.
install -m 0755 /dev/stdin /usr/local/sbin/voteswarm-label <<'LABEL'
#!/usr/bin/env bash
set -euo pipefail
self="$(docker info --format '{{.Swarm.NodeID}}')"
for node in $(docker node ls -q); do
  if [ "$node" = "$self" ]; then
    want=edge
  else
    addr="$(docker node inspect -f '{{.Status.Addr}}' "$node")"
    want="$(awk -v a="$addr" '$1 == a { print $2 }' /etc/voteswarm/roles)"
    [ "$want" = manager ] && want=""
  fi
  # A capture VM's queue=NN from the plan (swarm/stack.yml: redisNN runs
  # there, redisNN-replica never does); no other node has one.
  queue="$(awk -v a="${addr:-}" -v r="$want" '$1 == a && r == "capture" { print $3 }' /etc/voteswarm/roles)"
  has="$(docker node inspect -f '{{index .Spec.Labels "queue"}}' "$node")"
  if [ -n "$queue" ] && [ "$has" != "$queue" ]; then
    docker node update --label-add "queue=$queue" "$node" >/dev/null
    echo "voteswarm-label: $node queue=$queue"
  elif [ -z "$queue" ] && [ -n "$has" ]; then
    docker node update --label-rm queue "$node" >/dev/null
    echo "voteswarm-label: $node: queue removed (not a capture VM in the address plan)"
  fi
  # One label per role (stack.yml): <role>=true; any other role label goes.
  # queue_replicas and store_standby: issue 17's copies, on VMs of their own.
  for r in edge capture worker store queue_replicas store_standby; do
    has="$(docker node inspect -f "{{index .Spec.Labels \"$r\"}}" "$node")"
    if [ "$r" = "$want" ] && [ "$has" != true ]; then
      docker node update --label-add "$r=true" "$node" >/dev/null
      echo "voteswarm-label: $node $r=true"
    elif [ "$r" != "$want" ] && [ "$has" = true ]; then
      docker node update --label-rm "$r" "$node" >/dev/null
      echo "voteswarm-label: $node: $r removed (not its role in the address plan)"
    fi
  done
done
LABEL
cat >/etc/systemd/system/voteswarm-label.service <<'UNIT'
[Unit]
Description=voteswarm: node labels from the address plan
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

# No registry. One used to run here as a swarm service on :5000, which the
# routing mesh publishes on every address of every VM, with no
# authentication: anyone on the host-only network (or any container) could
# push a "voteswarm" image that every node would then run. The image goes
# to the other VMs through the synced folder instead, and the services are
# created with --no-resolve-image, so no node asks a registry for it.
docker service rm registry >/dev/null 2>&1 || true

# The image, from the repository (a Rust release build: several minutes).
# VOTESWARM_IMAGE in the environment of `vagrant provision` skips the build
# (an image every VM can pull from a registry of the operator's choice).
resolve=(--no-resolve-image)
if [ -n "${VOTESWARM_IMAGE:-}" ]; then
  image="$VOTESWARM_IMAGE"
  resolve=()
  rm -f "$image_tar"
else
  DOCKER_BUILDKIT=1 docker build -t "$image" "$repo"
  docker save -o "$image_tar.new" "$image"
  mv "$image_tar.new" "$image_tar"
fi

# The edge's certificate: a self-signed one for localhost, made once on the
# manager (the key stays in /etc/voteswarm, root's alone, and goes into the
# swarm secret from the file). Its public half is copied to .demo/ in the
# repository for `curl --cacert` or a browser on the laptop.
edge_pem=/etc/voteswarm/edge.pem
if [ ! -s "$edge_pem" ]; then
  install -d -m 0700 /etc/voteswarm
  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout /etc/voteswarm/edge.key -out /etc/voteswarm/edge.crt -days 365 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null &&
    cat /etc/voteswarm/edge.crt /etc/voteswarm/edge.key >"$edge_pem" && rm -f /etc/voteswarm/edge.key)
fi
install -d "$repo/.demo" && cp /etc/voteswarm/edge.crt "$repo/.demo/vagrant-edge.crt"
# The services, once: swarm/create-services.sh with one queue pair
# (redisNN, redisNN-replica) per capture VM, queue=01..N as labelled above;
# stack.yml has a fixed two. Small VMs: a smaller Redis than production's
# 2 GiB, and CPU limits within the VMs' CPUs (a limit above them is
# rejected: 1 CPU for capture and workers, 2 for the store). The laptop
# reaches HTTPS on 8443 (forwarded to 443), so the redirect names that port.
# The poll's QUESTION, OPTIONS, POLL_OPENS, POLL_CLOSES and RESULTS_VISIBLE
# come from the Vagrantfile's environment (the laptop's) and reach the
# services as they are.
if docker service inspect voteswarm_capture >/dev/null 2>&1; then
  echo "manager: services exist, kept (after a rebuild: docker service update --force voteswarm_capture voteswarm_worker voteswarm_results)"
else
  VOTESWARM_IMAGE="$image" EDGE_PEM_FILE="$edge_pem" WORKERS="$workers" \
    REDIS_MAXMEMORY=256mb REDIS_MEMORY_LIMIT=512M QUEUE_LIMIT=1000000 \
    HTTPS_REDIRECT_PORT=:8443 RESULTS_URL=https://localhost:8444/ CAPTURE_CPUS=1 WORKER_CPUS=1 POSTGRES_CPUS=2 \
    ACK_REPLICAS="$ack_replicas" \
    "$repo/swarm/create-services.sh" "${resolve[@]}" --queues "$queues" --queue-replicas "$queue_replicas"
fi
echo "manager: services created ($queues queues); the other VMs join next. Vote at https://localhost:8443/, results at https://localhost:8444/ (curl --cacert .demo/vagrant-edge.crt); http://localhost:8080/ redirects there"
