#!/usr/bin/env python3
"""Static checks of the deploy files, run by scripts/validate-deploy.sh.

Each subcommand prints what it checked and exits non-zero on a failure:

  compose-schema FILE SCHEMA   FILE against the Compose specification's schema
  env-contract                 every variable and flag that compose, the stack,
                               create-services.sh, aws/ and vagrant/ give our
                               binaries is one the binary accepts (its --help)
  dockerfile                   COPY sources exist; the cargo line is the
                               release build; the binaries copied are exactly
                               the crate's binaries
  service-flags                every flag create-services.sh passes to docker
                               is one `docker ... --help` lists
  userdata TEMPLATE OUTDIR     extracts the shell scripts of a CloudFormation
                               template (cfn-init files, UserData) to OUTDIR
                               for shellcheck, ${Param} replaced by stand-ins
  aws-roles TEMPLATE           no node assigns its own role: no engine label,
                               the manager labels from the instance's
                               auto-scaling group; the public ports and the
                               load balancer's targets are the edge group's,
                               not the manager's; no security group lets
                               everything out to 0.0.0.0/0
  vagrant-registry             the Vagrant registry is not published on every
                               address (no routing-mesh publish, no 0.0.0.0),
                               and no VM chooses its own role label
  k8s-policy OVERLAY...        the rendered overlays (kubectl kustomize):
                               probes, requests and limits, non-root,
                               read-only root, no privilege escalation, no
                               capabilities, pinned images, no literal
                               secrets, grace periods, PDBs, HPAs (capture's
                               never scales down), the NetworkPolicies
  replicas COMPOSE             issue 17: every capture node's Redis has a
                               replica (REDIS_REPLICAOF naming it) that the
                               workers and results list, capture waits for
                               it (ACK_REPLICAS >= 1), a standby streams
                               from the PostgreSQL primary, and every
                               DATABASE_URL names both with
                               target_session_attrs=read-write
  replicas-swarm stack|services FILE
                               the same in the Swarm deployment (FILE: the
                               `docker stack config` of stack.yml, or
                               create-services.sh --dry-run), and each copy
                               placed off its original's node
  replicas-aws TEMPLATE        issue 17 in CloudFormation: the queue
                               replicas and the standby on groups of their
                               own, labelled by the manager (queue_replicas,
                               store_standby; capture nodes queue=NN, one
                               per queue create-services.sh makes), the standby in
                               another zone, AckReplicas/QueueReplicas given
                               to the stack, no port opened for replication
  replicas-vagrant [DIR]        issue 17 in vagrant/ (or DIR): the Vagrantfile
                               run with a stand-in Vagrant gives a
                               queue_replicas VM per capture VM, a
                               store_standby VM, queue=NN per capture VM;
                               the manager labels them and makes one queue
                               per capture VM, given ACK_REPLICAS
  replicas-k8s OVERLAY...      issue 17 in the rendered overlays: a Redis
                               replica per capture pod the autoscaler may
                               make, following it, off its node; capture's
                               ACK_REPLICAS >= 1; REDIS_DNS resolving to
                               queues and replicas; postgres-standby off the
                               primary's node, in every DATABASE_URL
  k8s-configs OVERLAY...       the Redis, HAProxy and PostgreSQL files in the
                               rendered ConfigMaps are the shipped ones, byte
                               for byte, and k8s/ holds no copy of them

env-contract covers k8s/overlays/* too, and the edge's HAProxy variables
against what swarm/haproxy.cfg reads. kubectl: $KUBECTL, else
target/deploy-venv/bin/kubectl (scripts/install-deps.sh pins it).

Binaries not written yet (known to be on the way) are skipped with a note,
so the checks tighten by themselves as they land.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The image's binaries. One that the crate does not have yet is a note, not a
# failure, while it is one of these; any other difference is a failure.
EXPECTED_BINS = ["capture", "worker", "results", "loadgen", "cluster"]
# Variables every binary reads besides its flags (env_logger, std).
ALWAYS_ACCEPTED = {"RUST_LOG", "RUST_BACKTRACE", "RUST_LOG_STYLE"}
# The image name the deploy files use for our image.
OUR_IMAGES = ("voteswarm:", "${VOTESWARM_IMAGE")


def load_yaml(path):
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def fail(msg):
    print(f"  FAIL {msg}")
    return 1


# ---------------------------------------------------------------- compose
def compose_schema(path, schema_path):
    import jsonschema

    with open(schema_path) as f:
        schema = json.load(f)
    doc = load_yaml(path)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    for e in errors:
        where = "/".join(str(p) for p in e.absolute_path) or "(top)"
        print(f"  FAIL {path}: {where}: {e.message[:300]}")
    if not errors:
        print(f"  ok   {path} is valid against {os.path.relpath(schema_path, ROOT)} ({schema.get('$schema', '?')})")
    return 1 if errors else 0


# ---------------------------------------------------------------- replicas
def replicas_compose(path):
    """Issue 17's invariants in a compose file: a replica per queue, listed
    by the tiers that drain or count the queues; capture waiting for it; a
    standby of the store, and the store's clients following a promotion."""
    doc = load_yaml(path)
    services = doc.get("services") or {}
    bad = 0

    def env(svc):
        e = services[svc].get("environment") or {}
        if isinstance(e, list):
            e = dict(x.split("=", 1) for x in e)
        return {k: str(v) for k, v in e.items()}

    replica_of = {}
    for name, svc in services.items():
        follows = env(name).get("REDIS_REPLICAOF")
        if follows:
            replica_of[name] = follows.replace(":", " ").split()[0]
    primaries = set()
    for name in services:
        e = env(name)
        if "REDIS_URL" in e and "capture" in str(services[name].get("command")):
            primary = re.sub(r"^redis://([^:/]+).*", r"\1", e["REDIS_URL"])
            primaries.add(primary)
            mine = [r for r, p in replica_of.items() if p == primary]
            if not mine:
                bad += fail(f"{path}: {name}'s Redis {primary} has no replica (REDIS_REPLICAOF={primary} 6379)")
            if int(e.get("ACK_REPLICAS", "0")) < 1:
                bad += fail(f"{path}: {name} does not wait for its replica (ACK_REPLICAS is not >= 1)")
    for r, p in replica_of.items():
        if p not in primaries:
            bad += fail(f"{path}: {r} follows {p}, which no capture node writes to")
    standbys = [n for n, svc in services.items() if "PRIMARY_HOST" in env(n)]
    if not standbys:
        bad += fail(f"{path}: no PostgreSQL standby (a service with PRIMARY_HOST)")
    bad += clients_follow(path, {n: env(n) for n in services}, set(replica_of), standbys)
    if not bad:
        print(f"  ok   {path}: {len(primaries)} queues, each with a replica the workers list ({', '.join(sorted(replica_of))}); "
              f"ACK_REPLICAS >= 1; standby {', '.join(standbys)} in every DATABASE_URL")
    return bad


def clients_follow(path, envs, queues, standbys):
    """Every REDIS_URLS lists each of `queues`, every DATABASE_URL each of
    `standbys` with target_session_attrs=read-write: after a promotion the
    workers and results find the copy by themselves."""
    bad = 0
    for name, e in envs.items():
        if "REDIS_URLS" in e:
            listed = {re.sub(r"^redis://([^:/]+).*", r"\1", u) for u in e["REDIS_URLS"].split(",")}
            for r in sorted(queues - listed):
                what = "the replica" if r.endswith("-replica") else "the queue"
                bad += fail(f"{path}: {name}'s REDIS_URLS leaves out {what} {r}: a promoted one would not be drained")
        url = e.get("DATABASE_URL")
        if url:
            hosts = re.sub(r"^postgres(ql)?://([^@/]*@)?([^/?]*).*", r"\3", url).split(",")
            names = {h.split(":")[0] for h in hosts}
            for sb in standbys:
                if sb not in names or "target_session_attrs=read-write" not in url:
                    bad += fail(f"{path}: {name}'s DATABASE_URL does not list {sb} with target_session_attrs=read-write")
    return bad


def swarm_from_stack(path):
    """{name: (image, command, env, constraints, secrets)} of a stack as
    `docker stack config` renders it (file, or - for standard input)."""
    doc = load_yaml(path) if path != "-" else __import__("yaml").safe_load(sys.stdin)
    model = {}
    for name, svc in (doc.get("services") or {}).items():
        placement = (svc.get("deploy") or {}).get("placement") or {}
        model[name] = (
            str(svc.get("image", "")),
            [str(c) for c in svc.get("command") or []],
            {k: str(v) for k, v in (svc.get("environment") or {}).items()},
            [c.replace(" ", "") for c in placement.get("constraints") or []],
            {x["source"] if isinstance(x, dict) else x for x in svc.get("secrets") or []},
        )
    return model


