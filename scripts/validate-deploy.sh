#!/usr/bin/env bash
# Static validation of every deployment path (issue 5), run by `make test`:
# no Docker engine and no cloud account needed, but each check is the real
# tool on the real file.
#
#   scripts/validate-deploy.sh
#
# Needs (scripts/install-deps.sh test installs them): the docker CLI,
# haproxy, redis-server, shellcheck, ruby, cargo, and a Python with PyYAML,
# jsonschema and cfn-lint (target/deploy-venv, else the python3 on PATH).
# Ends with one line "validate-deploy: N passed, N failed"; exits 1 on any
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

venv="$root/target/deploy-venv"
if [ -x "$venv/bin/python" ]; then
  python="$venv/bin/python"
  cfn_lint="$venv/bin/cfn-lint"
else
  python="$(command -v python3)"
  cfn_lint="$(command -v cfn-lint || echo cfn-lint)"
fi

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

# ---------------------------------------------------------------- Swarm
stack() {
  need docker
  # No variables need setting: every one the file reads has a default.
  docker stack config -c swarm/stack.yml >"$work/stack.yml"
  # and with the variables an operator would set:
  VOTESWARM_IMAGE=registry.example/voteswarm:1 WORKERS=7 REDIS_MAXMEMORY=512mb \
    REDIS_MEMORY_LIMIT=1G CONFIG_VERSION=2 docker stack config -c swarm/stack.yml >"$work/stack2.yml"
  grep -q 'replicas: 7' "$work/stack2.yml"
  echo "docker stack config: swarm/stack.yml is valid; services: $(sed -n "/^services:/,/^[a-z]/s/^  \([a-z]*\):$/\1/p" "$work/stack.yml" | tr "\n" " ")"
}
check "docker stack config -c swarm/stack.yml" stack

check "create-services.sh --dry-run: docker accepts every option" \
  "$python" tests/deploy/checks.py service-flags

# ---------------------------------------------------------------- Compose
check "docker-compose.yml against the Compose specification schema" \
  "$python" tests/deploy/checks.py compose-schema docker-compose.yml tests/deploy/compose-spec.json

# ---------------------------------------------------------------- env contract
check "variables and flags given to the binaries are ones they accept" \
  "$python" tests/deploy/checks.py env-contract

# ---------------------------------------------------------------- HAProxy
haproxy_swarm() {
  need haproxy
  # The servers of the swarm form resolve through DNS at run time
  # (init-addr last,libc,none), so the check needs no network.
  haproxy -c -f swarm/haproxy.cfg 2>&1 | grep -v "could not resolve address" || true
  haproxy -c -q -f swarm/haproxy.cfg
}
check "haproxy -c -f swarm/haproxy.cfg" haproxy_swarm

haproxy_local() {
  need haproxy
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
    find swarm vagrant aws docker scripts -type f \( -name '*.sh' -o -path '*/provision/*' \) -print0 2>/dev/null | sort -z
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
