# voteswarm: one image, five binaries; the role is the command.
#   docker build -t voteswarm .
#   docker build --build-arg BINARIES=host -t voteswarm .   # after `cargo build --release`
#   docker run voteswarm                 # capture (the default command)
#   docker run voteswarm worker --migrate
#   docker run voteswarm results
# No ENTRYPOINT, so the command is the whole argv: `worker --migrate`,
# `loadgen --target ...`, `capture --help`.
#
# Checked statically by scripts/validate-deploy.sh (`make test`): every COPY
# source exists, the cargo line is the release build, and the binaries copied
# into the final stage are exactly the crate's binaries (src/bin/*.rs).
# Needs BuildKit (DOCKER_BUILDKIT=1 on Docker 20.10; the default since 23),
# which builds only the stages the run stage uses. No `# syntax=` line:
# BuildKit would pull that frontend image first, which fails where no
# registry can be reached (Docker 20.10's own frontend knows RUN --mount).

# Where the run stage takes the binaries from: `build` compiles them in the
# Rust toolchain image; `host` copies the host's `cargo build --release
# --locked --bins` output (BINARIES_DIR) where that image cannot be pulled
# (scripts/swarm.sh). The run stage is the same either way.
ARG BINARIES=build

############################## build ##########################################
# The toolchain the crate is tested with; Debian bookworm like the run stage,
# so the libpq it links against is the one the run stage installs.
FROM rust:1.95-slim-bookworm AS build
# diesel links the system libpq: the headers to build (libpq-dev).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
# The image needs no debug info (the release profile keeps some for profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# A workspace member (the dev tasks): cargo reads its manifest, builds none of it.
COPY xtask ./xtask
# diesel_migrations embeds these at compile time (`worker --migrate`).
COPY migrations ./migrations
# `cluster` compiles in the shipped HAProxy and Redis settings (include_str!).
COPY swarm ./swarm
# ... and the Redis users and PostgreSQL roles of the container scripts.
COPY docker/redis-entrypoint.sh docker/postgres-roles.sh ./docker/
# The cache mounts keep the crates and the build between image builds; the
# binaries are copied out of the cache mount into /out for the next stage.
# The nodes first, without the `tools` feature, so capture, worker and
# results link none of the tools' crates; then the two tools, which leaves
# the nodes' binaries as they are.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --no-default-features --bins \
 && cargo build --release --locked --bin loadgen --bin cluster \
 && mkdir -p /out \
 && cp target/release/capture target/release/worker target/release/results \
       target/release/loadgen target/release/cluster /out/

############################## host ###########################################
# The host's release binaries, in the same /out as the build stage's.
FROM scratch AS host
ARG BINARIES_DIR=target/release
COPY ${BINARIES_DIR}/capture ${BINARIES_DIR}/worker ${BINARIES_DIR}/results ${BINARIES_DIR}/loadgen ${BINARIES_DIR}/cluster /out/

FROM ${BINARIES} AS binaries

############################## run ############################################
FROM debian:bookworm-slim
# libpq5: diesel's PostgreSQL client at run time; ca-certificates: TLS to a
# managed database (sslmode=require). Nothing else: no compiler, no curl.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 voteswarm \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin voteswarm
COPY --from=binaries /out/capture /out/worker /out/results /out/loadgen /out/cluster /usr/local/bin/
COPY docker/healthcheck.sh /usr/local/bin/voteswarm-healthcheck
# The swarm files that go with this image: a manager (aws/, vagrant/) takes
# them from here, so the stack it deploys always matches the binaries.
COPY swarm/stack.yml swarm/haproxy.cfg swarm/redis.conf swarm/create-services.sh swarm/failover.sh /usr/share/voteswarm/swarm/
# ... and the container scripts those files make swarm configs of (../docker/).
COPY docker/redis-entrypoint.sh docker/postgres-roles.sh docker/postgres-replication.sh docker/postgres-standby.sh /usr/share/voteswarm/docker/
# uid 10001 is fixed: the swarm's capture and Redis containers share a unix
# socket directory owned by it (swarm/README.md).
USER 10001:10001
ENV RUST_LOG=info
# capture 8080, results 8081, worker metrics 9100.
EXPOSE 8080 8081 9100
# GET /healthz with bash alone (no curl in the image): see the script. The
# port follows LISTEN / METRICS_LISTEN, so one HEALTHCHECK serves every role.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/voteswarm-healthcheck"]
# The binaries stop cleanly on SIGTERM (finish in-flight work, exit 0).
STOPSIGNAL SIGTERM
CMD ["capture"]