def swarm_from_services(path):
    """The same from create-services.sh --dry-run output, each service named
    by its network alias (the name its clients use)."""
    opts = docker_options(("service", "create"))
    model = {}
    for line in open(path):
        if not line.startswith("docker service create"):
            continue
        argv = shlex.split(line)
        i, env, constraints, secrets, alias = 3, {}, [], set(), None
        while i < len(argv) and argv[i].startswith("-"):
            flag, _, inline = argv[i].partition("=")
            takes = opts.get(flag, False) and not inline
            value = argv[i + 1] if takes else inline
            if flag in ("--env", "-e"):
                k, _, v = value.partition("=")
                env[k] = v
            elif flag == "--constraint":
                constraints.append(value.replace(" ", ""))
            elif flag == "--secret":
                secrets.add(dict(kv.split("=", 1) for kv in value.split(","))["source"].removeprefix("voteswarm_"))
            elif flag == "--network":
                alias = dict(kv.split("=", 1) for kv in value.split(",")).get("alias", alias)
            elif flag == "--name" and alias is None:
                alias = value.removeprefix("voteswarm_")
            i += 2 if takes else 1
        model[alias] = (argv[i] if i < len(argv) else "", argv[i + 1:], env, constraints, secrets)
    return model


def replicas_swarm(kind, path):
    """Issue 17's invariants in the Swarm deployment (`stack`: the rendered
    stack.yml; `services`: create-services.sh --dry-run): each queue
    (a Redis without REDIS_REPLICAOF) has a replica, placed by a constraint
    off its primary's node (`K==V` there, `K!=V` here), listed with it in
    every REDIS_URLS; capture waits for it; the standby is placed off the
    store's node the same way, has the replication password, and every
    DATABASE_URL names it."""
    model = swarm_from_stack(path) if kind == "stack" else swarm_from_services(path)
    bad = 0

    def off_node(copy, original):
        pins = [c for c in model[original][3] if "==" in c]
        return any(c.replace("==", "!=") in model[copy][3] for c in pins)

    redis = {n for n, m in model.items() if m[0].startswith("redis")}
    replica_of = {n: model[n][2]["REDIS_REPLICAOF"].replace(":", " ").split()[0]
                  for n in redis if model[n][2].get("REDIS_REPLICAOF")}
    primaries = redis - set(replica_of)
    if not primaries:
        bad += fail(f"{path}: no queue (a Redis service without REDIS_REPLICAOF)")
    for p in sorted(primaries):
        mine = [r for r, of in replica_of.items() if of == p]
        if not mine:
            bad += fail(f"{path}: {p} has no replica (a Redis service with REDIS_REPLICAOF={p} 6379)")
        for r in mine:
            if not off_node(r, p):
                bad += fail(f"{path}: {r} may run on {p}'s node: none of {p}'s constraints {model[p][3]} is negated in {model[r][3]}")
    for r, p in replica_of.items():
        if p not in primaries:
            bad += fail(f"{path}: {r} follows {p}, which is no queue")
    for n, m in model.items():
        if m[1][:1] == ["capture"] and int(m[2].get("ACK_REPLICAS", "0") or "0") < 1:
            bad += fail(f"{path}: {n} does not wait for its queue's replica (ACK_REPLICAS is not >= 1)")
    standbys = [n for n, m in model.items() if "PRIMARY_HOST" in m[2]]
    if not standbys:
        bad += fail(f"{path}: no PostgreSQL standby (a service with PRIMARY_HOST)")
    for sb in standbys:
        primary = model[sb][2]["PRIMARY_HOST"]
        if primary not in model:
            bad += fail(f"{path}: {sb} streams from {primary}, which is no service")
            continue
        if not off_node(sb, primary):
            bad += fail(f"{path}: {sb} may run on {primary}'s node: none of {primary}'s constraints {model[primary][3]} is negated in {model[sb][3]}")
        for n in (sb, primary):
            if "pg_replication_password" not in model[n][4]:
                bad += fail(f"{path}: {n} has not the secret pg_replication_password")
    if not any("REDIS_URLS" in m[2] for m in model.values()):
        bad += fail(f"{path}: no service lists the queues in REDIS_URLS")
    bad += clients_follow(path, {n: m[2] for n, m in model.items()}, redis, standbys)
    if not bad:
        print(f"  ok   {kind} {os.path.basename(path)}: {len(primaries)} queues ({', '.join(sorted(primaries))}), "
              f"each with a replica off its node that every REDIS_URLS lists; ACK_REPLICAS >= 1; "
              f"standby {', '.join(standbys)} off the store's node, in every DATABASE_URL")
    return bad


# ---------------------------------------------------------------- binaries
def cargo_metadata():
    out = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def crate_bins(meta):
    """The binaries of the root package (the workspace's xtask is a dev
    tool, not shipped)."""
    bins = set()
    root = os.path.join(ROOT, "Cargo.toml")
    for pkg in meta["packages"]:
        if os.path.realpath(pkg["manifest_path"]) != os.path.realpath(root):
            continue
        for t in pkg["targets"]:
            if "bin" in t["kind"]:
                bins.add(t["name"])
    return bins


def help_text(meta, binary):
    """The --help of a built binary, building the crate's binaries once if
    one is missing (after `cargo test` they are all there)."""
    path = os.path.join(meta["target_directory"], "debug", binary)
    if not os.path.exists(path):
        print(f"  note building the binaries for their --help (target/debug/{binary} is missing)")
        subprocess.run(["cargo", "build", "--locked", "--quiet", "--bins"], cwd=ROOT, check=True)
    return subprocess.run([path, "--help"], check=True, capture_output=True, text=True).stdout


def accepted(help_out):
    envs = set(re.findall(r"\[env: ([A-Z0-9_]+)", help_out))
    flags = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", help_out))
    return envs | ALWAYS_ACCEPTED, flags


def is_ours(image):
    return isinstance(image, str) and image.startswith(OUR_IMAGES)


def uses_from_compose(doc, origin):
    """(origin, binary, env names, args) for each service running our image."""
    uses = []
    for name, svc in (doc.get("services") or {}).items():
        if not is_ours(svc.get("image")) and "build" not in svc:
            continue
        cmd = svc.get("command") or ["capture"]
        if isinstance(cmd, str):
            cmd = shlex.split(cmd)
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        uses.append((f"{origin} service {name}", cmd[0], set(env), cmd[1:]))
    return uses


def uses_from_service_create(text, origin):
    """The same from `docker service create` lines (dry-run output or scripts)."""
    uses = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("docker service create"):
            continue
        argv = shlex.split(line)
        image_at = next((i for i, a in enumerate(argv) if is_ours(a) or a == "$image"), None)
        if image_at is None:
            continue
        env = set()
        for i, a in enumerate(argv[:image_at]):
            if a in ("--env", "-e", "--env-add") and i + 1 < image_at:
                env.add(argv[i + 1].split("=", 1)[0])
            elif a.startswith("--env="):
                env.add(a.split("=", 2)[1])
        cmd = argv[image_at + 1:] or ["capture"]
        name = next((argv[i + 1] for i, a in enumerate(argv) if a == "--name"), "?")
        uses.append((f"{origin} {name}", cmd[0], env, cmd[1:]))
    return uses


def env_contract():
    meta = cargo_metadata()
    bins = crate_bins(meta)
    uses = []
    uses += uses_from_compose(load_yaml(os.path.join(ROOT, "docker-compose.yml")), "docker-compose.yml")
    stack = subprocess.run(
        ["docker", "stack", "config", "-c", os.path.join(ROOT, "swarm/stack.yml")],
        check=True, capture_output=True, text=True,
    ).stdout
    import yaml

    uses += uses_from_compose(yaml.safe_load(stack), "swarm/stack.yml")
    dry = subprocess.run(
        [os.path.join(ROOT, "swarm/create-services.sh"), "--dry-run"],
        check=True, capture_output=True, text=True,
    ).stdout
    uses += uses_from_service_create(dry, "create-services.sh")
    k8s_docs = {os.path.relpath(o, ROOT): render_k8s(o) for o in k8s_overlays()}
    for origin, docs in k8s_docs.items():
        uses += uses_from_k8s(docs, origin)
    # aws/ and vagrant/ deploy swarm/stack.yml; any service they create or
    # update themselves with our image is checked the same way.
    for sub in ("aws", "vagrant"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, sub)):
            for fn in files:
                p = os.path.join(dirpath, fn)
                try:
                    text = open(p).read()
                except UnicodeDecodeError:
                    continue
                joined = re.sub(r"\\\n\s*", " ", text)
                uses += uses_from_service_create(joined, os.path.relpath(p, ROOT))
                # In prose a command may wrap inside its `code span`.
                src = joined.replace("\n", " ") if fn.endswith(".md") else joined
                for m in re.finditer(r"docker service update[^\n`]*", src):
                    # The service is the command's last word (`voteswarm_capture`);
                    # one of Redis or PostgreSQL (`redisNN-replica`) takes the
                    # image's own variables, which no binary's --help lists.
                    words = m.group(0).split()
                    service = words[-1].split("_", 1)[-1] if words else "?"
                    if service in {"redis", "postgres", "haproxy"} or re.match(r"(redis|postgres)", service):
                        continue
                    for env in re.findall(r"--env-add[ =]([A-Z0-9_]+)=", m.group(0)):
                        uses.append((os.path.relpath(p, ROOT), service, {env}, []))

    failures = 0
    cache = {}
    skipped = set()
    for origin, binary, env, args in uses:
        if binary not in bins:
            if binary in EXPECTED_BINS:
                skipped.add(binary)
                continue
            failures += fail(f"{origin}: runs `{binary}`, which is not one of the crate's binaries {sorted(bins)}")
            continue
        if binary not in cache:
            cache[binary] = accepted(help_text(meta, binary))
        ok_env, ok_flags = cache[binary]
        for name in sorted(env - ok_env):
            failures += fail(f"{origin}: {binary} does not accept {name} (not in `{binary} --help`)")
        for a in args:
            if a.startswith("--") and a.split("=", 1)[0] not in ok_flags:
                failures += fail(f"{origin}: {binary} has no flag {a}")
        if not (env - ok_env):
            print(f"  ok   {origin}: {binary} accepts {', '.join(sorted(env)) or 'no variables'}{' ' + ' '.join(args) if args else ''}")
    for origin, docs in k8s_docs.items():
        failures += k8s_haproxy_env(docs, origin)
    for b in sorted(skipped):
        print(f"  note `{b}` is not in the crate yet: its variables are not checked (they will be once src/bin/{b}.rs lands)")
    return failures


# ---------------------------------------------------------------- Dockerfile
def dockerfile():
    meta = cargo_metadata()
    bins = crate_bins(meta)
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    joined = re.sub(r"\\\n", " ", text)
    lines = [l.strip() for l in joined.splitlines() if l.strip() and not l.strip().startswith("#")]
    failures = 0
    copied_dirs = []
    final_bins = None
    cp_bins = None
    host_bins = None  # what the `host` stage copies from the host's build
    saw_cargo = False
    build_stage_dirs = None  # what the stage that runs cargo has copied
    for l in lines:
        words = shlex.split(l)
        if words[0].upper() == "FROM":
            copied_dirs = []
        if words[0].upper() == "COPY":
            opts = [w for w in words[1:] if w.startswith("--")]
            srcs = [w for w in words[1:] if not w.startswith("--")][:-1]
            if any(o.startswith("--from=") for o in opts):
                final_bins = sorted(os.path.basename(s) for s in srcs)
                continue
            if srcs and all(s.startswith("${BINARIES_DIR}/") for s in srcs):
                # The host's release binaries (BINARIES=host): built, not in git.
                host_bins = sorted(os.path.basename(s) for s in srcs)
                continue
            for s in srcs:
                if os.path.exists(os.path.join(ROOT, s)):
                    copied_dirs.append(s.rstrip("/"))
                    print(f"  ok   COPY {s} exists")
                elif s == "migrations":
                    # The worker's migrations land with the worker binary.
                    copied_dirs.append(s)
                    print("  note COPY migrations: migrations/ has no files yet (the worker's migrations are on the way)")
                else:
                    failures += fail(f"Dockerfile: COPY {s}: no such file or directory in the repository")
        if "cargo build" in l:
            saw_cargo = True
            build_stage_dirs = list(copied_dirs)
            for flag in ("--release", "--locked", "--bins"):
                if flag not in words:
                    failures += fail(f"Dockerfile: the cargo build line lacks {flag}")
            cp_bins = sorted(
                os.path.basename(w) for w in words if w.startswith("target/release/")
            )
    if not saw_cargo:
        failures += fail("Dockerfile: no `cargo build` line")
    # What the build reads must be in the image's build context.
    need = ["Cargo.toml", "Cargo.lock", "src"]
    manifest = tomllib.load(open(os.path.join(ROOT, "Cargo.toml"), "rb"))
    if os.path.exists(os.path.join(ROOT, "build.rs")) or "build" in manifest.get("package", {}):
        need.append(manifest.get("package", {}).get("build", "build.rs"))
    for kind, default_dir in (("bin", "src/bin"), ("example", "examples"), ("bench", "benches"), ("test", "tests")):
        for t in manifest.get(kind, []):
            need.append(t.get("path", f"{default_dir}/{t['name']}.rs"))
    # Files the code reads at compile time: include_str!/include_bytes!
    # paths (relative to the source file) and embed_migrations! (default
    # `migrations`, relative to the manifest).
    for dirpath, _, files in os.walk(os.path.join(ROOT, "src")):
        for fn in files:
            if not fn.endswith(".rs"):
                continue
            src_file = os.path.join(dirpath, fn)
            code = open(src_file).read()
            for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)', code):
                target = os.path.normpath(os.path.join(dirpath, m.group(1)))
                need.append(os.path.relpath(target, ROOT))
            for m in re.finditer(r'embed_migrations!\(\s*(?:"([^"]*)")?\s*\)', code):
                need.append(m.group(1) or "migrations")
    all_copied = copied_dirs
    copied_dirs = build_stage_dirs or []
    for n in need:
        if not any(n == d or n.startswith(d + "/") for d in copied_dirs):
            failures += fail(f"Dockerfile: cargo needs {n}, which no COPY brings into the build stage")
    # .dockerignore starts from `*` and lets paths back in with `!path`.
    included = [l.strip()[1:].rstrip("/") for l in open(os.path.join(ROOT, ".dockerignore")) if l.strip().startswith("!")]
    for d in sorted(set(copied_dirs + all_copied)):
        if not any(d == i or d.startswith(i + "/") for i in included):
            failures += fail(f".dockerignore: keeps {d} out of the build context, but the Dockerfile copies it (add !{d})")
    for label, got in (("COPY --from=binaries", final_bins), ("cp target/release/...", cp_bins),
                       ("COPY ${BINARIES_DIR}/... (host stage)", host_bins)):
        if got is None:
            failures += fail(f"Dockerfile: no {label} of the binaries")
            continue
        if sorted(set(got)) != sorted(EXPECTED_BINS):
            failures += fail(f"Dockerfile: {label} has {got}, expected {sorted(EXPECTED_BINS)}")
        extra = bins - set(got)
        if extra:
            failures += fail(f"Dockerfile: {label} misses the crate's binaries {sorted(extra)}")
        pending = set(got) - bins
        for b in sorted(pending):
            if b in EXPECTED_BINS:
                print(f"  note the Dockerfile copies `{b}`, which the crate does not build yet (on the way)")
            else:
                failures += fail(f"Dockerfile: {label} copies `{b}`, which the crate has no binary for")
        if not extra:
            print(f"  ok   {label}: {', '.join(got)} (the crate builds {', '.join(sorted(bins))})")
    return failures


# ---------------------------------------------------------------- docker flags
def docker_options(sub):
    """{flag: takes a value} from `docker <sub> --help`."""
    h = subprocess.run(["docker", *sub, "--help"], capture_output=True, text=True).stdout
    opts = {}
    for m in re.finditer(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)(?: ([a-z][\w-]*))?(?:\s{2,}|$)", h, re.M):
        opts[m.group(1)] = m.group(2) is not None
    return opts


def service_flags():
    dry = subprocess.run(
        [os.path.join(ROOT, "swarm/create-services.sh"), "--dry-run"],
        check=True, capture_output=True, text=True,
    ).stdout
    failures = 0
    helps = {}
    checked = 0
    for line in dry.splitlines():
        if "docker " not in line:
            continue
        argv = shlex.split(line[line.index("docker "):])
        sub = tuple(argv[1:3])
        if sub not in helps:
            helps[sub] = docker_options(sub)
        opts = helps[sub]
        i = 3
        # Options until the first positional (the image, a name, a file).
        while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
            flag = argv[i].split("=", 1)[0]
            if flag not in opts:
                failures += fail(f"create-services.sh: `docker {' '.join(sub)}` has no flag {flag}")
                i += 1
                continue
            checked += 1
            i += 2 if (opts[flag] and "=" not in argv[i]) else 1
    if not failures:
        print(f"  ok   {checked} options in create-services.sh --dry-run are known to `docker <command> --help`")
    return failures


# ---------------------------------------------------------------- user data
def _cfn_doc(template):
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node, deep=True)}
        return {suffix: loader.construct_mapping(node, deep=True)}

    Loader.add_multi_constructor("!", tagged)
    with open(template) as f:
        return yaml.load(f, Loader=Loader)


def userdata(template, outdir):
    """Writes each shell script the template carries (cfn-init `files` with a
    shebang, and UserData) to OUTDIR, with CloudFormation's ${Param}
    replaced by a stand-in and ${!x} turned back into ${x}."""
    doc = _cfn_doc(template)
    os.makedirs(outdir, exist_ok=True)
    found = []

    def text_of(v):
        if isinstance(v, str):
            return v
        if isinstance(v, dict):
            for k in ("Sub", "Fn::Sub"):
                if k in v:
                    s = v[k]
                    return s[0] if isinstance(s, list) else s
            for k in ("Base64", "Fn::Base64"):
                if k in v:
                    return text_of(v[k])
            for k in ("Join", "Fn::Join"):
                if k in v:
                    sep, parts = v[k]
                    return sep.join(p if isinstance(p, str) else "PLACEHOLDER" for p in parts)
        return None

    def clean(s):
        s = re.sub(r"\$\{!", "${", s.replace("${!", "\0"))
        s = re.sub(r"\$\{([A-Za-z0-9:.]+)\}", lambda m: "CFN_" + re.sub(r"[^A-Za-z0-9]", "_", m.group(1)), s)
        return s.replace("\0", "${")

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "UserData" or (k == "content" and "files" in path):
                    s = text_of(v)
                    if s and s.lstrip().startswith("#!") and ("bash" in s.split("\n", 1)[0] or "/sh" in s.split("\n", 1)[0]):
                        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(path[-3:] + [k])).strip("_") + ".sh"
                        with open(os.path.join(outdir, name), "w") as f:
                            f.write(clean(s))
                        found.append(name)
                        continue
                walk(v, path + [str(k)])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + [str(i)])

    walk(doc.get("Resources", {}), [])
    for n in found:
        print(os.path.join(outdir, n))
    if not found:
        print(f"userdata: no shell scripts found in {template}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- AWS roles
def _refs(v):
    """Logical ids a value refers to with !Ref."""
    if isinstance(v, dict):
        if "Ref" in v and isinstance(v["Ref"], str):
            return [v["Ref"]]
        return [r for x in v.values() for r in _refs(x)]
    if isinstance(v, list):
        return [r for x in v for r in _refs(x)]
    return []


def aws_roles(template):
    """Issue 13, item 12: roles from the auto-scaling group, never from the
    node; the edge off the manager; egress narrower than all-to-anywhere."""
    doc = _cfn_doc(template)
    res = doc.get("Resources", {})
    bad = 0
    scripts = {}
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            userdata(template, tmp)
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name)) as f:
                scripts[name] = f.read()
    text = "\n".join(scripts.values())
    # A node that says what it is: an engine label (daemon.json "labels",
    # dockerd --label) or anything read back from one.
    for pat, why in (
        (r'"labels"\s*:', "daemon.json sets engine labels"),
        (r"dockerd[^\n]*--label", "dockerd --label"),
        (r"Engine\.Labels", "a role read from the node's own engine label"),
    ):
        if re.search(pat, text):
            bad |= fail(f"{why}: a node must not choose its own role")
    # Labels are written only by the manager, from the instance's group.
    boot = next((s for n, s in scripts.items() if "bootstrap" in n and "files" in n), "")
    if not boot:
        bad |= fail("no bootstrap script found in the template")
    else:
        manager_part = boot.split('if [ "$role" = manager ]', 1)
        if len(manager_part) != 2:
            bad |= fail("the bootstrap has no manager branch")
        else:
            before, after = manager_part
            non_manager = after.split("\n                else\n", 1)
            if "--label-add" in before or (len(non_manager) == 2 and "--label-add" in non_manager[1]):
                bad |= fail("a node label is added outside the manager's branch")
        for needed, why in (
            ("ec2 describe-instances", "the manager reads the instance behind each node"),
            ("aws:autoscaling:groupName", "the role comes from the auto-scaling group tag"),
            (".Status.Addr", "the node is found by the address the manager sees"),
        ):
            if needed not in boot:
                bad |= fail(f"bootstrap lacks `{needed}`: {why}")
    # The manager's instance role may read the EC2 API; the nodes' may not.
    def actions(role):
        out = []
        for pol in res.get(role, {}).get("Properties", {}).get("Policies", []):
            for st in pol["PolicyDocument"]["Statement"]:
                a = st.get("Action", [])
                out += a if isinstance(a, list) else [a]
        return out

    if "ec2:DescribeInstances" not in actions("ManagerRole"):
        bad |= fail("the manager role cannot read which group an instance is in")
    for a in actions("NodeRole"):
        if a.startswith(("ec2:Create", "ec2:Delete", "ec2:Modify", "autoscaling:", "ssm:Put", "iam:")):
            bad |= fail(f"the node role may {a}")
    # The edge on its own group: the load balancer's targets and the public
    # ports are not the manager's.
    groups = {k: v for k, v in res.items() if v.get("Type") == "AWS::AutoScaling::AutoScalingGroup"}
    for name, g in groups.items():
        tgs = g.get("Properties", {}).get("TargetGroupARNs")
        if tgs and name != "EdgeGroup":
            bad |= fail(f"{name} is a load-balancer target: only the edge group may be")
    if "EdgeGroup" not in groups:
        bad |= fail("no EdgeGroup: the edge runs on the manager")
    mgr_sgs = set()
    lt = res.get("ManagerLaunchTemplate", {}).get("Properties", {}).get("LaunchTemplateData", {})
    mgr_sgs.update(_refs(lt.get("SecurityGroupIds", [])))
    for sg in mgr_sgs:
        for rule in res.get(sg, {}).get("Properties", {}).get("SecurityGroupIngress", []):
            if rule.get("CidrIp") == "0.0.0.0/0" or rule.get("CidrIpv6") == "::/0":
                bad |= fail(f"{sg} (on the manager) is open to the internet on {rule.get('FromPort')}")
    # Egress: never every protocol to anywhere, and no group left with the
    # default allow-all (a group without SecurityGroupEgress gets it).
    for name, r in res.items():
        t = r.get("Type")
        rules = []
        if t == "AWS::EC2::SecurityGroup":
            p = r.get("Properties", {})
            if "SecurityGroupEgress" not in p:
                bad |= fail(f"{name} has no egress rules: AWS gives it allow-all")
            rules = p.get("SecurityGroupEgress", [])
        elif t == "AWS::EC2::SecurityGroupEgress":
            rules = [r.get("Properties", {})]
        for rule in rules:
            anywhere = rule.get("CidrIp") == "0.0.0.0/0" or rule.get("CidrIpv6") == "::/0"
            all_ports = str(rule.get("IpProtocol")) == "-1" or (
                rule.get("FromPort") in (0, -1, None) and rule.get("ToPort") in (65535, -1, None)
            )
            if anywhere and all_ports:
                bad |= fail(f"{name}: egress of everything to anywhere")
    if not bad:
        print(f"  ok: {template}: roles from the auto-scaling group, edge off the manager, "
              f"egress limited ({len(groups)} groups)")
    return bad


# ---------------------------------------------------------------- Vagrant
def vagrant_registry():
    """Issue 13, item 13: no unauthenticated registry on every address."""
    bad = 0
    for dirpath, _, files in os.walk(os.path.join(ROOT, "vagrant")):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, errors="replace") as fh:
                text = fh.read()
            # Join continued lines, so each command is one line.
            text = text.replace("\\\n", " ")
            for line in text.splitlines():
                if line.lstrip().startswith("#"):
                    continue
                if "registry:2" in line or "registry " in line and "service create" in line:
                    if "--publish" in line or "-p " in line:
                        bad |= fail(f"{os.path.relpath(path, ROOT)}: a published registry: {line.strip()}")
                if re.search(r"(-p|--publish)[ =]['\"]?(0\.0\.0\.0:)?5000:", line):
                    bad |= fail(f"{os.path.relpath(path, ROOT)}: port 5000 on every address: {line.strip()}")
                if re.search(r"0\.0\.0\.0:5000", line):
                    bad |= fail(f"{os.path.relpath(path, ROOT)}: 0.0.0.0:5000: {line.strip()}")
                # The same hole as on AWS: a VM choosing its own role.
                if re.search(r'"labels"\s*:|Engine\.Labels|dockerd[^\n]*--label', line):
                    bad |= fail(f"{os.path.relpath(path, ROOT)}: a node-chosen role label: {line.strip()}")
    if not bad:
        print("  ok: vagrant/ publishes no registry on every address; no VM labels itself")
    return bad


# ---------------------------------------------------------------- Kubernetes
def kubectl():
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    venv = os.path.join(ROOT, "target", "deploy-venv", "bin", "kubectl")
    return venv if os.path.exists(venv) else "kubectl"


def k8s_overlays():
    base = os.path.join(ROOT, "k8s", "overlays")
    return [os.path.join(base, d) for d in sorted(os.listdir(base))
            if os.path.exists(os.path.join(base, d, "kustomization.yaml"))]


def render_k8s(overlay):
    """The overlay's manifests as kubectl renders them. The load restrictor:
    the base's ConfigMaps are generated from swarm/ and docker/, outside
    the kustomization's root (k8s/README.md)."""
    import yaml

    r = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", overlay],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        print(r.stderr, file=sys.stderr)
        raise SystemExit(f"kubectl kustomize {overlay} failed")
    out = r.stdout
    return [d for d in yaml.safe_load_all(out) if d]


def pod_spec(doc):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return spec.get("template", {}).get("spec")
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
    if kind == "Pod":
        return spec
    return None


def containers_of(ps):
    """(container, is a long-running one) for every container of a pod,
    native sidecars (init containers with restartPolicy Always) counted as
    long-running."""
    out = []
    for c in ps.get("initContainers") or []:
        out.append((c, c.get("restartPolicy") == "Always"))
    for c in ps.get("containers") or []:
        out.append((c, True))
    return out


def image_name(image):
    """`registry.example/voteswarm:1@sha256:..` -> `voteswarm`."""
    last = image.split("/")[-1]
    return re.split(r"[:@]", last, 1)[0]


def uses_from_k8s(docs, origin):
    uses = []
    for d in docs:
        ps = pod_spec(d)
        if not ps:
            continue
        for c, _ in containers_of(ps):
            if image_name(c.get("image", "")) != "voteswarm":
                continue
            argv = (c.get("command") or []) + (c.get("args") or [])
            argv = argv or ["capture"]
            env = {e["name"] for e in c.get("env") or []}
            # POD_NAME and the like feed $(VAR) references; the binary need
            # not know them, but only if something references them.
            refs = set(re.findall(r"\$\(([A-Z0-9_]+)\)", json.dumps(c)))
            env -= {e["name"] for e in c.get("env") or [] if "valueFrom" in e and e["name"] in refs}
            uses.append((f"{origin} {d['kind']}/{d['metadata']['name']} {c['name']}", argv[0], env, argv[1:]))
    return uses


# Variables a deploy file may give HAProxy before swarm/haproxy.cfg reads
# them: issue 15's TLS (its certificate path) is on the way.
HAPROXY_PENDING = {"TLS_CERT"}


def haproxy_reads():
    """The variables swarm/haproxy.cfg reads: "${VAR}", presetenv VAR and
    .if defined(VAR)."""
    text = open(os.path.join(ROOT, "swarm/haproxy.cfg")).read()
    names = set(re.findall(r"\$\{([A-Z0-9_]+)\}", text))
    names |= set(re.findall(r"^\s*presetenv\s+([A-Z0-9_]+)", text, re.M))
    names |= set(re.findall(r"defined\(([A-Z0-9_]+)\)", text))
    return names


def k8s_haproxy_env(docs, origin):
    """Every variable the edge's HAProxy container gets is one the shipped
    haproxy.cfg reads (or feeds a $(VAR) reference)."""
    reads = haproxy_reads()
    bad = 0
    for d in docs:
        ps = pod_spec(d)
        if not ps:
            continue
        for c, _ in containers_of(ps):
            if image_name(c.get("image", "")) != "haproxy":
                continue
            refs = set(re.findall(r"\$\(([A-Z0-9_]+)\)", json.dumps(c)))
            env = {e["name"] for e in c.get("env") or []} - refs
            for n in sorted(env - reads):
                if n in HAPROXY_PENDING:
                    print(f"  note {origin} {d['kind']}/{d['metadata']['name']}: {n} is not read by swarm/haproxy.cfg yet (issue 15)")
                else:
                    bad |= fail(f"{origin} {d['kind']}/{d['metadata']['name']}: haproxy.cfg reads no {n}")
            if not bad:
                print(f"  ok   {origin} {d['kind']}/{d['metadata']['name']} {c['name']}: haproxy.cfg reads {', '.join(sorted(env & reads))}")
    return bad


SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|COOKIE_KEY|PRIVATE_KEY|API_KEY|ACCESS_KEY)", re.I)


def rendered_k8s(overlay):
    """(its name, the rendered objects, {kind: {name: object}})."""
    docs = render_k8s(overlay)
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return os.path.relpath(overlay, ROOT), docs, kinds


def k8s_policy(overlays):
    bad = 0
    for overlay in overlays:
        name, docs, kinds = rendered_k8s(overlay)
        workloads = 0
        for d in docs:
            ps = pod_spec(d)
            if ps is None:
                continue
            workloads += 1
            who = f"{name}: {d['kind']}/{d['metadata']['name']}"
            is_job = d["kind"] in ("Job", "CronJob")
            psc = ps.get("securityContext") or {}
            if "terminationGracePeriodSeconds" not in ps:
                bad |= fail(f"{who}: no terminationGracePeriodSeconds (say how long its SIGTERM takes)")
            if ps.get("automountServiceAccountToken") is not False:
                bad |= fail(f"{who}: mounts a service-account token it does not use")
            for flag in ("hostNetwork", "hostPID", "hostIPC"):
                if ps.get(flag):
                    bad |= fail(f"{who}: {flag}")
            for c, long_running in containers_of(ps):
                cw = f"{who} container {c['name']}"
                sc = c.get("securityContext") or {}
                non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
                uid = sc.get("runAsUser", psc.get("runAsUser"))
                if non_root is not True or uid in (None, 0):
                    bad |= fail(f"{cw}: not runAsNonRoot with a non-zero runAsUser")
                if sc.get("allowPrivilegeEscalation") is not False:
                    bad |= fail(f"{cw}: allowPrivilegeEscalation is not false")
                if sc.get("readOnlyRootFilesystem") is not True:
                    bad |= fail(f"{cw}: the root filesystem is writable")
                if sc.get("privileged"):
                    bad |= fail(f"{cw}: privileged")
                if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []) or (sc.get("capabilities") or {}).get("add"):
                    bad |= fail(f"{cw}: capabilities not dropped (drop: [ALL], no add)")
                seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
                if seccomp not in ("RuntimeDefault", "Localhost"):
                    bad |= fail(f"{cw}: no seccomp profile")
                res = c.get("resources") or {}
                for k in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        if r not in (res.get(k) or {}):
                            bad |= fail(f"{cw}: no {k}.{r}")
                image = c.get("image", "")
                tag = image.split("/")[-1]
                if not ("@sha256:" in image or (":" in tag and not tag.endswith(":latest"))):
                    bad |= fail(f"{cw}: image {image!r} is not pinned (an overlay's images: sets a tag or digest)")
                # Kubernetes leaves a $(VAR) of no variable defined before it
                # as it is, silently.
                defined = set()
                for e in c.get("env") or []:
                    for ref in re.findall(r"\$\(([A-Za-z0-9_]+)\)", str(e.get("value", ""))):
                        if ref not in defined:
                            bad |= fail(f"{cw}: {e['name']} refers to $({ref}), not defined before it")
                    defined.add(e["name"])
                for a in (c.get("command") or []) + (c.get("args") or []):
                    for ref in re.findall(r"\$\(([A-Za-z0-9_]+)\)", a):
                        if ref not in defined:
                            bad |= fail(f"{cw}: an argument refers to $({ref}), which is not in its env")
                for e in c.get("env") or []:
                    if "value" in e and SECRET_NAME.search(e["name"]) and not e["name"].endswith("_FILE"):
                        bad |= fail(f"{cw}: {e['name']} is a literal value (mount a Secret, use {e['name']}_FILE)")
                    if "value" in e and re.search(r"://[^/@\s]*:[^/@\s]+@", str(e["value"])):
                        bad |= fail(f"{cw}: {e['name']} holds a password in a URL")
                if long_running and not is_job:
                    for probe in ("readinessProbe", "livenessProbe"):
                        if probe not in c:
                            bad |= fail(f"{cw}: no {probe}")
                    if image_name(image) == "voteswarm":
                        rp = ((c.get("readinessProbe") or {}).get("httpGet") or {}).get("path")
                        lp = ((c.get("livenessProbe") or {}).get("httpGet") or {}).get("path")
                        if rp != "/readyz":
                            bad |= fail(f"{cw}: readiness is not GET /readyz ({rp})")
                        if lp != "/healthz":
                            bad |= fail(f"{cw}: liveness is not GET /healthz ({lp})")
        if workloads == 0:
            bad |= fail(f"{name}: renders no workload")
        # No secret material in the manifests at all: Secrets are made in
        # the cluster (k8s/create-secrets.sh), never rendered.
        for sname, s in kinds.get("Secret", {}).items():
            if s.get("data") or s.get("stringData"):
                bad |= fail(f"{name}: Secret/{sname} carries values in the manifests")
        for cname, cm in kinds.get("ConfigMap", {}).items():
            for k, v in (cm.get("data") or {}).items():
                if re.search(r"BEGIN [A-Z ]*PRIVATE KEY", v):
                    bad |= fail(f"{name}: ConfigMap/{cname} {k} holds a private key")
        # What the issue asks of each role.
        sts = kinds.get("StatefulSet", {})
        cap = sts.get("capture")
        if not cap:
            bad |= fail(f"{name}: no StatefulSet/capture")
        else:
            ps = pod_spec(cap)
            names = {c["name"] for c, _ in containers_of(ps)}
            if names != {"capture", "redis"}:
                bad |= fail(f"{name}: the capture pod holds {sorted(names)}, not capture and its redis")
            claims = [t["metadata"]["name"] for t in cap["spec"].get("volumeClaimTemplates") or []]
            redis_c = next(c for c, _ in containers_of(ps) if c["name"] == "redis")
            if not any(m["name"] in claims and m["mountPath"] == "/data" for m in redis_c.get("volumeMounts") or []):
                bad |= fail(f"{name}: Redis's /data is not on a volumeClaimTemplate")
            if (cap["spec"].get("persistentVolumeClaimRetentionPolicy") or {}).get("whenScaled") == "Delete":
                bad |= fail(f"{name}: scaling capture down deletes its queue's claim")
        if "postgres" in sts and not sts["postgres"]["spec"].get("volumeClaimTemplates"):
            bad |= fail(f"{name}: postgres has no claim")
        for pdb in ("capture", "worker"):
            if pdb not in kinds.get("PodDisruptionBudget", {}):
                bad |= fail(f"{name}: no PodDisruptionBudget for {pdb}")
        hpas = kinds.get("HorizontalPodAutoscaler", {})
        if "worker" not in hpas:
            bad |= fail(f"{name}: no HorizontalPodAutoscaler for worker")
        for h in hpas.values():
            ref = h["spec"]["scaleTargetRef"]
            target = kinds.get(ref["kind"], {}).get(ref["name"])
            if target is None:
                bad |= fail(f"{name}: HorizontalPodAutoscaler/{h['metadata']['name']} scales {ref['kind']}/{ref['name']}, which is not rendered")
            elif "replicas" in target["spec"]:
                bad |= fail(f"{name}: {ref['kind']}/{ref['name']} sets replicas, which every deploy would re-apply over its autoscaler's count")
        if "capture" in hpas:
            down = (hpas["capture"]["spec"].get("behavior") or {}).get("scaleDown") or {}
            if down.get("selectPolicy") != "Disabled":
                bad |= fail(f"{name}: capture's autoscaler may scale down (a pod's queue must be drained first)")
        if not any(pod_spec(d) and "--migrate-only" in (pod_spec(d)["containers"][0].get("args") or [])
                   for d in kinds.get("Job", {}).values()):
            bad |= fail(f"{name}: no migrate Job running worker --migrate-only")
        bad |= network_policies(name, docs, kinds)
        if not bad:
            print(f"  ok   {name}: {workloads} workloads, {sum(len(v) for v in kinds.values())} objects meet the policy")
    return bad


def network_policies(name, docs, kinds):
    """A default deny of ingress, and each protected port reachable only
    from the roles that need it."""
    bad = 0
    nps = list(kinds.get("NetworkPolicy", {}).values())
    if not any(n["spec"].get("podSelector") in ({}, None) and "Ingress" in n["spec"].get("policyTypes", [])
               and not n["spec"].get("ingress") for n in nps):
        bad |= fail(f"{name}: no default-deny ingress NetworkPolicy")

    def role_of(sel):
        return (sel or {}).get("matchLabels", {}).get("app.kubernetes.io/name")

    # Ports by name for every role's pods.
    ports = {}
    for d in docs:
        ps = pod_spec(d)
        if not ps:
            continue
        role = (d["spec"]["template"]["metadata"].get("labels") or {}).get("app.kubernetes.io/name")
        for c, _ in containers_of(ps):
            for p in c.get("ports") or []:
                ports.setdefault(role, {})[p.get("name")] = p["containerPort"]
    # allowed[(role, port)] = set of source roles, or {"*"} for anyone.
    allowed = {}
    for n in nps:
        target = role_of(n["spec"].get("podSelector"))
        for rule in n["spec"].get("ingress") or []:
            srcs = rule.get("from")
            sources = {"*"} if not srcs else set()
            for s in srcs or []:
                if "ipBlock" in s or "namespaceSelector" in s or not role_of(s.get("podSelector")):
                    sources.add("*")
                else:
                    sources.add(role_of(s["podSelector"]))
            rports = [p.get("port") for p in rule.get("ports") or []] or ["*"]
            for p in rports:
                num = ports.get(target, {}).get(p, p)
                allowed.setdefault((target, num), set()).update(sources)
    want = {
        ("capture", 8080): {"edge"},
        # Issue 17: the replica follows its capture pod's Redis, and the
        # standby streams from the primary; nothing else reaches them.
        ("capture", 6379): {"worker", "results", "capture-replica"},
        ("capture-replica", 6379): {"worker", "results"},
        ("postgres", 5432): {"worker", "results", "migrate", "postgres-standby"},
        ("postgres-standby", 5432): {"worker", "results", "migrate"},
        ("results", 8081): {"edge"},
    }
    for (role, port), srcs in want.items():
        got = allowed.get((role, port), set()) | allowed.get((role, "*"), set())
        if got != srcs:
            bad |= fail(f"{name}: {role}:{port} is reachable from {sorted(got) or 'nobody'}, expected {sorted(srcs)}")
    if not bad:
        print(f"  ok   {name}: {len(nps)} NetworkPolicies: default deny; " +
              "; ".join(f"{r}:{p} from {'/'.join(sorted(s))}" for (r, p), s in want.items()))
    return bad


# ---------------------------------------------------------------- replicas: AWS
def _bootstrap_text(template):
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):
            userdata(template, tmp)
        return "\n".join(open(os.path.join(tmp, n)).read() for n in sorted(os.listdir(tmp)) if "bootstrap" in n and "files" in n)


def replicas_aws(template):
    """Issue 17 in the CloudFormation template: the queue replicas and the
    store's standby on instances of their own groups (so never on the
    instance of what they copy), labelled by the manager from those groups,
    the standby in another zone than the store, AckReplicas and
    QueueReplicas given to the stack, and no port opened for replication
    (it travels inside the overlay). The services themselves, their
    REDIS_URLS/REDIS_DNS and DATABASE_URL, are swarm/stack.yml's."""
    doc = _cfn_doc(template)
    res = doc.get("Resources", {})
    params = doc.get("Parameters", {})
    bad = 0
    for p, least in (("QueueReplicas", 1), ("AckReplicas", 1)):
        if p not in params:
            bad |= fail(f"{template}: no parameter {p}")
        elif int(params[p].get("Default", 0)) < least:
            bad |= fail(f"{template}: {p} defaults to {params[p].get('Default')}, not >= {least}")
    boot = _bootstrap_text(template)
    groups = {k: v["Properties"] for k, v in res.items() if v.get("Type") == "AWS::AutoScaling::AutoScalingGroup"}

    def group_named(suffix):
        for k, g in groups.items():
            n = g.get("AutoScalingGroupName")
            if isinstance(n, dict) and n.get("Sub") == "${AWS::StackName}-" + suffix:
                return k, g
        return None, None

    def label_of(suffix):
        m = re.search(r'"\$stack-%s"\)\s*want=([a-z_-]+)' % re.escape(suffix), boot)
        return m.group(1) if m else None

    def template_of(g):
        return (_refs(g.get("LaunchTemplate", {}).get("LaunchTemplateId")) or [None])[0]

    cap_name, cap = group_named("capture")
    for suffix, label, copies, copied in (("replica", "queue_replicas", "capture nodes' Redis", "capture"),
                                          ("standby", "store_standby", "store's PostgreSQL", "store")):
        name, g = group_named(suffix)
        if not g:
            bad |= fail(f"{template}: no auto-scaling group <stack>-{suffix} for the {copies}'s copies")
            continue
        got = label_of(suffix)
        if got != label:
            bad |= fail(f"{template}: the manager labels <stack>-{suffix}'s nodes {got!r}, not {label}=true (what swarm/stack.yml places the copies on)")
        if not re.search(r"for r in [^;\n]*\b%s\b" % re.escape(label), boot):
            bad |= fail(f"{template}: the manager's label loop never adds or removes {label}")
        _, other = group_named(copied)
        if other and template_of(g) == template_of(other):
            bad |= fail(f"{template}: <stack>-{suffix} launches from {copied}'s launch template")
    _, rep = group_named("replica")
    if rep and cap and "CaptureNodes" not in json.dumps(rep.get("DesiredCapacity")):
        bad |= fail(f"{template}: <stack>-replica is not sized CaptureNodes: some capture node would have no replica")
    _, sb = group_named("standby")
    _, store = group_named("store")
    if sb and store and set(_refs(sb.get("VPCZoneIdentifier"))) & set(_refs(store.get("VPCZoneIdentifier"))):
        bad |= fail(f"{template}: the standby may share the store's zone ({sorted(set(_refs(sb.get('VPCZoneIdentifier'))))})")
    # The queues: swarm/stack.yml has a fixed set (redis01, redis02), so
    # the services come from create-services.sh --queues, as many as the
    # capture group's instances, and the manager gives each capture node
    # one number of that range (queue=NN, where redisNN runs).
    if "docker stack deploy" in boot:
        bad |= fail(f"{template}: the manager runs docker stack deploy: swarm/stack.yml has a fixed set of queues, "
                    f"not one per capture instance (use swarm/create-services.sh --queues)")
    joined = re.sub(r"\\\n\s*", " ", boot)
    create = next((line for line in joined.splitlines()
                   if "create-services.sh --" in line and "--secrets-only" not in line and not line.lstrip().startswith("#")), "")
    if not create:
        bad |= fail(f"{template}: the manager never runs swarm/create-services.sh")
    m = re.search(r'--queues "?CFN_([A-Za-z]+)"?', create)
    sized = _refs(cap.get("DesiredCapacity")) if cap else []
    if not m or m.group(1) not in sized:
        bad |= fail(f"{template}: create-services.sh makes --queues {m.group(1) if m else '(none)'}, not the capture "
                    f"group's size {sized}: some capture node would have no queue, or some queue no node")
    numbered = re.search(r'queues="CFN_([A-Za-z]+)"', boot)
    if not numbered or numbered.group(1) not in sized:
        bad |= fail(f"{template}: the manager numbers capture nodes up to {numbered.group(1) if numbered else '(nothing)'}, "
                    f"not the capture group's size {sized}")
    if not re.search(r'--label-add "queue=\$nn"', boot) or "for ((q = 1; q <= queues; q++))" not in boot:
        bad |= fail(f"{template}: the manager never labels a capture node queue=NN (01 to the queue count): no redisNN would start")
    for var, want in (("ACK_REPLICAS", 'ACK_REPLICAS="CFN_AckReplicas"'),
                      ("--queue-replicas", '--queue-replicas "CFN_QueueReplicas"')):
        if want not in create:
            bad |= fail(f"{template}: create-services.sh is not given {var} from the template's parameter")
    replica_branch = boot.split('"$role" = replica ]', 1)[1].split("\n                fi", 1)[0] if '"$role" = replica ]' in boot else ""
    if not re.search(r'/var/lib/voteswarm/redis-replica\$\(printf %02d', replica_branch) or \
            not (m and f"seq 1 CFN_{m.group(1)}" in replica_branch):
        bad |= fail(f"{template}: the replica instances do not make redis-replicaNN for every queue (redisNN-replica binds it)")
    # Replication rides the overlay: no group opens Redis or PostgreSQL.
    for name, r in res.items():
        t = r.get("Type")
        rules = []
        if t == "AWS::EC2::SecurityGroup":
            rules = r["Properties"].get("SecurityGroupIngress", []) + r["Properties"].get("SecurityGroupEgress", [])
        elif t in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"):
            rules = [r["Properties"]]
        for rule in rules:
            lo, hi = rule.get("FromPort"), rule.get("ToPort")
            if isinstance(lo, int) and isinstance(hi, int) and lo >= 0:
                for port in (6379, 5432):
                    if lo <= port <= hi:
                        bad |= fail(f"{template}: {name} opens {port}: replication travels inside the overlay (VXLAN 4789)")
    if not bad:
        print(f"  ok   {template}: <stack>-replica (CaptureNodes instances, queue_replicas=true) and <stack>-standby "
              f"(store_standby=true, another zone than the store) on groups of their own; capture nodes numbered "
              f"queue=01..CaptureNodes and create-services.sh --queues CaptureNodes; AckReplicas and QueueReplicas "
              f"given to it; no port opened for replication")
    return bad


# ---------------------------------------------------------------- replicas: Vagrant
# The Vagrantfile itself, run by ruby with a stand-in for Vagrant: its
# address plan as it would be for these settings.
_VAGRANT_PLAN_RB = r"""
require "json"
module Vagrant
  def self.configure(*); end
end
load ARGV[0]
puts JSON.generate({nodes: NODES, queue_replicas: QUEUE_REPLICAS, ack_replicas: ACK_REPLICAS, manager_args: MANAGER_PLAN})
"""


def vagrant_plan(vdir, env):
    out = subprocess.run(["ruby", "-e", _VAGRANT_PLAN_RB, os.path.join(vdir, "Vagrantfile")],
                         env={**os.environ, **env}, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def replicas_vagrant(vagrantfile_dir=None):
    """Issue 17 in vagrant/: for several sizes, a queue_replicas VM per
    capture VM and a store_standby VM (each VM one role, so a copy is never
    on the VM it copies), each capture VM its own queue=NN and the services
    made with one queue per capture VM (create-services.sh --queues, since
    stack.yml has a fixed set), the manager labelling those roles and
    giving ACK_REPLICAS and --queue-replicas, ACK_REPLICAS 1 by default,
    the replica VMs' redis-replicaNN directories made."""
    vdir = vagrantfile_dir or os.path.join(ROOT, "vagrant")
    bad = 0
    with open(os.path.join(vdir, "provision", "manager.sh")) as f:
        manager = f.read()
    with open(os.path.join(vdir, "provision", "common.sh")) as f:
        common = f.read()
    with open(os.path.join(vdir, "Vagrantfile")) as f:
        vf = f.read()
    sizes = [{}, {"VOTESWARM_CAPTURE": "3", "VOTESWARM_WORKERS": "1"}]
    for env in sizes:
        plan = vagrant_plan(vdir, env)
        nodes = plan["nodes"]
        label = ", ".join(f"{k}={v}" for k, v in env.items()) or "the defaults"
        roles = {}
        for name, addr, role, _, _ in nodes:
            roles.setdefault(role, []).append((name, addr))
        caps, reps = roles.get("capture", []), roles.get("queue_replicas", [])
        if len(reps) != len(caps):
            bad |= fail(f"vagrant ({label}): {len(caps)} capture VMs but {len(reps)} queue_replicas VMs")
        if len(roles.get("store_standby", [])) != 1:
            bad |= fail(f"vagrant ({label}): {len(roles.get('store_standby', []))} store_standby VMs, not 1")
        addrs = [a for _, a, _, _, _ in nodes]
        if len(set(addrs)) != len(addrs) or len({n for n, *_ in nodes}) != len(nodes):
            bad |= fail(f"vagrant ({label}): two VMs share a name or an address: {nodes}")
        if plan["ack_replicas"] < 1:
            bad |= fail(f"vagrant ({label}): ACK_REPLICAS defaults to {plan['ack_replicas']}, not >= 1")
        # The address plan manager.sh gets: every queue the services use
        # (01..number of capture VMs, create-services.sh --queues) on one
        # capture VM, and no number on any other VM.
        args = plan["manager_args"]
        queue_of = {}
        for a in args:
            parts = a.split("=")
            if len(parts) == 3:
                queue_of.setdefault(parts[2], []).append((parts[0], parts[1]))
        want = [f"{q:02d}" for q in range(1, len(caps) + 1)]
        if sorted(queue_of) != want or any(len(v) != 1 or v[0][1] != "capture" for v in queue_of.values()):
            bad |= fail(f"vagrant ({label}): queue numbers in the address plan {queue_of}, not one capture VM each for {want} "
                        f"(the queues create-services.sh --queues {len(caps)} makes): some redisNN would never start")
    loop = re.search(r"for r in ([^;\n]*); do", manager)
    for r in ("queue_replicas", "store_standby"):
        if not loop or r not in loop.group(1).split():
            bad |= fail(f"vagrant/provision/manager.sh: the label loop never adds or removes {r}")
    if not re.search(r'--label-add "queue=\$queue"', manager):
        bad |= fail("vagrant/provision/manager.sh: no capture VM is labelled queue=NN: no redisNN would start")
    joined = manager.replace("\\\n", " ")
    if "docker stack deploy" in joined:
        bad |= fail("vagrant/provision/manager.sh: docker stack deploy: swarm/stack.yml has a fixed set of queues, not one per capture VM")
    create = next((line for line in joined.splitlines()
                   if "create-services.sh" in line and "--queues" in line and not line.lstrip().startswith("#")), "")
    if not create:
        bad |= fail("vagrant/provision/manager.sh: create-services.sh is not given --queues (one per capture VM)")
    elif not re.search(r"queues=\"\$\(awk '\$2 == \"capture\"' /etc/voteswarm/roles \| wc -l\)\"", manager):
        bad |= fail("vagrant/provision/manager.sh: --queues is not the number of capture VMs in the address plan")
    for var, pat in (("ACK_REPLICAS", r"\bACK_REPLICAS="), ("--queue-replicas", r"--queue-replicas ")):
        if not re.search(pat, create):
            bad |= fail(f"vagrant/provision/manager.sh: create-services.sh is not given {var}")
    if "QUEUE_REPLICAS.to_s, ACK_REPLICAS.to_s" not in vf:
        bad |= fail("vagrant/Vagrantfile: manager.sh is not given QUEUE_REPLICAS and ACK_REPLICAS")
    block = common.split('"$role" = queue_replicas ]', 1)[1].split("\nfi", 1)[0] if '"$role" = queue_replicas ]' in common else ""
    if not re.search(r'install -d -o 10001 [^\n]*/var/lib/voteswarm/redis-replica\$\(printf %02d', block):
        bad |= fail("vagrant/provision/common.sh: no redis-replicaNN directory for uid 10001 on the queue_replicas VMs")
    if not bad:
        print(f"  ok   vagrant/: a queue_replicas VM per capture VM, a store_standby VM and queue=01..N on the N capture VMs at "
              f"{' and '.join(', '.join(f'{k}={v}' for k, v in e.items()) or 'the defaults' for e in sizes)}; "
              f"ACK_REPLICAS 1 by default; the manager labels the roles and makes --queues N with create-services.sh")
    return bad


# ---------------------------------------------------------------- replicas: k8s
def _env_of(container):
    return {e["name"]: e for e in container.get("env") or []}


def _anti_affinity(ps, primary):
    """'required' or 'preferred' when the pod keeps off the node of a pod
    labelled app.kubernetes.io/name=PRIMARY (and the pod-index keys the
    term matches on), else (None, [])."""
    aa = (ps.get("affinity") or {}).get("podAntiAffinity") or {}
    for kind in ("required", "preferred"):
        for term in aa.get(f"{kind}DuringSchedulingIgnoredDuringExecution") or []:
            term = term.get("podAffinityTerm", term)
            sel = (term.get("labelSelector") or {}).get("matchLabels") or {}
            if term.get("topologyKey") == "kubernetes.io/hostname" and sel.get("app.kubernetes.io/name") == primary:
                return kind, term.get("matchLabelKeys") or []
    return None, []


def replicas_k8s(overlays):
    """Issue 17's invariants in the rendered overlays: a Redis replica per
    capture pod the autoscaler may make, following that pod's Redis and
    never on its node; capture waiting for it; workers and results given
    the replicas; a synchronous standby of PostgreSQL off the primary's
    node, named with target_session_attrs=read-write by every client.
    The local overlay (one machine) may prefer other nodes instead of
    requiring them."""
    bad = 0
    for overlay in overlays:
        name, docs, kinds = rendered_k8s(overlay)
        sts = kinds.get("StatefulSet", {})
        services = kinds.get("Service", {})
        wanted_kind = {"preferred", "required"} if os.path.basename(overlay.rstrip("/")) == "local" else {"required"}
        rep, cap = sts.get("capture-replica"), sts.get("capture")
        notes = []
        if not rep or not cap:
            bad |= fail(f"{name}: no StatefulSet/capture-replica beside StatefulSet/capture")
            continue
        rps = pod_spec(rep)
        rlabels = rep["spec"]["template"]["metadata"].get("labels") or {}
        clabels = cap["spec"]["template"]["metadata"].get("labels") or {}
        redis_c = next((c for c, _ in containers_of(rps) if c["name"] == "redis"), None)
        env = _env_of(redis_c or {})
        follows = str(env.get("REDIS_REPLICAOF", {}).get("value", ""))
        index = ((env.get("POD_INDEX", {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")
        m = re.fullmatch(r"capture-\$\(POD_INDEX\)\.([a-z0-9-]+) 6379", follows)
        if not m or "apps.kubernetes.io/pod-index" not in index:
            bad |= fail(f"{name}: capture-replica's REDIS_REPLICAOF is {follows!r}, not the capture pod of its own index (capture-$(POD_INDEX).SERVICE 6379)")
        elif m.group(1) != cap["spec"].get("serviceName"):
            bad |= fail(f"{name}: capture-replica follows through {m.group(1)}, not capture's governing Service {cap['spec'].get('serviceName')}")
        kind, keys = _anti_affinity(rps, "capture")
        if kind not in wanted_kind or "apps.kubernetes.io/pod-index" not in keys:
            bad |= fail(f"{name}: capture-replica is not kept off its capture pod's node "
                        f"({kind or 'no'} anti-affinity on the pod index; expected {'/'.join(sorted(wanted_kind))})")
        hpa = kinds.get("HorizontalPodAutoscaler", {}).get("capture")
        most = hpa["spec"]["maxReplicas"] if hpa else cap["spec"].get("replicas", 1)
        if rep["spec"].get("replicas", 1) < most:
            bad |= fail(f"{name}: {rep['spec'].get('replicas', 1)} capture replicas for up to {most} capture pods: a capture pod past them has no replica and answers 503")
        capture_c = next((c for c, _ in containers_of(pod_spec(cap)) if c["name"] == "capture"), {})
        if int(_env_of(capture_c).get("ACK_REPLICAS", {}).get("value", "0")) < 1:
            bad |= fail(f"{name}: capture does not wait for its replica (ACK_REPLICAS is not >= 1)")
        # The queue list of workers and results: REDIS_DNS naming a Service
        # that selects both the capture pods and their replicas.
        sb = sts.get("postgres-standby")
        if not sb:
            bad |= fail(f"{name}: no StatefulSet/postgres-standby")
        else:
            sps = pod_spec(sb)
            sc = sps["containers"][0]
            primary = str(_env_of(sc).get("PRIMARY_HOST", {}).get("value", ""))
            psel = (services.get(primary) or {}).get("spec", {}).get("selector") or {}
            if psel.get("app.kubernetes.io/name") != "postgres":
                bad |= fail(f"{name}: postgres-standby's PRIMARY_HOST {primary!r} is not the Service of postgres")
            kind, _ = _anti_affinity(sps, "postgres")
            if kind not in wanted_kind:
                bad |= fail(f"{name}: postgres-standby is not kept off postgres's node ({kind or 'no'} anti-affinity)")
            if "postgres-standby" not in services:
                bad |= fail(f"{name}: no Service postgres-standby for the clients")
        for d in docs:
            ps = pod_spec(d)
            if not ps:
                continue
            for c, _ in containers_of(ps):
                e = _env_of(c)
                who = f"{name}: {d['kind']}/{d['metadata']['name']} {c['name']}"
                if "REDIS_DNS" in e:
                    host = str(e["REDIS_DNS"].get("value", "")).split(":")[0].split(".")[0]
                    sel = (services.get(host) or {}).get("spec", {}).get("selector") or {}
                    if not sel or any(rlabels.get(k) != v for k, v in sel.items()) or any(clabels.get(k) != v for k, v in sel.items()):
                        bad |= fail(f"{who}: REDIS_DNS {host} does not resolve to both the capture pods and their replicas (Service selector {sel})")
                    elif not services[host]["spec"].get("publishNotReadyAddresses"):
                        bad |= fail(f"{who}: REDIS_DNS {host} leaves out unready queues (publishNotReadyAddresses)")
                    else:
                        notes.append(d["metadata"]["name"])
                elif "REDIS_URLS" in e:
                    bad |= fail(f"{who}: REDIS_URLS, a fixed list, cannot follow the capture autoscaler's pods and replicas: use REDIS_DNS")
                url = str(e.get("DATABASE_URL", {}).get("value", ""))
                if url:
                    hosts = {h.split(":")[0] for h in re.sub(r"^postgres(ql)?://([^@/]*@)?([^/?]*).*", r"\3", url).split(",")}
                    if "postgres-standby" not in hosts or "target_session_attrs=read-write" not in url:
                        bad |= fail(f"{who}: DATABASE_URL does not list postgres-standby with target_session_attrs=read-write")
        if not bad:
            print(f"  ok   {name}: {rep['spec']['replicas']} capture replicas (>= {most} capture pods), each following its pod's Redis "
                  f"off its node; ACK_REPLICAS >= 1; {', '.join(sorted(set(notes)))} resolve queues and replicas; "
                  f"postgres-standby off postgres's node, in every DATABASE_URL")
    return bad


# The files the rendered ConfigMaps must carry unchanged.
SHIPPED_CONFIGS = {
    ("redis", "redis.conf"): "swarm/redis.conf",
    ("redis", "redis-entrypoint.sh"): "docker/redis-entrypoint.sh",
    ("haproxy", "haproxy.cfg"): "swarm/haproxy.cfg",
    ("postgres-initdb", "voteswarm-roles.sh"): "docker/postgres-roles.sh",
    ("postgres-initdb", "voteswarm-replication.sh"): "docker/postgres-replication.sh",
    ("postgres-standby", "postgres-standby.sh"): "docker/postgres-standby.sh",
}


def k8s_configs(overlays):
    bad = 0
    for overlay in overlays:
        name = os.path.relpath(overlay, ROOT)
        cms = {}
        for d in render_k8s(overlay):
            if d["kind"] == "ConfigMap":
                base = re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"])
                cms[base] = d.get("data") or {}
        for (cm, key), path in SHIPPED_CONFIGS.items():
            with open(os.path.join(ROOT, path)) as f:
                want = f.read()
            got = cms.get(cm, {}).get(key)
            if got is None:
                bad |= fail(f"{name}: no ConfigMap {cm} with {key}")
            elif got != want:
                bad |= fail(f"{name}: ConfigMap {cm} {key} differs from {path}")
            else:
                print(f"  ok   {name}: ConfigMap {cm} {key} is {path} ({len(want)} bytes)")
    # No copy kept beside the manifests.
    shipped = {}
    for path in set(SHIPPED_CONFIGS.values()):
        with open(os.path.join(ROOT, path)) as f:
            shipped[f.read()] = path
    for dirpath, _, files in os.walk(os.path.join(ROOT, "k8s")):
        for fn in files:
            p = os.path.join(dirpath, fn)
            with open(p, errors="replace") as f:
                text = f.read()
            if text in shipped or fn in {os.path.basename(v) for v in SHIPPED_CONFIGS.values()}:
                bad |= fail(f"{os.path.relpath(p, ROOT)}: a copy of {shipped.get(text, fn)}; generate it from the shipped file")
    return bad


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "compose-schema":
        return compose_schema(argv[2], argv[3])
    if cmd == "env-contract":
        return env_contract()
    if cmd == "dockerfile":
        return dockerfile()
    if cmd == "service-flags":
        return service_flags()
    if cmd == "userdata":
        return userdata(argv[2], argv[3])
    if cmd == "aws-roles":
        return aws_roles(argv[2])
    if cmd == "vagrant-registry":
        return vagrant_registry()
    if cmd == "k8s-policy":
        return k8s_policy(argv[2:] or k8s_overlays())
    if cmd == "k8s-configs":
        return k8s_configs(argv[2:] or k8s_overlays())
    if cmd == "replicas":
        return replicas_compose(argv[2])
    if cmd == "replicas-swarm":
        return replicas_swarm(argv[2], argv[3])
    if cmd == "replicas-aws":
        return replicas_aws(argv[2])
    if cmd == "replicas-vagrant":
        return replicas_vagrant(argv[2] if len(argv) > 2 else None)
    if cmd == "replicas-k8s":
        return replicas_k8s(argv[2:] or k8s_overlays())
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv) else 0)
